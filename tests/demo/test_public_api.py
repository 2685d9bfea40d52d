"""The demo (and the benchmarks) use the session library's public API only.

DESIGN.md: "The demo is an example of the library's public API: it never reaches
into a store's or the manager's private attributes". This test reads every module
outside ``sessions/`` that the demo or the benchmarks run (``server.py``,
``handlers/``, ``accounts/``, ``bench/``) and fails on any access to a private
attribute (a name with one leading underscore, not a dunder) of another object:
``x._name`` where ``x`` is not ``self`` or ``cls``, and ``getattr(x, "_name")``.
A class's own private attributes (``self._x``) are its business.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ["server.py", "handlers", "accounts", "bench"]

#: (file, attribute) pairs still allowed, each with its reason. Keep it empty if you can.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owner_is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def private_accesses(source: str) -> list[tuple[int, str]]:
    """(line, attribute) of every private attribute read or written on an object not self/cls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and not _owner_is_self(node.value):
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            and not _owner_is_self(node.args[0])
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else [])
    return files


def test_the_checker_sees_what_it_must():
    source = (
        "store._rows\nself.store._conn\nstore._demo_users = 1\ngetattr(store, '_demo_users', None)\n"
        "self._own\ncls._cache\nx.__class__\nx.public\n"
    )
    assert [name for _, name in private_accesses(source)] == ["_rows", "_conn", "_demo_users", "_demo_users"]


def test_no_module_outside_the_library_uses_a_private_attribute_of_another_object():
    files = scanned_files()
    assert any(f.name == "server.py" for f in files) and any("accounts" in f.parts for f in files)
    offences = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        for line, name in private_accesses(path.read_text(encoding="utf-8")):
            if (relative, name) not in EXCEPTIONS:
                offences.append(f"{relative}:{line}: .{name}")
    assert not offences, "private attributes of library (or other) objects used:\n" + "\n".join(offences)


def test_every_exception_is_still_needed():
    for (relative, name), reason in EXCEPTIONS.items():
        assert reason
        assert any(n == name for _, n in private_accesses((ROOT / relative).read_text(encoding="utf-8"))), relative
