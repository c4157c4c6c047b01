"""Facts about one block device: sysfs attributes and what is written on it.

Sysfs is read through the Host (so a fake or sample tree works). What is on a whole disk is what
udev's blkid builtin recorded in its database for the event that started us (the same libblkid
low-level probe as `blkid -p`, already paid for: a process fewer per disk, issue 14), else probed
with `blkid -p -o udev`: when udev has not processed the device (coldplug still running at boot,
no udevd), or found nothing there (a blank disk; and an ambivalent one, which udev records as
nothing and only blkid's exit status tells), and always for a partition (whose record mixes in
its disk's keys).
"""

from __future__ import annotations


from gandi_vm import sysfs
from gandi_vm.host import Host, UnknownName, lines
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

_KERNEL_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:!-]{0,63}"
BLKID_TIMEOUT = 15


class NoSuchDevice(UnknownName):
    """The name given is not a block device of this system."""


def checked_name(name: str) -> str:
    """A kernel name as syntax only (for a device that may already be gone)."""
    if not sysfs.fullmatch(_KERNEL_NAME, name):
        raise NoSuchDevice(f"{name!r}: not a block device name")
    return name


def kernel_name(host: Host, dev: str) -> str:
    """`vdb`, `/dev/vdb` or a /dev/disk/by-* symlink -> the kernel name, checked in sysfs."""
    name = dev
    if dev.startswith("/"):
        resolved = host.realpath(dev)
        if resolved is None or not resolved.startswith("/dev/"):
            raise NoSuchDevice(f"{dev}: not a device node")
        name = resolved[len("/dev/"):]
    if not host.exists(f"/sys/class/block/{checked_name(name)}"):
        raise NoSuchDevice(f"{dev}: no such block device")
    return name


class Signature(Record):
    """What blkid found on the device (keys as in udev: ID_FS_TYPE, ID_PART_TABLE_TYPE...)."""

    properties: Dict[str, str] = {}
    ambivalent: bool = False
    error: Optional[str] = None

    @property
    def fstype(self) -> str:
        return self.properties.get("ID_FS_TYPE", "")

    @property
    def usage(self) -> str:
        return self.properties.get("ID_FS_USAGE", "")

    @property
    def label(self) -> Optional[bytes]:
        """The raw label bytes, exactly as written on the disk (None when there is no label)."""
        encoded = self.properties.get("ID_FS_LABEL_ENC")
        return None if encoded is None else decode_udev_string(encoded)

    @property
    def uuid(self) -> str:
        return self.properties.get("ID_FS_UUID", "")

    @property
    def partition_table(self) -> str:
        return self.properties.get("ID_PART_TABLE_TYPE", "")


def udev_properties(host: Host, name: str) -> Optional[Dict[str, str]]:
    """The properties udev recorded for a block device (its database: what its rules and
    builtins found, blkid's included), or None when udev has not processed the device."""
    devno = host.read_attr(f"/sys/class/block/{name}/dev")
    try:
        text = host.read_text(f"/run/udev/data/b{devno}") if devno else None
    except OSError:
        text = None
    if text is None:
        return None
    return dict(line[2:].partition("=")[::2] for line in lines(text) if line.startswith("E:"))


def decode_udev_string(encoded: str) -> bytes:
    """Undo udev's `\\xNN` encoding (blkid_encode_string) back to the original bytes."""
    out = bytearray()
    i = 0
    while i < len(encoded):
        chunk = encoded[i:i + 4]
        if chunk[:2] == "\\x" and len(chunk) == 4:
            try:
                out.append(int(chunk[2:], 16))
                i += 4
                continue
            except ValueError:
                pass
        out += encoded[i].encode("utf-8", "surrogateescape")
        i += 1
    return bytes(out)


# What blkid reports: the keys taken from udev's database (it holds many others: links, paths...).
_PROBED_PREFIXES = ("ID_FS_", "ID_PART_TABLE_", "ID_PART_ENTRY_")


def probe(host: Host, name: str) -> Signature:
    """What is on the device: udev's probe for the event, else a low-level probe of our own.
    Not a partition's record: udev's rules copy its disk's ID_* keys into it (the partition
    table's type included) before probing the partition itself."""
    if host.exists(f"/sys/class/block/{name}/partition"):
        return probe_device(host, name)
    recorded = udev_properties(host, name) or {}
    if "ID_FS_TYPE" in recorded or "ID_PART_TABLE_TYPE" in recorded:
        return Signature({key: value for key, value in recorded.items()
                          if key.startswith(_PROBED_PREFIXES)})
    return probe_device(host, name)


def probe_device(host: Host, name: str) -> Signature:
    """Low-level probe (-p): reads the device itself, bypassing blkid's cache."""
    result = host.run(["blkid", "-p", "-o", "udev", host.path(f"/dev/{name}")],
                      timeout=BLKID_TIMEOUT, changes=False)
    if result.returncode == 2:  # nothing found
        return Signature()
    properties = {}
    # One property a line, ended by "\n" only: a label may hold U+2028 or \x85 unescaped.
    for line in lines(result.stdout):
        key, sep, value = line.partition("=")
        if sep:
            properties[key] = value
    if result.returncode == 8:
        return Signature(properties, ambivalent=True)
    if not result.ok:
        return Signature(properties, error=result.why())
    return Signature(properties)


class BlockDevice(Record):
    """What sysfs says of a device; everything a skip decision needs without probing."""

    name: str
    devno: str
    diskseq: str  # unique for each disk the kernel sees (Linux >= 5.15), "" before
    size: int  # bytes
    read_only: bool
    disk: str  # the whole disk: itself, or a partition's parent
    partition_number: Optional[int]
    partitions: Tuple[str, ...]
    holders: Tuple[str, ...]


def read(host: Host, name: str) -> BlockDevice:
    """The device's sysfs facts; a number that is not one (a sample tree, a broken image) counts
    as absent: size 0, which attach skips as "no medium"."""
    base = f"/sys/class/block/{name}"
    partition = f"{base}/partition"
    partitions = tuple(
        child for child in host.listdir(base) if host.exists(f"{base}/{child}/partition")
    )
    return BlockDevice(
        name=name,
        devno=host.read_attr(f"{base}/dev") or "",
        diskseq=host.read_attr(f"{base}/diskseq") or "",
        size=(sysfs.read_number(host, f"{base}/size") or 0) * 512,
        read_only=host.read_attr(f"{base}/ro") == "1",
        disk=_parent(host, name) if host.exists(partition) else name,
        partition_number=sysfs.read_number(host, partition),
        partitions=partitions,
        holders=tuple(host.listdir(f"{base}/holders")),
    )


def whole_disk(host: Host, name: str) -> str:
    """The disk a partition belongs to (its sysfs directory sits inside the disk's: .../vdc/vdc1)."""
    if not host.exists(f"/sys/class/block/{name}/partition"):
        return name
    return _parent(host, name)


def _parent(host: Host, partition: str) -> str:
    resolved = host.realpath(f"/sys/class/block/{partition}")
    return resolved.rsplit("/", 2)[-2] if resolved else partition


def name_of_devno(host: Host, devno: str) -> Optional[str]:
    # realpath() of a missing link is the path itself: "0:33" (btrfs) would pass for a name.
    if not host.exists(f"/sys/dev/block/{devno}"):
        return None
    resolved = host.realpath(f"/sys/dev/block/{devno}")
    return resolved.rsplit("/", 1)[-1] if resolved else None


def name_of_path(host: Host, path: str) -> Optional[str]:
    """`/dev/vda1` or `/dev/mapper/vg-root` -> the kernel name behind it; None for a swap file,
    `/dev/root` without a node, or a source that is no device at all (overlay, tmpfs)."""
    if not path.startswith("/dev/"):
        return None
    try:
        return kernel_name(host, path)
    except NoSuchDevice:
        return None


def name_of_mount(host: Host, devno: str, source: str) -> Optional[str]:
    """The device a mountinfo line mounts. btrfs shows an anonymous device number (0:NN) there:
    its source path names the device instead."""
    return name_of_devno(host, devno) or name_of_path(host, source)


def disks_under(host: Host, name: str) -> Tuple[str, ...]:
    """The whole disks a device sits on, through partitions and dm/md stacking."""
    return tuple(whole_disk(host, base) for base in underlying(host, name))


def underlying(host: Host, name: str) -> Tuple[str, ...]:
    """The physical devices under a stacked one (dm, md): follow `slaves` down to the bottom."""
    slaves = host.listdir(f"/sys/class/block/{name}/slaves")
    if not slaves:
        return (name,)
    found: Tuple[str, ...] = ()
    for slave in slaves:
        found += underlying(host, slave)
    return found
