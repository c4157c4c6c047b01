"""Addresses, routes, policy rules and per-interface sysctls, through `ip`, /proc/net/route and
/proc/sys.

A secondary interface gets a routing table of its own, number TABLE_BASE + ifindex (distinct for
every interface present, and computable again by the lease hook without any state), holding its
subnet and its gateway as default route, plus a rule `from <address> lookup <table>` at the same
priority: replies leave through the interface the request came in on. The main table, where the
primary interface's default route lives, is never written for a secondary interface.
"""

from __future__ import annotations


from gandi_vm import log, sysfs
from gandi_vm.host import Host, lines
from gandi_vm.lease import Lease

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple


IP_TIMEOUT = 10
TABLE_BASE = 10000  # + ifindex; below 32766, the priority of the rule that looks up main

# Multi-homed hosts: answer ARP only for addresses of the interface asked (arp_ignore=1), use the
# best local address as ARP source (arp_announce=2), and accept replies arriving on the "wrong"
# interface (loose rp_filter=2), since the main table routes them elsewhere.
SECONDARY_SYSCTLS = {
    "/proc/sys/net/ipv4/conf/{}/arp_announce": "2",
    "/proc/sys/net/ipv4/conf/{}/arp_ignore": "1",
    "/proc/sys/net/ipv4/conf/{}/rp_filter": "2",
}
# Router advertisements are accepted (2: even if forwarding is on); a secondary interface takes
# addresses and routes from them but not a second IPv6 default route in the main table.
RA_SYSCTLS = {"/proc/sys/net/ipv6/conf/{}/accept_ra": "2"}
SECONDARY_RA_SYSCTLS = {"/proc/sys/net/ipv6/conf/{}/accept_ra_defrtr": "0"}


def table_for(ifindex: int) -> int:
    return TABLE_BASE + ifindex


def priority_for(table: int) -> int:
    """The rule's priority: the table number while it is below 32766 (`lookup main`), folded
    below it beyond; rules are told apart by their table, so a shared priority is harmless."""
    return TABLE_BASE + (table - TABLE_BASE) % (32766 - TABLE_BASE)


def _ip_json(host: Host, args: List[str]) -> List[Dict[str, object]]:
    import json  # start-up cost (see gandi_vm.cli)

    result = host.run(["ip", "-j", *args], timeout=IP_TIMEOUT, changes=False)
    if not result.ok or not result.stdout.strip():
        return []
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def default_route_interface(host: Host) -> Optional[str]:
    """The interface of the main table's IPv4 default route with the lowest metric: the primary.

    Read from /proc/net/route, the main table's IPv4 routes as the kernel lists them (where
    `ip -j route` cost an exec before every attach's DHCP), as systemd/unit-gate reads it; the
    reading process's network namespace answers. A default route through no interface
    (unreachable, blackhole: `*`) is nobody's."""
    try:
        text = host.read_text("/proc/net/route")
    except OSError:
        return None
    best: Optional[Tuple[int, str]] = None
    for line in lines(text)[1:]:  # after the header
        # Iface Destination Gateway Flags RefCnt Use Metric Mask...: addresses as 8 hex digits
        # (little-endian), the metric in decimal. A default route: destination and mask 0.
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            metric = sysfs.number(fields[6])
        except sysfs.Garbage:
            metric = 2 ** 32  # a metric that is not a number sorts last instead of raising
        if best is None or metric < best[0]:  # the kernel lists equal metrics in its own order
            best = (metric, fields[0])
    return best[1] if best is not None and best[1] != "*" else None


def addresses(host: Host, name: str, family: str = "-4") -> List[str]:
    """Global addresses of the interface, as address/prefixlen: IPv4 ("-4") or all ("")."""
    found = []
    for link in _ip_json(host, [*([family] if family else []), "addr", "show", "dev", name]):
        for info in link.get("addr_info", []) or []:
            if isinstance(info, dict) and info.get("scope") == "global":
                found.append(f"{info.get('local')}/{info.get('prefixlen')}")
    return found


def _ip(host: Host, args: List[str]) -> bool:
    result = host.run(["ip", *args], timeout=IP_TIMEOUT)
    if not result.ok:
        log.warning("ip %s: %s", " ".join(args), result.why())
    return result.ok


def link_up(host: Host, name: str) -> bool:
    return _ip(host, ["link", "set", "dev", name, "up"])


def link_down(host: Host, name: str) -> bool:
    return _ip(host, ["link", "set", "dev", name, "down"])


def apply_lease(host: Host, name: str, lease: Lease, table: Optional[int],
                previous: Optional[Lease]) -> bool:
    """Put the lease's address and routes in place; table None means the primary interface,
    whose gateway goes into the main table. Idempotent: `replace` everywhere."""
    if previous is not None and previous.cidr != lease.cidr:
        clear_lease(host, name, previous, table)
    lifetime = ["valid_lft", str(lease.lease_time), "preferred_lft", str(lease.lease_time)] \
        if lease.lease_time else []
    ok = _ip(host, ["addr", "replace", lease.cidr, "broadcast", "+", "dev", name, *lifetime])
    if table is None:
        holder = default_route_interface(host)
        if lease.gateway and holder in (None, name):
            ok &= _ip(host, ["route", "replace", "default", "via", lease.gateway, "dev", name])
        elif lease.gateway:
            log.info("iface %s: the default route is on %s now; leaving it there", name, holder)
        return ok
    ok &= _ip(host, ["route", "replace", lease.network, "dev", name, "src", lease.address,
                     "table", str(table)])
    if lease.gateway:
        ok &= _ip(host, ["route", "replace", "default", "via", lease.gateway, "dev", name,
                         "table", str(table)])
    # `ip rule add` accepts duplicates: drop ours (found by its priority) before adding it again.
    remove_rules(host, table)
    ok &= _ip(host, ["rule", "add", "from", lease.address, "lookup", str(table),
                     "priority", str(priority_for(table))])
    return ok


def clear_lease(host: Host, name: str, lease: Lease, table: Optional[int]) -> None:
    """Remove what apply_lease put in place. Safe when the interface is already gone."""
    if table is not None:
        remove_table(host, table)
    elif lease.gateway:
        host.run(["ip", "route", "del", "default", "via", lease.gateway, "dev", name],
                 timeout=IP_TIMEOUT)
    host.run(["ip", "addr", "del", lease.cidr, "dev", name], timeout=IP_TIMEOUT)


def remove_table(host: Host, table: int) -> None:
    """Our source rule and every route of our table (the table is ours: one per interface)."""
    remove_rules(host, table)
    host.run(["ip", "route", "flush", "table", str(table)], timeout=IP_TIMEOUT)


def remove_rules(host: Host, table: int) -> None:
    """Delete the rules at our priority that look up our table, and nothing else."""
    for rule in _ip_json(host, ["rule", "show", "priority", str(priority_for(table))]):
        if str(rule.get("table")) == str(table) and rule.get("src"):
            selector = f"{rule['src']}/{rule.get('srclen', 32)}"
            _ip(host, ["rule", "del", "from", selector, "lookup", str(table),
                       "priority", str(priority_for(table))])


def rules(host: Host, table: int) -> List[str]:
    return [f"from {r.get('src')} lookup {r.get('table')}"
            for r in _ip_json(host, ["rule", "show", "priority", str(priority_for(table))])
            if str(r.get("table")) == str(table)]


def set_sysctls(host: Host, name: str, wanted: Dict[str, str]) -> Dict[str, str]:
    """Write each /proc/sys value; returns the previous values of those we changed (to restore)."""
    previous: Dict[str, str] = {}
    for template, value in wanted.items():
        path = template.format(name)
        before = host.read_attr(path)
        if before is None:
            continue  # no IPv6 on this kernel, or the interface is gone
        try:
            if host.write_attr(path, value):
                previous[path] = before
        except OSError as e:
            log.warning("iface %s: cannot set %s=%s: %s", name, path, value, e.strerror)
    return previous


def restore_sysctls(host: Host, previous: Dict[str, str]) -> None:
    for path, value in previous.items():
        if host.read_attr(path) is not None:
            try:
                host.write_attr(path, value)
            except OSError as e:
                log.warning("cannot restore %s=%s: %s", path, value, e.strerror)
