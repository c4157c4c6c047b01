"""Hypothesis profiles shared by every test directory.

`default` keeps `scripts/test` fast and repeatable (derandomized, so CI never meets a new
example by chance); `fuzz` is the long randomized run of `bench/fuzz.py`
(`--hypothesis-profile=fuzz`), where a deadline turns a hang or an exponential blow-up into a
failure instead of a stuck run."""

from __future__ import annotations

import datetime

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=4000, deadline=datetime.timedelta(seconds=2), database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")
