"""Network interfaces as sysfs shows them: name, index, MAC, driver, and whether a device backs them.

Only interfaces backed by a device (a virtio, Xen or PCI NIC the hypervisor attached) are ours to
configure; loopback and the interfaces software creates (bridge, veth, tun/tap, bond, vlan,
docker's) have no `device` link and belong to whoever created them.
"""

from __future__ import annotations

import os

from gandi_vm import sysfs
from gandi_vm.host import Host, UnknownName, lines
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import List, Optional

ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772

# What the kernel accepts as a name (dev_valid_name: 1-15 bytes, no '/', ':' or whitespace), and
# narrower: names we put into unit names, file names and argv are plain printable ASCII.
_NAME = r"[A-Za-z0-9_.@+-]{1,15}"
# What sysfs shows of the other facts we keep (they reach the record, the status table and, for
# the MAC, a generated .network file): anything else, in a --root tree say, is taken as absent.
_MAC = r"[0-9a-f]{2}(:[0-9a-f]{2}){5,19}"
_WORD = r"(?i)[a-z0-9_.+-]{1,64}"


class NoSuchInterface(UnknownName):
    """The named interface does not exist (or its name is not one the kernel could give)."""


def is_name(name: str) -> bool:
    return sysfs.fullmatch(_NAME, name) and name not in (".", "..")


def checked_name(name: str) -> str:
    if not is_name(name):
        raise NoSuchInterface(f"interface {name!r}: not a valid interface name")
    return name


class NetDevice(Record):
    name: str
    ifindex: int
    mac: str
    type: int
    driver: Optional[str]
    backed: bool  # a device (virtio, PCI, Xen vif...) is behind it
    kind: str  # what software made it, when it is virtual: bridge, bond, tun, vlan...
    operstate: str

    @property
    def loopback(self) -> bool:
        return self.type == ARPHRD_LOOPBACK


def _word(text: Optional[str], pattern: str = _WORD) -> Optional[str]:
    return text if text is not None and sysfs.fullmatch(pattern, text) else None


def read(host: Host, name: str) -> NetDevice:
    name = checked_name(name)
    base = f"/sys/class/net/{name}"
    ifindex = sysfs.read_number(host, f"{base}/ifindex", limit=2 ** 31)
    if ifindex is None:
        raise NoSuchInterface(f"interface {name}: no such interface")
    driver_link = host.realpath(f"{base}/device/driver")
    driver = os.path.basename(driver_link) if driver_link and host.exists(f"{base}/device/driver") \
        else None
    arp_type = sysfs.read_number(host, f"{base}/type", limit=2 ** 16)
    return NetDevice(
        name=name,
        ifindex=ifindex,
        mac=_word((host.read_attr(f"{base}/address") or "").lower(), _MAC) or "",
        type=ARPHRD_ETHER if arp_type is None else arp_type,
        driver=_word(driver),
        backed=host.exists(f"{base}/device"),
        kind=_kind(host, base),
        operstate=_word(host.read_attr(f"{base}/operstate")) or "unknown",
    )


def _kind(host: Host, base: str) -> str:
    for line in lines(host.read_attr(f"{base}/uevent") or ""):
        if line.startswith("DEVTYPE="):
            return _word(line[len("DEVTYPE="):]) or ""
    for marker, kind in (("tun_flags", "tun"), ("bridge", "bridge"), ("bonding", "bond")):
        if host.exists(f"{base}/{marker}"):
            return kind
    return ""


def names(host: Host) -> List[str]:
    return [n for n in host.listdir("/sys/class/net")
            if sysfs.fullmatch(_NAME, n) and host.exists(f"/sys/class/net/{n}/ifindex")]

