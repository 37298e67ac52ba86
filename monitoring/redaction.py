"""Credentials kept out of logs and pages."""

from urllib.parse import unquote, urlsplit


def masked_url(url: str) -> str:
    """The URL without its credentials, fit for logs and pages: a password in the user info
    (`redis://user:secret@host`) or the query (`unix:///run/redis.sock?password=secret`), and
    a user name given in the query, each shown as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{host}"
    query = "&".join(_masked_query_item(item) for item in parts.query.split("&"))
    slashes = "//" if url[len(parts.scheme) + 1 :].startswith("//") else ""
    masked = f"{parts.scheme}:{slashes}{netloc}{parts.path}"
    if parts.query:
        masked += f"?{query}"
    if parts.fragment:
        masked += f"#{parts.fragment}"
    return masked


_CREDENTIAL_NAMES = {"password", "username", "user", "pass", "auth"}


def _masked_query_item(item: str) -> str:
    name, sep, _ = item.partition("=")
    if sep and unquote(name).lower() in _CREDENTIAL_NAMES:
        return f"{name}=***"
    return item
