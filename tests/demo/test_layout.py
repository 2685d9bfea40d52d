"""The checkout's layout holds (DESIGN.md "Layout", README "Architecture").

* Tests apart: every test module is in ``tests/lib/`` (the library's) or ``tests/demo/``
  (the demo's); what they share is in ``tests/fixtures/``.
* No module of tests/ or bench/ imports a test module (``tests/**/test_*.py``): shared
  helpers live in tests/fixtures/.
* The benchmarks import from tests/ only ``tests.fixtures``.
* The library's tests use no demo code (``server``, ``handlers``, ``accounts``, the demo's
  fixture modules); the library imports neither the demo nor the tests, and
  ``sessions/__init__.py`` does not import ``sessions.testing`` (it imports pytest).
* README's "Architecture" tree lists the checkout's files exactly.
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.fixtures.readme import ROOT, readme_block

TESTS = ROOT / "tests"
DEMO_MODULES = ("server", "handlers", "accounts")
#: tests/fixtures/ modules made for the demo's tests (they import the demo or drive it).
DEMO_FIXTURES = (
    "tests.fixtures.api",
    "tests.fixtures.attack_support",
    "tests.fixtures.browser",
    "tests.fixtures.demo_fixtures",
    "tests.fixtures.server_process",
    "tests.fixtures.user_contract",
)
#: Hidden entries the Architecture tree lists (the rest are caches and tool state).
SHOWN_HIDDEN = (".ci", ".gitignore")


# -- imports ---------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, package: str = "") -> Iterator[tuple[int, str]]:
    """(line, module) of every import at any depth; ``from m import a`` gives ``m`` and ``m.a``
    (``a`` may be a module), relative imports resolved against ``package``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def file_imports(path: Path) -> Iterator[tuple[int, str]]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    yield from imports(path.read_text(encoding="utf-8"), package)


def is_test_module(module: str) -> bool:
    """``module`` is a file tests/**/test_*.py of this checkout."""
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    return module.startswith("tests.") and path.name.startswith("test_") and path.is_file()


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_import_reader_sees_every_form():
    source = (
        "import tests.demo.test_app\nfrom tests.demo.test_auth_api import call\nfrom tests.demo import test_browser\n"
        "from . import test_keys as other\nfrom .test_session import x\nimport importlib\n"
        "def f():\n    from tests.fixtures.api import call\n    importlib.import_module('tests.lib.test_cookies')\n"
    )
    found = [m for _, m in imports(source, package="tests.lib")]
    assert [m for m in found if is_test_module(m)] == [
        "tests.demo.test_app", "tests.demo.test_auth_api", "tests.demo.test_browser",
        "tests.lib.test_keys", "tests.lib.test_session", "tests.lib.test_cookies",
    ]  # fmt: skip
    assert "tests.fixtures.api" in found  # an import inside a function too
    assert not is_test_module("tests.fixtures.api") and not is_test_module("tests.demo.test_auth_api.call")


def test_test_modules_live_in_lib_and_demo():
    misplaced = [
        p.relative_to(ROOT).as_posix()
        for p in TESTS.rglob("test_*.py")
        if p.parent not in (TESTS / "lib", TESTS / "demo")
    ]
    assert not misplaced, f"test modules outside tests/lib and tests/demo: {misplaced}"
    assert len(list((TESTS / "lib").glob("test_*.py"))) > 10 and len(list((TESTS / "demo").glob("test_*.py"))) > 10
    top = sorted(p.name for p in TESTS.iterdir() if p.name != "__pycache__")
    assert top == ["__init__.py", "conftest.py", "demo", "fixtures", "lib"], top


def offending_imports(folders: tuple[str, ...], forbidden: Callable[[str], bool]) -> str:
    """``file:line: imports module`` for each import of a forbidden module in these folders."""
    return "\n".join(
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in python_files(*folders)
        for line, module in file_imports(path)
        if forbidden(module)
    )


def test_no_module_imports_a_test_module():
    offences = offending_imports(("tests", "bench"), is_test_module)
    assert not offences, "shared helpers belong in tests/fixtures/:\n" + offences


def test_benchmarks_import_only_the_fixtures_from_tests():
    offences = offending_imports(("bench",), lambda m: within(m, "tests") and not within(m, "tests.fixtures"))
    assert not offences, offences


def test_the_library_tests_use_no_demo_code():
    offences = offending_imports(("tests/lib",), lambda m: within(m, *DEMO_MODULES, *DEMO_FIXTURES))
    assert not offences, offences


def test_the_library_imports_neither_the_demo_nor_the_tests():
    offences = offending_imports(("sessions",), lambda m: within(m, *DEMO_MODULES, "tests", "bench"))
    assert not offences, offences
    init = ROOT / "sessions" / "__init__.py"
    assert not [m for _, m in file_imports(init) if within(m, "sessions.testing", "pytest")]


# -- README "Architecture" -------------------------------------------------------------------


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def listed_entries(folder: Path) -> set[str]:
    """The entries of ``folder`` the tree shows: not git-ignored, not hidden (but SHOWN_HIDDEN)."""
    patterns = ignore_patterns()
    shown = set()
    for path in folder.iterdir():
        relative = path.relative_to(ROOT).as_posix()
        if path.name.startswith(".") and path.name not in SHOWN_HIDDEN:
            continue
        if any(fnmatch.fnmatch(relative if "/" in p else path.name, p) for p in patterns):
            continue
        shown.add(path.name + ("/" if path.is_dir() else ""))
    return shown


def parse_tree(block: str) -> dict[str, list[tuple[str, str]]]:
    """folder ('' for the top) -> [(entry, description)] from an indented tree, two spaces a level."""
    tree: dict[str, list[tuple[str, str]]] = {"": []}
    stack: list[str] = []
    for number, line in enumerate(block.splitlines(), 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0 and indent // 2 <= len(stack), f"tree line {number}: bad indent: {line!r}"
        del stack[indent // 2 :]
        entry, _, description = line.strip().partition(" ")
        folder = "".join(stack)
        tree.setdefault(folder, []).append((entry, description.strip()))
        if entry.endswith("/"):
            stack.append(entry)
            tree.setdefault(folder + entry, [])
    return tree


def test_the_tree_parser():
    tree = parse_tree("a/       one\n  b.py   two\n  c/     three\n    d.py four\ne.py     five\n")
    assert tree[""] == [("a/", "one"), ("e.py", "five")]
    assert tree["a/"] == [("b.py", "two"), ("c/", "three")] and tree["a/c/"] == [("d.py", "four")]


def test_the_readme_architecture_tree_matches_the_checkout():
    tree = parse_tree(readme_block("## Architecture", language="text"))
    problems = []
    for folder, entries in tree.items():
        names = [entry for entry, _ in entries]
        path = ROOT / folder
        has_python = path.is_dir() and any(path.glob("*.py"))
        if not entries:
            if has_python:
                problems.append(f"{folder}: lists no modules (one line per module)")
            continue
        if len(names) != len(set(names)):
            problems.append(f"{folder or 'top level'}: an entry listed twice")
        actual = listed_entries(path) if path.is_dir() else set()
        for missing in sorted(actual - set(names)):
            problems.append(f"{folder}{missing}: in the checkout, not in the tree")
        for extra in sorted(set(names) - actual):
            problems.append(f"{folder}{extra}: in the tree, not in the checkout")
        problems += [f"{folder}{entry}: no description" for entry, description in entries if not description]
    assert not problems, "README.md, ## Architecture:\n" + "\n".join(problems)
