"""Fake-system builders for the unit tests (used by conftest.py and imported by test modules):
sysfs block devices and the headers on them (partition tables, superblocks, LVM labels and
metadata areas), network interfaces, vCPUs and memory blocks, /proc/self/mountinfo,
per-interface /proc/sys values, and a Host whose commands return canned results and are recorded
(argv lists) instead of being executed.

Everything here writes through the patched `os`/`open` of the pyfakefs `fs` fixture, so the code
under test sees an ordinary tree rooted at "/" (or at `root` when a test uses --root).
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from gandi_vm.host import Host, Result

VIRTIO = "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block"
VIRTUAL = "/sys/devices/virtual/block"


def _at(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _symlink(target: str, link: str) -> None:
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def add_disk(fs, name: str, devno: str, size_sectors: int,
             partitions: Sequence[Tuple[str, str, int]] = (), ro: bool = False,
             holders: Sequence[str] = (), parent: str = VIRTIO, root: str = "/") -> str:
    """A whole disk under `parent`, with /sys/class/block and /sys/dev/block links and a /dev node.

    partitions: (name, devno, size_sectors) tuples, numbered 1, 2, ... in order.
    Returns the disk's sysfs directory (guest path)."""
    base = f"{parent}/{name}"
    _write(_at(root, f"{base}/size"), f"{size_sectors}\n")
    _write(_at(root, f"{base}/ro"), "1\n" if ro else "0\n")
    _write(_at(root, f"{base}/dev"), f"{devno}\n")
    os.makedirs(_at(root, f"{base}/holders"), exist_ok=True)
    for holder in holders:
        os.makedirs(_at(root, f"{base}/holders/{holder}"), exist_ok=True)
    os.makedirs(_at(root, f"{base}/queue"), exist_ok=True)  # a non-partition child directory
    _link_block(name, devno, base, root)
    for number, (pname, pdevno, psize) in enumerate(partitions, 1):
        pbase = f"{base}/{pname}"
        _write(_at(root, f"{pbase}/size"), f"{psize}\n")
        _write(_at(root, f"{pbase}/ro"), "1\n" if ro else "0\n")
        _write(_at(root, f"{pbase}/dev"), f"{pdevno}\n")
        _write(_at(root, f"{pbase}/partition"), f"{number}\n")
        os.makedirs(_at(root, f"{pbase}/holders"), exist_ok=True)
        _link_block(pname, pdevno, pbase, root)
    return base


def add_dm(fs, name: str, devno: str, size_sectors: int, slaves: Sequence[str],
           root: str = "/") -> str:
    """A device-mapper device whose slaves/ lists `slaves`; each slave gets a holders/ entry."""
    base = f"{VIRTUAL}/{name}"
    _write(_at(root, f"{base}/size"), f"{size_sectors}\n")
    _write(_at(root, f"{base}/ro"), "0\n")
    _write(_at(root, f"{base}/dev"), f"{devno}\n")
    os.makedirs(_at(root, f"{base}/holders"), exist_ok=True)
    for slave in slaves:
        slave_dir = os.path.realpath(_at(root, f"/sys/class/block/{slave}"))
        _symlink(slave_dir, _at(root, f"{base}/slaves/{slave}"))
        os.makedirs(os.path.join(slave_dir, "holders", name), exist_ok=True)
    _link_block(name, devno, base, root)
    return base


def _link_block(name: str, devno: str, sysdir: str, root: str) -> None:
    # Relative links, as the kernel makes them, so they also resolve under a --root tree.
    class_link = _at(root, f"/sys/class/block/{name}")
    dev_link = _at(root, f"/sys/dev/block/{devno}")
    _symlink(os.path.relpath(_at(root, sysdir), os.path.dirname(class_link)), class_link)
    _symlink(os.path.relpath(_at(root, sysdir), os.path.dirname(dev_link)), dev_link)
    _write(_at(root, f"/dev/{name}"), "")


def set_size(name: str, size_sectors: int, root: str = "/") -> None:
    _write(_at(root, f"/sys/class/block/{name}/size"), f"{size_sectors}\n")


def set_attr(name: str, attr: str, value: object, root: str = "/") -> None:
    """A sysfs attribute of a block device: set_attr("vda1", "start", 2048),
    set_attr("vda", "queue/logical_block_size", 4096), set_attr("dm-0", "dm/name", "vg-root")."""
    _write(_at(root, f"/sys/class/block/{name}/{attr}"), f"{value}\n")


def write_device(name: str, data: bytes, offset: int = 0, root: str = "/") -> None:
    """Put `data` at `offset` in /dev/NAME (zeros before it if the node is shorter): a partition
    table, a superblock, an LVM label, where the code under test reads them."""
    path = _at(root, f"/dev/{name}")
    try:
        with open(path, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        content = b""
    content = content.ljust(offset, b"\0")
    content = content[:offset] + data + content[offset + len(data):]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def escape(field: str) -> str:
    """The kernel's mountinfo escaping (space, tab, newline, backslash as \\NNN)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


MountSpec = Tuple[str, str, str, str]  # (devno, mountpoint, fstype, source)


def mountinfo_line(index: int, devno: str, mountpoint: str, fstype: str, source: str) -> str:
    # Optional fields ("shared:N master:M") sit between the options and the " - " separator.
    return (f"{20 + index} 1 {devno} / {escape(mountpoint)} rw,relatime shared:{index} "
            f"master:1 - {fstype} {escape(source)} rw\n")


def write_mountinfo(fs, entries: Sequence[MountSpec], root: str = "/") -> None:
    text = "".join(mountinfo_line(i, *e) for i, e in enumerate(entries, 1))
    _write(_at(root, "/proc/self/mountinfo"), text)


def write_swaps(fs, paths: Sequence[str], root: str = "/") -> None:
    text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    text += "".join(f"{escape(p)}\t\t\t\tpartition\t2097148\t\t0\t\t-2\n" for p in paths)
    _write(_at(root, "/proc/swaps"), text)


def system(fs, root: str = "/") -> None:
    """A plain guest: system disk vda (vda1 holds /), empty fstab, no swap, /srv present."""
    add_disk(fs, "vda", "253:0", 20971520, partitions=[("vda1", "253:1", 20969472)], root=root)
    write_mountinfo(fs, [("253:1", "/", "ext4", "/dev/vda1"),
                         ("0:22", "/proc", "proc", "proc"),
                         ("0:5", "/run", "tmpfs", "tmpfs")], root=root)
    write_swaps(fs, [], root=root)
    _write(_at(root, "/etc/fstab"), "# <file system> <mount point> <type> <options>\n"
           "/dev/vda1 / ext4 errors=remount-ro 0 1\n")
    os.makedirs(_at(root, "/srv"), exist_ok=True)


def blkid_udev(fstype: str = "ext4", label: Optional[str] = None, uuid: str = "",
               usage: str = "filesystem", **extra: str) -> str:
    """`blkid -p -o udev` output; `label` is given already \\x-encoded (ID_FS_LABEL_ENC)."""
    lines = []
    if label is not None:
        lines.append(f"ID_FS_LABEL_ENC={label}")
    if uuid:
        lines.append(f"ID_FS_UUID={uuid}")
    if fstype:
        lines.append(f"ID_FS_TYPE={fstype}")
    if usage:
        lines.append(f"ID_FS_USAGE={usage}")
    lines += [f"{k}={v}" for k, v in extra.items()]
    return "".join(line + "\n" for line in lines)


# -- on-disk headers, as the tools write them (grow.py reads them) -------------------------
def ext4_superblock(size: int, block: int = 4096) -> bytes:
    """The 1024 bytes at offset 1024: blocks count (low 32 bits, high 32 bits with the 64bit
    feature), log2(block size) - 10, the magic."""
    sb = bytearray(1024)
    blocks = size // block
    struct.pack_into("<I", sb, 0x04, blocks & 0xFFFFFFFF)
    struct.pack_into("<I", sb, 0x18, block.bit_length() - 11)
    sb[0x38:0x3A] = b"\x53\xef"
    struct.pack_into("<I", sb, 0x60, 0x80 | 0x40 | 0x2)  # 64bit, extents, filetype
    struct.pack_into("<I", sb, 0x150, blocks >> 32)
    return bytes(sb)


def xfs_superblock(size: int, block: int = 4096, log_blocks: int = 2560) -> bytes:
    """Big-endian: sb_blocksize, sb_dblocks, sb_logstart (internal log), sb_logblocks."""
    sb = bytearray(512)
    sb[:4] = b"XFSB"
    struct.pack_into(">IQ", sb, 4, block, size // block)
    struct.pack_into(">Q", sb, 48, (size // block) // 2 if log_blocks else 0)
    struct.pack_into(">I", sb, 96, log_blocks)
    return bytes(sb)


def btrfs_superblock(size: int, devid: int = 1) -> bytes:
    """At 64 KiB: the magic at 0x40, then dev_item (devid, total_bytes) at 0xC9."""
    sb = bytearray(4096)
    sb[0x40:0x48] = b"_BHRfS_M"
    struct.pack_into("<QQ", sb, 0x70, size, 0)  # the filesystem's total, not what is read
    struct.pack_into("<QQ", sb, 0xC9, devid, size)
    return bytes(sb)


def mbr(entries: Sequence[Tuple[int, int, int]], signature: bytes = b"\x55\xaa") -> bytes:
    """A DOS table: (type, first LBA, sectors) for up to four primary entries."""
    sector = bytearray(512)
    for i, (kind, start, sectors) in enumerate(entries):
        entry = 446 + 16 * i
        sector[entry + 4] = kind
        struct.pack_into("<II", sector, entry + 8, start, min(sectors, 0xFFFFFFFF))
    sector[510:512] = signature
    return bytes(sector)


def gpt(disk_size: int, block: int = 512, entries: int = 128, entry_size: int = 128,
        header: bool = True, good_crc: bool = True) -> bytes:
    """The protective MBR (LBA 0) and the primary GPT header (LBA 1), its CRC32 computed over
    its 92 bytes with the CRC field zeroed, as UEFI specifies."""
    blocks = disk_size // block
    lba0 = mbr([(0xEE, 1, blocks - 1)]).ljust(block, b"\0")
    if not header:
        return lba0 + bytes(block)
    backup = 1 + -(-entries * entry_size // block)
    head = bytearray(block)
    struct.pack_into("<8sIII", head, 0, b"EFI PART", 0x00010000, 92, 0)
    struct.pack_into("<QQQQ", head, 24, 1, blocks - 1, 2 + -(-entries * entry_size // block),
                     blocks - 1 - backup)
    head[56:72] = bytes(range(16))  # disk GUID
    struct.pack_into("<QIII", head, 72, 2, entries, entry_size, 0)
    crc = zlib.crc32(bytes(head[:92]))
    struct.pack_into("<I", head, 16, crc if good_crc else crc ^ 0x5A5A)
    return lba0 + bytes(head)


def gpt_usable_end(disk_size: int, block: int = 512, entries: int = 128,
                   entry_size: int = 128) -> int:
    """Where the backup entry array starts (the backup header is the disk's last block)."""
    return disk_size - (1 + -(-entries * entry_size // block)) * block


# LVM2 as pvcreate, vgcreate and pvresize leave it (lib/format_text/layout.h): a label in one of
# the first four sectors, whose PV header lists the data areas then the metadata areas (each list
# ended by a zero entry); a metadata area is a 512-byte header and a circular buffer holding the
# volume group's text metadata, where the header's raw_locn says the current copy lies.
LVM_MDA_MAGIC = b" LVM2 x[5A%r0N*>"
LVM_MDA_HEADER = 512
LVM_MDA = (4096, (1 << 20) - 4096)  # pvcreate's first metadata area: from 4 KiB to pe_start
LVM_EXTENT = 4 << 20
PV_UUID = "pvuuidpvuuidpvuuidpvuuidpvuuidxx"  # as the label stores it: 32 characters, no dashes
VG_UUID = "VGvgVGvgVGvgVGvgVGvgVGvgVGvgVGvg"
LV_ID = "LVlvLVlvLVlvLVlvLVlvLVlvLVlvLVlv"


def lvm_dashed(uuid: str) -> str:
    """The metadata's form of an LVM id: 6-4-4-4-4-4-6 characters joined by dashes."""
    cuts = (0, 6, 10, 14, 18, 22, 26, 32)
    return "-".join(uuid[a:b] for a, b in zip(cuts, cuts[1:]))


def lvm_crc(data: bytes) -> int:
    """LVM's calc_crc: CRC-32 from 0xf597a6cf, without zlib's inversions."""
    return ~zlib.crc32(data, ~0xF597A6CF & 0xFFFFFFFF) & 0xFFFFFFFF


def lvm_pv_label(size: int, pe_start: int = 1 << 20, sector: int = 1, offset: int = 32,
                 uuid: str = PV_UUID,
                 metadata: Optional[Tuple[int, int]] = LVM_MDA) -> bytes:
    """The first sectors of an LVM2 physical volume: the label ("LABELONE", its sector, a CRC,
    the offset of the PV header, "LVM2 001"), then the PV header: its uuid, the device size
    pvcreate saw (pvresize never updates it), the data area (where the extents start) and a zero
    entry, then the metadata area `metadata` (offset, size; None: pvcreate --metadatacopies 0)
    and a zero entry. What does not fit the sector is cut, as a header at a late offset would be."""
    label = bytearray(512 + 128)
    label[:8] = b"LABELONE"
    struct.pack_into("<QII", label, 8, sector, 0, offset)
    label[24:32] = b"LVM2 001"
    label[offset:offset + 32] = uuid.encode("ascii", "replace")[:32].ljust(32, b"\0")
    struct.pack_into("<QQQ", label, offset + 32, size, pe_start, 0)  # data area 1, then zeros
    if metadata is not None:
        struct.pack_into("<QQ", label, offset + 72, *metadata)  # then zeros: the list's end
    label = label[:512]
    struct.pack_into("<I", label, 16, lvm_crc(bytes(label[20:])))
    return bytes(sector * 512) + bytes(label)


def lvm_vg_text(dev_size: int, uuid: str = PV_UUID, extent: int = LVM_EXTENT,
                pe_start: int = 1 << 20, vg: str = "my-vg", lv_extents: Optional[int] = None,
                others: Sequence[Tuple[str, int]] = (), seqno: int = 1, indent: str = "",
                device: str = "/dev/vda2") -> str:
    """A volume group's text metadata as LVM writes it into a metadata area (the backup files in
    /etc/lvm/backup indent it with tabs: `indent`): the VG's extent_size (sectors), then each PV's
    id and dev_size (sectors), `others` (uuid, dev_size in bytes) first, then this PV, then the LV
    root on this PV (`lv_extents`, default every extent)."""
    def pe_count(size: int) -> int:
        return max(0, (size - pe_start) // extent) if extent > 0 else 0

    lv_extents = pe_count(dev_size) if lv_extents is None else lv_extents
    pvs = [(uuid_, size_, f"/dev/vd{'bcdefgh'[i]}") for i, (uuid_, size_) in enumerate(others)]
    pvs.append((uuid, dev_size, device))
    t1, t2, t3, t4 = (indent * n for n in (1, 2, 3, 4))
    lines = [f"{vg} {{", f'{t1}id = "{lvm_dashed(VG_UUID)}"', f"{t1}seqno = {seqno}",
             f'{t1}format = "lvm2"\t# informational',
             f'{t1}status = ["RESIZEABLE", "READ", "WRITE"]', f"{t1}flags = []",
             f"{t1}extent_size = {extent // 512}\t# {extent >> 20} Megabytes", f"{t1}max_lv = 0",
             f"{t1}max_pv = 0", f"{t1}metadata_copies = 0", "", f"{t1}physical_volumes {{", ""]
    for n, (uuid_, size_, device_) in enumerate(pvs):
        count = pe_count(size_)
        lines += [f"{t2}pv{n} {{", f'{t3}id = "{lvm_dashed(uuid_)}"',
                  f'{t3}device = "{device_}"\t# Hint only', "",
                  f'{t3}status = ["ALLOCATABLE"]', f"{t3}flags = []",
                  f"{t3}dev_size = {size_ // 512}\t# {size_ / (1 << 20):.3f} Megabytes",
                  f"{t3}pe_start = {pe_start // 512}",
                  f"{t3}pe_count = {count}\t# {count * extent >> 20} Megabytes", f"{t2}}}", ""]
    lines += [f"{t1}}}", "", f"{t1}logical_volumes {{", "", f"{t2}root {{",
              f'{t3}id = "{lvm_dashed(LV_ID)}"', f'{t3}status = ["READ", "WRITE", "VISIBLE"]',
              f"{t3}flags = []", f"{t3}creation_time = 1700000000\t# 2023-11-14 22:13:20 +0000",
              f'{t3}creation_host = "build"', f"{t3}segment_count = 1", "",
              f"{t3}segment1 {{", f"{t4}start_extent = 0",
              f"{t4}extent_count = {lv_extents}\t# {lv_extents * extent >> 20} Megabytes", "",
              f'{t4}type = "striped"', f"{t4}stripe_count = 1\t# linear", "",
              f"{t4}stripes = [", f'{t4}"pv{len(pvs) - 1}", 0', f"{t4}]", f"{t3}}}", f"{t2}}}",
              f"{t1}}}", "", "}",
              "# Generated by LVM2 version 2.03.16(2) (2022-05-18): Tue Dec  1 01:30:44 2026",
              "", 'contents = "Text Format Volume Group"', "version = 1", "",
              f'description = "Write from pvresize {device}."', "",
              'creation_host = "build"\t# Linux build 6.1.0-13-amd64 #1 SMP x86_64',
              "creation_time = 1764552644\t# Tue Dec  1 01:30:44 2026", "", ""]
    return "\n".join(lines)


def lvm_mda_header(area_offset: int, area_size: int, text_at: int, text_size: int,
                   text_crc: int = 0, magic: bytes = LVM_MDA_MAGIC) -> bytes:
    """A metadata area's 512-byte header: checksum, magic, version 1, the area's own offset and
    size, then raw_locn (offset in the area, size, checksum, flags) of the committed copy, and a
    zero raw_locn (no precommitted copy)."""
    header = bytearray(LVM_MDA_HEADER)
    header[4:20] = magic[:16].ljust(16, b"\0")
    struct.pack_into("<IQQ", header, 20, 1, area_offset, area_size)
    struct.pack_into("<QQII", header, 40, text_at, text_size, text_crc, 0)
    struct.pack_into("<I", header, 0, lvm_crc(bytes(header[4:])))
    return bytes(header)


def lvm_mda_pieces(text: bytes, area_size: int, at: int) -> List[Tuple[int, bytes]]:
    """(offset in the area, bytes) of a copy written at `at` of the circular buffer: what runs
    past the area's end goes on right after its header."""
    first = min(len(text), area_size - at)
    pieces = [(at, text[:first])]
    if first < len(text):
        pieces.append((LVM_MDA_HEADER, text[first:]))
    return pieces


def lvm_mda(text: bytes, area_size: int = LVM_MDA[1], at: int = LVM_MDA_HEADER,
            area_offset: int = LVM_MDA[0], magic: bytes = LVM_MDA_MAGIC) -> bytes:
    """A whole metadata area: the header, the copy of `text` at `at` (wrapped if it must)."""
    area = bytearray(area_size)
    for offset, piece in lvm_mda_pieces(text, area_size, at):
        area[offset:offset + len(piece)] = piece
    area[:LVM_MDA_HEADER] = lvm_mda_header(area_offset, area_size, at, len(text), lvm_crc(text),
                                           magic)
    return bytes(area)


def lvm_pv(size: int, dev_size: Optional[int] = None, pe_start: int = 1 << 20,
           extent: int = LVM_EXTENT, uuid: str = PV_UUID,
           metadata: Tuple[int, int] = LVM_MDA, text: Optional[str] = None,
           at: int = LVM_MDA_HEADER, **vg) -> bytes:
    """The head of a physical volume of a volume group, up to the end of its metadata area: the
    label recording `size` (pvcreate's), the area holding the VG's metadata `text` (default
    lvm_vg_text recording `dev_size`, default `size`, with `vg`'s keywords) at `at`."""
    if text is None:
        text = lvm_vg_text(size if dev_size is None else dev_size, uuid, extent, pe_start, **vg)
    area_offset, area_size = metadata
    head = lvm_pv_label(size, pe_start, uuid=uuid, metadata=metadata).ljust(area_offset, b"\0")
    return head + lvm_mda(text.encode(), area_size, at, area_offset)


# -- network interfaces ---------------------------------------------------------------------
ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772


def add_nic(fs, name: str, ifindex: int, mac: str, driver: str = "virtio_net", backed: bool = True,
            kind: str = "", operstate: str = "down", root: str = "/") -> str:
    """An interface as the kernel shows it: /sys/class/net/NAME is a link to its directory.

    backed: a virtio NIC (directory under a PCI/virtio device, a `device` link to it, and the
    device's `driver` link to /sys/bus/virtio/drivers/DRIVER); otherwise a software interface
    under /sys/devices/virtual/net. kind: bridge, vlan or bond (DEVTYPE= in uevent), tun
    (a tun_flags attribute), anything else leaves no trace. Returns the directory (guest path)."""
    if backed:
        device = f"/sys/devices/pci0000:00/0000:00:{ifindex + 2:02x}.0/virtio{ifindex}"
        base = f"{device}/net/{name}"
    else:
        base = f"/sys/devices/virtual/net/{name}"
    _write(_at(root, f"{base}/ifindex"), f"{ifindex}\n")
    _write(_at(root, f"{base}/address"), f"{mac}\n")
    _write(_at(root, f"{base}/type"), f"{ARPHRD_LOOPBACK if name == 'lo' else ARPHRD_ETHER}\n")
    _write(_at(root, f"{base}/operstate"), f"{operstate}\n")
    uevent = f"INTERFACE={name}\nIFINDEX={ifindex}\n"
    if kind in ("bridge", "vlan", "bond"):
        uevent = f"DEVTYPE={kind}\n" + uevent
    _write(_at(root, f"{base}/uevent"), uevent)
    if kind == "tun":
        _write(_at(root, f"{base}/tun_flags"), "0x1002\n")
    if backed:
        # Relative links, as the kernel makes them, so they also resolve under a --root tree.
        driver_dir = f"/sys/bus/virtio/drivers/{driver}"
        os.makedirs(_at(root, driver_dir), exist_ok=True)
        _symlink(os.path.relpath(_at(root, device), _at(root, base)), _at(root, f"{base}/device"))
        _symlink(os.path.relpath(_at(root, driver_dir), _at(root, device)),
                 _at(root, f"{device}/driver"))
    class_link = _at(root, f"/sys/class/net/{name}")
    _symlink(os.path.relpath(_at(root, base), os.path.dirname(class_link)), class_link)
    return base


# A new interface's /proc/sys values: each differs from what a secondary interface is given.
SYSCTL_DEFAULTS = {
    "/proc/sys/net/ipv4/conf/{}/arp_announce": "0",
    "/proc/sys/net/ipv4/conf/{}/arp_ignore": "0",
    "/proc/sys/net/ipv4/conf/{}/rp_filter": "1",
    "/proc/sys/net/ipv6/conf/{}/accept_ra": "1",
    "/proc/sys/net/ipv6/conf/{}/accept_ra_defrtr": "1",
}


def add_sysctls(fs, name: str, root: str = "/") -> Dict[str, str]:
    """The interface's /proc/sys/net values; returns {guest path: value} to compare against."""
    values = {template.format(name): value for template, value in SYSCTL_DEFAULTS.items()}
    for path, value in values.items():
        _write(_at(root, path), f"{value}\n")
    return values


# -- vCPUs and memory blocks ------------------------------------------------------------------
CPU_DIR = "/sys/devices/system/cpu"
MEMORY_DIR = "/sys/devices/system/memory"


def cpu_ranges(numbers) -> str:
    """The kernel's range-list format ("0-3,6") for a set of CPU numbers; "" for none."""
    parts: List[str] = []
    for n in sorted(set(numbers)):
        if parts and n == parts[-1][1] + 1:
            parts[-1][1] = n
        else:
            parts.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)


def add_cpus(fs, states: Dict[int, Optional[str]], root: str = "/") -> None:
    """CPUs cpuN under /sys/devices/system/cpu; states[N]: "1" online, "0" offline, None no
    `online` file at all (cpu0, usually: it cannot be offlined), which the kernel counts online.
    online, offline, present and possible are range lists consistent with the states; cpufreq and
    cpuidle stand for the directories that are not CPUs."""
    for n, state in states.items():
        os.makedirs(_at(root, f"{CPU_DIR}/cpu{n}/topology"), exist_ok=True)
        if state is not None:
            _write(_at(root, f"{CPU_DIR}/cpu{n}/online"), f"{state}\n")
    online = [n for n, state in states.items() if state != "0"]
    _write(_at(root, f"{CPU_DIR}/online"), cpu_ranges(online) + "\n")
    _write(_at(root, f"{CPU_DIR}/offline"), cpu_ranges(set(states) - set(online)) + "\n")
    _write(_at(root, f"{CPU_DIR}/present"), cpu_ranges(states) + "\n")
    _write(_at(root, f"{CPU_DIR}/possible"), cpu_ranges(range(max(states, default=0) + 1)) + "\n")
    for other in ("cpufreq", "cpuidle"):
        os.makedirs(_at(root, f"{CPU_DIR}/{other}"), exist_ok=True)


def add_memory_blocks(fs, states: Dict[int, str], block_size: int = 0x8000000,
                      auto_online: Optional[str] = "offline", root: str = "/") -> None:
    """Memory blocks memoryN under /sys/devices/system/memory with `state` states[N] ("online",
    "offline", "going-offline"); block_size_bytes in the kernel's hex without 0x;
    auto_online_blocks absent when auto_online is None."""
    _write(_at(root, f"{MEMORY_DIR}/block_size_bytes"), f"{block_size:x}\n")
    if auto_online is not None:
        _write(_at(root, f"{MEMORY_DIR}/auto_online_blocks"), f"{auto_online}\n")
    for n, state in states.items():
        _write(_at(root, f"{MEMORY_DIR}/memory{n}/state"), f"{state}\n")
        _write(_at(root, f"{MEMORY_DIR}/memory{n}/phys_index"), f"{n:08x}\n")
    os.makedirs(_at(root, f"{MEMORY_DIR}/power"), exist_ok=True)
    _write(_at(root, f"{MEMORY_DIR}/soft_offline_page"), "")


Handler = Callable[[List[str]], Result]


class FakeHost(Host):
    """A Host whose commands are recorded and answered by small simulations instead of run.

    - blkid answers from `signatures[kernel name] = (exit code, output)`; absent -> exit 2.
    - e2fsck exits with `fsck_rc`; mount with `mount_rc` and, on success, appends the device
      to the fake mountinfo; umount removes the mount (or fails with `umount_rc`).
    - anything in `handlers[program basename or full path]` overrides; unknown programs -> 127.
    - statvfs answers from `statfs[guest path] = (f_blocks, f_frsize)`; absent -> ENOENT (pyfakefs
      has no statvfs of its own: the real one would describe the machine running the tests).
    In dry-run, commands that change the system keep Host's behaviour (a printed plan line).
    """

    def __init__(self, root: str = "/", dry_run: bool = False, plan=None):
        super().__init__(root, dry_run=dry_run, plan=plan)
        self.commands: List[List[str]] = []
        self.signatures: Dict[str, Tuple[int, str]] = {}
        self.fsck_rc = 0
        self.mount_rc = 0
        self.umount_rc = 0
        self.handlers: Dict[str, Handler] = {}
        self.lingering: List[List[str]] = []  # commands whose output may outlive them
        self.statfs: Dict[str, Tuple[int, int]] = {}

    def statvfs(self, guest_path: str) -> os.statvfs_result:
        if guest_path not in self.statfs:
            raise FileNotFoundError(errno.ENOENT, "no statfs in this fake system", guest_path)
        blocks, frsize = self.statfs[guest_path]
        return os.statvfs_result((frsize, frsize, blocks, 0, 0, 0, 0, 0, 0, 255))

    def run(self, argv, timeout, changes=True, input=None, lingering=False):
        if changes and self.dry_run:
            return super().run(argv, timeout, changes)
        argv = [str(a) for a in argv]
        self.commands.append(argv)
        if lingering:
            self.lingering.append(argv)
        program = os.path.basename(argv[0])
        handler = self.handlers.get(argv[0]) or self.handlers.get(program)
        if handler is None:
            handler = getattr(self, "_" + program.replace("-", "_"), None)
        if handler is None:
            return Result(argv, 127, stderr=f"{argv[0]}: No such file or directory")
        return handler(argv)

    def programs(self) -> List[str]:
        return [os.path.basename(a[0]) for a in self.commands]

    # -- simulations -------------------------------------------------------------------------
    def _blkid(self, argv: List[str]) -> Result:
        code, out = self.signatures.get(os.path.basename(argv[-1]), (2, ""))
        return Result(argv, code, out)

    def _e2fsck(self, argv: List[str]) -> Result:
        return Result(argv, self.fsck_rc, stdout=f"{argv[-1]}: e2fsck exit {self.fsck_rc}")

    def _mount(self, argv: List[str]) -> Result:
        if self.mount_rc:
            return Result(argv, self.mount_rc, stderr=f"mount: {argv[-1]}: wrong fs type")
        fstype = argv[argv.index("-t") + 1]
        # The kernel records the mountpoint with symlinks resolved.
        device, mountpoint = self.guest(argv[-2]), self.guest(os.path.realpath(argv[-1]))
        devno = self.read_attr(f"/sys/class/block/{os.path.basename(device)}/dev")
        path = self.path("/proc/self/mountinfo")
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        lines.append(mountinfo_line(len(lines) + 1, devno, mountpoint, fstype, device))
        _write(path, "".join(lines))
        return Result(argv, 0)

    def _umount(self, argv: List[str]) -> Result:
        if self.umount_rc and "-l" not in argv:
            return Result(argv, self.umount_rc, stderr=f"umount: {argv[-1]}: target is busy.")
        mountpoint = escape(self.guest(os.path.realpath(argv[-1])))
        path = self.path("/proc/self/mountinfo")
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
        keep = [line for line in lines if line.split(" ")[4] != mountpoint]
        if len(keep) == len(lines):
            return Result(argv, 32, stderr=f"umount: {argv[-1]}: not mounted.")
        _write(path, "".join(keep))
        return Result(argv, 0)

    def _resize2fs(self, argv: List[str]) -> Result:
        return Result(argv, 0)

    def _xfs_growfs(self, argv: List[str]) -> Result:
        return Result(argv, 0)
