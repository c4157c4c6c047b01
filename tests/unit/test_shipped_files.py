"""The files we ship agree with each other and with the code: rule -> unit -> command."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from gandi_vm import cli, config

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "udev" / "86-gandi.rules"
POSTBOOT = REPO / "systemd" / "gandi-postboot.service"
# Every unit runs gandi-vm, except the postboot one, which runs the platform's script itself.
UNITS = sorted(u for u in (REPO / "systemd").glob("*.service") if u != POSTBOOT)


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def test_default_config_file_parses_cleanly_to_the_defaults():
    settings = config.parse((REPO / "etc/default/gandi").read_text(), "etc/default/gandi")
    assert settings.problems == ()
    assert settings == config.Settings(source="etc/default/gandi")


def test_udev_rule_filters_actions_and_only_delegates():
    lines = [line for line in RULES.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert any('ACTION!="add|change"' in line for line in lines)
    assert not any("RUN" in line or "PROGRAM" in line or "IMPORT{program}" in line for line in lines)
    wanted = re.findall(r'SYSTEMD_WANTS}\+="([^"]+)"', RULES.read_text())
    assert wanted == ["gandi-disk@%k.service", "gandi-iface@$name.service"]
    assert (REPO / "systemd" / "gandi-disk@.service").is_file()
    assert (REPO / "systemd" / "gandi-iface@.service").is_file()
    net = RULES.read_text().split('LABEL="gandi_net"')[1]
    assert 'ACTION!="add|move"' in net, "interfaces: add, and move for a name udev gives"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_commands_are_valid_gandi_vm_invocations(unit: Path):
    # Read the lines themselves: configparser keeps only the last of repeated ExecStart= keys.
    commands = [line.split("=", 1)[1] for line in unit.read_text().splitlines()
                if line.startswith(("ExecStart=", "ExecReload=", "ExecStop="))]
    assert commands
    for command in commands:
        command = command.lstrip("-@:+!")  # systemd's prefixes ('-': a failure is not fatal)
        argv = shlex.split(command.replace("%I", "vdb").replace("%i", "vdb"))
        assert argv[0] == "/usr/bin/gandi-vm"
        cli._parser().parse_args(argv[1:])  # exits (fails the test) on an unknown command


def test_disk_unit_is_bound_to_its_device_and_follows_its_reloads():
    unit = _unit(REPO / "systemd" / "gandi-disk@.service")["Unit"]
    assert unit["BindsTo"] == "dev-%i.device"
    assert unit["ReloadPropagatedFrom"] == "dev-%i.device"


def test_iface_unit_is_bound_to_its_interface():
    unit = _unit(REPO / "systemd" / "gandi-iface@.service")["Unit"]
    assert unit["BindsTo"] == "sys-subsystem-net-devices-%i.device"


def test_debian_changelog_names_the_version_the_source_defines():
    import gandi_vm

    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"gandi-vm \(([^)]+)\) \S+; urgency=\S+", first)
    assert match, first
    assert match.group(1) == gandi_vm.__version__, "add a debian/changelog entry (dch -v VERSION)"


def test_postboot_unit_starts_no_interpreter_and_runs_once_per_instance():
    from gandi_vm import provision

    unit = _unit(POSTBOOT)
    # systemd evaluates the conditions itself: no process at all unless a first boot asked.
    assert unit["Unit"]["ConditionPathExists"] == provision.POSTBOOT_MARKER
    assert unit["Unit"]["ConditionFileIsExecutable"] == provision.INIT
    assert set(unit["Unit"]["After"].split()) == {"network-online.target", "gandi-config.service"}
    assert unit["Unit"]["Wants"] == "network-online.target"
    service = unit["Service"]
    # Executed directly: its own #! line, never an interpreter of ours.
    assert shlex.split(service["ExecStart"]) == [provision.INIT, "--postboot"]
    # The marker goes whatever the script's exit status: once per instance, even on failure.
    assert shlex.split(service["ExecStopPost"]) == ["/bin/rm", "-f", provision.POSTBOOT_MARKER]
    assert service["SyslogIdentifier"] == "gandi" and "TimeoutStartSec" in service
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_config_unit_runs_first_boot_before_sshd_after_coldplug():
    unit = _unit(REPO / "systemd" / "gandi-config.service")["Unit"]
    text = (REPO / "systemd" / "gandi-config.service").read_text()
    assert "systemd-udev-trigger.service" in re.findall(r"^After=(.*)$", text, re.M)[-1].split()
    assert {"ssh.service", "sshd.service", "getty.target"} <= set(unit["Before"].split())
    assert "systemd-udev-settle" not in text.replace("Not systemd-udev-settle", "")


def test_postboot_unit_is_enabled_by_the_preset_and_the_rpm():
    assert "enable gandi-postboot.service" in (REPO / "packaging/85-gandi-vm.preset").read_text()
    spec = (REPO / "rpm/gandi-vm.spec").read_text()
    for macro in ("%systemd_post", "%systemd_preun", "%systemd_postun"):
        line = next(line for line in spec.splitlines() if line.startswith(macro + " "))
        assert "gandi-postboot.service" in line.split()
