"""A filesystem on LVM grows with its disk, in a real guest with device-mapper (issue 13).

The development machines' kernels have no device-mapper, so the loop-device LVM tests of
tests/integration skip there; this is where the LVM path is proven. A disk is hot-plugged blank,
partitioned (GPT) in the guest into one physical volume of volume group `gvg`, whose 128 MiB
logical volume holds an ext4 mounted on /mnt/lvdata, listed in CONFIG_GROW_MOUNTPOINTS. Then:

- block_resize: the partition and the physical volume grow online (the volume group gains the
  space), the logical volume and its filesystem do not (CONFIG_GROW_ROOT_LV=0, the default), and
  `gandi-vm status` says the space is held and how to use it;
- CONFIG_GROW_ROOT_LV=1 and `gandi-vm grow`: the logical volume and the filesystem grow;
- another block_resize: every layer grows online, through gandi-resize@.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import yaml

from qemu_guest import Guest

MIB = 1 << 20
MOUNTPOINT = "/mnt/lvdata"
WAIT = 90  # seconds on an idle machine (scaled): one gandi-vm start, growpart, LVM, resize2fs


@pytest.fixture(scope="module")
def guest(image: Path) -> Iterator[Guest]:
    with Guest(image) as vm:
        yield vm


@pytest.fixture(scope="module")
def disk(guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The hot-plugged disk's kernel name, once the LVM stack on it is mounted."""
    blank = tmp_path_factory.mktemp("lvm") / "lvm.img"
    with open(blank, "wb") as f:
        f.truncate(256 * MIB)
    guest.add_disk(blank, "lvm0")
    name = guest.kernel_name("lvm0")
    guest.wait_until(f"systemctl is-active --quiet gandi-disk@{name}.service", 60)
    guest.check(f"printf 'label: gpt\\n,,L\\n' | sfdisk -q /dev/{name} && udevadm settle && "
                f"pvcreate -q /dev/{name}1 && vgcreate -q gvg /dev/{name}1 && "
                "lvcreate -q -y -n data -L 128M gvg && mkfs.ext4 -q /dev/gvg/data && "
                f"mkdir -p {MOUNTPOINT} && mount /dev/gvg/data {MOUNTPOINT} && "
                f"echo 'CONFIG_GROW_MOUNTPOINTS=\"/ {MOUNTPOINT}\"' >>/etc/default/gandi",
                timeout=guest.scaled(120))
    return name


def lvm_bytes(guest: Guest, report: str, what: str) -> int:
    return int(guest.check(f"{report} --noheadings --nosuffix --units b -o {what} "
                           "-S vg_name=gvg | head -n 1").strip())


def fs_bytes(guest: Guest) -> int:
    return int(guest.check(f"df -B1 --output=size {MOUNTPOINT} | tail -n 1"))


def test_a_resize_grows_the_volume_group_but_holds_the_logical_volume(guest: Guest, disk: str):
    lv, fs = lvm_bytes(guest, "lvs", "lv_size"), fs_bytes(guest)
    assert lv == 128 * MIB

    guest.resize_disk("lvm0", 512 * MIB)

    guest.wait_until(f"test $(vgs --noheadings --nosuffix --units b -o vg_free gvg) -gt "
                     f"{300 * MIB}", guest.scaled(WAIT))
    assert lvm_bytes(guest, "pvs", "pv_size") > 500 * MIB
    assert lvm_bytes(guest, "lvs", "lv_size") == lv
    assert fs_bytes(guest) == fs
    journal = guest.check(f"journalctl -b -o cat -u 'gandi-resize@{disk}:*'")
    assert f"grow {MOUNTPOINT}: grown: partition {disk}1" in journal, journal
    rows = {row["mountpoint"]: row for row in
            yaml.safe_load(guest.check("gandi-vm status --format yaml"))["growth"]}
    assert rows[MOUNTPOINT]["state"] == "held", rows
    assert "CONFIG_GROW_ROOT_LV=1" in rows[MOUNTPOINT]["reason"]
    assert rows[MOUNTPOINT]["left"] > 300 * MIB


def test_with_grow_root_lv_the_logical_volume_and_its_filesystem_grow(guest: Guest, disk: str):
    fs = fs_bytes(guest)
    guest.check("echo CONFIG_GROW_ROOT_LV=1 >>/etc/default/gandi")

    done = guest.run("gandi-vm grow", timeout=guest.scaled(WAIT))

    assert done.returncode == 0, done.stderr
    assert lvm_bytes(guest, "lvs", "lv_size") > 500 * MIB
    assert fs_bytes(guest) > fs + 300 * MIB
    assert lvm_bytes(guest, "vgs", "vg_free") < 16 * MIB
    assert f"grow {MOUNTPOINT}: grown: logical volume" in done.stderr, done.stderr


def test_then_every_layer_grows_online(guest: Guest, disk: str):
    fs = fs_bytes(guest)

    guest.resize_disk("lvm0", 768 * MIB)

    guest.wait_until(f"test $(df -B1 --output=size {MOUNTPOINT} | tail -n 1) -gt "
                     f"{fs + 200 * MIB}", guest.scaled(WAIT))
    assert lvm_bytes(guest, "lvs", "lv_size") > 750 * MIB
    assert lvm_bytes(guest, "vgs", "vg_free") < 16 * MIB
    assert guest.check("systemctl --failed --no-legend --plain") == ""
