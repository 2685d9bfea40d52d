"""The Session object (sessions/session.py): mapping, change tracking, flash, intents."""

from __future__ import annotations

import json
import time

import pytest

from sessions.session import FLASH_PREFIX, Session, dumps, state_of


# The manager's bookkeeping, read as the manager reads it (handlers never see it).
def changes(session: Session):
    return state_of(session).changes(session)


def all_items(session: Session):
    return state_of(session).all_items(session)


def mark_saved(session: Session, session_id: str, key: str, items=None) -> None:
    state_of(session).mark_saved(session, session_id, key, items)


def is_empty(session: Session) -> bool:
    return state_of(session).is_empty(session)


def user_changed(session: Session) -> bool:
    return state_of(session).user_changed(session)


def meta_changed(session: Session) -> bool:
    return state_of(session).meta_changed(session)


def regenerating(session: Session) -> bool:
    return state_of(session).regenerating


def flash_names(session: Session, category=None):
    return state_of(session).flash_names(session, category)


def drop_flashes(session: Session, names, taken):
    return state_of(session).drop_flashes(session, names, taken)


def pop_flashes(session: Session, category=None):
    """What the manager's atomic take gives one request alone: every queued message."""
    state = state_of(session)
    stored, unsaved = state.flash_names(session, category)
    return state.drop_flashes(session, stored + unsaved, {name: state.stored[name] for name in stored})


def new_session() -> Session:
    now = time.time()
    return Session(None, None, created=now, last_access=now, expires=now + 3600)


def loaded_session(data: dict | None = None, *, user_id: str | None = None) -> Session:
    """A session as the manager builds it from a store record (values as JSON text)."""
    now = time.time()
    stored = {k: dumps(v) for k, v in (data or {}).items()}
    return Session(
        "sid",
        "hashed-sid",
        stored=stored,
        created=now - 60,
        last_access=now,
        expires=now + 3600,
        user_id=user_id,
    )


def next_request(session: Session) -> Session:
    """What the following request sees after this one was committed."""
    return Session(
        "sid",
        "hashed-sid",
        stored=all_items(session),
        created=session.created,
        last_access=session.last_access,
        expires=session.expires,
        user_id=session.user_id,
    )


# -- mapping ----------------------------------------------------------------------


def test_new_session_is_new_and_empty():
    session = new_session()
    assert session.is_new and is_empty(session) and len(session) == 0 and session.id is None


def test_loaded_session_is_not_new_and_holds_stored_values():
    session = loaded_session({"count": 3, "cart": [1, 2], "user": {"name": "ana"}})
    assert not session.is_new
    assert dict(session) == {"count": 3, "cart": [1, 2], "user": {"name": "ana"}}


def test_loaded_session_with_no_data_is_not_new():
    assert not loaded_session({}).is_new


def test_mapping_set_get_contains_len_iter_delete():
    session = new_session()
    session["a"] = 1
    session["b"] = "two"
    assert session["a"] == 1 and session.get("b") == "two" and session.get("c", 9) == 9
    assert "a" in session and "c" not in session
    assert len(session) == 2 and sorted(session) == ["a", "b"]
    del session["a"]
    assert "a" not in session and list(session) == ["b"]


def test_missing_key_raises_key_error():
    session = new_session()
    with pytest.raises(KeyError):
        session["missing"]
    with pytest.raises(KeyError):
        del session["missing"]


def test_mapping_helpers_work():
    session = loaded_session({"a": 1, "b": 2})
    assert session.pop("a") == 1
    assert session.setdefault("c", [3]) == [3]
    session.update({"d": 4}, e=5)
    assert dict(session.items()) == {"b": 2, "c": [3], "d": 4, "e": 5}
    session.clear()
    assert len(session) == 0


# -- changes() -------------------------------------------------------------------


def test_untouched_loaded_session_has_no_changes():
    assert changes(loaded_session({"a": 1, "cart": [1]})) == ({}, [])


def test_reads_are_not_changes():
    session = loaded_session({"n": 1, "s": "x", "cart": [1, 2], "d": {"k": [1]}})
    _ = session["n"], session["s"], session["cart"], session.get("d")
    _ = list(session.items()), list(session.values()), "cart" in session
    assert changes(session) == ({}, [])


def test_writing_an_equal_value_is_not_a_change():
    session = loaded_session({"n": 1, "cart": [1, 2], "d": {"a": 1, "b": 2}})
    session["n"] = 1
    session["cart"] = [1, 2]
    session["d"] = {"b": 2, "a": 1}  # same JSON object, other key order
    assert changes(session) == ({}, [])


def test_changes_hold_only_the_changed_key_as_canonical_json():
    session = loaded_session({"a": 1, "b": 2, "c": 3})
    session["b"] = {"y": 2, "x": [1]}
    assert changes(session) == ({"b": '{"x":[1],"y":2}'}, [])


def test_new_key_is_a_change():
    session = loaded_session({"a": 1})
    session["new"] = "v"
    assert changes(session) == ({"new": '"v"'}, [])


def test_type_change_to_an_equal_python_value_is_a_change():
    """1 == 1.0 == True in Python, but they are different JSON values."""
    session = loaded_session({"a": 1, "b": 1})
    session["a"] = 1.0
    session["b"] = True
    assert changes(session) == ({"a": "1.0", "b": "true"}, [])


def test_in_place_append_to_a_list_is_detected():
    session = loaded_session({"cart": [1, 2], "other": [9]})
    session["cart"].append(3)
    assert changes(session) == ({"cart": "[1,2,3]"}, [])


def test_in_place_change_of_a_nested_dict_is_detected():
    session = loaded_session({"profile": {"prefs": {"theme": "light"}, "tags": []}})
    session["profile"]["prefs"]["theme"] = "dark"
    assert changes(session) == ({"profile": '{"prefs":{"theme":"dark"},"tags":[]}'}, [])


def test_in_place_change_through_get_is_detected():
    session = loaded_session({"cart": []})
    session.get("cart").append("x")
    assert changes(session) == ({"cart": '["x"]'}, [])


def test_in_place_change_through_items_is_detected():
    session = loaded_session({"cart": [], "tags": {}})
    for name, value in session.items():
        if name == "tags":
            value["new"] = True
    assert changes(session) == ({"tags": '{"new":true}'}, [])


def test_in_place_change_of_a_value_after_assigning_it_is_detected():
    session = loaded_session({})
    cart: list = []
    session["cart"] = cart
    cart.append(1)
    assert changes(session) == ({"cart": "[1]"}, [])


def test_in_place_change_then_undo_is_not_a_change():
    session = loaded_session({"cart": [1]})
    session["cart"].append(2)
    session["cart"].pop()
    assert changes(session) == ({}, [])


def test_deleting_a_stored_key_is_an_unset():
    session = loaded_session({"a": 1, "b": 2})
    del session["a"]
    assert changes(session) == ({}, ["a"])


def test_pop_of_a_stored_key_is_an_unset():
    session = loaded_session({"a": 1})
    session.pop("a")
    assert changes(session) == ({}, ["a"])


def test_clear_unsets_every_stored_key():
    session = loaded_session({"a": 1, "b": [2]})
    session.clear()
    set_items, unset = changes(session)
    assert set_items == {} and sorted(unset) == ["a", "b"]


def test_adding_then_deleting_a_new_key_is_no_change():
    session = loaded_session({"a": 1})
    session["tmp"] = 1
    del session["tmp"]
    assert changes(session) == ({}, [])


def test_deleting_then_restoring_the_same_value_is_no_change():
    session = loaded_session({"a": [1]})
    del session["a"]
    session["a"] = [1]
    assert changes(session) == ({}, [])


def test_new_session_changes_contain_every_key():
    session = new_session()
    session["a"] = 1
    session["b"] = [1]
    assert changes(session) == ({"a": "1", "b": "[1]"}, [])


def test_mark_saved_resets_changes_and_is_new():
    session = new_session()
    session["cart"] = [1]
    mark_saved(session, "new-id", "new-key")
    assert (session.id, session.key, session.is_new) == ("new-id", "new-key", False)
    assert changes(session) == ({}, [])
    session["cart"].append(2)
    assert changes(session) == ({"cart": "[1,2]"}, [])


# -- what a session accepts ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        b"bytes",
        object(),
        float("nan"),
        float("inf"),
        -float("inf"),
        {"nested": {1, 2}},
        [b"x"],
        {"n": float("nan")},
        {(1, 2): "tuple key"},
        time,
    ],
    ids=[
        "set",
        "bytes",
        "object",
        "nan",
        "inf",
        "-inf",
        "nested-set",
        "list-bytes",
        "nested-nan",
        "tuple-key",
        "module",
    ],
)
def test_values_that_are_not_json_are_refused_at_assignment(value):
    session = loaded_session({"keep": 1})
    with pytest.raises((TypeError, ValueError)):
        session["bad"] = value
    assert "bad" not in session
    assert changes(session) == ({}, [])


def test_replacing_with_a_non_json_value_keeps_the_old_value():
    session = loaded_session({"a": 1})
    with pytest.raises(TypeError):
        session["a"] = {1, 2}
    assert session["a"] == 1 and changes(session) == ({}, [])


@pytest.mark.parametrize("name", [1, None, 1.5, ("a",), b"a", True])
def test_non_string_keys_are_refused(name):
    session = new_session()
    with pytest.raises(TypeError):
        session[name] = "v"  # type: ignore[index]
    assert len(session) == 0


@pytest.mark.parametrize(
    "value", ["text", "ünïcode ✓", 0, -3, 2.5, True, False, None, [], {}, [1, [2, {"a": None}]], {"k": "v"}]
)
def test_json_values_are_accepted_and_round_trip(value):
    session = new_session()
    session["v"] = value
    assert next_request(session)["v"] == value


# -- flash --------------------------------------------------------------------------


def test_pop_flashes_returns_messages_in_order_with_categories():
    session = new_session()
    session.flash("saved")
    session.flash("bad input", "error")
    session.flash("welcome", "success")
    assert pop_flashes(session) == [("info", "saved"), ("error", "bad input"), ("success", "welcome")]


def test_flash_default_category_is_info():
    session = new_session()
    session.flash("hello")
    assert pop_flashes(session) == [("info", "hello")]


def test_flashes_are_returned_only_once():
    session = new_session()
    session.flash("once")
    assert pop_flashes(session) == [("info", "once")]
    assert pop_flashes(session) == []
    assert not any(name.startswith(FLASH_PREFIX) for name in session)


def test_pop_flashes_with_no_messages_is_empty_and_changes_nothing():
    session = loaded_session({"a": 1})
    assert pop_flashes(session) == []
    assert pop_flashes(session, "error") == []
    assert changes(session) == ({}, [])


def test_pop_flashes_of_one_category_leaves_the_others_in_order():
    session = new_session()
    session.flash("one")
    session.flash("bad", "error")
    session.flash("two")
    session.flash("worse", "error")
    assert pop_flashes(session, "error") == [("error", "bad"), ("error", "worse")]
    assert pop_flashes(session) == [("info", "one"), ("info", "two")]


def test_pop_flashes_of_an_absent_category_leaves_everything():
    session = loaded_session({})
    session.flash("kept")
    mark_saved(session, "sid", "hashed-sid")
    assert pop_flashes(session, "warning") == []
    assert changes(session) == ({}, [])
    assert pop_flashes(session) == [("info", "kept")]


def test_flash_is_shown_exactly_once_across_requests():
    """POST flashes; the redirected GET shows it; the GET after that doesn't."""
    post = new_session()
    post.flash("Saved!", "success")
    get = next_request(post)
    [flash_key] = [name for name in get if name.startswith(FLASH_PREFIX)]
    assert flash_key in get
    assert pop_flashes(get) == [("success", "Saved!")]
    assert changes(get) == ({}, [])  # taken from the store already: the commit writes nothing for it
    assert pop_flashes(next_request(get)) == []


def test_flash_survives_requests_that_do_not_read_it():
    post = new_session()
    post.flash("later")
    unrelated = next_request(post)
    unrelated["visits"] = 1
    assert pop_flashes(next_request(unrelated)) == [("info", "later")]


def test_flash_makes_a_session_non_empty():
    session = new_session()
    session.flash("x")
    assert not is_empty(session)


# -- intents: regenerate, destroy -----------------------------------------------------


def test_fresh_session_is_neither_regenerating_nor_destroyed():
    session = loaded_session({"a": 1})
    assert not regenerating(session) and not session.destroyed


def test_regenerate_keeping_data():
    session = loaded_session({"cart": [1]}, user_id="u1")
    session.regenerate()
    assert regenerating(session)
    assert dict(session) == {"cart": [1]} and session.user_id == "u1"


def test_regenerate_without_data_clears_data_and_user():
    session = loaded_session({"cart": [1], "n": 2}, user_id="u1")
    session.regenerate(keep_data=False)
    assert regenerating(session)
    assert len(session) == 0 and session.user_id is None
    assert all_items(session) == {}
    assert is_empty(session)


def test_mark_saved_ends_the_regeneration():
    session = loaded_session({"a": 1})
    session.regenerate()
    mark_saved(session, "new-id", "new-key")
    assert not regenerating(session) and session.id == "new-id"


def test_destroy_clears_data_and_user_and_marks_destroyed():
    session = loaded_session({"a": 1}, user_id="u1")
    session.destroy()
    assert session.destroyed
    assert len(session) == 0 and session.user_id is None and is_empty(session)


# -- user_id --------------------------------------------------------------------------


def test_user_id_from_the_store_is_unchanged():
    session = loaded_session({}, user_id="u1")
    assert session.user_id == "u1" and not user_changed(session)


def test_setting_user_id_is_a_user_change():
    session = loaded_session({})
    session.user_id = "u1"
    assert user_changed(session)


def test_clearing_user_id_is_a_user_change():
    session = loaded_session({}, user_id="u1")
    session.user_id = None
    assert user_changed(session)


def test_setting_user_id_back_is_not_a_user_change():
    session = loaded_session({}, user_id="u1")
    session.user_id = "u2"
    session.user_id = "u1"
    assert not user_changed(session)


def test_mark_saved_resets_user_changed():
    session = new_session()
    session.user_id = "u1"
    mark_saved(session, "sid", "key")
    assert not user_changed(session) and session.user_id == "u1"


@pytest.mark.parametrize("value", [1, b"u1", ["u1"]])
def test_user_id_must_be_a_string(value):
    session = new_session()
    with pytest.raises(TypeError):
        session.user_id = value  # type: ignore[assignment]
    assert session.user_id is None


def test_user_id_is_not_part_of_the_data():
    session = new_session()
    session.user_id = "u1"
    assert len(session) == 0 and all_items(session) == {}


# -- is_empty / all_items ----------------------------------------------------------------


def test_session_with_only_a_user_is_not_empty():
    session = new_session()
    session.user_id = "u1"
    assert not is_empty(session)


def test_session_with_data_is_not_empty_until_the_data_is_removed():
    session = new_session()
    session["a"] = 1
    assert not is_empty(session)
    del session["a"]
    assert is_empty(session)


def test_all_items_is_canonical_json_per_key():
    session = new_session()
    session["b"] = {"z": 1, "a": [1, 2, {"y": None, "x": True}]}
    session["u"] = "é ✓"
    session["f"] = 0.5
    assert all_items(session) == {
        "b": '{"a":[1,2,{"x":true,"y":null}],"z":1}',
        "u": '"é ✓"',
        "f": "0.5",
    }


def test_all_items_equal_data_gives_equal_text():
    one, two = new_session(), new_session()
    one["d"] = {"a": 1, "b": 2}
    two["d"] = {"b": 2, "a": 1}
    assert all_items(one) == all_items(two)


def test_all_items_parse_back_to_the_data():
    session = loaded_session({"a": [1, {"b": "c"}], "n": None})
    assert {k: json.loads(v) for k, v in all_items(session).items()} == dict(session)


def test_each_flash_is_a_key_of_its_own_so_parallel_adds_do_not_collide():
    session = new_session()
    for i in range(50):
        session.flash(f"m{i}")
    names = [name for name in session if name.startswith(FLASH_PREFIX)]
    assert len(set(names)) == 50
    set_items, _ = changes(session)
    assert set(set_items) == set(names)
    assert [m for _, m in pop_flashes(session)] == [f"m{i}" for i in range(50)]  # queue order


def test_flash_rejects_non_text():
    session = new_session()
    with pytest.raises(TypeError):
        session.flash({"$gt": ""})  # type: ignore[arg-type]


def test_drop_flashes_shows_only_what_the_store_handed_over():
    post = new_session()
    post.flash("a")
    post.flash("b")
    get = next_request(post)
    stored, unsaved = flash_names(get)
    assert unsaved == [] and len(stored) == 2
    get.flash("added now")
    _, unsaved = flash_names(get)
    assert len(unsaved) == 1
    # A parallel request took the first message; the store handed us only the second.
    taken = {stored[1]: all_items(get)[stored[1]]}
    assert drop_flashes(get, stored + unsaved, taken) == [("info", "b"), ("info", "added now")]
    assert flash_names(get) == ([], [])
    assert changes(get) == ({}, [])  # taken items are already gone from the store


def test_meta_changes_are_tracked_and_cleared_on_destroy():
    session = loaded_session({"a": 1})
    assert session.meta == {} and not meta_changed(session)
    session.meta["ip"] = "203.0.113.5"
    assert meta_changed(session)
    mark_saved(session, "sid", "hashed-sid", all_items(session))
    assert not meta_changed(session)
    session.destroy()
    assert session.meta == {}


@pytest.mark.parametrize(
    "text",
    ['3', '-0.5e3', '"zoë"', 'true', 'null', '[1,{"a":[]}]', '{"b":1,"a":"x"}', ' 3', '3 ', '\t[1]\n', 'NaN',
     '"\\ud83d\\ude00"', '1e400'],
)  # fmt: skip
def test_stored_texts_decode_exactly_as_json_loads_decodes_them(text: str) -> None:
    from sessions.tracking import loads

    assert repr(loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["", "3 4", "[1", "tru", "'x'", "[1]x", "{}{}"])
def test_what_json_loads_refuses_is_refused_the_same_way(text: str) -> None:
    from sessions.tracking import loads

    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        loads(text)
    assert str(got.value) == str(expected.value)


def test_get_reads_like_a_mapping_and_watches_mutable_values() -> None:
    session = Session("id", "key", stored={"n": "1", "cart": "[1]"}, created=0, last_access=0, expires=1)
    assert session.get("n") == 1 and session.get("missing") is None and session.get("missing", 7) == 7
    session.get("cart").append(2)  # mutated in place through get(): the commit must notice
    assert state_of(session).changes(session) == ({"cart": "[1,2]"}, [])
