"""What the two compiled-start property tests (test_asgi_send.py, test_wsgi_start.py) draw requests from:
the same visitors and set-ups for both shells."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Cookie headers: none, a visitor's, two copies, bad values, a consent cookie, an over-long header.
COOKIES = st.sampled_from(
    [
        None,
        "",
        "tg_vid=abc123",
        "other=1; tg_vid=abc123",
        "tg_vid=abc123; tg_vid=zzz",
        "tg_vid=abc123; tg_vid=abc123",
        "tg_vid=bad value",
        "tg_vid=" + "x" * 300,
        "cc=1",
        "cc=0; tg_vid=abc123",
        "cc=1; tg_vid=abc123",
        "theme=dark",
        "tg_vid=abc123; " + "pad=" + "p" * 5000,
    ]
)
SETTINGS = st.fixed_dictionaries(
    {
        "consent": st.sampled_from(["implicit", "required"]),
        "consent_cookie": st.sampled_from([None, "cc"]),
        "respect_gpc": st.booleans(),
        "rewrite": st.sampled_from(["off", "all"]),
        "cookie_secure": st.sampled_from([None, True, False]),
        "cookie_domain": st.sampled_from([None, "example.org"]),
    }
)
ACTIONS = st.sampled_from([None, "grant", "withdraw"])  # what the app does with consent before it answers

# The requests the compiled starts decide: a first visit or a known returning one, in the default set-up
# (implicit consent, no consent cookie, no Sec-GPC), with what may still vary.
DECIDED_SETTINGS = st.fixed_dictionaries(
    {
        "rewrite": st.sampled_from(["off", "all"]),
        "cookie_secure": st.sampled_from([None, True, False]),
        "cookie_domain": st.sampled_from([None, "example.org"]),
    }
)
DECIDED_COOKIES = st.sampled_from([None, "", "tg_vid=abc123", "other=1; tg_vid=abc123"])
DECIDED_ACTIONS = st.sampled_from([None, None, None, "grant", "withdraw"])


def decided(case_fields: dict[str, st.SearchStrategy[Any]], **shell_fields: st.SearchStrategy[Any]) -> Any:
    """A shell test's cases narrowed to the requests its compiled start decides, with everything about the
    response still varied (drawn from all the fields, they would be rare); ``shell_fields`` narrow the
    shell's own fields (query string, path...) the same way."""
    return st.fixed_dictionaries(
        {
            **case_fields,
            "config": DECIDED_SETTINGS,
            "cookie": DECIDED_COOKIES,
            "gpc": st.none(),
            "action": DECIDED_ACTIONS,
            **shell_fields,
        }
    )
