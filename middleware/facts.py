"""RequestFacts: the few facts about a request that the core needs, made by a shell from environ/scope."""

from __future__ import annotations

import dataclasses
from typing import Protocol
from urllib.parse import quote

# What a path keeps as it is when it is written into a URL again: the URL standard's path characters. The
# rest (spaces, "?", "#", "%", controls, non-ASCII) came percent-encoded and goes back so.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class HeaderLookup(Protocol):
    """Header access by lower-case name: werkzeug's EnvironHeaders (WSGI) and the ASGI shell's dict of
    header fields both fit. The core asks for lower-case names only."""

    def get(self, key: str, /) -> str | None: ...

    def __getitem__(self, key: str, /) -> str: ...


def below_mount(path: str, root_path: str) -> str:
    """``path`` without the mount ``root_path`` it starts with ("/shop/x" below "/shop" is "/x"; "/shopping"
    is not below "/shop"), as Starlette's routing reads it."""
    root = root_path.rstrip("/")  # "/shop/" (a server's --root-path spelt so) is "/shop"
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


@dataclasses.dataclass(frozen=True, slots=True)
class RequestFacts:
    method: str
    scheme: str
    host: str  # host[:port] as the client asked for it
    path: str  # percent-decoded; its bytes read as UTF-8 (undecodable ones as surrogate escapes)
    query_string: str
    headers: HeaderLookup
    client_addr: str | None  # resolved through TRACKGATE_TRUSTED_PROXIES hops, not yet anonymised
    root_path: str = ""  # where the app is mounted (SCRIPT_NAME, ASGI root_path); part of ``path`` too

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def route_path(self) -> str:
        """The path below the mount: what the app itself routes on."""
        return below_mount(self.path, self.root_path)

    @property
    def app_url(self) -> str:
        """The origin and the mount: where the middleware's own paths are reached from outside."""
        return self.origin + self.root_path

    @property
    def url(self) -> str:
        """The URL the client asked for (its path percent-encoded again, as PEP 3333 rebuilds it)."""
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.origin}{quote(self.path, safe=_PATH_SAFE, errors='surrogateescape')}{query}"

