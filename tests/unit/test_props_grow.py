"""Properties of grow.py's parsers of outside data (the partition table, the superblocks, the LVM
label, metadata area header and metadata text, device-mapper names), of its pure plan, of
CONFIG_GROW_MOUNTPOINTS, and of the whole path on a guest whose sysfs, devices, mount table and
fstab are partly garbage.

The contract: a valid answer or `grow.Refused` (one line), never another exception, never a
hang; a plan never shrinks a layer. Inputs are the real headers (built in fakesys.py) with bytes
overwritten anywhere, their checksum made right again or not, cut short, or plain random bytes.
Hosts are temporary directories made inside each example (pyfakefs's `fs` is per test)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import posixpath
import struct
import subprocess
import tempfile
import zlib
from typing import Dict, Iterator, Optional
from unittest import mock

from fakesys import (LVM_MDA, LVM_MDA_HEADER, PV_UUID, btrfs_superblock, ext4_superblock, gpt,
                     lvm_dashed, lvm_mda, lvm_mda_header, lvm_pv, lvm_pv_label, lvm_vg_text, mbr,
                     xfs_superblock)
from hypothesis import example, given
from hypothesis import strategies as st

from gandi_vm import config, grow
from gandi_vm.config import Settings
from gandi_vm.host import Host

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
U64 = st.integers(0, (1 << 64) - 1)
BLOCK_SIZES = st.sampled_from([512, 1024, 2048, 4096])
DISK_SIZE = st.one_of(st.integers(0, 1 << 64), st.sampled_from([0, 512, 20 * GiB, 3 * TiB]))


def refused_is_one_line(error: grow.Refused) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 200, message


@st.composite
def patched(draw, base: bytes, max_patches: int = 6) -> bytes:
    """`base` with a few runs of bytes overwritten, then maybe cut short or extended."""
    data = bytearray(base)
    for _ in range(draw(st.integers(0, max_patches))):
        if not data:
            break
        offset = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=8),
                               st.sampled_from([b"\xff" * 4, b"\0" * 8, b"\x80", b"\xff\xff\xff\x7f"])))
        data[offset:offset + len(chunk)] = chunk
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    if cut is not None:
        del data[cut:]
    return bytes(data)


# -- the partition table ---------------------------------------------------------------------------
@st.composite
def gpt_heads(draw) -> bytes:
    """A GPT head (protective MBR and header) with any header size, entry count and entry size,
    its CRC32 then made right (so that the checks behind it are reached) or left as it is."""
    block = draw(BLOCK_SIZES)
    head = bytearray(gpt(20 * GiB, block))
    header = block
    struct.pack_into("<I", head, header + 12, draw(st.one_of(
        st.integers(0, 2 ** 32 - 1), st.sampled_from([0, 91, 92, 93, block, block + 1]))))
    struct.pack_into("<II", head, header + 80,
                     draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.sampled_from([0, 1, 128, 8192]))),
                     draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.sampled_from([0, 8, 128, 136]))))
    head = bytearray(draw(patched(bytes(head), 3)))
    if draw(st.booleans()) and len(head) >= header + 92:
        size, = struct.unpack_from("<I", head, header + 12)
        body = bytes(head[header:header + 16]) + b"\0\0\0\0" + bytes(head[header + 20:header + size])
        struct.pack_into("<I", head, header + 16, zlib.crc32(body))
    return bytes(head)


MBR_HEADS = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2 ** 32 - 1),
                               st.integers(0, 2 ** 32 - 1)), max_size=4).map(mbr)
HEADS = st.one_of(gpt_heads(), MBR_HEADS.flatmap(patched), st.binary(max_size=9000),
                  BLOCK_SIZES.flatmap(lambda b: patched(gpt(20 * GiB, b))))


@given(HEADS, DISK_SIZE, BLOCK_SIZES)
@example(gpt(20 * GiB), 20 * GiB, 512)
@example(mbr([(0x83, 2048, 2 ** 32 - 1)]), 3 * TiB, 512)
def test_a_partition_table_is_read_or_refused(head, disk_size, block_size):
    try:
        table, usable_end = grow.partition_table(head, disk_size, block_size)
    except grow.Refused as e:
        refused_is_one_line(e)
        return
    assert type(usable_end) is int
    if table == "dos":
        assert usable_end == min(disk_size, (1 << 32) * block_size)
    else:
        assert table == "gpt"
        # The backup header and its entry array (at most 1 MiB) stay out of reach.
        kept = disk_size - usable_end
        assert kept % block_size == 0 and block_size <= kept <= block_size + (1 << 20)


# -- superblocks ----------------------------------------------------------------------------------
# As mountinfo gives them: the kernel escapes a newline in the type (a FUSE subtype is the
# mounting user's choice), so none holds one.
FSTYPES = st.one_of(st.sampled_from(["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "swap", "",
                                     "ext4\r", "EXT4", "fuse.\x1b[2J"]),
                    st.text(st.characters(blacklist_characters="\n"), max_size=8))
SUPERBLOCKS = st.one_of(
    st.binary(max_size=5000),
    st.integers(0, 1 << 62).flatmap(lambda size: st.sampled_from([
        ext4_superblock(size), xfs_superblock(size), xfs_superblock(size, 512, 0),
        btrfs_superblock(size)])).flatmap(patched),
)


@given(FSTYPES, SUPERBLOCKS)
def test_a_superblock_gives_a_size_or_is_refused(fstype, superblock):
    offset, length = grow.superblock_at(fstype)
    assert offset >= 0 and length > 0
    try:
        size, devid = grow.filesystem_size(fstype, superblock)
    except grow.Refused as e:
        refused_is_one_line(e)
        return
    assert fstype in grow.GROWABLE
    assert type(size) is int and type(devid) is int and size >= 0 and devid >= 0
    if fstype == "xfs":
        assert 0 <= grow.xfs_log_blocks(superblock) < 2 ** 32


@given(st.integers(0, 1 << 60), st.sampled_from([1024, 2048, 4096, 65536]))
def test_a_superblock_reads_back_what_was_written(size, block):
    assert grow.filesystem_size("ext4", ext4_superblock(size, block))[0] == size // block * block
    assert grow.filesystem_size("xfs", xfs_superblock(size, block))[0] == size // block * block
    assert grow.filesystem_size("btrfs", btrfs_superblock(size, 7)) == (size, 7)


# -- LVM ------------------------------------------------------------------------------------------
@st.composite
def lvm_heads(draw) -> bytes:
    """The first 2048 bytes of a device (as grow.py reads them): a PV label in one of the first
    sectors, its PV header at any offset, bytes overwritten anywhere."""
    sector = draw(st.integers(0, 4))
    offset = draw(st.one_of(st.sampled_from([32, 456, 457, 0, 31]), st.integers(0, 2 ** 32 - 1)))
    metadata = draw(st.one_of(st.none(), st.just(LVM_MDA), st.tuples(U64, U64)))
    label = bytearray(lvm_pv_label(draw(U64), draw(U64), sector, metadata=metadata))
    struct.pack_into("<I", label, sector * 512 + 20, offset)
    return draw(patched(bytes(label).ljust(2048, b"\0")[:2048], 3)).ljust(2048, b"\0")


@given(st.one_of(lvm_heads(), st.binary(min_size=2048, max_size=2048)))
def test_an_lvm_label_gives_its_size_or_is_refused(head):
    try:
        label = grow.lvm_label(head)
    except grow.Refused as e:
        refused_is_one_line(e)
        return
    assert 0 <= label.size < 2 ** 64 and 0 <= label.pe_start < 2 ** 64
    assert isinstance(label.uuid, str) and len(label.uuid) == 32
    offset, size = label.metadata
    assert 0 <= offset < 2 ** 64 and 0 <= size < 2 ** 64
    assert (offset, size) != (0, 0) or label.metadata == (0, 0)


@given(U64, U64, st.integers(0, 3), st.one_of(st.none(), st.tuples(U64, U64).filter(
    lambda area: area != (0, 0))))
def test_an_lvm_label_reads_back_what_pvcreate_wrote(size, pe_start, sector, metadata):
    head = lvm_pv_label(size, pe_start, sector, metadata=metadata).ljust(2048, b"\0")
    # A data area at 0 would end its list: pvcreate never puts the extents there.
    expected = (metadata or (0, 0)) if pe_start else (0, 0)
    assert grow.lvm_label(head) == grow.PvLabel(PV_UUID, size, pe_start, expected)


# A head shorter than the label's PV header offset + 56 bytes (a read cut short) once raised
# struct.error.
@given(st.one_of(lvm_heads().flatmap(patched), st.binary(max_size=600)))
@example(b"LABELONE" + bytes(12) + struct.pack("<I", 32) + b"LVM2 001")
def test_an_lvm_label_cut_short_is_refused(head):
    try:
        grow.lvm_label(head)
    except grow.Refused as e:
        refused_is_one_line(e)


# -- the metadata area and its text ------------------------------------------------------------------
AREA_SIZES = st.one_of(st.integers(0, 1 << 64), st.sampled_from(
    [0, 1, 511, 512, 513, 1024, 4096, LVM_MDA[1], MiB, MiB + 512, MiB + 513, 1 << 63]))
EDGES = st.sampled_from([0, 1, 511, 512, 513, 4095, 4096, LVM_MDA[1] - 1, LVM_MDA[1], MiB,
                         MiB + 1, 2 ** 63, 2 ** 64 - 1])
MDA_HEADERS = st.one_of(
    st.binary(max_size=600),
    st.tuples(st.one_of(U64, EDGES), st.one_of(U64, EDGES)).map(
        lambda locn: lvm_mda_header(*LVM_MDA, *locn)).flatmap(lambda header: patched(header, 2)),
)


@st.composite
def mda_headers_in_areas(draw):
    """A header whose copy lies near its area's edges: in it, wrapping, or just out of it."""
    area_size = draw(st.one_of(st.integers(LVM_MDA_HEADER + 1, 4 * MiB),
                               st.sampled_from([513, 1024, LVM_MDA[1], MiB + 512])))
    at = draw(st.one_of(st.integers(LVM_MDA_HEADER - 1, area_size),
                        st.sampled_from([area_size - 1, area_size - 512, LVM_MDA_HEADER])))
    size = draw(st.one_of(st.integers(0, area_size - LVM_MDA_HEADER + 1),
                          st.sampled_from([1, MiB, MiB + 1, area_size - at, area_size - at + 1])))
    return lvm_mda_header(*LVM_MDA, at, max(size, 0)), area_size


@given(st.one_of(st.tuples(MDA_HEADERS, AREA_SIZES), mda_headers_in_areas()))
@example((lvm_mda_header(*LVM_MDA, LVM_MDA[1] - 1, MiB), MiB + 512))
@example((lvm_mda_header(*LVM_MDA, 512, MiB), MiB + 512))
def test_metadata_ranges_lie_in_their_area_or_are_refused(header_in_area):
    header, area_size = header_in_area
    try:
        ranges = grow.metadata_ranges(header, area_size)
    except grow.Refused as e:
        refused_is_one_line(e)
        return
    at, size = struct.unpack_from("<QQ", header, 40)
    assert 1 <= len(ranges) <= 2
    assert ranges[0][0] == at
    for offset, length in ranges:
        assert type(offset) is int and type(length) is int
        assert length > 0 and LVM_MDA_HEADER <= offset and offset + length <= area_size
    assert sum(length for _, length in ranges) == size <= MiB
    if len(ranges) == 2:  # wrapped: the first part reaches the end, the rest follows the header
        assert sum(ranges[0]) == area_size and ranges[1][0] == LVM_MDA_HEADER


@given(st.binary(min_size=1, max_size=5000), st.integers(0, 3 * MiB), st.integers(0, 3 * MiB))
def test_metadata_written_anywhere_in_its_area_reads_back(text, at, area_size):
    at, area_size = LVM_MDA_HEADER + at % (area_size + 1), area_size + LVM_MDA_HEADER + len(text)
    at = min(at, area_size - 1)
    area = lvm_mda(text, area_size, at)
    ranges = grow.metadata_ranges(area[:LVM_MDA_HEADER], area_size)
    assert b"".join(area[offset:offset + length] for offset, length in ranges) == text


# What a device's bytes decode to (ASCII, U+FFFD for the rest), LVM's words, and anything.
DASHED = lvm_dashed(PV_UUID)
DEVICE_TEXT = st.characters(max_codepoint=127) | st.just("\ufffd")
WORDS = st.sampled_from([
    "extent_size", "dev_size", "id", "pe_start", " = ", "=", '"', "{", "}", "\n", "\t", "#", " ",
    "0", "8192", "-1", "2048", "pv0 {\n", "}\n", 'id = "', DASHED, "\ufffd", "\u0661",
    "4 Megabytes"])
TEXTS = st.one_of(
    st.text(max_size=2000),
    st.lists(st.one_of(WORDS, st.text(DEVICE_TEXT, max_size=12),
                       st.integers(0, 10 ** 30).map(str)), max_size=80).map("".join),
    st.builds(lvm_vg_text, st.integers(0, 1 << 60), st.just(PV_UUID),
              st.integers(0, 1 << 30).map(lambda n: n * 512)).flatmap(
        lambda text: patched(text.encode(), 6)).map(lambda b: b.decode("ascii", "replace")),
)
UUIDS = st.one_of(st.just(PV_UUID), st.text(max_size=40), st.text(DEVICE_TEXT, min_size=32,
                                                                 max_size=32))


@given(TEXTS, UUIDS)
@example("extent_size = 8192\nid = \"" + DASHED + "\"\ndev_size = 0\n", PV_UUID)
@example("id = \"" + DASHED + "\"\ndev_size = 10\n}\nextent_size = 1\n", PV_UUID)
@example("extent_size = 8192\nid = \"------\"\ndev_size = 7\n", "")
def test_pv_metadata_gives_a_size_and_an_extent_or_is_refused(text, uuid):
    try:
        dev_size, extent = grow.pv_metadata(text, uuid)
    except grow.Refused as e:
        refused_is_one_line(e)
        return
    assert type(dev_size) is int and type(extent) is int
    assert dev_size >= 0 and dev_size % 512 == 0 and extent > 0 and extent % 512 == 0
    assert "dev_size" in text and "extent_size" in text


@given(st.integers(0, 1 << 60), st.integers(1, 1 << 30), st.sampled_from(["", "\t", "    "]),
       st.lists(st.tuples(st.text("abcdefXYZ0123", min_size=32, max_size=32),
                          st.integers(0, 1 << 60)), max_size=3))
def test_pv_metadata_reads_back_what_lvm_wrote(dev_size, extent_sectors, indent, others):
    others = [(uuid, size) for uuid, size in others if uuid != PV_UUID]
    text = lvm_vg_text(dev_size, extent=extent_sectors * 512, indent=indent, others=others)
    assert grow.pv_metadata(text, PV_UUID) == (dev_size // 512 * 512, extent_sectors * 512)


LVM_CHARS = "abcXYZ019+_.-"
LVM_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-")
LVM_NAME = st.text(LVM_CHARS, min_size=1, max_size=12)


@given(st.one_of(st.text(max_size=40), st.text(LVM_CHARS + "-/ \n\u00e9", max_size=40)))
def test_a_device_mapper_name_is_split_or_refused(dm_name):
    name = grow.lvm_name(dm_name)
    if name is None:
        return
    vg, lv = name.split("/")  # exactly one separator
    assert vg and lv and not lv.startswith("-")
    assert set(vg + lv) <= LVM_ALLOWED


@given(LVM_NAME, LVM_NAME.filter(lambda name: not name.startswith("-")))
def test_device_mapper_names_round_trip(vg, lv):
    dm_name = vg.replace("-", "--") + "-" + lv.replace("-", "--")
    assert grow.lvm_name(dm_name) == f"{vg}/{lv}"


# -- the plan (pure) ------------------------------------------------------------------------------
SIZE = st.one_of(st.integers(0, 1 << 50), st.sampled_from([0, grow.MIN_GROWTH, grow.MIN_GROWTH - 1,
                                                           GiB, 20 * GiB]))


@st.composite
def stacks(draw) -> grow.Stack:
    partition = draw(st.none() | st.builds(
        grow.Partition, st.just("vda2"), st.integers(1, 4), SIZE, SIZE,
        st.sampled_from(["gpt", "dos"]), SIZE))
    # extent: what pv_metadata gives, never 0 (it refuses an extent_size of 0)
    volume = draw(st.none() | st.builds(
        grow.Volume, st.just("dm-0"), st.just("vg/root"), SIZE, st.just("vda2"), SIZE, SIZE,
        st.one_of(st.integers(1, 1 << 40).map(lambda n: n * 512),
                  st.sampled_from([512, 4 * MiB, GiB])), SIZE))
    return grow.Stack("/", draw(st.sampled_from(["ext4", "xfs", "btrfs"])), device="vda2",
                      disk="vda", disk_size=draw(SIZE), fs_size=draw(SIZE), partition=partition,
                      volume=volume, problem=draw(st.sampled_from(["", "", "refused"])))


LAYERS = ["partition", "physical volume", "logical volume", "filesystem"]


@given(stacks(), st.booleans())
def test_a_plan_grows_bottom_up_and_never_shrinks(stack, grow_lv):
    decided = grow.plan(stack, grow_lv)
    layers = [step.layer for step in decided.steps]
    assert layers == sorted(layers, key=LAYERS.index) and len(set(layers)) == len(layers)
    assert decided.left >= 0
    for step in decided.steps:
        assert step.grows_to - step.size >= grow.MIN_GROWTH, step
    if stack.problem:
        assert decided.steps == () and decided.held == stack.problem
    if not grow_lv:
        assert "logical volume" not in layers
    if not stack.partition:
        assert "partition" not in layers
    if not stack.volume:
        assert not {"physical volume", "logical volume"} & set(layers)
        assert decided.held == stack.problem  # only a volume group holds space back


# -- CONFIG_GROW_MOUNTPOINTS ------------------------------------------------------------------------
VALUE = st.one_of(st.text(max_size=40), st.lists(st.one_of(
    st.sampled_from(["/", "//", "/var", "/srv/", "/srv/./data", "/a/../b", "..", "var", " ", "\t",
                     "'", '"', "\\ ", "$(x)", "#", "\u00a0", "\u2028", "\x85", "\udcff", "\x00",
                     "/donn\u00e9es", "/\x1b[2J"]),
    st.text(max_size=5)), max_size=8).map("".join))


@given(VALUE, st.booleans())
def test_grow_mountpoints_are_absolute_normal_paths_or_a_problem(value, quoted):
    text = f"CONFIG_GROW_MOUNTPOINTS='{value}'\n" if quoted else f"CONFIG_GROW_MOUNTPOINTS={value}\n"
    settings = config.parse(text, "/etc/default/gandi")
    paths = settings.grow_mountpoints
    assert isinstance(paths, tuple) and len(set(paths)) == len(paths)
    for path in paths:
        assert path.startswith("/") and not path.startswith("//"), path
        assert posixpath.normpath(path) == path and ".." not in path.split("/"), path
        assert path.isprintable() and not any(c.isspace() for c in path), path
    for _, message in settings.problems:
        assert message.startswith("/etc/default/gandi:") and "\n" not in message
    if any("CONFIG_GROW_MOUNTPOINTS" in message for _, message in settings.problems):
        assert paths == Settings().grow_mountpoints  # a bad value keeps the default


# -- the whole path on a garbage guest ----------------------------------------------------------------
VDA = "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vda"
DM = "/sys/devices/virtual/block/dm-0"
LV_UUID = b"LVM-" + b"A" * 32 + b"B" * 32 + b"\n"
PV_SIZE = 20 * GiB - 33 * 512 - 513 * MiB


def every_superblock(size: int) -> bytes:
    """XFS at 0, ext4 at 1024, btrfs at 64 KiB: one image answers for every fstype."""
    image = bytearray(65536 + 4096)
    image[0:512] = xfs_superblock(size)
    image[1024:2048] = ext4_superblock(size)
    image[65536:] = btrfs_superblock(size)
    return bytes(image)


def pv_image() -> bytes:
    """vda2's first MiB: the PV label (pvcreate made it 10 GiB), the metadata area recording
    PV_SIZE (pvresize since), and the superblocks every_superblock puts around them."""
    image = bytearray(lvm_pv(10 * GiB, PV_SIZE, device="/dev/vda2"))
    every = every_superblock(PV_SIZE)
    for start, end in ((0, 512), (1024, 2048), (65536, len(every))):
        assert not any(image[start:end])
        image[start:end] = every[start:end]
    return bytes(image)


PLAUSIBLE: Dict[str, bytes] = {
    f"{VDA}/size": b"83886080\n", f"{VDA}/dev": b"253:0\n",
    f"{VDA}/queue/logical_block_size": b"512\n",
    f"{VDA}/vda1/size": b"1048576\n", f"{VDA}/vda1/start": b"2048\n",
    f"{VDA}/vda1/partition": b"1\n", f"{VDA}/vda1/dev": b"253:1\n",
    f"{VDA}/vda2/size": b"%d\n" % (PV_SIZE // 512), f"{VDA}/vda2/start": b"1050624\n",
    f"{VDA}/vda2/partition": b"2\n", f"{VDA}/vda2/dev": b"253:2\n",
    f"{DM}/size": b"%d\n" % ((PV_SIZE - MiB) // 512), f"{DM}/dev": b"252:0\n",
    f"{DM}/dm/uuid": LV_UUID, f"{DM}/dm/name": b"my--vg-root\n",
    "/dev/vda": gpt(20 * GiB), "/dev/vda1": every_superblock(512 * MiB),
    "/dev/vda2": pv_image(),
    "/dev/dm-0": every_superblock(PV_SIZE - 2 * MiB),
    "/etc/fstab": b"/dev/vda1 /boot ext4 defaults 0 2\nUUID=1 / ext4 defaults 0 1\n",
    "/run/gandi/grow/dm-0.json": b'{"mountpoint": "/", "state": "failed", "reason": "busy"}\n',
    "/run/gandi/disk/vda2.json": b'{"device": "vda2", "mountpoint": "/srv/data", "ours": true}\n',
}
LINKS = {"/sys/class/block/vda": VDA, "/sys/dev/block/253:0": VDA,
         "/sys/class/block/vda1": f"{VDA}/vda1", "/sys/dev/block/253:1": f"{VDA}/vda1",
         "/sys/class/block/vda2": f"{VDA}/vda2", "/sys/dev/block/253:2": f"{VDA}/vda2",
         "/sys/class/block/dm-0": DM, "/sys/dev/block/252:0": DM,
         f"{DM}/slaves/vda2": f"{VDA}/vda2", f"{VDA}/vda2/holders/dm-0": DM}
GARBAGE = st.one_of(st.binary(max_size=60), st.sampled_from(
    [b"", b"0\n", b"-1\n", b"99999999999999999999999\n", b"\xff\n", b"4096\n", b"CRYPT-x\n",
     b"vg-\n"]))
@st.composite
def trees(draw) -> Dict[str, Optional[bytes]]:
    """The plausible guest with a few of its files made garbage, cut, patched or removed (all of
    them broken at once would stop every example at the first fact read)."""
    tree: Dict[str, Optional[bytes]] = dict(PLAUSIBLE)
    for path in draw(st.sets(st.sampled_from(sorted(PLAUSIBLE)), max_size=4)):
        tree[path] = draw(st.one_of(GARBAGE, st.none(), patched(PLAUSIBLE[path], 4)))
    if draw(st.booleans()):
        # vda2's metadata area (its header and text, 4 KiB from 4 KiB on) patched or cut: a
        # patch anywhere in its MiB would seldom land there. The label is left to
        # test_an_lvm_label_gives_its_size_or_is_refused (and an area offset past 2^63 to
        # test_grow.py's test_a_metadata_area_offset_past_any_device_is_refused).
        image = PLAUSIBLE["/dev/vda2"]
        area = draw(patched(image[4096:8192], 6))
        tree["/dev/vda2"] = image[:4096] + area + (image[8192:] if len(area) == 4096 else b"")
    return tree


MOUNT_LINES = st.lists(st.one_of(
    st.sampled_from([
        b"22 1 252:0 / / rw,relatime - %s /dev/mapper/my--vg-root rw\n",
        b"23 22 253:1 / /boot rw - %s /dev/vda1 rw\n",
        b"24 22 253:2 / /srv/data rw - %s /dev/vda2 rw\n",
        b"25 22 0:33 / /srv/data rw - %s /dev/vda2 rw\n",
        b"26 1 253:2 / / rw - %s /dev/vda2 rw\n",
        b"27 22 0:5 / /run rw - %s tmpfs rw\n"]).flatmap(lambda line: st.sampled_from(
            [b"ext4", b"ext4", b"btrfs", b"xfs", b"vfat"]).map(lambda fstype: line % fstype)),
    st.binary(max_size=60)), min_size=1, max_size=5).map(b"".join)
GROW_SETTINGS = st.builds(Settings, grow_root=st.booleans(), grow_root_lv=st.booleans(),
                          grow_mountpoints=st.one_of(st.just(("/",)), st.lists(st.sampled_from(
                              ["/", "/boot", "/srv/data", "/var"]), unique=True).map(tuple)))
ANSWERS = st.tuples(st.sampled_from([0, 1, 2, 5, 127]),
                    st.one_of(st.just(""), st.just("NOCHANGE: partition 2 cannot be grown\n"),
                              st.text(max_size=40)))
STATES = {"up to date", "can grow", "held", "disabled", "refused", "failed", "not mounted"}


def _build(root: str, tree: Dict[str, Optional[bytes]], mountinfo: bytes) -> None:
    for path, content in {**tree, "/proc/self/mountinfo": mountinfo}.items():
        if content is not None:
            real = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as f:
                f.write(content)
    for link, target in LINKS.items():
        real = os.path.join(root, link.lstrip("/"))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        os.makedirs(os.path.join(root, target.lstrip("/")), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), real)


def _fingerprint(root: str) -> Dict[str, str]:
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            real = os.path.join(directory, name)
            if os.path.islink(real):
                seen[real] = "->" + os.readlink(real)
            elif os.path.isfile(real):
                with open(real, "rb") as f:
                    seen[real] = hashlib.sha256(f.read()).hexdigest()
            else:
                seen[real] = "dir"
    return seen


@contextlib.contextmanager
def commands_answering(code: int, out: str) -> Iterator[list]:
    """subprocess.run replaced: nothing of the machine running the tests is ever run."""
    ran: list = []

    def run(argv, **kwargs):
        ran.append(list(argv))
        return subprocess.CompletedProcess(argv, code, out, "")

    with mock.patch("subprocess.run", run):
        yield ran


def _check(outcome: grow.Outcome) -> None:
    assert outcome.state in (grow.GROWN, grow.UNCHANGED, grow.SKIPPED, grow.FAILED), outcome
    assert "\n" not in outcome.line(), outcome


@given(trees(), MOUNT_LINES, GROW_SETTINGS, ANSWERS)
def test_grow_on_a_garbage_guest_is_an_answer_not_a_traceback(tree, mountinfo, settings, answer):
    with tempfile.TemporaryDirectory() as root, commands_answering(*answer) as ran:
        _build(root, tree, mountinfo)
        before = _fingerprint(root)
        plan = io.StringIO()
        dry = Host(root, dry_run=True, plan=plan)
        for row in grow.status(dry, settings):
            assert row["state"] in STATES and "\n" not in str(row["reason"]), row
            assert row["mountpoint"] in settings.grow_mountpoints
        for outcome in grow.configured(dry, settings) + grow.disk_resized(dry, settings, "vda"):
            _check(outcome)
            assert not outcome.failed  # a dry run runs nothing that could fail
        assert ran == [] and _fingerprint(root) == before
        assert all(line.startswith("would run ") for line in plan.getvalue().splitlines())

        host = Host(root)
        outcomes = grow.configured(host, settings) + grow.disk_resized(host, settings, "vda")
        for outcome in outcomes:
            _check(outcome)
        programs = [os.path.basename(argv[0]) for argv in ran]
        assert set(programs) <= {"growpart", "pvresize", "lvextend", "resize2fs", "xfs_growfs",
                                 "btrfs"}
        for row in grow.status(host, settings):
            assert row["state"] in STATES and "\n" not in str(row["reason"]), row
