"""Disk hotplug through QMP: the kernel's uevent, our udev rule, gandi-disk@ and the handler."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from qemu_guest import Guest, make_disk

_ids = itertools.count(1)


class Plugged:
    """Disks one test hot-plugs; whatever is still attached is unplugged after the test."""

    def __init__(self, guest: Guest, tmp_path: Path):
        self.guest, self.tmp_path, self.ids = guest, tmp_path, []  # type: Guest, Path, List[str]

    def disk(self, fstype: str, label: str = "", size_mb: int = 64) -> str:
        """Plug a new disk; returns its kernel name once its unit has finished."""
        device_id = f"disk{next(_ids)}"
        image = make_disk(self.tmp_path / f"{device_id}.img", fstype, label, size_mb)
        self.guest.add_disk(image, device_id)
        self.ids.append(device_id)
        name = self.guest.kernel_name(device_id)
        self.guest.wait_until(f"systemctl is-active --quiet gandi-disk@{name}.service", 60)
        return name

    def unplug(self, name: str) -> None:
        device_id = next(i for i in self.ids if self.guest.kernel_name(i) == name)
        self.guest.remove_disk(device_id)
        self.ids.remove(device_id)


@pytest.fixture
def plug(guest: Guest, tmp_path: Path) -> Iterator[Plugged]:
    plugged = Plugged(guest, tmp_path)
    yield plugged
    names = [plugged.guest.kernel_name(device_id) for device_id in plugged.ids]
    for device_id in list(plugged.ids):
        guest.remove_disk(device_id)
    # A mounted disk keeps its kernel name until its unit has unmounted it: the next test must
    # not see that name freed in its middle.
    for name in names:
        guest.wait_until(f"case $(systemctl show -p ActiveState --value gandi-disk@{name}.service)"
                         " in inactive|failed) true;; *) false;; esac", 60)


def mount_of(guest: Guest, name: str) -> Optional[dict]:
    found = json.loads(guest.check("findmnt -J -o TARGET,SOURCE,FSTYPE,OPTIONS || echo '{}'"))
    mounts = [m for m in found.get("filesystems", []) for m in _flatten(m)
              if m["source"] == f"/dev/{name}"]
    assert len(mounts) <= 1, mounts
    return mounts[0] if mounts else None


def _flatten(mount: dict) -> List[dict]:
    return [mount] + [m for child in mount.get("children", []) for m in _flatten(child)]


def status_of(guest: Guest, name: str) -> dict:
    rows = json.loads(guest.check("gandi-vm status --format yaml | python3 -c "
                                  "'import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))'"))
    return next(row for row in rows["disks"] if row["device"] == name)


def test_labelled_ext4_is_mounted_under_its_label(guest: Guest, plug: Plugged):
    name = plug.disk("ext4", "data")
    mount = mount_of(guest, name)
    assert mount and mount["target"] == "/srv/data" and mount["fstype"] == "ext4"
    assert {"rw", "nosuid", "nodev", "noatime"} <= set(mount["options"].split(","))
    assert guest.check("stat -c '%a %U:%G' /srv/data").strip() in ("755 root:root",)


def test_unlabelled_disk_is_mounted_under_its_kernel_name(guest: Guest, plug: Plugged):
    name = plug.disk("ext4")
    mount = mount_of(guest, name)
    assert mount and mount["target"] == f"/srv/{name}"


def test_hostile_labels_stay_inside_srv_and_are_never_run(guest: Guest, plug: Plugged):
    guest.check("rm -f /tmp/p")
    climbing = plug.disk("ext4", "../../etc")
    command = plug.disk("ext4", "$(touch /tmp/p)")
    assert mount_of(guest, climbing)["target"] == "/srv/etc"
    assert mount_of(guest, command)["target"] == "/srv/touch_tmp_p"
    assert guest.run("test -e /tmp/p").returncode != 0
    assert guest.run("mountpoint -q /etc").returncode != 0


def test_xfs_disk_is_mounted(guest: Guest, plug: Plugged):
    name = plug.disk("xfs", "logs", size_mb=320)
    mount = mount_of(guest, name)
    assert mount and (mount["target"], mount["fstype"]) == ("/srv/logs", "xfs")


def test_swap_disk_is_not_mounted(guest: Guest, plug: Plugged):
    name = plug.disk("swap")
    assert mount_of(guest, name) is None
    row = status_of(guest, name)
    assert (row["state"], row["reason"]) == ("skipped", "swap signature")
    assert name not in guest.check("cat /proc/swaps")


def test_hot_removed_disk_is_unmounted_and_cleaned_up(guest: Guest, plug: Plugged):
    name = plug.disk("ext4", "gone")
    assert mount_of(guest, name)["target"] == "/srv/gone"

    plug.unplug(name)

    # is-active is already false while the unit is still stopping: wait for the end state.
    guest.wait_until(f'test "$(systemctl show -p ActiveState --value gandi-disk@{name}.service)"'
                     " = inactive", 60)
    assert mount_of(guest, name) is None
    assert guest.run("test -e /srv/gone").returncode != 0
    shown = guest.check(f"systemctl show -p ActiveState -p Result gandi-disk@{name}.service")
    assert set(shown.split()) == {"ActiveState=inactive", "Result=success"}
    assert guest.check("systemctl --failed --no-legend --plain") == ""


def test_grown_disk_gets_a_grown_filesystem(guest: Guest, plug: Plugged):
    name = plug.disk("ext4", "growing", size_mb=64)
    before = int(guest.check("df -B1 --output=size /srv/growing | tail -1"))
    device_id = plug.ids[-1]

    guest.resize_disk(device_id, 160 * 1024 * 1024)

    guest.wait_until(f"test $(df -B1 --output=size /srv/growing | tail -1) -gt {before + (64 << 20)}", 60)
    assert mount_of(guest, name)["target"] == "/srv/growing"


def test_a_disk_plugged_while_another_is_detached_under_its_name_is_mounted(guest: Guest, plug: Plugged):
    # A disk we did not mount frees its kernel name as soon as it is gone (a mounted one keeps it
    # until the umount), while its unit is still stopping. The next disk takes that name, and
    # systemd drops the start udev asked for: detach must start it.
    first = plug.disk("swap")
    plug.unplug(first)
    second = plug.disk("ext4", "second")

    assert second == first
    assert mount_of(guest, second)["target"] == "/srv/second"
