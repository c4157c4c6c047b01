#!/usr/bin/env python3
"""The long randomized run of every property of outside data (tests/unit/test_props_*.py).

`scripts/test` runs the same properties with the small derandomized `default` profile, so that CI
is fast and repeatable. This run spreads `--total` examples (100,000 by default) over the
properties, with fresh random seeds and the `fuzz` profile's deadline (a hang or an exponential
blow-up fails the example), and prints how many examples each property really ran and how they
ended: Hypothesis's own observations are counted, not the budget we asked for (a property whose
input space is small stops early, and the table shows it).

    bench/fuzz.py                      # 100,000 examples in all, about 10 minutes on 2 cores
    bench/fuzz.py --total 20000 -k label

Exit status: 0 when every property held, 1 when one failed (pytest shows the minimal example),
2 for bad usage.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import os
import subprocess
import sys
import time
from typing import Counter, Dict, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTY_FILES = "tests/unit/test_props_*.py"


def count_properties(selection: Sequence[str]) -> int:
    """How many properties the run will execute (Hypothesis marks its tests `hypothesis`; a plain
    example test in the same files takes no share). Collected in a child process: `@given` binds
    the settings in force when a test module is imported, so this process must not import them
    before the run's profile is loaded."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "hypothesis",
                           "-p", "no:cacheprovider", "--rootdir", REPO, *selection],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    return sum(1 for line in done.stdout.split("\n") if "::" in line)


class ExampleCounter:
    """A pytest plugin that counts Hypothesis's test-case observations, per property."""

    def __init__(self, total: int, per_property: int) -> None:
        self.total = total
        self.per_property = per_property
        self.outcomes: Dict[str, Counter[str]] = collections.defaultdict(collections.Counter)

    def pytest_sessionstart(self, session: object) -> None:
        from hypothesis.internal.observability import add_observability_callback

        add_observability_callback(self._observe)

    def _observe(self, observation: object) -> None:
        if getattr(observation, "type", None) == "test_case":
            name = str(getattr(observation, "property", "?"))
            self.outcomes[name][str(getattr(observation, "status", "?"))] += 1


def report(counter: ExampleCounter, seconds: float) -> int:
    """Print one row per property and the totals; the number of failing examples."""
    width = max([len(name) for name in counter.outcomes] + [8])
    print(f"\n{'property':<{width}}  {'passed':>8}  {'invalid':>8}  {'failed':>6}")
    totals: Counter[str] = collections.Counter()
    for name in sorted(counter.outcomes):
        outcome = counter.outcomes[name]
        totals.update(outcome)
        print(f"{name:<{width}}  {outcome['passed']:>8}  {outcome['gave_up']:>8}  "
              f"{outcome['failed']:>6}")
    ran = totals["passed"] + totals["failed"]
    print(f"{'total':<{width}}  {totals['passed']:>8}  {totals['gave_up']:>8}  {totals['failed']:>6}")
    print(f"\n{len(counter.outcomes)} properties, {ran} examples run ({counter.per_property} asked "
          f"of each, {counter.total} in all; {totals['gave_up']} more generated and rejected as "
          f"invalid) in {seconds:.0f} s: {totals['passed']} passed, {totals['failed']} failed")
    return totals["failed"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=100_000,
                        help="examples to spread over the properties (default 100000)")
    parser.add_argument("-k", dest="keyword", default=None, help="only the properties pytest -k selects")
    args = parser.parse_args(argv)
    if args.total < 1:
        parser.error("--total must be at least 1")
    files = sorted(glob.glob(os.path.join(REPO, PROPERTY_FILES)))
    if not files:
        parser.error(f"no property files match {PROPERTY_FILES}")

    sys.path.insert(0, REPO)
    import pytest

    selection = [*files, "-k", args.keyword] if args.keyword else files
    count = count_properties(selection)
    if not count:
        parser.error("no property selected")
    counter = ExampleCounter(args.total, math.ceil(args.total / count))
    os.environ["GANDI_FUZZ_EXAMPLES"] = str(counter.per_property)  # read by tests/conftest.py
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"\nfuzz: seed {seed} (pytest --hypothesis-seed={seed} replays this run)")
    pytest_args = ["-q", "-m", "hypothesis", "-p", "no:cacheprovider", "--hypothesis-profile=fuzz",
                   f"--hypothesis-seed={seed}", "--rootdir", REPO, *selection]
    start = time.monotonic()
    status = pytest.main(pytest_args, plugins=[counter])
    failed = report(counter, time.monotonic() - start)
    return 1 if failed or status not in (0, pytest.ExitCode.NO_TESTS_COLLECTED) else 0


if __name__ == "__main__":
    sys.exit(main())
