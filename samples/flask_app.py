"""A Flask site wrapped by trackgate through its Flask glue.

Run it:  flask --app samples/flask_app.py run     (TRACKGATE_* variables or app.config keys configure it)

Every page shows the visitor code; the partner link leaves the site and so becomes a click-tracking link;
/signup records a "signup" event.
"""

from __future__ import annotations

from flask import Flask, render_template_string, request

import trackgate
from trackgate.adapters.flask import init_app, visitor

app = Flask(__name__)

PAGE = """<!DOCTYPE html><html><head><title>{{ title }}</title></head><body><h1>{{ title }}</h1>
<p>Your visitor code: <code>{{ code }}</code></p><p>{{ text }}</p>
<p><a href="/">Home</a> · <a href="/signup">Sign up</a> · <a href="https://partner.example/offer">Partner offer</a></p>
</body></html>"""


def _page(title: str, text: str) -> str:
    found = visitor()
    return render_template_string(PAGE, title=title, text=text, code=found.code if found else "(not tracked)")


@app.route("/")
def home() -> str:
    return _page("Home", "Welcome.")


@app.route("/signup")
def signup() -> str:
    trackgate.record(request, "signup")
    return _page("Signed up", "Thanks for signing up.")


init_app(app)
