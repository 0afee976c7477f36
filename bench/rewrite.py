"""HTML rewriting side by side: trackgate's ``rewrite_html`` vs pytracking's ``adapt_html`` vs the floor.

    python bench/rewrite.py                 # generates the documents with ../shared/bench/gen_docs.py
    python bench/rewrite.py --docs DIR      # documents already generated in DIR (email.html, page.html)

For each document (a 62.7 KB email, a 500 KB page), in one run, best of alternating rounds:

- ``rewrite_html`` with real signing: ``trackgate.TrackingLinks`` with a secret key, every http(s) link
  signed (email metadata on every link, as an email sender would use it) and the open pixel; the compiled
  inner loop (middleware/_speedups.c) when it is built;
- the same on the pure-Python reading (``trackgate.rewrite.fast_scan = None``: what runs without a compiler);
- ``rewrite_html`` with click tracking off: the scanner alone (and the pixel);
- pytracking 0.2.2 ``adapt_html`` (lxml parse + serialise, its default unsigned links);
- the floor: ``bytes.replace(b"</body>", pixel + b"</body>")``.

Ratios: trackgate / pytracking (issue target >= 10) and trackgate / floor (target >= 1/25 = 0.04).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GEN_DOCS = REPO.parent / "shared" / "bench" / "gen_docs.py"
METADATA = {"recipient": "r-1042", "campaign": 7}
PIXEL = b'<img src="https://t.example.org/_tg/o/x" width="1" height="1" alt="">'


class Unsigned:
    """A link source that costs nothing, so the scanner's own speed shows."""

    def click_url(self, url: str, metadata: Mapping[str, Any] | None = None) -> str:
        return "https://t.example.org/_tg/c/x"

    def open_url(self, metadata: Mapping[str, Any] | None = None) -> str:
        return "https://t.example.org/_tg/o/x"

    def is_tracking_url(self, url: str) -> bool:
        return url.startswith("https://t.example.org/_tg/")


def seconds_per_call(work: Callable[[], object], *, budget: float = 0.4) -> float:
    number = max(1, int(budget / max(timeit.timeit(work, number=1), 1e-9)))
    return timeit.timeit(work, number=number) / number


def documents(docs: Path | None) -> dict[str, bytes]:
    if docs is None:
        docs = Path(tempfile.mkdtemp(prefix="trackgate-bench-"))
        subprocess.run([sys.executable, str(GEN_DOCS), str(docs)], check=True, stdout=subprocess.DEVNULL)
    return {name: (docs / f"{name}.html").read_bytes() for name in ("email", "page")}


def contenders(document: bytes) -> dict[str, Callable[[], object]]:
    import pytracking
    from pytracking.html import adapt_html

    import trackgate

    settings = trackgate.Settings.from_environ({}, secret_key="bench-secret-key", base_url="https://t.example.org")
    signed = trackgate.TrackingLinks(settings)
    unsigned = Unsigned()
    configuration = pytracking.Configuration(
        base_open_tracking_url="https://t.example.org/o/", base_click_tracking_url="https://t.example.org/c/"
    )
    text = document.decode("utf-8")
    compiled = trackgate.rewrite.fast_scan

    def pure_python() -> object:
        trackgate.rewrite.fast_scan = None
        try:
            return trackgate.rewrite_html(document, signed, metadata=METADATA)
        finally:
            trackgate.rewrite.fast_scan = compiled

    return {
        "trackgate": lambda: trackgate.rewrite_html(document, signed, metadata=METADATA),
        "trackgate-python": pure_python,
        "trackgate-scan": lambda: trackgate.rewrite_html(document, unsigned, metadata=METADATA, click_tracking=False),
        "pytracking": lambda: adapt_html(text, METADATA, configuration=configuration),
        "floor": lambda: document.replace(b"</body>", PIXEL + b"</body>"),
    }


def _compiled() -> bool:
    import trackgate.rewrite

    return trackgate.rewrite.fast_scan is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=Path, help="folder with email.html and page.html (default: generate)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each counts")
    args = parser.parse_args(argv)

    print(f"compiled inner loop: {'yes' if _compiled() else 'no (pure Python)'}")
    print(f"{'document':<8} {'contender':<17} {'ms/doc':>9} {'MB/s':>9}")
    for name, document in documents(args.docs).items():
        works = contenders(document)
        best = dict.fromkeys(works, float("inf"))
        for _ in range(args.rounds):  # noise on a shared machine only ever slows a run down
            for label, work in works.items():
                best[label] = min(best[label], seconds_per_call(work))
        for label, seconds in best.items():
            print(f"{name:<8} {label:<17} {seconds * 1e3:9.3f} {len(document) / seconds / 1e6:9.1f}")
        ours = best["trackgate"]
        print(
            f"{name:<8} {len(document) / 1e3:.1f} KB: trackgate is {best['pytracking'] / ours:.1f}x pytracking, "
            f"{best['floor'] / ours:.4f} of the floor (1/{ours / best['floor']:.0f})"
        )


if __name__ == "__main__":
    main()
