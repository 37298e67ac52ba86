"""Redis Sentinel addresses as opsdash writes them (pure functions: settings read the
environment with them, the diagnostics read a URL given on the command line).

`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]`
"""

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_DEFAULT_PORT = 26379


def parse_sentinel_url(url: str) -> dict:
    """`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]` as
    {sentinels: [(host, port)], service, db, username, password}; the password is the
    servers' (primary and replicas), the sentinels' own is REDIS_SENTINEL_PASSWORD. Raises
    ValueError naming what is wrong."""
    scheme, _, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME or not rest:
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    netloc, _, path = rest.partition("/")
    path = path.split("?", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    parts = [part for part in path.split("/") if part]
    if not parts:
        raise ValueError("no service name: write redis+sentinel://host:port,.../SERVICE/0")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(f"the path {path!r} is not SERVICE or SERVICE/DB (a number)")
    return {
        "sentinels": parse_sentinel_hosts(hosts),
        "service": parts[0],
        "db": int(parts[1]) if len(parts) == 2 else 0,
        "username": username or None,
        "password": password or None,
    }


def parse_sentinel_hosts(hosts: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (a missing port is 26379) as [(host, port)]."""
    found = []
    for item in (part.strip() for part in hosts.split(",")):
        if not item:
            continue
        host, port = item, str(SENTINEL_DEFAULT_PORT)
        if item.startswith("["):  # [IPv6]:port
            host, _, tail = item[1:].partition("]")
            port = tail.removeprefix(":") or port
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        found.append((host, int(port)))
    if not found:
        raise ValueError("no sentinel address: write host:port,host:port")
    return found


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and url.startswith(f"{SENTINEL_SCHEME}://")
