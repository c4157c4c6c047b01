"""Who configures an interface: the distro's own configuration, the network stack that owns the
system (systemd-networkd, NetworkManager), or, where nobody claims it, our own DHCP client.

The owner's configuration wins: an interface named in /etc/network/interfaces, an ifcfg file, a
.network file or a NetworkManager profile in /etc is left to it. What we add to a stack is runtime
only (a .network file under /run, an unsaved NetworkManager profile) and removed at detach.
"""

from __future__ import annotations

import time

from gandi_vm import log, routing, sysfs
from gandi_vm.host import Host, lines
from gandi_vm.lease import Lease, LeaseError, from_networkd, from_nmcli
from gandi_vm.netdev import NetDevice

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, Iterator, List, Optional, Set, Tuple, TypeVar
    Verdict = TypeVar("Verdict")


OWN, NETWORKD, NM = "gandi-dhcp", "systemd-networkd", "NetworkManager"
QUERY_TIMEOUT = 15
SETTLE_SECONDS = 15  # how long a stack may take to give its verdict on a new interface
NETWORKD_DIR = "/run/systemd/network"
NM_PREFIX = "gandi-"
_SETUP_STATE = r"[a-z-]{1,32}"  # networkd's link setup states: configured, unmanaged...


# A system service's processes, as systemd groups them: the unified hierarchy (cgroup v2), or
# the name=systemd hierarchy of the hybrid and legacy layouts.
UNIT_PROCS = ("/sys/fs/cgroup/system.slice/{}/cgroup.procs",
              "/sys/fs/cgroup/systemd/system.slice/{}/cgroup.procs")


def running(host: Host) -> List[str]:
    """The network daemons running under systemd (none without systemd as init).

    A daemon runs when its unit's cgroup holds processes: a file read, where `systemctl
    is-active` cost an exec, ~0.2 s of every NIC attach under emulation. A unit still
    `activating` whose daemon has started counts as running, which is the verdict systemctl
    would give a moment later: gandi-iface@ is ordered after both stacks' services, so an attach
    that starts with them waits for their start to end, and one racing a stack being started by
    hand meets a daemon about to take the interface over, not one to compete with."""
    if not host.exists("/run/systemd/system"):
        return []
    return [stack for stack in (NETWORKD, NM) if _has_processes(host, f"{stack}.service")]


def _has_processes(host: Host, unit: str) -> bool:
    for template in UNIT_PROCS:
        try:
            if host.read_text(template.format(unit)).strip():
                return True
        except OSError:
            continue
    return False


# -- the distro's own configuration files --------------------------------------------------------
def configured_in_files(host: Host, dev: NetDevice) -> Optional[str]:
    """The file that configures this interface for ifupdown or the RHEL network scripts."""
    for path, text in _ifupdown_files(host, "/etc/network/interfaces", set(), depth=0):
        if _ifupdown_names(text, dev.name):
            return path
    scripts = "/etc/sysconfig/network-scripts"
    for entry in host.listdir(scripts):
        if not entry.startswith("ifcfg-") or entry.endswith((".bak", "~", ".rpmsave", ".rpmnew")):
            continue
        if entry == f"ifcfg-{dev.name}" or _ifcfg_matches(host, f"{scripts}/{entry}", dev):
            return f"{scripts}/{entry}"
    return None


def _ifupdown_files(host: Host, path: str, seen: Set[str],
                    depth: int) -> Iterator[Tuple[str, str]]:
    """(path, text) of the interfaces file and of what it sources (`source` globs,
    `source-directory`), depth first as ifupdown reads them.

    Each file is read once, however often it is sourced: a file sourcing itself eight times, or
    two files sourcing each other, would otherwise be read eight to the power of the depth."""
    import fnmatch  # start-up cost (see gandi_vm.cli)

    real = host.realpath(path)
    if depth > 5 or real is None or real in seen or not host.exists(real):
        return
    seen.add(real)
    try:
        text = host.read_text(real)
    except OSError:
        return
    yield path, text
    for line in lines(text):
        words = line.split()
        if len(words) != 2 or words[0] not in ("source", "source-directory"):
            continue
        target = words[1] if words[1].startswith("/") else f"/etc/network/{words[1]}"
        if words[0] == "source":
            directory, _, pattern = target.rpartition("/")
            matches = [f"{directory}/{e}" for e in host.listdir(directory or "/")
                       if fnmatch.fnmatchcase(e, pattern)]
        else:  # run-parts naming: letters, digits, '_' and '-' only
            matches = [f"{target}/{e}" for e in host.listdir(target)
                       if all(c.isalnum() or c in "_-" for c in e)]
        for match in matches:
            yield from _ifupdown_files(host, match, seen, depth + 1)


def _ifupdown_names(text: str, name: str) -> bool:
    for line in lines(text):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "iface" and len(words) > 1 and words[1] == name:
            return True
        if (words[0] == "auto" or words[0].startswith("allow-")) and name in words[1:]:
            return True
    return False


def _ifcfg_matches(host: Host, path: str, dev: NetDevice) -> bool:
    try:
        text = host.read_text(path)
    except OSError:
        return False
    for line in lines(text):
        key, _, value = line.partition("=")
        value = value.strip().strip("'\"").lower()
        if (key.strip() == "DEVICE" and value == dev.name.lower()) or \
                (key.strip() == "HWADDR" and dev.mac and value == dev.mac):
            return True
    return False


def _settle(query: Callable[[], Tuple[bool, Verdict]]) -> Verdict:
    """Ask until the stack has made up its mind about a new interface, or SETTLE_SECONDS pass."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        settled, answer = query()
        if settled or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


# -- systemd-networkd ----------------------------------------------------------------------------
def networkd_file(name: str) -> str:
    # 90-: after the owner's own files, which keep precedence should they come to match too.
    return f"{NETWORKD_DIR}/90-gandi-{name}.network"


def networkd_verdict(host: Host, dev: NetDevice) -> str:
    """networkd's setup state for the link: `unmanaged` when no .network file matches it.

    Read from networkd's state file (no process, and no D-Bus, which networkctl needs and small
    guests may lack), else from `networkctl list`."""
    def query() -> Tuple[bool, str]:
        setup = ""
        try:
            text = host.read_text(f"/run/systemd/netif/links/{dev.ifindex}")
            setup = next((line.partition("=")[2] for line in lines(text)
                          if line.startswith("ADMIN_STATE=")), "")
        except OSError:
            result = host.run(["networkctl", "list", "--no-pager", "--no-legend", dev.name],
                              timeout=QUERY_TIMEOUT, changes=False)
            fields = result.stdout.split()
            setup = fields[4] if len(fields) >= 5 else ""
        # The verdict is quoted in our reason and log line: a word of networkd's, or none.
        setup = setup if sysfs.fullmatch(_SETUP_STATE, setup) else ""
        return setup not in ("", "pending", "initialized"), setup or "no verdict"

    return _settle(query)


def networkd_text(dev: NetDevice, table: Optional[int], address: Optional[str]) -> str:
    lines = ["# Written by gandi-vm for a hot-plugged interface; removed when it is detached.",
             "[Match]", f"Name={dev.name}"]
    if dev.mac:
        lines.append(f"MACAddress={dev.mac}")
    lines += ["", "[Network]", "DHCP=yes", "IPv6AcceptRA=yes", "", "[DHCPv4]", "UseHostname=no"]
    if table is not None:
        lines += [f"RouteTable={table}", "", "[IPv6AcceptRA]", "UseGateway=no"]
        if address:
            lines += ["", "[RoutingPolicyRule]", f"From={address}/32", f"Table={table}",
                      f"Priority={routing.priority_for(table)}"]
    return "\n".join(lines) + "\n"


def networkd_lease(host: Host, dev: NetDevice) -> Optional[Lease]:
    try:
        return from_networkd(host.read_text(f"/run/systemd/netif/leases/{dev.ifindex}"))
    except (OSError, LeaseError):
        return None


def networkd_reload(host: Host) -> bool:
    result = host.run(["networkctl", "reload"], timeout=QUERY_TIMEOUT)
    if not result.ok:
        log.warning("networkctl reload: %s", result.why())
    return result.ok


# -- NetworkManager ------------------------------------------------------------------------------
def nm_profile(name: str) -> str:
    return f"{NM_PREFIX}{name}"


def nm_verdict(host: Host, dev: NetDevice) -> Tuple[str, str]:
    """(device state, active profile): state `unmanaged` means NetworkManager leaves it alone."""
    def query() -> Tuple[bool, Tuple[str, str]]:
        result = host.run(["nmcli", "-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION", "device",
                           "show", dev.name], timeout=QUERY_TIMEOUT, changes=False)
        fields = dict(line.split(":", 1) for line in lines(result.stdout) if ":" in line)
        device_state = fields.get("GENERAL.STATE", "").partition(" ")[0]
        named = {"10": "unmanaged", "20": "unavailable"}.get(device_state, "managed")
        return device_state not in ("", "20"), (named, fields.get("GENERAL.CONNECTION", ""))

    return _settle(query)


def nm_profile_file(host: Host, profile: str) -> str:
    """Where a profile is stored: under /etc for the owner's, under /run for in-memory ones."""
    result = host.run(["nmcli", "-t", "-f", "NAME,FILENAME", "connection", "show"],
                      timeout=QUERY_TIMEOUT, changes=False)
    for line in lines(result.stdout):
        # nmcli -t escapes ':' inside fields as '\:'
        fields = line.replace("\\:", "\0").split(":")
        if len(fields) == 2 and fields[0].replace("\0", ":") == profile:
            return fields[1].replace("\0", ":")
    return ""


def nm_add_argv(dev: NetDevice, table: Optional[int], timeout: int) -> List[str]:
    argv = ["nmcli", "connection", "add", "type", "ethernet", "con-name", nm_profile(dev.name),
            "ifname", dev.name, "save", "no", "connection.autoconnect-priority", "999",
            "ipv4.method", "auto", "ipv4.dhcp-timeout", str(timeout), "ipv6.method", "auto"]
    if table is not None:
        argv += ["ipv4.route-table", str(table), "ipv6.route-table", str(table)]
    return argv


def nm_rule_argv(dev: NetDevice, table: int, address: str) -> List[str]:
    return ["nmcli", "connection", "modify", nm_profile(dev.name), "ipv4.routing-rules",
            f"priority {routing.priority_for(table)} from {address} table {table}"]


def nm_lease(host: Host, dev: NetDevice) -> Optional[Lease]:
    result = host.run(["nmcli", "-t", "-f", "DHCP4", "device", "show", dev.name],
                      timeout=QUERY_TIMEOUT, changes=False)
    try:
        return from_nmcli(result.stdout) if result.ok else None
    except LeaseError:
        return None


def wait_address(host: Host, name: str, timeout: float) -> Optional[str]:
    """A stack configures the interface in its own time: wait for an IPv4 address."""
    deadline = time.monotonic() + timeout
    while True:
        found = routing.addresses(host, name)
        if found or time.monotonic() > deadline or host.dry_run:
            return found[0] if found else None
        time.sleep(0.5)
