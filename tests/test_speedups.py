"""The compiled inner loop of the rewriter (middleware/_speedups.c) against the pure-Python reading: the same
bytes out for any input, any chunking and every kind of link source, and the same links as the Python
click makers sign."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_rewrite import _DOCUMENTS, FakeLinks

import trackgate.fastjson
import trackgate.rewrite
from trackgate import HtmlRewriter, Settings, TrackingLinks, rewrite_html

SETTINGS = Settings.from_environ({}, secret_key="speedups-key", base_url="https://t.example.org")
METADATA = {"recipient": "r-1", "campaign": 7, "name": "Zoë"}

# Bytes that make tags, attributes, comments and the constructs the loop hands back, in any order.
_SOUP = st.lists(
    st.sampled_from(
        [
            *["<", ">", "/", "!", "-", "?", "=", '"', "'", " ", "\n", "a", "A", "x", "&", "[", "{", "%", "*", "|"],
            *["href", "HREF", "area", "body", "svg", "math", "script", "title", "html", "data-trackgate", "off"],
            *["<!--", "-->", "--!>", "<![CDATA[", "]]>", "<!DOCTYPE", "https://", "http://", "//", "x.org", "é"],
            *["<a href=", '<a href="https://s.org/p?q=1">', "<area href='http://s.org/'>", "</body>", "</a>"],
            *["&amp;", "&amp", "\u0085", "\u00e9", "https://s.org/x?a=1&amp;b=2", "{{", "%%", "\t"],
            *["https://shop.example.org/p", "http://SHOP.example.org", "https://shop.example.org.", ":8080"],
            # What ends SVG and MathML (the compiled loop stops at them there) and what does not:
            *["<svg>", "<math>", "</svg>", "<p>", "</p>", "</br>", "<h2>", "<font color=x>", "<font>", "<path d=1>"],
            *["<script><!--", "<script>", "</script>", "<textarea>", "<foreignObject>"],
        ]
    ),
    max_size=60,
).map("".join)


def rewritten(doc: bytes, links: Any, *, compiled: bool, cuts: list[int] | None = None, **options: Any) -> bytes:
    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            patch.setattr(trackgate.rewrite, "fast_scan", None)
        rewriter = HtmlRewriter(links, **options)
        edges = sorted({min(c, len(doc)) for c in cuts or []})
        parts = [doc[a:b] for a, b in zip([0, *edges], [*edges, len(doc)], strict=True)]
        return b"".join(rewriter.feed(part) for part in parts) + rewriter.close()


def both_ways(doc: bytes, links: Any, cuts: list[int] | None = None, **options: Any) -> bytes:
    options.setdefault("charset", "utf-8")
    compiled = rewritten(doc, links, compiled=True, cuts=cuts, **options)
    assert compiled == rewritten(doc, links, compiled=False, cuts=cuts, **options)
    return compiled


def sources() -> Iterator[tuple[str, Any, dict[str, Any]]]:
    links = TrackingLinks(SETTINGS)
    page = links.for_page("https://shop.example.org/p", "https://shop.example.org")
    yield "fake", FakeLinks(), {}
    yield "email", links, {"metadata": METADATA}
    yield "email-without-metadata", links, {}
    yield "page", page, {"page_host": "shop.example.org", "scope": "all"}
    yield "page-outbound", page, {"page_host": "shop.example.org", "scope": "outbound"}
    yield "page-outbound-port", page, {"page_host": "shop.example.org:8080", "scope": "outbound"}
    yield "page-outbound-default-port", page, dict(page_host="SHOP.example.org:80", scope="outbound", scheme="http")
    yield "page-metadata", page, {"metadata": {"list": 3}}


SOURCES = list(sources())


def test_the_compiled_loop_is_built() -> None:
    # CI and the README's commands install with a C compiler; without one trackgate runs on the Python reading.
    assert trackgate.rewrite.fast_scan is not None


@pytest.mark.parametrize(("name", "links", "options"), SOURCES, ids=[s[0] for s in SOURCES])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(_DOCUMENTS, _SOUP), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_any_document_gives_the_same_bytes_both_ways(
    name: str, links: Any, options: dict[str, Any], doc: str, cuts: list[int]
) -> None:
    both_ways(doc.encode(), links, cuts, **options)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=4))
def test_any_bytes_give_the_same_bytes_both_ways(data: bytes, cuts: list[int]) -> None:
    both_ways(data, TrackingLinks(SETTINGS), cuts, metadata=METADATA, charset="windows-1252")


@settings(max_examples=100, deadline=None)
@given(path=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=190))
def test_a_plain_link_is_signed_as_the_python_maker_signs_it(path: str) -> None:
    # Every printable ASCII path: the loop signs it, or leaves it to the Python maker (quotes, "&", merge tags,
    # payloads long enough to compress), and either way the link is the one clicks_for makes.
    links = TrackingLinks(SETTINGS)
    for quote in ('"', "'"):
        doc = f"<a href={quote}https://s.example.org/{path}{quote}>x</a>".encode()
        assert both_ways(doc, links, metadata=METADATA, open_tracking=False) == both_ways(
            doc, links, metadata=METADATA, open_tracking=False, cuts=[3, 17]
        )


def test_the_signed_links_decode_to_their_destinations() -> None:
    links = TrackingLinks(SETTINGS)
    urls = [f"https://shop.example.org/item-{i}?ref=nl" for i in range(50)]
    doc = "".join(f'<a href="{url}">{i}</a>' for i, url in enumerate(urls)).encode()
    out = both_ways(doc, links, metadata=METADATA, open_tracking=False)
    found = [chunk.split(b'"', 1)[0].decode() for chunk in out.split(b'href="')[1:]]
    assert [links.decode(link).tracked_url for link in found] == urls
    assert all(links.decode(link).metadata == METADATA for link in found)


def test_encrypted_links_are_left_to_the_python_maker() -> None:
    pytest.importorskip("cryptography")
    links = TrackingLinks(SETTINGS.replace(encryption_key="speedups-encryption"))
    assert links.click_signing(METADATA) is None
    out = rewrite_html(b'<a href="https://s.example.org/">x</a>', links, open_tracking=False)
    token = out.split(b"/_tg/c/")[1].split(b'"')[0].decode()
    assert "." not in token  # sealed, not signed
    assert links.decode(token).tracked_url == "https://s.example.org/"


def test_the_benchmark_documents_give_the_same_bytes_both_ways(tmp_path: Path) -> None:
    import subprocess
    import sys

    generator = Path(__file__).resolve().parents[2] / "shared" / "bench" / "gen_docs.py"
    if not generator.exists():
        pytest.skip("the benchmark document generator is not beside the project")
    subprocess.run([sys.executable, str(generator), str(tmp_path)], check=True, capture_output=True)
    links = TrackingLinks(SETTINGS)
    for name in ("email.html", "page.html"):
        doc = (tmp_path / name).read_bytes()
        out = both_ways(doc, links, metadata=METADATA, cuts=[1000, 50_000, 333_333])
        assert out.count(b"/_tg/c/") > 100


# --- click_url ---------------------------------------------------------------------------------------------

_URL_TEXT = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=220).map(
        lambda rest: "https://s.example.org/" + rest
    ),
    st.text(max_size=40).map(lambda rest: "http://s.example.org" + rest),
    st.sampled_from(
        [
            "https://s.example.org/?a=1&amp;b=2", "HTTPS://S.example.org/", "//s.example.org/", "mailto:x@y.z",
            "https://s.example.org:8443/", "https://user@s.example.org/", "https://bücher.example/",
            "https://s.example.org/\x85", "https://s.example.org/\ud800", "https://s.example.org/é?q=ü",
            "https://t.example.org/_tg/c/x", "https://s.example.org/{{id}}",
        ]
    ),
)


def outcome(call: Any, switch: tuple[Any, str], *, compiled: bool) -> object:
    """What ``call()`` returns or raises (type and message), with the compiled function ``switch`` names (module,
    attribute) in place or set to None."""
    with pytest.MonkeyPatch.context() as patch:
        if not compiled:
            patch.setattr(*switch, None)
        try:
            return call()
        except Exception as error:
            return type(error), str(error)


def same_both_ways(call: Any, switch: tuple[Any, str]) -> None:
    assert outcome(call, switch, compiled=True) == outcome(call, switch, compiled=False)


@settings(max_examples=300, deadline=None)
@given(url=_URL_TEXT, metadata=st.sampled_from([None, {}, METADATA, {"n": float("nan")}, {"x": "y" * 300}]))
def test_click_url_is_the_same_link_or_error_both_ways(url: str, metadata: Any) -> None:
    links = TrackingLinks(SETTINGS)
    same_both_ways(lambda: links.click_url(url, metadata), (trackgate.links, "sign_click"))


def test_click_url_in_c_makes_links_that_decode() -> None:
    links = TrackingLinks(SETTINGS)
    assert trackgate.links.sign_click is not None
    link = links.click_url("https://s.example.org/p?a=1&b=2", METADATA)
    result = links.decode(link)
    assert (result.tracked_url, result.metadata) == ("https://s.example.org/p?a=1&b=2", METADATA)


# --- check_url and reading tokens -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(_URL_TEXT, st.text(max_size=30), st.integers(), st.none()))
def test_check_url_says_the_same_both_ways(url: Any) -> None:
    same_both_ways(lambda: trackgate.links.check_url(url), (trackgate.links, "plain_url"))


@settings(max_examples=300, deadline=None)
@given(
    url=_URL_TEXT,
    edit=st.tuples(st.integers(0, 200), st.sampled_from(["", ".", "A", "-", "_", "=", "é", "\x00", "x.y"])),
    cut=st.integers(0, 400),
    purpose=st.sampled_from(["click", "open"]),
)
def test_a_token_reads_the_same_both_ways_however_it_was_altered(
    url: str, edit: tuple[int, str], cut: int, purpose: str
) -> None:
    links = TrackingLinks(SETTINGS.replace(secret_key="newest,speedups-key"))
    try:
        token = TrackingLinks(SETTINGS)._codec.dumps({"u": url, "m": METADATA}, "click")
    except ValueError:
        return
    at, text = edit
    for candidate in (token, token[:at] + text + token[at + 1 :], token[:cut]):
        same_both_ways(lambda: links._codec.loads(candidate, purpose), (trackgate.tokens, "unsign"))  # noqa: B023


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.builds(lambda url: json.dumps({"u": url}, separators=(",", ":")).encode(), _URL_TEXT),
    ),
    edit=st.tuples(st.integers(0, 300), st.sampled_from(["", "A", "B", "_", "-", "+", "/", "=", "\n", "é", "AB"])),
)
def test_a_signed_body_of_any_base64_reads_the_same_both_ways(payload: bytes, edit: tuple[int, str]) -> None:
    """A body signed with our key but not spelled as we spell base64 (a leaked key, an edited token re-signed):
    the compiled reading gives what binascii gives, or leaves it to the Python code."""
    links = TrackingLinks(SETTINGS)
    body = trackgate.tokens.base64_encode(payload).decode()
    at, text = edit
    for candidate_body in (body, body[:at] + text + body[at + 1 :]):
        if not candidate_body.isascii() or not candidate_body:
            continue
        mac = links._codec._macs["click"][0].copy()
        mac.update(candidate_body.encode())
        token = candidate_body + "." + trackgate.tokens._signature_text(mac.digest()).decode()
        same_both_ways(lambda: links._codec.loads(token, "click"), (trackgate.tokens, "unsign"))  # noqa: B023


_JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), _URL_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)
_CLICK_DATA = st.dictionaries(st.sampled_from(["u", "m", "t", "r", "x", "z"]), _JSON_VALUES, max_size=5)


def _without_fresh_fields(result: object) -> object:
    """A decode's outcome without the event id and timestamp, which differ from one call to the next."""
    if isinstance(result, trackgate.TrackingResult):
        return result._replace(event_id="", timestamp=0)
    return result


_PLAIN = "https://s.example.org/"


@settings(max_examples=500, deadline=None)
@given(
    data=st.one_of(_CLICK_DATA, st.builds(lambda url, rest: {**rest, "u": url}, _URL_TEXT, _CLICK_DATA)),
    spelling=st.sampled_from(["compact", "spaced", "padded", "trailed"]),
    signed_for=st.sampled_from(["click", "open"]),
    read_as=st.sampled_from(["click", "open"]),
    visitor=st.sampled_from([None, "v-1"]),
)
@example(data={"u": _PLAIN, "m": [1]}, spelling="compact", signed_for="click", read_as="click", visitor=None)
@example(data={"u": _PLAIN, "m": 0, "t": "T"}, spelling="compact", signed_for="click", read_as="click", visitor=None)
@example(data={"u": _PLAIN, "t": 5}, spelling="compact", signed_for="click", read_as="click", visitor=None)
@example(data={"u": _PLAIN, "r": []}, spelling="compact", signed_for="click", read_as="click", visitor=None)
@example(data={"u": _PLAIN, "x": 1}, spelling="compact", signed_for="click", read_as="click", visitor=None)
@example(data={"m": {"a": 1}, "t": "T"}, spelling="compact", signed_for="open", read_as="open", visitor=None)
@example(data={"u": None, "r": "R"}, spelling="compact", signed_for="open", read_as="open", visitor=None)
@example(data={"u": _PLAIN, "r": "R", "t": "T"}, spelling="compact", signed_for="open", read_as="open", visitor=None)
@example(data={"u": "", "m": {}}, spelling="compact", signed_for="open", read_as="open", visitor=None)
@example(data={"m": {"a": 1}}, spelling="compact", signed_for="click", read_as="click", visitor=None)
def test_a_token_decodes_the_same_both_ways(data: dict[str, Any], spelling: str, signed_for: str, read_as: str,
                                            visitor: str | None) -> None:
    """Whatever a signed click or open token holds (fields missing, of other types, an expiry, JSON spelled
    with spaces or around whitespace, signed for the other purpose), the compiled reading gives the Python
    reading's result or error."""
    links = TrackingLinks(SETTINGS)
    separators = (",", ":") if spelling == "compact" else (", ", ": ")
    text = json.dumps(data, separators=separators)
    text = {"padded": " " + text + "\n", "trailed": text + "{}"}.get(spelling, text)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > 60000:
        return
    body = trackgate.tokens.base64_encode(raw)
    mac = links._codec._macs[signed_for][0].copy()
    mac.update(body)
    token = (body + b"." + trackgate.tokens._signature_text(mac.digest())).decode()
    both = [
        _without_fresh_fields(
            outcome(lambda: links.decode_token(token, read_as, {"ip": "1"}, visitor=visitor),
                    (trackgate.links, "read_token"), compiled=compiled)
        )
        for compiled in (True, False)
    ]
    assert both[0] == both[1]


def test_the_compiled_token_reading_is_used() -> None:
    """Plain links are read in C: a click, an email's open, a page view; a forged one is no one's; an
    expiring one is read, and its checks left to the Python code."""
    links = TrackingLinks(SETTINGS)
    assert trackgate.links.read_token is not None
    read = trackgate.links.read_token
    click = links.click_url("https://s.example.org/p", METADATA).rsplit("/", 1)[1]
    states = links._codec.verifying_states
    scan = trackgate.fastjson.scan_json
    assert read(click, states("click"), scan, True) == ("https://s.example.org/p", METADATA, None, None)
    forged = click[:-2] + ("AA" if click[-2:] != "AA" else "BB")
    assert read(forged, states("click"), scan, True) is False
    opened = links.open_url(METADATA, title="Hi").rsplit("/", 1)[1]
    assert read(opened, states("open"), scan, False) == (None, METADATA, "Hi", None)
    viewed = links.open_path(page_url="https://s.example.org/a", referrer="https://r.org/").rsplit("/", 1)[1]
    assert read(viewed, states("open"), scan, False) == ("https://s.example.org/a", {}, None, "https://r.org/")
    result = links.decode_token(viewed, "open")
    assert (result.kind, result.referrer) == ("pageview", "https://r.org/")
    assert read(click, states("click"), scan, 1) == read(click, states("click"), scan, True)  # any truth value
    for wrong in ((click.encode(), states("click"), scan, True), (click, list(states("click")), scan, True)):
        with pytest.raises(TypeError, match="takes a str and a tuple first"):
            read(*wrong)
    with pytest.raises(TypeError):
        read(click, states("click"), scan)  # type: ignore[call-arg]
    # An expiring link is authentic but left to the Python code's checks: its data comes back, read once.
    expiring = links.click_url("https://s.example.org/e", expires_in=60).rsplit("/", 1)[1]
    data = read(expiring, states("click"), scan, True)
    assert type(data) is dict and data["u"] == "https://s.example.org/e" and "x" in data
    assert links.decode_token(expiring, "click").tracked_url == "https://s.example.org/e"


_ODD_DIGEST = """
import sys
from trackgate import rewrite_html

odd = {"str": "A" * 32, "bytearray": bytearray(32), "negative": -(2 ** 2130), "short": b"x" * 8}[sys.argv[1]]

class Mac:  # a link source's own HMAC state, whose digest() is not SHA-256's bytes
    def copy(self):
        return self
    def update(self, data):
        pass
    def digest(self):
        return odd

class Links:
    def click_url(self, url, metadata=None):
        return "https://t.example.org/c/made-by-the-source"
    def open_url(self, metadata=None):
        return "https://t.example.org/o/pixel"
    def is_tracking_url(self, url):
        return False
    def click_signing(self, metadata=None):
        return (b"https://t.example.org/c/", b"}", Mac(), ())

for _ in range(50):
    out = rewrite_html(b'<a href="https://a.org/p">x</a>', Links(), open_tracking=False, charset="utf-8")
print(out.decode())
"""


@pytest.mark.parametrize("digest", ["str", "bytearray", "negative", "short"])
def test_a_link_source_whose_mac_gives_no_sha256_digest_makes_its_own_links(digest: str) -> None:
    """The compiled signing reads what the link source's HMAC state gives: anything but 32 bytes leaves the
    link to the source (in a child process: a memory fault there is a failed test, not a crashed run)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _ODD_DIGEST, digest], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == '<a href="https://t.example.org/c/made-by-the-source">x</a>'


def test_a_subclass_that_tells_its_own_links_apart_is_asked_for_each_link() -> None:
    class WithUnsubscribe(TrackingLinks):
        def is_tracking_url(self, url: str) -> bool:
            return super().is_tracking_url(url) or url.startswith("https://unsub.example.org/")

    links = WithUnsubscribe(SETTINGS)
    doc = b'<a href="https://unsub.example.org/x">u</a><a href="https://s.example.org/">s</a>'
    for metadata in (None, METADATA):
        out = both_ways(doc, links, metadata=metadata, open_tracking=False)
        assert out.startswith(b'<a href="https://unsub.example.org/x">')
        assert out.count(b"/_tg/c/") == 1
    both_ways(doc, links.for_page("https://s.example.org/p", "https://s.example.org"), open_tracking=False)


def test_a_signing_error_leaves_the_link_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def copy(self) -> Any:
            raise ValueError("this key cannot sign now")

    links = TrackingLinks(SETTINGS)
    monkeypatch.setattr(links._codec, "_macs", {"click": (Refusing(),), "open": (Refusing(),)})
    doc = b'<a href="https://s.example.org/p">x</a>'
    assert both_ways(doc, links, metadata=METADATA, open_tracking=False) == doc


def test_click_url_reads_metadata_once_and_after_the_urls_faults() -> None:
    links = TrackingLinks(SETTINGS)

    class Exploding(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise KeyError("exploding metadata")

    cases = [
        ("HTTPS://s.example.org/", lambda: iter([("r", "r-42")])),  # an iterator: read twice, it would be empty
        ("https://s.example.org/", lambda: iter([("big", "x" * 70_000)])),
        ("javascript:alert(1)", lambda: {"n": Exploding(a=1)}),  # the URL's fault comes first
    ]
    for url, metadata in cases:
        same_both_ways(lambda: links.click_url(url, metadata()), (trackgate.links, "sign_click"))  # noqa: B023


@pytest.mark.parametrize(
    "doc",
    [
        "<svg><p></p><script><!--\ns='<script></script><a href=\"https://in.org/\">'\n//--></script><a href='https://x.org/'>x</a>",
        "<svg><h2>t</h2><script><!-- s='<script></script><a href=\"https://in.org/\">' --></script>",
        "<math><mi>x</mi></p><script><!-- s='<script></script><a href=\"https://in.org/\">' --></script>",
        "<svg><font color=red>r</font><script><!-- s='<script></script><a href=\"https://in.org/\">' --></script>",
        "<svg><font>f</font><script><![CDATA[ s='</script><a href=\"https://in.org/\">' ]]></script></svg>",
    ],
    ids=["p", "h2", "end-p-in-math", "font-color", "plain-font-stays-svg"],
)
def test_what_ends_foreign_content_is_seen_both_ways(doc: str) -> None:
    # The compiled loop passes over plain tags itself: in SVG and MathML it must stop at those that end them.
    for _, links, options in SOURCES:
        data = doc.encode()
        whole = both_ways(data, links, **options)
        assert both_ways(data, links, cuts=list(range(1, len(data))), **options) == whole


class _Slotted:
    __slots__ = ("first", "second")


class _Other:
    __slots__ = ("first",)


def test_new_slotted_sets_each_slot_and_refuses_what_is_no_slot_of_the_class() -> None:
    from trackgate._speedups import new_slotted

    members = (vars(_Slotted)["second"], vars(_Slotted)["first"])
    made = new_slotted(_Slotted, members, ("b", ["a"]))
    assert type(made) is _Slotted and (made.first, made.second) == (["a"], "b")
    partly = new_slotted(_Slotted, members[:1], ("b",))
    assert partly.second == "b" and not hasattr(partly, "first")  # a slot left out stays unset
    with pytest.raises(TypeError, match="member 0 is not a slot of"):
        new_slotted(_Slotted, (vars(_Other)["first"],), (1,))  # another class's offsets: refused
    with pytest.raises(TypeError, match="member 1 is not a slot of"):
        new_slotted(_Slotted, (members[0], property(lambda self: 1)), (1, 2))
    with pytest.raises(ValueError, match="as many values as members"):
        new_slotted(_Slotted, members, (1,))
    with pytest.raises(TypeError, match="takes a type and two tuples"):
        new_slotted(_Slotted, list(members), (1, 2))  # type: ignore[arg-type]
    slice_start = vars(slice)["start"]  # a C type's member, its instances made by its own tp_new
    with pytest.raises(TypeError, match=r"slice is not made by object\.__new__"):
        new_slotted(slice, (slice_start,), (1,))

    class Own(_Slotted):
        __slots__ = ()

        def __new__(cls) -> Own:
            return super().__new__(cls)

    with pytest.raises(TypeError, match=r"Own is not made by object\.__new__"):
        new_slotted(Own, members, (1, 2))
