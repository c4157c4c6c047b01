"""Properties of every parser of outside data on the network side: the lease formats of each DHCP
client, the owner's configuration files (ifupdown with source loops, ifcfg), what networkd and
NetworkManager report, sysfs facts, ethtool output, host names, and the resolver data that leases
feed. The contract: a value of the module's own kind, the module's own error, or a skip; never
another exception, never a hang, and nothing accepted that holds a control character.

Hosts are built over a temporary directory inside each example (pyfakefs's function-scoped `fs`
fixture does not mix with Hypothesis); `--hypothesis-profile=fuzz` runs the long version.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Type
from unittest import mock

import yaml
from fakesys import FakeHost
from hypothesis import given
from hypothesis import strategies as st

from gandi_vm import dhcp, lease, net, netdev, netstack
from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.lease import Lease, LeaseError
from gandi_vm.netdev import NetDevice
from gandi_vm.plugins import Context, hostname, nameserver

# RFC 1123 host names, written independently of hostname.valid().
RFC1123 = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")

# -- strategies ---------------------------------------------------------------------------------
# Text that looks like what servers send, and text that does not: separators that only
# str.split()/splitlines() honour, escapes, surrogates from undecodable bytes, NULs.
HOSTILE_CHARS = st.sampled_from(list(" \t\n\r\x00\x0b\x0c\x1b\x1c\x85\u2028%.:;/$`'\"\\-_")
                                + ["\u00b2", "\u0663", "\udcff", "\u00e9", "\x07"])
NAMEISH = st.text(st.one_of(st.sampled_from("abcxyz019-."), HOSTILE_CHARS), max_size=20)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
SCOPED = st.tuples(IPV6, st.one_of(st.sampled_from(["eth0", "2", ""]), NAMEISH)).map("%".join)
DOMAIN = st.lists(st.sampled_from(["example", "com", "a-b", "x1", "123", "_srv", ""]),
                  min_size=1, max_size=4).map(".".join)
WORD = st.one_of(IPV4, IPV6, SCOPED, DOMAIN, NAMEISH,
                 st.integers(-5, 2 ** 40).map(str), st.sampled_from(["255.255.255.0", "24", "²"]))
VALUE = st.one_of(WORD, st.lists(WORD, max_size=4).map(" ".join), st.text(max_size=40),
                  st.just("9" * 2000))

DHCLIENT_KEYS = ["new_ip_address", "new_subnet_cidr", "new_subnet_mask", "new_routers",
                 "new_domain_name_servers", "new_domain_search", "new_domain_name",
                 "new_host_name", "new_dhcp_lease_time", "new_dhcp_server_identifier",
                 "new_broadcast_address", "new_interface_mtu"]
UDHCPC_KEYS = ["ip", "mask", "subnet", "router", "dns", "search", "domain", "hostname", "lease",
               "serverid", "broadcast", "mtu"]
NETWORKD_KEYS = ["ADDRESS", "NETMASK", "ROUTER", "DNS", "DOMAIN_SEARCH_LIST", "DOMAINNAME",
                 "HOSTNAME", "LIFETIME", "SERVER_ADDRESS", "BROADCAST", "MTU"]


def env_of(keys: List[str]) -> st.SearchStrategy[Dict[str, str]]:
    """An environment with a plausible address most of the time, so that the other fields are
    reached, and any value for any of the client's keys (or an unknown one)."""
    required = st.fixed_dictionaries({keys[0]: st.one_of(IPV4, VALUE)})
    others = st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), VALUE,
                             max_size=len(keys))
    return st.builds(lambda a, b: {**b, **a}, required, others)


def key_value_text(keys: List[str], separator: str) -> st.SearchStrategy[str]:
    line = st.one_of(st.tuples(st.sampled_from(keys), VALUE).map(separator.join),
                     st.text(max_size=30))
    return st.lists(line, max_size=12).map("\n".join)


# -- the lease formats ----------------------------------------------------------------------------
def assert_sane(parsed: Lease) -> None:
    """Everything a Lease holds parses again as what it claims to be, and is printable."""
    assert str(ipaddress.IPv4Address(parsed.address)) == parsed.address
    assert 0 <= parsed.prefixlen <= 32
    ipaddress.IPv4Interface(parsed.cidr)
    for address in ([parsed.gateway] if parsed.gateway else []) + \
            ([parsed.server] if parsed.server else []):
        assert str(ipaddress.IPv4Address(address)) == address
    for address in parsed.dns:
        found = ipaddress.ip_address(address)
        scope = getattr(found, "scope_id", None)
        assert scope is None or netdev.is_name(scope)
    for domain in parsed.search + tuple(parsed.domain.split()):
        assert len(domain) <= 253 and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", domain)
    assert parsed.hostname.isascii() and parsed.hostname.isprintable()
    assert parsed.lease_time is None or 0 <= parsed.lease_time < 10 ** 10
    for value in parsed.as_dict().values():
        for text in value if isinstance(value, list) else [value]:
            assert not CONTROL.search(str(text))


def parses_or_refuses(parse, data) -> Optional[Lease]:
    try:
        parsed = parse(data)
    except LeaseError:
        return None
    assert isinstance(parsed, Lease)
    assert_sane(parsed)
    return parsed


@given(env_of(DHCLIENT_KEYS))
def test_dhclient_and_dhcpcd_environments(env):
    parses_or_refuses(lease.from_env, env)


@given(env_of(UDHCPC_KEYS))
def test_udhcpc_environments(env):
    parses_or_refuses(lease.from_udhcpc_env, env)


@given(key_value_text(NETWORKD_KEYS, "="))
def test_networkd_lease_files(text):
    parses_or_refuses(lease.from_networkd, text)


@given(key_value_text([f"DHCP4.OPTION[{n}]:{key[4:]}" for n, key in enumerate(DHCLIENT_KEYS)],
                      " = "))
def test_nmcli_dhcp4_output(text):
    parses_or_refuses(lease.from_nmcli, text)


@given(WORD)
def test_anything_parse_address_accepts_is_an_address(text):
    address = lease.parse_address(text)
    if address is not None:
        assert str(ipaddress.ip_address(address)) == address
        assert not CONTROL.search(address)


# -- what the event script hands over to a waiting attach ------------------------------------------
# `printf '%s\0' "$1"; env -0` as the script writes it, and what a truncated or forged file holds:
# fields with and without `=`, repeated names, undecodable bytes, a missing final NUL.
ENTRY = st.one_of(
    st.tuples(st.sampled_from(DHCLIENT_KEYS + UDHCPC_KEYS + ["interface", "reason", ""]),
              VALUE).map(lambda kv: f"{kv[0]}={kv[1]}".encode("utf-8", "surrogateescape")),
    st.binary(max_size=30))
HANDED = st.tuples(st.binary(max_size=10), st.lists(ENTRY, max_size=8), st.booleans()).map(
    lambda t: b"\0".join([t[0], *t[1]]) + (b"\0" if t[2] else b""))


@given(HANDED)
def test_a_handed_over_file_gives_an_event_and_an_environment_or_a_lease_error(data):
    try:
        event, env = lease.from_handover(data)
    except LeaseError:
        return
    assert event is None or (isinstance(event, str) and event and "\0" not in event)
    for key, value in env.items():
        assert isinstance(key, str) and isinstance(value, str)
        assert "=" not in key and "\0" not in key + value


def env_text(forbidden: bytes, size: int) -> st.SearchStrategy[str]:
    """Text as os.fsdecode gives it from bytes without the `forbidden` ones: any character,
    surrogates only for undecodable bytes."""
    raw = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=size)
                    .map(os.fsencode), st.binary(max_size=size))
    return raw.map(lambda data: os.fsdecode(bytes(b for b in data if b not in forbidden)))


@given(env_text(b"\0", 10), st.lists(st.tuples(env_text(b"\0=", 10), env_text(b"\0", 20)),
                                      max_size=6))
def test_a_handed_over_environment_is_what_os_environ_would_hold(event, pairs):
    # os.environ keeps the first of two same names and decodes with surrogateescape.
    data = b"".join(os.fsencode(text) + b"\0" for text in [event, *(f"{k}={v}" for k, v in pairs)])
    expected: Dict[str, str] = {}
    for key, value in pairs:
        expected.setdefault(key, value)
    assert lease.from_handover(data) == (event or None, expected)


@given(HANDED)
def test_take_event_of_any_file_is_a_verdict_and_leaves_nothing(data):
    def apply(event: Optional[str], env: Dict[str, str]) -> int:
        parses_or_refuses(lease.from_udhcpc_env if event else lease.from_env, env)
        return 0

    with guest({"/run/gandi/iface/eth1.event.7": data}) as host:
        verdict = dhcp.take_event(host, "eth1", "/run/gandi/iface/eth1.event.7", apply)
        assert verdict in (0, 1)
        assert os.listdir(host.path("/run/gandi/iface")) == []


# -- a small guest over a temporary directory -----------------------------------------------------
class CountingHost(FakeHost):
    """Counts file reads: each configuration file is read at most once."""

    def __init__(self, root: str):
        super().__init__(root)
        self.reads: List[str] = []

    def read_text(self, guest_path: str) -> str:
        self.reads.append(guest_path)
        return super().read_text(guest_path)


@contextmanager
def guest(files: Dict[str, bytes], kind: Type[FakeHost] = FakeHost) -> Iterator[FakeHost]:
    with tempfile.TemporaryDirectory() as root:
        for path, data in files.items():
            real = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as f:
                f.write(data)
        yield kind(root)


def nic(name: str = "eth1") -> NetDevice:
    return NetDevice(name=name, ifindex=3, mac="52:54:00:12:34:03", type=1, driver="virtio_net",
                     backed=True, kind="", operstate="down")


# -- the owner's configuration files --------------------------------------------------------------
IFUPDOWN_FILES = ["/etc/network/interfaces", "/etc/network/interfaces.d/a",
                  "/etc/network/interfaces.d/b", "/etc/network/other"]
SOURCE_TARGETS = st.one_of(
    st.sampled_from(IFUPDOWN_FILES + ["interfaces", "interfaces.d/*", "*", "/etc/network/*",
                                      "interfaces.d", "/etc/network/interfaces.d", "/", "..",
                                      "/etc/network/../network/interfaces", "[", "**/*"]),
    NAMEISH)
IFUPDOWN_LINE = st.one_of(
    st.tuples(st.sampled_from(["source", "source-directory"]), SOURCE_TARGETS).map(" ".join),
    st.tuples(st.sampled_from(["iface", "auto", "allow-hotplug", "#iface"]),
              st.sampled_from(["eth1", "eth2", "eth1\r", "eth1#"])).map(" ".join),
    st.text(max_size=30))
CONFIG_TEXT = st.lists(IFUPDOWN_LINE, max_size=10).map("\n".join)
IFCFG_TEXT = st.lists(st.one_of(
    st.tuples(st.sampled_from(["DEVICE", "HWADDR", " DEVICE"]),
              st.sampled_from(["eth1", '"eth1"', "52:54:00:12:34:03", "ETH1\r"])).map("=".join),
    st.text(max_size=30)), max_size=5).map("\n".join)
ENCODED = st.sampled_from(["utf-8", "latin-1"])


@given(st.dictionaries(st.sampled_from(IFUPDOWN_FILES), CONFIG_TEXT, min_size=1),
       st.dictionaries(st.sampled_from(["ifcfg-eth1", "ifcfg-x", "ifcfg-y.bak", "ifcfg-\u00e9"]),
                       IFCFG_TEXT, max_size=2),
       ENCODED, st.sampled_from(["eth1", "eth2"]))
def test_ifupdown_and_ifcfg_files_give_a_decision_reading_each_file_once(interfaces, ifcfg,
                                                                          encoding, name):
    files = {path: text.encode(encoding, "surrogateescape" if encoding == "utf-8" else "replace")
             for path, text in interfaces.items()}
    files.update({f"/etc/sysconfig/network-scripts/{entry}": text.encode("utf-8", "replace")
                  for entry, text in ifcfg.items()})
    with guest(files, CountingHost) as host:
        found = netstack.configured_in_files(host, nic(name))
        assert found is None or host.exists(found)
        ifupdown_reads = [p for p in host.reads if "sysconfig" not in p]
        assert len(ifupdown_reads) == len(set(map(host.realpath, ifupdown_reads)))


# -- what networkd and NetworkManager report ------------------------------------------------------
@given(key_value_text(["ADMIN_STATE", "OPER_STATE", "NETWORK_FILE"], "="))
def test_networkd_link_state_files_give_a_one_word_verdict(text):
    with guest({"/run/systemd/netif/links/3": text.encode("utf-8", "surrogateescape")}) as host, \
            mock.patch.object(netstack, "SETTLE_SECONDS", 0):
        verdict = netstack.networkd_verdict(host, nic())
    assert verdict == "no verdict" or re.fullmatch(r"[a-z-]{1,32}", verdict)


NMCLI_TEXT = st.lists(st.one_of(
    st.tuples(st.sampled_from(["GENERAL.STATE", "GENERAL.CONNECTION", "NAME"]),
              st.one_of(st.sampled_from(["10 (unmanaged)", "20", "100 (connected)", "gandi-eth1"]),
                        st.text(max_size=20))).map(":".join),
    st.text(max_size=30)), max_size=6).map("\n".join)


@given(NMCLI_TEXT, NMCLI_TEXT, st.text(max_size=20))
def test_nmcli_answers_give_a_verdict(device_show, connection_show, profile):
    with guest({}) as host, mock.patch.object(netstack, "SETTLE_SECONDS", 0):
        host.handlers["nmcli"] = lambda argv: Result(
            argv, 0, device_show if "device" in argv else connection_show)
        state, active = netstack.nm_verdict(host, nic())
        assert state in ("unmanaged", "unavailable", "managed") and isinstance(active, str)
        assert isinstance(netstack.nm_profile_file(host, profile), str)
        found = netstack.nm_lease(host, nic())
    if found is not None:
        assert_sane(found)


# -- sysfs facts and ethtool ----------------------------------------------------------------------
SYSFS_VALUE = st.one_of(st.sampled_from(["3", "1", "772", "52:54:00:AB:CD:EF", "up", "\u00b2",
                                         "DEVTYPE=vlan", "DEVTYPE=\x1b[2J"]),
                        st.binary(max_size=24).map(lambda b: b.decode("utf-8", "surrogateescape")),
                        st.text(max_size=24))


@given(st.dictionaries(st.sampled_from(["ifindex", "type", "address", "operstate", "uevent"]),
                       SYSFS_VALUE))
def test_netdev_read_of_any_sysfs_facts(attributes):
    files = {f"/sys/class/net/eth1/{key}": value.encode("utf-8", "surrogateescape")
             for key, value in attributes.items()}
    with guest(files) as host:
        try:
            dev = netdev.read(host, "eth1")
        except netdev.NoSuchInterface:
            return
    assert dev.ifindex >= 0 and dev.type >= 0
    for text in (dev.mac, dev.kind, dev.operstate, dev.driver or ""):
        assert text.isascii() and text.isprintable() and " " not in text


ETHTOOL_LINE = st.one_of(
    st.sampled_from(["Pre-set maximums:", "Current hardware settings:", "Channel parameters"]),
    st.tuples(st.sampled_from(["Combined:", "RX:", " Combined:"]),
              st.one_of(st.sampled_from(["4", "1", "0", "n/a", "\u00b2", "\u0663", "99999"]),
                        st.text(max_size=6))).map("\t".join),
    st.text(max_size=20))


@given(st.integers(1, 512), st.lists(ETHTOOL_LINE, max_size=10).map("\n".join))
def test_ethtool_channels_output(cpus, text):
    found = net.channels(cpus, text)
    if found is not None:
        wanted, current = found
        assert 1 <= wanted <= cpus and current >= 0


# -- host names -----------------------------------------------------------------------------------
@given(st.one_of(NAMEISH, DOMAIN, IPV4, st.text(max_size=300),
                 st.lists(st.text("a1-", min_size=1, max_size=64), max_size=5).map(".".join)))
def test_anything_valid_accepts_is_rfc_1123(text):
    name = hostname.valid(text)
    if name is not None:
        assert len(name) <= 253 and RFC1123.fullmatch(name)
        assert not name.rsplit(".", 1)[-1].isdigit()
        assert text.lower() in (name, name + ".")


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(LABEL, min_size=1, max_size=4).filter(lambda labels: not labels[-1].isdigit()))
def test_every_rfc_1123_name_is_valid(labels):
    name = ".".join(labels)
    assert hostname.valid(name.upper() + ".") == name


@given(st.one_of(NAMEISH, DOMAIN, IPV4, st.just("10.0.0.5")), st.one_of(NAMEISH, DOMAIN))
def test_what_reaches_etc_hostname_is_a_valid_name(name, domain):
    record = {"role": "primary", "lease": {"address": "10.0.0.5", "prefixlen": 24,
                                           "hostname": name, "domain": domain}}
    files = {"/run/gandi/iface/eth0.yaml": yaml.safe_dump(record).encode(),
             "/etc/hosts": b"127.0.0.1 localhost\n"}
    with guest(files) as host:
        hostname.apply(Context(host=host, settings=Settings()))
        assert host.commands == []  # not the real root: no running hostname to set
        if host.exists("/etc/hostname"):
            written = host.read_text("/etc/hostname")
            assert written.endswith("\n") and hostname.valid(written[:-1]) == written[:-1]
            assert "." not in written


@given(st.text(max_size=200))
def test_hosts_text_replaces_or_appends_one_line_and_keeps_the_others(text):
    result = hostname.hosts_text(text, "web1.example.com", "web1")
    ours = "127.0.1.1\tweb1.example.com web1"
    before, after = text.split("\n"), result.split("\n")
    assert result.endswith("\n") and ours in after
    kept = [line for line in after[:-1] if line != ours]
    assert all(line in before for line in kept)


# -- resolver data from leases --------------------------------------------------------------------
@given(env_of(DHCLIENT_KEYS))
def test_what_resolv_conf_gets_from_a_lease_is_addresses_and_domains(env):
    parsed = parses_or_refuses(lease.from_env, env)
    if parsed is None:
        return
    record = {"role": "primary", "lease": parsed.as_dict()}
    with guest({"/run/gandi/iface/eth0.yaml": yaml.safe_dump(record).encode()}) as host:
        ctx = Context(host=host, settings=Settings())
        servers, domains = nameserver.servers(ctx), nameserver.domains(ctx)
    for address in servers:
        ipaddress.ip_address(address)
    for text in servers + domains:
        assert not CONTROL.search(text) and " " not in text
