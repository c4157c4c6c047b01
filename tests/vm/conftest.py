"""End-to-end scenarios in a real Debian 12 guest under QEMU, driven through QMP and the guest agent.

The guest runs the project's .deb as a customer's VM would: real kernel uevents, real udevd and
systemd, our rule, units and handlers. A failed scenario prints the guest's journal for our units
and the tail of its serial console.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "vm"))

from qemu_guest import QEMU, Guest, GuestError, build_image  # noqa: E402


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    # The module's `guest`, or whichever Guest a test got under another name (a class-scoped
    # one, so that two scenario groups never run two guests at once).
    funcargs = getattr(item, "funcargs", {})
    guest = funcargs.get("guest")
    if not isinstance(guest, Guest):
        guest = next((value for value in funcargs.values() if isinstance(value, Guest)), None)
    if report.failed and isinstance(guest, Guest):
        report.sections.append(("guest journal (gandi-*)", guest.journal()))
        report.sections.append(("guest serial console (tail)", guest.console_tail()))
        if guest.exit_report():
            report.sections.append(("QEMU", guest.exit_report()))


@pytest.fixture(scope="session")
def image() -> Path:
    if os.geteuid() != 0:
        pytest.skip("not root: building the guest image needs debootstrap and chroot")
    for tool, package in ((QEMU, "qemu-system-x86"), ("debootstrap", "debootstrap"),
                          ("mkfs.xfs", "xfsprogs")):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"{tool} not installed (Debian package {package})")
    try:
        return build_image(capture_log=True)
    except GuestError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="module")
def guest(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """One booted guest per test module (booting under TCG takes about 30 s)."""
    with Guest(image) as vm:
        yield vm
