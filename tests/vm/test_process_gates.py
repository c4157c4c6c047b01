"""Unit starts and stops decided without a Python interpreter (issue 14): the units' gate.

gandi-disk@ and gandi-iface@ run /usr/libexec/gandi-vm/unit-gate, a shell script that ends at
once where gandi-vm would do nothing (a disk mount-all attached at this boot, a stop with nothing
of ours to undo, an interface systemd-networkd manages) and otherwise has the resident agent run
the command (a fork, no interpreter start); a burst of disks is a request each, side by side.
The guest boots with a data disk and a kernel trace of every exec and fork (benchlib.TRACE_ARGS),
so that interpreters and the agent's requests are counted by the kernel, not by our own logs; a
unit's journal tells the gate's lines from gandi-vm's.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from qemu_guest import Guest, make_disk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from benchlib import TRACE_ARGS, clear_trace, exec_trace  # noqa: E402

BURST = 6
WAIT = 120  # seconds on an idle machine (Guest.scaled stretches them)
GATE_DISK_LINE = "attached at this boot by mount-all or with another disk: nothing to do"
GATE_IFACE_MARK = "(decided by the unit, no attach ran)"


@pytest.fixture(scope="module")
def guest(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """A guest booted with a data disk (ext4 'bootdata'), persistent so that it can reboot."""
    boot_disk = make_disk(tmp_path_factory.mktemp("gates") / "boot0.img", "ext4", "bootdata")
    with Guest(image, boot_disks=[boot_disk], persistent=True, kernel_args=TRACE_ARGS) as vm:
        yield vm


def unit_lines(guest: Guest, unit: str) -> List[str]:
    """What the unit's processes logged this boot (the gate's lines and gandi-vm's), not systemd's."""
    return guest.check(f"journalctl -b -o cat --no-pager -t gandi -u '{unit}'").splitlines()


def active_state(guest: Guest, unit: str) -> str:
    return guest.check(f"systemctl show -p ActiveState --value {unit}").strip()


def wait_stopped(guest: Guest, unit: str) -> None:
    guest.wait_until(f'test "$(systemctl show -p ActiveState --value {unit})" = inactive', WAIT)


def mounted_source(guest: Guest, mountpoint: str) -> str:
    return guest.run(f"findmnt -n -o SOURCE --mountpoint {mountpoint}").stdout.strip()


def status(guest: Guest) -> dict:
    return json.loads(guest.check("gandi-vm status --format yaml | python3 -c "
                                  "'import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))'"))


def commands(execs: dict) -> int:
    """The gandi-vm commands run: each a request to the resident agent (a fork, no exec), or an
    exec of /usr/bin/gandi-vm where the agent is not there."""
    return execs["gandi_vm"] + execs["gandi_requests"]


def boot_disk_name(guest: Guest) -> str:
    return guest.check("basename $(readlink -f /dev/disk/by-id/virtio-boot0)").strip()


def test_disks_mount_all_attached_at_boot_start_their_units_without_gandi_vm(guest: Guest):
    boot = exec_trace(guest)  # since the boot: before any scenario ran a command
    print(f"boot: gandi-vm execs {boot['gandi_vm']}, agent requests {boot['gandi_requests']}, "
          f"all execs {boot['execs']}")
    data = boot_disk_name(guest)
    assert mounted_source(guest, "/srv/bootdata") == f"/dev/{data}"
    assert f"disk {data}: mounted: ext4, label 'bootdata'" in unit_lines(guest, "gandi-mount.service")
    # The system disk (skipped by mount-all) and the data disk (mounted by it): coldplug's
    # instances ran after gandi-mount and ended at its markers.
    for name in ("vda", data):
        unit = f"gandi-disk@{name}.service"
        assert active_state(guest, unit) == "active"
        assert unit_lines(guest, unit) == [f"disk {name}: {GATE_DISK_LINE}"]
    assert guest.check(f"wc -c < /run/gandi/disk/{data}.handled").strip() == "0"  # used up


def test_a_burst_of_disks_is_mounted_without_an_interpreter_start(guest: Guest, tmp_path: Path):
    images = [make_disk(tmp_path / f"burst{i}.img", "ext4", f"burst{i}") for i in range(BURST)]
    clear_trace(guest)
    started = time.monotonic()
    for i, image in enumerate(images):
        guest.add_disk(image, f"burst{i}")
    names = [guest.kernel_name(f"burst{i}") for i in range(BURST)]
    for name in names:
        guest.wait_until(f"systemctl is-active --quiet gandi-disk@{name}.service", WAIT)
    took = time.monotonic() - started
    execs = exec_trace(guest)
    for i, name in enumerate(names):
        assert mounted_source(guest, f"/srv/burst{i}") == f"/dev/{name}"
    # Each disk is its own request to the agent, served at once, side by side.
    for i, name in enumerate(names):
        assert f"disk {name}: mounted: ext4, label 'burst{i}'" in \
            unit_lines(guest, f"gandi-disk@{name}.service")
    print(f"burst of {BURST} disks: {took:.1f} s, gandi-vm commands {commands(execs)}, "
          f"execs {execs['execs']}")
    assert execs["lost"] == 0
    assert (execs["gandi_requests"], execs["gandi_vm"], execs["python"]) == (BURST, 0, 0), execs

    # A stop of a disk we mounted still runs gandi-vm's detach: one per disk.
    clear_trace(guest)
    for i in range(BURST):
        guest.remove_disk(f"burst{i}")
    for name in names:
        wait_stopped(guest, f"gandi-disk@{name}.service")
    assert commands(exec_trace(guest)) == BURST
    for i in range(BURST):
        assert mounted_source(guest, f"/srv/burst{i}") == ""
    assert guest.check("systemctl --failed --no-legend --plain") == ""


def test_a_disk_boot_mounted_is_unmounted_when_unplugged(guest: Guest):
    data = boot_disk_name(guest)
    # A disk given on QEMU's command line has no id: its device is found by its drive.
    qdev = next(block["qdev"] for block in guest.qmp.execute("query-block")
                if block["device"] == "boot0")
    path = qdev.rsplit("/virtio-backend", 1)[0]
    guest.qmp.execute("device_del", id=path)
    guest.qmp.wait_event("DEVICE_DELETED", guest.scaled(60), path=path)
    unit = f"gandi-disk@{data}.service"
    wait_stopped(guest, unit)
    assert mounted_source(guest, "/srv/bootdata") == ""
    assert guest.run("test -e /srv/bootdata").returncode != 0
    assert f"disk {data}: unmounted: unmounted from /srv/bootdata" in unit_lines(guest, unit)
    assert guest.check(f"systemctl show -p Result --value {unit}").strip() == "success"


def test_after_a_reboot_the_networkd_interface_and_the_system_disk_need_no_gandi_vm(guest: Guest,
                                                                                   tmp_path: Path):
    primary = guest.check("ip -4 route show default | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p'").strip()
    guest.check("mkdir -p /etc/systemd/network && printf '[Match]\\nName=%s\\n[Network]\\nDHCP=ipv4\\n'"
                f" {primary} > /etc/systemd/network/10-primary.network"
                " && systemctl enable systemd-networkd.service")
    guest.boot_disks = []  # the data disk was unplugged: the next boot has none
    guest.reboot()
    try:
        unit = f"gandi-iface@{primary}.service"
        assert active_state(guest, unit) == "active"
        lines = unit_lines(guest, unit)
        assert len(lines) == 1 and lines[0].startswith(f"iface {primary}: left: ") \
            and lines[0].endswith(GATE_IFACE_MARK), lines
        row = next(r for r in status(guest)["interfaces"] if r["interface"] == primary)
        assert row["state"] == "left" and row["reason"].endswith(GATE_IFACE_MARK), row
        assert unit_lines(guest, "gandi-disk@vda.service") == [f"disk vda: {GATE_DISK_LINE}"]

        # Nothing of the last boot's data disk is left (/run is per boot): a disk plugged under
        # its old name goes to gandi-vm and is mounted.
        assert guest.run("ls /run/gandi/disk/vdb.* 2>/dev/null").stdout == ""
        clear_trace(guest)
        image = make_disk(tmp_path / "after.img", "ext4", "after")
        guest.add_disk(image, "after")
        name = guest.kernel_name("after")
        guest.wait_until(f"systemctl is-active --quiet gandi-disk@{name}.service", WAIT)
        assert mounted_source(guest, "/srv/after") == f"/dev/{name}"
        assert commands(exec_trace(guest)) == 1
    finally:
        guest.check("rm -f /etc/systemd/network/10-primary.network"
                    " && systemctl disable systemd-networkd.service")
