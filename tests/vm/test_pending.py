"""Scenarios of capabilities not built yet, each waiting for its issue.

They are strict expected failures: the day a capability lands, its scenario passes, the XPASS fails
the suite, and the issue that built it removes the marker. Each wait is short, so they cost little.
"""

from __future__ import annotations

import pytest

from qemu_guest import Guest, GuestError

WAIT = 20  # seconds: far beyond what onlining or DHCP takes once built


@pytest.mark.xfail(strict=True, raises=GuestError, reason="interface hotplug is issue 5")
def test_hot_added_nic_gets_an_address(guest: Guest):
    guest.qmp.execute("netdev_add", type="user", id="pending-net")
    guest.qmp.execute("device_add", driver="virtio-net-pci", netdev="pending-net",
                      id="pending-nic", mac="52:54:00:12:34:99")
    by_mac = ('for i in /sys/class/net/*; do [ "$(cat $i/address)" = 52:54:00:12:34:99 ] '
              '&& n=${i##*/}; done; ')
    guest.wait_until(by_mac + '[ -n "$n" ] && ip -o -4 addr show dev "$n" | grep -q inet', WAIT)


@pytest.mark.xfail(strict=True, raises=GuestError, reason="vCPU onlining is issue 6")
def test_hot_added_vcpu_is_online(guest: Guest):
    free = [cpu for cpu in guest.qmp.execute("query-hotpluggable-cpus") if "qom-path" not in cpu]
    slot = free[-1]
    guest.qmp.execute("device_add", driver=slot["type"], id="pending-cpu", **slot["props"])
    guest.wait_until("test \"$(cat /sys/devices/system/cpu/online)\" != 0", WAIT)


@pytest.mark.xfail(strict=True, raises=GuestError, reason="memory onlining is issue 6")
def test_hot_added_memory_is_online(guest: Guest):
    guest.qmp.execute("object-add", **{"qom-type": "memory-backend-ram"}, id="pending-mem",
                      size=256 * 1024 * 1024)
    guest.qmp.execute("device_add", driver="pc-dimm", id="pending-dimm", memdev="pending-mem")
    guest.wait_until("! grep -qx offline /sys/devices/system/memory/memory*/state", WAIT)
