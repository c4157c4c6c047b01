"""grow.py: the decisions (which layer grows, into what, or why not) and the acting path, on a
fake guest whose disks hold real headers (GPT and MBR tables, ext4/XFS/btrfs superblocks, LVM
labels and metadata areas, built with struct in fakesys.py) and whose grow tools are simulated:
growpart, pvresize, lvextend, resize2fs, xfs_growfs and btrfs change the sizes, metadata and
superblocks the next inspection reads, so a test sees what a real run would leave behind, and in
which order it ran."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
from gandi_vm.record import replace
from typing import Dict, List, Optional, Sequence, Tuple

import pytest
import yaml
from fakesys import (LVM_MDA, LVM_MDA_HEADER, LVM_MDA_MAGIC, PV_UUID, FakeHost, add_disk, add_dm,
                     btrfs_superblock, ext4_superblock, gpt, gpt_usable_end, lvm_crc, lvm_dashed,
                     lvm_mda, lvm_mda_header, lvm_mda_pieces, lvm_pv, lvm_pv_label, lvm_vg_text,
                     mbr, set_attr, set_size, write_device, write_mountinfo, write_swaps,
                     xfs_superblock)

from gandi_vm import cli, disk, grow, mounts
from gandi_vm.blockdev import NoSuchDevice
from gandi_vm.config import Settings
from gandi_vm.host import Result

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
SETTINGS = Settings()
LV_SETTINGS = replace(SETTINGS, grow_root_lv=True)
EXTENT = 4 * MiB
LV_UUID = "LVM-" + "A" * 32 + "B" * 32
# Where each filesystem keeps the superblock grow.py reads, and how to build one.
SUPERBLOCK = {"ext4": (1024, ext4_superblock), "ext3": (1024, ext4_superblock),
              "ext2": (1024, ext4_superblock),
              "xfs": (0, xfs_superblock), "btrfs": (65536, btrfs_superblock)}


# -- the fake guest -----------------------------------------------------------------------------------
def read_sectors(name: str, attr: str = "size", root: str = "/") -> int:
    with open(os.path.join(root, f"sys/class/block/{name}/{attr}"), encoding="utf-8") as f:
        return int(f.read())


def read_device(name: str, size: int, offset: int = 0, root: str = "/") -> bytes:
    with open(os.path.join(root, f"dev/{name}"), "rb") as f:
        f.seek(offset)
        return f.read(size)


def ext4_size(name: str, root: str = "/") -> int:
    """What the ext4 superblock on the device says (independent of grow.filesystem_size)."""
    sb = read_device(name, 1024, 1024, root)
    low, log, high = (struct.unpack_from("<I", sb, 4)[0], struct.unpack_from("<I", sb, 0x18)[0],
                      struct.unpack_from("<I", sb, 0x150)[0])
    return ((high << 32) | low) * (1024 << log)


class Guest:
    """Disks, mounts and fstab of a fake guest under `root`, and its grow tools.

    Each tool does to the fake what the real one does to a disk: growpart moves the partition's
    end to where the table lets it (`usable`, computed here from the table's layout, not by
    grow.py), pvresize records the device size as the PV's dev_size in a new copy of the volume
    group's metadata, written after the old one in the metadata area's circular buffer (the
    label keeps the size pvcreate saw), lvextend gives the LV every free extent the metadata
    counts, resize2fs and btrfs rewrite their superblock to the device size, and xfs_growfs
    changes what statfs says (XFS's superblock on disk lags behind a grow)."""

    def __init__(self, fs, root: str = "/", dry_run: bool = False):
        self.fs, self.root = fs, root
        self.plan = io.StringIO()
        self.host = FakeHost(root, dry_run=dry_run, plan=self.plan)
        self.mounts: List[Tuple[str, str, str, str]] = []
        self.usable: Dict[str, int] = {}  # disk -> where its last partition may end
        self.block: Dict[str, int] = {}  # device -> its filesystem's block size
        self.mounted: Dict[str, str] = {}  # mountpoint -> device
        self.lvs: Dict[str, Tuple[str, str]] = {}  # "vg/lv" -> (dm device, physical volume)
        self.mda: Dict[str, Tuple[int, int]] = {}  # physical volume -> its metadata area
        self.failing: Dict[str, Result] = {}  # program -> the failure it answers with
        self.inert: set = set()  # programs that exit 0 and change nothing
        self.put("/etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n")
        write_mountinfo(fs, [], root=root)
        write_swaps(fs, [], root=root)
        for program in ("growpart", "pvresize", "lvextend", "resize2fs", "xfs_growfs", "btrfs"):
            self.host.handlers[program] = self.tool

    # -- building ---------------------------------------------------------------------------------
    def put(self, guest_path: str, text: str) -> None:
        path = os.path.join(self.root, guest_path.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def disk(self, name: str, major: int, size: int,
             parts: Sequence[Tuple[int, int]] = (), table: str = "gpt", block: int = 512,
             entries: int = 128, entry_size: int = 128, head: Optional[bytes] = None) -> None:
        """A disk of `size` bytes with partitions (start, size) in bytes, numbered 1, 2, ..."""
        add_disk(self.fs, name, f"{major}:0", size // 512,
                 partitions=[(f"{name}{n}", f"{major}:{n}", psize // 512)
                             for n, (_, psize) in enumerate(parts, 1)], root=self.root)
        for n, (start, _) in enumerate(parts, 1):
            set_attr(f"{name}{n}", "start", start // 512, root=self.root)
        set_attr(name, "queue/logical_block_size", block, root=self.root)
        if not parts:
            return
        if head is None:
            if table == "gpt":
                head = gpt(size, block, entries, entry_size)
            else:
                head = mbr([(0x83, start // 512, psize // 512) for start, psize in parts[:4]])
        write_device(name, head, root=self.root)
        self.usable[name] = (gpt_usable_end(size, block, entries, entry_size) if table == "gpt"
                             else min(size, (1 << 32) * block))

    def enlarge(self, name: str, size: int) -> None:
        """The platform enlarges a GPT disk: growpart may then take it to its new end."""
        set_size(name, size // 512, root=self.root)
        self.usable[name] = gpt_usable_end(size)

    def filesystem(self, device: str, devno: str, fstype: str, size: int, mountpoint: str,
                   source: str = "", block: int = 4096) -> None:
        """A mounted filesystem of `size` bytes on the device."""
        self.block[device] = block
        self.write_superblock(device, fstype, size)
        if fstype == "xfs":
            self.host.statfs[mountpoint] = (size // block - 2560, block)
        self.mounted[mountpoint] = device
        self.mounts.append((devno, mountpoint, fstype, source or f"/dev/{device}"))
        write_mountinfo(self.fs, self.mounts, root=self.root)

    def write_superblock(self, device: str, fstype: str, size: int) -> None:
        offset, build = SUPERBLOCK[fstype]
        block = self.block.get(device, 4096)
        size = size // block * block
        write_device(device, build(size, block) if fstype != "btrfs" else build(size),
                     offset, root=self.root)

    def record(self, device: str, mountpoint: str, fstype: str = "ext4") -> None:
        """The record of a disk gandi attached (state.py's format)."""
        self.put(f"/run/gandi/disk/{device}.json", json.dumps(
            {"device": device, "fstype": fstype, "mountpoint": mountpoint, "ours": True,
             "state": "mounted", "reason": f"mounted on {mountpoint}"}))

    def lvm(self, pv: str, lv: str = "dm-0", dm_name: str = "my--vg-root",
            uuid: str = LV_UUID, lv_size: Optional[int] = None,
            slaves: Sequence[str] = (), label_size: Optional[int] = None,
            dev_size: Optional[int] = None, metadata: Tuple[int, int] = LVM_MDA,
            at: int = LVM_MDA_HEADER, extent: int = EXTENT) -> None:
        """A physical volume on `pv`: its label records `label_size` (pvcreate's; default its
        current size), its volume group's metadata `dev_size` (default its current size) and
        `extent`; one LV using all its extents (or lv_size bytes), device-mapper device `lv` on
        `slaves` (default: the PV alone)."""
        pv_size = read_sectors(pv, root=self.root) * 512
        dev_size = pv_size if dev_size is None else dev_size
        if lv_size is None:
            lv_size = (dev_size - MiB) // extent * extent
        write_device(pv, lvm_pv(pv_size if label_size is None else label_size, dev_size,
                                extent=extent, metadata=metadata, at=at,
                                lv_extents=lv_size // extent,
                                device=f"/dev/{pv}"), root=self.root)
        self.mda[pv] = metadata
        add_dm(self.fs, lv, f"252:{lv[3:]}", lv_size // 512, slaves=slaves or [pv],
               root=self.root)
        set_attr(lv, "dm/uuid", uuid, root=self.root)
        set_attr(lv, "dm/name", dm_name, root=self.root)
        self.lvs[dm_name.replace("--", "\0").replace("-", "/").replace("\0", "-")] = (lv, pv)

    def fstab(self, *lines: str) -> None:
        self.put("/etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                 + "".join(line + "\n" for line in lines))

    # -- looking --------------------------------------------------------------------------------------
    def size(self, name: str) -> int:
        return read_sectors(name, root=self.root) * 512

    def fs_size(self, device: str) -> int:
        return ext4_size(device, self.root)

    def metadata(self, pv: str) -> Tuple[str, int, int]:
        """The PV's current metadata text, where it starts in its area and its length (read
        here from the area's header, independently of grow.py)."""
        area, area_size = self.mda[pv]
        header = read_device(pv, LVM_MDA_HEADER, area, self.root)
        assert header[4:20] == LVM_MDA_MAGIC, header[:20]
        at, size = struct.unpack_from("<QQ", header, 40)
        text = b"".join(read_device(pv, len(piece), area + offset, self.root)
                        for offset, piece in lvm_mda_pieces(bytes(size), area_size, at))
        return text.decode(), at, size

    def recorded(self, pv: str, key: str) -> int:
        """A PV's number in its (one-PV) volume group's metadata, in bytes: dev_size, pe_start,
        extent_size."""
        values = re.findall(rf"^\s*{key} = (\d+)", self.metadata(pv)[0], re.MULTILINE)
        assert len(values) == 1, (key, values)
        return int(values[0]) * 512

    def write_metadata(self, pv: str, text: str) -> None:
        """A new copy of the metadata, after the old one in the circular buffer (from the
        area's start, past its header, when the old one reached its end), as LVM commits it."""
        area, area_size = self.mda[pv]
        _, at, size = self.metadata(pv)
        end = at + size
        if end >= area_size:
            end += LVM_MDA_HEADER - area_size
        at = -(-end // 512) * 512
        data = text.encode()
        assert len(data) <= area_size - LVM_MDA_HEADER
        for offset, piece in lvm_mda_pieces(data, area_size, at):
            write_device(pv, piece, area + offset, root=self.root)
        write_device(pv, lvm_mda_header(area, area_size, at, len(data), lvm_crc(data)), area,
                     root=self.root)

    def commands(self) -> List[List[str]]:
        return self.host.commands

    # -- the tools -----------------------------------------------------------------------------------
    def tool(self, argv: List[str]) -> Result:
        program = os.path.basename(argv[0])
        if program in self.failing:
            return replace(self.failing[program], argv=argv)
        if program in self.inert:
            return Result(argv, 0)
        return getattr(self, program)(argv)

    def growpart(self, argv: List[str]) -> Result:
        name, number = os.path.basename(argv[1]), argv[2]
        part = f"{name}{number}"
        start = read_sectors(part, "start", self.root) * 512
        old, new = self.size(part), self.usable[name] - start
        if new <= old:
            return Result(argv, 1, stdout=f"NOCHANGE: partition {number} is size {old // 512}. "
                          "it cannot be grown")
        set_size(part, new // 512, root=self.root)
        return Result(argv, 0, stdout=f"CHANGED: partition={number} start={start // 512} "
                      f"old: size={old // 512} end={(start + old) // 512} new: size={new // 512} "
                      f"end={(start + new) // 512}")

    def pvresize(self, argv: List[str]) -> Result:
        pv = os.path.basename(argv[1])
        text, _, _ = self.metadata(pv)
        size, pe_start, extent = (self.size(pv), self.recorded(pv, "pe_start"),
                                  self.recorded(pv, "extent_size"))
        text = re.sub(r"^(\s*)dev_size = \d+.*$", rf"\g<1>dev_size = {size // 512}", text,
                      flags=re.MULTILINE)
        text = re.sub(r"^(\s*)pe_count = \d+.*$",
                      rf"\g<1>pe_count = {(size - pe_start) // extent}", text, flags=re.MULTILINE)
        text = re.sub(r"^(\s*)seqno = (\d+)", lambda m: f"{m[1]}seqno = {int(m[2]) + 1}", text,
                      count=1, flags=re.MULTILINE)
        self.write_metadata(pv, text)
        return Result(argv, 0, stdout=f"  Physical volume \"{argv[1]}\" changed\n")

    def lvextend(self, argv: List[str]) -> Result:
        assert argv[1:3] == ["-l", "+100%FREE"], argv
        lv, pv = self.lvs[argv[3]]
        dev_size, pe_start, extent = (self.recorded(pv, key)
                                      for key in ("dev_size", "pe_start", "extent_size"))
        holders = os.listdir(os.path.join(self.root, f"sys/class/block/{pv}/holders"))
        others = sum(self.size(other) for other in holders if other != lv)
        set_size(lv, ((dev_size - pe_start) // extent * extent - others) // 512, root=self.root)
        return Result(argv, 0, stdout=f"  Logical volume {argv[3]} successfully resized.\n")

    def resize2fs(self, argv: List[str]) -> Result:
        device = os.path.basename(argv[1])
        self.write_superblock(device, "ext4", self.size(device))
        return Result(argv, 0, stdout=f"The filesystem on {argv[1]} is now ... blocks long.\n")

    def xfs_growfs(self, argv: List[str]) -> Result:
        assert argv[1] == "-d", argv
        mountpoint = self.host.guest(argv[2])
        device = self.mounted[mountpoint]
        block = self.block[device]
        self.host.statfs[mountpoint] = (self.size(device) // block - 2560, block)
        return Result(argv, 0, stdout="data blocks changed from ... to ...\n")

    def btrfs(self, argv: List[str]) -> Result:
        assert argv[1:3] == ["filesystem", "resize"], argv
        device = self.mounted[self.host.guest(argv[4])]
        devid, _, amount = argv[3].partition(":")
        assert (devid, amount) == ("1", "max"), argv
        self.write_superblock(device, "btrfs", self.size(device))
        return Result(argv, 0, stdout=f"Resize device id {devid} ({argv[4]}) from ... to max\n")


def btrfs_size(guest: Guest, device: str) -> int:
    return struct.unpack_from("<Q", read_device(device, 8, 65536 + 0xC9 + 8, guest.root))[0]


# Each disk its own major number, as the fake sysfs links /sys/dev/block/MAJOR:MINOR.
MAJOR = {"vda": 253, "vdb": 254, "vdc": 255, "vdd": 256}


@pytest.fixture
def guest(fs) -> Guest:
    return Guest(fs)


def grown_root(guest: Guest, old: int = 10 * GiB, new: int = 20 * GiB, table: str = "gpt",
               block: int = 512, fstype: str = "ext4") -> Tuple[int, int]:
    """vda, made as an image of `old` bytes whose vda1 (from 1 MiB) holds / and reaches the end
    the table allowed then, enlarged to `new`. Returns (vda1's start, its size)."""
    entries = 128
    old_end = gpt_usable_end(old, block, entries) if table == "gpt" else min(old, 2 * TiB)
    start = MiB
    guest.disk("vda", 253, new, [(start, old_end - start)], table=table, block=block)
    guest.filesystem("vda1", "253:1", fstype, old_end - start, "/")
    guest.fstab("/dev/vda1 / ext4 errors=remount-ro 0 1")
    return start, old_end - start


def lvm_root(guest: Guest, grown: bool = True, **lvm) -> None:
    """vda (GPT): vda1 holds /boot, vda2 is the PV of my-vg, whose LV root holds / (ext4). The
    image was 10 GiB; the disk is 20 GiB when `grown`."""
    end = gpt_usable_end(10 * GiB)
    boot, pv = (MiB, 512 * MiB), (513 * MiB, end - 513 * MiB)
    guest.disk("vda", 253, 20 * GiB if grown else 10 * GiB, [boot, pv])
    guest.filesystem("vda1", "253:1", "ext4", 512 * MiB, "/boot")
    guest.lvm("vda2", **lvm)
    guest.filesystem("dm-0", "252:0", "ext4", guest.size("dm-0"), "/",
                     source="/dev/mapper/my--vg-root")


def data_disk(guest: Guest, fstype: str = "ext4", old: int = GiB, new: int = 2 * GiB,
              name: str = "vdb", mountpoint: str = "/srv/data", ours: bool = True) -> None:
    """A whole-disk filesystem gandi mounted (its record says so), its disk enlarged."""
    guest.disk(name, MAJOR[name], new)
    guest.filesystem(name, f"{MAJOR[name]}:0", fstype, old, mountpoint)
    if ours:
        guest.record(name, mountpoint, fstype)


def grow_record(device: str) -> Optional[dict]:
    path = f"/run/gandi/grow/{device}.json"
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# == the headers ====================================================================================
@pytest.mark.parametrize("block, entries, entry_size, backup_blocks", [
    (512, 128, 128, 33),  # the usual: 16 KiB of entries, 32 blocks, and the header
    (4096, 128, 128, 5),
    (512, 56, 128, 15),  # 7168 bytes: 14 blocks
    (4096, 56, 128, 3),  # 7168 bytes round up to 2 blocks of 4 KiB
    (512, 128, 256, 65),
])
def test_gpt_leaves_the_backup_entries_and_header_at_the_end(block, entries, entry_size,
                                                             backup_blocks):
    disk_size = 20 * GiB
    head = gpt(disk_size, block, entries, entry_size)
    assert grow.partition_table(head, disk_size, block) == (
        "gpt", disk_size - backup_blocks * block)


@pytest.mark.parametrize("disk_size, block, end", [
    (10 * GiB, 512, 10 * GiB),
    (3 * TiB, 512, 2 * TiB),  # 2^32 sectors of 512 bytes: all an MBR can address
    (3 * TiB, 4096, 3 * TiB),  # 2^32 blocks of 4 KiB: 16 TiB
])
def test_an_mbr_ends_at_the_disk_or_at_2_to_the_32_blocks(disk_size, block, end):
    head = mbr([(0x83, 2048, 2 ** 31)]).ljust(2 * block, b"\0")
    assert grow.partition_table(head, disk_size, block) == ("dos", end)


def corrupt(head: bytes, offset: int, value: bytes) -> bytes:
    return head[:offset] + value + head[offset + len(value):]


GOOD = gpt(20 * GiB)


@pytest.mark.parametrize("head, why", [
    (GOOD[:510] + b"\0\0" + GOOD[512:], "no partition table signature"),
    (b"\0" * 1024, "no partition table signature"),
    (GOOD[:300], "no partition table signature"),
    (gpt(20 * GiB, header=False), "protective MBR without a GPT header"),
    (GOOD[:600], "protective MBR without a GPT header"),  # the header cut short
    (gpt(20 * GiB, good_crc=False), "GPT header checksum mismatch"),
    (corrupt(GOOD, 512 + 40, b"\xff"), "GPT header checksum mismatch"),  # a bit flipped
    (corrupt(GOOD, 512 + 12, struct.pack("<I", 91)), "GPT header size 91 is invalid"),
    (corrupt(GOOD, 512 + 12, struct.pack("<I", 513)), "GPT header size 513 is invalid"),
])
def test_a_table_that_does_not_check_out_is_refused(head, why):
    with pytest.raises(grow.Refused) as refused:
        grow.partition_table(head, 20 * GiB, 512)
    assert str(refused.value) == why


@pytest.mark.parametrize("entries, entry_size", [(128, 64), (128, 130), (1 << 20, 128)])
def test_an_entry_array_that_makes_no_sense_is_refused(entries, entry_size):
    with pytest.raises(grow.Refused, match=f"GPT entry array of {entries} x {entry_size} bytes"):
        grow.partition_table(gpt(20 * GiB, 512, entries, entry_size), 20 * GiB, 512)


@pytest.mark.parametrize("fstype, size, block", [
    ("ext4", 10 * GiB, 4096), ("ext2", 100 * MiB, 1024), ("ext3", 64 * MiB, 2048),
    ("ext4", 20 * TiB, 4096),  # past 2^32 blocks: the high half counts
    ("xfs", 10 * GiB, 4096), ("xfs", 1 * GiB, 512), ("btrfs", 7 * GiB + 12345, 0),
])
def test_filesystem_sizes_from_their_superblocks(fstype, size, block):
    offset, build = SUPERBLOCK[fstype]
    superblock = build(size) if fstype == "btrfs" else build(size, block)
    expected = size if fstype == "btrfs" else size // block * block
    assert grow.filesystem_size(fstype, superblock) == (expected, 1 if fstype == "btrfs" else 0)
    assert grow.superblock_at(fstype) == (offset, len(superblock))


def test_an_ext4_without_the_64bit_feature_ignores_the_high_half():
    sb = bytearray(ext4_superblock(10 * GiB))
    struct.pack_into("<I", sb, 0x60, 0x40)
    struct.pack_into("<I", sb, 0x150, 7)  # garbage where a 32-bit ext4 has no field
    assert grow.filesystem_size("ext4", bytes(sb)) == (10 * GiB, 0)


def test_btrfs_gives_the_device_id_to_resize():
    assert grow.filesystem_size("btrfs", btrfs_superblock(5 * GiB, devid=3)) == (5 * GiB, 3)


def test_an_xfs_internal_log_is_counted():
    assert grow.xfs_log_blocks(xfs_superblock(GiB, log_blocks=2560)) == 2560
    assert grow.xfs_log_blocks(xfs_superblock(GiB, log_blocks=0)) == 0  # an external log


@pytest.mark.parametrize("fstype, superblock, why", [
    ("ext4", bytes(1024), "no ext4 superblock"),
    ("ext4", ext4_superblock(GiB)[:0x150], "no ext4 superblock"),
    ("ext4", corrupt(ext4_superblock(GiB), 0x18, struct.pack("<I", 7)),
     "ext4 block size 2^17 is invalid"),
    ("xfs", ext4_superblock(GiB), "no xfs superblock"),
    ("xfs", xfs_superblock(GiB)[:99], "no xfs superblock"),
    ("xfs", xfs_superblock(GiB, block=3000), "xfs block size 3000 is invalid"),
    ("xfs", xfs_superblock(GiB, block=1 << 17), "xfs block size 131072 is invalid"),
    ("btrfs", bytes(4096), "no btrfs superblock"),
    ("btrfs", btrfs_superblock(GiB)[:0xD8], "no btrfs superblock"),
    ("vfat", bytes(1024), "vfat cannot be grown online"),
    ("f2fs", ext4_superblock(GiB), "f2fs cannot be grown online"),
])
def test_a_superblock_that_does_not_check_out_is_refused(fstype, superblock, why):
    with pytest.raises(grow.Refused) as refused:
        grow.filesystem_size(fstype, superblock)
    assert str(refused.value) == why


@pytest.mark.parametrize("sector", [0, 1, 3])
def test_the_lvm_label_in_any_of_the_first_four_sectors(sector):
    head = lvm_pv_label(30 * GiB, pe_start=MiB, sector=sector).ljust(2048, b"\0")
    assert grow.lvm_label(head) == grow.PvLabel(PV_UUID, 30 * GiB, MiB, LVM_MDA)


@pytest.mark.parametrize("metadata, found", [
    (LVM_MDA, LVM_MDA),
    ((7 * 512, 2 * MiB), (7 * 512, 2 * MiB)),
    (None, (0, 0)),  # pvcreate --metadatacopies 0: the list holds its zero entry alone
])
def test_the_lvm_label_gives_the_first_metadata_area(metadata, found):
    head = lvm_pv_label(GiB, metadata=metadata).ljust(2048, b"\0")
    assert grow.lvm_label(head).metadata == found


def test_a_pv_header_cut_by_its_sector_has_no_metadata_area():
    # At offset 440, the uuid, size, data area and its list's end fill the sector.
    head = lvm_pv_label(GiB, offset=440).ljust(2048, b"\0")
    assert grow.lvm_label(head) == grow.PvLabel(PV_UUID, GiB, MiB, (0, 0))


@pytest.mark.parametrize("head", [
    bytes(2048),
    lvm_pv_label(GiB, sector=4).ljust(4096, b"\0"),  # past the first four sectors
    corrupt(lvm_pv_label(GiB).ljust(2048, b"\0"), 512 + 24, b"LVM1 001"),
    lvm_pv_label(GiB, offset=8).ljust(2048, b"\0"),  # the header overlapping the label
    lvm_pv_label(GiB, offset=460).ljust(2048, b"\0")[:2048],  # past the sector
])
def test_no_lvm_label_is_refused(head):
    with pytest.raises(grow.Refused, match="no LVM2 label"):
        grow.lvm_label(head)


def test_a_truncated_lvm_label_is_refused():
    # A label cut short after its magic (fewer bytes than its PV header offset + 56) once raised
    # struct.error.
    with pytest.raises(grow.Refused):
        grow.lvm_label(lvm_pv_label(GiB)[:512 + 40])


# The metadata of a volume group as LVM writes it, from a real one (the brief's sample).
SAMPLE = """gvg {
id = "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG"
seqno = 5
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192\t# 4 Megabytes
physical_volumes {

pv0 {
id = "abcdef-ghij-klmn-opqr-stuv-wxyz-012345"
device = "/dev/vdb1"\t# Hint only
status = ["ALLOCATABLE"]
dev_size = 1046495\t# 510.984 Megabytes
pe_start = 2048
pe_count = 127\t# 508 Megabytes
}
}
logical_volumes { ... }
}
"""
SAMPLE_UUID = "abcdefghijklmnopqrstuvwxyz012345"


def test_pv_metadata_of_a_real_volume_group():
    assert grow.pv_metadata(SAMPLE, SAMPLE_UUID) == (1046495 * 512, 8192 * 512)


@pytest.mark.parametrize("indent", ["", "\t", "  "])
def test_pv_metadata_as_lvm_writes_it(indent):
    text = lvm_vg_text(20 * GiB + 512, extent=32 * MiB, indent=indent)
    assert grow.pv_metadata(text, PV_UUID) == (20 * GiB + 512, 32 * MiB)


def test_pv_metadata_is_this_pvs_not_another_one_of_its_volume_group():
    other = "otherpvotherpvotherpvotherpvothe"
    text = lvm_vg_text(3 * GiB, others=[(other, 7 * GiB)])
    assert text.index(lvm_dashed(other)) < text.index(lvm_dashed(PV_UUID))
    assert grow.pv_metadata(text, PV_UUID) == (3 * GiB, EXTENT)
    assert grow.pv_metadata(text, other) == (7 * GiB, EXTENT)


def test_pv_metadata_ignores_comments():
    text = SAMPLE.replace("dev_size = 1046495\t# 510.984 Megabytes",
                          "# dev_size = 99\ndev_size = 1046495\t# dev_size = 98")
    text = text.replace('id = "abcdef', '# id = "abcdef-ghij-klmn-opqr-stuv-wxyz-012345"\n'
                        'id = "abcdef')
    assert grow.pv_metadata(text, SAMPLE_UUID) == (1046495 * 512, 8192 * 512)
    # This PV's id in a comment only: it is not in the text.
    commented = SAMPLE.replace('id = "abcdef', '# id = "abcdef')
    with pytest.raises(grow.Refused):
        grow.pv_metadata(commented, SAMPLE_UUID)


@pytest.mark.parametrize("text", [
    SAMPLE.replace("abcdef-ghij", "abcdef-XXXX"),  # another PV's id
    SAMPLE.replace("dev_size = 1046495", "dev_size = lots"),
    SAMPLE.replace("dev_size = 1046495", "size = 1046495"),
    SAMPLE.replace("extent_size = 8192", "extent_size = 0"),
    SAMPLE.replace("extent_size = 8192", "extent_size = -8192"),
    SAMPLE.replace("extent_size = 8192\t# 4 Megabytes\n", ""),
    # dev_size after this PV's section closed: another section's
    SAMPLE.replace("dev_size = 1046495\t# 510.984 Megabytes\n", "").replace(
        "logical_volumes { ... }", "pv1 {\ndev_size = 1046495\n}"),
    "", "\0" * 100, "gvg {\n}\n",
])
def test_pv_metadata_without_this_pv_or_its_extent_size_is_refused(text):
    with pytest.raises(grow.Refused) as refused:
        grow.pv_metadata(text, SAMPLE_UUID)
    assert str(refused.value) == "physical volume not found in its volume group's metadata"


# A garbled dev_size or extent_size of more than 4300 digits (a metadata area holds up to 1 MiB
# of ASCII) once raised ValueError (Python's integer string limit), a non-decimal digit too.
@pytest.mark.parametrize("text", [
    SAMPLE.replace("dev_size = 1046495", "dev_size = " + "9" * 5000),
    SAMPLE.replace("extent_size = 8192", "extent_size = " + "1" * 5000),
    SAMPLE.replace("dev_size = 1046495", "dev_size = \u00b2"),  # isdigit, not a decimal
])
def test_pv_metadata_with_an_absurd_number_is_refused(text):
    with pytest.raises(grow.Refused):
        grow.pv_metadata(text, SAMPLE_UUID)


def mda_header(at: int, size: int, magic: bytes = LVM_MDA_MAGIC) -> bytes:
    return lvm_mda_header(LVM_MDA[0], LVM_MDA[1], at, size, 0, magic)


@pytest.mark.parametrize("at, size, area_size, ranges", [
    (512, 1126, LVM_MDA[1], [(512, 1126)]),
    (LVM_MDA[1] - 1126, 1126, LVM_MDA[1], [(LVM_MDA[1] - 1126, 1126)]),  # up to the end
    (LVM_MDA[1] - 100, 1126, LVM_MDA[1], [(LVM_MDA[1] - 100, 100), (512, 1026)]),  # wraps
    (4096 - 1, 3, 4096, [(4095, 1), (512, 2)]),
    (512, MiB, MiB + 512, [(512, MiB)]),  # the most metadata read
    (513, 4096 - 512, 4096, [(513, 4096 - 513), (512, 1)]),  # a full buffer
])
def test_metadata_ranges_in_the_circular_buffer(at, size, area_size, ranges):
    assert grow.metadata_ranges(mda_header(at, size), area_size) == ranges


@pytest.mark.parametrize("header, area_size, why", [
    (bytes(512), LVM_MDA[1], "no LVM2 metadata area header"),
    (mda_header(512, 100, b" LVM2 x[5A%r0N*<"), LVM_MDA[1], "no LVM2 metadata area header"),
    (mda_header(512, 100)[:63], LVM_MDA[1], "no LVM2 metadata area header"),
    (mda_header(512, 0), LVM_MDA[1], "LVM2 metadata location out of its area"),
    (mda_header(0, 100), LVM_MDA[1], "LVM2 metadata location out of its area"),  # the header
    (mda_header(511, 100), LVM_MDA[1], "LVM2 metadata location out of its area"),
    (mda_header(LVM_MDA[1], 100), LVM_MDA[1], "LVM2 metadata location out of its area"),
    (mda_header(512, MiB + 1), 4 * MiB, "LVM2 metadata location out of its area"),
    (mda_header(512, 4096 - 511), 4096, "LVM2 metadata location out of its area"),
    (mda_header(512, 1), 512, "LVM2 metadata location out of its area"),
    (mda_header(2 ** 64 - 1, 2 ** 64 - 1), LVM_MDA[1], "LVM2 metadata location out of its area"),
])
def test_a_metadata_area_header_that_does_not_check_out_is_refused(header, area_size, why):
    with pytest.raises(grow.Refused) as refused:
        grow.metadata_ranges(header, area_size)
    assert str(refused.value) == why


def test_a_wrapped_copy_reads_back_whole():
    text = lvm_vg_text(7 * GiB).encode()
    area = lvm_mda(text, at=LVM_MDA[1] - 300)
    ranges = grow.metadata_ranges(area[:LVM_MDA_HEADER], LVM_MDA[1])
    assert len(ranges) == 2
    assert b"".join(area[offset:offset + length] for offset, length in ranges) == text


@pytest.mark.parametrize("dm_name, name", [
    ("vg-root", "vg/root"),
    ("my--vg-root", "my-vg/root"),
    ("vg-my--root", "vg/my-root"),
    ("a--b--c-d--e", "a-b-c/d-e"),
    ("vg---root", "vg-/root"),  # vg "vg-": its dash doubled, then the separator
    ("vg_0.x+y-lv_1", "vg_0.x+y/lv_1"),
    ("vg", None), ("vg-", None), ("-root", None), ("vg--root", None), ("", None),
    ("vg-ro ot", None), ("vg-r/oot", None), ("vg-\u00e9", None), ("vg-root\n", None),
])
def test_lvm_names_from_device_mapper_names(dm_name, name):
    assert grow.lvm_name(dm_name) == name


# == the decisions (pure) ===========================================================================
def whole(fs_size: int, disk_size: int, fstype: str = "ext4", **kw) -> grow.Stack:
    return grow.Stack("/srv/data", fstype, device="vdb", disk="vdb", disk_size=disk_size,
                      fs_size=fs_size, **kw)


def on_partition(fs_size: int, start: int, size: int, usable_end: int, disk_size: int,
                 table: str = "gpt", number: int = 1, **kw) -> grow.Stack:
    part = grow.Partition(f"vda{number}", number, start, size, table, usable_end)
    return grow.Stack("/", "ext4", device=f"vda{number}", disk="vda", disk_size=disk_size,
                      fs_size=fs_size, partition=part, **kw)


def argvs(decided: grow.Plan) -> List[Tuple[str, ...]]:
    return [step.argv for step in decided.steps]


@pytest.mark.parametrize("fstype, argv", [
    ("ext4", ("resize2fs", "/dev/vdb")),
    ("xfs", ("xfs_growfs", "-d", "/srv/data")),
    ("btrfs", ("btrfs", "filesystem", "resize", "2:max", "/srv/data")),
])
def test_a_whole_disk_filesystem_grows_to_the_disk(fstype, argv):
    decided = grow.plan(whole(GiB, 3 * GiB, fstype, btrfs_devid=2), False)
    assert decided.steps == (grow.Step("filesystem", "vdb", argv, GiB, 3 * GiB),)
    assert (decided.left, decided.held) == (2 * GiB, "")


@pytest.mark.parametrize("gained, steps", [
    (0, 0), (grow.MIN_GROWTH - 1, 0), (grow.MIN_GROWTH, 1), (grow.MIN_GROWTH + 512, 1)])
def test_less_than_min_growth_is_not_worth_a_command(gained, steps):
    assert len(grow.plan(whole(GiB, GiB + gained), False).steps) == steps
    start, size = MiB, GiB
    stack = on_partition(size, start, size, start + size + gained, 2 * GiB)
    assert len(grow.plan(stack, False).steps) == 2 * steps


def test_the_last_partition_grows_then_its_filesystem_into_the_size_it_will_have():
    stack = on_partition(10 * GiB - MiB, MiB, 10 * GiB - MiB, 20 * GiB - 33 * 512, 20 * GiB)
    decided = grow.plan(stack, False)
    assert decided.steps == (
        grow.Step("partition", "vda1", ("growpart", "/dev/vda", "1"), 10 * GiB - MiB,
                  20 * GiB - 33 * 512 - MiB),
        grow.Step("filesystem", "vda1", ("resize2fs", "/dev/vda1"), 10 * GiB - MiB,
                  20 * GiB - 33 * 512 - MiB))
    assert decided.left == 10 * GiB - 33 * 512


def test_a_filesystem_smaller_than_its_full_partition_grows_alone():
    stack = on_partition(5 * GiB, MiB, 10 * GiB, 10 * GiB + MiB, 10 * GiB + 2 * MiB)
    assert argvs(grow.plan(stack, False)) == [("resize2fs", "/dev/vda1")]


@pytest.mark.parametrize("stack", [
    # the partition already reaches past where the table lets it end (the disk shrank)
    on_partition(10 * GiB, MiB, 10 * GiB, 8 * GiB, 8 * GiB),
    # the filesystem is larger than its device
    whole(3 * GiB, 2 * GiB),
    on_partition(12 * GiB, MiB, 10 * GiB, 10 * GiB + MiB, 10 * GiB + MiB),
])
def test_nothing_ever_shrinks(stack):
    decided = grow.plan(stack, True)
    assert decided.steps == ()


def test_a_problem_plans_nothing_but_tells_the_room_left():
    stack = replace(on_partition(GiB, MiB, GiB, 4 * GiB, 4 * GiB),
                    problem="vda1 is not the last partition of vda (vda2 follows)")
    decided = grow.plan(stack, True)
    assert decided.steps == ()
    assert decided.held == stack.problem
    assert decided.left == 4 * GiB - (MiB + GiB)


def volume_stack(lv_size: int, pv_size: int, part_size: int, usable: int,
                 allocated: Optional[int] = None, extent: int = EXTENT) -> grow.Stack:
    volume = grow.Volume("dm-0", "my-vg/root", lv_size, "vda2", pv_size, MiB, extent,
                         lv_size if allocated is None else allocated)
    part = grow.Partition("vda2", 2, 513 * MiB, part_size, "gpt", usable)
    return grow.Stack("/", "ext4", device="dm-0", disk="vda", disk_size=usable + 33 * 512,
                      fs_size=lv_size, partition=part, volume=volume)


def test_lvm_by_default_grows_the_partition_and_the_pv_and_holds_the_rest():
    stack = volume_stack(10 * GiB, 10 * GiB + MiB, 10 * GiB + MiB, 513 * MiB + 20 * GiB + MiB)
    decided = grow.plan(stack, False)
    assert argvs(decided) == [("growpart", "/dev/vda", "2"), ("pvresize", "/dev/vda2")]
    assert decided.steps[1].grows_to == 20 * GiB + MiB
    assert decided.held == ("its volume group has 10.0GiB free: CONFIG_GROW_ROOT_LV=1 extends "
                            "my-vg/root into it")
    assert decided.left == 10 * GiB


def test_lvm_with_grow_root_lv_extends_the_lv_then_its_filesystem():
    stack = volume_stack(10 * GiB, 10 * GiB + MiB, 10 * GiB + MiB, 513 * MiB + 20 * GiB + MiB)
    decided = grow.plan(stack, True)
    assert argvs(decided) == [("growpart", "/dev/vda", "2"), ("pvresize", "/dev/vda2"),
                              ("lvextend", "-l", "+100%FREE", "my-vg/root"),
                              ("resize2fs", "/dev/dm-0")]
    assert [s.grows_to for s in decided.steps] == [20 * GiB + MiB, 20 * GiB + MiB, 20 * GiB,
                                                   20 * GiB]
    assert decided.held == ""


def test_free_extents_already_in_the_vg_are_held_or_used():
    # The PV was grown by hand; other LVs use part of it.
    stack = volume_stack(4 * GiB, 10 * GiB + MiB, 10 * GiB + MiB, 10 * GiB + 513 * MiB + MiB,
                         allocated=6 * GiB)
    assert grow.plan(stack, False).steps == ()
    assert "4.0GiB free" in grow.plan(stack, False).held
    assert argvs(grow.plan(stack, True)) == [("lvextend", "-l", "+100%FREE", "my-vg/root"),
                                             ("resize2fs", "/dev/dm-0")]


# == acting, on the fake guest ======================================================================
def test_the_root_partition_grows_then_its_filesystem(guest):
    start, _ = grown_root(guest)
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert guest.commands() == [["growpart", "/dev/vda", "1"], ["resize2fs", "/dev/vda1"]]
    end = 20 * GiB - 33 * 512
    assert guest.size("vda1") == end - start
    assert guest.fs_size("vda1") == (end - start) // 4096 * 4096
    assert outcome.state == grow.GROWN and outcome.mountpoint == "/"
    assert outcome.reason == ("partition vda1 10.0GiB -> 20.0GiB, "
                              "filesystem vda1 10.0GiB -> 20.0GiB")
    assert grow_record("vda1") == {"mountpoint": "/", "state": "grown", "reason": outcome.reason}
    guest.host.commands.clear()
    # The next boot, or the `change` uevent of a writer closing the disk: facts read, nothing run.
    [again] = grow.configured(guest.host, SETTINGS)
    assert again.state == grow.UNCHANGED and guest.commands() == []
    assert again.reason.startswith("ext4 fills its device")


def test_a_4096_byte_sector_gpt_keeps_its_five_last_blocks(guest):
    start, _ = grown_root(guest, block=4096)
    grow.configured(guest.host, SETTINGS)
    assert guest.host.programs() == ["growpart", "resize2fs"]
    assert guest.size("vda1") == 20 * GiB - 5 * 4096 - start


def test_an_mbr_disk_of_3_tib_grows_its_partition_to_2_tib(guest):
    start, size = grown_root(guest, old=TiB, new=3 * TiB, table="dos")
    mount = mounts.mount_at(guest.host, "/")
    decided = grow.plan(grow.inspect(guest.host, mount), False)
    assert [(s.layer, s.grows_to) for s in decided.steps] == [
        ("partition", 2 * TiB - start), ("filesystem", 2 * TiB - start)]
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.GROWN
    assert guest.size("vda1") == 2 * TiB - start
    assert guest.fs_size("vda1") == 2 * TiB - start


def test_the_last_partition_is_the_last_on_the_disk_not_the_highest_number(guest):
    # vda2 (a BIOS boot partition) was made first on the disk, vda1 after it.
    end = gpt_usable_end(10 * GiB)
    guest.disk("vda", 253, 20 * GiB, [(2 * MiB, end - 2 * MiB), (MiB, MiB)])
    guest.filesystem("vda1", "253:1", "ext4", end - 2 * MiB, "/")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.GROWN
    assert guest.commands() == [["growpart", "/dev/vda", "1"], ["resize2fs", "/dev/vda1"]]


def test_a_partition_that_is_not_the_last_is_refused_naming_the_next(guest):
    guest.disk("vda", 253, 20 * GiB, [(MiB, 8 * GiB), (MiB + 8 * GiB, GiB)])
    guest.filesystem("vda1", "253:1", "ext4", 8 * GiB, "/")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "vda1 is not the last partition of vda (vda2 follows)")
    assert guest.commands() == []
    assert guest.size("vda1") == 8 * GiB


def test_an_mbr_logical_partition_is_refused(guest):
    # vda1 primary, vda2 the extended container, vda5 the logical partition inside it.
    guest.disk("vda", 253, 20 * GiB, [(MiB, GiB), (GiB + 2 * MiB, KiB), (GiB + 3 * MiB, 8 * GiB)],
               table="dos", head=mbr([(0x83, 2048, 2 * MiB), (0x05, (GiB + 2 * MiB) // 512,
                                                               (8 * GiB + MiB) // 512)]))
    set_attr("vda3", "partition", 5)  # the name does not matter, the number does
    guest.filesystem("vda3", "253:3", "ext4", 8 * GiB, "/")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "vda3 is a logical partition (growpart cannot grow its container)")
    assert guest.commands() == []


@pytest.mark.parametrize("head, why", [
    (mbr([(0x83, 2048, 2 ** 24)], signature=b"\0\0").ljust(1024, b"\0"),
     "no partition table signature"),
    (gpt(20 * GiB, header=False), "protective MBR without a GPT header"),
    (gpt(20 * GiB, good_crc=False), "GPT header checksum mismatch"),
])
def test_an_unreadable_table_is_refused_and_nothing_runs(guest, head, why):
    guest.disk("vda", 253, 20 * GiB, [(MiB, 10 * GiB)], head=head)
    guest.filesystem("vda1", "253:1", "ext4", 10 * GiB, "/")
    outcomes = grow.configured(guest.host, SETTINGS) + grow.disk_resized(
        guest.host, SETTINGS, "vda")
    assert [(o.state, o.reason) for o in outcomes] == [
        (grow.SKIPPED, f"vda: partition table unreadable: {why}")] * 2
    assert guest.commands() == []
    assert guest.size("vda1") == 10 * GiB


def test_whole_disk_xfs_grows_through_its_mountpoint(guest):
    data_disk(guest, "xfs")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert guest.commands() == [["xfs_growfs", "-d", "/srv/data"]]
    assert outcome.state == grow.GROWN
    # Its size is statfs's data blocks and the internal log (the superblock on disk lags).
    assert guest.host.statfs["/srv/data"] == (2 * GiB // 4096 - 2560, 4096)


def test_whole_disk_btrfs_grows_its_device_id(guest):
    data_disk(guest, "btrfs")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert guest.commands() == [["btrfs", "filesystem", "resize", "1:max", "/srv/data"]]
    assert outcome.state == grow.GROWN
    assert btrfs_size(guest, "vdb") == 2 * GiB


def test_btrfs_mounted_with_an_anonymous_device_number_is_found_by_its_source(guest):
    guest.disk("vdb", MAJOR["vdb"], 2 * GiB)
    guest.filesystem("vdb", "0:33", "btrfs", GiB, "/srv/data")
    guest.record("vdb", "/srv/data", "btrfs")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert outcome.state == grow.GROWN and btrfs_size(guest, "vdb") == 2 * GiB


def test_whole_disk_ext4_grows_and_is_recorded(guest):
    data_disk(guest, "ext4")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert guest.commands() == [["resize2fs", "/dev/vdb"]]
    assert guest.fs_size("vdb") == 2 * GiB
    assert outcome == grow.Outcome("/srv/data", grow.GROWN, "filesystem vdb 1.0GiB -> 2.0GiB")
    assert grow_record("vdb")["state"] == grow.GROWN


def test_a_disk_with_nothing_of_ours_on_it_runs_nothing(guest):
    data_disk(guest, "ext4", ours=False)  # mounted by someone else, not configured
    guest.disk("vdc", MAJOR["vdc"], GiB)  # never attached, nothing mounted
    assert grow.disk_resized(guest.host, SETTINGS, "vdb") == []
    assert grow.disk_resized(guest.host, SETTINGS, "vdc") == []
    assert guest.commands() == []
    assert guest.fs_size("vdb") == GiB


def test_a_record_for_another_mountpoint_is_not_ours(guest):
    data_disk(guest, "ext4", ours=False)
    guest.record("vdb", "/srv/elsewhere")
    assert grow.disk_resized(guest.host, SETTINGS, "vdb") == []
    assert guest.commands() == []


def test_a_filesystem_that_cannot_grow_online(guest):
    guest.disk("vdb", MAJOR["vdb"], 2 * GiB)
    guest.mounts.append(("254:0", "/srv/efi", "vfat", "/dev/vdb"))
    write_mountinfo(guest.fs, guest.mounts)
    guest.record("vdb", "/srv/efi", "vfat")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert (outcome.state, outcome.reason) == (grow.SKIPPED, "vfat cannot be grown online")
    assert guest.commands() == []


def test_less_than_min_growth_runs_nothing(guest):
    grown_root(guest, new=10 * GiB + 8 * MiB)
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.UNCHANGED and guest.commands() == []


def test_a_partition_past_the_usable_end_is_not_shrunk(guest):
    # An MBR image copied to a GPT disk of the same size: vda1 reaches into the backup area.
    guest.disk("vda", 253, 10 * GiB, [(MiB, 10 * GiB - MiB)])
    guest.filesystem("vda1", "253:1", "ext4", 10 * GiB - MiB, "/")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.UNCHANGED and guest.commands() == []
    assert guest.size("vda1") == 10 * GiB - MiB


def test_an_mbr_partition_past_2_tib_is_not_shrunk(guest):
    # Made by a tool that ignored the MBR limit: it ends at 2.5 TiB of a 3 TiB disk.
    guest.disk("vda", 253, 3 * TiB, [(MiB, 5 * TiB // 2 - MiB)], table="dos")
    guest.filesystem("vda1", "253:1", "ext4", 5 * TiB // 2 - MiB, "/")
    mount = mounts.mount_at(guest.host, "/")
    assert grow.inspect(guest.host, mount).partition.usable_end == 2 * TiB
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.UNCHANGED and guest.commands() == []


def test_a_partition_at_the_end_of_its_disk_needs_no_table(guest):
    # The usual boot: nothing to gain, so the table (garbage here) is not even read.
    guest.disk("vda", 253, 10 * GiB, [(MiB, 10 * GiB - MiB - 8 * MiB)], head=bytes(1024))
    guest.filesystem("vda1", "253:1", "ext4", 10 * GiB - 9 * MiB, "/")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.UNCHANGED and outcome.reason.startswith("ext4 fills its device")
    set_size("vda", (10 * GiB + grow.MIN_GROWTH) // 512)
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "vda: partition table unreadable: no partition table signature")
    assert guest.commands() == []


def test_a_read_only_mount_is_not_grown(guest):
    grown_root(guest)
    with open("/proc/self/mountinfo", "w") as f:
        f.write("22 1 253:1 / / ro,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n")
    outcomes = grow.configured(guest.host, SETTINGS) + grow.disk_resized(guest.host, SETTINGS,
                                                                          "vda")
    assert [(o.state, o.reason) for o in outcomes] == [(grow.SKIPPED, "mounted read-only")] * 2
    assert guest.commands() == []


# -- LVM ------------------------------------------------------------------------------------------
def test_lvm_by_default_grows_the_pv_and_holds_the_lv(guest):
    lvm_root(guest)
    lv_before = guest.size("dm-0")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert guest.commands() == [["growpart", "/dev/vda", "2"], ["pvresize", "/dev/vda2"]]
    assert outcome.state == grow.GROWN
    pv = gpt_usable_end(20 * GiB) - 513 * MiB
    assert guest.size("vda2") == pv
    # pvresize records it in the volume group's metadata; the label keeps pvcreate's size.
    assert guest.recorded("vda2", "dev_size") == pv
    label_size = struct.unpack_from("<Q", read_device("vda2", 8, 512 + 64))[0]
    assert label_size == gpt_usable_end(10 * GiB) - 513 * MiB
    assert guest.size("dm-0") == lv_before and guest.fs_size("dm-0") == lv_before
    guest.host.commands.clear()
    [held] = grow.configured(guest.host, SETTINGS)
    assert held.state == grow.UNCHANGED and guest.commands() == []
    assert "CONFIG_GROW_ROOT_LV=1 extends my-vg/root into it" in held.reason
    assert held.reason.startswith("its volume group has 10.0GiB free")


def test_lvm_with_grow_root_lv_grows_every_layer_in_order(guest):
    lvm_root(guest)
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert guest.commands() == [["growpart", "/dev/vda", "2"], ["pvresize", "/dev/vda2"],
                                ["lvextend", "-l", "+100%FREE", "my-vg/root"],
                                ["resize2fs", "/dev/dm-0"]]
    assert outcome.state == grow.GROWN, outcome
    lv = (gpt_usable_end(20 * GiB) - 513 * MiB - MiB) // EXTENT * EXTENT
    assert guest.size("dm-0") == lv and guest.fs_size("dm-0") == lv
    assert grow_record("dm-0")["state"] == grow.GROWN


def test_a_resize_event_of_the_disk_finds_the_filesystem_on_its_lv(guest):
    lvm_root(guest)
    [outcome] = grow.disk_resized(guest.host, LV_SETTINGS, "vda")
    assert outcome.mountpoint == "/" and outcome.state == grow.GROWN
    assert guest.host.programs() == ["growpart", "pvresize", "lvextend", "resize2fs"]


def test_a_snapshot_origin_is_refused(guest, fs):
    guest.disk("vda", 253, 20 * GiB, [(MiB, gpt_usable_end(10 * GiB) - MiB)])
    write_device("vda1", lvm_pv_label(guest.size("vda1")))
    add_dm(fs, "dm-1", "252:1", 8 * GiB // 512, slaves=["vda1"])  # my--vg-root-real
    set_attr("dm-1", "dm/uuid", LV_UUID + "-real")
    guest.lvm("vda1", slaves=["dm-1"], lv_size=8 * GiB)
    guest.filesystem("dm-0", "252:0", "ext4", 8 * GiB, "/", source="/dev/mapper/my--vg-root")
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "my-vg/root does not sit on one physical volume (dm-1)")
    assert guest.commands() == []


@pytest.mark.parametrize("uuid, kind", [
    ("CRYPT-LUKS2-" + "0" * 32 + "-cryptroot", "CRYPT"),
    (LV_UUID + "-real", "LVM"),  # under a snapshot
    (LV_UUID + "-tpool", "LVM"),  # a thin pool
    ("", "unnamed"),
])
def test_device_mapper_devices_other_than_a_plain_lv_are_refused(guest, uuid, kind):
    lvm_root(guest, uuid=uuid)
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, f"dm-0 is a device-mapper device ({kind}), not a plain LVM volume")
    assert guest.commands() == []


def test_an_lv_on_two_physical_volumes_is_refused(guest):
    guest.disk("vdb", MAJOR["vdb"], 10 * GiB)
    lvm_root(guest, slaves=["vda2", "vdb"])
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "my-vg/root does not sit on one physical volume (vda2, vdb)")
    assert guest.commands() == []


def test_an_lv_with_an_unreadable_name_is_refused(guest):
    lvm_root(guest, dm_name="vgroot")
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert (outcome.state, outcome.reason) == (grow.SKIPPED, "dm-0: LVM volume name unreadable")


def test_a_pv_without_a_label_is_refused(guest):
    lvm_root(guest)
    write_device("vda2", bytes(2048))
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert (outcome.state, outcome.reason) == (grow.SKIPPED, "vda2: no LVM2 label")
    assert guest.commands() == []


# -- LVM: the size pvresize records is in the volume group's metadata -----------------------------
def grown_pv_root(guest: Guest, **lvm) -> int:
    """vda (20 GiB, GPT): vda1 /boot, vda2 already grown to the disk's end (growpart ran); the PV
    on it as `lvm` says, its LV root holding / (ext4). Returns vda2's size."""
    boot, pv = (MiB, 512 * MiB), (513 * MiB, gpt_usable_end(20 * GiB) - 513 * MiB)
    guest.disk("vda", 253, 20 * GiB, [boot, pv])
    guest.filesystem("vda1", "253:1", "ext4", 512 * MiB, "/boot")
    guest.lvm("vda2", **lvm)
    guest.filesystem("dm-0", "252:0", "ext4", guest.size("dm-0"), "/",
                     source="/dev/mapper/my--vg-root")
    return pv[1]


def test_a_pv_resized_already_is_not_resized_again(guest):
    # What the guest showed: the label still says pvcreate's 9.5 GiB after pvresize, and a plan
    # read from it ran pvresize at every boot. The metadata says the PV has grown.
    old = gpt_usable_end(10 * GiB) - 513 * MiB
    pv = grown_pv_root(guest, label_size=old, lv_size=old - MiB)
    [held] = grow.configured(guest.host, SETTINGS)
    assert guest.commands() == []
    assert (held.state, held.reason) == (
        grow.UNCHANGED, "its volume group has 10.0GiB free: CONFIG_GROW_ROOT_LV=1 extends "
        "my-vg/root into it")
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert guest.commands() == [["lvextend", "-l", "+100%FREE", "my-vg/root"],
                                ["resize2fs", "/dev/dm-0"]]
    assert outcome.state == grow.GROWN
    assert guest.size("dm-0") == (pv - MiB) // EXTENT * EXTENT
    assert guest.recorded("vda2", "dev_size") == pv


def test_the_label_size_does_not_count(guest):
    # A label recording more than the metadata (it is pvcreate's word, never updated): the PV is
    # still resized into its grown partition.
    pv = grown_pv_root(guest, label_size=30 * GiB, dev_size=10 * GiB)
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert guest.commands() == [["pvresize", "/dev/vda2"]]
    assert outcome.state == grow.GROWN
    assert guest.recorded("vda2", "dev_size") == pv
    assert struct.unpack_from("<Q", read_device("vda2", 8, 512 + 64))[0] == 30 * GiB


def test_metadata_wrapping_around_its_circular_buffer_is_read_whole(guest):
    # The copy starts 200 bytes before the area's end and goes on after its header.
    lvm_root(guest, at=LVM_MDA[1] - 200)
    area_size = LVM_MDA[1]
    text, at, size = guest.metadata("vda2")
    assert at + size > area_size
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert guest.host.programs() == ["growpart", "pvresize", "lvextend", "resize2fs"]
    assert outcome.state == grow.GROWN
    # pvresize wrote the next copy after it, past the header; the next run reads that one.
    _, at, _ = guest.metadata("vda2")
    assert at == -(-(size - 200 + LVM_MDA_HEADER) // 512) * 512
    guest.host.commands.clear()
    [again] = grow.configured(guest.host, LV_SETTINGS)
    assert again.state == grow.UNCHANGED and guest.commands() == []


def test_each_resize_reads_the_newest_copy_of_the_metadata(guest):
    # A metadata area of 4 KiB holds two copies and a half: a pvresize wraps.
    lvm_root(guest, grown=False, metadata=(4096, 4096))
    wrapped = []
    for gib in (11, 12, 13, 14):
        guest.enlarge("vda", gib * GiB)
        [outcome] = grow.disk_resized(guest.host, LV_SETTINGS, "vda")
        assert outcome.state == grow.GROWN, outcome
        pv = gpt_usable_end(gib * GiB) - 513 * MiB
        assert guest.recorded("vda2", "dev_size") == pv
        assert guest.size("dm-0") == guest.fs_size("dm-0") == (pv - MiB) // EXTENT * EXTENT
        _, at, size = guest.metadata("vda2")
        wrapped.append(at + size > 4096)
    assert any(wrapped)
    assert guest.host.programs() == ["growpart", "pvresize", "lvextend", "resize2fs"] * 4


def test_space_short_of_a_whole_extent_is_not_planned_for_the_lv(guest):
    # Extents of 1 GiB: the PV gains 256 MiB, the VG no extent. lvextend would add nothing, and
    # the filesystem then not grow: that used to be a failure at every boot.
    lvm_root(guest, grown=False, extent=GiB)
    assert guest.size("dm-0") == 9 * GiB
    guest.enlarge("vda", 10 * GiB + 256 * MiB)
    [outcome] = grow.disk_resized(guest.host, LV_SETTINGS, "vda")
    assert outcome.state == grow.GROWN
    assert guest.host.programs() == ["growpart", "pvresize"]
    guest.host.commands.clear()
    [again] = grow.configured(guest.host, LV_SETTINGS)
    assert (again.state, guest.commands()) == (grow.UNCHANGED, [])
    assert again.reason == "ext4 fills its device (9.0GiB)"


def mda_header_is(header: bytes) -> None:
    write_device("vda2", header, LVM_MDA[0])


def garbled(guest: Guest, old: str, new: str) -> None:
    """The current metadata copy with `old` replaced by `new` (as long) where it lies."""
    text, at, _ = guest.metadata("vda2")
    assert old in text and len(new) == len(old)
    write_device("vda2", text.replace(old, new).encode(), LVM_MDA[0] + at)


NOT_FOUND = "physical volume not found in its volume group's metadata"


@pytest.mark.parametrize("breaking, why", [
    (lambda g: mda_header_is(bytes(512)), "no LVM2 metadata area header"),
    (lambda g: write_device("vda2", b"\xff", LVM_MDA[0] + 10), "no LVM2 metadata area header"),
    (lambda g: mda_header_is(lvm_mda_header(*LVM_MDA, LVM_MDA[1], 1200)),
     "LVM2 metadata location out of its area"),
    (lambda g: mda_header_is(lvm_mda_header(*LVM_MDA, 512, 0)),
     "LVM2 metadata location out of its area"),
    (lambda g: mda_header_is(lvm_mda_header(*LVM_MDA, 0, 1200)),
     "LVM2 metadata location out of its area"),
    (lambda g: mda_header_is(lvm_mda_header(*LVM_MDA, 512, 2 * MiB)),
     "LVM2 metadata location out of its area"),
    # The metadata of another PV (the label's uuid is in no section), of none, or garbled.
    (lambda g: write_device("vda2", lvm_mda(lvm_vg_text(
        10 * GiB, uuid="otherpvotherpvotherpvotherpvothe").encode()), LVM_MDA[0]), NOT_FOUND),
    (lambda g: write_device("vda2", lvm_mda(b"\0" * 1000), LVM_MDA[0]), NOT_FOUND),
    (lambda g: garbled(g, "\ndev_size =", "\n#ev_size ="), NOT_FOUND),
    (lambda g: garbled(g, "\ndev_size = 1", "\ndev_size = x"), NOT_FOUND),
    (lambda g: garbled(g, "\nextent_size = 8192", "\nextent_size = 0000"), NOT_FOUND),
    (lambda g: garbled(g, "\nextent_size", "\n}xtent_size"), NOT_FOUND),
    (lambda g: garbled(g, 'id = "pvuuid', 'id = "pvuuiD'), NOT_FOUND),
    (lambda g: garbled(g, "# Hint only\n\n", "# Hint   \n}\n\n"), NOT_FOUND),  # dev_size past a }
    # The label's uuid garbled: its PV is no longer the one the metadata names.
    (lambda g: write_device("vda2", b"X", 512 + 32), NOT_FOUND),
    # The label lists no metadata area (pvcreate --metadatacopies 0): the VG's metadata is on
    # its other PVs, which this one cannot be read with.
    (lambda g: write_device("vda2", lvm_pv_label(10 * GiB, metadata=None)),
     "vda2: physical volume without a metadata area"),
    (lambda g: write_device("vda2", lvm_pv_label(10 * GiB, metadata=(4096, 0))),
     "vda2: physical volume without a metadata area"),
    # A metadata area past the device's end.
    (lambda g: write_device("vda2", lvm_pv_label(10 * GiB, metadata=(40 * GiB, MiB))),
     "LVM2 metadata area past the device's end"),
])
def test_unreadable_lvm_metadata_is_refused_and_nothing_runs(guest, breaking, why):
    lvm_root(guest)
    breaking(guest)
    outcomes = grow.configured(guest.host, LV_SETTINGS) + grow.disk_resized(
        guest.host, LV_SETTINGS, "vda")
    why = why if why.startswith("vda2: ") else f"vda2: {why}"  # each names the PV
    assert [(o.state, o.reason) for o in outcomes] == [(grow.SKIPPED, why)] * 2
    assert guest.commands() == []
    [row] = grow.status(guest.host, LV_SETTINGS)
    assert (row["state"], row["reason"]) == ("refused", why)
    assert guest.size("vda2") == gpt_usable_end(10 * GiB) - 513 * MiB


@pytest.mark.parametrize("area", [1 << 63, (1 << 64) - 4096])
def test_a_metadata_area_offset_past_any_device_is_refused(guest, area):
    lvm_root(guest)
    write_device("vda2", lvm_pv_label(10 * GiB, metadata=(area, MiB)))
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert outcome.state == grow.SKIPPED and "\n" not in outcome.reason
    assert guest.commands() == []


def test_an_absurd_dev_size_on_the_disk_is_refused(guest):
    lvm_root(guest)
    size = gpt_usable_end(10 * GiB) - 513 * MiB
    text = lvm_vg_text(size, device="/dev/vda2").replace(f"dev_size = {size // 512}",
                                                         "dev_size = " + "9" * 5000)
    write_device("vda2", lvm_mda(text.encode()), LVM_MDA[0])
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert outcome.state == grow.SKIPPED and "\n" not in outcome.reason
    assert guest.commands() == []


def test_free_extents_are_those_of_the_pv_as_it_will_be(guest):
    # vda2 is 12 MiB longer than the PV recorded (not worth a pvresize); the VG has 8 MiB free.
    dev_size = 10 * GiB + MiB
    guest.disk("vda", 253, 20 * GiB, [(MiB, 512 * MiB), (20 * GiB - dev_size - 12 * MiB - 33 * 512,
                                                         dev_size + 12 * MiB)])
    guest.filesystem("vda1", "253:1", "ext4", 512 * MiB, "/boot")
    guest.lvm("vda2", dev_size=dev_size, lv_size=10 * GiB - 8 * MiB)
    guest.filesystem("dm-0", "252:0", "ext4", guest.size("dm-0"), "/",
                     source="/dev/mapper/my--vg-root")
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert not outcome.failed, outcome
    [held] = grow.configured(guest.host, SETTINGS)
    assert "free" not in held.reason  # 8 MiB free is not worth an lvextend either


# -- opt-outs ---------------------------------------------------------------------------------------
def test_config_grow_root_0_grows_no_configured_mountpoint_but_still_our_data_disks(guest):
    grown_root(guest)
    data_disk(guest, "ext4")
    off = replace(SETTINGS, grow_root=False)
    assert grow.configured(guest.host, off) == []
    assert grow.disk_resized(guest.host, off, "vda") == [
        grow.Outcome("/", grow.SKIPPED, "CONFIG_GROW_ROOT=0")]
    assert guest.commands() == []
    assert guest.size("vda1") == 10 * GiB - 33 * 512 - MiB
    [data] = grow.disk_resized(guest.host, off, "vdb")
    assert data.state == grow.GROWN and guest.commands() == [["resize2fs", "/dev/vdb"]]


def test_configured_mountpoints_other_than_the_root(guest):
    grown_root(guest)
    data_disk(guest, "ext4", ours=False, mountpoint="/var")
    settings = replace(SETTINGS, grow_mountpoints=("/var",))
    [outcome] = grow.configured(guest.host, settings)
    assert outcome.mountpoint == "/var" and guest.commands() == [["resize2fs", "/dev/vdb"]]
    guest.host.commands.clear()
    assert grow.configured(guest.host, replace(settings, grow_mountpoints=())) == []
    assert grow.configured(guest.host, replace(settings, grow_mountpoints=("/srv/none",))) == []
    # Both, in the order configured: / grows, /var has grown already.
    root, var = grow.configured(guest.host, replace(SETTINGS, grow_mountpoints=("/", "/var")))
    assert [(o.mountpoint, o.state) for o in (root, var)] == [("/", grow.GROWN), ("/var", grow.UNCHANGED)]
    assert guest.host.programs() == ["growpart", "resize2fs"]


def test_x_gandi_nogrow_on_the_mountpoint(guest):
    grown_root(guest)
    guest.fstab("UUID=1234 / ext4 errors=remount-ro,x-gandi.nogrow 0 1")
    outcomes = grow.configured(guest.host, SETTINGS) + grow.disk_resized(
        guest.host, SETTINGS, "vda")
    assert [(o.state, o.reason) for o in outcomes] == [
        (grow.SKIPPED, "vda: / has x-gandi.nogrow in /etc/fstab line 2")] * 2
    assert guest.commands() == []


def test_x_gandi_nogrow_on_another_mountpoint_of_the_same_disk(guest):
    end = gpt_usable_end(10 * GiB)
    guest.disk("vda", 253, 20 * GiB, [(MiB, 512 * MiB), (513 * MiB, end - 513 * MiB)])
    guest.filesystem("vda1", "253:1", "ext4", 512 * MiB, "/boot")
    guest.filesystem("vda2", "253:2", "ext4", end - 513 * MiB, "/")
    data_disk(guest, "ext4", mountpoint="/srv/data")
    guest.fstab("LABEL=root / ext4 defaults 0 1", "# a comment",
                "LABEL=boot /boot ext4 defaults,x-gandi.nogrow 0 2",
                "LABEL=data /srv/data ext4 defaults 0 2")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.SKIPPED, "vda: /boot has x-gandi.nogrow in /etc/fstab line 4")
    # Another disk is not held by it.
    assert grow.disk_resized(guest.host, SETTINGS, "vdb")[0].state == grow.GROWN
    assert guest.commands() == [["resize2fs", "/dev/vdb"]]


def test_x_gandi_nogrow_says_nothing_when_there_is_nothing_to_grow(guest):
    grown_root(guest, new=10 * GiB)
    guest.fstab("/dev/vda1 / ext4 defaults,x-gandi.nogrow 0 1")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.UNCHANGED


def test_nogrow_as_a_word_elsewhere_in_fstab_is_not_the_option(guest):
    grown_root(guest)
    guest.fstab("/dev/vda1 / ext4 x-gandi.nogrowth,defaults 0 1",
                "/x-gandi.nogrow /srv/x-gandi.nogrow none bind 0 0")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.state == grow.GROWN


# -- failures ---------------------------------------------------------------------------------------
def test_a_failing_step_stops_the_later_ones_and_says_what_was_done(guest):
    lvm_root(guest)
    guest.failing["pvresize"] = Result([], 5, stderr="  /dev/vda2: read failed\n"
                                       "  0 physical volume(s) resized\n")
    [outcome] = grow.configured(guest.host, LV_SETTINGS)
    assert guest.host.programs() == ["growpart", "pvresize"]
    assert outcome.failed
    assert outcome.reason == (
        "physical volume vda2: `pvresize /dev/vda2` failed: 0 physical volume(s) resized "
        "(done: partition vda2 9.5GiB -> 19.5GiB)")
    assert grow_record("dm-0") == {"mountpoint": "/", "state": "failed", "reason": outcome.reason}
    [row] = grow.status(guest.host, LV_SETTINGS)
    assert (row["state"], row["reason"]) == ("failed", outcome.reason)
    # The next event plans again from what is on the disk now: the partition has grown.
    del guest.failing["pvresize"]
    guest.host.commands.clear()
    [retried] = grow.configured(guest.host, LV_SETTINGS)
    assert retried.state == grow.GROWN
    assert guest.host.programs() == ["pvresize", "lvextend", "resize2fs"]
    [row] = grow.status(guest.host, LV_SETTINGS)
    assert row["state"] == "up to date"


def test_a_failed_grow_is_retried_on_the_next_event(guest):
    data_disk(guest, "ext4")
    guest.failing["resize2fs"] = Result([], 1, stderr="resize2fs: Device or resource busy")
    [failed] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert (failed.state, failed.reason) == (
        grow.FAILED, "filesystem vdb: `resize2fs /dev/vdb` failed: resize2fs: Device or "
        "resource busy")
    assert guest.fs_size("vdb") == GiB
    del guest.failing["resize2fs"]
    [grown] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert grown.state == grow.GROWN and guest.fs_size("vdb") == 2 * GiB
    assert guest.commands() == [["resize2fs", "/dev/vdb"]] * 2


def test_growpart_failure_is_a_failure_naming_the_step(guest):
    grown_root(guest)
    guest.failing["growpart"] = Result([], 2, stderr="FAILED: failed to resize\n")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert (outcome.state, outcome.reason) == (
        grow.FAILED, "partition vda1: `growpart /dev/vda 1` failed: FAILED: failed to resize")
    assert guest.host.programs() == ["growpart"]


def test_growpart_missing_is_a_failure_too(guest):
    grown_root(guest)
    del guest.host.handlers["growpart"]  # FakeHost: exit 127, "No such file or directory"
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.failed and outcome.reason == (
        "partition vda1: `growpart /dev/vda 1` failed: growpart: No such file or directory")


def test_growpart_nochange_goes_on_to_the_filesystem(guest):
    # The filesystem is smaller than its partition (an earlier resize2fs failed), and growpart
    # sees no room where grow.py saw some: its NOCHANGE (exit 1) is not a failure.
    grown_root(guest)
    guest.write_superblock("vda1", "ext4", 6 * GiB)
    guest.failing["growpart"] = Result([], 1, stdout="NOCHANGE: partition 1 is size 20969439. "
                                       "it cannot be grown\n")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert guest.host.programs() == ["growpart", "resize2fs"]
    assert outcome.state == grow.GROWN
    assert guest.fs_size("vda1") == (10 * GiB - 33 * 512 - MiB) // 4096 * 4096


def test_growpart_nochange_is_not_reported_as_a_grown_partition(guest):
    # After growpart answered NOCHANGE, the outcome once still said the partition grew.
    grown_root(guest)
    guest.write_superblock("vda1", "ext4", 6 * GiB)
    guest.failing["growpart"] = Result([], 1, stdout="NOCHANGE: partition 1 is size 20969439. "
                                       "it cannot be grown\n")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert "partition vda1 10.0GiB -> 20.0GiB" not in outcome.reason
    assert "partition vda1 already at its end" in outcome.reason


def test_a_tool_that_exits_0_without_growing_is_caught_on_the_superblock(guest):
    grown_root(guest)
    guest.inert.add("resize2fs")
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert outcome.failed
    assert outcome.reason == ("the commands ran (partition vda1 10.0GiB -> 20.0GiB, filesystem "
                              "vda1 10.0GiB -> 20.0GiB) but ext4 on vda1 is still 10.0GiB")


def test_xfs_whose_statfs_did_not_change_is_a_failure(guest):
    data_disk(guest, "xfs")
    guest.inert.add("xfs_growfs")
    [outcome] = grow.disk_resized(guest.host, SETTINGS, "vdb")
    assert outcome.failed and "but xfs on vdb is still" in outcome.reason


# -- dry run ----------------------------------------------------------------------------------------
def test_dry_run_prints_the_commands_and_runs_nothing(fs):
    guest = Guest(fs, dry_run=True)
    grown_root(guest)
    [outcome] = grow.configured(guest.host, SETTINGS)
    assert guest.plan.getvalue().splitlines() == ["would run growpart /dev/vda 1",
                                                  "would run resize2fs /dev/vda1"]
    assert guest.commands() == []
    assert guest.size("vda1") == 10 * GiB - 33 * 512 - MiB
    assert not os.path.exists("/run/gandi/grow")
    assert outcome.state == grow.GROWN  # what would be done


# -- status -----------------------------------------------------------------------------------------
def status_rows(guest: Guest, settings: Settings) -> Dict[str, dict]:
    return {row["mountpoint"]: row for row in grow.status(guest.host, settings)}


def test_status_rows_with_their_sizes(guest):
    start, size = grown_root(guest)
    data_disk(guest, "ext4", new=GiB)
    guest.disk("vdc", MAJOR["vdc"], 4 * GiB, [(MiB, 4 * GiB - MiB - 33 * 512)])
    guest.lvm("vdc1", lv_size=GiB)
    guest.filesystem("dm-0", "252:0", "ext4", GiB, "/srv/lv", source="/dev/mapper/my--vg-root")
    guest.mounts.append(("256:0", "/srv/efi", "vfat", "/dev/vdd"))
    write_mountinfo(guest.fs, guest.mounts)
    settings = replace(SETTINGS, grow_mountpoints=("/", "/srv/data", "/srv/lv", "/srv/efi",
                                                   "/var"))
    rows = status_rows(guest, settings)
    usable = 20 * GiB - 33 * 512
    assert rows["/"] == {
        "mountpoint": "/", "device": "vda1", "disk": "vda", "disk_size": 20 * GiB,
        "partition_end": start + size, "filesystem_size": size // 4096 * 4096,
        "left": usable - start - size // 4096 * 4096, "state": "can grow",
        "reason": "at the next boot, resize event or `gandi-vm grow`: growpart /dev/vda 1, "
                  "resize2fs /dev/vda1"}
    assert (rows["/srv/data"]["state"], rows["/srv/data"]["reason"]) == (
        "up to date", "ext4 fills its device")
    assert (rows["/srv/data"]["disk_size"], rows["/srv/data"]["filesystem_size"],
            rows["/srv/data"]["partition_end"], rows["/srv/data"]["left"]) == (GiB, GiB, None, 0)
    assert rows["/srv/lv"]["state"] == "held"
    assert "CONFIG_GROW_ROOT_LV=1" in rows["/srv/lv"]["reason"]
    # Whole extents of the PV past its pe_start, but the LV's own.
    assert rows["/srv/lv"]["left"] == ((4 * GiB - 33 * 512 - MiB) - MiB) // EXTENT * EXTENT - GiB
    assert (rows["/srv/efi"]["state"], rows["/srv/efi"]["reason"]) == (
        "refused", "vfat cannot be grown online")
    assert rows["/var"] == {"mountpoint": "/var", "state": "not mounted", "reason": ""}
    assert list(rows) == ["/", "/srv/data", "/srv/lv", "/srv/efi", "/var"]
    assert guest.commands() == []


def test_status_when_disabled(guest):
    grown_root(guest)
    [row] = grow.status(guest.host, replace(SETTINGS, grow_root=False))
    assert (row["state"], row["reason"]) == ("disabled", "CONFIG_GROW_ROOT=0")
    guest.fstab("/dev/vda1 / ext4 defaults,x-gandi.nogrow 0 1")
    [row] = grow.status(guest.host, SETTINGS)
    assert (row["state"], row["reason"]) == ("disabled",
                                             "/ has x-gandi.nogrow in /etc/fstab line 2")
    fs_size = (10 * GiB - 33 * 512 - MiB) // 4096 * 4096
    assert row["left"] == 20 * GiB - 33 * 512 - MiB - fs_size


def test_status_of_a_refused_stack_tells_the_room_left(guest):
    guest.disk("vda", 253, 20 * GiB, [(MiB, 8 * GiB), (MiB + 8 * GiB, GiB)])
    guest.filesystem("vda1", "253:1", "ext4", 8 * GiB, "/")
    [row] = grow.status(guest.host, SETTINGS)
    assert (row["state"], row["reason"]) == (
        "refused", "vda1 is not the last partition of vda (vda2 follows)")


def test_status_fails_only_while_there_is_still_something_to_do(guest):
    data_disk(guest, "ext4")
    guest.failing["resize2fs"] = Result([], 1, stderr="busy")
    settings = replace(SETTINGS, grow_mountpoints=("/srv/data",))
    grow.configured(guest.host, settings)
    assert status_rows(guest, settings)["/srv/data"]["state"] == "failed"
    guest.write_superblock("vdb", "ext4", 2 * GiB)  # grown by hand since
    assert status_rows(guest, settings)["/srv/data"]["state"] == "up to date"


# -- disk resize DEV[:SECTORS] -----------------------------------------------------------------------
@pytest.mark.parametrize("dev", ["vda", "vda:41943040", "/dev/vda:41943040", "vda1:41943040"])
def test_disk_resize_takes_the_sectors_of_its_unit_instance(guest, dev):
    grown_root(guest)
    [outcome] = disk.resize(guest.host, SETTINGS, dev)
    assert outcome.state == grow.GROWN
    assert guest.commands() == [["growpart", "/dev/vda", "1"], ["resize2fs", "/dev/vda1"]]


@pytest.mark.parametrize("dev", ["vda:x", "vda:", "vda:12a", "vda:\u0661\u0662", "vdz:123",
                                 "vda:12:34"])
def test_disk_resize_takes_anything_else_as_a_name(guest, dev):
    grown_root(guest)
    with pytest.raises(NoSuchDevice):
        disk.resize(guest.host, SETTINGS, dev)
    assert guest.commands() == []


def test_disk_resize_of_a_disk_with_nothing_of_ours(guest, caplog):
    guest.disk("vdc", MAJOR["vdc"], GiB)
    with caplog.at_level("INFO", logger="gandi"):
        assert disk.resize(guest.host, SETTINGS, "vdc:2097152") == []
    assert "disk vdc: capacity changed to 2097152 sectors" in caplog.text
    assert "disk vdc: nothing on it is ours to grow" in caplog.text
    assert guest.commands() == []


# -- the command line (the real Host, its subprocess.run replaced by the guest's tools) --------------
ROOT = "/vm"


@pytest.fixture
def vm(fs, monkeypatch) -> Guest:
    guest = Guest(fs, root=ROOT)

    def run(argv, **kwargs):
        guest.host.commands.append(list(argv))
        program = os.path.basename(argv[0])
        if program not in guest.host.handlers:
            return subprocess.CompletedProcess(argv, 127, "", f"{program}: not found")
        done = guest.host.handlers[program](list(argv))
        return subprocess.CompletedProcess(argv, done.returncode, done.stdout, done.stderr)

    monkeypatch.setattr("subprocess.run", run)
    grown_root(guest)
    return guest


def grow_tools(vm: Guest) -> List[List[str]]:
    return [c for c in vm.commands() if os.path.basename(c[0]) in ("growpart", "resize2fs")]


def test_mount_all_grows_the_root_at_boot_in_its_one_process(vm, capsys):
    """No uevent announces what the disk gained while the VM was stopped: gandi-mount's process
    grows / (after local-fs.target: nothing of ours runs before sysinit.target)."""
    assert cli.main(["--root", ROOT, "mount-all"]) == 0
    assert grow_tools(vm) == [["growpart", f"{ROOT}/dev/vda", "1"], ["resize2fs", f"{ROOT}/dev/vda1"]]
    assert vm.size("vda1") == 20 * GiB - 33 * 512 - MiB
    assert "grow /: grown: partition vda1" in capsys.readouterr().err
    vm.host.commands.clear()
    assert cli.main(["--root", ROOT, "mount-all"]) == 0, "the next boot: nothing left to grow"
    assert grow_tools(vm) == []


def test_mount_all_exits_1_when_growing_the_root_fails(vm, capsys):
    vm.failing["resize2fs"] = Result([], 1, stderr="resize2fs: busy")
    assert cli.main(["--root", ROOT, "mount-all"]) == 1
    err = capsys.readouterr().err
    assert "gandi: error: grow /: failed: filesystem vda1: `resize2fs /dev/vda1` failed" in err


def test_mount_all_with_grow_root_off_grows_nothing(vm, capsys):
    vm.put("/etc/default/gandi", "CONFIG_GROW_ROOT=0\n")
    assert cli.main(["--root", ROOT, "mount-all"]) == 0
    assert grow_tools(vm) == []
    assert "grow: CONFIG_GROW_ROOT=0: / not grown" in capsys.readouterr().err


def test_grow_dry_run(vm, capsys):
    assert cli.main(["--root", ROOT, "--dry-run", "grow"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"would run growpart {ROOT}/dev/vda 1", f"would run resize2fs {ROOT}/dev/vda1"]
    assert vm.commands() == []


def test_disk_resize_on_the_command_line(vm, capsys):
    assert cli.main(["--root", ROOT, "disk", "resize", "vda:41943040"]) == 0
    assert vm.host.programs() == ["growpart", "resize2fs"]
    assert cli.main(["--root", ROOT, "disk", "resize", "vda:x"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == "gandi: error: vda:x: no such block device"
    assert len(vm.commands()) == 2


def test_mount_all_grows_every_configured_mountpoint(vm, capsys):
    data_disk(vm, "ext4", mountpoint="/var", ours=False)
    vm.put("/etc/default/gandi", "CONFIG_GROW_MOUNTPOINTS='/ /var'\nCONFIG_ALLOW_MOUNT=0\n")
    assert cli.main(["--root", ROOT, "mount-all"]) == 0
    assert grow_tools(vm) == [["growpart", f"{ROOT}/dev/vda", "1"], ["resize2fs", f"{ROOT}/dev/vda1"],
                              ["resize2fs", f"{ROOT}/dev/vdb"]]


def test_status_yaml_has_the_growth(vm, capsys):
    assert cli.main(["--root", ROOT, "status", "--format", "yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    [row] = data["growth"]
    assert (row["mountpoint"], row["device"], row["state"]) == ("/", "vda1", "can grow")
    assert row["disk_size"] == 20 * GiB
    assert vm.host.programs() == ["blkid"] * 2  # the disk table's probes; no grow tool


def test_status_text_ends_with_the_grow_table(vm, capsys):
    assert cli.main(["--root", ROOT, "status"]) == 0
    *_, table = capsys.readouterr().out.rstrip("\n").split("\n\n")
    header, row = table.splitlines()
    assert header.split() == ["GROW", "DISK", "DISK_SIZE", "PARTITION_END", "FILESYSTEM_SIZE",
                              "LEFT", "STATE", "REASON"]
    assert row.split()[:8] == ["/", "vda", "20.0GiB", "10.0GiB", "10.0GiB", "10.0GiB", "can",
                               "grow"]
