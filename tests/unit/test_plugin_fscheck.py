"""The fscheck plugin: an ext root filesystem with both periodic checks disabled gets a 6-month
check interval through tune2fs; any other root is left alone."""

from __future__ import annotations

import io
import os
from typing import List

import pytest
from fakesys import FakeHost, system, write_mountinfo

from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, Context, fscheck


def listing(max_count: int, interval: int) -> str:
    """`tune2fs -l` output, cut to the lines around the two that matter."""
    shown = f"{interval} ({'<none>' if interval == 0 else f'{interval // 86400} days'})"
    return ("tune2fs 1.47.0 (5-Feb-2023)\n"
            "Filesystem volume name:   <none>\n"
            "Mount count:              7\n"
            f"Maximum mount count:      {max_count}\n"
            "Last checked:             Mon Jan  1 00:00:00 2024\n"
            f"Check interval:           {shown}\n"
            "Lifetime writes:          4 GB\n")


class Tune2fs:
    """tune2fs against one superblock: -l shows it, -i 6m sets its interval."""

    def __init__(self, max_count: int = -1, interval: int = 0):
        self.max_count, self.interval = max_count, interval

    def __call__(self, argv: List[str]) -> Result:
        if argv[1] == "-l":
            return Result(argv, 0, listing(self.max_count, self.interval))
        if argv[1:3] == ["-i", "6m"]:
            self.interval = 15552000
            return Result(argv, 0, "Setting interval between checks to 15552000 seconds\n")
        return Result(argv, 1, stderr="tune2fs: bad arguments")


def apply(host: FakeHost):
    return fscheck.apply(Context(host, Settings(), name="fscheck"))


@pytest.fixture
def guest(host):
    """The plain guest of conftest (/dev/vda1, ext4, on /) with checks disabled, as mke2fs makes it."""
    host.handlers["tune2fs"] = Tune2fs()
    return host


def test_disabled_checks_get_a_six_month_interval(guest):
    outcome = apply(guest)
    assert outcome.state == CHANGED
    assert guest.commands == [["tune2fs", "-l", "/dev/vda1"], ["tune2fs", "-i", "6m", "/dev/vda1"]]
    assert outcome.detail == "tune2fs -i 6m /dev/vda1"


def test_second_apply_changes_nothing(guest):
    apply(guest)
    guest.commands[:] = []
    assert apply(guest).state == UNCHANGED
    assert guest.commands == [["tune2fs", "-l", "/dev/vda1"]]  # a query only


@pytest.mark.parametrize("max_count, interval", [(30, 0), (-1, 2592000), (0, 604800), (20, 15552000)])
def test_checks_the_owner_set_are_kept(guest, max_count, interval):
    guest.handlers["tune2fs"] = Tune2fs(max_count, interval)
    assert apply(guest).state == UNCHANGED
    assert guest.programs() == ["tune2fs"]
    assert len(guest.commands) == 1


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
    guest.handlers["tune2fs"] = lambda argv: Result(argv, 1, stderr="tune2fs: Bad magic number in superblock")
    outcome = apply(guest)
    assert outcome.state == FAILED
    assert "Bad magic number" in outcome.detail


def test_output_without_the_fields_is_reported(guest):
    guest.handlers["tune2fs"] = lambda argv: Result(argv, 0, "tune2fs 1.47.0\n")
    assert apply(guest).state == FAILED


def test_under_root_the_roots_device_node_is_used(fs):
    system(fs, root="/vm")
    host = FakeHost(root="/vm")
    host.handlers["tune2fs"] = Tune2fs()
    assert apply(host).state == CHANGED
    assert host.commands[-1] == ["tune2fs", "-i", "6m", "/vm/dev/vda1"]


def test_dry_run_plans_the_change_and_runs_only_the_query(fs):
    system(fs)
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    tune2fs = host.handlers["tune2fs"] = Tune2fs()
    with open("/proc/self/mountinfo", "rb") as f:
        before = f.read(), sorted(os.listdir("/"))
    assert apply(host).state == CHANGED
    assert host.commands == [["tune2fs", "-l", "/dev/vda1"]]
    assert tune2fs.interval == 0
    assert "would run tune2fs -i 6m /dev/vda1" in plan.getvalue()
    with open("/proc/self/mountinfo", "rb") as f:
        assert (f.read(), sorted(os.listdir("/"))) == before
