"""What a DHCP server said, and what we configured for an interface: /run/gandi/iface/IFACE.yaml.

Every value comes from the network and is hostile: addresses are parsed as addresses (a bad one
rejects the lease), routers, name servers, the server identifier and domains that do not parse are
dropped with a warning, and the hostname is kept as data for the boot-time plugins, which validate
it before any use, only when it is printable ASCII. No accepted value holds a control character
(they would reach resolv.conf, logs and terminals). The file is written with json.dumps (JSON
is YAML too, for the file's name and its readers), so no value can become structure, let alone a
command.
"""

from __future__ import annotations

import os

from gandi_vm.host import Host, lines
from gandi_vm import log, record, sysfs
from gandi_vm.netdev import is_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Tuple
    Record = Dict[str, object]


STATE_DIR = "/run/gandi/iface"
MAX_TEXT = 1024  # longest option text kept (DHCP options are at most 255 bytes, concatenated 4x)
# A handed-over environment is at most what execve() passed the script: ARG_MAX, a quarter of
# the default 8 MiB stack limit.
MAX_HANDOVER = 2 << 20
_DOMAIN = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?"


class LeaseError(ValueError):
    """A lease that cannot be applied (no or malformed address)."""


class Lease(record.Record):
    address: str
    prefixlen: int
    gateway: Optional[str] = None
    dns: Tuple[str, ...] = ()
    search: Tuple[str, ...] = ()
    domain: str = ""
    hostname: str = ""
    lease_time: Optional[int] = None
    server: Optional[str] = None

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def network(self) -> str:
        import ipaddress  # start-up cost (see gandi_vm.cli)

        return str(ipaddress.IPv4Interface(self.cidr).network)

    def as_dict(self) -> Dict[str, object]:
        data = record.asdict(self)
        data["dns"], data["search"] = list(self.dns), list(self.search)
        return data


def parse_address(text: str) -> Optional[str]:
    """An IPv4 or IPv6 address in its canonical form, or None. A scoped IPv6 address
    (fe80::1%eth0) keeps its scope only when it is an interface name or index: `ipaddress` takes
    any text after the '%', control characters included, and resolv.conf would get it verbatim."""
    import ipaddress  # start-up cost (see gandi_vm.cli)

    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    scope = getattr(address, "scope_id", None)
    return str(address) if scope is None or is_name(scope) else None


def _words(value: str) -> List[str]:
    """The words of a list option. The clients join them with one space; splitting on any other
    character (str.split() also splits on \\n, \\x1c, \\x85...) would accept the pieces of a value
    hiding a line break."""
    return [word for word in value.split(" ") if word]


def _address(value: str, what: str) -> str:
    import ipaddress  # start-up cost (see gandi_vm.cli)

    try:
        return str(ipaddress.IPv4Address(value.strip(" ")))
    except ValueError:
        raise LeaseError(f"{what} {value[:64]!r} is not an IPv4 address") from None


def _prefixlen(cidr: str, mask: str) -> int:
    import ipaddress  # start-up cost (see gandi_vm.cli)

    try:
        if cidr:
            return sysfs.number(cidr, limit=33)
        return ipaddress.IPv4Network(f"0.0.0.0/{mask or '255.255.255.255'}").prefixlen
    except ValueError:  # sysfs.Garbage is one
        raise LeaseError(f"subnet {(cidr or mask)[:64]!r} is not a netmask") from None


def _seconds(value: str) -> Optional[int]:
    """The lease time: a 32-bit count of seconds (0xffffffff: infinite), or nothing."""
    try:
        return sysfs.number(value, limit=2 ** 32)
    except sysfs.Garbage:
        return None


def _addresses(value: str, what: str) -> Tuple[str, ...]:
    kept = []
    for word in _words(value):
        address = parse_address(word)
        if address is None:
            log.warning("lease: %s %r is not an address, ignored", what, word[:64])
        else:
            kept.append(address)
    return tuple(kept)


def _server(value: str) -> Optional[str]:
    """The server identifier: an IPv4 address (option 54), or nothing."""
    import ipaddress  # start-up cost (see gandi_vm.cli)

    if not value:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        log.warning("lease: server identifier %r is not an IPv4 address, ignored", value[:64])
        return None


def _domains(value: str, what: str) -> Tuple[str, ...]:
    kept = []
    for word in _words(value):
        if len(word) <= 253 and sysfs.fullmatch(_DOMAIN, word):
            kept.append(word.rstrip("."))
        else:
            log.warning("lease: %s %r is not a domain name, ignored", what, word[:64])
    return tuple(kept)


def _text(value: str, what: str) -> str:
    """Free text kept as data (the hostname): printable ASCII, or nothing."""
    if value.isascii() and value.isprintable():
        return value
    log.warning("lease: %s %r has control or non-ASCII characters, ignored", what, value[:64])
    return ""


class _Names(record.Record):
    """Where one source keeps each lease field (an empty name: the source has no such field)."""

    address: str
    cidr: str
    mask: str
    routers: str
    dns: str
    search: str
    domain: str
    hostname: str
    lease_time: str
    server: str


_UDHCPC = _Names("ip", "mask", "subnet", "router", "dns", "search", "domain", "hostname", "lease",
                 "serverid")
_NETWORKD = _Names("ADDRESS", "", "NETMASK", "ROUTER", "DNS", "DOMAIN_SEARCH_LIST", "DOMAINNAME",
                   "HOSTNAME", "LIFETIME", "SERVER_ADDRESS")


def _parse(values: Mapping[str, str], names: _Names) -> Lease:
    def get(key: str) -> str:
        # Longer than any server sends: dropped whole, since a list cut short could end in
        # another address (10.0.0.12 cut to 10.0.0.1).
        value = values.get(key, "") if key else ""
        if len(value) > MAX_TEXT:
            log.warning("lease: %s is longer than %d characters, ignored", key, MAX_TEXT)
            return ""
        return value

    gateways = _addresses(get(names.routers), "router")
    return Lease(
        address=_address(get(names.address), "address"),
        prefixlen=_prefixlen(get(names.cidr), get(names.mask)),
        gateway=next((g for g in gateways if ":" not in g), None),
        dns=_addresses(get(names.dns), "name server"),
        search=_domains(get(names.search), "search domain"),
        domain=" ".join(_domains(get(names.domain), "domain")),
        hostname=_text(get(names.hostname), "hostname"),
        lease_time=_seconds(get(names.lease_time)),
        server=_server(get(names.server)),
    )


def from_env(env: Mapping[str, str], prefix: str = "new_") -> Lease:
    """A dhclient or dhcpcd script environment (new_ip_address, new_subnet_mask, ...)."""
    return _parse(env, _Names(*(prefix + key for key in (
        "ip_address", "subnet_cidr", "subnet_mask", "routers", "domain_name_servers",
        "domain_search", "domain_name", "host_name", "dhcp_lease_time", "dhcp_server_identifier"))))


def from_udhcpc_env(env: Mapping[str, str]) -> Lease:
    """A busybox udhcpc script environment (ip, mask, router, dns, search, hostname, ...)."""
    return _parse(env, _UDHCPC)


def from_networkd(text: str) -> Lease:
    """systemd-networkd's lease file (/run/systemd/netif/leases/IFINDEX: KEY=VALUE lines)."""
    return _parse(dict(line.split("=", 1) for line in lines(text) if "=" in line), _NETWORKD)


def from_nmcli(text: str) -> Lease:
    """`nmcli -t -f DHCP4 device show IFACE`: lines `DHCP4.OPTION[3]:ip_address = 10.0.3.15`."""
    options: Dict[str, str] = {}
    for line in lines(text):
        _, _, option = line.partition(":")
        key, sep, value = option.partition(" = ")
        if sep:
            options["new_" + key.strip()] = value
    return from_env(options)


def from_handover(data: bytes) -> Tuple[Optional[str], Dict[str, str]]:
    """What the event script hands over to a waiting attach (dhcp.handing_over): the event (udhcpc's
    $1; empty, i.e. None, for dhclient and dhcpcd, which name it in the environment), then the
    environment as `env -0` prints it, each NUL-terminated. The result is what `iface lease`
    would get as its argument and os.environ: names and values decoded the same way, an entry
    without `=` skipped, the first of two same names kept (Python's os.environ does all three)."""
    if len(data) > MAX_HANDOVER:
        raise LeaseError(f"handed-over event of more than {MAX_HANDOVER} bytes")
    if not data.endswith(b"\0"):
        raise LeaseError("handed-over event cut short (no final NUL)")
    event, *entries = data[:-1].split(b"\0")
    env: Dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition(b"=")
        if sep:
            env.setdefault(os.fsdecode(key), os.fsdecode(value))
    return os.fsdecode(event) or None, env


# -- the record --------------------------------------------------------------------------------
def of_record(record: Mapping[str, object]) -> Optional[Lease]:
    """The lease a record holds (lists in YAML, tuples in a Lease), or None."""
    data = record.get("lease")
    if not isinstance(data, dict):
        return None
    try:
        return Lease(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError:
        return None


def path(name: str) -> str:
    return f"{STATE_DIR}/{name}.yaml"


HEADER = "# gandi-vm: what interface attach configured; rebuilt at boot\n"


def load(host: Host, name: str) -> Optional[Record]:
    """The record, or None when there is none or it is not a mapping."""
    try:
        text = host.read_text(path(name))
    except OSError:
        return None
    import json  # start-up cost (see gandi_vm.cli)

    try:
        record = json.loads(text[len(HEADER):] if text.startswith(HEADER) else text)
    except ValueError:
        import yaml  # a record in YAML, as gandi-vm wrote it before an upgrade at this boot

        try:
            record = yaml.safe_load(text)
        except yaml.YAMLError:
            return None
    return record if isinstance(record, dict) else None


def save(host: Host, name: str, record: Record) -> None:
    """Write the record (0644: the lease data is what `status` and the plugins read). JSON, not
    YAML's own syntax: the yaml module costs a second of the resident agent's start under
    emulation, paid at every boot, and nothing on the way to a NIC's address needs it."""
    import json  # start-up cost (see gandi_vm.cli)

    host.write_text(path(name), HEADER + json.dumps(record, indent=2) + "\n")


def forget(host: Host, name: str) -> None:
    host.remove(path(name))


def recorded(host: Host) -> List[str]:
    return [f[:-5] for f in host.listdir(STATE_DIR) if f.endswith(".yaml")]
