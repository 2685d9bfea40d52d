"""The demo's websocket (``/ws``) and the page that uses it (``/live``).

Protocol (JSON text messages; the README's "Websocket protocol" section):

* server → client on connect: ``{"type": "welcome", "user": {"id", "name"}, "worker",
  "idle_deadline", "absolute_deadline"}`` (``worker`` is the worker number under
  ``--processes N``, else null; the deadlines are Unix seconds);
* idle expiry (the library's :class:`~sessions.websocket.SessionWebSocketMixin`):
  ``{"type": "expiring", "idle_deadline", "absolute_deadline"}`` ``websocket_expiry_warning``
  seconds (``--expiry-warning``) before the idle deadline; ``{"type": "activity"}`` from
  the client touches the session (rate-limited, never past the absolute deadline) and is
  answered ``{"type": "deadlines", "idle_deadline", "absolute_deadline"}``; at the
  deadline the socket closes with 1008 "session expired". static/live.js counts down to
  both deadlines and offers "Stay signed in";
* ``{"type": "ping"[, "id"]}`` → ``{"type": "pong"[, "id"]}``;
* ``{"type": "chat", "text": "..."}`` (1-500 characters after trimming; no control
  character but newline, and no format, separator, surrogate, private-use or unassigned
  character: see :func:`clean_chat`) →
  ``{"type": "chat", "from": {"id": <user id>, "name": <display name>}, "text": ...}``
  to every open socket of this process (with ``--processes N``, chat reaches the users
  on the same worker only). Display names are not unique: show ``from.id`` (or "you"
  when it is the welcome's ``user.id``) next to the name, as static/live.js does;
* notices of the user's own session events: ``{"type": "notice", "event": "login" |
  "revoked" | "logout_everywhere", ...}``;
* anything else: ``{"type": "error", "error": "..."}``; the socket stays open.

Close codes: 1008 when the session ends (or the client sends too fast), 1009 for a
message over ``websocket_max_message_size``, 1013 "slow consumer" when more than
``websocket_max_write_buffer`` waits for the client, 1000 "ping timed out" when the
client does not answer the server's pings, 1001 when the server shuts down. The
handshake is refused with 403 (no login, stale login, foreign Origin) or 429 (too many
sockets for the session, the user or the client address).
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

import tornado.process
from tornado.web import HTTPError

from accounts.sessions import AccountSessions
from sessions.events import audit_log, log_event, security_log, short_key
from sessions.websocket import SessionWebSocketMixin, TokenBucket

from .account_pages import LoggedInPage
from .base import SecureHeadersMixin

MAX_CHAT = 500
#: Longest client-chosen ping id echoed back.
MAX_PING_ID = 64


#: Unicode categories refused in chat text: controls (Cc; newline excepted), format
#: characters (Cf: bidi overrides like U+202E, zero-width U+200B/U+200D...), line and
#: paragraph separators (Zl, Zp), surrogates (Cs), private use (Co), unassigned (Cn).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
#: Letters that render as nothing (Hangul fillers, the blank Braille pattern): a
#: message of these and spaces is blank, however long.
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: Most combining marks on one character ("Zalgo" text piles hundreds on one letter).
MAX_COMBINING_RUN = 4
#: Chat messages per user per second (all of that user's sockets in this process
#: together), and how many may be saved up: one user with many sockets cannot flood
#: everyone else's.
CHAT_RATE, CHAT_BURST = 2.0, 10


def clean_chat(text: Any) -> str | None:
    """The chat text to send, or None when it is not 1-500 characters of visible text.

    Refused: any character of :data:`REFUSED_CATEGORIES` but newline (so no tab, no
    bidi override, no zero-width character; emoji joined with U+200D ZWJ are refused
    too, the price of refusing every format character).
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not 1 <= len(text) <= MAX_CHAT:
        return None
    visible = False
    combining = 0
    for ch in text:
        category = unicodedata.category(ch)
        if ch != "\n" and category in REFUSED_CATEGORIES:
            return None
        combining = combining + 1 if category in ("Mn", "Me") else 0
        if combining > MAX_COMBINING_RUN:
            return None
        if not ch.isspace() and ch not in BLANK_LOOKING and category not in ("Mn", "Me"):
            visible = True
    return text if visible else None


class LiveSocket(SecureHeadersMixin, SessionWebSocketMixin):
    """``/ws``: a logged-in user's socket (ping, notices, chat)."""

    display_name = ""
    #: One chat rate per user, shared by the user's sockets in this process; a user's
    #: bucket goes when the user's last socket closes.
    chat_buckets: dict[str, TokenBucket] = {}

    async def prepare(self) -> None:
        await super().prepare()  # origin and session (403 otherwise)
        service: AccountSessions = self.settings["account_sessions"]
        # The pages' and the API's rule (accounts.sessions.login_is_current): a user who is
        # gone, or a session from before a password change or with no credentials version
        # at all, is no login.
        user, current = await service.user_of(self.session, strict=True)  # a socket lives long: read the user
        if user is None or not current:
            log_event(audit_log, logging.INFO, "websocket_refused", reason="stale login",
                      key=short_key(self.session_key), remote=self.request.remote_ip)
            raise HTTPError(403, "log in again")
        self.display_name = user.name

    def open(self) -> None:
        self.send_json(
            {"type": "welcome", "user": {"id": self.user_id, "name": self.display_name},
             "worker": tornado.process.task_id(), **self.session_deadlines()}
        )

    def on_json(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            ping_id = data.get("id")
            if isinstance(ping_id, int | str) and not isinstance(ping_id, bool) and len(str(ping_id)) <= MAX_PING_ID:
                pong["id"] = ping_id
            self.send_json(pong)
        elif kind == "chat":
            text = clean_chat(data.get("text"))
            if text is None:
                self.send_error_message(f"chat text must be 1-{MAX_CHAT} characters of text", field="text")
                return
            bucket = self.chat_buckets.get(self.user_id)
            if bucket is None:
                bucket = self.chat_buckets[self.user_id] = TokenBucket(CHAT_RATE, CHAT_BURST)
            if not bucket.take():
                log_event(security_log, logging.WARNING, "chat_rate_limited", user=self.user_id,
                          remote=self.request.remote_ip)
                self.send_error_message("too many chat messages; slow down", retry_after=1)
                return
            self.socket_registry.broadcast(
                {"type": "chat", "from": {"id": self.user_id, "name": self.display_name}, "text": text}
            )
        else:
            self.send_error_message("unknown message type", types=["ping", "chat", "activity"])


    def on_connection_close(self) -> None:
        super().on_connection_close()
        user_id = getattr(self, "user_id", None)
        if user_id is not None and not self.socket_registry.sockets_of_user(user_id):
            self.chat_buckets.pop(user_id, None)


class LivePage(LoggedInPage):
    """``/live``: connection state, ping latency, the session's deadlines with "Stay signed
    in", notices and the chat (static/live.js)."""

    return_to = "/live"

    async def get(self) -> None:
        # The manager's clock, which the socket's deadlines come from: the page's script
        # counts down in server time, whatever the browser's clock says.
        # Times on the page are written as on the other pages: "2026-12-01 07:42 UTC", in
        # the visitor's time zone preference.
        now = self.session_manager.clock()
        zone = self.preferences.get()["timezone"]
        await self.render_page(
            "live.html", user=self.user, server_time=f"{now:.3f}", timezone=zone,
            timezone_name=self.format_time(now).rpartition(" ")[2],
        )
