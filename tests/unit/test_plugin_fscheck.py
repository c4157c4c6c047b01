"""The fscheck plugin: an ext root filesystem with both periodic checks disabled gets a 6-month
check interval through tune2fs; any other root is left alone."""

from __future__ import annotations

import io
import os
import struct
from typing import List

import pytest
from fakesys import FakeHost, ext4_superblock, system, write_device, write_mountinfo

from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, Context, fscheck


def superblock(max_count: int = -1, interval: int = 0) -> bytes:
    """An ext4 superblock (as mke2fs writes one) with these two check settings."""
    sb = bytearray(ext4_superblock(20 << 30))
    struct.pack_into("<h", sb, 0x36, max_count)
    struct.pack_into("<I", sb, 0x44, interval)
    return bytes(sb)


class Tune2fs:
    """tune2fs -i 6m: sets the interval in the superblock of the device it is given."""

    def __init__(self, root: str = "/"):
        self.root = root

    def __call__(self, argv: List[str]) -> Result:
        if argv[1:3] == ["-i", "6m"]:
            write_device(os.path.basename(argv[3]), superblock(-1, 15552000), 1024, root=self.root)
            return Result(argv, 0, "Setting interval between checks to 15552000 seconds\n")
        return Result(argv, 1, stderr="tune2fs: bad arguments")


def apply(host: FakeHost):
    return fscheck.apply(Context(host, Settings(), name="fscheck"))


@pytest.fixture
def guest(host):
    """The plain guest of conftest (/dev/vda1, ext4, on /) with checks disabled, as mke2fs makes it."""
    write_device("vda1", superblock(), 1024)
    host.handlers["tune2fs"] = Tune2fs()
    return host


def test_disabled_checks_get_a_six_month_interval(guest):
    outcome = apply(guest)
    assert outcome.state == CHANGED
    assert guest.commands == [["tune2fs", "-i", "6m", "/dev/vda1"]]
    assert outcome.detail == "tune2fs -i 6m /dev/vda1"


def test_second_apply_changes_nothing(guest):
    apply(guest)
    guest.commands[:] = []
    assert apply(guest).state == UNCHANGED
    assert guest.commands == []  # read from the superblock: no process at all


@pytest.mark.parametrize("max_count, interval", [(30, 0), (-1, 2592000), (0, 604800), (20, 15552000)])
def test_checks_the_owner_set_are_kept(guest, max_count, interval):
    write_device("vda1", superblock(max_count, interval), 1024)
    assert apply(guest).state == UNCHANGED
    assert guest.commands == []


@pytest.mark.parametrize("fstype", ["xfs", "btrfs"])
def test_a_root_that_is_not_ext_is_a_skip(guest, fs, fstype):
    write_mountinfo(fs, [("253:1", "/", fstype, "/dev/vda1")])
    outcome = apply(guest)
    assert outcome.state == SKIPPED
    assert f"is {fstype}, not ext2/3/4" in outcome.detail
    assert guest.commands == []


def test_missing_tune2fs_is_a_skip(guest):
    del guest.handlers["tune2fs"]
    outcome = apply(guest)
    assert outcome.state == SKIPPED
    assert "tune2fs not found" in outcome.detail


def test_dev_root_is_found_by_its_device_number(guest, fs):
    write_mountinfo(fs, [("253:1", "/", "ext4", "/dev/root")])
    assert apply(guest).state == CHANGED
    assert guest.commands[-1] == ["tune2fs", "-i", "6m", "/dev/vda1"]


def test_an_unknown_device_is_a_skip(guest, fs):
    write_mountinfo(fs, [("253:9", "/", "ext4", "/dev/root")])
    outcome = apply(guest)
    assert outcome.state == SKIPPED
    assert "cannot find the device of /" in outcome.detail


def test_nothing_on_root_is_a_skip(guest, fs):
    write_mountinfo(fs, [("0:22", "/proc", "proc", "proc")])
    assert apply(guest).state == SKIPPED


def test_failures_of_tune2fs_are_reported(guest):
    guest.handlers["tune2fs"] = lambda argv: Result(argv, 1, stderr="tune2fs: Device or resource busy")
    outcome = apply(guest)
    assert outcome.state == FAILED
    assert "tune2fs -i 6m /dev/vda1: " in outcome.detail and "busy" in outcome.detail


def test_a_superblock_without_the_ext_magic_is_reported_and_nothing_runs(guest):
    write_device("vda1", bytes(1024), 1024)
    outcome = apply(guest)
    assert outcome.state == FAILED
    assert outcome.detail == "/dev/vda1: no ext4 superblock"
    assert guest.commands == []


def test_an_unreadable_device_is_reported(guest, fs):
    os.remove("/dev/vda1")
    fs.create_dir("/dev/vda1")  # exists, but cannot be read as a device
    outcome = apply(guest)
    assert outcome.state == FAILED
    assert outcome.detail.startswith("cannot read the superblock of /dev/vda1")
    assert guest.commands == []


def test_under_root_the_roots_device_node_is_used(fs):
    system(fs, root="/vm")
    write_device("vda1", superblock(), 1024, root="/vm")
    host = FakeHost(root="/vm")
    host.handlers["tune2fs"] = Tune2fs(root="/vm")
    assert apply(host).state == CHANGED
    assert host.commands[-1] == ["tune2fs", "-i", "6m", "/vm/dev/vda1"]


def test_dry_run_plans_the_change_and_runs_nothing(fs):
    system(fs)
    write_device("vda1", superblock(), 1024)
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    host.handlers["tune2fs"] = Tune2fs()
    with open("/proc/self/mountinfo", "rb") as f:
        before = f.read(), sorted(os.listdir("/"))
    assert apply(host).state == CHANGED
    assert host.commands == []
    with open("/dev/vda1", "rb") as f:
        assert f.read()[1024:] == superblock()
    assert "would run tune2fs -i 6m /dev/vda1" in plan.getvalue()
    with open("/proc/self/mountinfo", "rb") as f:
        assert (f.read(), sorted(os.listdir("/"))) == before
