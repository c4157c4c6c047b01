"""Hypothesis profiles shared by every test directory.

`gandi` (the suite's) keeps `scripts/test` fast and repeatable: derandomized, so CI never meets
a new example by chance. `fuzz` is the long randomized run of `bench/fuzz.py`, where a deadline
turns a hang or an exponential blow-up into a failure instead of a stuck run (its size:
$GANDI_FUZZ_EXAMPLES per property, which bench/fuzz.py sets). A profile named on
the command line (`--hypothesis-profile=fuzz`) wins over the suite's."""

from __future__ import annotations

import datetime
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "gandi", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("GANDI_FUZZ_EXAMPLES", "4000")),
    deadline=datetime.timedelta(seconds=2), database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def pytest_configure(config) -> None:
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("gandi")
