"""The kernel's mount and swap tables and the owner's /etc/fstab, read through the Host.

We read /proc/self/mountinfo rather than psutil.disk_partitions(): mountinfo gives each mount's
device number (so `/dev/root` or a by-uuid source still identifies the device) and we must decode
the octal escapes (`\\040` for a space) that a hostile label puts into a mountpoint.

The three tables are read as their writers and readers do: lines end at "\\n" only
(`host.lines`), fields are separated by spaces and tabs only (the kernel escapes those two in a
path, and libmount splits fstab on them), and `\\NNN` is an escaped byte, not a character.
"""

from __future__ import annotations

from gandi_vm.host import Host, lines
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, Tuple

_OCTAL_DIGITS = b"01234567"


def unescape(field: str) -> str:
    """Decode the kernel's and fstab's `\\NNN` escapes (space, tab, newline, backslash).

    Each escape stands for one byte of the path as the kernel holds it (a UTF-8 label's `é` is two
    bytes; an invalid one is any byte), so the escapes are undone on the bytes of the field, and
    the bytes decoded as `Host.read_text` decodes a file: UTF-8, undecodable bytes surrogateescaped.
    Above `\\377` only the low byte counts, as in libmount's unmangle (the kernel never writes it)."""
    raw = field.encode("utf-8", "surrogateescape")
    if b"\\" not in raw:
        return field
    out = bytearray()
    i = 0
    while i < len(raw):
        digits = raw[i + 1:i + 4]
        if raw[i:i + 1] == b"\\" and len(digits) == 3 and all(d in _OCTAL_DIGITS for d in digits):
            out.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def fields(line: str) -> List[str]:
    """The fields of a table line, separated by runs of spaces and tabs only: `str.split()` would
    also cut a path at characters the kernel does not escape (\\x1c-\\x1f, \\x85, U+2028...)."""
    return [field for field in line.replace("\t", " ").split(" ") if field]


class Mount(Record):
    devno: str  # "major:minor"
    mountpoint: str
    fstype: str
    source: str
    read_only: bool = False  # this mount's own options say ro (growing it would fail)


def mount_table(host: Host) -> List[Mount]:
    mounts = []
    for line in lines(host.read_text("/proc/self/mountinfo")):
        parts = line.split(" ")  # the kernel writes one space between fields
        try:
            sep = parts.index("-", 6)
            mounts.append(
                Mount(parts[2], unescape(parts[4]), parts[sep + 1], unescape(parts[sep + 2]),
                      "ro" in parts[5].split(","))
            )
        except (ValueError, IndexError):
            continue
    return mounts


def of_device(table: List[Mount], devno: str, name: str) -> List[Mount]:
    """Mounts of one device. btrfs shows an anonymous device number (0:NN) in mountinfo, so the
    source path counts too."""
    return [m for m in table if m.devno == devno or m.source == f"/dev/{name}"]


def mount_at(host: Host, mountpoint: str,
             table: Optional[Sequence[Mount]] = None) -> Optional[Mount]:
    """The mount visible at a path (the last one stacked there), in `table` if given."""
    # The kernel shows mountpoints with symlinks resolved (a disk root /srv -> /data/srv).
    wanted = {mountpoint, host.realpath(mountpoint)}
    found = None
    for mount in mount_table(host) if table is None else table:
        if mount.mountpoint in wanted:
            found = mount
    return found


def active_swaps(host: Host) -> List[str]:
    """Paths of active swap areas (devices or files), as /proc/swaps shows them."""
    return [area.path + (DELETED if area.deleted else "") for area in swap_areas(host)]


# The kernel's d_path() of an area whose device node (or file) was removed: the swap stays
# listed, under its old path with this suffix, until someone swapoffs it.
DELETED = " (deleted)"


class SwapArea(Record):
    path: str  # as the kernel shows it, " (deleted)" removed
    kind: str  # partition, file
    size: Optional[int]  # bytes
    used: Optional[int]  # bytes
    priority: Optional[int]
    deleted: bool  # the node is gone (the device was unplugged under the active swap)


def swap_areas(host: Host) -> List[SwapArea]:
    """/proc/swaps in full, for `swapoff` of a dead area and for `status`."""
    try:
        rows = [fields(line) for line in lines(host.read_text("/proc/swaps"))[1:]]
    except OSError:
        return []
    areas = []
    for row in rows:
        if not row:
            continue
        path = unescape(row[0])
        deleted = path.endswith(DELETED)
        if deleted:
            path = path[:-len(DELETED)]
        numbers = [_integer(value) for value in row[2:5]] + [None] * 3
        size, used, priority = numbers[:3]
        areas.append(SwapArea(path, row[1] if len(row) > 1 else "", _kib(size), _kib(used),
                              priority, deleted))
    return areas


def _integer(value: str) -> Optional[int]:
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    return int(value)


def _kib(value: Optional[int]) -> Optional[int]:
    return value * 1024 if value is not None and value >= 0 else None


class FstabEntry(Record):
    lineno: int
    spec: str  # "UUID=...", "LABEL=...", "/dev/vdb", ...
    mountpoint: str
    options: Tuple[str, ...] = ()  # the fourth field, split at commas ("defaults" when absent)


def fstab(host: Host) -> List[FstabEntry]:
    try:
        text = host.read_text("/etc/fstab")
    except OSError:
        return []
    entries = []
    for lineno, line in enumerate(lines(text), 1):
        row = fields(line)
        if len(row) >= 2 and not row[0].startswith("#"):
            options = tuple(unescape(row[3]).split(",")) if len(row) >= 4 else ("defaults",)
            entries.append(FstabEntry(lineno, unescape(row[0]), unescape(row[1]), options))
    return entries
