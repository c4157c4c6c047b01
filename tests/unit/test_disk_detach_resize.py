"""disk.detach and disk.resize, starting from what a real attach left behind."""

from __future__ import annotations

import io
import json
import os

import pytest
from fakesys import add_disk, blkid_udev, set_size

from gandi_vm import disk, mounts
from gandi_vm.blockdev import NoSuchDevice
from gandi_vm.config import Settings
from gandi_vm.host import Result

SETTINGS = Settings()
SECTORS = 2097152


def state_path(name):
    return f"/run/gandi/disk/{name}.json"


def record(name):
    with open(state_path(name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture
def attached(host, fs):
    """vdb (ext4, label 'data') attached at /srv/data by a real attach; commands cleared."""
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    assert disk.attach(host, SETTINGS, "vdb").mountpoint == "/srv/data"
    host.commands.clear()
    return host


def unplug(name):
    os.unlink(f"/sys/class/block/{name}")


# -- detach ----------------------------------------------------------------------------------
def test_detach_unmounts_removes_the_mountpoint_and_the_record(attached):
    outcome = disk.detach(attached, SETTINGS, "vdb")
    assert outcome == disk.Outcome("vdb", disk.UNMOUNTED, "unmounted from /srv/data", "/srv/data")
    assert attached.commands == [["umount", "/srv/data"]]
    assert not os.path.exists("/srv/data")
    assert not os.path.exists(state_path("vdb"))
    assert mounts.mount_at(attached, "/srv/data") is None


def test_detach_after_unplug_works_from_the_record(attached):
    unplug("vdb")
    assert disk.detach(attached, SETTINGS, "vdb").state == disk.UNMOUNTED
    assert attached.commands == [["umount", "/srv/data"]]
    assert not os.path.exists("/srv/data")


def disk_with_diskseq(fs, diskseq: str) -> None:
    base = add_disk(fs, "vdb", "253:16", SECTORS)
    with open(f"{base}/diskseq", "w") as f:
        f.write(f"{diskseq}\n")


def test_detach_starts_the_unit_of_a_new_disk_that_took_the_name(host, fs):
    disk_with_diskseq(fs, "5")
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    disk.attach(host, SETTINGS, "vdb")
    unplug("vdb")
    disk_with_diskseq(fs, "6")  # replugged while the old unit was still stopping
    host.commands.clear()

    assert disk.detach(host, SETTINGS, "vdb").state == disk.UNMOUNTED

    assert host.commands == [["umount", "/srv/data"],
                             ["systemctl", "--no-block", "start", "gandi-disk@vdb.service"]]


def test_detach_of_the_same_disk_starts_nothing(host, fs):
    disk_with_diskseq(fs, "5")
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()

    disk.detach(host, SETTINGS, "vdb")

    assert host.commands == [["umount", "/srv/data"]]


def test_busy_umount_with_the_device_present_fails_and_keeps_the_record(attached):
    attached.umount_rc = 32
    outcome = disk.detach(attached, SETTINGS, "vdb")
    assert outcome.failed
    assert outcome.reason == "umount /srv/data failed: umount: /srv/data: target is busy."
    assert attached.commands == [["umount", "/srv/data"]]  # no lazy umount
    assert record("vdb")["mountpoint"] == "/srv/data"
    assert os.path.isdir("/srv/data")
    assert mounts.mount_at(attached, "/srv/data").source == "/dev/vdb"


def test_busy_umount_of_an_unplugged_device_is_done_lazily(attached):
    attached.umount_rc = 32
    unplug("vdb")
    outcome = disk.detach(attached, SETTINGS, "vdb")
    assert outcome.state == disk.UNMOUNTED
    assert attached.commands == [["umount", "/srv/data"], ["umount", "-l", "/srv/data"]]
    assert not os.path.exists("/srv/data")
    assert not os.path.exists(state_path("vdb"))


def test_detach_without_a_record_changes_nothing(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    with open("/proc/self/mountinfo", "a") as f:
        f.write("40 22 253:16 / /srv/data rw - ext4 /dev/vdb rw\n")
    os.mkdir("/srv/data")
    outcome = disk.detach(host, SETTINGS, "vdb")
    assert (outcome.state, outcome.reason) == (disk.UNCHANGED, "nothing mounted by gandi")
    assert host.commands == []
    assert os.path.isdir("/srv/data")
    assert mounts.mount_at(host, "/srv/data") is not None


def test_detach_of_a_disk_we_skipped_runs_nothing(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("swap", usage="other"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    assert disk.detach(host, SETTINGS, "vdb").state == disk.UNCHANGED
    assert host.commands == []
    assert not os.path.exists(state_path("vdb"))


def test_files_left_in_the_mountpoint_are_kept(attached, fs):
    # What lies under the mount (or was written after it went away) is someone's data.
    fs.create_file("/srv/data/left-behind.txt", contents="data")
    assert disk.detach(attached, SETTINGS, "vdb").state == disk.UNMOUNTED
    assert attached.commands == [["umount", "/srv/data"]]
    assert os.path.isfile("/srv/data/left-behind.txt")
    assert not os.path.exists(state_path("vdb"))


def test_a_mount_of_another_device_on_our_mountpoint_is_not_unmounted(attached):
    attached.run(["umount", "/srv/data"], timeout=1)  # someone unmounted it, mounted another
    with open("/proc/self/mountinfo", "a") as f:
        f.write("41 22 253:99 / /srv/data rw - ext4 /dev/vdz rw\n")
    attached.commands.clear()
    disk.detach(attached, SETTINGS, "vdb")
    assert attached.commands == []
    assert os.path.isdir("/srv/data")
    assert mounts.mount_at(attached, "/srv/data").source == "/dev/vdz"


def test_pre_detach_hook_runs_before_the_umount(attached, fs):
    hook = "/etc/gandi/hooks/pre-disk-detach"
    fs.create_file(hook, st_mode=0o100755)
    attached.handlers[hook] = lambda argv: Result(argv, 1)  # its failure blocks nothing
    assert disk.detach(attached, SETTINGS, "vdb").state == disk.UNMOUNTED
    assert attached.commands == [[hook, "/dev/vdb", "/srv/data"], ["umount", "/srv/data"]]


@pytest.mark.parametrize("dev", ["/dev/..", "..", "a b", "", "vdb\n"])
def test_detach_rejects_bad_names(attached, dev):
    with pytest.raises(NoSuchDevice):
        disk.detach(attached, SETTINGS, dev)
    assert attached.commands == []


def test_dry_run_detach_changes_nothing(attached):
    plan = io.StringIO()
    attached.dry_run, attached._plan = True, plan
    disk.detach(attached, SETTINGS, "vdb")
    assert attached.commands == []
    assert plan.getvalue().splitlines() == [
        "would run umount /srv/data", "would rmdir /srv/data",
        f"would remove {state_path('vdb')}"]
    assert os.path.isdir("/srv/data") and os.path.exists(state_path("vdb"))


# -- resize ----------------------------------------------------------------------------------
def test_same_size_runs_nothing(attached):
    before = os.stat(state_path("vdb"))
    outcome = disk.resize(attached, SETTINGS, "vdb")
    assert (outcome.state, outcome.reason) == (disk.UNCHANGED, "size unchanged")
    assert attached.commands == []
    assert os.stat(state_path("vdb")).st_ino == before.st_ino


def test_a_larger_ext4_disk_is_grown_with_resize2fs(attached):
    set_size("vdb", 2 * SECTORS)
    outcome = disk.resize(attached, SETTINGS, "vdb")
    assert outcome.state == disk.GROWN
    assert outcome.mountpoint == "/srv/data"
    assert attached.commands == [["resize2fs", "/dev/vdb"]]
    assert record("vdb")["size"] == 2 * SECTORS * 512
    attached.commands.clear()
    assert disk.resize(attached, SETTINGS, "vdb").state == disk.UNCHANGED  # the next change event
    assert attached.commands == []


def test_xfs_is_grown_through_its_mountpoint(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("xfs", label="logs"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(host, SETTINGS, "vdb").state == disk.GROWN
    assert host.commands == [["xfs_growfs", "-d", "/srv/logs"]]


def test_a_failed_grow_is_retried_on_the_next_event(attached):
    set_size("vdb", 2 * SECTORS)
    attached.handlers["resize2fs"] = lambda argv: Result(argv, 1, stderr="resize2fs: busy")
    outcome = disk.resize(attached, SETTINGS, "vdb")
    assert outcome.failed and outcome.reason == "resize2fs failed: resize2fs: busy"
    assert record("vdb")["size"] == SECTORS * 512
    del attached.handlers["resize2fs"]
    assert disk.resize(attached, SETTINGS, "vdb").state == disk.GROWN


def test_a_filesystem_that_cannot_grow_online(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("vfat", label="EFI"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)
    outcome = disk.resize(host, SETTINGS, "vdb")
    assert outcome.state == disk.UNCHANGED and "cannot be grown online" in outcome.reason
    assert host.commands == []


def test_resize_of_a_disk_never_attached(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    outcome = disk.resize(host, SETTINGS, "vdb")
    assert (outcome.state, outcome.reason) == (disk.UNCHANGED, "not handled by gandi")
    assert host.commands == []


def test_resize_of_a_disk_we_did_not_mount(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("swap", usage="other"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(host, SETTINGS, "vdb").reason == "not mounted by gandi"
    assert host.commands == []


@pytest.fixture
def partitioned(host, fs):
    """vdc with vdc1 (unformatted) and vdc2 (ext4 'part', mounted by us); commands cleared."""
    add_disk(fs, "vdc", "253:32", 4 * SECTORS,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", 4 * SECTORS - 4096)])
    host.signatures["vdc2"] = (0, blkid_udev("ext4", label="part"))
    assert disk.attach(host, SETTINGS, "vdc").state == disk.SKIPPED
    assert disk.attach(host, SETTINGS, "vdc2").mountpoint == "/srv/part"
    host.commands.clear()
    set_size("vdc", 8 * SECTORS)
    return host


def test_the_last_partition_is_grown_then_its_filesystem(partitioned):
    def growpart(argv):
        set_size("vdc2", 8 * SECTORS - 4096)
        return Result(argv, 0, stdout="CHANGED: partition=2 start=4096 ...")

    partitioned.handlers["growpart"] = growpart
    outcome = disk.resize(partitioned, SETTINGS, "vdc")
    assert outcome.state == disk.GROWN and outcome.device == "vdc2"
    assert partitioned.commands == [["growpart", "/dev/vdc", "2"], ["resize2fs", "/dev/vdc2"]]
    assert record("vdc")["size"] == 8 * SECTORS * 512
    assert record("vdc2")["size"] == (8 * SECTORS - 4096) * 512


def test_growpart_missing_gives_a_hint(partitioned):
    outcome = disk.resize(partitioned, SETTINGS, "vdc")  # no growpart handler: exit 127
    assert outcome.state == disk.UNCHANGED
    assert "growpart /dev/vdc 2" in outcome.reason
    assert "gandi-vm disk resize vdc2" in outcome.reason
    assert partitioned.commands == [["growpart", "/dev/vdc", "2"]]


def test_growpart_nochange_goes_on_to_the_partition(partitioned):
    partitioned.handlers["growpart"] = lambda argv: Result(
        argv, 1, stdout="NOCHANGE: partition 2 is size 16773120. it cannot be grown")
    outcome = disk.resize(partitioned, SETTINGS, "vdc")
    assert (outcome.device, outcome.state) == ("vdc2", disk.UNCHANGED)
    assert partitioned.programs() == ["growpart"]


def test_growpart_failure_is_a_failure_and_retried(partitioned):
    partitioned.handlers["growpart"] = lambda argv: Result(argv, 2, stderr="FAILED: sfdisk")
    outcome = disk.resize(partitioned, SETTINGS, "vdc")
    assert outcome.failed and "growpart /dev/vdc 2 failed: FAILED: sfdisk" == outcome.reason
    assert record("vdc")["size"] == 4 * SECTORS * 512


def test_a_last_partition_that_is_not_ours_is_left_alone(host, fs):
    add_disk(fs, "vdc", "253:32", 4 * SECTORS,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", 4 * SECTORS - 4096)])
    disk.attach(host, SETTINGS, "vdc")
    host.commands.clear()
    set_size("vdc", 8 * SECTORS)
    outcome = disk.resize(host, SETTINGS, "vdc")
    assert outcome.reason == "last partition vdc2 is not mounted by gandi"
    assert host.commands == []


def test_resize_of_an_unknown_device(host):
    with pytest.raises(NoSuchDevice):
        disk.resize(host, SETTINGS, "vdz")


@pytest.mark.parametrize("content", [
    '{"device": "vdb", "ours": true, "mountpoint": "srv/data"}',  # not absolute
    '{"device": "vdb", "ours": true, "mountpoint": "/srv/\\u0000"}',  # no file has that name
    '{"device": "vdb", "ours": "yes", "mountpoint": ["/srv/data"]}',
    "[" * 100000,  # nested past the parser's recursion limit
])
def test_a_record_we_did_not_write_is_no_record(host, fs, content):
    fs.create_file(state_path("vdb"), contents=content)
    assert disk.detach(host, SETTINGS, "vdb").state == disk.UNCHANGED
    assert host.commands == []
    assert not os.path.exists(state_path("vdb"))
