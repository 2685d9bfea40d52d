"""The websocket parts of the library alone (``sessions.websocket``): the token bucket,
origins, the socket registry following the manager's events, and its slot counts.

Through real sockets on the demo's ``/ws``: tests/demo/test_websocket.py and
tests/demo/test_ws_limits.py.
"""

from __future__ import annotations

import pytest

from sessions import KeyRing, SessionManager, generate_key
from sessions.stores.memory import MemoryStore
from sessions.websocket import SocketRegistry, TokenBucket, normalize_origin


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(2, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 100  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_normalize_origin():
    assert normalize_origin(" HTTPS://Example.com/ ") == "https://example.com"


class FakeSocket:
    def __init__(self, key: str, user: str) -> None:
        self.session_key, self.user_id = key, user
        self.close_code: int | None = None
        self.sent: list[dict] = []

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.close_code = code

    def send_json(self, payload) -> bool:
        self.sent.append(dict(payload))
        return self.close_code is None


@pytest.mark.gen_test
async def test_registry_follows_the_manager_events():
    manager = SessionManager(MemoryStore(), KeyRing.from_text(generate_key()))
    registry = SocketRegistry.attach(manager, recheck_interval=60)
    assert registry in manager.listeners
    a1, a2, b1 = FakeSocket("ka", "ana"), FakeSocket("ka2", "ana"), FakeSocket("kb", "bob")
    for s in (a1, a2, b1):
        registry.add(s)
    assert len(registry) == 3 and set(registry.sockets_of_user("ana")) == {a1, a2}
    assert registry.send_to_user("ana", {"type": "x"}, exclude_key="ka") == 1 and a2.sent == [{"type": "x"}]
    assert registry.broadcast({"type": "y"}) == 3
    registry.session_renamed("ka", "ka-new")
    assert a1.session_key == "ka-new" and registry.sockets_of_session("ka-new") == [a1]
    registry.user_sessions_ended("ana", keep="ka-new")
    assert a2.close_code == 1008 and a1.close_code is None
    registry.session_ended("ka-new")
    assert a1.close_code == 1008 and registry.sockets_of_user("ana") == []
    await registry.close()
    assert b1.close_code == 1001 and len(registry) == 0 and registry not in manager.listeners
    late = FakeSocket("kc", "cy")
    registry.add(late)  # after close(): refused at once
    assert late.close_code == 1001 and len(registry) == 0


def test_registry_rejects_a_bad_interval():
    manager = SessionManager(MemoryStore(), KeyRing.from_text(generate_key()))
    with pytest.raises(ValueError):
        SocketRegistry(manager, recheck_interval=0)


# -- the registry's slot counts --------------------------------------------------------------


def test_registry_slots_count_per_scope_follow_renames_and_leave_nothing_behind():
    registry = SocketRegistry(SessionManager(MemoryStore(), KeyRing.from_text(generate_key())))
    a = registry.reserve("10.0.0.1", 2)
    b = registry.reserve("10.0.0.1", 2)
    assert a is not None and b is not None and registry.reserve("10.0.0.1", 2) is None
    assert registry.reserve("10.0.0.2", 2) is not None  # another address has its own count
    assert registry.claim(a, "k1", "ana", per_session=1, per_user=5) is None
    assert registry.claim(b, "k1", "ana", per_session=1, per_user=5) == "session"
    assert registry.claim(b, "k2", "ana", per_session=1, per_user=1) == "user"
    assert registry.claim(b, "k2", "ana", per_session=1, per_user=None) is None
    registry.session_renamed("k1", "k1-new")  # a password change renames this browser's session
    assert registry.slot_count(key="k1") == 0 and registry.slot_count(key="k1-new") == 1
    assert registry.claim(registry.reserve("10.0.0.3", None), "k1-new", "ana", per_session=1,  # type: ignore[arg-type]
                          per_user=None) == "session"
    for slot in (a, b, a):  # twice is harmless
        slot.release()
    assert registry.slot_count(user_id="ana") == 0 and registry.slot_count(address="10.0.0.1") == 0
    assert registry.slot_count() == 2  # 10.0.0.2 and the refused 10.0.0.3, still reserved
