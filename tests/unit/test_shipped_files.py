"""The files we ship agree with each other and with the code: rule -> unit -> command."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path
from typing import List

import pytest

from gandi_vm import agent, cli, config

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "udev" / "86-gandi.rules"
ONLINE_RULES = REPO / "udev" / "87-gandi-online.rules"
POSTBOOT = REPO / "systemd" / "gandi-postboot.service"
RESIZE = REPO / "systemd" / "gandi-resize@.service"
# Every unit runs gandi-vm, except the postboot one, which runs the platform's script itself.
UNITS = sorted(u for u in (REPO / "systemd").glob("*.service") if u != POSTBOOT)
AGENT_SOCKET = REPO / "systemd" / "gandi-agent.socket"
AGENT_SERVICE = REPO / "systemd" / "gandi-agent.service"
# Services, and the agent's socket: everything systemd loads of ours.
ALL_UNITS = sorted([*(REPO / "systemd").glob("*.service"), *(REPO / "systemd").glob("*.socket")])
GATE = "/usr/libexec/gandi-vm/unit-gate"  # systemd/unit-gate, installed by packaging/install-data
# The instance udev gives each template (the kernel name, and for a resize the new size).
INSTANCES = {RESIZE.name: "vda:8388608"}


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def _words(path: Path, key: str) -> List[str]:
    """Every word of every `key=` line: systemd adds up repeated list keys (After=, Requires=...),
    where configparser keeps only the last."""
    return [word for line in path.read_text().splitlines() if line.startswith(key + "=")
            for word in line.split("=", 1)[1].split()]


def _commands(path: Path) -> List[List[str]]:
    """The unit's ExecStart=, ExecReload= and ExecStop= command lines, without systemd's prefixes."""
    return [shlex.split(line.split("=", 1)[1].lstrip("-@:+!")) for line in path.read_text().splitlines()
            if line.startswith(("ExecStart=", "ExecReload=", "ExecStop="))]


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
    assert wanted == ["gandi-resize@%k:$attr{size}.service", "gandi-disk@%k.service",
                      "gandi-iface@$name.service"]
    for template in ("gandi-resize@.service", "gandi-disk@.service", "gandi-iface@.service"):
        assert (REPO / "systemd" / template).is_file(), template
    net = RULES.read_text().split('LABEL="gandi_net"')[1]
    assert 'ACTION!="add|move"' in net, "interfaces: add, and move for a name udev gives"


def test_only_a_capacity_change_starts_a_unit_on_a_disk_change_event():
    # udev sends `change` each time a writer closes a disk; systemd 252 starts a listed unit
    # again when it is not active (a failed gandi-disk@): a change event must list no unit
    # unless the kernel marked it RESIZE=1.
    block = RULES.read_text().split('LABEL="gandi_block"')[1].split('LABEL="gandi_net"')[0]
    delegating = [line for line in block.splitlines()
                  if "SYSTEMD_WANTS" in line and not line.lstrip().startswith("#")]
    assert len(delegating) == 2
    for line in delegating:
        assert 'ACTION=="add"' in line or ('ACTION=="change"' in line
                                            and 'ENV{RESIZE}=="1"' in line), line


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_commands_are_valid_gandi_vm_invocations(unit: Path):
    # Read the lines themselves: configparser keeps only the last of repeated ExecStart= keys.
    commands = _commands(unit)
    assert commands
    instance = INSTANCES.get(unit.name, "vdb")
    for argv in commands:
        argv = [word.replace("%I", instance).replace("%i", instance) for word in argv]
        if argv[0] == GATE:  # the units' gate execs gandi-vm with its arguments, or decides alone
            argv = ["/usr/bin/gandi-vm", *argv[1:]]
            if argv[1:3] == ["disk", "attach"]:  # and a disk's attach as a burst's
                cli._parser().parse_args(["disk", "attach", "--batch", *argv[3:]])
        assert argv[0] == "/usr/bin/gandi-vm"
        cli._parser().parse_args(argv[1:])  # exits (fails the test) on an unknown command


def test_disk_unit_is_bound_to_its_device_and_ignores_its_change_events():
    unit = _unit(REPO / "systemd" / "gandi-disk@.service")
    assert unit["Unit"]["BindsTo"] == "dev-%i.device"
    # A reload followed every change uevent, and udev sends one each time a writer closes the
    # disk: an interpreter start each. A capacity change has its own unit, gandi-resize@.
    assert "ReloadPropagatedFrom" not in unit["Unit"]
    assert "ExecReload" not in unit["Service"]


def _block_rule_lines() -> List[str]:
    block = RULES.read_text().split('LABEL="gandi_block"')[1].split('LABEL="gandi_net"')[0]
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_rule_starts_a_resize_on_a_capacity_change_only():
    lines = _block_rule_lines()
    resize = [line for line in lines if "gandi-resize@" in line]
    assert len(resize) == 1
    line = resize[0]
    # The kernel marks the change uevent of a capacity change RESIZE=1; any other change (a writer
    # closing the disk) must start nothing, and neither must add, bind or a partition's events.
    assert line.startswith('ACTION=="change", ENV{RESIZE}=="1", ENV{DEVTYPE}=="disk", ')
    # A name per size: systemd does not start again a name the previous event listed.
    assert 'ENV{SYSTEMD_WANTS}+="gandi-resize@%k:$attr{size}.service"' in line
    assert 'TAG+="systemd"' in line
    assert "RUN" not in line and "PROGRAM" not in line
    # Below the block branch's filters: only disks a hypervisor attaches, and the ACTION filter.
    kernel_filter = next(i for i, text in enumerate(lines) if text.startswith('KERNEL!="vd*'))
    action_filter = next(i for i, text in enumerate(lines) if text.startswith("ACTION!="))
    assert action_filter < kernel_filter < lines.index(line)


def test_resize_unit_runs_disk_resize_for_its_instance_on_demand_only():
    unit = _unit(RESIZE)
    service = unit["Service"]
    assert shlex.split(service["ExecStart"]) == ["/usr/bin/gandi-vm", "disk", "resize", "%i"]
    assert service["Type"] == "oneshot"
    # A later resize of the same disk must be able to run it again.
    assert "RemainAfterExit" not in service
    assert service["SyslogIdentifier"] == "gandi" and "TimeoutStartSec" in service
    # A runtime unit: default dependencies (after the local filesystems), started by udev only.
    assert "DefaultDependencies" not in unit["Unit"]
    assert not unit.has_section("Install")
    # The instance is vda:SECTORS, not a device name: nothing can bind to a device unit by it.
    assert "BindsTo" not in unit["Unit"]


def test_the_onlining_rule_reads_the_configuration_and_spawns_nothing():
    """udevd reads /etc/default/gandi (or the RHEL path) itself and writes the attribute: no
    program, and nothing rendered at boot (the rule is shipped as it is used)."""
    text = ONLINE_RULES.read_text()
    lines = [line for line in text.replace("\\\n", "").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    token = re.compile(r'(\w+)(\{[^}]*\})?(==|!=|\+=|=)"')
    keys = {match.group(1) for line in lines for match in token.finditer(line)}
    assert keys <= {"ACTION", "SUBSYSTEM", "TEST", "ATTR", "ENV", "IMPORT", "TAG", "GOTO", "LABEL"}
    rules = "\n".join(lines)
    assert re.findall(r"IMPORT\{(\w+)\}", rules) == ["file", "file"]
    assert re.findall(r'IMPORT\{file\}="([^"]+)"', rules) == list(config.DEFAULT_PATHS)
    for path in config.DEFAULT_PATHS:  # a missing file is no error: each import is guarded
        assert f'TEST=="{path}", IMPORT{{file}}="{path}"' in rules
    assert set(re.findall(r'ATTR\{(\w+)\}="', rules)) == {"online", "state"}
    assert re.findall(r'SYSTEMD_WANTS}\+="([^"]+)"', rules) == ["gandi-retune.service"]
    assert lines[0] == 'ACTION!="add", GOTO="gandi_online_end"'


def test_nothing_of_ours_runs_before_sysinit_target():
    """Every unit keeps systemd's default dependencies (After=sysinit.target basic.target for a
    service) and is ordered before no early target: the sysinit critical path carries no
    interpreter of ours. The agent's socket, a FIFO and no process, listens from sockets.target."""
    early = {"sysinit.target", "local-fs.target", "local-fs-pre.target", "basic.target",
             "systemd-udev-trigger.service", "systemd-udevd.service", "cryptsetup.target"}
    for path in ALL_UNITS:
        unit = _unit(path)
        assert "DefaultDependencies" not in unit["Unit"], path.name
        assert not set(_words(path, "Before")) & early, path.name
        target = "sockets.target" if path.suffix == ".socket" else "multi-user.target"
        assert unit.get("Install", "WantedBy", fallback=target) == target, path.name


def test_installable_units_are_the_ones_the_preset_and_the_rpm_enable():
    """A unit with an [Install] section is enabled on Fedora/RHEL by the preset on first install
    and named in the rpm's scriptlets; any other name there would be a stale one."""
    installable = {path.name for path in ALL_UNITS if _unit(path).has_section("Install")}
    assert "gandi-agent.socket" in installable
    preset = {line.split()[1] for line in (REPO / "packaging/85-gandi-vm.preset").read_text().splitlines()
              if line.startswith("enable ")}
    assert preset == installable
    spec = (REPO / "rpm/gandi-vm.spec").read_text().splitlines()

    def named(macro: str) -> List[str]:
        return [name for line in spec if line.startswith(macro + " ") for name in line.split()[1:]]

    assert sorted(named("%systemd_post")) == sorted(installable)
    # The agent's service, which its socket starts, is stopped with it on erase, and restarted
    # after an upgrade (on the new code) instead of only reloaded.
    assert sorted(named("%systemd_preun")) == sorted(installable | {AGENT_SERVICE.name})
    assert sorted(named("%systemd_postun")) == sorted(installable)
    assert named("%systemd_postun_with_restart") == [AGENT_SERVICE.name]


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
    assert "systemd-udev-trigger.service" in _words(REPO / "systemd" / "gandi-config.service", "After")
    assert {"ssh.service", "sshd.service", "getty.target"} <= set(unit["Before"].split())
    assert "systemd-udev-settle" not in text.replace("Not systemd-udev-settle", "")


def test_postboot_unit_is_enabled_by_the_preset_and_the_rpm():
    assert "enable gandi-postboot.service" in (REPO / "packaging/85-gandi-vm.preset").read_text()
    spec = (REPO / "rpm/gandi-vm.spec").read_text()
    for macro in ("%systemd_post", "%systemd_preun", "%systemd_postun"):
        line = next(line for line in spec.splitlines() if line.startswith(macro + " "))
        assert "gandi-postboot.service" in line.split()


def test_units_that_run_the_gate_are_ordered_after_the_agent():
    """The gate hands the command to the agent when its FIFO is there: ordered after the socket
    and the service, a unit's stop at shutdown still finds the agent serving it."""
    gated = [path.name for path in UNITS if any(argv[0] == GATE for argv in _commands(path))]
    assert {"gandi-mount.service", "gandi-config.service", "gandi-disk@.service",
            "gandi-iface@.service"} <= set(gated)
    for name in gated:
        assert {AGENT_SOCKET.name, AGENT_SERVICE.name} <= set(_words(REPO / "systemd" / name, "After")), name
    # The agent itself waits for none of ours (an ordering cycle), and never goes through the gate.
    ours = [word for word in _words(AGENT_SERVICE, "After") if word.startswith("gandi-")]
    assert ours == [AGENT_SOCKET.name]
    assert _commands(AGENT_SERVICE) == [["/usr/bin/gandi-vm", "agent"]]


def test_the_boot_services_start_the_agent_with_them():
    """At boot the agent is started in the boot services' own transaction, not by their first
    request's round trip through the socket (seconds of a busy boot under emulation)."""
    for name in ("gandi-mount.service", "gandi-config.service"):
        assert AGENT_SERVICE.name in _words(REPO / "systemd" / name, "Wants"), name


def test_agent_socket_is_a_root_only_fifo_gone_when_stopped():
    """A request runs a command as root: only root may write the FIFO. Stopped or failed, the FIFO
    goes, and the gate runs gandi-vm itself (`systemctl disable --now gandi-agent.socket`)."""
    socket = _unit(AGENT_SOCKET)["Socket"]
    fifo = socket["ListenFIFO"]
    assert fifo == "/run/gandi/agent/requests"
    # Where the agent puts its replies, and where the gate writes its requests.
    assert Path(agent.reply_path("/", 1)).parent == Path(fifo).parent
    gate = (REPO / "systemd" / "unit-gate").read_text()
    assert "agent=$run/gandi/agent" in gate and '"$agent/requests"' in gate
    assert socket["SocketMode"] == "0600"
    assert socket["RemoveOnStop"] == "yes"
    assert socket.get("Accept", "no") == "no"  # one agent for all requests, not one per request
    assert set(socket) == {"ListenFIFO", "SocketMode", "DirectoryMode", "RemoveOnStop"}
    service = _unit(AGENT_SERVICE)
    # Started by its socket only: nothing enables it, and without its FIFO it has nothing to serve.
    assert not service.has_section("Install")
    assert _words(AGENT_SERVICE, "Requires") == [AGENT_SOCKET.name]
    assert AGENT_SOCKET.name in _words(AGENT_SERVICE, "After")
    assert service["Service"]["SyslogIdentifier"] == "gandi"
