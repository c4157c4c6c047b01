"""vCPU and memory hotplug through QMP: the kernel's uevent and our rule's attribute assignment.

Memory first, vCPUs last: after vCPU hotplug this QEMU under TCG is the least stable (QEMU-NOTES).
The guest kernel (Debian 12) leaves hot-added vCPUs and memory blocks offline by itself
(`auto_online_blocks` = offline), so anything online here was onlined by our rule.
"""

from __future__ import annotations

from qemu_guest import Guest

WAIT = 20  # seconds: onlining happens while udevd processes the event
DIMM = 256 * 1024 * 1024


def mem_available_kb(guest: Guest) -> int:
    return int(guest.check("awk '/^MemAvailable:/ {print $2}' /proc/meminfo"))


def test_the_kernel_leaves_hotplugged_memory_offline_here(guest: Guest):
    """What makes the scenarios below a proof: without our rule nothing would be online."""
    assert guest.check("cat /sys/devices/system/memory/auto_online_blocks").strip() == "offline"
    rule = guest.check("cat /run/udev/rules.d/87-gandi-online.rules")
    assert 'ATTR{state}="online"' in rule and 'ATTR{online}="1"' in rule
    # Rendered for the configuration before udev's coldplug, by its own early boot unit.
    assert guest.check("systemctl is-active gandi-early.service").strip() == "active"
    trigger_started = guest.check("systemctl show -p InactiveExitTimestampMonotonic --value "
                                  "systemd-udev-trigger.service")
    rule_written = guest.check("systemctl show -p ActiveEnterTimestampMonotonic --value "
                               "gandi-early.service")
    assert int(rule_written) <= int(trigger_started), "the rule must be in place before coldplug"


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
