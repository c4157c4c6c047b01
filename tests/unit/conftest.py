"""Fixtures shared by the unit tests; the fake-system builders live in fakesys.py so that test
modules can import them by name (tests/unit is not a package)."""

from __future__ import annotations

import importlib

import pytest
from fakesys import FakeHost, system

from gandi_vm import log

# Load every module before the first test: pyfakefs unloads, after each test, the modules first
# imported during it, and cli/disk import lazily. A module imported anew while another still
# holds the old copy gives two NoSuchDevice classes, and `except NoSuchDevice` stops matching.
for _module in ("blockdev", "cli", "config", "cpu", "dhcp", "disk", "filesystems", "hooks", "host",
                "labels", "lease", "memory", "mounts", "net", "netdev", "netstack", "online", "plugins",
                "routing", "runner", "state", "status"):
    importlib.import_module(f"gandi_vm.{_module}")

@pytest.fixture
def host(fs):
    """A plain guest (see `system`) and a FakeHost rooted at '/'."""
    system(fs)
    return FakeHost()


@pytest.fixture(autouse=True)
def _log_to_caplog():
    """cli.main() sends gandi_vm.log's lines to stderr (as the real command does); undo that so
    the tests that follow see them again as records of the stdlib logger "gandi" (caplog)."""
    yield
    log.reset()
