"""The hostname plugin: a validated name from DHCP or the kernel command line, in /etc/hostname,
the running system and /etc/hosts; hostile values are refused and never reach a command."""

from __future__ import annotations

import pytest
from fakeroot import context, dry_host, lease, put, read, snapshot
from fakesys import FakeHost

from gandi_vm.host import Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, hostname

DEBIAN_HOSTS = ("127.0.0.1\tlocalhost\n"
                "127.0.1.1\tdebian.localdomain debian\n"
                "\n"
                "# The following lines are desirable for IPv6 capable hosts\n"
                "::1     localhost ip6-localhost ip6-loopback\n")


@pytest.fixture
def guest(fs):
    put("/etc/hostname", "debian\n")
    put("/etc/hosts", DEBIAN_HOSTS)
    put("/proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro console=hvc0\n")
    put("/proc/sys/kernel/hostname", "debian\n")
    return fs


def fake_host() -> FakeHost:
    host = FakeHost()
    host.handlers["hostname"] = lambda argv: Result(argv, 0)
    return host


def test_a_fresh_system_is_named_from_the_lease(guest):
    lease(hostname="Web1", domain="example.net")
    host = fake_host()
    outcome = hostname.apply(context(host))
    assert outcome.state == CHANGED
    assert read("/etc/hostname") == "web1\n"
    assert read("/etc/hosts") == DEBIAN_HOSTS.replace("debian.localdomain debian", "web1.example.net web1")
    assert host.commands == [["hostname", "web1"]]


def test_the_primary_interfaces_lease_wins(guest):
    lease("eth1", role="secondary", hostname="other")
    lease("eth0", role="primary", hostname="web1.example.com")
    hostname.apply(context(fake_host()))
    assert read("/etc/hostname") == "web1\n"
    assert "127.0.1.1\tweb1.example.com web1\n" in read("/etc/hosts")


def test_the_kernel_command_line_is_the_fallback(guest):
    put("/proc/cmdline", "root=/dev/vda1 hostname=old hostname=vm42 quiet\n")
    host = fake_host()
    assert hostname.apply(context(host)).state == CHANGED
    assert read("/etc/hostname") == "vm42\n"
    assert "127.0.1.1\tvm42\n" in read("/etc/hosts")
    assert host.commands == [["hostname", "vm42"]]


def test_without_a_name_the_plugin_skips(guest):
    lease(domain="example.net")
    before = snapshot()
    outcome = hostname.apply(context(fake_host()))
    assert outcome.state == SKIPPED and outcome.detail == "no hostname from DHCP or the kernel command line"
    assert snapshot() == before


def test_a_second_apply_changes_nothing_and_runs_nothing(guest):
    lease(hostname="web1", domain="example.net")
    hostname.apply(context(fake_host()))
    put("/proc/sys/kernel/hostname", "web1\n")  # what `hostname web1` did
    before = snapshot()
    host = fake_host()
    assert hostname.apply(context(host)).state == UNCHANGED
    assert host.commands == []
    assert snapshot() == before


def test_the_owners_lines_are_kept_and_the_original_backed_up_once(guest):
    owner = ("# my hosts\n10.1.2.3 db.internal db\n127.0.0.1 localhost\n"
             "127.0.1.1   old.example old   # set by me\n192.0.2.7 printer")
    put("/etc/hosts", owner)
    lease(hostname="web1")
    hostname.apply(context(fake_host()))
    assert read("/etc/hosts") == ("# my hosts\n10.1.2.3 db.internal db\n127.0.0.1 localhost\n"
                                  "127.0.1.1\tweb1\n192.0.2.7 printer\n")
    assert read("/var/lib/gandi-vm/backup/etc/hosts") == owner
    assert read("/var/lib/gandi-vm/backup/etc/hostname") == "debian\n"
    lease(hostname="web2")  # a second change keeps the first original
    assert hostname.apply(context(fake_host())).state == CHANGED
    assert "127.0.1.1\tweb2\n" in read("/etc/hosts")
    assert read("/var/lib/gandi-vm/backup/etc/hosts") == owner


def test_a_hosts_file_without_our_line_gets_it_appended(guest):
    put("/etc/hosts", "127.0.0.1 localhost\n# comment")
    lease(hostname="web1")
    hostname.apply(context(fake_host()))
    assert read("/etc/hosts") == "127.0.0.1 localhost\n# comment\n127.0.1.1\tweb1\n"


def test_a_missing_hosts_file_still_resolves_localhost(guest, fs):
    fs.remove("/etc/hosts")
    lease(hostname="web1")
    hostname.apply(context(fake_host()))
    assert read("/etc/hosts").startswith("127.0.0.1\tlocalhost\n")
    assert read("/etc/hosts").endswith("127.0.1.1\tweb1\n")


def test_a_bad_lease_domain_is_ignored(guest):
    lease(hostname="web1", domain="$(reboot)")
    hostname.apply(context(fake_host()))
    assert "127.0.1.1\tweb1\n" in read("/etc/hosts")


def test_under_another_root_the_running_hostname_is_left_alone(fs):
    put("/guest/etc/hosts", DEBIAN_HOSTS)
    put("/guest/run/gandi/iface/eth0.yaml", "role: primary\nlease: {hostname: web1}\n")
    host = FakeHost("/guest")
    assert hostname.apply(context(host)).state == CHANGED
    assert read("/guest/etc/hostname") == "web1\n"
    assert host.commands == []


def test_a_failing_hostname_command_is_reported(guest):
    lease(hostname="web1")
    host = FakeHost()
    host.handlers["hostname"] = lambda argv: Result(argv, 1, stderr="hostname: you must be root")
    outcome = hostname.apply(context(host))
    assert outcome.state == FAILED and "you must be root" in outcome.detail


HOSTILE = ["$(reboot)", "a" * 300, "web1\nevil", "web1 evil", "-web1", "web1-", "a..b", "web_1",
           "x" * 64, ".".join(["a" * 63] * 4) + ".abc", "héllo", "web1;reboot", "", "../etc"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_lease_hostnames_are_refused_and_never_executed(guest, value):
    lease(hostname=value or "..")
    value = value or ".."
    before = snapshot()
    host = fake_host()
    outcome = hostname.apply(context(host))
    assert outcome.state == FAILED
    assert outcome.detail.startswith(f"CONFIG_HOSTNAME: hostname {value[:64]!r} from the DHCP lease")
    assert len(outcome.detail) < 200 and "\n" not in outcome.detail
    assert host.commands == []
    assert snapshot() == before


def test_a_hostile_kernel_command_line_name_is_refused(guest):
    put("/proc/cmdline", "root=/dev/vda1 hostname=$(reboot)\n")
    before = snapshot()
    host = fake_host()
    outcome = hostname.apply(context(host))
    assert outcome.state == FAILED and "'$(reboot)' from the kernel command line" in outcome.detail
    assert host.commands == [] and snapshot() == before


def test_valid_names_at_the_limits():
    assert hostname.valid("A" * 63) == "a" * 63
    assert hostname.valid("web-1.Example.COM.") == "web-1.example.com"
    assert hostname.valid(".".join(["a" * 63] * 3) + "." + "b" * 61) is not None  # 253 bytes
    assert hostname.valid(".".join(["a" * 63] * 3) + "." + "b" * 62) is None  # 254 bytes


@pytest.mark.parametrize("name", ["10.0.0.5", "10", "10.0.0.5.", "web1.123", "0x1.2", "1.1.1.1"])
def test_an_address_or_an_all_numeric_last_label_is_no_host_name(name):
    # RFC 1123 2.1: the highest-level label is never all digits, so no address passes for a name.
    assert hostname.valid(name) is None


@pytest.mark.parametrize("name", ["1web", "web1.com", "123.example.com", "a.b2", "3com.example"])
def test_digits_elsewhere_are_allowed(name):
    assert hostname.valid(name) == name


def test_a_lease_hostname_that_is_an_address_is_refused(guest):
    lease(hostname="10.0.0.5")
    before = snapshot()
    host = fake_host()
    outcome = hostname.apply(context(host))
    assert outcome.state == FAILED and "'10.0.0.5' from the DHCP lease" in outcome.detail
    assert host.commands == [] and snapshot() == before


@pytest.mark.parametrize("name, domain", [("123.example.com", ""), ("123", "example.com")])
def test_a_name_whose_first_label_is_all_digits_never_reaches_etc_hostname(guest, name, domain):
    lease(hostname=name, domain=domain)
    before = snapshot()
    host = fake_host()
    outcome = hostname.apply(context(host))
    assert outcome.state == FAILED
    assert host.commands == [] and snapshot() == before


def test_dry_run_prints_diffs_plans_the_command_and_changes_no_byte(guest):
    lease(hostname="web1", domain="example.net")
    before = snapshot()
    host, plan = dry_host()
    assert hostname.apply(context(host)).state == CHANGED
    assert snapshot() == before
    out = plan.getvalue()
    assert "-debian\n+web1\n" in out
    assert "-127.0.1.1\tdebian.localdomain debian\n+127.0.1.1\tweb1.example.net web1\n" in out
    assert "would run hostname web1" in out


def test_docstring_and_metadata():
    assert hostname.ORDER == 20 and hostname.FLAG == "CONFIG_HOSTNAME"
    assert hostname.__doc__.splitlines()[0].startswith("Hostname: ")
