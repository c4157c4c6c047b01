"""`gandi-vm iface attach/detach` with real DHCP clients against dnsmasq, in network namespaces.

Each test's lab (gandi_netns.Lab) is a guest namespace holding a primary interface with the default
route and hot-plugged secondary interfaces, whose DHCP server runs in a server namespace. gandi-vm
runs in the guest namespace with `--root` on a fake sysfs that shows every interface as a virtio
NIC (and `proc -> /proc`: its /proc/net and /proc/sys are the guest namespace's); what it does
is read back from the kernel (`ip -j`), the guest's /proc/sys, its processes and its record file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Dict, List, Tuple

import pytest

from gandi_netns import CLIENTS, PRIMARY, PRIMARY_GATEWAY, REMOTE, Lab, Run

SECONDARY_SYSCTLS = {"ipv4/conf/{}/arp_announce": "2", "ipv4/conf/{}/arp_ignore": "1",
                     "ipv4/conf/{}/rp_filter": "2", "ipv6/conf/{}/accept_ra": "2",
                     "ipv6/conf/{}/accept_ra_defrtr": "0"}
# What the clients make of the hostile option 12 (see gandi_netns.HOSTILE_HOSTNAME): dhclient and
# dhcpcd drop it, busybox udhcpc replaces it with "bad". Kept verbatim would be acceptable too:
# the record is data. Run by a shell, it would create the lab's marker file.
SANITIZED_HOSTNAMES = ("", "bad")
RENEW_AFTER = 3  # seconds from a lease to its renewal, when a test asks for one (option 58)


def attached(lab: Lab, name: str = "ens4") -> Tuple[Run, str, Dict]:
    """Attach one secondary interface that must succeed: (the run, its address, its record)."""
    run = lab.gandi("iface", "attach", name)
    assert run.returncode == 0, f"{run}\n{lab.diagnostics()}"
    assert f"iface {name}: configured: " in run.stderr, str(run)
    [cidr] = lab.addresses(name)
    record = lab.record(name)
    assert record is not None and record.get("address") == cidr, record
    return run, cidr.split("/")[0], record


def check_configured(lab: Lab, name: str, address: str, record: Dict, client: str) -> None:
    """Address, record, rule, table and sysctls of a secondary interface gandi configured."""
    sec = lab[name]
    table, priority = sec.table, sec.priority
    assert address in sec.pool, (address, sec.network)
    assert lab.addresses(name) == [f"{address}/24"]
    assert record["state"] == "configured"
    assert (record["stack"], record["client"], record["role"]) == ("gandi-dhcp", client, "secondary")
    assert (record["primary"], record["table"], record["ifindex"]) == (PRIMARY, table, sec.ifindex)
    assert record["mac"] == sec.mac and record["driver"] == "virtio_net"
    lease = record["lease"]
    assert (lease["address"], lease["prefixlen"]) == (address, 24)
    assert lease["gateway"] == sec.gateway
    assert lease["lease_time"] == 3600 and lease["server"] == sec.gateway

    assert lab.rules(priority) == [{"priority": priority, "src": address, "table": str(table)}]
    routes = {route["dst"]: route for route in lab.routes(table)}
    assert set(routes) == {"default", sec.network}, routes
    assert (routes["default"]["gateway"], routes["default"]["dev"]) == (sec.gateway, name)
    assert (routes[sec.network]["dev"], routes[sec.network]["prefsrc"]) == (name, address)
    assert lab.sysctls(name) == {f"/proc/sys/net/{key.format(name)}": value
                                 for key, value in SECONDARY_SYSCTLS.items()}

    # Replies leave where requests came in: from the secondary's address, a destination the main
    # table sends to the primary goes through the secondary's own table and gateway, and the
    # server (strict reverse-path check on the primary's side) answers.
    route = lab.route_get(REMOTE, address)
    assert (route["dev"], route["gateway"], route["table"]) == (name, sec.gateway, str(table))
    assert lab.reach(address, REMOTE) == "answered"
    assert lab.reach(address, sec.gateway) == "answered"


def check_detached(lab: Lab, name: str, table: int, sysctls_before: Dict[str, str]) -> None:
    assert [rule for rule in lab.rules() if rule.get("table") == str(table)] == []
    assert lab.routes(table) == []
    assert lab.addresses(name) == []
    assert lab.clients(name) == []
    assert not lab.record_path(name).exists()
    assert [f for f in lab.state_files() if f.startswith(f"{name}.")] == []
    assert lab.sysctls(name) == sysctls_before


def main_default(lab: Lab) -> List[Dict]:
    routes = lab.default_routes()
    assert [(r["dev"], r["gateway"]) for r in routes] == [(PRIMARY, PRIMARY_GATEWAY)], routes
    return routes


# -- dhclient, the client gandi-vm prefers -----------------------------------------------------
def test_attach_gets_a_lease_with_dhclient_and_records_it(make_lab):
    lab = make_lab()
    default = main_default(lab)

    _, address, record = attached(lab)

    check_configured(lab, "ens4", address, record, "dhclient")
    sec = lab["ens4"]
    lease = record["lease"]
    assert lease["dns"] == sec.dns
    assert lease["search"] == [sec.search]
    assert lease["hostname"] in SANITIZED_HOSTNAMES + (lab.hostname,)
    assert not lab.marker.exists(), "the DHCP host name was run by a shell"
    assert lab.default_routes() == default
    [client] = lab.clients("ens4")
    assert client["comm"] == "dhclient"


def test_second_attach_is_unchanged(make_lab):
    lab = make_lab()
    _, address, _ = attached(lab)
    snapshot = lab.snapshot()
    record = lab.record_path("ens4").read_bytes()
    clients = lab.clients()

    run = lab.gandi("iface", "attach", "ens4")

    assert run.returncode == 0, str(run)
    assert f"iface ens4: unchanged: already configured (gandi-dhcp, {address}/24)" in run.stderr
    assert lab.snapshot() == snapshot
    assert lab.record_path("ens4").read_bytes() == record
    assert lab.clients() == clients


def test_detach_removes_everything_attach_did(make_lab):
    lab = make_lab()
    sysctls = lab.sysctls("ens4")
    default = main_default(lab)
    _, address, record = attached(lab)

    run = lab.gandi("iface", "detach", "ens4")

    assert run.returncode == 0, str(run)
    assert "iface ens4: detached: " in run.stderr
    check_detached(lab, "ens4", record["table"], sysctls)
    assert lab.default_routes() == default
    assert f"DHCPRELEASE(srv10) {address} {lab['ens4'].mac}" in lab.dnsmasq_log.read_text()
    again = lab.gandi("iface", "detach", "ens4")
    assert again.returncode == 0 and "nothing of ours to remove" in again.stderr, str(again)


def test_overlapping_attaches_of_one_interface_make_one_configuration(make_lab):
    lab = make_lab()

    # udev's add and the boot-time attach-all may overlap: the lock serializes them.
    started = [subprocess.Popen(lab.gandi_argv("iface", "attach", "ens4"), env=lab.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [process.communicate(timeout=120)[1] for process in started]

    assert [p.returncode for p in started] == [0, 0, 0], "\n".join(errors)
    # each attach's outcome is its last line (the one that configured logged the lease before)
    states = sorted(e.splitlines()[-1].split(": ")[2] for e in errors
                    if e.startswith("gandi: iface ens4: "))
    assert states == ["configured", "unchanged", "unchanged"], errors
    [cidr] = lab.addresses("ens4")
    check_configured(lab, "ens4", cidr.split("/")[0], lab.record("ens4"), "dhclient")
    assert len(lab.clients("ens4")) == 1, lab.processes()


def test_detach_puts_the_link_down_as_attach_found_it(make_lab):
    lab = make_lab()
    attached(lab)

    run = lab.gandi("iface", "detach", "ens4")

    assert run.returncode == 0, str(run)
    assert lab.operstate("ens4") == "DOWN"


@pytest.mark.parametrize("client", CLIENTS)
def test_detach_after_unplug_ends_the_client_and_removes_the_rule(make_lab, client):
    # The unit's stop after a hot-unplug: the kernel took the address and the table's routes
    # with the interface, but not the rule, and the client may still run.
    lab = make_lab(client=client)
    default = main_default(lab)
    _, address, record = attached(lab)
    lab.unplug("ens4")
    # The rule outlives the interface; dhcpcd, which sees it go, may already have had its event
    # script clear the lease (and the rule) before the unit's stop comes: both are fine.
    if client != "dhcpcd":
        assert [r["src"] for r in lab.rules(lab["ens4"].priority)] == [address]

    run = lab.gandi("iface", "detach", "ens4")

    assert run.returncode == 0, str(run)
    assert "iface ens4: detached: " in run.stderr
    assert [rule for rule in lab.rules() if rule.get("table") == str(record["table"])] == []
    assert lab.routes(record["table"]) == []
    # dhclient and udhcpc are ended by the detach. dhcpcd ends itself once its interface is
    # gone (gandi's stop() cannot find it: dhcpcd writes no pid file where it looks), a moment
    # later: its last event must not bring the record back.
    deadline = time.monotonic() + (5 if client == "dhcpcd" else 0)
    while lab.clients() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert lab.clients() == []
    assert not lab.record_path("ens4").exists()
    assert [f for f in lab.state_files() if f.startswith("ens4.")] == []
    assert lab.default_routes() == default


def test_two_secondaries_get_distinct_tables_and_both_work(make_lab):
    lab = make_lab(secondaries=("ens4", "ens5"))
    default = main_default(lab)
    sysctls = {name: lab.sysctls(name) for name in ("ens4", "ens5")}

    # Both at once, as udev starts one unit per interface.
    started = [subprocess.Popen(lab.gandi_argv("iface", "attach", name), env=lab.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in ("ens4", "ens5")]
    outputs = [process.communicate(timeout=120) for process in started]

    for process, (_, err) in zip(started, outputs):
        assert process.returncode == 0 and "Traceback" not in err, f"{err}\n{lab.diagnostics()}"
    tables = set()
    for name in ("ens4", "ens5"):
        [cidr] = lab.addresses(name)
        record = lab.record(name)
        check_configured(lab, name, cidr.split("/")[0], record, "dhclient")
        tables.add(record["table"])
    assert tables == {lab["ens4"].table, lab["ens5"].table} and len(tables) == 2
    assert lab.default_routes() == default
    assert len(lab.clients("ens4")) == 1 and len(lab.clients("ens5")) == 1

    for name in ("ens4", "ens5"):
        run = lab.gandi("iface", "detach", name)
        assert run.returncode == 0, str(run)
        check_detached(lab, name, lab[name].table, sysctls[name])


@pytest.mark.parametrize("client", CLIENTS)
def test_attach_without_a_dhcp_server_retries_fails_and_changes_nothing(make_lab, client):
    lab = make_lab(secondaries=("ens4",), unserved=("ens4",), client=client)
    lab.write_config(CONFIG_DHCP_TIMEOUT=3, CONFIG_DHCP_RETRIES=2)
    snapshot = lab.snapshot()
    sysctls = lab.sysctls("ens4")

    run = lab.gandi("iface", "attach", "ens4")

    assert run.returncode == 1, str(run)
    assert run.lines("warning") == [
        "gandi: warning: iface ens4: no DHCP lease within 3s (attempt 1 of 2); retrying in 2s",
        "gandi: warning: iface ens4: no DHCP lease within 3s (attempt 2 of 2); giving up",
    ], str(run)
    assert run.lines("error") == ["gandi: error: iface ens4: failed: no DHCP lease after 2 "
                                  "attempts of 3s; nothing changed"], str(run)
    assert lab.snapshot() == snapshot
    assert lab.operstate("ens4") == "DOWN"
    assert lab.sysctls("ens4") == sysctls
    assert lab.processes() == []
    record = lab.record("ens4")
    assert record is not None and record["state"] == "failed" and "sysctl" not in record
    assert [f for f in lab.state_files() if f.startswith("ens4.")] == ["ens4.yaml"]


# -- each client, made the only one installed under --root ---------------------------------------
@pytest.mark.parametrize("client", CLIENTS)
def test_attach_and_detach_with_each_client(make_lab, client):
    lab = make_lab(client=client)
    default = main_default(lab)
    sysctls = lab.sysctls("ens4")

    _, address, record = attached(lab)

    check_configured(lab, "ens4", address, record, client)
    assert lab.default_routes() == default
    assert lab.clients("ens4"), lab.processes()
    assert record["lease"]["hostname"] in SANITIZED_HOSTNAMES + (lab.hostname,)
    assert not lab.marker.exists(), "the DHCP host name was run by a shell"

    run = lab.gandi("iface", "detach", "ens4")

    assert run.returncode == 0, str(run)
    check_detached(lab, "ens4", record["table"], sysctls)
    assert lab.default_routes() == default
    assert f"DHCPRELEASE(srv10) {address} {lab['ens4'].mac}" in lab.dnsmasq_log.read_text()


def ipv4_state(lab: Lab) -> Dict[str, object]:
    """The guest's IPv4 addresses, routes of every table and rules (IPv6 link-local addresses
    finish their duplicate address detection on their own time)."""
    return {"addresses": lab.ip_json("-4", "addr", "show"), "routes": lab.routes("all"),
            "rules": lab.rules()}


def first_renewal(lab: Lab, client: str) -> Tuple[int, List[str]]:
    """The interpreter run of the client's first renewal after attach: its exit status and its
    arguments after `-c CODE`. dhclient and dhcpcd renew after option 58; udhcpc ignores it and
    renews on SIGUSR1."""
    if client == "udhcpc":
        [process] = lab.clients("ens4")
        os.kill(int(process["pid"]), signal.SIGUSR1)  # type: ignore[call-overload]
    deadline = time.monotonic() + RENEW_AFTER + 30
    while len(lab.python_runs()) < 2:
        assert time.monotonic() < deadline, f"no renewal\n{lab.diagnostics()}"
        time.sleep(0.1)
    status, argv = lab.python_runs()[1]
    assert argv[:3] == ["-sE", "-c", argv[2]] and "'iface', 'lease'" in argv[2], argv
    return status, argv[3:]


@pytest.mark.parametrize("client", CLIENTS)
def test_the_first_lease_is_applied_by_attach_itself_and_a_renewal_by_iface_lease(make_lab, client):
    # Issue 14: the event script hands the first lease to the attach waiting for it, instead
    # of starting a second interpreter; later events still start `gandi-vm iface lease`.
    lab = make_lab(client=client, renew_after=RENEW_AFTER, count_python=True)

    run, address, record = attached(lab)

    check_configured(lab, "ens4", address, record, client)
    assert [argv[-3:] for _, argv in lab.python_runs()] == [["iface", "attach", "ens4"]]
    assert f"iface ens4: bound {address}/24, gateway {lab['ens4'].gateway}, table " in run.stderr
    before = ipv4_state(lab)

    status, args = first_renewal(lab, client)

    assert (status, args) == (0, ["renew"] if client == "udhcpc" else [])
    assert ipv4_state(lab) == before
    check_configured(lab, "ens4", address, lab.record("ens4"), client)
    assert [f for f in lab.state_files() if f.split(".")[1:2] in (["waiting"], ["event"], ["verdict"])] == []


@pytest.mark.parametrize("client", [
    "dhclient",
    "udhcpc",
    "dhcpcd",
])
def test_the_record_keeps_name_servers_and_search_domains(make_lab, client):
    lab = make_lab(client=client)

    _, _, record = attached(lab)

    sec = lab["ens4"]
    assert (record["lease"]["dns"], record["lease"]["search"]) == (sec.dns, [sec.search])


# -- status and the primary ------------------------------------------------------------------------
def test_status_yaml_shows_the_interface_and_its_table(make_lab):
    import yaml

    lab = make_lab()
    _, address, record = attached(lab)

    run = lab.gandi("status", "--format", "yaml")

    assert run.returncode == 0, str(run)
    rows = {row["interface"]: row for row in yaml.safe_load(run.stdout)["interfaces"]}
    assert set(rows) == {PRIMARY, "ens4"}
    row = rows["ens4"]
    assert row["table"] == lab["ens4"].table == record["table"]
    assert row["state"] == "configured" and row["stack"] == "gandi-dhcp"
    assert row["addresses"] == [f"{address}/24"]
    assert row["rules"] == [f"from {address} lookup {lab['ens4'].table}"]
    assert row["mac"] == lab["ens4"].mac and row["driver"] == "virtio_net"
    assert row["lease"]["gateway"] == lab["ens4"].gateway
    assert row["lease"]["dns"] == lab["ens4"].dns
    assert rows[PRIMARY]["table"] is None and rows[PRIMARY]["state"] == "-"


def test_the_primary_interface_is_left_alone(make_lab):
    lab = make_lab()
    snapshot = lab.snapshot()
    sysctls = lab.sysctls(PRIMARY)

    run = lab.gandi("iface", "attach", PRIMARY)

    assert run.returncode == 0, str(run)
    assert f"iface {PRIMARY}: left: holds the default route" in run.stderr
    assert lab.snapshot() == snapshot
    assert lab.sysctls(PRIMARY) == sysctls
    assert lab.processes() == []
    assert lab.record(PRIMARY)["state"] == "left"

    run = lab.gandi("iface", "detach", PRIMARY)

    assert run.returncode == 0 and "nothing of ours to remove" in run.stderr, str(run)
    assert lab.snapshot() == snapshot
    assert not lab.record_path(PRIMARY).exists()


def test_without_a_default_route_the_new_interface_is_the_primary(make_lab):
    """The main table attach reads (/proc/net/route under the root, proc -> /proc) is the guest
    namespace's own, not the one of the machine running the tests, whatever that one holds."""
    lab = make_lab()
    lab.exec("ip", "route", "del", "default")
    sec = lab["ens4"]

    _, address, record = attached(lab)

    assert (record["role"], record["primary"], record["table"]) == ("primary", None, None)
    assert [(r["dev"], r["gateway"]) for r in lab.default_routes()] == [("ens4", sec.gateway)]
    assert lab.rules(sec.priority) == []

    run = lab.gandi("iface", "detach", "ens4")

    assert run.returncode == 0, str(run)
    assert lab.default_routes() == [] and lab.addresses("ens4") == []


def test_the_lab_is_what_the_tests_assume(make_lab):
    """The lab itself: a lab that answered everything would make `reach` prove nothing."""
    lab = make_lab(secondaries=("ens4", "ens5"), unserved=("ens5",))
    for name in ("ens4", "ens5"):
        sec = lab[name]
        assert sec.table == 10000 + sec.ifindex
        assert lab.operstate(name) == "DOWN" and lab.addresses(name) == []
    assert lab["ens4"].served and not lab["ens5"].served
    assert lab.reach("192.0.2.2", REMOTE) == "answered"
    # A secondary address without its own table: the request leaves through the primary and
    # the server's strict reverse-path check drops it.
    lab.exec("ip", "link", "set", "ens4", "up")
    lab.exec("ip", "addr", "add", "10.99.10.200/24", "dev", "ens4")
    assert lab.route_get(REMOTE, "10.99.10.200")["dev"] == PRIMARY
    assert lab.reach("10.99.10.200", REMOTE, timeout=1) != "answered"
    assert lab.reach("10.99.10.200", lab["ens4"].gateway) == "answered"
