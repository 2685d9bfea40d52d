"""One vocabulary for the demo's pages, JSON notices and live page.

A browser is named the same way everywhere ("Firefox on Linux", :func:`browser_label`)
and a time is written one way, with its zone ("2026-12-01 07:42 UTC",
:func:`format_when`, in the visitor's time zone preference).
"""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def browser_label(user_agent: str) -> str:
    """A short name for a user agent: "Chrome on Linux", "Firefox on Windows", ..."""
    ua = user_agent or ""
    browser = next((name for token, name in _BROWSERS if token in ua), None)
    system = next((name for token, name in _SYSTEMS if token in ua), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or (ua[:40] if ua else "unknown")


def format_when(timestamp: float, timezone: str = "UTC") -> str:
    """A moment as the pages write it: "2026-12-01 07:42 UTC" (the zone's abbreviation)."""
    when = datetime.datetime.fromtimestamp(timestamp, ZoneInfo(timezone))
    return when.strftime("%Y-%m-%d %H:%M ") + (when.tzname() or "")
