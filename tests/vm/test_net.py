"""Network interface hotplug through QMP: the kernel's uevent, our rule, gandi-iface@ and the handler.

The guest has no network stack of its own (no ifupdown, networkd disabled), so our DHCP client
configures its first NIC at boot (the primary: default route in the main table) and every NIC
hot-added later (secondary: a table of its own). QEMU's user-mode networks each run a DHCP server:
the first NIC's is 10.0.2.0/24, the hot-added one's 10.0.3.0/24.
"""

from __future__ import annotations

import base64
import socket
import time

import pytest
import yaml

from qemu_guest import FORWARDED_PORT, Guest

MAC = "52:54:00:12:34:77"
WAIT = 60  # DHCP under TCG: the unit starts, dhclient sends its first DISCOVER after a delay


def default_route(guest: Guest) -> str:
    return guest.check("ip -4 route show default table main").strip()


def reply_through_first_nic(guest: Guest) -> str:
    """Connect from the host to the guest through the first NIC (QEMU's port forward) and read a
    line the guest sends back: the reply must find its way out through that NIC."""
    deadline = time.monotonic() + guest.scaled(20)
    while True:
        try:
            with socket.create_connection(("127.0.0.1", guest.forwarded_port), timeout=5) as s:
                data = s.makefile().readline().strip()
                if data:
                    return data
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("no answer from the guest through its first NIC")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def first_nic(guest: Guest) -> str:
    guest.wait_until("ip -4 route show default | grep -q .", WAIT)
    name = guest.check("ip -4 route show default | awk '{print $5; exit}'").strip()
    # A one-line TCP answer on the forwarded port, detached from the agent's pipes.
    server = base64.b64encode(LISTENER.encode()).decode()
    guest.check(f"echo {server} | base64 -d >/run/listener.py && "
                "setsid python3 /run/listener.py </dev/null >/dev/null 2>&1 &")
    return name


LISTENER = f"""
import socket
server = socket.create_server(("", {FORWARDED_PORT}))
while True:
    connection, _ = server.accept()
    connection.sendall(b"gandi-guest\\n")
    connection.close()
"""


def test_first_nic_is_configured_at_boot_as_the_primary(guest: Guest, first_nic: str):
    assert guest.check(f"systemctl is-active gandi-iface@{first_nic}.service").strip() == "active"
    record = yaml.safe_load(guest.check(f"cat /run/gandi/iface/{first_nic}.yaml"))
    assert (record["role"], record["stack"], record["table"]) == ("primary", "gandi-dhcp", None)
    assert record["lease"]["gateway"] == "10.0.2.2"
    assert f"default via 10.0.2.2 dev {first_nic}" in default_route(guest)
    assert reply_through_first_nic(guest) == "gandi-guest"


def test_hot_added_nic_gets_its_own_table_and_the_first_nic_stays_reachable(guest: Guest,
                                                                             first_nic: str):
    main_before = default_route(guest)
    guest.add_nic("nic1", mac=MAC)
    name = guest.nic_name(MAC)
    took = guest.wait_until(f"ip -o -4 addr show dev {name} | grep -q 'inet 10.0.3.'", WAIT)
    guest.wait_until(f"systemctl is-active --quiet gandi-iface@{name}.service", 30)
    address = guest.check(f"ip -o -4 addr show dev {name} | awk '{{print $4}}'").strip().split("/")[0]
    table = 10000 + int(guest.check(f"cat /sys/class/net/{name}/ifindex"))

    assert f"{table}:\tfrom {address} lookup {table}" in guest.check("ip rule")
    routes = guest.check(f"ip route show table {table}")
    assert f"default via 10.0.3.2 dev {name}" in routes, routes
    assert default_route(guest) == main_before, "the main default route must not change"
    # Replies from the new address leave through the new NIC, everything else as before.
    assert f"dev {name} table {table}" in guest.check(f"ip route get 192.0.2.1 from {address}")
    assert f"dev {first_nic}" in guest.check("ip route get 192.0.2.1")
    assert reply_through_first_nic(guest) == "gandi-guest"
    assert guest.check(f"sysctl -n net.ipv4.conf.{name}.rp_filter net.ipv4.conf.{name}.arp_ignore "
                       f"net.ipv4.conf.{name}.arp_announce").split() == ["2", "1", "2"]
    status = guest.check("gandi-vm status --format yaml")
    assert f"interface: {name}" in status and f"table: {table}" in status, status
    print(f"hot-added NIC {name}: address {address} after {took:.1f}s")


def test_hot_removed_nic_leaves_nothing_behind(guest: Guest, first_nic: str):
    name = guest.nic_name(MAC)
    table = 10000 + int(guest.check(f"cat /sys/class/net/{name}/ifindex"))
    guest.remove_nic("nic1")
    # "deactivating" is not active either: wait for the stop (our detach) to have finished.
    guest.wait_until(f'test "$(systemctl is-active gandi-iface@{name}.service)" = inactive', 60)
    assert f"{table}:" not in guest.check("ip rule")
    assert guest.check(f"ip route show table {table} 2>/dev/null || true").strip() == ""
    assert guest.run(f"test -e /run/gandi/iface/{name}.yaml").returncode == 1
    assert guest.run(f"pgrep -f 'dhclient.* {name}$'").returncode == 1, "client still running"
    assert reply_through_first_nic(guest) == "gandi-guest"

