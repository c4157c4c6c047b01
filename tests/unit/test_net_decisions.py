"""The pure decisions behind `iface attach` and the facts they read: which interfaces are ours
(netdev + skip_reason), which stack configures one (choose, netstack's file checks), queue counts
(channels, cpu), retries (backoff), routing tables, generated networkd/nmcli configuration, and the
new configuration keys."""

from __future__ import annotations

import logging
from gandi_vm.record import replace

import pytest
from fakesys import FakeHost, add_nic

from gandi_vm import config, cpu, dhcp, net, netdev, netstack, routing
from gandi_vm.config import Settings
from gandi_vm.host import Host
from gandi_vm.netdev import NetDevice

SETTINGS = Settings()
MAC = "52:54:00:12:34:03"

# `ethtool -l eth1` on a virtio-net device with 4 queue pairs, 1 in use (ethtool 6.1).
ETHTOOL_L = """\
Channel parameters for eth1:
Pre-set maximums:
RX:		n/a
TX:		n/a
Other:		n/a
Combined:	4
Current hardware settings:
RX:		n/a
TX:		n/a
Other:		n/a
Combined:	1
"""


def nic(name="eth1", ifindex=3, mac=MAC, **changes) -> NetDevice:
    fields = dict(name=name, ifindex=ifindex, mac=mac, type=1, driver="virtio_net", backed=True,
                  kind="", operstate="down")
    return NetDevice(**{**fields, **changes})


# -- netdev: what sysfs says ----------------------------------------------------------------------
def test_read_a_virtio_nic(host, fs):
    add_nic(fs, "eth1", 3, "52:54:00:AB:CD:EF", operstate="up")
    assert netdev.read(host, "eth1") == NetDevice(
        name="eth1", ifindex=3, mac="52:54:00:ab:cd:ef", type=1, driver="virtio_net", backed=True,
        kind="", operstate="up")


def test_read_the_loopback(host, fs):
    add_nic(fs, "lo", 1, "00:00:00:00:00:00", backed=False, operstate="unknown")
    dev = netdev.read(host, "lo")
    assert dev.loopback
    assert (dev.backed, dev.driver) == (False, None)


@pytest.mark.parametrize("kind, shown", [("bridge", "bridge"), ("vlan", "vlan"), ("bond", "bond"),
                                         ("tun", "tun"), ("veth", "")])
def test_read_the_kind_of_a_virtual_interface(host, fs, kind, shown):
    add_nic(fs, "virt0", 9, "02:42:ac:11:00:02", backed=False, kind=kind)
    dev = netdev.read(host, "virt0")
    assert (dev.backed, dev.kind, dev.driver) == (False, shown, None)


def test_read_a_missing_interface(host):
    with pytest.raises(netdev.NoSuchInterface, match="eth9: no such interface"):
        netdev.read(host, "eth9")


# '²'.isdigit() is true and int('²') raises; int() takes '+3', '3_0' and '٣', which no kernel prints.
OTHER_DIGITS = ["\u00b2", "\u0663", "3 4", "3_0", "1" * 11, "-3", "+3", ""]


@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_read_an_ifindex_in_other_digits_is_no_interface(host, fs, value):
    base = add_nic(fs, "eth1", 3, MAC)
    fs.remove(f"{base}/ifindex")
    fs.create_file(f"{base}/ifindex", contents=value)
    with pytest.raises(netdev.NoSuchInterface, match="eth1: no such interface"):
        netdev.read(host, "eth1")


@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_read_a_type_in_other_digits_is_taken_as_absent(host, fs, value):
    base = add_nic(fs, "eth1", 3, MAC)
    fs.remove(f"{base}/type")
    fs.create_file(f"{base}/type", contents=value)
    assert netdev.read(host, "eth1").type == netdev.ARPHRD_ETHER


def test_read_keeps_only_facts_shaped_as_the_kernel_shows_them(host, fs):
    # These reach the record, `status` and (the MAC) a generated .network file.
    base = add_nic(fs, "eth1", 3, MAC)
    for attribute, value in (("address", f"{MAC}\n[Match]\nName=*"), ("operstate", "up\x1b[2J"),
                             ("uevent", "DEVTYPE=vlan\x1b]0;x\x07\nINTERFACE=eth1\n")):
        fs.remove(f"{base}/{attribute}")
        fs.create_file(f"{base}/{attribute}", contents=value)
    dev = netdev.read(host, "eth1")
    assert (dev.mac, dev.operstate, dev.kind) == ("", "unknown", "")


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a b", "eth1/..", "x" * 16, "eth:1",
                                  "eth1\n", "$(reboot)"])
def test_names_the_kernel_cannot_give_are_refused(name):
    with pytest.raises(netdev.NoSuchInterface, match="not a valid interface name"):
        netdev.checked_name(name)


@pytest.mark.parametrize("name", ["eth0", "ens4", "enp0s3", "eth0.100", "veth1a2b@if3", "x" * 15])
def test_names_the_kernel_gives_are_accepted(name):
    assert netdev.checked_name(name) == name


def test_names_lists_interfaces(host, fs):
    add_nic(fs, "lo", 1, "00:00:00:00:00:00", backed=False)
    add_nic(fs, "eth0", 2, "52:54:00:12:34:02")
    add_nic(fs, "docker0", 4, "02:42:00:00:00:01", backed=False, kind="bridge")
    assert netdev.names(host) == ["docker0", "eth0", "lo"]


# -- skip_reason -----------------------------------------------------------------------------------
def test_a_plain_virtio_nic_is_ours(host, fs):
    add_nic(fs, "eth1", 3, MAC)
    assert net.skip_reason(netdev.read(host, "eth1"), SETTINGS) is None


def test_config_network_0_skips_everything(host, fs):
    add_nic(fs, "eth1", 3, MAC)
    settings = replace(SETTINGS, network=False)
    assert net.skip_reason(netdev.read(host, "eth1"), settings) == "CONFIG_NETWORK=0"


def test_loopback_is_skipped(host, fs):
    add_nic(fs, "lo", 1, "00:00:00:00:00:00", backed=False)
    assert net.skip_reason(netdev.read(host, "lo"), SETTINGS) == "loopback"


@pytest.mark.parametrize("name, kind, reason", [
    ("veth1a2b", "veth", "virtual interface (no backing device)"),
    ("br0", "bridge", "virtual interface (bridge)"),
    ("tap0", "tun", "virtual interface (tun)"),
])
def test_virtual_interfaces_are_skipped(host, fs, name, kind, reason):
    add_nic(fs, name, 7, "02:00:00:00:00:07", backed=False, kind=kind)
    assert net.skip_reason(netdev.read(host, name), SETTINGS) == reason


@pytest.mark.parametrize("nodhcp", [("eth1",), ("eth0", "eth1"), ("eth*",), ("e?h[0-9]",)])
def test_config_nodhcp_names_or_patterns_skip(nodhcp):
    settings = replace(SETTINGS, nodhcp=nodhcp)
    assert net.skip_reason(nic("eth1"), settings) == "listed in CONFIG_NODHCP"


@pytest.mark.parametrize("nodhcp", [("eth10",), ("eth",), ("ens*",), ("ETH1",)])
def test_config_nodhcp_is_exact_and_case_sensitive(nodhcp):
    assert net.skip_reason(nic("eth1"), replace(SETTINGS, nodhcp=nodhcp)) is None


# -- choose ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("running, nm_state, stack", [
    ([], "", netstack.OWN),
    ([netstack.NETWORKD], "", netstack.NETWORKD),
    ([netstack.NM], "managed", netstack.NM),
    ([netstack.NM], "unmanaged", netstack.OWN),
    ([netstack.NETWORKD, netstack.NM], "managed", netstack.NM),
    ([netstack.NETWORKD, netstack.NM], "unmanaged", netstack.NETWORKD),
])
def test_choose(running, nm_state, stack):
    assert net.choose(running, nm_state) == stack


# -- channels, cpu, backoff ------------------------------------------------------------------------
def test_channels_one_queue_pair_per_online_cpu():
    assert net.channels(2, ETHTOOL_L) == (2, 1)


def test_channels_never_more_than_the_device_maximum():
    assert net.channels(16, ETHTOOL_L) == (4, 1)


def test_channels_already_right():
    assert net.channels(1, ETHTOOL_L) == (1, 1)


def test_channels_single_queue_device_is_not_multiqueue():
    single = ETHTOOL_L.replace("Combined:\t4", "Combined:\t1")
    assert net.channels(2, single) is None


@pytest.mark.parametrize("output", [
    "", "netlink error: Operation not supported\n",
    ETHTOOL_L.replace("Combined:\t1", "Combined:\tn/a"),
    ETHTOOL_L.split("Current hardware settings:")[0],
])
def test_channels_unusable_output(output):
    assert net.channels(2, output) is None


@pytest.mark.parametrize("value", OTHER_DIGITS)
def test_channels_in_other_digits_are_unusable_output(value):
    assert net.channels(2, ETHTOOL_L.replace("Combined:\t4", f"Combined:\t{value}")) is None
    assert net.channels(2, ETHTOOL_L.replace("Combined:\t1", f"Combined:\t{value}")) is None


@pytest.mark.parametrize("online, count", [("0", 1), ("0-3", 4), ("0-1,4", 3), ("0,2-3,6-7", 5)])
def test_online_cpu_count(host, fs, online, count):
    fs.create_file("/sys/devices/system/cpu/online", contents=online + "\n")
    assert cpu.online_count(host) == count


def test_online_cpu_count_is_at_least_one(host):
    assert cpu.online_count(host) == 1


def test_backoff_grows_and_is_bounded():
    waits = [net.backoff(attempt) for attempt in range(1, 10)]
    assert waits[:4] == [2, 4, 8, 16]
    assert waits == sorted(waits)
    assert max(waits) == net.MAX_BACKOFF == 30
    assert net.backoff(1000) == 30


# -- routing tables --------------------------------------------------------------------------------
def test_table_for_is_distinct_per_interface_and_above_the_reserved_tables():
    assert routing.table_for(3) == 10003
    assert routing.table_for(3) != routing.table_for(4)
    assert routing.table_for(1) > 255  # 253-255 are default, main, local


# /proc/net/route of a network namespace (Linux 6.18): an unreachable and a blackhole default
# route, a default route via 10.5.0.1 with a metric past 2^31, its subnet; lines padded to 127.
PROC_NET_ROUTE = "".join(f"{line:<127}\n" for line in [
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
    "*\t00000000\t00000000\t0201\t0\t0\t5\t00000000\t0\t0\t0",
    "*\t00000000\t00000000\t0001\t0\t0\t7\t00000000\t0\t0\t0",
    "d0\t00000000\t0100050A\t0003\t0\t0\t3000000000\t00000000\t0\t0\t0",
    "d0\t0000050A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
])
ROUTE_HEADER = PROC_NET_ROUTE.split("\n", 1)[0] + "\n"


def route_line(iface, destination, metric, mask):
    return f"{iface}\t{destination}\t0100A8C0\t0003\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


@pytest.mark.parametrize("routes, primary", [
    ([], None),
    ([("eth0", "00000000", "100", "00000000")], "eth0"),
    ([("eth1", "00000000", "200", "00000000"), ("eth0", "00000000", "100", "00000000")], "eth0"),
    ([("eth0", "00000000", "100", "00000000"), ("eth1", "00000000", "100", "00000000")], "eth0"),
    ([("eth1", "0000A8C0", "0", "00FFFFFF"), ("eth0", "00000000", "100", "00000000")], "eth0"),
    ([("eth1", "00000000", "0", "0000FFFF")], None),  # 0.0.0.0/16 is not the default route
    ([("eth1", "00000000", "x1", "00000000"), ("eth0", "00000000", "4294967295", "00000000")],
     "eth0"),  # a metric that is not a number sorts last
    ([("eth1", "00000000", "-1", "00000000"), ("eth0", "00000000", "7", "00000000")], "eth0"),
    ([("eth1", "00000000")], None),  # a line cut short
])
def test_default_route_interface_is_the_lowest_metric_default_of_the_main_table(fs, routes, primary):
    fs.create_file("/vm/proc/net/route", contents=ROUTE_HEADER + "".join(
        route_line(*route) if len(route) == 4 else "\t".join(route) + "\n" for route in routes))
    host = FakeHost("/vm")
    assert routing.default_route_interface(host) == primary
    assert host.commands == []


def test_default_route_through_no_interface_is_nobodys(fs):
    """An unreachable or blackhole default route with the lowest metric: `ip` named no device."""
    fs.create_file("/proc/net/route", contents=PROC_NET_ROUTE)
    assert routing.default_route_interface(Host()) is None
    fs.remove("/proc/net/route")
    fs.create_file("/proc/net/route", contents="".join(
        line + "\n" for line in PROC_NET_ROUTE.splitlines() if not line.startswith("*")))
    assert routing.default_route_interface(Host()) == "d0"


def test_default_route_interface_without_proc_is_none(fs):
    assert routing.default_route_interface(FakeHost("/vm")) is None


# -- netstack: the owner's configuration files ------------------------------------------------------
def test_ifupdown_iface_stanza(host, fs):
    fs.create_file("/etc/network/interfaces",
                   contents="auto lo\niface lo inet loopback\n\nauto eth1\niface eth1 inet dhcp\n")
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/network/interfaces"


def test_ifupdown_allow_hotplug_in_a_sourced_file(host, fs):
    fs.create_file("/etc/network/interfaces",
                   contents="source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n")
    fs.create_file("/etc/network/interfaces.d/50-cloud-init", contents="allow-hotplug ens4\n")
    fs.create_file("/etc/network/interfaces.d/60-other", contents="iface ens5 inet dhcp\n")
    assert netstack.configured_in_files(host, nic("ens4")) == "/etc/network/interfaces.d/50-cloud-init"
    assert netstack.configured_in_files(host, nic("ens5")) == "/etc/network/interfaces.d/60-other"


def test_ifupdown_source_directory_relative_to_etc_network(host, fs):
    fs.create_file("/etc/network/interfaces", contents="source-directory interfaces.d\n")
    fs.create_file("/etc/network/interfaces.d/eth1", contents="auto eth1\niface eth1 inet dhcp\n")
    # run-parts naming: a name with a dot is not read by ifupdown, so it configures nothing
    fs.create_file("/etc/network/interfaces.d/eth2.cfg", contents="iface eth2 inet dhcp\n")
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/network/interfaces.d/eth1"
    assert netstack.configured_in_files(host, nic("eth2")) is None


def test_ifupdown_source_glob_only_matches_the_pattern(host, fs):
    fs.create_file("/etc/network/interfaces", contents="source interfaces.d/*.cfg\n")
    fs.create_file("/etc/network/interfaces.d/eth1.cfg", contents="iface eth1 inet dhcp\n")
    fs.create_file("/etc/network/interfaces.d/eth2.disabled", contents="iface eth2 inet dhcp\n")
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/network/interfaces.d/eth1.cfg"
    assert netstack.configured_in_files(host, nic("eth2")) is None


def test_ifupdown_comments_and_other_names_do_not_match(host, fs):
    fs.create_file("/etc/network/interfaces", contents=(
        "# iface eth1 inet dhcp\n"
        "auto eth10 eth0\n"
        "iface eth10 inet dhcp  # eth1\n"
        "#source /etc/network/more\n"))
    fs.create_file("/etc/network/more", contents="iface eth1 inet dhcp\n")
    assert netstack.configured_in_files(host, nic("eth1")) is None


def test_ifupdown_sourcing_itself_terminates(host, fs):
    fs.create_file("/etc/network/interfaces", contents="source /etc/network/interfaces\n")
    assert netstack.configured_in_files(host, nic("eth1")) is None


def counting_reads(host, limit: int):
    """Count the files `host` reads; past `limit`, fail at once instead of hanging the suite."""
    reads = []
    read_text = host.read_text

    def counted(path):
        reads.append(path)
        if len(reads) > limit:
            raise AssertionError(f"more than {limit} file reads: {reads[-3:]}")
        return read_text(path)

    host.read_text = counted
    return reads


def test_ifupdown_sources_are_read_once_however_often_they_are_sourced(host, fs):
    # Eight self-sourcing lines were 8**6 reads (a hung attach); a cycle between two files, a
    # directory sourced twice and a glob matching the file itself add nothing either.
    fs.create_file("/etc/network/interfaces", contents=(
        "source /etc/network/interfaces\n" * 8 + "source interfaces.d/*\n"
        "source-directory /etc/network/interfaces.d\nsource-directory interfaces.d\n"
        "source /etc/network/*\nsource /etc/network/../network/interfaces\n"))
    fs.create_file("/etc/network/interfaces.d/a", contents="source /etc/network/interfaces.d/b\n" * 8)
    fs.create_file("/etc/network/interfaces.d/b", contents=(
        "source /etc/network/interfaces.d/a\nsource /etc/network/interfaces\n" * 8))
    fs.create_symlink("/etc/network/interfaces.d/c", "/etc/network/interfaces")
    fs.create_file("/etc/network/interfaces.d/d", contents="iface eth1 inet dhcp\n")
    reads = counting_reads(host, 50)
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/network/interfaces.d/d"
    assert sorted(reads) == ["/etc/network/interfaces", "/etc/network/interfaces.d/a",
                             "/etc/network/interfaces.d/b", "/etc/network/interfaces.d/d"]
    reads.clear()
    assert netstack.configured_in_files(host, nic("eth2")) is None
    # The same files, and the directory the glob `*` matched (an unreadable "file"), once each.
    assert sorted(reads) == ["/etc/network/interfaces", "/etc/network/interfaces.d",
                             "/etc/network/interfaces.d/a", "/etc/network/interfaces.d/b",
                             "/etc/network/interfaces.d/d"]


@pytest.mark.parametrize("line", ["source /etc/network/\0x", "source /etc/\0/*", "source \0",
                                  "source-directory /etc/network/\0x", "source-directory \0"])
def test_ifupdown_source_with_a_nul_byte_names_no_file(tmp_path, line):
    # The real filesystem (pyfakefs accepts a NUL in a name): os.listdir, realpath and open
    # raise ValueError for it, which used to end `iface attach` in a traceback.
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(f"{line}\nallow-hotplug eth1\n")
    host = Host(str(tmp_path))
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/network/interfaces"
    assert netstack.configured_in_files(host, nic("eth2")) is None


def test_rhel_ifcfg_by_device(host, fs):
    fs.create_file("/etc/sysconfig/network-scripts/ifcfg-net1",
                   contents='TYPE=Ethernet\nBOOTPROTO=dhcp\nDEVICE="eth1"\nONBOOT=yes\n')
    assert netstack.configured_in_files(host, nic("eth1")) == \
        "/etc/sysconfig/network-scripts/ifcfg-net1"


def test_rhel_ifcfg_by_hwaddr(host, fs):
    fs.create_file("/etc/sysconfig/network-scripts/ifcfg-System_eth1",
                   contents=f"BOOTPROTO=dhcp\nHWADDR={MAC.upper()}\nONBOOT=yes\n")
    assert netstack.configured_in_files(host, nic("eth1")) == \
        "/etc/sysconfig/network-scripts/ifcfg-System_eth1"


def test_rhel_ifcfg_by_file_name(host, fs):
    fs.create_file("/etc/sysconfig/network-scripts/ifcfg-eth1", contents="BOOTPROTO=dhcp\n")
    assert netstack.configured_in_files(host, nic("eth1")) == "/etc/sysconfig/network-scripts/ifcfg-eth1"


def test_rhel_ifcfg_backups_and_other_interfaces_do_not_match(host, fs):
    scripts = "/etc/sysconfig/network-scripts"
    fs.create_file(f"{scripts}/ifcfg-eth1.bak", contents="DEVICE=eth1\n")
    fs.create_file(f"{scripts}/ifcfg-eth1.rpmsave", contents="DEVICE=eth1\n")
    fs.create_file(f"{scripts}/ifcfg-eth0", contents="DEVICE=eth0\nHWADDR=52:54:00:12:34:02\n")
    fs.create_file(f"{scripts}/ifcfg-old", contents="#DEVICE=eth1\n")
    fs.create_file(f"{scripts}/ifup-eth", contents="DEVICE=eth1\n")
    assert netstack.configured_in_files(host, nic("eth1")) is None


def test_no_configuration_files_at_all(host):
    assert netstack.configured_in_files(host, nic("eth1")) is None


# -- netstack: what we give networkd and NetworkManager ---------------------------------------------
def test_networkd_text_for_a_primary_interface():
    assert netstack.networkd_text(nic("eth1"), None, None) == (
        "# Written by gandi-vm for a hot-plugged interface; removed when it is detached.\n"
        "[Match]\nName=eth1\nMACAddress=52:54:00:12:34:03\n\n"
        "[Network]\nDHCP=yes\nIPv6AcceptRA=yes\n\n"
        "[DHCPv4]\nUseHostname=no\n")


def test_networkd_text_for_a_secondary_interface_before_its_address():
    text = netstack.networkd_text(nic("eth1"), 10003, None)
    assert "[DHCPv4]\nUseHostname=no\nRouteTable=10003\n" in text
    assert "[IPv6AcceptRA]\nUseGateway=no\n" in text
    assert "RoutingPolicyRule" not in text


def test_networkd_text_for_a_secondary_interface_with_its_address():
    text = netstack.networkd_text(nic("eth1"), 10003, "10.0.1.5")
    assert text.endswith("[RoutingPolicyRule]\nFrom=10.0.1.5/32\nTable=10003\nPriority=10003\n")
    assert text.count("RouteTable=10003") == 1


def test_networkd_file_is_under_run():
    assert netstack.networkd_file("eth1") == "/run/systemd/network/90-gandi-eth1.network"


def test_nm_add_argv_primary():
    assert netstack.nm_add_argv(nic("eth1"), None, 30) == [
        "nmcli", "connection", "add", "type", "ethernet", "con-name", "gandi-eth1", "ifname", "eth1",
        "save", "no", "connection.autoconnect-priority", "999", "ipv4.method", "auto",
        "ipv4.dhcp-timeout", "30", "ipv6.method", "auto"]


def test_nm_add_argv_secondary_uses_its_own_table():
    argv = netstack.nm_add_argv(nic("eth1"), 10003, 30)
    assert argv[-4:] == ["ipv4.route-table", "10003", "ipv6.route-table", "10003"]
    assert argv[argv.index("save") + 1] == "no"


def test_nm_rule_argv():
    assert netstack.nm_rule_argv(nic("eth1"), 10003, "10.0.1.5") == [
        "nmcli", "connection", "modify", "gandi-eth1", "ipv4.routing-rules",
        "priority 10003 from 10.0.1.5 table 10003"]


# -- dhcp: which client, how it is started --------------------------------------------------------
def test_no_dhcp_client_installed(host):
    assert dhcp.installed(host) is None


def test_dhclient_is_preferred(host, fs):
    fs.create_file("/usr/sbin/udhcpc")
    fs.create_file("/usr/sbin/dhcpcd")
    fs.create_file("/sbin/dhclient")
    assert dhcp.installed(host) == "dhclient"


def test_dhcpcd_keeps_a_secondary_gateway_out_of_main(host):
    secondary = dhcp.start_argv(host, "dhcpcd", "eth1", "/s", 30, secondary=True)
    primary = dhcp.start_argv(host, "dhcpcd", "eth1", "/s", 30, secondary=False)
    assert "-G" in secondary and "-G" not in primary
    assert secondary[-1] == "eth1" and secondary[secondary.index("-t") + 1] == "30"


def test_udhcpc_tries_for_about_the_timeout(host):
    argv = dhcp.start_argv(host, "udhcpc", "eth1", "/s", 30, secondary=True)
    assert argv[argv.index("-t") + 1] == "10"
    assert argv[argv.index("-i") + 1] == "eth1" and argv[argv.index("-s") + 1] == "/s"


def test_dhclient_gets_its_own_configuration_with_the_timeout(host):
    argv = dhcp.start_argv(host, "dhclient", "eth1", "/s", 45, secondary=True)
    assert argv[:3] == ["dhclient", "-4", "-1"] and argv[-1] == "eth1"
    conf = argv[argv.index("-cf") + 1]
    with open(conf, encoding="utf-8") as f:
        assert "timeout 45;" in f.read()
    assert argv[argv.index("-pf") + 1] == "/run/gandi/iface/eth1.dhclient.pid"


# -- configuration keys ----------------------------------------------------------------------------
def test_network_keys_defaults():
    settings = config.parse("", "/etc/default/gandi")
    assert (settings.network, settings.nodhcp, settings.multiqueue) == (True, (), True)
    assert (settings.dhcp_timeout, settings.dhcp_retries) == (30, 4)


def test_network_keys_good_values():
    text = ("CONFIG_NETWORK=0\n"
            "CONFIG_NODHCP='eth1 ens* e?h[0-9] vlan.100'\n"
            "CONFIG_MULTIQUEUE=no\n"
            "CONFIG_DHCP_TIMEOUT=90\n"
            "CONFIG_DHCP_RETRIES=1\n")
    settings = config.parse(text, "/etc/default/gandi")
    assert settings.problems == ()
    assert settings.network is False
    assert settings.nodhcp == ("eth1", "ens*", "e?h[0-9]", "vlan.100")
    assert settings.multiqueue is False
    assert (settings.dhcp_timeout, settings.dhcp_retries) == (90, 1)


@pytest.mark.parametrize("line, name", [
    ("CONFIG_NETWORK=maybe", "network"),
    ("CONFIG_NODHCP='eth1 ../x'", "nodhcp"),
    ("CONFIG_NODHCP='eth1;reboot'", "nodhcp"),
    ("CONFIG_NODHCP=" + "e" * 16, "nodhcp"),
    ("CONFIG_MULTIQUEUE=2", "multiqueue"),
    ("CONFIG_DHCP_TIMEOUT=0", "dhcp_timeout"),
    ("CONFIG_DHCP_TIMEOUT=86401", "dhcp_timeout"),
    ("CONFIG_DHCP_TIMEOUT=30s", "dhcp_timeout"),
    ("CONFIG_DHCP_RETRIES=0", "dhcp_retries"),
    ("CONFIG_DHCP_RETRIES=101", "dhcp_retries"),
    ("CONFIG_DHCP_RETRIES=-1", "dhcp_retries"),
])
def test_network_keys_bad_values_name_the_line_and_keep_the_default(line, name):
    settings = config.parse(f"CONFIG_NETWORK=1\n{line}\n", "/etc/default/gandi")
    [(level, message)] = settings.problems
    assert level == logging.ERROR
    assert message.startswith("/etc/default/gandi:2: " + line.split("=", 1)[0] + "=")
    assert "using the default" in message
    assert getattr(settings, name) == getattr(Settings(), name)
