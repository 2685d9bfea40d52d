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


#: Every character that ``str.splitlines()`` (or a terminal) takes as a line break, and
#: the other C0/C1 controls: escaped by :class:`OneLineFormatter`.
_LINE_BREAKING = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
}


def one_line(text: str) -> str:
    """``text`` with every line break and control character escaped (``\\n``, ``\\x85``...)."""
    return text.translate(_LINE_BREAKING)


class OneLineFormatter(logging.Formatter):
    """A formatter whose every record is exactly one line, whoever wrote the message.

    Event lines are JSON already; this covers the rest (Tornado's own messages, which
    may quote a malformed request byte for byte, and tracebacks): a NEL (0x85), a
    U+2028 or a newline in a client's bytes can no longer start a forged line.
    """

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


def short_key(key: str | None) -> str | None:
    """A session's store key shortened for logs: enough to correlate, too little to use."""
    return key[:12] if key else None
