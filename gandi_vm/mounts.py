"""The kernel's mount and swap tables and the owner's /etc/fstab, read through the Host.

We read /proc/self/mountinfo rather than psutil.disk_partitions(): mountinfo gives each mount's
device number (so `/dev/root` or a by-uuid source still identifies the device) and we must decode
the octal escapes (`\\040` for a space) that a hostile label puts into a mountpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional

from gandi_vm.host import Host

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Decode the kernel's and fstab's `\\NNN` escapes (space, tab, newline, backslash)."""
    raw = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)
    # The escaped bytes were UTF-8 (or arbitrary) bytes; re-decode the latin-1 view as such.
    return raw.encode("latin-1", "surrogateescape").decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Mount:
    devno: str  # "major:minor"
    mountpoint: str
    fstype: str
    source: str


def mount_table(host: Host) -> List[Mount]:
    mounts = []
    for line in host.read_text("/proc/self/mountinfo").splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(
                Mount(fields[2], unescape(fields[4]), fields[sep + 1], unescape(fields[sep + 2]))
            )
        except (ValueError, IndexError):
            continue
    return mounts


def of_device(table: List[Mount], devno: str, name: str) -> List[Mount]:
    """Mounts of one device. btrfs shows an anonymous device number (0:NN) in mountinfo, so the
    source path counts too."""
    return [m for m in table if m.devno == devno or m.source == f"/dev/{name}"]


def mount_at(host: Host, mountpoint: str) -> Optional[Mount]:
    """The mount visible at a path (the last one stacked there)."""
    # The kernel shows mountpoints with symlinks resolved (a disk root /srv -> /data/srv).
    wanted = {mountpoint, host.realpath(mountpoint)}
    found = None
    for mount in mount_table(host):
        if mount.mountpoint in wanted:
            found = mount
    return found


def active_swaps(host: Host) -> List[str]:
    """Paths of active swap areas (devices or files)."""
    try:
        lines = host.read_text("/proc/swaps").splitlines()[1:]
    except OSError:
        return []
    return [unescape(line.split()[0]) for line in lines if line.split()]


@dataclass(frozen=True)
class FstabEntry:
    lineno: int
    spec: str  # "UUID=...", "LABEL=...", "/dev/vdb", ...
    mountpoint: str


def fstab(host: Host) -> List[FstabEntry]:
    try:
        text = host.read_text("/etc/fstab")
    except OSError:
        return []
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            entries.append(FstabEntry(lineno, unescape(fields[0]), unescape(fields[1])))
    return entries
