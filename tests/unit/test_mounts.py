"""mounts: the kernel's mount and swap tables and /etc/fstab, with their octal escapes."""

from __future__ import annotations

import pytest

from gandi_vm import mounts
from gandi_vm.host import Host
from gandi_vm.mounts import FstabEntry, Mount

# As the kernel writes it: optional fields (shared:, master:, none at all) before " - ".
MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:5 / /run rw,nosuid,nodev shared:5 master:2 - tmpfs tmpfs rw,size=401316k,mode=755
31 22 253:32 / /srv/my\\040data rw,nosuid,nodev,noatime - ext4 /dev/vdc rw
32 22 253:48 / /srv/tab\\011and\\134slash rw shared:40 - xfs /dev/disk/by-label/a\\040b rw
33 22 253:48 /sub /srv/bind rw shared:41 propagate_from:1 unbindable - xfs /dev/vdd rw
garbage line without separator
34 22 253:64 / /srv/data rw - ext4 /dev/vde rw
35 22 253:80 / /srv/data rw - ext4 /dev/vdf rw
"""


def test_unescape():
    assert mounts.unescape("/srv/my\\040data") == "/srv/my data"
    assert mounts.unescape("a\\011b\\012c\\134d") == "a\tb\nc\\d"
    assert mounts.unescape("plain") == "plain"
    assert mounts.unescape("\\303\\251t\\303\\251") == "\u00e9t\u00e9"  # UTF-8 bytes, escaped


def test_mount_table(fs):
    fs.create_file("/proc/self/mountinfo", contents=MOUNTINFO)
    table = mounts.mount_table(Host(root="/"))
    assert table == [
        Mount("253:1", "/", "ext4", "/dev/vda1"),
        Mount("0:22", "/proc", "proc", "proc"),
        Mount("0:5", "/run", "tmpfs", "tmpfs"),
        Mount("253:32", "/srv/my data", "ext4", "/dev/vdc"),
        Mount("253:48", "/srv/tab\tand\\slash", "xfs", "/dev/disk/by-label/a b"),
        Mount("253:48", "/srv/bind", "xfs", "/dev/vdd"),
        Mount("253:64", "/srv/data", "ext4", "/dev/vde"),
        Mount("253:80", "/srv/data", "ext4", "/dev/vdf"),
    ]


def test_of_device_and_mount_at(fs):
    fs.create_file("/proc/self/mountinfo", contents=MOUNTINFO)
    host = Host(root="/")
    table = mounts.mount_table(host)
    assert [m.mountpoint for m in mounts.of_device(table, "253:48", "vdd")] == [
        "/srv/tab\tand\\slash", "/srv/bind"]
    assert mounts.of_device(table, "9:9", "vdz") == []
    # btrfs shows an anonymous 0:NN device number: the source path identifies the device.
    assert [m.mountpoint for m in mounts.of_device(table, "9:9", "vdc")] == ["/srv/my data"]
    # Two mounts stacked on one path: the visible one is the last.
    assert mounts.mount_at(host, "/srv/data").devno == "253:80"
    assert mounts.mount_at(host, "/srv/my data").source == "/dev/vdc"
    assert mounts.mount_at(host, "/srv/nothing") is None


def test_active_swaps(fs):
    fs.create_file("/proc/swaps", contents=(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/dev/vdc2                               partition\t2097148\t\t0\t\t-2\n"
        "/swap\\040file                          file\t\t1048572\t\t0\t\t-3\n"
        "\n"
    ))
    assert mounts.active_swaps(Host(root="/")) == ["/dev/vdc2", "/swap file"]


def test_active_swaps_without_proc_swaps(fs):
    assert mounts.active_swaps(Host(root="/")) == []


def test_fstab(fs):
    fs.create_file("/etc/fstab", contents=(
        "# /etc/fstab: static file system information.\n"
        "#\n"
        "# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n"
        "UUID=0a1b2c3d-0000-4000-8000-00000000beef / ext4 errors=remount-ro 0 1\n"
        "\n"
        "   # an indented comment\n"
        "LABEL=my\\040data\t/mnt/my\\040data\text4\tdefaults\t0\t2\n"
        "/dev/vdb /data xfs defaults,nofail 0 0\n"
        "lonelyfield\n"
        "#/dev/vdc /old ext4 defaults 0 0\n"
    ))
    assert mounts.fstab(Host(root="/")) == [
        FstabEntry(4, "UUID=0a1b2c3d-0000-4000-8000-00000000beef", "/", ("errors=remount-ro",)),
        FstabEntry(7, "LABEL=my data", "/mnt/my data", ("defaults",)),
        FstabEntry(8, "/dev/vdb", "/data", ("defaults", "nofail")),
    ]


def test_fstab_options_default_when_the_field_is_missing(fs):
    # mount(8) takes a two-field line as "defaults"; an option is what x-gandi.nogrow looks for.
    fs.create_file("/etc/fstab", contents="/dev/vdb /data\n/dev/vdc /x ext4 x-gandi.nogrow,ro\n")
    assert [e.options for e in mounts.fstab(Host(root="/"))] == [("defaults",),
                                                                   ("x-gandi.nogrow", "ro")]


def test_fstab_missing(fs):
    assert mounts.fstab(Host(root="/")) == []


# -- hostile input (issue 11) ----------------------------------------------------------------
@pytest.mark.parametrize("text", ["/srv/Donn\u00e9es", "/srv/\u0414\u0430\u043d\u043d\u044b\u0435",
                                  "/srv/\u6570\u636e", "/srv/\U0001f4be", "/srv/bad\udcff"])
def test_unescape_leaves_decoded_text_as_it_is(text):
    # The file was decoded as UTF-8 already: re-reading it as latin-1 disowned `/srv/Données`
    # (`Donn\udce9es`) and raised UnicodeEncodeError on Cyrillic.
    assert mounts.unescape(text) == text
    assert mounts.unescape(text + "\\040x") == text + " x"


def test_unescape_decodes_escapes_as_bytes():
    assert mounts.unescape("caf\\303\\251") == "caf\u00e9"
    assert mounts.unescape("\\377") == "\udcff"  # an undecodable byte stays that byte
    assert mounts.unescape("\\0") == "\\0" and mounts.unescape("\\08x") == "\\08x"
    assert mounts.unescape("\\777") == "\udcff"  # low byte, as libmount's unmangle


def test_fstab_with_non_ascii_labels(fs):
    fs.create_file("/etc/fstab", contents=(
        "LABEL=\u0414\u0430\u043d\u043d\u044b\u0435 /data ext4 defaults 0 2\n"
        "LABEL=caf\u00e9 /srv/caf\\303\\251 ext4 defaults 0 2\n"
    ), encoding="utf-8")
    assert mounts.fstab(Host(root="/")) == [
        FstabEntry(1, "LABEL=\u0414\u0430\u043d\u043d\u044b\u0435", "/data", ("defaults",)),
        FstabEntry(2, "LABEL=caf\u00e9", "/srv/caf\u00e9", ("defaults",)),
    ]


# Characters str.splitlines() and str.split() take for line or field breaks, the kernel and
# libmount do not: none of them is escaped in a path. The kernel does not escape "\r" either
# (Host.read_text once turned it into "\n", by Python's universal newlines).
BREAKS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029"]
KERNEL_BREAKS = ["\r", *BREAKS]


@pytest.mark.parametrize("char", KERNEL_BREAKS)
def test_mountinfo_lines_end_at_newline_only(fs, char):
    fs.create_file("/proc/self/mountinfo", contents=(
        f"31 22 253:32 / /srv/a{char}b rw - ext4 /dev/vdc rw\n"), encoding="utf-8")
    assert mounts.mount_table(Host(root="/")) == [Mount("253:32", f"/srv/a{char}b", "ext4",
                                                        "/dev/vdc")]


@pytest.mark.parametrize("char", KERNEL_BREAKS)
def test_swaps_paths_keep_their_odd_characters(fs, char):
    fs.create_file("/proc/swaps", contents=(
        "Filename\tType\tSize\tUsed\tPriority\n"
        f"/swap{char}file\tfile\t1048572\t0\t-3\n"), encoding="utf-8")
    assert mounts.active_swaps(Host(root="/")) == [f"/swap{char}file"]


@pytest.mark.parametrize("char", BREAKS)
def test_fstab_rows_split_as_libmount_splits_them(fs, char):
    fs.create_file("/etc/fstab", contents=(
        f"LABEL=a{char}b /mnt/x{char}y ext4 defaults 0 2\n"
        "/dev/vdb /data xfs defaults 0 0\n"), encoding="utf-8")
    assert mounts.fstab(Host(root="/")) == [
        FstabEntry(1, f"LABEL=a{char}b", f"/mnt/x{char}y", ("defaults",)),
        FstabEntry(2, "/dev/vdb", "/data", ("defaults",))]
