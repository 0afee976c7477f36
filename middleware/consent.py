"""What a consent cookie says: TRACKGATE_CONSENT_COOKIE in its three forms.

    name            any value grants but a refusal (0, false, no, off, denied...)
    name=value      only that value grants; any other withdraws
    name:category   a consent manager's cookie listing categories (Cookiebot's ``CookieConsent:statistics``,
                    CookieYes's ``cookieyes-consent:analytics``, OneTrust's ``OptanonConsent:C0002``); the
                    category's own answer decides, and a cookie that does not name it decides nothing

A consent manager's cookie records every answer, refusals too: read by name alone, a visitor who declined
statistics would count as consenting.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REFUSALS = frozenset({"", "0", "false", "no", "off", "denied", "deny", "reject", "rejected"})
# Answers that grant a category; anything else a manager writes there (false, 0, no, deny...) refuses it.
_GRANTS = frozenset({"1", "true", "yes", "on", "allow", "allowed", "granted", "accept", "accepted"})


class ConsentCookie:
    """One TRACKGATE_CONSENT_COOKIE setting; ``decide`` reads the cookie's value."""

    __slots__ = ("_category", "_value", "name")

    def __init__(self, setting: str) -> None:
        name, _, value = setting.partition("=")
        name, _, category = name.partition(":")
        self.name = name
        self._value = value or None
        # The category as a manager writes it: a key, quoted or not, then ":" or "=" and the answer. Keys
        # are found only where a list item starts ({, comma, &, ;, or = as in OneTrust's "groups=C0002:0"),
        # never inside another key.
        self._category = (
            re.compile(
                r"""(?:^|[{,&;|=\s])["']?""" + re.escape(category) + r"""["']?\s*[:=]\s*["']?([\w-]*)""",
                re.IGNORECASE,
            )
            if category
            else None
        )

    def decide(self, value: str) -> bool | None:
        """True grants, False refuses (withdraws consent in either mode), None: the cookie says nothing."""
        if self._category is not None:
            # Managers percent-encode their lists (Cookiebot's "%2C", OneTrust's "%3A"), some twice.
            text = unquote(unquote(value))
            found = self._category.search(text)
            return None if found is None else found[1].lower() in _GRANTS
        if self._value is not None:
            return value == self._value
        return value.strip().lower() not in REFUSALS
