"""What the dashboard's page tests share: the elements of a page that carry a data-testid, the
messages a response flashed, and the states in which the switch cannot flip."""

from html.parser import HTMLParser

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # configured, never needed by these pages
TILES = ["database", "redis", "switch", "breaker", "channel-layer", "evaluator"]
PAGES = ["/dashboard/", "/dashboard/alerts/", "/dashboard/switch/"]
PINNED = "caching is pinned off by the environment (REDIS_ENABLED=false)"
UNCONFIGURED = "no Redis is configured (REDIS_URL is not set)"
CANNOT_FLIP = [({"REDIS_ENABLED": False}, PINNED), ({"REDIS_URL": None}, UNCONFIGURED)]


class Page(HTMLParser):
    """The elements of a page that carry a data-testid: their attributes and their text."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: dict[str, dict] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        testid = attrs.get("data-testid")
        if testid is not None:
            self.elements[testid] = {"tag": tag, "attrs": attrs, "text": ""}
        if tag not in self.VOID:
            self._open.append((tag, testid))

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i:]
                return

    def handle_data(self, data):
        for _, testid in self._open:
            if testid is not None:
                self.elements[testid]["text"] += data

    def __contains__(self, testid: str) -> bool:
        return testid in self.elements

    def text(self, testid: str) -> str:
        return " ".join(self.elements[testid]["text"].split())

    def attrs(self, testid: str) -> dict:
        return self.elements[testid]["attrs"]

    def ids(self, prefix: str) -> list[str]:
        return [testid for testid in self.elements if testid.startswith(prefix)]


def page(response) -> Page:
    assert response.status_code == 200, response.status_code
    return Page(response.content.decode())


def flash(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]
