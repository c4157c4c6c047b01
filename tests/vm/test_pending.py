"""Scenarios of capabilities not built yet, each waiting for its issue.

They are strict expected failures: the day a capability lands, its scenario passes, the XPASS fails
the suite, and the issue that built it removes the marker. Each wait is short, so they cost little.

vCPU and memory hot-add are where QEMU under TCG is known to be unstable here (QEMU-NOTES): each of
those scenarios boots its own guest, and a guest that dies (OSError on its sockets) counts as the
resource not coming online, which is what a pending capability is expected to show anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from qemu_guest import Guest, GuestError

WAIT = 20  # seconds: far beyond what onlining takes once built


@pytest.fixture
def own_guest(image: Path) -> Iterator[Guest]:
    with Guest(image) as vm:
        yield vm


@pytest.mark.xfail(strict=True, raises=(GuestError, OSError), reason="vCPU onlining is issue 6")
def test_hot_added_vcpu_is_online(own_guest: Guest):
    guest = own_guest
    online = sum(guest.cpus().values())
    guest.add_cpu("pending-cpu")
    # /proc/cpuinfo lists online CPUs only.
    guest.wait_until(f'test "$(grep -c ^processor /proc/cpuinfo)" -gt {online}', WAIT)


@pytest.mark.xfail(strict=True, raises=(GuestError, OSError), reason="memory onlining is issue 6")
def test_hot_added_memory_is_online(own_guest: Guest):
    guest = own_guest
    blocks = len(guest.memory_blocks())
    guest.add_memory("pending-dimm", 256 * 1024 * 1024)
    # The new blocks must exist first: before they do, every block there is is online.
    guest.wait_until("cd /sys/devices/system/memory && "
                     f'test "$(ls -d memory[0-9]* | wc -l)" -gt {blocks} && '
                     "! grep -qx offline memory[0-9]*/state", WAIT)
