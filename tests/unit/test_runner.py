"""`config apply` / `config list`: order, flags, isolation of failures, local plugins, hook, dry run.

The built-in plugins are replaced by small fake modules here: what is tested is the runner.
"""

from __future__ import annotations

import io
import logging
import os
import types
from gandi_vm.record import replace
from typing import Callable, List

import pytest
from fakesys import FakeHost

from gandi_vm import cli, runner
from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.plugins import Context, Outcome

SETTINGS = replace(Settings(), timezone=False)  # one flag off, to see it skipped


def plugin(name: str, order: int, flag: str, apply: Callable[[Context], Outcome]) -> types.ModuleType:
    module = types.ModuleType(f"gandi_vm.plugins.{name}", f"{name}: a fake plugin.\n\nMore text.")
    module.ORDER, module.FLAG, module.apply = order, flag, apply  # type: ignore[attr-defined]
    return module


@pytest.fixture
def calls(monkeypatch) -> List[str]:
    ran: List[str] = []

    def writer(ctx: Context) -> Outcome:
        ran.append("motd")
        ctx.write("/etc/motd", "hello\n")
        return ctx.done()

    def broken(ctx: Context) -> Outcome:
        ran.append("hostname")
        raise RuntimeError("bug in a plugin")

    def disabled(ctx: Context) -> Outcome:
        ran.append("timezone")
        return ctx.done()

    fakes = [plugin("motd", 60, "CONFIG_MOTD", writer), plugin("hostname", 20, "CONFIG_HOSTNAME", broken),
             plugin("timezone", 40, "CONFIG_TIMEZONE", disabled)]
    monkeypatch.setattr(runner, "modules", lambda: sorted(fakes, key=lambda m: m.ORDER))
    # First-boot work (swap, provisioning) has its own tests below and in test_provision.py.
    monkeypatch.setattr(runner, "_first_boot", lambda host, settings: [])
    return ran


def test_plugins_run_in_order_a_failure_is_isolated_and_a_disabled_one_skipped(fs, calls, caplog):
    host = FakeHost()
    with caplog.at_level(logging.INFO, logger="gandi"):
        ran = runner.apply(host, SETTINGS)
    assert calls == ["hostname", "motd"]
    states = {r.name: (r.outcome.state, r.outcome.detail) for r in ran}
    assert states == {"hostname": ("failed", "internal error: RuntimeError: bug in a plugin"),
                      "timezone": ("disabled", "CONFIG_TIMEZONE=0"),
                      "motd": ("changed", "/etc/motd")}
    with open("/etc/motd", encoding="utf-8") as f:
        assert f.read() == "hello\n"
    assert any(r.message.startswith("plugin motd: changed: /etc/motd (") for r in caplog.records)
    assert [r.levelname for r in caplog.records if "hostname" in r.message] == ["ERROR"]


def test_second_apply_reports_unchanged(fs, calls):
    runner.apply(FakeHost(), SETTINGS)
    again = {r.name: r.outcome.state for r in runner.apply(FakeHost(), SETTINGS)}
    assert again["motd"] == "unchanged"


def test_only_runs_that_plugin_even_disabled_and_unknown_is_an_error(fs, calls):
    ran = runner.apply(FakeHost(), SETTINGS, only="timezone")
    assert [(r.name, r.outcome.state) for r in ran] == [("timezone", "unchanged")]
    with pytest.raises(runner.UnknownPlugin):
        runner.apply(FakeHost(), SETTINGS, only="nope")


def test_dry_run_prints_a_diff_and_changes_nothing(fs, calls):
    fs.create_file("/etc/motd", contents="old\n")
    plan = io.StringIO()
    runner.apply(FakeHost(dry_run=True, plan=plan), SETTINGS)
    with open("/etc/motd", encoding="utf-8") as f:
        assert f.read() == "old\n"
    assert "-old\n+hello\n" in plan.getvalue()
    assert not os.path.exists("/var/lib/gandi-vm/backup/etc/motd")


def test_the_owners_file_is_backed_up_once(fs, calls):
    fs.create_file("/etc/motd", contents="owner's\n")
    runner.apply(FakeHost(), SETTINGS)
    with open("/etc/motd", "w", encoding="utf-8") as f:
        f.write("edited again\n")
    runner.apply(FakeHost(), SETTINGS)
    with open("/var/lib/gandi-vm/backup/etc/motd", encoding="utf-8") as f:
        assert f.read() == "owner's\n"


def test_local_plugins_run_in_lexical_order_skipping_leftovers_and_non_executables(fs, calls):
    for name, mode in (("20-b", 0o755), ("10-a", 0o755), ("30-c.dpkg-old", 0o755), ("40-d~", 0o755),
                       ("50-e.rpmnew", 0o755), ("60-not-executable", 0o644), ("70-fails", 0o755)):
        fs.create_file(f"/etc/gandi/plugins.d/{name}", contents="#!/bin/sh\n", st_mode=0o100000 | mode)
    host = FakeHost()
    host.handlers["70-fails"] = lambda argv: Result(argv, 3, stderr="70-fails: broken\n")
    host.handlers["10-a"] = host.handlers["20-b"] = lambda argv: Result(argv, 0)
    ran = runner.apply(host, SETTINGS)
    local = [(r.name, r.outcome.state) for r in ran if r.name.startswith("/")]
    assert local == [("/etc/gandi/plugins.d/10-a", "ran"), ("/etc/gandi/plugins.d/20-b", "ran"),
                     ("/etc/gandi/plugins.d/70-fails", "failed")]
    assert [r.outcome.detail for r in ran if r.name.endswith("70-fails")] == ["70-fails: broken"]


def test_the_post_vm_config_hook_runs_last(fs, calls):
    fs.create_file("/etc/gandi/hooks/post-vm-config", contents="#!/bin/sh\n", st_mode=0o100755)
    host = FakeHost()
    host.handlers["post-vm-config"] = lambda argv: Result(argv, 0)
    runner.apply(host, SETTINGS)
    assert host.commands[-1] == ["/etc/gandi/hooks/post-vm-config"]


def test_cli_exit_status_and_list(fs, calls, monkeypatch, capsys):
    monkeypatch.setattr("gandi_vm.host.Host", FakeHost)
    assert cli.main(["config", "apply"]) == 1  # the broken plugin
    assert cli.main(["config", "apply", "--only", "motd"]) == 0
    assert cli.main(["config", "apply", "--only", "nope"]) == 2
    capsys.readouterr()
    assert cli.main(["config", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["hostname", "20", "CONFIG_HOSTNAME", "enabled"], ["timezone", "40", "CONFIG_TIMEZONE", "enabled"],
        ["motd", "60", "CONFIG_MOTD", "enabled"]]
    assert lines[0].endswith("hostname: a fake plugin.")


def test_a_detail_quoting_hostile_data_is_logged_on_one_line(fs, monkeypatch, caplog):
    """A plugin's detail may quote a file's line or a command's output: a newline, "\\r" or escape
    sequence in it must not start another log line nor reach a terminal raw."""
    def quoting(ctx: Context) -> Outcome:
        return ctx.fail("sshd said: bad\nplugin ssh: changed\r\x1b[2J\u2028\udcff")

    monkeypatch.setattr(runner, "modules", lambda: [plugin("ssh", 50, "CONFIG_SSHD", quoting)])
    with caplog.at_level(logging.INFO, logger="gandi"):
        runner.apply(FakeHost(), SETTINGS, only="ssh")
    [message] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plugin ssh")]
    assert message.startswith(r"plugin ssh: failed: sshd said: bad\nplugin ssh: changed\r\x1b[2J"
                              r"\u2028\udcff (")
    assert message.isprintable()


# -- first-boot work: skipped when no platform disk is present (issue 14) --------------------------
def udev_db(devno: str, **properties: str) -> None:
    """udev's database entry of a processed block device, with the properties its rules set."""
    os.makedirs("/run/udev/data", exist_ok=True)
    with open(f"/run/udev/data/b{devno}", "w", encoding="utf-8") as f:
        f.write("S:disk/by-id/virtio-x\n" + "".join(f"E:{k}={v}\n" for k, v in properties.items())
                + "G:systemd\n")


@pytest.fixture
def rebooted(fs, monkeypatch):
    """The plain guest (vda, / on vda1) after udev processed both devices, with the first-boot
    steps replaced by recorders: what is tested is whether the runner calls them."""
    from fakesys import system

    from gandi_vm import provision, swap

    system(fs)
    udev_db("253:0", ID_PART_TABLE_TYPE="gpt")
    udev_db("253:1", ID_FS_TYPE="ext4", ID_FS_LABEL="root", ID_PART_ENTRY_NAME="root")
    called: List[str] = []
    monkeypatch.setattr(swap, "setup", lambda host, settings: called.append("swap") or ["swap: x"])
    monkeypatch.setattr(provision, "run", lambda host, settings: called.append("provision")
                        or Outcome("unchanged"))
    monkeypatch.setattr(runner, "modules", lambda: [])
    return called


def test_a_reboot_without_platform_disks_skips_swap_and_provision_with_no_process(rebooted):
    host = FakeHost()
    ran = runner.apply(host, Settings())
    assert [(r.name, r.outcome.state) for r in ran] == [("swap", "skipped"), ("provision", "skipped")]
    assert "no platform swap disk nor config drive present" in ran[0].outcome.detail
    assert rebooted == [] and host.commands == []


def test_both_switched_off_is_said_so(rebooted):
    ran = runner.apply(FakeHost(), replace(Settings(), swap=False, provision=False))
    assert ran[0].outcome.detail == "CONFIG_SWAP=0 and CONFIG_PROVISION=0: no platform disk looked for"
    assert rebooted == []


def _fixed_name_disk(fs):
    from fakesys import add_disk

    add_disk(fs, "sdb", "8:16", 2097152)
    udev_db("8:16")


@pytest.mark.parametrize("present", [
    pytest.param(lambda fs: udev_db("253:1", ID_FS_TYPE="swap", ID_FS_LABEL="swap"), id="swap-signature"),
    pytest.param(lambda fs: udev_db("253:1", ID_PART_ENTRY_NAME="gandiswap"), id="gandiswap-udev"),
    pytest.param(lambda fs: fs.create_file("/sys/class/block/vda1/uevent",
                                           contents="MAJOR=253\nMINOR=1\nPARTNAME=gandiswap\n"),
                 id="gandiswap-sysfs"),
    pytest.param(lambda fs: udev_db("253:1", ID_FS_TYPE="iso9660", ID_FS_LABEL="config-2"), id="config-2"),
    pytest.param(lambda fs: udev_db("253:1", ID_FS_TYPE="vfat", ID_FS_LABEL="CONFIG-2"), id="CONFIG-2"),
    pytest.param(lambda fs: os.remove("/run/udev/data/b253:1"), id="not-processed-by-udev-yet"),
    pytest.param(lambda fs: fs.create_dir("/gandi"), id="drive-directory"),
    pytest.param(_fixed_name_disk, id="fixed-name"),
])
def test_any_sign_of_a_platform_disk_runs_swap_and_provision(rebooted, fs, present):
    present(fs)
    runner.apply(FakeHost(), Settings())
    assert rebooted == ["swap", "provision"]


def test_a_swap_device_named_by_the_owner_runs_swap_and_provision(rebooted):
    runner.apply(FakeHost(), replace(Settings(), swap_device="/dev/vdb"))
    assert rebooted == ["swap", "provision"]


def test_the_drives_the_gate_looks_for_are_provisions():
    from gandi_vm import openstack, provision

    assert (runner.DRIVE_DIR, runner.CONFIG_DRIVE_LABELS) == (provision.DRIVE_DIR, openstack.LABELS)


# -- a reboot where nothing changed: config apply spawns no process (issue 14) ---------------------
SSHD_T = "permitrootlogin without-password\npermitemptypasswords no\n"


@pytest.fixture
def debian(fs, monkeypatch):
    """A Debian-like guest where every built-in plugin has something to do at the first apply:
    a lease with a name and name servers, a serial console, sshd with its host keys, tzdata,
    the shipped sysctl file, update-motd.d, /etc/crontab, an ext4 root with checks disabled;
    udev processed the system disk; x86_64 on KVM."""
    from fakeroot import lease, put
    from fakesys import ext4_superblock, system, write_device

    from gandi_vm.plugins import ssh

    system(fs)
    udev_db("253:0", ID_PART_TABLE_TYPE="gpt")
    udev_db("253:1", ID_FS_TYPE="ext4")
    write_device("vda1", ext4_superblock(20 << 30), 1024)  # max mount count 0, interval 0
    lease(hostname="web1", dns=["192.0.2.53"], domain="example.com")
    put("/proc/sys/kernel/hostname", "debian\n")
    put("/proc/cmdline", "root=/dev/vda1 console=ttyS0\n")
    put("/proc/consoles", "ttyS0                -W- (EC p a)    4:64\n")
    put("/lib/systemd/system/serial-getty@.service", "[Unit]\n")
    fs.create_dir("/run/systemd/system")
    put("/etc/hosts", "127.0.0.1\tlocalhost\n")
    put("/etc/resolv.conf", "nameserver 10.0.0.1\n")
    put("/usr/share/zoneinfo/Europe/Paris", "TZif2")
    put(ssh.SSHD_BINARY, "", mode=0o755)
    put(ssh.SSHD_CONFIG, "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")
    for kind in ssh.KEY_TYPES:
        put(f"/etc/ssh/ssh_host_{kind}_key", "private\n", mode=0o600)
        put(f"/etc/ssh/ssh_host_{kind}_key.pub", f"ssh-{kind} AAAA\n")
    put("/etc/gandi/sysctl.conf", "vm.swappiness = 10\n")
    fs.create_dir("/etc/sysctl.d")
    fs.create_dir("/etc/update-motd.d")
    put("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    put("/etc/crontab", "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n")
    fs.create_dir("/etc/ld.so.conf.d")
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(
        (real.sysname, real.nodename, real.release, real.version, "x86_64")))

    def tune2fs(argv: List[str]) -> Result:
        superblock = bytearray(ext4_superblock(20 << 30))
        superblock[0x44:0x48] = (15552000).to_bytes(4, "little")
        write_device("vda1", bytes(superblock), 1024)
        return Result(argv, 0)

    def hostname(argv: List[str]) -> Result:
        put("/proc/sys/kernel/hostname", argv[1] + "\n")
        return Result(argv, 0)

    host = FakeHost()
    host.handlers.update({"sshd": lambda argv: Result(argv, 0, SSHD_T), "tune2fs": tune2fs,
                          "hostname": hostname, "sysctl": lambda argv: Result(argv, 0)})
    return host


def test_the_second_apply_of_a_reboot_spawns_no_process_and_changes_nothing(debian):
    from fakeroot import snapshot

    first = {r.name: r.outcome.state for r in runner.apply(debian, Settings())}
    assert debian.programs() == ["hostname", "sshd", "sysctl", "tune2fs"]  # all had work
    assert [name for name, state in first.items() if state == "changed"] == [
        "console", "hostname", "nameserver", "timezone", "ssh", "motd", "sysctl", "cron", "fscheck"]
    debian.commands[:] = []
    before = snapshot()
    again = {r.name: r.outcome.state for r in runner.apply(debian, Settings())}
    assert debian.commands == []
    assert snapshot() == before
    assert again == {"swap": "skipped", "provision": "skipped", **{
        name: "unchanged" for name in first if name not in ("swap", "provision")}}
