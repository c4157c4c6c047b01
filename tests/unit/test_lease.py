"""lease.py: what a DHCP client reports (dhclient/dhcpcd, udhcpc, networkd, NetworkManager) becomes
a Lease of parsed values; the record under /run/gandi/iface keeps hostile text as data only."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from pyfakefs.fake_filesystem_unittest import Patcher

from gandi_vm import lease
from gandi_vm.host import Host
from gandi_vm.lease import Lease, LeaseError

DHCLIENT_ENV = {
    "reason": "BOUND",
    "interface": "eth1",
    "new_ip_address": "10.0.1.5",
    "new_subnet_mask": "255.255.255.0",
    "new_routers": "10.0.1.1 10.0.1.2",
    "new_domain_name_servers": "10.0.1.53 2001:db8::53",
    "new_domain_search": "example.com. corp.example.com.",
    "new_domain_name": "example.com",
    "new_host_name": "vm1",
    "new_dhcp_lease_time": "3600",
    "new_dhcp_server_identifier": "10.0.1.1",
}

UDHCPC_ENV = {
    "interface": "eth1",
    "ip": "192.168.7.20",
    "mask": "24",
    "subnet": "255.255.255.0",
    "router": "192.168.7.1",
    "dns": "192.168.7.1 9.9.9.9",
    "search": "lan",
    "domain": "lan",
    "hostname": "box",
    "lease": "600",
    "serverid": "192.168.7.1",
}

# /run/systemd/netif/leases/IFINDEX as systemd-networkd writes it.
NETWORKD_LEASE = """\
# This is private data. Do not parse.
ADDRESS=10.0.2.15
NETMASK=255.255.255.0
ROUTER=10.0.2.2
SERVER_ADDRESS=10.0.2.2
NEXT_SERVER=10.0.2.4
BROADCAST=10.0.2.255
T1=43200
T2=75600
LIFETIME=86400
DNS=10.0.2.3
DOMAINNAME=example.net
DOMAIN_SEARCH_LIST=example.net
HOSTNAME=guest
CLIENTID=ff1c4d6f5a00020000ab11b2e4b7bd0c9e3a95
"""

# `nmcli -t -f DHCP4 device show eth1`
NMCLI_DHCP4 = """\
DHCP4.OPTION[1]:broadcast_address = 10.0.3.255
DHCP4.OPTION[2]:dhcp_lease_time = 86400
DHCP4.OPTION[3]:ip_address = 10.0.3.15
DHCP4.OPTION[4]:dhcp_server_identifier = 10.0.3.2
DHCP4.OPTION[5]:domain_name_servers = 10.0.3.3
DHCP4.OPTION[6]:expiry = 1763800000
DHCP4.OPTION[7]:host_name = nmguest
DHCP4.OPTION[8]:requested_routers = 1
DHCP4.OPTION[9]:routers = 10.0.3.2
DHCP4.OPTION[10]:subnet_mask = 255.255.255.0
"""


def env(**changes):
    """The dhclient environment with some variables replaced (None removes one)."""
    result = {**DHCLIENT_ENV, **changes}
    return {k: v for k, v in result.items() if v is not None}


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# -- parsing each client's report ---------------------------------------------------------------
def test_from_env_dhclient():
    assert lease.from_env(DHCLIENT_ENV) == Lease(
        address="10.0.1.5", prefixlen=24, gateway="10.0.1.1", dns=("10.0.1.53", "2001:db8::53"),
        search=("example.com", "corp.example.com"), domain="example.com", hostname="vm1",
        lease_time=3600, server="10.0.1.1")


def test_from_env_dhcpcd_subnet_cidr():
    parsed = lease.from_env(env(new_subnet_mask=None, new_subnet_cidr="20"))
    assert parsed.prefixlen == 20
    assert parsed.cidr == "10.0.1.5/20"
    assert parsed.network == "10.0.0.0/20"


def test_from_env_without_a_mask_is_a_host_address():
    assert lease.from_env(env(new_subnet_mask=None)).cidr == "10.0.1.5/32"


def test_from_env_minimal_lease():
    parsed = lease.from_env({"new_ip_address": "10.0.1.5", "new_subnet_mask": "255.255.255.0"})
    assert parsed == Lease(address="10.0.1.5", prefixlen=24)


def test_from_env_other_prefix_reads_the_old_lease():
    old = {"old_ip_address": "10.0.1.4", "old_subnet_mask": "255.255.0.0"}
    assert lease.from_env(old, prefix="old_").cidr == "10.0.1.4/16"


def test_from_udhcpc_env():
    assert lease.from_udhcpc_env(UDHCPC_ENV) == Lease(
        address="192.168.7.20", prefixlen=24, gateway="192.168.7.1", dns=("192.168.7.1", "9.9.9.9"),
        search=("lan",), domain="lan", hostname="box", lease_time=600, server="192.168.7.1")


def test_from_udhcpc_env_dotted_subnet_when_no_mask():
    parsed = lease.from_udhcpc_env({"ip": "192.168.7.20", "subnet": "255.255.252.0"})
    assert parsed.cidr == "192.168.7.20/22"


def test_from_networkd():
    assert lease.from_networkd(NETWORKD_LEASE) == Lease(
        address="10.0.2.15", prefixlen=24, gateway="10.0.2.2", dns=("10.0.2.3",),
        search=("example.net",), domain="example.net", hostname="guest", lease_time=86400,
        server="10.0.2.2")


def test_from_nmcli():
    assert lease.from_nmcli(NMCLI_DHCP4) == Lease(
        address="10.0.3.15", prefixlen=24, gateway="10.0.3.2", dns=("10.0.3.3",),
        hostname="nmguest", lease_time=86400, server="10.0.3.2")


def test_from_nmcli_without_an_address_is_an_error():
    with pytest.raises(LeaseError):
        lease.from_nmcli("DHCP4.OPTION[1]:routers = 10.0.3.2\n")


def test_as_dict_has_lists_for_yaml():
    data = lease.from_env(DHCLIENT_ENV).as_dict()
    assert data["dns"] == ["10.0.1.53", "2001:db8::53"]
    assert data["search"] == ["example.com", "corp.example.com"]
    assert set(data) == {"address", "prefixlen", "gateway", "dns", "search", "domain", "hostname",
                         "lease_time", "server"}


# -- hostile values -------------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["", "10.0.1.300", "10.0.1", "$(reboot)", "10.0.1.5; reboot",
                                     "2001:db8::5", "10.0.1.5/24", "x" * 5000])
def test_bad_address_rejects_the_lease(address):
    with pytest.raises(LeaseError, match="address"):
        lease.from_env(env(new_ip_address=address))


def test_missing_address_rejects_the_lease():
    with pytest.raises(LeaseError):
        lease.from_env(env(new_ip_address=None))


@pytest.mark.parametrize("mask", ["255.0.255.0", "255.255.255.1", "abc", "255.255.255.0; reboot",
                                  "255.255.255.0.0"])
def test_bad_netmask_rejects_the_lease(mask):
    with pytest.raises(LeaseError, match="netmask"):
        lease.from_env(env(new_subnet_mask=mask))


@pytest.mark.parametrize("cidr", ["33", "-1", "x", "24 25"])
def test_bad_subnet_cidr_rejects_the_lease(cidr):
    with pytest.raises(LeaseError, match="netmask"):
        lease.from_env(env(new_subnet_cidr=cidr))


def test_udhcpc_bad_address_and_mask_reject_the_lease():
    with pytest.raises(LeaseError):
        lease.from_udhcpc_env({**UDHCPC_ENV, "ip": "192.168.7.256"})
    with pytest.raises(LeaseError):
        lease.from_udhcpc_env({**UDHCPC_ENV, "mask": "40"})


def test_networkd_bad_address_rejects_the_lease():
    with pytest.raises(LeaseError):
        lease.from_networkd(NETWORKD_LEASE.replace("ADDRESS=10.0.2.15", "ADDRESS=$(reboot)"))


def test_bad_name_servers_are_dropped_with_a_warning(caplog):
    value = "10.0.1.53 $(reboot) 1.2.3 2001:db8::53 10.0.1.54;id"
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_domain_name_servers=value))
    assert parsed.dns == ("10.0.1.53", "2001:db8::53")
    assert len(warnings(caplog)) == 3
    assert "'$(reboot)'" in warnings(caplog)[0]
    assert all("name server" in w and "ignored" in w for w in warnings(caplog))


def test_bad_search_domains_are_dropped_with_a_warning(caplog):
    value = "example.com -bad.com $(reboot) a..b good.example. " + "x" * 64 + ".com"
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_domain_search=value))
    assert parsed.search == ("example.com", "good.example")
    assert len(warnings(caplog)) == 4
    assert all("search domain" in w and "ignored" in w for w in warnings(caplog))


def test_bad_router_means_no_gateway(caplog):
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_routers="gateway.example"))
    assert parsed.gateway is None
    assert "router 'gateway.example'" in warnings(caplog)[0]


def test_warnings_quote_at_most_64_characters_of_a_bad_value(caplog):
    with caplog.at_level(logging.WARNING, logger="gandi"):
        lease.from_env(env(new_domain_name_servers="y" * 500))
    [message] = warnings(caplog)
    assert "y" * 64 in message and "y" * 65 not in message


def test_lease_time_that_is_not_a_number_is_dropped():
    assert lease.from_env(env(new_dhcp_lease_time="forever")).lease_time is None
    assert lease.from_env(env(new_dhcp_lease_time="99999999999")).lease_time is None


def test_lease_time_in_unicode_digits_is_dropped_not_raised():
    assert lease.from_env(env(new_dhcp_lease_time="\u00b2")).lease_time is None


def test_over_long_text_is_dropped_whole_not_cut(caplog):
    # A list cut at MAX_TEXT could end in another address: 10.0.0.12 cut to 10.0.0.1.
    servers = " ".join(["10.0.0.12"] * 200)
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_host_name="h" * 5000, new_domain_name="d" * 5000,
                                    new_domain_name_servers=servers))
    assert (parsed.hostname, parsed.domain, parsed.dns) == ("", "", ())
    assert len(warnings(caplog)) == 3
    assert all("longer than 1024 characters" in w for w in warnings(caplog))


def test_hostile_text_is_kept_as_data_only_when_printable_ascii(host, caplog):
    hostname = "$(reboot);rm -rf / #"
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_host_name=hostname, new_domain_name=hostname))
    # The hostname plugin refuses this one; the lease keeps it as data for that refusal.
    assert parsed.hostname == hostname
    assert parsed.domain == ""
    assert "domain '$(reboot);rm' is not a domain name" in warnings(caplog)[0]
    record = {"interface": "eth1", "state": "configured", "address": parsed.cidr,
              "lease": parsed.as_dict()}
    lease.save(host, "eth1", record)

    with open("/run/gandi/iface/eth1.yaml", encoding="utf-8") as f:
        stored = yaml.safe_load(f)
    assert stored == record
    assert list(stored) == ["interface", "state", "address", "lease"]
    assert stored["lease"]["hostname"] == hostname
    assert lease.load(host, "eth1") == record
    assert host.commands == []


HOSTILE_TEXT = [
    'evil\nstate:configured\naddress:"1.2.3.4/0"',
    "vm1\x1b]0;owned\x07",
    "vm1\r",
    "vm1\u2028x",
    "vm\udcff1",  # an undecodable byte of the environment (surrogateescape)
    "v\u00e9m",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT,
                         ids=["newline", "escape", "cr", "u2028", "surrogate", "non-ascii"])
def test_text_with_control_or_non_ascii_characters_is_dropped(text, caplog):
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_host_name=text, new_domain_name=text,
                                    new_domain_search=f"ok.example {text}"))
    assert (parsed.hostname, parsed.domain, parsed.search) == ("", "", ("ok.example",))
    assert len(warnings(caplog)) == 3


def test_domain_keeps_the_words_that_are_domain_names():
    parsed = lease.from_env(env(new_domain_name="example.com. $(x) lan"))
    assert parsed.domain == "example.com lan"


@pytest.mark.parametrize("server", ["$(reboot)", "10.0.1.1; reboot", "2001:db8::1", "10.0.1",
                                    "10.0.1.1\n"])
def test_bad_server_identifier_is_dropped_with_a_warning(server, caplog):
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_dhcp_server_identifier=server))
    assert parsed.server is None
    assert "server identifier" in warnings(caplog)[0]


def test_bad_server_identifier_of_each_client_is_dropped():
    assert lease.from_udhcpc_env({**UDHCPC_ENV, "serverid": "$(reboot)"}).server is None
    assert lease.from_networkd(NETWORKD_LEASE.replace(
        "SERVER_ADDRESS=10.0.2.2", "SERVER_ADDRESS=`id`")).server is None
    assert lease.from_nmcli(NMCLI_DHCP4.replace("= 10.0.3.2\n", "= x\n", 1)).server is None


@pytest.mark.parametrize("scope", ["\x1b]0;x\x07", "eth0/x", "a" * 16, "..", "eth0\n", "é"])
def test_name_server_with_a_scope_that_is_no_interface_is_dropped(scope, caplog):
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_domain_name_servers=f"10.0.1.53 fe80::1%{scope}"))
    assert parsed.dns == ("10.0.1.53",)
    assert "name server" in warnings(caplog)[0]


def test_name_server_scoped_to_an_interface_is_kept():
    parsed = lease.from_env(env(new_domain_name_servers="fe80::1%eth1 fe80::2%3"))
    assert parsed.dns == ("fe80::1%eth1", "fe80::2%3")


def test_list_options_split_on_spaces_only(caplog):
    # A value hiding a line break is one bad word, not two good ones.
    with caplog.at_level(logging.WARNING, logger="gandi"):
        parsed = lease.from_env(env(new_domain_name_servers="10.0.1.53\n10.0.1.54",
                                    new_routers="10.0.1.1\x1c10.0.1.2",
                                    new_domain_search="a.example\x85b.example"))
    assert (parsed.dns, parsed.gateway, parsed.search) == ((), None, ())


@pytest.mark.parametrize("value", ["\u0662\u0664", " 24", "2_4", "\u00b2", "+24", "33"])
def test_subnet_cidr_in_other_digits_rejects_the_lease(value):
    with pytest.raises(LeaseError, match="netmask"):
        lease.from_env(env(new_subnet_cidr=value))


def test_lease_time_of_each_client_in_other_digits_is_dropped():
    assert lease.from_udhcpc_env({**UDHCPC_ENV, "lease": "\u0666\u0660\u0660"}).lease_time is None
    assert lease.from_networkd(NETWORKD_LEASE.replace(
        "LIFETIME=86400", "LIFETIME=8_6400")).lease_time is None


# -- the record -----------------------------------------------------------------------------------
def test_save_writes_a_readable_yaml_file_with_a_header(host):
    lease.save(host, "eth1", {"interface": "eth1", "state": "left"})
    with open("/run/gandi/iface/eth1.yaml", encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("# gandi-vm: ")
    assert stat.S_IMODE(os.stat("/run/gandi/iface/eth1.yaml").st_mode) == 0o644


BMP = st.characters(max_codepoint=0xFFFF)  # beyond, JSON's \\u escapes are surrogate pairs to YAML


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.text(BMP, max_size=8), st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(BMP),
    st.lists(st.text(BMP, max_size=8), max_size=3)), max_size=5))
def test_the_record_reads_back_the_same_as_json_and_as_yaml(record):
    """Written as JSON, which YAML readers (the file's name, a person's tools) read alike:
    control characters and line separators (U+2028, U+0085) escaped, never raw."""
    text = lease.HEADER + json.dumps(record, indent=2) + "\n"
    assert yaml.safe_load(text) == record
    with Patcher() as patcher:
        patcher.fs.create_dir("/run/gandi/iface")
        host = Host(root="/")
        lease.save(host, "eth1", record)
        assert lease.load(host, "eth1") == record


def test_a_character_beyond_the_bmp_reads_back_through_load(host, fs):
    lease.save(host, "eth1", {"reason": "label \U0001F600"})
    assert lease.load(host, "eth1") == {"reason": "label \U0001F600"}


def test_a_yaml_record_from_before_an_upgrade_still_loads(host, fs):
    fs.create_file("/run/gandi/iface/eth1.yaml", contents="# gandi-vm: x\nstate: configured\ntable: 10003\n")
    assert lease.load(host, "eth1") == {"state": "configured", "table": 10003}


def test_load_of_a_missing_corrupt_or_non_mapping_record_is_none(host, fs):
    assert lease.load(host, "eth1") is None
    fs.create_file("/run/gandi/iface/eth2.yaml", contents="state: [unclosed\n")
    fs.create_file("/run/gandi/iface/eth3.yaml", contents="- a list\n")
    assert lease.load(host, "eth2") is None
    assert lease.load(host, "eth3") is None


def test_recorded_and_forget(host, fs):
    lease.save(host, "eth1", {"state": "configured"})
    lease.save(host, "ens4", {"state": "left"})
    fs.create_file("/run/gandi/iface/eth1.dhclient.pid", contents="123\n")
    fs.create_file("/run/gandi/iface/dhclient.conf")
    assert lease.recorded(host) == ["ens4", "eth1"]
    lease.forget(host, "eth1")
    assert lease.recorded(host) == ["ens4"]
    assert not os.path.exists("/run/gandi/iface/eth1.yaml")
