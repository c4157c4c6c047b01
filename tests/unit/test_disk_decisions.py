"""The pure decisions of disk.py, and the system-disk facts they rest on."""

from __future__ import annotations

import os

import pytest
from fakesys import add_disk, add_dm, write_mountinfo, write_swaps

from gandi_vm import disk, mounts
from gandi_vm.blockdev import BlockDevice, Signature
from gandi_vm.host import Host
from gandi_vm.mounts import FstabEntry


def device(**changes) -> BlockDevice:
    fields = dict(name="vdb", devno="253:16", diskseq="", size=1 << 30, read_only=False, disk="vdb",
                  partition_number=None, partitions=(), holders=())
    fields.update(changes)
    return BlockDevice(**fields)


# -- sysfs_skip ------------------------------------------------------------------------------
def test_sysfs_skip_accepts_a_plain_data_disk():
    assert disk.sysfs_skip(device(), {"vda": "holds /"}) is None


@pytest.mark.parametrize("dev, words", [
    (device(), "system disk vdb (holds /)"),
    (device(name="vdb1", disk="vdb", partition_number=1), "system disk vdb"),
    (device(size=0), "zero size"),
    (device(read_only=True), "read-only"),
    (device(holders=("dm-0", "md127")), "in use by dm-0 md127"),
    (device(partitions=("vdb1", "vdb2")), "partitioned: vdb1 vdb2"),
])
def test_sysfs_skip(dev, words):
    reason = disk.sysfs_skip(dev, {"vdb": "holds /"} if "system" in words else {})
    assert reason is not None and words in reason


# -- signature_skip --------------------------------------------------------------------------
def sig(**properties) -> Signature:
    return Signature({f"ID_{k.upper()}": v for k, v in properties.items()})


def test_signature_skip_accepts_a_filesystem():
    assert disk.signature_skip(sig(fs_type="ext4", fs_usage="filesystem")) is None
    assert disk.signature_skip(sig(fs_type="xfs", fs_usage="filesystem")) is None


@pytest.mark.parametrize("signature, words", [
    (sig(fs_type="swap", fs_usage="other"), "swap"),
    (Signature(), "no filesystem"),
    (Signature({"ID_FS_TYPE": "ext4", "ID_FS_USAGE": "filesystem"}, ambivalent=True),
     "ambivalent"),
    (sig(fs_type="LVM2_member", fs_usage="raid"), "LVM2_member (raid)"),
    (sig(fs_type="linux_raid_member", fs_usage="raid"), "linux_raid_member"),
    (sig(fs_type="crypto_LUKS", fs_usage="crypto"), "crypto_LUKS (crypto)"),
    (sig(part_table_type="gpt", part_table_uuid="0a0b"), "gpt partition table"),
    (sig(fs_type="weird"), "unknown usage"),
])
def test_signature_skip(signature, words):
    reason = disk.signature_skip(signature)
    assert reason is not None and words in reason


# -- fstab_claim -----------------------------------------------------------------------------
UUID = "0a1b2c3d-0000-4000-8000-00000000beef"
DATA = sig(fs_type="ext4", fs_usage="filesystem", fs_uuid=UUID, fs_label_enc="my\\x20data",
           part_entry_uuid="4d3c2b1a-01")


@pytest.fixture
def devtree(fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    add_disk(fs, "vdc", "253:32", 2097152)
    os.makedirs("/dev/disk/by-uuid")
    os.symlink("../../vdb", f"/dev/disk/by-uuid/{UUID}")
    return Host(root="/")


def claim(host, spec, sig=DATA, dev_path="/dev/vdb"):
    entries = [FstabEntry(1, "/dev/vda1", "/"), FstabEntry(7, spec, "/data")]
    return disk.fstab_claim(entries, dev_path, sig, host.realpath)


@pytest.mark.parametrize("spec", [
    f"UUID={UUID}",
    f"UUID={UUID.upper()}",
    f'UUID="{UUID}"',
    "LABEL=my data",
    "PARTUUID=4d3c2b1a-01",
    "/dev/vdb",
    f"/dev/disk/by-uuid/{UUID}",
])
def test_fstab_claims(devtree, spec):
    entry = claim(devtree, spec)
    assert entry is not None and entry.lineno == 7


@pytest.mark.parametrize("spec", [
    "UUID=ffffffff-0000-4000-8000-000000000000",
    "LABEL=other",
    "LABEL=My Data",  # labels are case-sensitive, unlike UUIDs
    "PARTUUID=4d3c2b1a-02",
    "/dev/vdc",
    "/dev/vdb1",
    "UUID=",
    "LABEL=",
    "tmpfs",
])
def test_fstab_does_not_claim_another_device(devtree, spec):
    assert claim(devtree, spec) is None


def test_fstab_empty_keys_never_match(devtree):
    # A device without a label or PARTUUID must not match `LABEL=` or `PARTUUID=` lines.
    bare = sig(fs_type="ext4", fs_usage="filesystem")
    assert claim(devtree, "LABEL=", sig=bare) is None
    assert claim(devtree, "PARTUUID=", sig=bare) is None
    assert claim(devtree, "PARTLABEL=", sig=bare) is None


def test_fstab_claim_by_partlabel(devtree):
    part = sig(fs_type="ext4", fs_usage="filesystem", part_entry_name="my\\x20part")
    assert claim(devtree, "PARTLABEL=my part", sig=part) is not None


# -- system_disks ----------------------------------------------------------------------------
def test_root_on_a_partition_marks_its_disk(fs):
    add_disk(fs, "vda", "253:0", 20971520, partitions=[("vda1", "253:1", 20969472)])
    add_disk(fs, "vdb", "253:16", 2097152)
    write_mountinfo(fs, [("253:1", "/", "ext4", "/dev/root"), ("0:22", "/proc", "proc", "proc")])
    host = Host(root="/")
    assert disk.system_disks(host, mounts.mount_table(host)) == {"vda": "holds /"}


def test_root_on_device_mapper_marks_the_disk_below(fs):
    add_disk(fs, "vda", "253:0", 20971520,
             partitions=[("vda1", "253:1", 2048), ("vda2", "253:2", 20967424)])
    add_disk(fs, "vdb", "253:16", 2097152)
    add_dm(fs, "dm-0", "254:0", 20967424, slaves=["vda2"])
    write_mountinfo(fs, [("254:0", "/", "xfs", "/dev/mapper/vg-root"),
                         ("253:1", "/boot", "ext4", "/dev/vda1")])
    host = Host(root="/")
    assert disk.system_disks(host, mounts.mount_table(host)) == {"vda": "holds /"}


def test_active_swap_marks_its_disk(fs):
    add_disk(fs, "vda", "253:0", 20971520, partitions=[("vda1", "253:1", 20969472)])
    add_disk(fs, "vdc", "253:32", 4194304,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", 4190208)])
    write_mountinfo(fs, [("253:1", "/", "ext4", "/dev/vda1")])
    write_swaps(fs, ["/dev/vdc2", "/swapfile"])
    host = Host(root="/")
    assert disk.system_disks(host, mounts.mount_table(host)) == {
        "vda": "holds /", "vdc": "holds active swap"}


def test_btrfs_root_is_found_by_its_source(fs):
    add_disk(fs, "vda", "253:0", 20971520, partitions=[("vda1", "253:1", 20969472)])
    write_mountinfo(fs, [("0:33", "/", "btrfs", "/dev/vda1")])
    host = Host(root="/")
    assert disk.system_disks(host, mounts.mount_table(host)) == {"vda": "holds /"}


def test_other_mounts_do_not_make_a_system_disk(fs):
    add_disk(fs, "vda", "253:0", 20971520, partitions=[("vda1", "253:1", 20969472)])
    add_disk(fs, "vdb", "253:16", 2097152)
    write_mountinfo(fs, [("253:1", "/", "ext4", "/dev/vda1"),
                         ("253:16", "/srv/data", "ext4", "/dev/vdb")])
    host = Host(root="/")
    assert disk.system_disks(host, mounts.mount_table(host)) == {"vda": "holds /"}


def test_eligible_follows_the_device_patterns(fs):
    from gandi_vm.record import replace

    from gandi_vm.config import Settings

    for name, devno in (("vda", "253:0"), ("vdb", "253:16"), ("sr0", "11:0"), ("loop0", "7:0")):
        add_disk(fs, name, devno, 2048)
    host = Host(root="/")
    assert disk.eligible(host, Settings()) == ["vda", "vdb"]
    assert disk.eligible(host, replace(Settings(), disk_devices=("sr*", "loop*"))) == [
        "loop0", "sr0"]
