"""The one seam for outbound HTTP (Slack and any later provider call): explicit timeouts, and
tests replace `post_json` here."""

import http.client
import json
import urllib.error
import urllib.request


def post_json(url: str, payload: dict, timeout: float) -> tuple[int, str]:
    """POST `payload` as JSON; (status, body). Raises OSError when no HTTP answer came back
    (refused, timed out, not HTTP at all, or a URL that cannot be requested)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "opsdash"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read(10_000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(10_000).decode(errors="replace")
    except (http.client.HTTPException, ValueError) as exc:
        raise OSError(f"no HTTP answer: {type(exc).__name__}: {exc}") from exc
