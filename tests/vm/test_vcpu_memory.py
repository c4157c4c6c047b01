"""vCPU and memory hotplug through QMP: the kernel's uevent and our rule's attribute assignment.

Memory first, vCPUs last: after vCPU hotplug this QEMU under TCG is the least stable (QEMU-NOTES).
The guest kernel (Debian 12) leaves hot-added vCPUs and memory blocks offline by itself
(`auto_online_blocks` = offline), so anything online here was onlined by our rule. The rule reads
/etc/default/gandi itself at each event: a key written in the guest applies to the next hot-add,
with no reload and no reboot (the guest has 4 memory slots and 3 free vCPU slots: 3 DIMMs and 3
vCPUs are hot-added in all).
"""

from __future__ import annotations

import shlex
from typing import Callable, Iterator

import pytest

from qemu_guest import Guest

WAIT = 20  # seconds: onlining happens while udevd processes the event
DIMM = 256 * 1024 * 1024
CONFIG = "/etc/default/gandi"
MEMORY = "/sys/devices/system/memory"


@pytest.fixture
def configure(guest: Guest) -> Iterator[Callable[..., None]]:
    """Append KEY=value lines to the guest's /etc/default/gandi (the last line of a key wins, for
    udev as for gandi-vm); the file is put back as it was after the test."""
    guest.check(f"cp -p {CONFIG} {CONFIG}.test-saved")

    def append(**keys: str) -> None:
        lines = " ".join(shlex.quote(f"{key}={value}") for key, value in keys.items())
        guest.check(f"printf '%s\\n' {lines} >> {CONFIG}")

    yield append
    guest.check(f"mv {CONFIG}.test-saved {CONFIG}")


def hot_add_memory(guest: Guest, device_id: str) -> list:
    """Hot-add a DIMM, wait until udevd has handled its blocks' events; returns the new blocks."""
    blocks = guest.memory_blocks()
    guest.add_memory(device_id, DIMM)
    block_size = int(guest.check(f"cat {MEMORY}/block_size_bytes"), 16)
    wanted = len(blocks) + DIMM // block_size
    guest.wait_until(f'cd {MEMORY} && test "$(ls -d memory[0-9]* | wc -l)" -ge {wanted}', WAIT)
    guest.check("udevadm settle --timeout=60")
    new = sorted(set(guest.memory_blocks()) - set(blocks))
    assert len(new) == DIMM // block_size
    return new


def no_configuration_in_the_udev_database(guest: Guest, syspath: str) -> None:
    """The rule drops the keys it imported: they are not kept with the device."""
    properties = guest.check(f"udevadm info --query=property --path={syspath}")
    assert "CONFIG_" not in properties and "GANDI_" not in properties, properties


def mem_available_kb(guest: Guest) -> int:
    return int(guest.check("awk '/^MemAvailable:/ {print $2}' /proc/meminfo"))


def test_the_kernel_leaves_hotplugged_memory_offline_here(guest: Guest):
    """What makes the scenarios below a proof: without our rule nothing would be online."""
    assert guest.check("cat /sys/devices/system/memory/auto_online_blocks").strip() == "offline"
    # The shipped rule as it is, nothing rendered at boot that would override it.
    rule = guest.check("cat /lib/udev/rules.d/87-gandi-online.rules")
    assert 'IMPORT{file}="/etc/default/gandi"' in rule and 'ATTR{online}="1"' in rule
    assert guest.run("test -e /run/udev/rules.d/87-gandi-online.rules").returncode == 1
    assert guest.run("test -e /etc/udev/rules.d/87-gandi-online.rules").returncode == 1


def test_hot_added_memory_is_online_and_available(guest: Guest):
    blocks = guest.memory_blocks()
    available = mem_available_kb(guest)
    guest.add_memory("dimm1", DIMM)
    block_size = int(guest.check("cat /sys/devices/system/memory/block_size_bytes"), 16)
    wanted = len(blocks) + DIMM // block_size
    guest.wait_until("cd /sys/devices/system/memory && "
                     f'test "$(ls -d memory[0-9]* | wc -l)" -ge {wanted} && '
                     "! grep -qx offline memory[0-9]*/state", WAIT)
    new = sorted(set(guest.memory_blocks()) - set(blocks))
    assert len(new) == DIMM // block_size
    assert mem_available_kb(guest) > available + 200 * 1024, "MemAvailable must grow by ~256 MiB"
    assert "memory:" in guest.check("gandi-vm status --format yaml")
    no_configuration_in_the_udev_database(guest, f"{MEMORY}/memory{new[0]}")


def test_hot_added_memory_goes_to_the_zone_configured_a_moment_before(guest: Guest, configure):
    configure(CONFIG_MEMORY_ZONE="online_movable")
    new = hot_add_memory(guest, "dimm2")
    states = guest.memory_blocks()
    assert {states[n] for n in new} == {"online"}
    # An online block's valid_zones is the zone it is in.
    zones = guest.check(" ".join(["cat"] + [f"{MEMORY}/memory{n}/valid_zones" for n in new]))
    assert set(zones.split()) == {"Movable"}, zones
    no_configuration_in_the_udev_database(guest, f"{MEMORY}/memory{new[0]}")


def test_with_memory_hotplug_off_hot_added_memory_stays_offline(guest: Guest, configure):
    configure(CONFIG_MEMORY_HOTPLUG="no")
    new = hot_add_memory(guest, "dimm3")
    states = guest.memory_blocks()
    assert {states[n] for n in new} == {"offline"}


def test_hot_added_vcpus_are_online(guest: Guest):
    count = 2
    before = guest.cpus()
    for index in range(count):
        guest.add_cpu(f"vcpu{index}")
    guest.wait_until(f'test "$(grep -c ^processor /proc/cpuinfo)" -eq {len(before) + count}', WAIT)
    after = guest.cpus()
    assert len(after) == len(before) + count and all(after.values()), after
    # No interface is tuned for multiqueue here: systemd skipped gandi-retune.service by its
    # condition, without starting any process.
    journal = guest.check("journalctl -b --no-pager -u gandi-retune.service")
    assert "was skipped because of an unmet condition" in journal or "-- No entries --" in journal, journal


def test_with_cpu_hotplug_off_a_hot_added_vcpu_stays_offline(guest: Guest, configure):
    configure(CONFIG_CPU_HOTPLUG="off")
    before = guest.cpus()
    guest.add_cpu("vcpu2")
    guest.wait_until(f'test "$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)" -gt {len(before)}',
                     WAIT)
    guest.check("udevadm settle --timeout=60")
    after = guest.cpus()
    [new] = set(after) - set(before)
    assert after[new] is False, after
    no_configuration_in_the_udev_database(guest, f"/sys/devices/system/cpu/cpu{new}")
