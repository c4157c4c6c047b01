"""Network interfaces as sysfs shows them: name, index, MAC, driver, and whether a device backs them.

Only interfaces backed by a device (a virtio, Xen or PCI NIC the hypervisor attached) are ours to
configure; loopback and the interfaces software creates (bridge, veth, tun/tap, bond, vlan,
docker's) have no `device` link and belong to whoever created them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional

from gandi_vm.host import Host

ARPHRD_ETHER, ARPHRD_LOOPBACK = 1, 772

# What the kernel accepts as a name (dev_valid_name: 1-15 bytes, no '/', ':' or whitespace), and
# narrower: names we put into unit names, file names and argv are plain printable ASCII.
_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")


class NoSuchInterface(Exception):
    """The named interface does not exist (or its name is not one the kernel could give)."""


def checked_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise NoSuchInterface(f"interface {name!r}: not a valid interface name")
    return name


@dataclass(frozen=True)
class NetDevice:
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


def read(host: Host, name: str) -> NetDevice:
    name = checked_name(name)
    base = f"/sys/class/net/{name}"
    ifindex = host.read_attr(f"{base}/ifindex")
    if ifindex is None or not ifindex.isdigit():
        raise NoSuchInterface(f"interface {name}: no such interface")
    driver_link = host.realpath(f"{base}/device/driver")
    return NetDevice(
        name=name,
        ifindex=int(ifindex),
        mac=(host.read_attr(f"{base}/address") or "").lower(),
        type=int(host.read_attr(f"{base}/type") or ARPHRD_ETHER),
        driver=os.path.basename(driver_link) if driver_link and host.exists(f"{base}/device/driver")
        else None,
        backed=host.exists(f"{base}/device"),
        kind=_kind(host, base),
        operstate=host.read_attr(f"{base}/operstate") or "unknown",
    )


def _kind(host: Host, base: str) -> str:
    for line in (host.read_attr(f"{base}/uevent") or "").splitlines():
        if line.startswith("DEVTYPE="):
            return line[len("DEVTYPE="):]
    for marker, kind in (("tun_flags", "tun"), ("bridge", "bridge"), ("bonding", "bond")):
        if host.exists(f"{base}/{marker}"):
            return kind
    return ""


def names(host: Host) -> List[str]:
    return [n for n in host.listdir("/sys/class/net")
            if _NAME.fullmatch(n) and host.exists(f"/sys/class/net/{n}/ifindex")]

