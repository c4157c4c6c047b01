"""The shipped udev rule evaluated by `udevadm test` on real virtio devices, in the guest.

On systemd 252 `udevadm test` is no dry run (it applies interface renames, writes the udev
database and sysfs attributes), so it never runs on the host's own devices: the host's suite
only parses the rules in a scratch namespace (tests/integration/test_integration_shipped.py).
The guest is throwaway, and these are the devices a platform really attaches: a virtio disk,
a virtio NIC, plus a loop device and a veth pair made in the guest as what must not match.
The hotplug scenarios prove the delegation end to end; these pin down each ACTION branch,
including the ones no scenario sends (bind, a disk's change without RESIZE=1, change of a NIC,
move).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from qemu_guest import Guest, make_disk


@pytest.fixture(scope="module")
def guest(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    disk = make_disk(tmp_path_factory.mktemp("rules") / "rules.img", "ext4", "rules")
    with Guest(image, boot_disks=[disk]) as vm:
        yield vm


def udevadm_test(guest: Guest, action: str, syspath: str) -> str:
    done = guest.run(f"udevadm test --action={action} {syspath} 2>&1")
    assert "Reading rules file: " in done.stdout, done.stdout[-2000:]
    return done.stdout


def test_the_installed_rule_parses_cleanly(guest: Guest):
    output = udevadm_test(guest, "add", "/sys/class/net/lo")
    read = [line.split(": ", 1)[1] for line in output.splitlines()
            if line.startswith("Reading rules file: ") and line.endswith("/86-gandi.rules")]
    assert len(read) == 1, "udev does not read the package's rule"
    # udevd reports a line it cannot parse, then drops it, as `path:line ...` at load time.
    assert [line for line in output.splitlines() if line.startswith(f"{read[0]}:")] == []


def test_a_disk_is_delegated_on_add_only(guest: Guest):
    name = guest.kernel_name("boot0")
    output = udevadm_test(guest, "add", f"/sys/class/block/{name}")
    assert f"SYSTEMD_WANTS=gandi-disk@{name}.service" in output
    # A change without the kernel's RESIZE=1 (what udev sends when a writer closes the disk, and
    # what `udevadm test` sends) lists no unit at all: systemd would restart a failed one.
    for action in ("change", "bind"):
        output = udevadm_test(guest, action, f"/sys/class/block/{name}")
        assert "gandi-disk@" not in output and "gandi-resize@" not in output, action


def test_a_loop_device_is_not_a_disk_of_ours(guest: Guest):
    loop = guest.check("truncate -s 16M /run/rules-loop.img && "
                       "losetup -f --show /run/rules-loop.img").strip()
    try:
        output = udevadm_test(guest, "add", f"/sys/class/block/{loop.rsplit('/', 1)[-1]}")
    finally:
        guest.run(f"losetup -d {loop}; rm -f /run/rules-loop.img")
    assert "gandi-disk@" not in output


def test_a_device_backed_nic_is_delegated_on_add_and_move_only(guest: Guest):
    nic = guest.check("for i in /sys/class/net/*; do test -e $i/device && echo ${i##*/}; done "
                      "| head -n 1").strip()
    assert nic, "no virtio NIC in the guest"
    for action in ("add", "move"):
        output = udevadm_test(guest, action, f"/sys/class/net/{nic}")
        assert f"SYSTEMD_WANTS=gandi-iface@{nic}.service" in output, action
    for action in ("change", "bind"):
        assert "gandi-iface@" not in udevadm_test(guest, action, f"/sys/class/net/{nic}"), action


def test_virtual_interfaces_are_not_ours(guest: Guest):
    guest.check("ip link add gveth0 type veth peer name gveth1")
    try:
        for syspath in ("/sys/class/net/lo", "/sys/class/net/gveth0"):
            assert "gandi-iface@" not in udevadm_test(guest, "add", syspath), syspath
    finally:
        guest.run("ip link del gveth0")
