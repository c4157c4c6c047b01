"""disk.detach and disk.resize, starting from what a real attach left behind."""

from __future__ import annotations

import io
import json
import os
import struct

import pytest
from fakesys import (add_disk, blkid_udev, ext4_superblock, gpt, set_attr, set_size, write_device,
                     xfs_superblock)

from gandi_vm import disk, grow, mounts
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
# disk.resize hands the enlarged disk to grow.disk_resized (whose decisions test_grow.py covers):
# here, what a real attach left behind meets a capacity change. The tools are simulated on the
# fake tree: resize2fs rewrites the ext4 superblock to its device's size, xfs_growfs changes
# what statfs says, growpart moves the partition's end to where the GPT lets it.
GiB = 1 << 30


def ext4_size(name):
    with open(f"/dev/{name}", "rb") as f:
        f.seek(1024)
        sb = f.read(1024)
    low, log, high = (struct.unpack_from("<I", sb, offset)[0] for offset in (4, 0x18, 0x150))
    return ((high << 32) | low) * (1024 << log)


def sectors(name, attr="size"):
    with open(f"/sys/class/block/{name}/{attr}", encoding="utf-8") as f:
        return int(f.read())


def resize2fs(argv):
    name = os.path.basename(argv[1])
    write_device(name, ext4_superblock(sectors(name) * 512), 1024)
    return Result(argv, 0)


def with_tools(host):
    host.handlers["resize2fs"] = resize2fs
    return host


@pytest.fixture
def ext4_vdb(host, fs):
    """vdb holding an ext4 of its size (1 GiB), not attached yet."""
    add_disk(fs, "vdb", "253:16", SECTORS)
    write_device("vdb", ext4_superblock(SECTORS * 512), 1024)
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    return with_tools(host)


@pytest.fixture
def grown(ext4_vdb):
    """vdb attached at /srv/data, then enlarged to 2 GiB; commands cleared."""
    assert disk.attach(ext4_vdb, SETTINGS, "vdb").mountpoint == "/srv/data"
    ext4_vdb.commands.clear()
    set_size("vdb", 2 * SECTORS)
    return ext4_vdb


def test_a_change_event_with_the_same_size_runs_nothing(ext4_vdb):
    disk.attach(ext4_vdb, SETTINGS, "vdb")
    ext4_vdb.commands.clear()
    before = os.stat(state_path("vdb"))
    assert disk.resize(ext4_vdb, SETTINGS, "vdb") == [
        grow.Outcome("/srv/data", grow.UNCHANGED, "ext4 fills its device (1.0GiB)")]
    assert ext4_vdb.commands == []
    assert os.stat(state_path("vdb")).st_ino == before.st_ino


def test_a_larger_ext4_disk_is_grown_with_resize2fs(grown):
    assert disk.resize(grown, SETTINGS, "vdb") == [
        grow.Outcome("/srv/data", grow.GROWN, "filesystem vdb 1.0GiB -> 2.0GiB")]
    assert grown.commands == [["resize2fs", "/dev/vdb"]]
    assert ext4_size("vdb") == 2 * GiB
    grown.commands.clear()
    [again] = disk.resize(grown, SETTINGS, "vdb:4194304")  # the next change event
    assert again.state == grow.UNCHANGED and grown.commands == []


def test_a_disk_enlarged_while_the_vm_was_off_grows_at_attach(ext4_vdb):
    set_size("vdb", 2 * SECTORS)
    assert disk.attach(ext4_vdb, SETTINGS, "vdb").state == disk.MOUNTED
    assert ext4_vdb.programs() == ["blkid", "e2fsck", "mount", "resize2fs"]
    assert ext4_size("vdb") == 2 * GiB


def test_xfs_is_grown_through_its_mountpoint(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    write_device("vdb", xfs_superblock(SECTORS * 512, log_blocks=0))
    host.statfs["/srv/logs"] = (SECTORS * 512 // 4096, 4096)
    host.signatures["vdb"] = (0, blkid_udev("xfs", label="logs"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)

    def xfs_growfs(argv):
        host.statfs["/srv/logs"] = (2 * SECTORS * 512 // 4096, 4096)
        return Result(argv, 0)

    host.handlers["xfs_growfs"] = xfs_growfs
    [outcome] = disk.resize(host, SETTINGS, "vdb")
    assert outcome.state == grow.GROWN
    assert host.commands == [["xfs_growfs", "-d", "/srv/logs"]]


def test_a_failed_grow_is_retried_on_the_next_event(grown):
    grown.handlers["resize2fs"] = lambda argv: Result(argv, 1, stderr="resize2fs: busy")
    [outcome] = disk.resize(grown, SETTINGS, "vdb")
    assert outcome.failed
    assert outcome.reason == "filesystem vdb: `resize2fs /dev/vdb` failed: resize2fs: busy"
    assert ext4_size("vdb") == GiB
    grown.handlers["resize2fs"] = resize2fs
    assert disk.resize(grown, SETTINGS, "vdb")[0].state == grow.GROWN
    assert ext4_size("vdb") == 2 * GiB
    assert grown.commands == [["resize2fs", "/dev/vdb"]] * 2


def test_a_filesystem_that_cannot_grow_online(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("vfat", label="EFI"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(host, SETTINGS, "vdb") == [
        grow.Outcome("/srv/EFI", grow.SKIPPED, "vfat cannot be grown online")]
    assert host.commands == []


def test_resize_of_a_disk_never_attached(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(host, SETTINGS, "vdb") == []
    assert host.commands == []


def test_resize_of_a_disk_we_did_not_mount(host, fs):
    add_disk(fs, "vdb", "253:16", SECTORS)
    host.signatures["vdb"] = (0, blkid_udev("swap", usage="other"))
    disk.attach(host, SETTINGS, "vdb")
    host.commands.clear()
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(host, SETTINGS, "vdb") == []
    assert host.commands == []


def test_a_filesystem_someone_else_mounted_is_left_alone(ext4_vdb):
    write_mountinfo_line("253:16", "/mnt/theirs", "ext4", "/dev/vdb")
    set_size("vdb", 2 * SECTORS)
    assert disk.resize(ext4_vdb, SETTINGS, "vdb") == []
    assert ext4_vdb.commands == [] and ext4_size("vdb") == GiB


def write_mountinfo_line(devno, mountpoint, fstype, source):
    with open("/proc/self/mountinfo", "a") as f:
        f.write(f"40 22 {devno} / {mountpoint} rw - {fstype} {source} rw\n")


# vdc, a GPT disk of 4 GiB: vdc1 (1 MiB from 1 MiB, unformatted), vdc2 up to the backup entries.
VDC = 4 * SECTORS
VDC2_START = 4096


def usable_end(disk_sectors):
    return disk_sectors - 33  # the backup entries (32 sectors) and header (1) of a 512-byte GPT


@pytest.fixture
def partitioned(host, fs):
    """vdc2 (ext4 'part') mounted by us, then vdc enlarged to 8 GiB; commands cleared."""
    vdc2 = usable_end(VDC) - VDC2_START
    add_disk(fs, "vdc", "253:32", VDC,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", vdc2)])
    set_attr("vdc1", "start", 2048)
    set_attr("vdc2", "start", VDC2_START)
    write_device("vdc", gpt(VDC * 512))
    write_device("vdc2", ext4_superblock(vdc2 * 512), 1024)
    host.signatures["vdc2"] = (0, blkid_udev("ext4", label="part"))
    assert disk.attach(host, SETTINGS, "vdc").state == disk.SKIPPED
    assert disk.attach(host, SETTINGS, "vdc2").mountpoint == "/srv/part"
    host.commands.clear()
    set_size("vdc", 2 * VDC)
    return with_tools(host)


def growpart(argv):
    set_size("vdc2", usable_end(2 * VDC) - VDC2_START)
    return Result(argv, 0, stdout="CHANGED: partition=2 start=4096 ...")


def test_the_last_partition_is_grown_then_its_filesystem(partitioned):
    partitioned.handlers["growpart"] = growpart
    [outcome] = disk.resize(partitioned, SETTINGS, "vdc")
    assert (outcome.mountpoint, outcome.state) == ("/srv/part", grow.GROWN)
    assert partitioned.commands == [["growpart", "/dev/vdc", "2"], ["resize2fs", "/dev/vdc2"]]
    assert sectors("vdc2") == usable_end(2 * VDC) - VDC2_START
    assert ext4_size("vdc2") == (usable_end(2 * VDC) - VDC2_START) * 512 // 4096 * 4096


def test_growpart_nochange_goes_on_to_the_filesystem(partitioned):
    # The filesystem is 1 GiB smaller than its partition; growpart finds no room where grow.py
    # saw some: its NOCHANGE (exit 1) is no failure, and the filesystem still grows.
    vdc2 = usable_end(VDC) - VDC2_START
    write_device("vdc2", ext4_superblock(vdc2 * 512 - GiB), 1024)
    partitioned.handlers["growpart"] = lambda argv: Result(
        argv, 1, stdout=f"NOCHANGE: partition 2 is size {vdc2}. it cannot be grown")
    [outcome] = disk.resize(partitioned, SETTINGS, "vdc")
    assert partitioned.commands == [["growpart", "/dev/vdc", "2"], ["resize2fs", "/dev/vdc2"]]
    assert outcome.state == grow.GROWN
    assert ext4_size("vdc2") == vdc2 * 512 // 4096 * 4096


def test_growpart_failure_is_a_failure_naming_the_step_and_retried(partitioned):
    partitioned.handlers["growpart"] = lambda argv: Result(argv, 2, stderr="FAILED: sfdisk")
    [outcome] = disk.resize(partitioned, SETTINGS, "vdc")
    assert outcome.failed
    assert outcome.reason == "partition vdc2: `growpart /dev/vdc 2` failed: FAILED: sfdisk"
    assert partitioned.programs() == ["growpart"]
    assert ext4_size("vdc2") == (usable_end(VDC) - VDC2_START) * 512 // 4096 * 4096
    partitioned.handlers["growpart"] = growpart
    assert disk.resize(partitioned, SETTINGS, "vdc2")[0].state == grow.GROWN


def test_a_last_partition_that_is_not_ours_is_left_alone(host, fs):
    add_disk(fs, "vdc", "253:32", VDC,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", VDC - 4096 - 33)])
    write_device("vdc", gpt(VDC * 512))
    disk.attach(host, SETTINGS, "vdc")
    host.commands.clear()
    set_size("vdc", 2 * VDC)
    assert disk.resize(host, SETTINGS, "vdc") == []
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
