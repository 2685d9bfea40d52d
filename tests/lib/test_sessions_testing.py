"""``sessions.testing``, the public store contract suite, as a third party uses it.

The README's "Writing your own store" example runs as written, in a directory of its
own (no conftest and no fixture plugin of this project: pytest and pytest-tornado
only), over that third party's store (a ``MemoryStore`` subclass); stores that break
the contract fail it; and ``import sessions`` imports neither pytest nor the suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from sessions.testing import StoreContract
from tests.fixtures.readme import ROOT, readme_block

MY_STORE = '''
from sessions.stores.memory import MemoryStore


class MyStore(MemoryStore):
    name = "my-store"
'''

BROKEN_STORES = '''
import pytest

from sessions.stores.memory import MemoryStore
from sessions.testing import StoreContract
from tests.fixtures.readme import ROOT, readme_block


class IgnoresItsClock(MemoryStore):
    """Reads the wall clock, not the clock it is given."""

    def __init__(self, *, clock):
        super().__init__()


class KeepsWhatItHandsOut(MemoryStore):
    """``take`` returns the items but leaves them in the session."""

    async def take(self, key, names):
        record = await self.load(key)
        return None if record is None else {n: record.data[n] for n in names if n in record.data}


class TestIgnoresItsClock(StoreContract):
    @pytest.fixture
    def store(self, clock):
        return IgnoresItsClock(clock=clock)


class TestKeepsWhatItHandsOut(StoreContract):
    @pytest.fixture
    def store(self, clock):
        return KeepsWhatItHandsOut(clock=clock)
'''


def run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest in ``directory`` as a third party runs it: its own rootdir, no plugin of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT)  # sessions from this checkout (installed or not); nothing of tests/ imported
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *args],
        cwd=directory, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def contract_tests() -> list[str]:
    return sorted(name for name in dir(StoreContract) if name.startswith("test_"))


def test_the_suite_has_its_tests():
    assert len(contract_tests()) >= 30


def test_the_readme_example_runs_the_whole_suite_over_a_third_party_store(tmp_path):
    (tmp_path / "my_store.py").write_text(MY_STORE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_my_store.py").write_text(readme_block("### Writing your own store"))
    proc = run_pytest(tmp_path, "tests/test_my_store.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"{len(contract_tests())} passed(, \d+ warnings?)? in [\d.]+s", summary), output


def test_stores_that_break_the_contract_fail_it(tmp_path):
    (tmp_path / "test_broken_stores.py").write_text(BROKEN_STORES)
    proc = run_pytest(tmp_path, "test_broken_stores.py")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    failed = set(re.findall(r"^FAILED test_broken_stores\.py::(\w+)::(\w+)", output, re.M))
    assert ("TestIgnoresItsClock", "test_store_uses_its_clock_for_expiry") in failed, output
    assert ("TestIgnoresItsClock", "test_hits_count_per_name_and_window") in failed, output
    assert ("TestKeepsWhatItHandsOut", "test_take_removes_and_returns_only_present_items") in failed, output
    assert ("TestKeepsWhatItHandsOut", "test_concurrent_takes_hand_each_item_to_exactly_one") in failed, output
    assert all(test in contract_tests() for _, test in failed)
    assert len(failed) < len(contract_tests())  # the rest of the contract still holds for both


def test_importing_the_library_imports_neither_pytest_nor_the_suite():
    code = (
        "import sys, sessions, sessions.stores, sessions.stores.memory, sessions.stores.sqlite\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'pytest_tornado')"
        " or m == 'sessions.testing')\n"
        "print(leaked)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
