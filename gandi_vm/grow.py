"""Grow filesystems into the space their virtual disk gained: the system disk at boot and online,
the data disks we mounted online.

When the platform enlarges a disk, the kernel updates its size and sends a `change` uevent that
carries RESIZE=1: udev/86-gandi.rules starts gandi-resize@<disk>:<sectors>.service, which runs
`gandi-vm disk resize` (`disk_resized`). No uevent announces the space a disk gained while the VM
was stopped: at boot, gandi-mount.service (`gandi-vm mount-all`, after local-fs.target, as
cloud-init's growpart runs) grows CONFIG_GROW_MOUNTPOINTS (`configured`), in the process that
mounts the disks anyway, so that growing costs no interpreter start of its own.

A filesystem sits on a stack of layers, grown bottom up, each into the one below it:

    disk -> last partition, GPT or MBR (growpart) -> LVM physical volume (pvresize)
         -> logical volume (lvextend, only with CONFIG_GROW_ROOT_LV=1)
         -> filesystem, mounted (resize2fs, xfs_growfs, btrfs filesystem resize)

Every fact comes from sysfs and from the headers on the disk (partition table, LVM label,
superblock; for a mounted XFS, statfs), read by this process: when nothing grew, reading them is
all it costs. `plan` is a pure function of those facts. Acting runs the planned commands in
order and stops at the first that fails: each of these tools leaves its layer as it was when it
fails (growpart restores the table it saved), and the next boot or resize event plans again from
the new facts.
"""

from __future__ import annotations

import posixpath
import struct

from gandi_vm import blockdev, log, mounts, state, sysfs
from gandi_vm.config import Settings
from gandi_vm.filesystems import EXT
from gandi_vm.host import Host, command_line
from gandi_vm.record import Record, replace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple, Union


# Less than this is not worth a table rewrite: it also absorbs what no tool can use (the end of a
# disk past the last 1 MiB boundary, an XFS allocation group too small to add, a partial extent).
MIN_GROWTH = 16 << 20
GROW_DIR = "/run/gandi/grow"
# A filesystem grown by terabytes takes seconds to a few minutes; a hung tool never ends. The
# units' own budgets (gandi-mount, gandi-resize@) cover every step at this bound.
STEP_TIMEOUT = 240
GROWABLE = EXT + ("xfs", "btrfs")

GROWN, UNCHANGED, SKIPPED, FAILED = "grown", "unchanged", "skipped", "failed"


class Refused(Exception):
    """A layer that must not be touched, and why (one line, naming the device)."""


# -- facts ---------------------------------------------------------------------------------------
class Partition(Record):
    name: str  # vda1
    number: int
    start: int  # bytes
    size: int  # bytes
    table: str  # "gpt" or "dos"; "" when not read (the partition ends at the disk's end)
    usable_end: int  # bytes: where the table lets its last partition end


class Volume(Record):
    """A plain LVM logical volume on one physical volume."""

    lv: str  # dm-0
    lv_name: str  # "vg/root", as LVM's commands take it
    lv_size: int
    pv: str  # kernel name of the physical volume: vda1 (or vda)
    pv_size: int  # as the volume group's metadata records it (pvresize updates it)
    pe_start: int  # where the PV's extents start
    extent: int  # bytes
    allocated: int  # bytes of the PV under active logical volumes (their device sizes)


class Stack(Record):
    """One mounted filesystem and what lies under it, down to its disk."""

    mountpoint: str
    fstype: str
    device: str = ""  # kernel name of the device holding the filesystem (vda1, dm-0, vda)
    disk: str = ""
    disk_size: int = 0
    fs_size: int = 0
    partition: Optional[Partition] = None
    volume: Optional[Volume] = None
    btrfs_devid: int = 0
    problem: str = ""  # why it must not be grown, found in the facts; "" when it may be


class Step(Record):
    layer: str  # "partition", "physical volume", "logical volume", "filesystem"
    device: str
    argv: Tuple[str, ...]  # guest paths (mapped through the Host when run)
    size: int  # bytes the layer has now
    grows_to: int  # bytes it will have


class Plan(Record):
    steps: Tuple[Step, ...]
    left: int  # bytes the filesystem could gain with every layer grown
    held: str = ""  # why space left is not planned ("" when none is held back)


class Outcome(Record):
    mountpoint: str
    state: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.state == FAILED

    def line(self) -> str:
        return f"grow {self.mountpoint}: {self.state}: {self.reason}"


# -- reading the headers (pure: bytes in, numbers or Refused out) --------------------------------
def partition_table(head: bytes, disk_size: int, block_size: int) -> Tuple[str, int]:
    """The table type and where its last partition may end, from the disk's first two logical
    blocks. A GPT keeps a backup of its entries and header in the last blocks; an MBR cannot
    address past 2^32 blocks. A table that does not check out is not rewritten."""
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        raise Refused("no partition table signature")
    if 0xEE not in (head[446 + 16 * i + 4] for i in range(4)):
        return "dos", min(disk_size, (1 << 32) * block_size)
    header = head[block_size:2 * block_size]
    if len(header) < 92 or header[:8] != b"EFI PART":
        raise Refused("protective MBR without a GPT header")
    header_size, crc = struct.unpack_from("<II", header, 12)
    if not 92 <= header_size <= block_size:
        raise Refused(f"GPT header size {header_size} is invalid")
    import zlib

    if zlib.crc32(header[:16] + b"\0\0\0\0" + header[20:header_size]) != crc:
        raise Refused("GPT header checksum mismatch")
    entries, entry_size = struct.unpack_from("<II", header, 80)
    if entry_size < 128 or entry_size % 8 or entries * entry_size > 1 << 20:
        raise Refused(f"GPT entry array of {entries} x {entry_size} bytes is invalid")
    backup_blocks = 1 + -(-entries * entry_size // block_size)
    return "gpt", disk_size - backup_blocks * block_size


def filesystem_size(fstype: str, superblock: bytes) -> Tuple[int, int]:
    """(bytes, btrfs device id) from the superblock `superblock_at` locates."""
    if fstype in EXT:
        if len(superblock) < 0x154 or superblock[0x38:0x3A] != b"\x53\xef":
            raise Refused(f"no {fstype} superblock")
        low, = struct.unpack_from("<I", superblock, 0x04)
        log_size, = struct.unpack_from("<I", superblock, 0x18)
        incompat, = struct.unpack_from("<I", superblock, 0x60)
        high = struct.unpack_from("<I", superblock, 0x150)[0] if incompat & 0x80 else 0
        if log_size > 6:
            raise Refused(f"{fstype} block size 2^{log_size + 10} is invalid")
        return ((high << 32) | low) * (1024 << log_size), 0
    if fstype == "xfs":
        if len(superblock) < 100 or superblock[:4] != b"XFSB":
            raise Refused("no xfs superblock")
        block_size, blocks = struct.unpack_from(">IQ", superblock, 4)
        if block_size < 512 or block_size > 65536 or block_size & (block_size - 1):
            raise Refused(f"xfs block size {block_size} is invalid")
        return blocks * block_size, 0
    if fstype == "btrfs":
        if len(superblock) < 0xD9 or superblock[0x40:0x48] != b"_BHRfS_M":
            raise Refused("no btrfs superblock")
        devid, total = struct.unpack_from("<QQ", superblock, 0xC9)
        return total, devid
    raise Refused(f"{fstype} cannot be grown online")


def xfs_log_blocks(superblock: bytes) -> int:
    """Blocks of an XFS internal log (sb_logstart != 0), which statfs leaves out of f_blocks."""
    logstart, = struct.unpack_from(">Q", superblock, 48)
    logblocks, = struct.unpack_from(">I", superblock, 96)
    return logblocks if logstart else 0


def superblock_at(fstype: str) -> Tuple[int, int]:
    """(offset, length) of the superblock `filesystem_size` reads."""
    return {"xfs": (0, 512), "btrfs": (65536, 4096)}.get(fstype, (1024, 1024))


def read_superblock(host: Host, fstype: str, node: str) -> bytes:
    """The superblock `superblock_at` locates, read from the device node `node` (a guest path)
    with no process: what growing checks, and fscheck's periodic check settings (no tune2fs)."""
    offset, length = superblock_at(fstype)
    return host.read_bytes(node, length, offset)


class PvLabel(Record):
    uuid: str  # 32 characters, as the metadata writes it without its dashes
    size: int  # the device's size when pvcreate ran: pvresize does not update it
    pe_start: int  # where the extents start
    metadata: Tuple[int, int]  # (offset, size) of the first metadata area; (0, 0) for none


def lvm_label(head: bytes) -> PvLabel:
    """An LVM2 physical volume's label, in one of the device's first four sectors: the PV header
    (uuid, size, then lists of data and metadata areas, each ended by a zero entry)."""
    for sector in range(4):
        label = head[sector * 512:(sector + 1) * 512]
        if label[:8] != b"LABELONE" or label[24:32] != b"LVM2 001":
            continue
        offset, = struct.unpack_from("<I", label, 20)
        # The PV header and its first data area fit the sector, and were read.
        if not 32 <= offset <= 512 - 56 or len(label) < offset + 56:
            break
        uuid = label[offset:offset + 32].decode("ascii", "replace")
        size, pe_start = struct.unpack_from("<QQ", label, offset + 32)  # pe_start: data area 1
        areas = []  # (offset, size) pairs: the data areas, a zero entry, the metadata areas
        for at in range(offset + 40, len(label) - 15, 16):
            areas.append(struct.unpack_from("<QQ", label, at))
            if areas.count((0, 0)) == 2:
                break
        ends = [i for i, area in enumerate(areas) if area == (0, 0)]
        metadata = areas[ends[0] + 1] if len(ends) == 2 and ends[1] > ends[0] + 1 else (0, 0)
        return PvLabel(uuid, size, pe_start, metadata)
    raise Refused("no LVM2 label")


MDA_MAGIC = b" LVM2 x[5A%r0N*>"
MDA_HEADER = 512
MAX_METADATA = 1 << 20


def metadata_ranges(header: bytes, area_size: int) -> List[Tuple[int, int]]:
    """Where the current metadata text lies in a metadata area, from the area's header: (offset
    in the area, length) ranges, two when the text wraps around the area's circular buffer."""
    if len(header) < 64 or header[4:20] != MDA_MAGIC:
        raise Refused("no LVM2 metadata area header")
    offset, size = struct.unpack_from("<QQ", header, 40)
    if not size or size > MAX_METADATA or not MDA_HEADER <= offset < area_size \
            or size > area_size - MDA_HEADER:
        raise Refused("LVM2 metadata location out of its area")
    first = min(size, area_size - offset)
    ranges = [(offset, first)]
    if first < size:
        ranges.append((MDA_HEADER, size - first))
    return ranges


def pv_metadata(text: str, uuid: str) -> Tuple[int, int]:
    """(device size, extent size) in bytes that the volume group's metadata records for this
    physical volume: pvresize updates this dev_size, not the label's. The text is LVM's own
    format (`key = value` lines in `name { ... }` sections); only the keys needed are read."""
    dashed = "-".join((uuid[:6], uuid[6:10], uuid[10:14], uuid[14:18], uuid[18:22],
                       uuid[22:26], uuid[26:]))
    values: Dict[str, int] = {}
    in_pv = False
    for line in text.split("\n"):
        key, sep, value = (part.strip() for part in line.split("#", 1)[0].partition("="))
        if not sep:
            in_pv = in_pv and "}" not in line
            continue
        number = value.isascii() and value.isdigit() and len(value) <= 20  # sectors, a u64
        if key == "id" and value.strip('"') == dashed:
            in_pv = True
        elif key == "extent_size" and "extent_size" not in values and number:
            values["extent_size"] = int(value) * 512
        elif in_pv and key == "dev_size" and number:
            values["dev_size"] = int(value) * 512
    if "dev_size" not in values or not values.get("extent_size"):
        raise Refused("physical volume not found in its volume group's metadata")
    return values["dev_size"], values["extent_size"]


def lvm_name(dm_name: str) -> Optional[str]:
    """'vg-root' -> 'vg/root': device-mapper joins the names with '-', doubling any inside them."""
    i = 0
    while i < len(dm_name):
        if dm_name[i] == "-":
            if dm_name[i + 1:i + 2] == "-":
                i += 2
                continue
            vg, lv = dm_name[:i].replace("--", "-"), dm_name[i + 1:].replace("--", "-")
            allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-")
            if vg and lv and not set(vg + lv) - allowed and not lv.startswith("-"):
                return f"{vg}/{lv}"
            return None
        i += 1
    return None


# -- gathering the facts -------------------------------------------------------------------------
def _size(host: Host, name: str) -> int:
    return (sysfs.read_number(host, f"/sys/class/block/{name}/size") or 0) * 512


def inspect(host: Host, mount: mounts.Mount) -> Stack:
    """The stack under a mounted filesystem; `problem` says why it must not be grown."""
    stack = Stack(mount.mountpoint, mount.fstype)
    try:
        return _inspect(host, mount, stack)
    except Refused as e:
        return replace(stack, problem=str(e))
    except OSError as e:
        where = host.guest(e.filename) if isinstance(e.filename, str) else None
        return replace(stack, problem=f"{where or 'a device'}: {e.strerror or e}")


def _inspect(host: Host, mount: mounts.Mount, stack: Stack) -> Stack:
    if mount.fstype not in GROWABLE:
        # A FUSE subtype is whatever its daemon said: only a plain name is shown as it is.
        plain = mount.fstype.replace(".", "").replace("_", "").isalnum() and mount.fstype.isascii()
        raise Refused(f"{mount.fstype if plain else sysfs.quoted(mount.fstype)} cannot be grown "
                      "online")
    if mount.read_only:  # the owner's ro in /etc/fstab: resizing writes to the filesystem
        raise Refused("mounted read-only")
    device = _device_of(host, mount)
    fs_size, devid = _filesystem_size(host, mount.fstype, device, mount.mountpoint)
    stack = replace(stack, device=device, fs_size=fs_size, btrfs_devid=devid)
    below = device
    if host.exists(f"/sys/class/block/{device}/dm"):
        volume = _volume(host, device)
        stack, below = replace(stack, volume=volume), volume.pv
    disk = blockdev.whole_disk(host, below)
    stack = replace(stack, disk=disk, disk_size=_size(host, disk))
    if below != disk:
        stack = replace(stack, partition=_partition(host, below, disk, stack.disk_size))
    return stack


def _filesystem_size(host: Host, fstype: str, device: str, mountpoint: str) -> Tuple[int, int]:
    """(bytes, btrfs device id) of a mounted filesystem. The device is read through the page
    cache, where ext4 and btrfs keep their live superblock. XFS logs its superblock changes, so
    the copy on disk can lag behind a grow: its size comes from statfs (data blocks without the
    internal log, which the superblock tells)."""
    superblock = read_superblock(host, fstype, f"/dev/{device}")
    size, devid = filesystem_size(fstype, superblock)
    if fstype == "xfs":
        st = host.statvfs(mountpoint)
        size = (st.f_blocks + xfs_log_blocks(superblock)) * st.f_frsize
    return size, devid


def _device_of(host: Host, mount: mounts.Mount) -> str:
    name = blockdev.name_of_mount(host, mount.devno, mount.source)
    if name is None:
        raise Refused(f"not on a block device ({sysfs.quoted(mount.source)})")
    return name


def _volume(host: Host, device: str) -> Volume:
    base = f"/sys/class/block/{device}"
    uuid = host.read_attr(f"{base}/dm/uuid") or ""
    # A plain LV's uuid is LVM- and two 32-character ids; a layer under a snapshot or a thin
    # pool has a suffix (-real, -tpool), dm-crypt starts with CRYPT-.
    if not uuid.startswith("LVM-") or len(uuid) != 68:
        kind = uuid.split("-", 1)[0] or "unnamed"
        raise Refused(f"{device} is a device-mapper device ({kind}), not a plain LVM volume")
    lv_name = lvm_name(host.read_attr(f"{base}/dm/name") or "")
    slaves = host.listdir(f"{base}/slaves")
    if lv_name is None:
        raise Refused(f"{device}: LVM volume name unreadable")
    if len(slaves) != 1 or host.exists(f"/sys/class/block/{slaves[0]}/dm"):
        raise Refused(f"{lv_name} does not sit on one physical volume ({', '.join(slaves)})")
    pv = slaves[0]
    try:
        label = lvm_label(host.read_bytes(f"/dev/{pv}", 2048))
        area, area_size = label.metadata
        if not area_size:
            raise Refused("physical volume without a metadata area")
        if area + area_size > _size(host, pv):
            raise Refused("LVM2 metadata area past the device's end")
        ranges = metadata_ranges(host.read_bytes(f"/dev/{pv}", MDA_HEADER, area), area_size)
        text = b"".join(host.read_bytes(f"/dev/{pv}", length, area + offset)
                        for offset, length in ranges)
        pv_size, extent = pv_metadata(text.decode("ascii", "replace"), label.uuid)
    except Refused as e:
        raise Refused(f"{pv}: {e}") from None
    # What the active logical volumes on it take; an inactive one has no device and is missed.
    allocated = sum(_size(host, lv) for lv in host.listdir(f"/sys/class/block/{pv}/holders"))
    return Volume(device, lv_name, _size(host, device), pv, pv_size, label.pe_start, extent,
                  allocated)


def _partition(host: Host, name: str, disk: str, disk_size: int) -> Partition:
    def sectors(part: str, attr: str) -> int:
        value = sysfs.read_number(host, f"/sys/class/block/{part}/{attr}")
        if value is None:
            raise Refused(f"{part}: no {attr} in sysfs")
        return value * 512

    number = sysfs.read_number(host, f"/sys/class/block/{name}/partition") or 0
    start, size = sectors(name, "start"), sectors(name, "size")
    siblings = [p for p in host.listdir(f"/sys/class/block/{disk}")
                if p != name and host.exists(f"/sys/class/block/{disk}/{p}/partition")]
    after = [p for p in siblings if sectors(p, "start") > start]
    if after:
        raise Refused(f"{name} is not the last partition of {disk} ({', '.join(after)} follows)")
    if disk_size - (start + size) < MIN_GROWTH:
        # Nothing to gain whatever the table says: the usual boot reads sysfs, not the disk.
        return Partition(name, number, start, size, "", start + size)
    block_size = sysfs.read_number(host, f"/sys/class/block/{disk}/queue/logical_block_size")
    block_size = block_size if block_size in (512, 1024, 2048, 4096) else 512
    try:
        table, usable_end = partition_table(
            host.read_bytes(f"/dev/{disk}", 2 * block_size), disk_size, block_size)
    except Refused as e:
        raise Refused(f"{disk}: partition table unreadable: {e}") from None
    if table == "dos" and number > 4:
        raise Refused(f"{name} is a logical partition (growpart cannot grow its container)")
    return Partition(name, number, start, size, table, usable_end)


# -- deciding (pure) -----------------------------------------------------------------------------
def plan(stack: Stack, grow_lv: bool) -> Plan:
    """The commands that grow the stack, bottom up. A layer grows when it can gain MIN_GROWTH:
    then every layer above it is planned too, into the size it will have."""
    if stack.problem:
        return Plan((), max(0, stack.disk_size - _end(stack)), stack.problem)
    steps, held, _ = _steps(stack, grow_lv)
    _, _, full_room = _steps(stack, True)
    return Plan(tuple(steps), max(0, full_room - stack.fs_size), held)


def _end(stack: Stack) -> int:
    """Where what the filesystem uses ends on its disk, as far as the facts tell."""
    if stack.partition:
        return stack.partition.start + stack.partition.size
    return stack.fs_size


def _steps(stack: Stack, grow_lv: bool) -> Tuple[List[Step], str, int]:
    steps: List[Step] = []
    held = ""
    room = stack.disk_size  # what the next layer up may take
    part = stack.partition
    if part:
        part_room = part.usable_end - part.start
        if part_room - part.size >= MIN_GROWTH:
            steps.append(Step("partition", part.name,
                              ("growpart", f"/dev/{stack.disk}", str(part.number)),
                              part.size, part_room))
            room = part_room
        else:
            room = part.size
    vol = stack.volume
    if vol:
        pv_size = vol.pv_size  # what the volume group has of the PV, until a pvresize
        if room - vol.pv_size >= MIN_GROWTH:
            steps.append(Step("physical volume", vol.pv, ("pvresize", f"/dev/{vol.pv}"),
                              vol.pv_size, room))
            pv_size = room
        free = (pv_size - vol.pe_start) // vol.extent * vol.extent - vol.allocated
        if free >= MIN_GROWTH and grow_lv:
            steps.append(Step("logical volume", vol.lv,
                              ("lvextend", "-l", "+100%FREE", vol.lv_name),
                              vol.lv_size, vol.lv_size + free))
            room = vol.lv_size + free
        else:
            if free >= MIN_GROWTH:
                held = (f"its volume group has {_human(free)} free: CONFIG_GROW_ROOT_LV=1 "
                        f"extends {vol.lv_name} into it")
            room = vol.lv_size
    if room - stack.fs_size >= MIN_GROWTH:
        steps.append(Step("filesystem", stack.device, _fs_command(stack), stack.fs_size, room))
    return steps, held, room


def _fs_command(stack: Stack) -> Tuple[str, ...]:
    if stack.fstype in EXT:
        return ("resize2fs", f"/dev/{stack.device}")
    if stack.fstype == "xfs":
        return ("xfs_growfs", "-d", stack.mountpoint)
    return ("btrfs", "filesystem", "resize", f"{stack.btrfs_devid}:max", stack.mountpoint)


def nogrow_entry(entries: Sequence[mounts.FstabEntry],
                 mountpoints: Sequence[str]) -> Optional[mounts.FstabEntry]:
    """The fstab line with `x-gandi.nogrow` for one of these mountpoints (those of a disk)."""
    for entry in entries:
        # mountinfo shows a normalized path; fstab may say /var/ or //var
        target = "/" + posixpath.normpath(entry.mountpoint).lstrip("/")
        if "x-gandi.nogrow" in entry.options and target in mountpoints:
            return entry
    return None


# -- acting --------------------------------------------------------------------------------------
def configured(host: Host, settings: Settings) -> List[Outcome]:
    """Grow CONFIG_GROW_MOUNTPOINTS (at boot by mount-all, and `gandi-vm grow`)."""
    if not settings.grow_root:
        # The owner's opt-out holds for `gandi-vm grow` too; status shows the space left.
        log.info("grow: CONFIG_GROW_ROOT=0: %s not grown", " ".join(settings.grow_mountpoints))
        return []
    table = mounts.mount_table(host)
    outcomes = []
    for mountpoint in settings.grow_mountpoints:
        mount = mounts.mount_at(host, mountpoint, table)
        if mount is None:
            log.debug("grow %s: not mounted", mountpoint)
            continue
        outcomes.append(_grow_one(host, settings, table, mount))
    return outcomes


def disk_resized(host: Host, settings: Settings, disk: str) -> List[Outcome]:
    """After the disk's capacity changed: grow the filesystems on it that are configured
    (CONFIG_GROW_MOUNTPOINTS) or that gandi mounted itself. A capacity change that added
    nothing worth growing runs nothing."""
    table = mounts.mount_table(host)
    outcomes = []
    for mount in _on_disk(host, table, disk):
        record = state.load(host, blockdev.name_of_mount(host, mount.devno, mount.source)
                            or "-") or {}
        ours = bool(record.get("ours")) and record.get("mountpoint") == mount.mountpoint
        if mount.mountpoint in settings.grow_mountpoints:
            if not settings.grow_root:
                outcomes.append(_report(host, Outcome(mount.mountpoint, SKIPPED,
                                                      "CONFIG_GROW_ROOT=0")))
                continue
        elif not ours:
            log.debug("grow %s: neither configured nor mounted by gandi", mount.mountpoint)
            continue
        outcomes.append(_grow_one(host, settings, table, mount))
    return outcomes


def _on_disk(host: Host, table: Sequence[mounts.Mount], disk: str) -> List[mounts.Mount]:
    """The filesystems mounted from this disk (through partitions and LVM), each once."""
    found: Dict[str, mounts.Mount] = {}
    for mount in table:
        name = blockdev.name_of_mount(host, mount.devno, mount.source)
        if name and disk in blockdev.disks_under(host, name):
            found[mount.mountpoint] = mount
    return list(found.values())


def _grow_one(host: Host, settings: Settings, table: Sequence[mounts.Mount],
              mount: mounts.Mount) -> Outcome:
    stack = inspect(host, mount)
    decided = _decide(host, settings, table, stack)
    if isinstance(decided, Plan):
        with host.lock(f"disk-{stack.disk}"):
            stack = inspect(host, mount)  # an attach or another grow may have acted meanwhile
            decided = _decide(host, settings, table, stack)
            if isinstance(decided, Plan):
                decided = _run(host, stack, decided)
    return _report(host, decided, stack)


def _decide(host: Host, settings: Settings, table: Sequence[mounts.Mount],
            stack: Stack) -> Union[Outcome, Plan]:
    """The outcome when nothing is to run, else the plan to run."""
    if stack.problem:
        return Outcome(stack.mountpoint, SKIPPED, stack.problem)
    decided = plan(stack, settings.grow_root_lv)
    if not decided.steps:
        why = decided.held or f"{stack.fstype} fills its device ({_human(stack.fs_size)})"
        return Outcome(stack.mountpoint, UNCHANGED, why)
    on_disk = [m.mountpoint for m in _on_disk(host, table, stack.disk)]
    nogrow = nogrow_entry(mounts.fstab(host), on_disk)
    if nogrow:
        return Outcome(stack.mountpoint, SKIPPED, f"{stack.disk}: {nogrow.mountpoint} has "
                       f"x-gandi.nogrow in /etc/fstab line {nogrow.lineno}")
    return decided


def _run(host: Host, stack: Stack, decided: Plan) -> Outcome:
    """Run the steps in order; the first failure stops the rest."""
    done: List[str] = []
    for step in decided.steps:
        argv = [host.path(a) if a.startswith("/") else a for a in step.argv]
        result = host.run(argv, timeout=STEP_TIMEOUT)
        # growpart says NOCHANGE (exit 1) when the partition already ends where it can.
        if not result.ok and step.layer == "partition" and "NOCHANGE" in result.stdout:
            done.append(f"{step.layer} {step.device} already at its end")
            continue
        if not result.ok:
            so_far = f" (done: {', '.join(done)})" if done else ""
            return Outcome(stack.mountpoint, FAILED, f"{step.layer} {step.device}: "
                           f"`{command_line(step.argv)}` failed: {result.why()}{so_far}")
        done.append(f"{step.layer} {step.device} {_human(step.size)} -> {_human(step.grows_to)}")
    if not host.dry_run and decided.steps[-1].layer == "filesystem":
        # A tool that exits 0 without growing (the kernel kept the old partition size) is caught
        # here, on the filesystem's own superblock, not on the tools' word.
        try:
            size, _ = _filesystem_size(host, stack.fstype, stack.device, stack.mountpoint)
        except (Refused, OSError) as e:
            return Outcome(stack.mountpoint, FAILED, f"after {', '.join(done)}: superblock "
                           f"unreadable: {e}")
        if size - stack.fs_size < MIN_GROWTH:
            return Outcome(stack.mountpoint, FAILED, f"the commands ran ({', '.join(done)}) but "
                           f"{stack.fstype} on {stack.device} is still {_human(size)}")
    return Outcome(stack.mountpoint, GROWN, ", ".join(done))


def _report(host: Host, outcome: Outcome, stack: Optional[Stack] = None) -> Outcome:
    prefix = "(dry run) " if host.dry_run else ""
    log.log(log.ERROR if outcome.failed else log.INFO, "%s%s", prefix, outcome.line())
    if stack is not None and stack.device and not host.dry_run:
        state.save(host, stack.device, {"mountpoint": outcome.mountpoint, "state": outcome.state,
                                        "reason": outcome.reason}, GROW_DIR)
    return outcome


def _human(size: int) -> str:
    from gandi_vm.status import human_size

    return human_size(size)


# -- status --------------------------------------------------------------------------------------
def status(host: Host, settings: Settings) -> List[Dict[str, object]]:
    """For each configured mountpoint: the sizes of its layers, the space left to grow into, and
    why it was not grown (the decision, or the last attempt's failure)."""
    table = mounts.mount_table(host)
    entries = mounts.fstab(host)
    rows: List[Dict[str, object]] = []
    for mountpoint in settings.grow_mountpoints:
        mount = mounts.mount_at(host, mountpoint, table)
        row: Dict[str, object] = {"mountpoint": mountpoint}
        rows.append(row)
        if mount is None:
            row.update(state="not mounted", reason="")
            continue
        stack = inspect(host, mount)
        decided = plan(stack, settings.grow_root_lv)
        part = stack.partition
        row.update({
            "device": stack.device or None, "disk": stack.disk or None,
            "disk_size": stack.disk_size or None,
            "partition_end": part.start + part.size if part else None,
            "filesystem_size": stack.fs_size or None, "left": decided.left,
        })
        nogrow = nogrow_entry(entries, [m.mountpoint for m in _on_disk(host, table, stack.disk)]) \
            if stack.disk else None
        last = state.load(host, stack.device, GROW_DIR) if stack.device else None
        if stack.problem:
            row.update(state="refused", reason=stack.problem)
        elif not settings.grow_root:
            row.update(state="disabled", reason="CONFIG_GROW_ROOT=0")
        elif nogrow:
            row.update(state="disabled", reason=f"{nogrow.mountpoint} has x-gandi.nogrow in "
                       f"/etc/fstab line {nogrow.lineno}")
        elif last and last.get("state") == FAILED and decided.steps:
            row.update(state="failed", reason=str(last.get("reason")))
        elif decided.steps:
            row.update(state="can grow", reason="at the next boot, resize event or `gandi-vm "
                       "grow`: " + ", ".join(command_line(s.argv) for s in decided.steps))
        elif decided.held:
            row.update(state="held", reason=decided.held)
        else:
            row.update(state="up to date", reason=f"{stack.fstype} fills its device")
    return rows
