"""A hot-added NIC on a guest whose network is owned by systemd-networkd.

The first NIC is configured at boot by our DHCP client (networkd is disabled in the image); the
scenario then starts networkd, which has no .network file: the new NIC is unmanaged in its eyes,
so attach hands it over through a runtime .network file (DHCP, RouteTable=, RoutingPolicyRule=)
instead of running a DHCP client of its own, and detach removes that file again.
"""

from __future__ import annotations

import pytest
import yaml

from qemu_guest import Guest

MAC = "52:54:00:12:34:78"
WAIT = 90  # networkd reloads twice (the rule needs the address) under TCG


@pytest.fixture(scope="module")
def networkd(guest: Guest) -> Guest:
    guest.wait_until("ip -4 route show default | grep -q .", 60)
    guest.check("systemctl start systemd-networkd.service")
    return guest


def test_networkd_gets_the_hot_added_nic_through_a_runtime_network_file(networkd: Guest):
    guest = networkd
    main_before = guest.check("ip -4 route show default table main")
    guest.add_nic("nic-networkd", mac=MAC)
    name = guest.nic_name(MAC)
    guest.wait_until(f"grep -q '\"state\": \"configured\"' /run/gandi/iface/{name}.yaml", WAIT)
    record = yaml.safe_load(guest.check(f"cat /run/gandi/iface/{name}.yaml"))
    table = 10000 + int(guest.check(f"cat /sys/class/net/{name}/ifindex"))
    address = record["address"].split("/")[0]

    assert (record["stack"], record["table"]) == ("systemd-networkd", table)
    assert record["lease"]["gateway"] == "10.0.3.2"
    network = guest.check(f"cat /run/systemd/network/90-gandi-{name}.network")
    assert f"RouteTable={table}" in network and f"From={address}/32" in network, network
    assert guest.run(f"pgrep -f 'dhclient.* {name}$'").returncode == 1, "networkd runs DHCP"
    assert f"from {address} lookup {table}" in guest.check("ip rule")
    assert f"default via 10.0.3.2 dev {name}" in guest.check(f"ip route show table {table}")
    assert guest.check("ip -4 route show default table main") == main_before


def test_detach_removes_the_network_file_and_the_rule(networkd: Guest):
    guest = networkd
    name = guest.nic_name(MAC)
    guest.remove_nic("nic-networkd")
    guest.wait_until(f'test "$(systemctl is-active gandi-iface@{name}.service)" = inactive', 60)
    assert guest.run(f"test -e /run/systemd/network/90-gandi-{name}.network").returncode == 1
    assert "lookup 1" not in guest.check("ip rule")
    assert guest.run(f"test -e /run/gandi/iface/{name}.yaml").returncode == 1
