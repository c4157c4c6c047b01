"""iface attach / detach / attach-all / lease events / status end to end on a fake guest.

The guest's network lives in `Network`: the `ip` command, dhclient, systemctl, networkctl and nmcli
are small simulations over one model (addresses, routing tables, policy rules, link states, what
the DHCP server answers), so each test asserts on the outcome, on the model, on the files written
and on the argv the handlers ran, never on a real system.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import sys
import time
from gandi_vm.record import replace
from typing import Dict, List, Optional

import pytest
import yaml
from fakesys import SYSCTL_DEFAULTS, FakeHost, add_nic, add_sysctls, system

from gandi_vm import cli, dhcp, lease, net, netdev, netstack, routing, status
from gandi_vm.config import Settings
from gandi_vm.host import Result

SETTINGS = replace(Settings(), multiqueue=False)  # ethtool has its own tests below
MAC = "52:54:00:12:34:03"
RECORD = "/run/gandi/iface/eth1.yaml"
NETWORKD_FILE = "/run/systemd/network/90-gandi-eth1.network"
ROOT = "/vm"

# What the DHCP server on eth1's network answers (dhclient option names).
OFFER = {
    "ip_address": "10.0.1.5",
    "subnet_mask": "255.255.255.0",
    "routers": "10.0.1.1",
    "domain_name_servers": "10.0.1.53",
    "domain_search": "example.com",
    "host_name": "vm-eth1",
    "dhcp_lease_time": "3600",
    "dhcp_server_identifier": "10.0.1.1",
}
# eth0, the primary interface, holds the main table's default route.
MAIN = [{"dst": "default", "gateway": "10.0.0.1", "dev": "eth0", "metric": 100}]


def option(args: List[str], key: str) -> Optional[str]:
    return args[args.index(key) + 1] if key in args else None


def proc_net_route(routes: List[Dict[str, object]]) -> str:
    """What the kernel prints in /proc/net/route for these routes of the main table: addresses as
    the 8 hex digits of their little-endian value, each line padded to 127 characters."""
    def hexed(address: str) -> str:
        return ipaddress.IPv4Address(address).packed[::-1].hex().upper()

    rows = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    for route in routes:
        network = ipaddress.IPv4Network("0.0.0.0/0" if route["dst"] == "default" else route["dst"])
        gateway = str(route.get("gateway") or "0.0.0.0")
        rows.append(f"{route.get('dev', '*')}\t{hexed(str(network.network_address))}\t{hexed(gateway)}"
                    f"\t{'0003' if route.get('gateway') else '0001'}\t0\t0\t{route.get('metric', 0)}"
                    f"\t{hexed(str(network.netmask))}\t0\t0\t0")
    return "".join(f"{row:<127}\n" for row in rows)


def hand_over(host: FakeHost, name: str, event: Optional[str], env: Dict[str, str],
              pid: int = 4242) -> int:
    """The script's side of the hand-over: the event and `env -0`, renamed into place; then the
    attach's verdict (a few seconds at most: the attach serves from a thread)."""
    state = host.path(lease.STATE_DIR)
    data = b"".join(text.encode() + b"\0" for text in
                    [event or "", *(f"{key}={value}" for key, value in env.items())])
    with open(f"{state}/{name}.event.{pid}.new", "wb") as f:
        f.write(data)
    os.rename(f"{state}/{name}.event.{pid}.new", f"{state}/{name}.event.{pid}")
    verdict = f"{state}/{name}.verdict.{pid}"
    deadline = time.monotonic() + 10
    while not os.path.exists(verdict):
        assert time.monotonic() < deadline, f"no verdict for {data!r}"
        time.sleep(0.005)
    with open(verdict, encoding="ascii") as f:
        return int(f.read())


class Network:
    """The guest's network, and the programs that show and change it."""

    def __init__(self):
        self.host: Optional[FakeHost] = None
        self.addresses: Dict[str, List[str]] = {"eth0": ["10.0.0.5/24"]}
        self.tables: Dict[str, List[Dict[str, object]]] = {"main": [dict(r) for r in MAIN]}
        self.rules: List[Dict[str, object]] = []
        self.links: Dict[str, str] = {"lo": "up", "eth0": "up"}
        self.offers: Dict[str, Dict[str, str]] = {"eth1": dict(OFFER)}  # absent: no answer
        self.started: List[str] = []  # units started with systemctl start
        self.networkd_setup = ["unmanaged"]  # successive SETUP answers of `networkctl list`
        self.nm_state, self.nm_connection = "30 (disconnected)", ""
        self.nm_profiles: Dict[str, Dict[str, str]] = {}  # name -> {"ifname", "file"}
        self.hosts: List[FakeHost] = []  # every host bound, in order (the cli makes its own)
        self.handed: List[str] = []  # events the script handed over to a waiting attach
        self.lease_commands: List[str] = []  # events it gave to `iface lease`

    def bind(self, host: FakeHost) -> FakeHost:
        self.host = host
        self.hosts.append(host)
        host.handlers.update(ip=self.ip, dhclient=self.dhclient, systemctl=self.systemctl,
                             networkctl=self.networkctl, nmcli=self.nmcli)
        self.show_routes()
        return host

    def show_routes(self, root: Optional[str] = None) -> None:
        """/proc/net/route under `root` (the bound host's): the main table as the kernel lists it."""
        path = os.path.join(root or self.host.root, "proc/net/route")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii") as f:
            f.write(proc_net_route(self.tables.get("main", [])))

    def remove_primary(self) -> None:
        """eth0 without its address and the default route: eth1 will be the primary."""
        self.tables["main"], self.addresses = [], {}
        self.show_routes()

    def configure(self, name: str) -> bool:
        """What a network stack does with a DHCP answer: the address on the interface."""
        offer = self.offers.get(name)
        if offer is None:
            return False
        cidr = lease.from_env(offer, prefix="").cidr
        if cidr not in self.addresses.setdefault(name, []):
            self.addresses[name].append(cidr)
        return True

    # -- ip ----------------------------------------------------------------------------------------
    def ip(self, argv: List[str]) -> Result:
        args = argv[1:]
        if args[0] == "-j":
            return Result(argv, 0, json.dumps(self._show([a for a in args[1:] if a != "-4"])))
        failure = self._change(args[0], args[1], args[2:])
        self.show_routes()
        return Result(argv, 2, stderr=f"RTNETLINK answers: {failure}\n") if failure else Result(argv, 0)

    def _show(self, args: List[str]) -> List[Dict[str, object]]:
        if args[:2] == ["addr", "show"]:
            name = option(args, "dev")
            found = self.addresses.get(name, [])
            return [{"ifname": name, "addr_info": [
                {"family": "inet", "local": a.split("/")[0], "prefixlen": int(a.split("/")[1]),
                 "scope": "global", "label": name} for a in found]}] if found else []
        if args[:3] == ["rule", "show", "priority"]:
            return [dict(r) for r in self.rules if r["priority"] == int(args[3])]
        raise AssertionError(f"unexpected ip query {args}")

    def _change(self, obj: str, verb: str, args: List[str]) -> Optional[str]:
        if obj == "link":
            self.links[args[1]] = args[2]
        elif obj == "addr" and verb == "replace":
            found = self.addresses.setdefault(option(args, "dev"), [])
            if args[0] not in found:
                found.append(args[0])
        elif obj == "addr" and verb == "del":
            found = self.addresses.get(option(args, "dev"), [])
            if args[0] not in found:
                return "Cannot assign requested address"
            found.remove(args[0])
        elif obj == "route" and verb == "replace":
            table = self.tables.setdefault(option(args, "table") or "main", [])
            route = {"dst": args[0], "gateway": option(args, "via"), "dev": option(args, "dev"),
                     "src": option(args, "src")}
            route = {k: v for k, v in route.items() if v is not None}
            table[:] = [r for r in table if r["dst"] != args[0]] + [route]
        elif obj == "route" and verb == "del":
            table = self.tables.get(option(args, "table") or "main", [])
            kept = [r for r in table if not (r["dst"] == args[0] and r.get("dev") == option(args, "dev"))]
            if len(kept) == len(table):
                return "No such process"
            table[:] = kept
        elif obj == "route" and verb == "flush":
            self.tables[option(args, "table")] = []
        elif obj == "rule" and verb == "add":
            self.rules.append({"priority": int(option(args, "priority")), "src": option(args, "from"),
                               "table": option(args, "lookup")})
        elif obj == "rule" and verb == "del":
            wanted = {"priority": int(option(args, "priority")),
                      "src": option(args, "from").replace("/32", ""), "table": option(args, "lookup")}
            if wanted not in self.rules:
                return "No such file or directory"
            self.rules.remove(wanted)
        else:
            raise AssertionError(f"unexpected ip command {obj} {verb} {args}")
        return None

    # -- dhclient: calls the lease script the way the real client does -------------------------------
    def dhclient(self, argv: List[str]) -> Result:
        name = argv[-1]
        if "-r" in argv:
            self.event_script({"reason": "RELEASE", "interface": name})
            return Result(argv, 0)
        self.event_script({"reason": "PREINIT", "interface": name})
        offer = self.offers.get(name)
        if offer is None:
            return Result(argv, 2, stderr="No DHCPOFFERS received.\n"
                                          "Unable to obtain a lease on first try.  Exiting.\n")
        env = {"reason": "BOUND", "interface": name, **{f"new_{k}": v for k, v in offer.items()}}
        self.event_script(env)
        return Result(argv, 0, stderr=f"bound to {offer['ip_address']} -- renewal in 1800 seconds.\n")

    def event_script(self, env: Dict[str, str], event: Optional[str] = None) -> int:
        """What the event script (sh, see dhcp.write_script) does, over the fake filesystem:
        nothing for an event there is nothing to do for; the event handed over to the attach
        waiting for the interface (its marker names this process), its verdict as exit status;
        else `iface lease`. `handed` and `lease_commands` say which way each event went."""
        reason = event or env["reason"]
        if reason not in dhcp.BIND_EVENTS | dhcp.UNBIND_EVENTS | {dhcp.TIMEOUT_EVENT}:
            return 0
        name = env["interface"]
        try:
            with open(self.host.path(dhcp.waiting_marker(name)), encoding="ascii") as f:
                waiting = f.read().strip() == str(os.getpid())
        except FileNotFoundError:
            waiting = False
        if waiting:
            self.handed.append(reason)
            return hand_over(self.host, name, event, env)
        self.lease_commands.append(reason)
        return net.lease_event(self.host, event, env)

    # -- systemd ------------------------------------------------------------------------------------
    def systemctl(self, argv: List[str]) -> Result:
        if argv[1:3] == ["--no-block", "start"]:
            self.started.append(argv[3])
            return Result(argv, 0)
        raise AssertionError(f"unexpected {argv}")

    def networkctl(self, argv: List[str]) -> Result:
        if argv[1] == "list":
            setup = self.networkd_setup.pop(0) if len(self.networkd_setup) > 1 else self.networkd_setup[0]
            ifindex = self.host.read_attr(f"/sys/class/net/{argv[-1]}/ifindex")
            return Result(argv, 0, f"{ifindex:>3} {argv[-1]} ether off {setup}\n")
        if argv[1] == "reload":
            for name in netdev.names(self.host):
                if self.host.exists(netstack.networkd_file(name)) and self.configure(name):
                    ifindex = self.host.read_attr(f"/sys/class/net/{name}/ifindex")
                    offer = self.offers[name]
                    self.host.write_text(f"/run/systemd/netif/leases/{ifindex}", (
                        f"ADDRESS={offer['ip_address']}\nNETMASK={offer['subnet_mask']}\n"
                        f"ROUTER={offer['routers']}\nDNS={offer['domain_name_servers']}\n"
                        f"HOSTNAME={offer['host_name']}\nLIFETIME={offer['dhcp_lease_time']}\n"))
            return Result(argv, 0)
        raise AssertionError(f"unexpected {argv}")

    # -- NetworkManager -----------------------------------------------------------------------------
    def nmcli(self, argv: List[str]) -> Result:
        args = argv[1:]
        if args[:3] == ["-t", "-f", "GENERAL.STATE,GENERAL.CONNECTION"]:
            return Result(argv, 0, f"GENERAL.STATE:{self.nm_state}\n"
                                   f"GENERAL.CONNECTION:{self.nm_connection}\n")
        if args[:3] == ["-t", "-f", "NAME,FILENAME"]:
            return Result(argv, 0, "".join(f"{name}:{p['file']}\n"
                                           for name, p in self.nm_profiles.items()))
        if args[:3] == ["-t", "-f", "DHCP4"]:
            offer = self.offers.get(args[-1], {})
            return Result(argv, 0, "".join(f"DHCP4.OPTION[{i}]:{k} = {v}\n"
                                           for i, (k, v) in enumerate(sorted(offer.items()), 1)))
        if args[:2] == ["connection", "delete"]:
            if self.nm_profiles.pop(args[2], None) is None:
                return Result(argv, 10, stderr=f"Error: unknown connection '{args[2]}'.\n")
            return Result(argv, 0)
        if args[:2] == ["connection", "add"]:
            name = option(args, "con-name")
            self.nm_profiles[name] = {"ifname": option(args, "ifname"),
                                      "file": f"/run/NetworkManager/system-connections/{name}.nmconnection"}
            return Result(argv, 0)
        if args[0] == "--wait" and args[2:4] == ["connection", "up"]:
            if not self.configure(self.nm_profiles[args[4]]["ifname"]):
                return Result(argv, 4, stderr="Error: Connection activation failed: IP configuration "
                                              "could not be reserved\n")
            return Result(argv, 0)
        if args[:2] in (["connection", "modify"], ["device", "reapply"]):
            return Result(argv, 0)
        raise AssertionError(f"unexpected {argv}")


class Clock:
    """Stands in for the time module in net and netstack: sleeping advances a fake clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: List[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(net, "time", fake)
    monkeypatch.setattr(netstack, "time", fake)
    return fake


def add_guest_nics(fs, root="/"):
    """lo, eth0 (up: the primary) and eth1 (just hot-plugged, down), dhclient installed."""
    add_nic(fs, "lo", 1, "00:00:00:00:00:00", backed=False, operstate="unknown", root=root)
    add_nic(fs, "eth0", 2, "52:54:00:12:34:02", operstate="up", root=root)
    add_nic(fs, "eth1", 3, MAC, root=root)
    add_sysctls(fs, "eth1", root=root)
    fs.create_file(os.path.join(root, "sbin/dhclient"))


@pytest.fixture
def network(host, fs, clock):
    """The guest of add_guest_nics, its network simulated for the `host` fixture."""
    add_guest_nics(fs)
    simulated = Network()
    simulated.bind(host)
    return simulated


def start_service(fs, unit: str, procs: str = "412\n", hierarchy: str = "/sys/fs/cgroup") -> None:
    """What systemd shows of a running service: its daemon's pid in the unit's cgroup.procs
    (hierarchy: /sys/fs/cgroup, unified; /sys/fs/cgroup/systemd, hybrid and legacy)."""
    fs.create_file(f"{hierarchy}/system.slice/{unit}/cgroup.procs", contents=procs)


def sysctls(name="eth1", root="/"):
    values = {}
    for template in SYSCTL_DEFAULTS:
        with open(os.path.join(root, template.format(name).lstrip("/")), encoding="ascii") as f:
            values[template.format(name)] = f.read().strip()
    return values


def record(name="eth1", root="/"):
    with open(os.path.join(root, f"run/gandi/iface/{name}.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)


def changes(argvs):
    """The commands that change something (queries: `ip -j`, `nmcli -t`, `networkctl list`,
    `ethtool -l`)."""
    def query(argv):
        return (argv[:2] == ["ip", "-j"] or argv[1:2] in (["-t"], ["list"])
                or argv[:2] == ["ethtool", "-l"])
    return [argv for argv in argvs if not query(argv)]


def snapshot(top="/"):
    found = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path) or os.path.isdir(path):
                found[path] = os.readlink(path) if os.path.islink(path) else None
            else:
                with open(path, "rb") as f:
                    found[path] = f.read()
    return found


# -- attach: our own DHCP client ------------------------------------------------------------------
def test_secondary_interface_gets_its_own_table_and_rule(host, network):
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome == net.Outcome("eth1", "configured", "10.0.1.5/24 via gandi-dhcp, table 10003",
                                  "10.0.1.5/24")
    assert network.addresses["eth1"] == ["10.0.1.5/24"]
    assert network.tables["10003"] == [
        {"dst": "10.0.1.0/24", "dev": "eth1", "src": "10.0.1.5"},
        {"dst": "default", "gateway": "10.0.1.1", "dev": "eth1"},
    ]
    assert network.rules == [{"priority": 10003, "src": "10.0.1.5", "table": "10003"}]
    assert ["ip", "rule", "add", "from", "10.0.1.5", "lookup", "10003", "priority", "10003"] \
        in host.commands


def test_secondary_interface_never_touches_the_main_default_route(host, network):
    net.attach(host, SETTINGS, "eth1")
    assert network.tables["main"] == MAIN
    routes = [argv for argv in changes(host.commands) if argv[:2] == ["ip", "route"]]
    assert routes and all(option(argv, "table") == "10003" for argv in routes)


def test_secondary_interface_runs_dhclient_with_our_lease_script(host, network):
    net.attach(host, SETTINGS, "eth1")
    [start] = [argv for argv in host.commands if argv[0] == "dhclient"]
    assert start == ["dhclient", "-4", "-1", "-v", "-cf", "/run/gandi/iface/dhclient.conf",
                     "-sf", dhcp.SCRIPT, "-pf", "/run/gandi/iface/eth1.dhclient.pid",
                     "-lf", "/run/gandi/iface/eth1.dhclient.leases", "eth1"]
    assert os.access(dhcp.SCRIPT, os.X_OK)
    assert network.links["eth1"] == "up"


def test_the_first_lease_is_handed_over_to_the_waiting_attach(host, network):
    # No `iface lease` process for the first lease: the attach applies it itself.
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome.state == "configured"
    assert (network.handed, network.lease_commands) == (["BOUND"], [])
    assert record()["lease"]["address"] == "10.0.1.5"
    # the marker, the handed-over event and its verdict are gone with the attach
    assert sorted(os.listdir("/run/gandi/iface")) == ["dhclient.conf", "eth1.yaml"]


def test_detach_removes_the_marker_of_an_attach_killed_while_it_waited(host, network):
    # SIGTERM (the unit's stop) ends an attach without its cleanup; the stop's detach removes it.
    net.attach(host, SETTINGS, "eth1")
    with open(dhcp.waiting_marker("eth1"), "w", encoding="ascii") as f:
        f.write("999999\n")
    assert net.detach(host, SETTINGS, "eth1").state == "detached"
    assert os.listdir("/run/gandi/iface") == ["dhclient.conf"]


@pytest.mark.parametrize("offers", [{}, {"eth1": dict(OFFER, ip_address="10.0.1.500")}],
                         ids=["no server", "malformed lease"])
def test_a_failed_attach_leaves_no_hand_over_behind(host, network, offers):
    network.offers = offers
    assert net.attach(host, SETTINGS, "eth1").state == "failed"
    assert network.lease_commands == ["RELEASE"] * SETTINGS.dhcp_retries  # dhcp.stop's
    assert sorted(os.listdir("/run/gandi/iface")) == ["dhclient.conf", "eth1.yaml"]
    assert "eth1" not in network.addresses or network.addresses["eth1"] == []


def test_secondary_interface_record(host, network):
    net.attach(host, SETTINGS, "eth1")
    saved = record()
    assert {k: saved[k] for k in ("interface", "mac", "ifindex", "driver", "role", "primary", "stack",
                                  "table", "client", "state", "address")} == {
        "interface": "eth1", "mac": MAC, "ifindex": 3, "driver": "virtio_net", "role": "secondary",
        "primary": "eth0", "stack": "gandi-dhcp", "table": 10003, "client": "dhclient",
        "state": "configured", "address": "10.0.1.5/24"}
    assert saved["lease"]["gateway"] == "10.0.1.1"
    assert saved["lease"]["hostname"] == "vm-eth1"
    assert saved["sysctl"] == {"/proc/sys/net/ipv4/conf/eth1/arp_announce": "0",
                               "/proc/sys/net/ipv4/conf/eth1/arp_ignore": "0",
                               "/proc/sys/net/ipv4/conf/eth1/rp_filter": "1",
                               "/proc/sys/net/ipv6/conf/eth1/accept_ra": "1",
                               "/proc/sys/net/ipv6/conf/eth1/accept_ra_defrtr": "1"}


def test_secondary_interface_sysctls(host, network):
    net.attach(host, SETTINGS, "eth1")
    assert sysctls() == {"/proc/sys/net/ipv4/conf/eth1/arp_announce": "2",
                         "/proc/sys/net/ipv4/conf/eth1/arp_ignore": "1",
                         "/proc/sys/net/ipv4/conf/eth1/rp_filter": "2",
                         "/proc/sys/net/ipv6/conf/eth1/accept_ra": "2",
                         "/proc/sys/net/ipv6/conf/eth1/accept_ra_defrtr": "0"}


def test_primary_interface_gets_the_default_route_in_main(host, network):
    network.remove_primary()
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome.reason == "10.0.1.5/24 via gandi-dhcp"
    assert network.tables["main"] == [{"dst": "default", "gateway": "10.0.1.1", "dev": "eth1"}]
    assert ["ip", "route", "replace", "default", "via", "10.0.1.1", "dev", "eth1"] in host.commands
    assert network.rules == [] and "10003" not in network.tables
    assert (record()["role"], record()["table"]) == ("primary", None)
    assert sysctls()["/proc/sys/net/ipv4/conf/eth1/rp_filter"] == "1"
    assert sysctls()["/proc/sys/net/ipv6/conf/eth1/accept_ra"] == "2"


def test_a_primary_lease_applies_the_hostname_and_resolver_plugins(host, network, fs):
    network.remove_primary()
    fs.create_file("/etc/hosts", contents="127.0.0.1\tlocalhost\n")
    net.attach(host, SETTINGS, "eth1")
    with open("/etc/hostname", encoding="utf-8") as f:
        assert f.read() == "vm-eth1\n"
    with open("/etc/resolv.conf", encoding="utf-8") as f:
        assert "nameserver" in f.read()


def test_a_secondary_lease_leaves_hostname_and_resolver_alone(host, network, fs):
    net.attach(host, SETTINGS, "eth1")
    assert not os.path.exists("/etc/hostname") and not os.path.exists("/etc/resolv.conf")


def test_hook_runs_after_a_configured_attach(host, network, fs):
    fs.create_file("/etc/gandi/hooks/post-iface-attach", st_mode=0o100755)
    net.attach(host, SETTINGS, "eth1")
    assert host.commands[-1] == ["/etc/gandi/hooks/post-iface-attach", "eth1"]


# -- attach: interfaces that are not ours, or not now ----------------------------------------------
def test_interface_holding_the_default_route_is_left(host, network):
    outcome = net.attach(host, SETTINGS, "eth0")
    assert (outcome.state, outcome.reason) == ("left", "holds the default route: configured by someone else")
    assert changes(host.commands) == []
    assert record("eth0")["state"] == "left"


def test_interface_with_an_address_already_is_left(host, network):
    network.addresses["eth1"] = ["10.0.1.9/24"]
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("left", "already has 10.0.1.9/24: configured by someone else")
    assert changes(host.commands) == []


def test_interface_configured_by_ifupdown_is_left(host, network, fs):
    fs.create_file("/etc/network/interfaces", contents="allow-hotplug eth1\niface eth1 inet dhcp\n")
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("left", "configured in /etc/network/interfaces")
    assert changes(host.commands) == []
    assert "eth1" not in network.addresses


@pytest.mark.parametrize("line", ["source /etc/network/\0x", "source-directory \0"])
def test_a_nul_byte_in_an_ifupdown_source_line_still_gives_a_decision(host, network, fs, line):
    # pyfakefs takes a NUL as any other character: the real filesystem's ValueError is
    # tested in test_net_decisions.py; this is the decision attach makes around it.
    fs.create_file("/etc/network/interfaces", contents=f"{line}\nallow-hotplug eth1\n")
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("left", "configured in /etc/network/interfaces")


def test_virtual_interface_is_skipped_and_nothing_runs(host, network, fs):
    add_nic(fs, "docker0", 4, "02:42:00:00:00:01", backed=False, kind="bridge")
    outcome = net.attach(host, SETTINGS, "docker0")
    assert (outcome.state, outcome.reason) == ("skipped", "virtual interface (bridge)")
    assert host.commands == []


def test_config_network_0_skips_and_nothing_runs(host, network):
    outcome = net.attach(host, replace(SETTINGS, network=False), "eth1")
    assert (outcome.state, outcome.reason) == ("skipped", "CONFIG_NETWORK=0")
    assert host.commands == []


def test_no_dhcp_client_installed_fails_with_a_clear_reason(host, network):
    os.unlink("/sbin/dhclient")
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome.failed
    assert outcome.reason == "no DHCP client installed (dhclient, dhcpcd, udhcpc)"
    assert record()["state"] == "failed"
    assert changes(host.commands) == []
    assert sysctls() == {t.format("eth1"): v for t, v in SYSCTL_DEFAULTS.items()}


def test_missing_interface_raises(host, network):
    with pytest.raises(netdev.NoSuchInterface):
        net.attach(host, SETTINGS, "eth9")


# -- attach: the DHCP server does not answer ----------------------------------------------------
@pytest.fixture
def silent(host, network, clock):
    """No DHCP answer on eth1; attach with 3 attempts."""
    network.offers = {}
    return net.attach(host, replace(SETTINGS, dhcp_retries=3), "eth1")


def test_no_answer_is_retried_with_backoff_then_fails(host, clock, silent):
    starts = [argv for argv in host.commands if argv[:3] == ["dhclient", "-4", "-1"]]
    assert len(starts) == 3
    assert clock.sleeps == [2, 4]
    assert silent.failed
    assert silent.reason == "no DHCP lease after 3 attempts of 30s; nothing changed"


def test_no_answer_releases_each_attempt_and_leaves_nothing(host, network, silent):
    releases = [argv for argv in host.commands if argv[:3] == ["dhclient", "-4", "-r"]]
    assert len(releases) == 3
    assert "eth1" not in network.addresses and network.rules == []
    assert not os.path.exists("/run/gandi/iface/eth1.dhclient.pid")


def test_no_answer_restores_sysctls_and_sets_the_link_down_again(host, network, silent):
    assert sysctls() == {t.format("eth1"): v for t, v in SYSCTL_DEFAULTS.items()}
    assert host.commands[-1] == ["ip", "link", "set", "dev", "eth1", "down"]
    assert network.links["eth1"] == "down"


def test_no_answer_is_recorded_as_failed(host, silent):
    saved = record()
    assert saved["state"] == "failed"
    assert saved["reason"] == silent.reason
    assert "sysctl" not in saved and "lease" not in saved


def test_an_interface_that_was_up_stays_up_after_a_failure(host, network, fs, clock):
    add_nic(fs, "eth2", 5, "52:54:00:12:34:05", operstate="up")
    network.links["eth2"] = "up"
    assert net.attach(host, replace(SETTINGS, dhcp_retries=1), "eth2").failed
    assert ["ip", "link", "set", "dev", "eth2", "down"] not in host.commands
    assert clock.sleeps == []


# -- attach twice ----------------------------------------------------------------------------------
def test_second_attach_is_unchanged_and_changes_nothing(host, network):
    net.attach(host, SETTINGS, "eth1")
    before, ran = snapshot(), len(host.commands)
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("unchanged", "already configured (gandi-dhcp, 10.0.1.5/24)")
    assert host.commands[ran:] == [["ip", "-j", "-4", "addr", "show", "dev", "eth1"]]
    assert snapshot() == before


def test_attach_after_the_address_vanished_configures_again(host, network):
    net.attach(host, SETTINGS, "eth1")
    network.addresses["eth1"] = []
    assert net.attach(host, SETTINGS, "eth1").state == "configured"
    assert network.addresses["eth1"] == ["10.0.1.5/24"]
    assert len(network.rules) == 1


# -- which stacks run ------------------------------------------------------------------------------
@pytest.mark.parametrize("hierarchy", ["/sys/fs/cgroup", "/sys/fs/cgroup/systemd"])
def test_a_stack_runs_when_its_units_cgroup_holds_processes(fs, hierarchy):
    """Unified (cgroup v2) and hybrid/legacy (name=systemd) layouts, read under --root, no process."""
    host = FakeHost(ROOT)
    fs.create_dir(f"{ROOT}/run/systemd/system")
    start_service(fs, "NetworkManager.service", procs="412\n977\n", hierarchy=f"{ROOT}{hierarchy}")
    assert netstack.running(host) == ["NetworkManager"]
    start_service(fs, "systemd-networkd.service", hierarchy=f"{ROOT}{hierarchy}")
    assert netstack.running(host) == ["systemd-networkd", "NetworkManager"]
    assert host.commands == []


def test_a_stack_whose_cgroup_is_empty_does_not_run(host, fs):
    """A stopped unit may keep its cgroup a moment (or for good, on the legacy hierarchy)."""
    fs.create_dir("/run/systemd/system")
    start_service(fs, "systemd-networkd.service", procs="")
    start_service(fs, "NetworkManager.service", procs="", hierarchy="/sys/fs/cgroup/systemd")
    assert netstack.running(host) == []


def test_no_stack_runs_without_systemd_as_init(host, fs):
    start_service(fs, "systemd-networkd.service")
    assert netstack.running(host) == []


# -- attach through systemd-networkd -----------------------------------------------------------------
@pytest.fixture
def networkd(network, fs):
    fs.create_dir("/run/systemd/system")
    start_service(fs, "systemd-networkd.service")
    return network


def test_networkd_unmanaged_interface_gets_a_runtime_network_file(host, networkd):
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome.reason == "10.0.1.5/24 via systemd-networkd, table 10003"
    with open(NETWORKD_FILE, encoding="utf-8") as f:
        assert f.read() == netstack.networkd_text(netdev.read(host, "eth1"), 10003, "10.0.1.5")
    reloads = [argv for argv in changes(host.commands) if argv[0] == "networkctl"]
    assert reloads == [["networkctl", "reload"]] * 2
    assert "dhclient" not in host.programs() and "systemctl" not in host.programs()
    assert networkd.addresses["eth1"] == ["10.0.1.5/24"]


def test_networkd_verdict_is_awaited_while_pending(host, networkd, clock):
    networkd.networkd_setup = ["pending", "pending", "unmanaged"]
    assert net.attach(host, SETTINGS, "eth1").state == "configured"
    assert clock.sleeps[:2] == [0.5, 0.5]


def test_networkd_lease_is_recorded(host, networkd):
    net.attach(host, SETTINGS, "eth1")
    assert record()["lease"]["hostname"] == "vm-eth1"
    assert record()["lease"]["gateway"] == "10.0.1.1"


def test_networkd_configured_interface_is_left_alone(host, networkd):
    networkd.networkd_setup = ["configured"]
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("left", "systemd-networkd already manages it (configured)")
    assert not os.path.exists(NETWORKD_FILE)
    assert changes(host.commands) == []


@pytest.mark.parametrize("admin_state, state", [("configured", "left"), ("unmanaged", "configured")])
def test_networkd_verdict_comes_from_its_state_file_without_networkctl(host, networkd, fs,
                                                                        admin_state, state):
    ifindex = netdev.read(host, "eth1").ifindex
    fs.create_file(f"/run/systemd/netif/links/{ifindex}",
                   contents=f"# This is private data. Do not parse.\nADMIN_STATE={admin_state}\n")
    networkd.networkd_setup = ["pending"]  # what networkctl would say: must not be asked
    assert net.attach(host, SETTINGS, "eth1").state == state
    assert ["networkctl", "list", "--no-pager", "--no-legend", "eth1"] not in host.commands


def test_networkd_without_an_answer_removes_its_file(host, networkd):
    networkd.offers = {}
    assert net.attach(host, replace(SETTINGS, dhcp_retries=1), "eth1").failed
    assert not os.path.exists(NETWORKD_FILE)
    assert changes(host.commands)[-1] == ["networkctl", "reload"]


def test_networkd_detach_removes_the_file_and_reloads(host, networkd):
    net.attach(host, SETTINGS, "eth1")
    host.commands.clear()
    assert net.detach(host, SETTINGS, "eth1").state == "detached"
    assert not os.path.exists(NETWORKD_FILE)
    assert ["networkctl", "reload"] in host.commands
    assert not os.path.exists(RECORD)


# -- attach through NetworkManager ---------------------------------------------------------------
@pytest.fixture
def nm(network, fs):
    fs.create_dir("/run/systemd/system")
    start_service(fs, "NetworkManager.service")
    return network


def test_networkmanager_gets_an_unsaved_profile_with_its_own_table(host, nm):
    outcome = net.attach(host, SETTINGS, "eth1")
    assert outcome.reason == "10.0.1.5/24 via NetworkManager, table 10003"
    assert [argv for argv in changes(host.commands) if argv[0] == "nmcli"] == [
        ["nmcli", "connection", "delete", "gandi-eth1"],
        ["nmcli", "connection", "add", "type", "ethernet", "con-name", "gandi-eth1", "ifname", "eth1",
         "save", "no", "connection.autoconnect-priority", "999", "ipv4.method", "auto",
         "ipv4.dhcp-timeout", "30", "ipv6.method", "auto", "ipv4.route-table", "10003",
         "ipv6.route-table", "10003"],
        ["nmcli", "--wait", "30", "connection", "up", "gandi-eth1"],
        ["nmcli", "connection", "modify", "gandi-eth1", "ipv4.routing-rules",
         "priority 10003 from 10.0.1.5 table 10003"],
        ["nmcli", "device", "reapply", "eth1"],
    ]
    assert "dhclient" not in host.programs()


def test_networkmanager_lease_is_recorded(host, nm):
    net.attach(host, SETTINGS, "eth1")
    assert record()["lease"]["hostname"] == "vm-eth1"


def test_networkmanager_owner_profile_in_etc_wins(host, nm):
    owner = "/etc/NetworkManager/system-connections/Office eth1.nmconnection"
    nm.nm_state, nm.nm_connection = "100 (connected)", "Office eth1"
    nm.nm_profiles["Office eth1"] = {"ifname": "eth1", "file": owner}
    outcome = net.attach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("left", f"NetworkManager profile 'Office eth1' ({owner})")
    assert changes(host.commands) == []


def test_networkmanager_unmanaged_interface_gets_our_dhcp_client(host, nm):
    nm.nm_state = "10 (unmanaged)"
    assert net.attach(host, SETTINGS, "eth1").reason == "10.0.1.5/24 via gandi-dhcp, table 10003"
    assert "nmcli" not in [argv[0] for argv in changes(host.commands)]


# -- multiqueue ------------------------------------------------------------------------------------
ETHTOOL_L = ("Channel parameters for eth1:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\tn/a\n"
             "Combined:\t4\nCurrent hardware settings:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\tn/a\n"
             "Combined:\t1\n")


def test_multiqueue_one_queue_pair_per_online_cpu(host, network, fs):
    fs.create_file("/sys/devices/system/cpu/online", contents="0-1\n")
    host.handlers["ethtool"] = lambda argv: Result(argv, 0, ETHTOOL_L if argv[1] == "-l" else "")
    net.attach(host, replace(SETTINGS, multiqueue=True), "eth1")
    assert ["ethtool", "-L", "eth1", "combined", "2"] in host.commands
    assert os.path.exists(net.multiqueue_marker("eth1"))


def test_multiqueue_is_tuned_once_the_address_is_there(host, network, fs):
    """ethtool's two runs would delay the address: they come after it, the record saying
    CONFIGURED already (a retune triggered by a vCPU meanwhile would tune it)."""
    fs.create_file("/sys/devices/system/cpu/online", contents="0-1\n")

    def ethtool(argv):
        assert network.addresses["eth1"] == ["10.0.1.5/24"]
        assert record()["state"] == "configured"
        return Result(argv, 0, ETHTOOL_L if argv[1] == "-l" else "")

    host.handlers["ethtool"] = ethtool
    assert net.attach(host, replace(SETTINGS, multiqueue=True), "eth1").state == "configured"
    programs = host.programs()
    assert programs.index("ethtool") > programs.index("dhclient")


# -- detach ----------------------------------------------------------------------------------------
def test_detach_releases_and_removes_everything(host, network):
    net.attach(host, SETTINGS, "eth1")
    host.commands.clear()
    outcome = net.detach(host, SETTINGS, "eth1")
    assert outcome.state == "detached"
    assert not os.path.exists(RECORD)
    assert host.commands[0][:3] == ["dhclient", "-4", "-r"]
    assert ["ip", "route", "flush", "table", "10003"] in host.commands
    assert network.rules == [] and network.tables["10003"] == []
    assert network.addresses["eth1"] == []
    assert network.tables["main"] == MAIN
    assert sysctls() == {t.format("eth1"): v for t, v in SYSCTL_DEFAULTS.items()}


def test_detach_removes_the_rule_even_without_the_release_event(host, network):
    net.attach(host, SETTINGS, "eth1")
    network.dhclient = lambda argv: Result(argv, 0)  # a client that died: no RELEASE event
    network.bind(host)
    net.detach(host, SETTINGS, "eth1")
    assert ["ip", "rule", "del", "from", "10.0.1.5/32", "lookup", "10003", "priority", "10003"] \
        in host.commands
    assert network.rules == [] and network.addresses["eth1"] == []


def test_detach_of_an_interface_never_attached_runs_nothing(host, network):
    outcome = net.detach(host, SETTINGS, "eth1")
    assert (outcome.state, outcome.reason) == ("unchanged", "nothing of ours to remove")
    assert host.commands == []


def test_detach_of_a_left_interface_forgets_the_record_only(host, network):
    net.attach(host, SETTINGS, "eth0")
    host.commands.clear()
    assert net.detach(host, SETTINGS, "eth0").state == "unchanged"
    assert host.commands == []
    assert not os.path.exists("/run/gandi/iface/eth0.yaml")
    assert network.tables["main"] == MAIN


def test_detach_after_unplug(host, network):
    net.attach(host, SETTINGS, "eth1")
    os.unlink("/sys/class/net/eth1")
    assert net.detach(host, SETTINGS, "eth1").state == "detached"
    assert not os.path.exists(RECORD)


# -- lease events (the DHCP client's script) --------------------------------------------------------
@pytest.fixture
def attached(host, network):
    net.attach(host, SETTINGS, "eth1")
    host.commands.clear()
    return network


def event(reason, **new):
    return {"reason": reason, "interface": "eth1",
            **{f"new_{k}": v for k, v in {**OFFER, **new}.items()}}


def test_renew_with_a_new_address_removes_the_old_one(host, attached):
    assert net.lease_event(host, None, event("RENEW", ip_address="10.0.1.6")) == 0
    assert ["ip", "addr", "del", "10.0.1.5/24", "dev", "eth1"] in host.commands
    assert attached.addresses["eth1"] == ["10.0.1.6/24"]
    assert attached.rules == [{"priority": 10003, "src": "10.0.1.6", "table": "10003"}]
    assert record()["address"] == "10.0.1.6/24"


def test_renew_with_the_same_address_keeps_one_rule(host, attached):
    assert net.lease_event(host, None, event("RENEW")) == 0
    assert ["ip", "addr", "del", "10.0.1.5/24", "dev", "eth1"] not in host.commands
    assert attached.rules == [{"priority": 10003, "src": "10.0.1.5", "table": "10003"}]


def test_expire_clears_the_lease(host, attached):
    assert net.lease_event(host, None, {"reason": "EXPIRE", "interface": "eth1"}) == 0
    assert attached.addresses["eth1"] == []
    assert attached.rules == [] and attached.tables["10003"] == []
    assert "lease" not in record() and "address" not in record()


def test_timeout_returns_1(host, attached):
    assert net.lease_event(host, None, event("TIMEOUT")) == 1


def test_a_renewal_after_attach_goes_to_iface_lease(host, attached):
    assert attached.event_script(event("RENEW", ip_address="10.0.1.6")) == 0
    assert (attached.handed, attached.lease_commands) == (["BOUND"], ["RENEW"])
    assert attached.addresses["eth1"] == ["10.0.1.6/24"]
    assert attached.rules == [{"priority": 10003, "src": "10.0.1.6", "table": "10003"}]


def test_preinit_and_other_events_need_nothing(host, attached):
    # attach brought the link up before it started the client: the script answers PREINIT
    attached.links["eth1"] = "down"
    for reason in ("PREINIT", "CARRIER", "FAIL"):
        assert attached.event_script({"reason": reason, "interface": "eth1"}) == 0
    assert attached.lease_commands == [] and host.commands == []


def test_a_malformed_lease_is_rejected_and_nothing_changes(host, attached):
    assert net.lease_event(host, None, event("RENEW", ip_address="10.0.1.500")) == 1
    assert changes(host.commands) == []
    assert record()["address"] == "10.0.1.5/24"


def test_udhcpc_event_argument(host, attached):
    env = {"interface": "eth1", "ip": "10.0.1.7", "mask": "24", "router": "10.0.1.1"}
    assert net.lease_event(host, "renew", env) == 0
    assert attached.addresses["eth1"] == ["10.0.1.7/24"]


def test_event_for_an_interface_we_did_not_attach_is_ignored(host, network):
    assert net.lease_event(host, None, event("BOUND")) == 0
    assert host.commands == []
    assert "eth1" not in network.addresses


def test_hostile_hostname_never_reaches_a_command(host, attached):
    hostname = "$(reboot);rm -rf / #' \""
    assert net.lease_event(host, None, event("RENEW", host_name=hostname)) == 0
    assert not any(hostname in arg or "reboot" in arg for argv in host.commands for arg in argv)
    assert record()["lease"]["hostname"] == hostname  # data for the plugin, which refuses it


def test_hostname_with_a_control_character_is_not_recorded(host, attached):
    assert net.lease_event(host, None, event("RENEW", host_name="vm1\n\x1b[2J")) == 0
    assert record()["lease"]["hostname"] == ""


# -- routing -------------------------------------------------------------------------------------
def test_source_rule_comes_before_main_whatever_the_ifindex(host, network):
    routing.apply_lease(host, "eth1", lease.from_env(event("BOUND")), routing.table_for(30000), None)
    [rule] = [argv for argv in host.commands if argv[:3] == ["ip", "rule", "add"]]
    assert int(option(rule, "priority")) < 32766


# -- attach-all ----------------------------------------------------------------------------------
def test_attach_all_without_systemd_attaches_each_interface_here(host, network, fs):
    add_nic(fs, "docker0", 4, "02:42:00:00:00:01", backed=False, kind="bridge")
    outcomes = {o.interface: (o.state, o.reason) for o in net.attach_all(host, SETTINGS)}
    assert outcomes == {
        "docker0": ("skipped", "virtual interface (bridge)"),
        "eth0": ("left", "holds the default route: configured by someone else"),
        "eth1": ("configured", "10.0.1.5/24 via gandi-dhcp, table 10003"),
        "lo": ("skipped", "loopback"),
    }


def test_attach_all_under_systemd_hands_each_interface_to_its_unit(host, network, fs):
    fs.create_dir("/run/systemd/system")
    outcomes = {o.interface: o.state for o in net.attach_all(host, SETTINGS)}
    assert outcomes == {"eth0": "configured", "eth1": "configured", "lo": "skipped"}
    assert network.started == ["gandi-iface@eth0.service", "gandi-iface@eth1.service"]
    assert "dhclient" not in host.programs()


def test_attach_all_ignores_bonding_masters(host, network, fs):
    fs.create_file("/sys/class/net/bonding_masters", contents="\n")
    outcomes = {o.interface: o.state for o in net.attach_all(host, SETTINGS)}
    assert outcomes == {"eth0": "left", "eth1": "configured", "lo": "skipped"}


def test_status_has_no_row_for_bonding_masters(host, network, fs):
    fs.create_file("/sys/class/net/bonding_masters", contents="\n")
    assert [row["interface"] for row in net.status(host)] == ["eth0", "eth1"]


# -- status --------------------------------------------------------------------------------------
def test_status_rows(host, network, fs):
    net.attach(host, SETTINGS, "eth1")
    rows = {row["interface"]: row for row in net.status(host)}
    assert sorted(rows) == ["eth0", "eth1"]  # no loopback
    assert rows["eth1"] == {
        "interface": "eth1", "mac": MAC, "driver": "virtio_net", "operstate": "down",
        "addresses": ["10.0.1.5/24"], "stack": "gandi-dhcp", "table": 10003,
        "rules": ["from 10.0.1.5 lookup 10003"], "state": "configured",
        "reason": "10.0.1.5/24 via gandi-dhcp, table 10003",
        "lease": {"gateway": "10.0.1.1", "dns": ["10.0.1.53"], "search": ["example.com"],
                  "domain": "", "hostname": "vm-eth1"},
    }
    assert (rows["eth0"]["state"], rows["eth0"]["reason"]) == ("-", "not seen by gandi-vm")
    assert rows["eth0"]["addresses"] == ["10.0.0.5/24"]


def test_status_of_an_unplugged_interface(host, network):
    net.attach(host, SETTINGS, "eth1")
    os.unlink("/sys/class/net/eth1")
    [row] = [row for row in net.status(host) if row["interface"] == "eth1"]
    assert (row["operstate"], row["mac"], row["addresses"], row["rules"]) == ("gone", MAC, [], [])


def test_status_text_shows_a_hostile_hostname_on_one_line(host, network):
    network.offers["eth1"]["host_name"] = "x\neth0  forged  \x1b[2J"
    net.attach(host, SETTINGS, "eth1")
    lines = status.render([], net.status(host), "text").splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("INTERFACE"))):]
    assert [line.split(" ", 1)[0] for line in table] == ["INTERFACE", "eth0", "eth1", "lease"]
    assert not any("\x1b" in line for line in lines)


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def vm(fs, monkeypatch, clock):
    """A guest under ROOT; every Host the cli makes is a FakeHost over one Network."""
    system(fs, root=ROOT)
    add_guest_nics(fs, root=ROOT)
    network = Network()
    network.show_routes(ROOT)  # the kernel's, there before any command runs

    def make_host(root="/", dry_run=False, plan=None):
        return network.bind(FakeHost(root, dry_run=dry_run, plan=plan))

    monkeypatch.setattr("gandi_vm.host.Host", make_host)
    return network


def commands(vm):
    return [argv for made in vm.hosts for argv in made.commands]


@pytest.mark.parametrize("action", ["attach", "detach"])
@pytest.mark.parametrize("name", ["../x", "a b", "eth1/../../etc", "x" * 16])
def test_cli_invalid_interface_name_is_a_one_line_error(vm, capsys, action, name):
    assert cli.main(["--root", ROOT, "iface", action, name]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"gandi: error: interface {name!r}: not a valid interface name"]
    assert commands(vm) == []


def test_cli_unknown_interface_exits_2(vm, capsys):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth9"]) == 2
    assert capsys.readouterr().err.splitlines() == ["gandi: error: interface eth9: no such interface"]


def test_cli_attach_and_detach(vm, capsys):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    assert "iface eth1: configured: 10.0.1.5/24 via gandi-dhcp, table 10003" in capsys.readouterr().err
    assert record(root=ROOT)["state"] == "configured"
    assert vm.rules == [{"priority": 10003, "src": "10.0.1.5", "table": "10003"}]
    assert cli.main(["--root", ROOT, "iface", "detach", "eth1"]) == 0
    assert not os.path.exists(f"{ROOT}{RECORD}")
    assert vm.rules == []


def test_cli_lease_script_writes_the_root_and_calls_back_into_iface_lease(vm):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    with open(f"{ROOT}{dhcp.SCRIPT}", encoding="utf-8") as f:
        script = f.read()
    assert script.startswith("#!/bin/sh\n") and f"\nstate={ROOT}/run/gandi/iface\n" in script
    [command] = [shlex.split(line) for line in script.splitlines() if line.lstrip().startswith("exec ")]
    assert command[:4] == ["exec", sys.executable, "-sE", "-c"] and command[5:] == ["$@"]
    assert f"main(['--root', '{ROOT}', 'iface', 'lease'] + sys.argv[1:])" in command[4]


def test_cli_failed_attach_exits_1(vm, capsys):
    vm.offers = {}
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 1
    assert "gandi: error: iface eth1: failed: no DHCP lease after 4 attempts" in capsys.readouterr().err


def test_cli_attach_all(vm):
    assert cli.main(["--root", ROOT, "iface", "attach-all"]) == 0
    assert record(root=ROOT)["state"] == "configured"


def test_cli_lease_event_from_the_environment(vm, monkeypatch):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    for key, value in event("RENEW", ip_address="10.0.1.8").items():
        monkeypatch.setenv(key, value)
    assert cli.main(["--root", ROOT, "iface", "lease"]) == 0
    assert vm.addresses["eth1"] == ["10.0.1.8/24"]


def test_cli_timeout_event_exits_1(vm, monkeypatch):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    for key, value in event("TIMEOUT").items():
        monkeypatch.setenv(key, value)
    assert cli.main(["--root", ROOT, "iface", "lease"]) == 1


def test_cli_dry_run_attach_changes_nothing_and_prints_the_plan(vm, capsys):
    before = snapshot(ROOT)
    assert cli.main(["--root", ROOT, "--dry-run", "iface", "attach", "eth1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert snapshot(ROOT) == before
    assert "would run ip link set dev eth1 up" in out
    assert "would write 2 to /proc/sys/net/ipv4/conf/eth1/rp_filter" in out
    assert "would write /run/gandi/iface/eth1.yaml" in out
    assert any(line.startswith("would run dhclient -4 -1 ") for line in out)
    assert all(line.startswith("would ") for line in out)
    assert commands(vm) and changes(commands(vm)) == []
    assert "eth1" not in vm.addresses and vm.rules == []


def test_cli_dry_run_plans_no_release(vm, capsys):
    assert cli.main(["--root", ROOT, "--dry-run", "iface", "attach", "eth1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("would run dhclient -4 -r ") for line in out)


def test_cli_status_yaml_lists_interfaces(vm, capsys):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    capsys.readouterr()
    assert cli.main(["--root", ROOT, "status", "--format", "yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(data["interfaces"], list)
    rows = {row["interface"]: row for row in data["interfaces"]}
    assert sorted(rows) == ["eth0", "eth1"]
    assert rows["eth1"]["state"] == "configured"
    assert rows["eth1"]["table"] == 10003
    assert rows["eth1"]["lease"]["hostname"] == "vm-eth1"


def test_cli_status_text_has_an_interface_table(vm, capsys):
    assert cli.main(["--root", ROOT, "iface", "attach", "eth1"]) == 0
    capsys.readouterr()
    assert cli.main(["--root", ROOT, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("INTERFACE")))
    assert lines[header].split() == ["INTERFACE", "MAC", "DRIVER", "OPERSTATE", "ADDRESSES", "STACK",
                                     "TABLE", "STATE", "REASON"]
    assert lines[header + 2].split()[:8] == ["eth1", MAC, "virtio_net", "down", "10.0.1.5/24",
                                             "gandi-dhcp", "10003", "configured"]
    assert "lease eth1: gateway 10.0.1.1, dns 10.0.1.53, search example.com, hostname vm-eth1" in lines
