from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")

def scan(
    buffer: bytes,
    position: int,
    out: list[bytes],
    values: dict[bytes, bytes],
    value_for: Callable[[bytes], bytes],
    signing: tuple[bytes, bytes, Any, tuple[bytes, ...]] | None,
    click: bool,
    cache_limit: int,
    max_held: int,
    utf8: bool,
    own_host: bytes | None,
    foreign: bool = False,
    /,
) -> int: ...

def sign_click(url: str, signing: tuple[bytes, bytes, Any, tuple[bytes, ...]], /) -> str | None: ...
def plain_url(url: object, /) -> bool: ...
def unsign(token: str, macs: tuple[Any, ...], /) -> bytes | bool | None: ...
def read_token(
    token: str, macs: tuple[Any, ...], scan: Any, click: bool, /
) -> tuple[str | None, dict[str, Any], str | None, str | None] | dict[str, Any] | bool | None: ...

def new_slotted(cls: type[_T], members: tuple[Any, ...], values: tuple[Any, ...], /) -> _T: ...

class HmacSha256:
    """An HMAC-SHA-256 state (only where _speedups was built with OpenSSL's headers)."""

    def __init__(self, key: bytes, /) -> None: ...
    def copy(self) -> HmacSha256: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...
