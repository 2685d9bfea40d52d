"""The Session object (sessions/session.py): mapping, change tracking, flash, intents."""

from __future__ import annotations

import json
import time

import pytest

from sessions.session import FLASH_PREFIX, Session, dumps


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
        stored=session.all_items(),
        created=session.created,
        last_access=session.last_access,
        expires=session.expires,
        user_id=session.user_id,
    )


# -- mapping ----------------------------------------------------------------------


def test_new_session_is_new_and_empty():
    session = new_session()
    assert session.is_new and session.is_empty and len(session) == 0 and session.id is None


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
    assert loaded_session({"a": 1, "cart": [1]}).changes() == ({}, [])


def test_reads_are_not_changes():
    session = loaded_session({"n": 1, "s": "x", "cart": [1, 2], "d": {"k": [1]}})
    _ = session["n"], session["s"], session["cart"], session.get("d")
    _ = list(session.items()), list(session.values()), "cart" in session
    assert session.changes() == ({}, [])


def test_writing_an_equal_value_is_not_a_change():
    session = loaded_session({"n": 1, "cart": [1, 2], "d": {"a": 1, "b": 2}})
    session["n"] = 1
    session["cart"] = [1, 2]
    session["d"] = {"b": 2, "a": 1}  # same JSON object, other key order
    assert session.changes() == ({}, [])


def test_changes_hold_only_the_changed_key_as_canonical_json():
    session = loaded_session({"a": 1, "b": 2, "c": 3})
    session["b"] = {"y": 2, "x": [1]}
    assert session.changes() == ({"b": '{"x":[1],"y":2}'}, [])


def test_new_key_is_a_change():
    session = loaded_session({"a": 1})
    session["new"] = "v"
    assert session.changes() == ({"new": '"v"'}, [])


def test_type_change_to_an_equal_python_value_is_a_change():
    """1 == 1.0 == True in Python, but they are different JSON values."""
    session = loaded_session({"a": 1, "b": 1})
    session["a"] = 1.0
    session["b"] = True
    assert session.changes() == ({"a": "1.0", "b": "true"}, [])


def test_in_place_append_to_a_list_is_detected():
    session = loaded_session({"cart": [1, 2], "other": [9]})
    session["cart"].append(3)
    assert session.changes() == ({"cart": "[1,2,3]"}, [])


def test_in_place_change_of_a_nested_dict_is_detected():
    session = loaded_session({"profile": {"prefs": {"theme": "light"}, "tags": []}})
    session["profile"]["prefs"]["theme"] = "dark"
    assert session.changes() == ({"profile": '{"prefs":{"theme":"dark"},"tags":[]}'}, [])


def test_in_place_change_through_get_is_detected():
    session = loaded_session({"cart": []})
    session.get("cart").append("x")
    assert session.changes() == ({"cart": '["x"]'}, [])


def test_in_place_change_through_items_is_detected():
    session = loaded_session({"cart": [], "tags": {}})
    for name, value in session.items():
        if name == "tags":
            value["new"] = True
    assert session.changes() == ({"tags": '{"new":true}'}, [])


def test_in_place_change_of_a_value_after_assigning_it_is_detected():
    session = loaded_session({})
    cart: list = []
    session["cart"] = cart
    cart.append(1)
    assert session.changes() == ({"cart": "[1]"}, [])


def test_in_place_change_then_undo_is_not_a_change():
    session = loaded_session({"cart": [1]})
    session["cart"].append(2)
    session["cart"].pop()
    assert session.changes() == ({}, [])


def test_deleting_a_stored_key_is_an_unset():
    session = loaded_session({"a": 1, "b": 2})
    del session["a"]
    assert session.changes() == ({}, ["a"])


def test_pop_of_a_stored_key_is_an_unset():
    session = loaded_session({"a": 1})
    session.pop("a")
    assert session.changes() == ({}, ["a"])


def test_clear_unsets_every_stored_key():
    session = loaded_session({"a": 1, "b": [2]})
    session.clear()
    set_items, unset = session.changes()
    assert set_items == {} and sorted(unset) == ["a", "b"]


def test_adding_then_deleting_a_new_key_is_no_change():
    session = loaded_session({"a": 1})
    session["tmp"] = 1
    del session["tmp"]
    assert session.changes() == ({}, [])


def test_deleting_then_restoring_the_same_value_is_no_change():
    session = loaded_session({"a": [1]})
    del session["a"]
    session["a"] = [1]
    assert session.changes() == ({}, [])


def test_new_session_changes_contain_every_key():
    session = new_session()
    session["a"] = 1
    session["b"] = [1]
    assert session.changes() == ({"a": "1", "b": "[1]"}, [])


def test_mark_saved_resets_changes_and_is_new():
    session = new_session()
    session["cart"] = [1]
    session.mark_saved("new-id", "new-key")
    assert (session.id, session.key, session.is_new) == ("new-id", "new-key", False)
    assert session.changes() == ({}, [])
    session["cart"].append(2)
    assert session.changes() == ({"cart": "[1,2]"}, [])


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
    assert session.changes() == ({}, [])


def test_replacing_with_a_non_json_value_keeps_the_old_value():
    session = loaded_session({"a": 1})
    with pytest.raises(TypeError):
        session["a"] = {1, 2}
    assert session["a"] == 1 and session.changes() == ({}, [])


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
    assert session.pop_flashes() == [("info", "saved"), ("error", "bad input"), ("success", "welcome")]


def test_flash_default_category_is_info():
    session = new_session()
    session.flash("hello")
    assert session.pop_flashes() == [("info", "hello")]


def test_flashes_are_returned_only_once():
    session = new_session()
    session.flash("once")
    assert session.pop_flashes() == [("info", "once")]
    assert session.pop_flashes() == []
    assert not any(name.startswith(FLASH_PREFIX) for name in session)


def test_pop_flashes_with_no_messages_is_empty_and_changes_nothing():
    session = loaded_session({"a": 1})
    assert session.pop_flashes() == []
    assert session.pop_flashes("error") == []
    assert session.changes() == ({}, [])


def test_pop_flashes_of_one_category_leaves_the_others_in_order():
    session = new_session()
    session.flash("one")
    session.flash("bad", "error")
    session.flash("two")
    session.flash("worse", "error")
    assert session.pop_flashes("error") == [("error", "bad"), ("error", "worse")]
    assert session.pop_flashes() == [("info", "one"), ("info", "two")]


def test_pop_flashes_of_an_absent_category_leaves_everything():
    session = loaded_session({})
    session.flash("kept")
    session.mark_saved("sid", "hashed-sid")
    assert session.pop_flashes("warning") == []
    assert session.changes() == ({}, [])
    assert session.pop_flashes() == [("info", "kept")]


def test_flash_is_shown_exactly_once_across_requests():
    """POST flashes; the redirected GET shows it; the GET after that doesn't."""
    post = new_session()
    post.flash("Saved!", "success")
    get = next_request(post)
    [flash_key] = [name for name in get if name.startswith(FLASH_PREFIX)]
    assert get.pop_flashes() == [("success", "Saved!")]
    assert get.changes() == ({}, [flash_key])  # the commit removes it from the store
    assert next_request(get).pop_flashes() == []


def test_flash_survives_requests_that_do_not_read_it():
    post = new_session()
    post.flash("later")
    unrelated = next_request(post)
    unrelated["visits"] = 1
    assert next_request(unrelated).pop_flashes() == [("info", "later")]


def test_flash_makes_a_session_non_empty():
    session = new_session()
    session.flash("x")
    assert not session.is_empty


# -- intents: regenerate, destroy -----------------------------------------------------


def test_fresh_session_is_neither_regenerating_nor_destroyed():
    session = loaded_session({"a": 1})
    assert not session.regenerating and not session.destroyed


def test_regenerate_keeping_data():
    session = loaded_session({"cart": [1]}, user_id="u1")
    session.regenerate()
    assert session.regenerating
    assert dict(session) == {"cart": [1]} and session.user_id == "u1"


def test_regenerate_without_data_clears_data_and_user():
    session = loaded_session({"cart": [1], "n": 2}, user_id="u1")
    session.regenerate(keep_data=False)
    assert session.regenerating
    assert len(session) == 0 and session.user_id is None
    assert session.all_items() == {}
    assert session.is_empty


def test_mark_saved_ends_the_regeneration():
    session = loaded_session({"a": 1})
    session.regenerate()
    session.mark_saved("new-id", "new-key")
    assert not session.regenerating and session.id == "new-id"


def test_destroy_clears_data_and_user_and_marks_destroyed():
    session = loaded_session({"a": 1}, user_id="u1")
    session.destroy()
    assert session.destroyed
    assert len(session) == 0 and session.user_id is None and session.is_empty


# -- user_id --------------------------------------------------------------------------


def test_user_id_from_the_store_is_unchanged():
    session = loaded_session({}, user_id="u1")
    assert session.user_id == "u1" and not session.user_changed


def test_setting_user_id_is_a_user_change():
    session = loaded_session({})
    session.user_id = "u1"
    assert session.user_changed


def test_clearing_user_id_is_a_user_change():
    session = loaded_session({}, user_id="u1")
    session.user_id = None
    assert session.user_changed


def test_setting_user_id_back_is_not_a_user_change():
    session = loaded_session({}, user_id="u1")
    session.user_id = "u2"
    session.user_id = "u1"
    assert not session.user_changed


def test_mark_saved_resets_user_changed():
    session = new_session()
    session.user_id = "u1"
    session.mark_saved("sid", "key")
    assert not session.user_changed and session.user_id == "u1"


@pytest.mark.parametrize("value", [1, b"u1", ["u1"]])
def test_user_id_must_be_a_string(value):
    session = new_session()
    with pytest.raises(TypeError):
        session.user_id = value  # type: ignore[assignment]
    assert session.user_id is None


def test_user_id_is_not_part_of_the_data():
    session = new_session()
    session.user_id = "u1"
    assert len(session) == 0 and session.all_items() == {}


# -- is_empty / all_items ----------------------------------------------------------------


def test_session_with_only_a_user_is_not_empty():
    session = new_session()
    session.user_id = "u1"
    assert not session.is_empty


def test_session_with_data_is_not_empty_until_the_data_is_removed():
    session = new_session()
    session["a"] = 1
    assert not session.is_empty
    del session["a"]
    assert session.is_empty


def test_all_items_is_canonical_json_per_key():
    session = new_session()
    session["b"] = {"z": 1, "a": [1, 2, {"y": None, "x": True}]}
    session["u"] = "é ✓"
    session["f"] = 0.5
    assert session.all_items() == {
        "b": '{"a":[1,2,{"x":true,"y":null}],"z":1}',
        "u": '"é ✓"',
        "f": "0.5",
    }


def test_all_items_equal_data_gives_equal_text():
    one, two = new_session(), new_session()
    one["d"] = {"a": 1, "b": 2}
    two["d"] = {"b": 2, "a": 1}
    assert one.all_items() == two.all_items()


def test_all_items_parse_back_to_the_data():
    session = loaded_session({"a": [1, {"b": "c"}], "n": None})
    assert {k: json.loads(v) for k, v in session.all_items().items()} == dict(session)


def test_each_flash_is_a_key_of_its_own_so_parallel_adds_do_not_collide():
    session = new_session()
    for i in range(50):
        session.flash(f"m{i}")
    names = [name for name in session if name.startswith(FLASH_PREFIX)]
    assert len(set(names)) == 50
    set_items, _ = session.changes()
    assert set(set_items) == set(names)
    assert [m for _, m in session.pop_flashes()] == [f"m{i}" for i in range(50)]  # queue order


def test_flash_rejects_non_text():
    session = new_session()
    with pytest.raises(TypeError):
        session.flash({"$gt": ""})  # type: ignore[arg-type]


def test_drop_flashes_shows_only_what_the_store_handed_over():
    post = new_session()
    post.flash("a")
    post.flash("b")
    get = next_request(post)
    stored, unsaved = get.flash_names()
    assert unsaved == [] and len(stored) == 2
    get.flash("added now")
    _, unsaved = get.flash_names()
    assert len(unsaved) == 1
    # A parallel request took the first message; the store handed us only the second.
    taken = {stored[1]: get.all_items()[stored[1]]}
    assert get.drop_flashes(stored + unsaved, taken) == [("info", "b"), ("info", "added now")]
    assert get.flash_names() == ([], [])
    assert get.changes() == ({}, [])  # taken items are already gone from the store


def test_meta_changes_are_tracked_and_cleared_on_destroy():
    session = loaded_session({"a": 1})
    assert session.meta == {} and not session.meta_changed
    session.meta["ip"] = "203.0.113.5"
    assert session.meta_changed
    session.mark_saved("sid", "hashed-sid", session.all_items())
    assert not session.meta_changed
    session.destroy()
    assert session.meta == {}
