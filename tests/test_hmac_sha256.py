"""The compiled HMAC-SHA-256 state (middleware/_hmac_sha256.h) against Python's hmac module: the same MAC
for any key and message, however the message is fed, and copies that do not share input."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackgate import Settings, TrackingLinks, _speedups, rewrite_html, tokens

HmacSha256 = getattr(_speedups, "HmacSha256", None)  # (built only with OpenSSL's headers)


def test_built_wherever_openssl_headers_are() -> None:
    """setup.py links OpenSSL when its headers are there (.ci/setup installs them), and the codec uses it."""
    headers = any(Path(root, "openssl", "sha.h").exists() for root in ("/usr/include", "/usr/local/include"))
    assert (HmacSha256 is not None) == headers
    if HmacSha256 is not None:
        codec = tokens.TokenCodec(["a-key"])
        assert type(codec.signing_state("click")) is HmacSha256


needs_it = pytest.mark.skipif(HmacSha256 is None, reason="built without OpenSSL's headers")


@needs_it
@given(key=st.binary(max_size=200), pieces=st.lists(st.binary(max_size=150), max_size=5))
def test_same_mac_as_the_hmac_module(key: bytes, pieces: list[bytes]) -> None:
    """Keys shorter and longer than a block (a long one is hashed first), messages fed in pieces."""
    assert HmacSha256 is not None
    mac = HmacSha256(key)
    for piece in pieces:
        mac.update(piece)
    assert mac.digest() == hmac.new(key, b"".join(pieces), hashlib.sha256).digest()
    assert mac.digest() == mac.digest()  # reading the MAC does not end the state


@needs_it
@pytest.mark.parametrize("length", [0, 1, 31, 32, 63, 64, 65, 66, 128, 1000])
def test_keys_around_the_block_size(length: int) -> None:
    """A key up to the 64-byte block is padded, a longer one hashed first: the lengths at the edge."""
    assert HmacSha256 is not None
    key = bytes(range(256))[:length] if length <= 256 else b"k" * length
    mac = HmacSha256(key)
    mac.update(b"message")
    assert mac.digest() == hmac.new(key, b"message", hashlib.sha256).digest()


# RFC 4231's test cases 2 and 6: a short key, and a key longer than the block (hashed first).
_RFC_4231 = [
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]
# An OpenSSL configuration with only the base provider: OpenSSL's EVP look-ups of SHA-256 fail under it.
_BASE_PROVIDER_ONLY = """openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
base = base_sect
[base_sect]
activate = 1
"""


@needs_it
def test_the_rfc_4231_vectors_whatever_openssl_providers_are_loaded(tmp_path: Path) -> None:
    """The known answers, also where OpenSSL's configuration makes its EVP look-ups fail: the state uses
    SHA-256's own calls throughout, a long key included (it once came out as the empty key there)."""
    config = tmp_path / "base-only.cnf"
    config.write_text(_BASE_PROVIDER_ONLY)
    probe = (
        "from trackgate._speedups import HmacSha256\n"
        f"for key, message, _ in {_RFC_4231!r}:\n"
        "    mac = HmacSha256(key)\n"
        "    mac.update(message)\n"
        "    print(mac.digest().hex())\n"
    )
    for environment in ({}, {"OPENSSL_CONF": str(config)}):
        printed = subprocess.run(
            [sys.executable, "-c", probe], env={**os.environ, **environment}, capture_output=True, text=True,
            check=True, timeout=60,
        ).stdout.split()
        assert printed == [expected for _, _, expected in _RFC_4231]


@needs_it
def test_copies_are_independent() -> None:
    assert HmacSha256 is not None
    base = HmacSha256(b"key")
    first, second = base.copy(), base.copy()
    first.update(b"one")
    second.update(memoryview(b"two"))  # any buffer
    assert first.digest() == hmac.new(b"key", b"one", hashlib.sha256).digest()
    assert second.digest() == hmac.new(b"key", b"two", hashlib.sha256).digest()
    assert base.digest() == hmac.new(b"key", b"", hashlib.sha256).digest()


@needs_it
def test_wrong_arguments_are_type_errors() -> None:
    assert HmacSha256 is not None
    with pytest.raises(TypeError):
        HmacSha256("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        HmacSha256(b"k", digestmod="sha256")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        HmacSha256(b"k").update("text")


def test_links_are_the_same_with_hashlibs_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built without OpenSSL's headers the codec keeps hashlib's HMAC state, which the compiled signing and
    reading call through its methods: the same links, read back the same way, either way."""
    settings = Settings.from_environ({}, secret_key="newest,older", base_url="https://t.example.org")
    ours = TrackingLinks(settings)
    monkeypatch.setattr(tokens, "compiled_mac", None)
    theirs = TrackingLinks(settings)
    assert type(theirs._codec.signing_state("click")) is not HmacSha256
    for url, metadata in [("https://s.example.org/p", None), ("https://s.example.org/q?a=1", {"r": "r-1"})]:
        link = ours.click_url(url, metadata)
        assert theirs.click_url(url, metadata) == link
        page = f'<a href="{url}">x</a>'.encode()  # signed by the compiled rewriter
        options = {"metadata": metadata, "open_tracking": False, "charset": "utf-8"}
        assert rewrite_html(page, theirs, **options) == rewrite_html(page, ours, **options) != page
        for reader in (ours, theirs):
            result = reader.decode(link)
            assert (result.tracked_url, dict(result.metadata)) == (url, metadata or {})
    older = TrackingLinks(settings.replace(secret_key="older")).click_url("https://s.example.org/o")
    assert theirs.decode(older).tracked_url == "https://s.example.org/o"  # every key verifies
