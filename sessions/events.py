"""Structured log lines for security and audit events.

Every client-controlled value (paths, header values, JSON keys) ends up in logs, and
free text lets a client forge lines with a newline. Events are therefore written as
one JSON object per line, ``{"event": "...", ...}``: JSON escapes newlines, quotes
and control characters, so no value can start a line of its own. Secrets (session
IDs, tokens, passwords) never go in; a session is named by a short prefix of its
store key, which is itself a hash.
"""

from __future__ import annotations

import json
import logging
from typing import Any

security_log = logging.getLogger("sessions.security")
audit_log = logging.getLogger("sessions.audit")

#: Longest string value written as is; longer ones are cut (a log line is no dump).
MAX_FIELD_CHARS = 200


def _field(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_CHARS:
        text = text[:MAX_FIELD_CHARS] + "..."
    return text


def event_line(event: str, **fields: Any) -> str:
    """The JSON text of one event (sorted keys after ``event``; ASCII only)."""
    body = {"event": event, **{name: _field(value) for name, value in sorted(fields.items())}}
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"))


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Write one event line if ``logger`` is enabled for ``level`` (no formatting otherwise)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s", event_line(event, **fields))


def short_key(key: str | None) -> str | None:
    """A session's store key shortened for logs: enough to correlate, too little to use."""
    return key[:12] if key else None
