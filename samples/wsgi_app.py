"""A plain WSGI site (no framework) wrapped by trackgate.WSGIMiddleware.

Run it:  python samples/wsgi_app.py     (serves http://127.0.0.1:8000 with wsgiref; TRACKGATE_* configure it)

Every page shows the visitor code; the partner link leaves the site and so becomes a click-tracking link;
/signup records a "signup" event.
"""

from __future__ import annotations

import html
from typing import Any
from wsgiref.simple_server import make_server

import trackgate


def site(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/":
        title, text = "Home", "Welcome."
    elif path == "/signup":
        trackgate.record(environ, "signup")
        title, text = "Signed up", "Thanks for signing up."
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found"]
    found = trackgate.get_visitor(environ)
    code = found.code if found else "(not tracked)"
    body = (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
        f"<p>Your visitor code: <code>{html.escape(code)}</code></p><p>{text}</p>"
        '<p><a href="/">Home</a> · <a href="/signup">Sign up</a> · '
        '<a href="https://partner.example/offer">Partner offer</a></p></body></html>'
    ).encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


app = trackgate.WSGIMiddleware(site)

if __name__ == "__main__":
    with make_server("127.0.0.1", 8000, app) as server:
        print("Serving on http://127.0.0.1:8000")
        server.serve_forever()
