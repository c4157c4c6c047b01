"""blockdev: names checked against sysfs, sysfs facts of a device, and what blkid reports."""

from __future__ import annotations

import os

import pytest

from gandi_vm import blockdev
from gandi_vm.blockdev import NoSuchDevice
from gandi_vm.host import Host

from fakesys import VIRTIO, FakeHost, add_disk, add_dm, blkid_udev


def test_decode_udev_string():
    assert blockdev.decode_udev_string("a\\x20b") == b"a b"
    assert blockdev.decode_udev_string("\\xff") == b"\xff"
    assert blockdev.decode_udev_string("..\\x2f..\\x2fetc") == b"../../etc"
    assert blockdev.decode_udev_string("donn\\xc3\\xa9es") == "donn\u00e9es".encode()
    assert blockdev.decode_udev_string("plain") == b"plain"
    # Not an escape: kept as written.
    assert blockdev.decode_udev_string("\\xzz\\x2") == b"\\xzz\\x2"
    assert blockdev.decode_udev_string("") == b""


# -- kernel_name -----------------------------------------------------------------------------
@pytest.fixture
def sysfs(fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    add_disk(fs, "vdc", "253:32", 4194304,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", 4190208)],
             holders=())
    return Host(root="/")


def test_kernel_name_accepts_names_and_dev_paths(sysfs):
    assert blockdev.kernel_name(sysfs, "vdb") == "vdb"
    assert blockdev.kernel_name(sysfs, "/dev/vdb") == "vdb"
    assert blockdev.kernel_name(sysfs, "vdc1") == "vdc1"


def test_kernel_name_follows_by_label_symlinks(sysfs):
    os.makedirs("/dev/disk/by-label")
    os.symlink("../../vdb", "/dev/disk/by-label/data")
    assert blockdev.kernel_name(sysfs, "/dev/disk/by-label/data") == "vdb"


@pytest.mark.parametrize("dev", [
    "../x", "foo/bar", "vdz", "", ".", "..", "/dev/vdz", "/etc/passwd", "/dev/../etc/vdb",
    "vdb\n", "-vdb",
])
def test_kernel_name_rejects(sysfs, dev):
    with pytest.raises(NoSuchDevice):
        blockdev.kernel_name(sysfs, dev)


def test_kernel_name_rejects_a_symlink_out_of_dev(sysfs):
    os.makedirs("/dev/disk/by-label")
    os.symlink("/sys/class/block/vdb", "/dev/disk/by-label/trick")
    with pytest.raises(NoSuchDevice):
        blockdev.kernel_name(sysfs, "/dev/disk/by-label/trick")


def test_checked_name_is_syntax_only(fs):
    assert blockdev.checked_name("vdq") == "vdq"  # gone devices are still valid names
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(NoSuchDevice):
            blockdev.checked_name(bad)


# -- read ------------------------------------------------------------------------------------
def test_read_a_partitioned_disk(sysfs):
    os.makedirs(f"{VIRTIO}/vdc/vdc2/holders/dm-3")
    disk = blockdev.read(sysfs, "vdc")
    assert disk.name == "vdc"
    assert disk.devno == "253:32"
    assert disk.size == 4194304 * 512
    assert disk.read_only is False
    assert disk.disk == "vdc"
    assert disk.partition_number is None
    assert disk.partitions == ("vdc1", "vdc2")  # not "queue", "holders": no partition file
    assert disk.holders == ()

    part = blockdev.read(sysfs, "vdc2")
    assert part.devno == "253:34"
    assert part.size == 4190208 * 512
    assert part.disk == "vdc"
    assert part.partition_number == 2
    assert part.partitions == ()
    assert part.holders == ("dm-3",)


def test_read_a_read_only_disk_and_odd_attributes(fs):
    add_disk(fs, "sr0", "11:0", 0, ro=True)
    dev = blockdev.read(Host(root="/"), "sr0")
    assert dev.read_only and dev.size == 0
    with open("/sys/class/block/sr0/size", "w") as f:
        f.write("garbage\n")
    assert blockdev.read(Host(root="/"), "sr0").size == 0


def test_whole_disk_and_devno(sysfs):
    assert blockdev.whole_disk(sysfs, "vdc1") == "vdc"
    assert blockdev.whole_disk(sysfs, "vdc") == "vdc"
    assert blockdev.whole_disk(sysfs, "vdb") == "vdb"
    assert blockdev.name_of_devno(sysfs, "253:32") == "vdc"
    assert blockdev.name_of_devno(sysfs, "253:33") == "vdc1"
    # btrfs and tmpfs show anonymous numbers that no device has.
    assert blockdev.name_of_devno(sysfs, "0:33") is None


def test_underlying_follows_slaves_down(fs):
    add_disk(fs, "vda", "253:0", 20971520,
             partitions=[("vda1", "253:1", 2048), ("vda2", "253:2", 20967424)])
    add_disk(fs, "vdb", "253:16", 2097152)
    add_dm(fs, "dm-0", "254:0", 20967424, slaves=["vda2"])  # crypt on vda2
    add_dm(fs, "dm-1", "254:1", 20000000, slaves=["dm-0", "vdb"])  # LV spanning both
    host = Host(root="/")
    assert blockdev.underlying(host, "vdb") == ("vdb",)
    assert blockdev.underlying(host, "dm-0") == ("vda2",)
    assert blockdev.underlying(host, "dm-1") == ("vda2", "vdb")
    assert blockdev.read(host, "vda2").holders == ("dm-0",)


# -- probe -----------------------------------------------------------------------------------
def test_probe_parses_blkid_udev_output(fs):
    host = FakeHost()
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="a\\x20b", uuid="1234-abcd"))
    sig = blockdev.probe(host, "vdb")
    assert host.commands == [["blkid", "-p", "-o", "udev", "/dev/vdb"]]
    assert (sig.fstype, sig.usage, sig.uuid, sig.label) == ("ext4", "filesystem", "1234-abcd",
                                                           b"a b")
    assert not sig.ambivalent and sig.error is None


def udev_database(fs, devno: str, lines: str) -> None:
    fs.create_file(f"/run/udev/data/b{devno}", contents=lines)


def test_probe_takes_udevs_probe_from_its_database_without_a_process(fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    udev_database(fs, "253:16", "S:disk/by-label/a\\x20b\nE:ID_FS_TYPE=ext4\nE:ID_FS_USAGE=filesystem\n"
                                "E:ID_FS_LABEL_ENC=a\\x20b\nE:ID_FS_UUID=1234-abcd\n"
                                "E:ID_PATH=pci-0000:00:05.0\nE:DEVLINKS=/dev/disk/by-label/a\\x20b\n")
    host = FakeHost()
    sig = blockdev.probe(host, "vdb")
    assert host.commands == []
    assert (sig.fstype, sig.usage, sig.uuid, sig.label) == ("ext4", "filesystem", "1234-abcd",
                                                           b"a b")
    assert set(sig.properties) == {"ID_FS_TYPE", "ID_FS_USAGE", "ID_FS_LABEL_ENC", "ID_FS_UUID"}


def test_a_partitions_udev_record_is_not_its_probe(fs):
    """udev copies the disk's ID_* keys into its partitions' records (60-persistent-storage's
    IMPORT{parent}): a blank gandiswap partition would read as holding a partition table."""
    add_disk(fs, "vdb", "253:16", 2097152, partitions=[("vdb1", "253:17", 2048)])
    udev_database(fs, "253:17", "E:ID_PART_TABLE_TYPE=gpt\nE:ID_PART_ENTRY_NAME=gandiswap\n")
    host = FakeHost()
    host.signatures["vdb1"] = (2, "")
    assert blockdev.probe(host, "vdb1").partition_table == ""
    assert host.commands == [["blkid", "-p", "-o", "udev", "/dev/vdb1"]]


@pytest.mark.parametrize("database", [None, "E:ID_PATH=pci-0000:00:05.0\n"],
                         ids=["not-processed-by-udev", "nothing-found-by-udev"])
def test_probe_asks_blkid_when_udev_has_no_answer(fs, database):
    """A blank disk, an ambivalent one (udev records nothing for either), or udev not there yet."""
    add_disk(fs, "vdb", "253:16", 2097152)
    if database is not None:
        udev_database(fs, "253:16", database)
    host = FakeHost()
    host.signatures["vdb"] = (8, blkid_udev("ext4"))
    assert blockdev.probe(host, "vdb").ambivalent
    assert host.commands == [["blkid", "-p", "-o", "udev", "/dev/vdb"]]


def test_probe_nothing_found_ambivalent_and_errors(fs):
    host = FakeHost()
    assert blockdev.probe(host, "vdb") == blockdev.Signature()  # exit 2: nothing found
    assert blockdev.probe(host, "vdb").label is None
    host.signatures["vdb"] = (8, blkid_udev("ext4") + "ID_FS_AMBIVALENT=filesystem:ext4\n")
    assert blockdev.probe(host, "vdb").ambivalent
    host.signatures["vdb"] = (4, "")
    assert blockdev.probe(host, "vdb").error == "exit status 4"


# -- hostile input (issue 11) ----------------------------------------------------------------
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\x0c"])
def test_probe_keeps_a_label_whole_whatever_it_holds(fs, char):
    # blkid escapes whitespace in ID_FS_LABEL_ENC but passes other valid UTF-8 through: only
    # "\n" ends a property line.
    host = FakeHost()
    host.signatures["vdb"] = (0, blkid_udev("ext4", label=f"a{char}b", uuid="1234"))
    sig = blockdev.probe(host, "vdb")
    assert sig.label == f"a{char}b".encode()
    assert (sig.fstype, sig.uuid) == ("ext4", "1234")


@pytest.mark.parametrize("garbage", ["\u00b2", "\u0663", "+7", " 7 7", "1_000", "-1", "0x10",
                                     "9" * 4400, "\x00"])
def test_read_takes_only_kernel_numbers(fs, garbage, caplog):
    add_disk(fs, "vdc", "253:32", 4194304, partitions=[("vdc1", "253:33", 2048)])
    for attribute in ("/sys/class/block/vdc/size", "/sys/class/block/vdc1/partition"):
        with open(attribute, "w", encoding="utf-8") as f:
            f.write(garbage + "\n")
    host = Host(root="/")
    assert blockdev.read(host, "vdc").size == 0
    part = blockdev.read(host, "vdc1")
    assert (part.partition_number, part.disk, part.size) == (None, "vdc", 2048 * 512)
    assert "/sys/class/block/vdc/size" in caplog.text  # one line naming the file
