"""The suite's own layout: pytest (rootdir-relative imports, no packages) needs every test module's
basename to be unique across tests/unit, tests/integration, tests/packaging and tests/vm. A clash
is only seen when the whole suite is collected, as CI does: it broke collection twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
