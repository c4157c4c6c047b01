"""vCPU and memory onlining: `cpu online-all` and `memory online-all` (bounded retries, never
offlining, never cpu0), the udev rule rendered from the configuration (`hotplug-rules`), `status`,
the re-tuning of multiqueue interfaces once vCPUs came online, the three configuration keys and
the shipped files that tie the rule, the units and the commands together.

`Sysfs` is a FakeHost whose attribute writes are recorded (so that "never written" can be told
from "written with the value it already held") and have the kernel's effects: a CPU written online
shows in /sys/devices/system/cpu/online, a memory block onlined into any zone reads `online`, and
onlining a block that is already online is EINVAL (drivers/base/memory.c, state_store()).
"""

from __future__ import annotations

import configparser
import errno
import fnmatch
import io
import logging
import os
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import pytest
import yaml
from fakesys import (CPU_DIR, MEMORY_DIR, FakeHost, add_cpus, add_memory_blocks, add_nic, add_sysctls,
                     cpu_ranges, system)

from gandi_vm import cli, config, cpu, lease, memory, net, online, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Result

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO / "udev" / online.RULE_NAME
RETUNE_UNIT = REPO / "systemd" / "gandi-retune.service"
MOUNT_UNIT = REPO / "systemd" / "gandi-mount.service"
ROOT = "/vm"
ZONES = ("online", "online_movable", "online_kernel")
CPUS = {0: None, 1: "1", 2: "0", 3: "0"}  # cpu0 without an `online` file, as on x86
BLOCKS = {0: "online", 1: "online", 2: "offline", 3: "going-offline", 4: "offline"}
BLOCK_SIZE = 0x8000000  # 128 MiB, x86_64's usual memory block
MAC = "52:54:00:12:34:03"
# `ethtool -l eth1` on a virtio-net device with 4 queue pairs, 1 in use (ethtool 6.1).
ETHTOOL_L = ("Channel parameters for eth1:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\tn/a\n"
             "Combined:\t4\nCurrent hardware settings:\nRX:\t\tn/a\nTX:\t\tn/a\nOther:\t\tn/a\n"
             "Combined:\t1\n")

CPU_RULE = 'SUBSYSTEM=="cpu", TEST=="online", ATTR{online}=="0", ATTR{online}="1"'
RETUNE_RULE = 'SUBSYSTEM=="cpu", TAG+="systemd", ENV{SYSTEMD_WANTS}+="gandi-retune.service"'
ACTION_FILTER = 'ACTION!="add", GOTO="gandi_online_end"'
END_LABEL = 'LABEL="gandi_online_end"'

_CPU_ONLINE = re.compile(re.escape(CPU_DIR) + r"/cpu\d+/online")
_BLOCK_STATE = re.compile(re.escape(MEMORY_DIR) + r"/memory\d+/state")


class Sysfs(FakeHost):
    """FakeHost with the kernel's answers to attribute writes, and a record of every write_attr
    call (`writes`, (guest path, value) in order)."""

    def __init__(self, root: str = "/", dry_run: bool = False, plan=None):
        super().__init__(root, dry_run=dry_run, plan=plan)
        self.writes: List[Tuple[str, str]] = []

    def write_attr(self, guest_path: str, value: str) -> bool:
        self.writes.append((guest_path, value))
        if self.dry_run:
            return super().write_attr(guest_path, value)
        block = _BLOCK_STATE.fullmatch(guest_path)
        if block and value in ZONES and value != "online" and self.read_attr(guest_path) == "online":
            # device_online() answers 1 for a block already online; state_store() makes it EINVAL.
            # (Writing "online" itself never gets there: Host.write_attr sees it already holds it.)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), self.path(guest_path))
        changed = super().write_attr(guest_path, value)
        if block and value in ZONES:
            _write(self.path(guest_path), "online\n")  # `state` shows no zone, only online
        if _CPU_ONLINE.fullmatch(guest_path):
            self._cpu_lists()
        return changed

    def _cpu_lists(self) -> None:
        numbers = [int(n[3:]) for n in self.listdir(CPU_DIR) if re.fullmatch(r"cpu\d+", n)]
        up = [n for n in numbers if self.read_attr(f"{CPU_DIR}/cpu{n}/online") in (None, "1")]
        _write(self.path(f"{CPU_DIR}/online"), cpu_ranges(up) + "\n")
        _write(self.path(f"{CPU_DIR}/offline"), cpu_ranges(set(numbers) - set(up)) + "\n")


def _write(real_path: str, text: str) -> None:
    with open(real_path, "w", encoding="utf-8") as f:
        f.write(text)


def raw(path: str) -> str:
    """A file's exact content: a value rewritten by Host.write_attr loses its newline."""
    with open(path, encoding="utf-8") as f:
        return f.read()


def cpu_file(n: int, root: str = "/") -> str:
    return raw(os.path.join(root, f"{CPU_DIR}/cpu{n}/online".lstrip("/")))


def block_file(n: int, root: str = "/") -> str:
    return raw(os.path.join(root, f"{MEMORY_DIR}/memory{n}/state".lstrip("/")))


def block_path(n: int) -> str:
    return f"{MEMORY_DIR}/memory{n}/state"


def refuse(monkeypatch, host: Sysfs, code: int, times: Optional[int] = None, path: Optional[str] = None,
           meanwhile: Optional[Callable[[], None]] = None) -> List[Tuple[str, str]]:
    """The host's write_attr raises OSError(code), as the kernel answers a sysfs write, `times`
    times (always when None) for `path` (any path when None), then writes as usual. `meanwhile`
    runs before each refusal (another writer racing us). Returns every write attempted."""
    attempts: List[Tuple[str, str]] = []
    left = [times]
    real = host.write_attr

    def write_attr(guest_path: str, value: str) -> bool:
        attempts.append((guest_path, value))
        if (path is None or guest_path == path) and (left[0] is None or left[0] > 0):
            if left[0] is not None:
                left[0] -= 1
            if meanwhile is not None:
                meanwhile()
            raise OSError(code, os.strerror(code))
        return real(guest_path, value)

    monkeypatch.setattr(host, "write_attr", write_attr)
    return attempts


def messages(caplog, level: int = logging.DEBUG) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gandi" and r.levelno >= level]


@pytest.fixture
def host(fs):
    """A plain guest (fakesys.system) and a Sysfs host rooted at '/'."""
    system(fs)
    return Sysfs()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """The back-off between attempts, recorded instead of slept (no test here waits)."""
    slept: List[float] = []
    monkeypatch.setattr(online.time, "sleep", slept.append)
    return slept


@pytest.fixture
def cli_hosts(monkeypatch):
    """cli.main() builds its Host from gandi_vm.host.Host: make it a Sysfs, prepared by the
    callbacks in `.setup`; every host made is kept in `.made`."""

    class Factory:
        def __init__(self):
            self.made: List[Sysfs] = []
            self.setup: List[Callable[[Sysfs], None]] = []

        def __call__(self, root: str = "/", dry_run: bool = False, plan=None) -> Sysfs:
            made = Sysfs(root, dry_run=dry_run, plan=plan)
            made.handlers["udevadm"] = lambda argv: Result(argv, 0)
            for prepare in self.setup:
                prepare(made)
            self.made.append(made)
            return made

    factory = Factory()
    monkeypatch.setattr("gandi_vm.host.Host", factory)
    return factory


# -- cpu online-all --------------------------------------------------------------------------------
def test_cpu_online_all_onlines_the_offline_cpus_and_only_them(host, fs, caplog):
    add_cpus(fs, CPUS)
    caplog.set_level(logging.INFO, logger="gandi")
    outcomes = cpu.online_all(host, Settings())
    assert [(o.name, o.changed, o.failed) for o in outcomes] == [
        ("cpu1", False, False), ("cpu2", True, False), ("cpu3", True, False)]
    assert host.writes == [(f"{CPU_DIR}/cpu2/online", "1"), (f"{CPU_DIR}/cpu3/online", "1")]
    assert (cpu_file(2), cpu_file(3)) == ("1", "1")
    assert cpu_file(1) == "1\n", "an online CPU is not even rewritten"
    assert raw(f"{CPU_DIR}/online") == "0-3\n"
    logged = messages(caplog)
    assert [m for m in logged if m.startswith(("cpu0", "cpu1", "cpu2", "cpu3"))] == [
        "cpu2: onlined (1)", "cpu3: onlined (1)"]
    assert logged[-1] == "cpus: 4 present, 4 online, 2 onlined now"
    assert host.commands == [], "no multiqueue interface: nothing to re-tune"


def test_cpu0_is_never_touched_even_with_an_online_file_holding_0(host, fs):
    add_cpus(fs, {0: "0", 1: "0"})
    outcomes = cpu.online_all(host, Settings())
    assert [o.name for o in outcomes] == ["cpu1"]
    assert host.writes == [(f"{CPU_DIR}/cpu1/online", "1")]
    assert cpu_file(0) == "0\n"


def test_cpus_without_an_online_file_are_skipped(host, fs):
    add_cpus(fs, {0: None, 1: None, 2: "0"})
    assert [(o.name, o.changed) for o in cpu.online_all(host, Settings())] == [("cpu2", True)]
    assert host.writes == [(f"{CPU_DIR}/cpu2/online", "1")]
    assert not os.path.exists(f"{CPU_DIR}/cpu1/online")


def test_cpu_hotplug_off_writes_nothing(host, fs, caplog):
    add_cpus(fs, CPUS)
    caplog.set_level(logging.INFO, logger="gandi")
    assert cpu.online_all(host, replace(Settings(), cpu_hotplug=False)) == []
    assert host.writes == [] and host.commands == []
    assert (cpu_file(2), cpu_file(3)) == ("0\n", "0\n")
    assert messages(caplog) == ["cpus: CONFIG_CPU_HOTPLUG=0, left as they are"]


def test_cpu_online_all_twice_changes_nothing_the_second_time(host, fs, caplog):
    add_cpus(fs, CPUS)
    cpu.online_all(host, Settings())
    host.writes.clear()
    caplog.set_level(logging.INFO, logger="gandi")
    assert not any(o.changed for o in cpu.online_all(host, Settings()))
    assert host.writes == []
    assert messages(caplog) == ["cpus: 4 present, 4 online"]


def test_cpu_online_all_dry_run_prints_the_plan_and_writes_nothing(fs, caplog):
    system(fs)
    add_cpus(fs, CPUS)
    plan = io.StringIO()
    caplog.set_level(logging.INFO, logger="gandi")
    outcomes = cpu.online_all(Sysfs(dry_run=True, plan=plan), Settings())
    assert [o.name for o in outcomes if o.changed] == ["cpu2", "cpu3"]
    assert plan.getvalue().splitlines() == [f"would write 1 to {CPU_DIR}/cpu2/online",
                                            f"would write 1 to {CPU_DIR}/cpu3/online"]
    assert (cpu_file(2), cpu_file(3)) == ("0\n", "0\n")
    assert "cpu2: would be onlined (1)" in messages(caplog)


def test_cli_cpu_online_all_under_a_root(fs, cli_hosts):
    system(fs, root=ROOT)
    add_cpus(fs, CPUS, root=ROOT)
    assert cli.main(["--root", ROOT, "cpu", "online-all"]) == 0
    assert (cpu_file(2, ROOT), cpu_file(3, ROOT)) == ("1", "1")
    assert cpu_file(1, ROOT) == "1\n"


def test_cli_cpu_online_all_exit_status_1_when_a_cpu_cannot_be_onlined(fs, cli_hosts, monkeypatch,
                                                                        capsys):
    system(fs)
    add_cpus(fs, CPUS)
    cli_hosts.setup.append(lambda h: refuse(monkeypatch, h, errno.EPERM, path=f"{CPU_DIR}/cpu3/online"))
    assert cli.main(["cpu", "online-all"]) == 1
    err = capsys.readouterr().err
    assert (f"gandi: error: cpu3: cannot write 1 to {CPU_DIR}/cpu3/online: Operation not permitted "
            "(errno 1)") in err
    assert (cpu_file(2), cpu_file(3)) == ("1", "0\n"), "cpu2 onlined all the same"


# -- memory online-all -----------------------------------------------------------------------------
@pytest.mark.parametrize("zone", ZONES)
def test_memory_online_all_writes_the_configured_zone_to_offline_blocks(host, fs, zone, caplog):
    add_memory_blocks(fs, BLOCKS)
    caplog.set_level(logging.INFO, logger="gandi")
    outcomes = memory.online_all(host, replace(Settings(), memory_zone=zone))
    assert [(o.name, o.changed, o.failed) for o in outcomes] == [
        ("memory block 0", False, False), ("memory block 1", False, False),
        ("memory block 2", True, False), ("memory block 3", False, False),
        ("memory block 4", True, False)]
    assert host.writes == [(block_path(2), zone), (block_path(4), zone)]
    assert (block_file(0), block_file(1), block_file(3)) == ("online\n", "online\n", "going-offline\n")
    assert (block_file(2), block_file(4)) == ("online\n", "online\n")
    logged = messages(caplog)
    assert f"memory block 2: onlined ({zone})" in logged and f"memory block 4: onlined ({zone})" in logged
    assert logged[-1] == "memory: 4 blocks online, 0 offline, 512 MiB online, 2 onlined now"


@pytest.mark.parametrize("state", ["online", "going-offline", "", "unknown"])
def test_memory_blocks_not_offline_are_left_alone(host, fs, state):
    add_memory_blocks(fs, {0: "online", 7: state})
    assert [o.changed for o in memory.online_all(host, Settings())] == [False, False]
    assert host.writes == []
    assert block_file(7) == f"{state}\n"


def test_a_memory_block_without_a_state_file_is_left_alone(host, fs):
    add_memory_blocks(fs, {0: "online"})
    os.makedirs(f"{MEMORY_DIR}/memory9")
    assert [o.changed for o in memory.online_all(host, Settings())] == [False, False]
    assert host.writes == []


def test_memory_hotplug_off_writes_nothing(host, fs, caplog):
    add_memory_blocks(fs, BLOCKS)
    caplog.set_level(logging.INFO, logger="gandi")
    assert memory.online_all(host, replace(Settings(), memory_hotplug=False)) == []
    assert host.writes == []
    assert (block_file(2), block_file(4)) == ("offline\n", "offline\n")
    assert messages(caplog) == ["memory: CONFIG_MEMORY_HOTPLUG=0, left as it is"]


def test_memory_online_all_twice_changes_nothing_the_second_time(host, fs):
    add_memory_blocks(fs, BLOCKS)
    memory.online_all(host, replace(Settings(), memory_zone="online_movable"))
    host.writes.clear()
    assert not any(o.changed or o.failed for o in memory.online_all(host, Settings()))
    assert host.writes == []


# -- write errors: bounded retries -----------------------------------------------------------------
@pytest.mark.parametrize("failures", range(1, online.ATTEMPTS))
def test_a_busy_block_is_retried_then_onlined(host, fs, monkeypatch, sleeps, failures):
    add_memory_blocks(fs, {0: "online", 2: "offline"})
    attempts = refuse(monkeypatch, host, errno.EBUSY, times=failures)
    outcomes = memory.online_all(host, Settings())
    assert outcomes[1] == online.Outcome("memory block 2", True)
    assert attempts == [(block_path(2), "online")] * (failures + 1)
    assert block_file(2) == "online\n"
    assert len(sleeps) == failures
    assert sleeps == sorted(sleeps) and all(0 < s <= 2 for s in sleeps)


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EINVAL, errno.EAGAIN])
def test_a_block_always_refused_fails_after_the_bounded_attempts(host, fs, monkeypatch, sleeps, caplog,
                                                                  code):
    add_memory_blocks(fs, {0: "online", 5: "offline"})
    attempts = refuse(monkeypatch, host, code)
    caplog.set_level(logging.INFO, logger="gandi")
    [_, outcome] = memory.online_all(host, Settings())
    assert outcome.failed and not outcome.changed
    assert outcome.error == f"{os.strerror(code)} (errno {code}) after {online.ATTEMPTS} attempts"
    assert len(attempts) == online.ATTEMPTS
    assert len(sleeps) == online.ATTEMPTS - 1 and sum(sleeps) < 5
    assert block_file(5) == "offline\n"
    [error] = messages(caplog, logging.ERROR)
    assert error.startswith(f"memory block 5: cannot write online to {block_path(5)}: ")
    assert os.strerror(code) in error


def test_eperm_is_final_one_attempt_and_reported(host, fs, monkeypatch, sleeps, caplog):
    add_memory_blocks(fs, {5: "offline"})
    attempts = refuse(monkeypatch, host, errno.EPERM)
    [outcome] = memory.online_all(host, Settings())
    assert outcome.failed and "Operation not permitted (errno 1)" in str(outcome.error)
    assert len(attempts) == 1 and sleeps == []
    assert any("memory block 5" in m and "Operation not permitted" in m
               for m in messages(caplog, logging.ERROR))


def test_one_failing_block_does_not_keep_the_others_offline(host, fs, monkeypatch):
    add_memory_blocks(fs, {2: "offline", 3: "offline"})
    refuse(monkeypatch, host, errno.EBUSY, path=block_path(2))
    assert [(o.changed, o.failed) for o in memory.online_all(host, Settings())] == [(False, True),
                                                                                    (True, False)]
    assert (block_file(2), block_file(3)) == ("offline\n", "online\n")


def test_the_kernel_model_answers_einval_for_a_block_already_online(host, fs):
    """What the race test below relies on (drivers/base/memory.c: state_store())."""
    add_memory_blocks(fs, {2: "online"})
    with pytest.raises(OSError) as caught:
        host.write_attr(block_path(2), "online_movable")
    assert caught.value.errno == errno.EINVAL


def test_a_block_onlined_meanwhile_by_someone_else_is_not_a_failure(host, fs, monkeypatch):
    add_memory_blocks(fs, {2: "offline"})

    def udev_onlines_it():
        _write(block_path(2), "online\n")

    # Our first write is refused (EBUSY) while udevd's attribute assignment onlines the block.
    refuse(monkeypatch, host, errno.EBUSY, times=1, meanwhile=udev_onlines_it)
    [outcome] = memory.online_all(host, replace(Settings(), memory_zone="online_movable"))
    assert not outcome.failed, outcome.error
    assert block_file(2) == "online\n"


def test_cli_memory_online_all_exit_status(fs, cli_hosts, monkeypatch, capsys):
    system(fs)
    add_memory_blocks(fs, {0: "online", 2: "offline", 3: "offline"})
    cli_hosts.setup.append(lambda h: refuse(monkeypatch, h, errno.EBUSY, path=block_path(3)))
    assert cli.main(["memory", "online-all"]) == 1
    err = capsys.readouterr().err
    assert (f"gandi: error: memory block 3: cannot write online to {block_path(3)}: Device or resource "
            f"busy (errno 16) after {online.ATTEMPTS} attempts") in err.splitlines()
    cli_hosts.setup.clear()
    assert cli.main(["memory", "online-all"]) == 0
    assert block_file(3) == "online\n"
    assert cli.main(["memory", "online-all"]) == 0, "nothing left to do is a success"


# -- the udev rule ---------------------------------------------------------------------------------
def rule_lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("auto", [False, True], ids=["rule-onlines", "kernel-onlines"])
@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("memory_on", [True, False], ids=["memory", "no-memory"])
@pytest.mark.parametrize("cpu_on", [True, False], ids=["cpu", "no-cpu"])
def test_render_rules(cpu_on, memory_on, zone, auto):
    settings = replace(Settings(), cpu_hotplug=cpu_on, memory_hotplug=memory_on, memory_zone=zone)
    text = online.render_rules(settings, auto)
    wanted = [CPU_RULE, RETUNE_RULE] if cpu_on else []
    if memory_on and not auto:
        wanted.append(f'SUBSYSTEM=="memory", ATTR{{state}}=="offline", ATTR{{state}}="{zone}"')
    assert rule_lines(text) == [ACTION_FILTER, *wanted, END_LABEL]
    assert text.endswith(END_LABEL + "\n")
    comments = text.lower()
    assert ("config_cpu_hotplug=0" in comments) is not cpu_on
    assert ("config_memory_hotplug=0" in comments) is not memory_on
    assert ("auto_online_blocks" in comments) is (memory_on and auto)


def test_the_shipped_rule_is_the_rendered_default():
    """udev/87-gandi-online.rules is what hotplug-rules writes for the default configuration on
    a kernel that leaves memory offline: the default file and the generator cannot drift."""
    assert SHIPPED_RULES.read_text() == online.render_rules(Settings(), False)


RULE = "/run/udev/rules.d/87-gandi-online.rules"


def test_write_rules_writes_the_rule_and_reloads_udev_only_when_it_changed(host, fs):
    add_memory_blocks(fs, {0: "online"})
    host.handlers["udevadm"] = lambda argv: Result(argv, 0)
    assert online.RULE_PATH == RULE
    assert online.write_rules(host, Settings()) is True
    assert raw(RULE) == online.render_rules(Settings(), False)
    assert os.stat(RULE).st_mode & 0o7777 == 0o644
    assert host.commands == [["udevadm", "control", "--reload"]]
    host.commands.clear()
    assert online.write_rules(host, Settings()) is False
    assert host.commands == []
    zone = replace(Settings(), memory_zone="online_kernel")
    assert online.write_rules(host, zone) is True
    assert 'ATTR{state}="online_kernel"' in raw(RULE)
    assert host.commands == [["udevadm", "control", "--reload"]]


@pytest.mark.parametrize("auto, memory_rule", [("offline", True), ("online", False),
                                               ("online_movable", False), ("online_kernel", False),
                                               (None, True)])
def test_write_rules_leaves_memory_to_a_kernel_that_onlines_it(host, fs, auto, memory_rule):
    add_memory_blocks(fs, {0: "online"}, auto_online=auto)
    online.write_rules(host, Settings())
    assert any(line.startswith('SUBSYSTEM=="memory"') for line in rule_lines(raw(RULE))) is memory_rule
    assert raw(RULE) == online.render_rules(Settings(), not memory_rule)


def test_write_rules_reports_a_failed_reload_and_goes_on(host, fs, caplog):
    host.handlers["udevadm"] = lambda argv: Result(argv, 1, stderr="Failed to send reload request: "
                                                   "Connection refused\n")
    assert online.write_rules(host, Settings()) is True
    assert os.path.exists(RULE)
    assert "udevadm control --reload: Failed to send reload request: Connection refused" in \
        messages(caplog, logging.WARNING)


def test_write_rules_without_udevadm_is_quiet(host, fs, caplog):
    assert online.write_rules(host, Settings()) is True  # FakeHost: unknown program, exit 127
    assert messages(caplog, logging.WARNING) == []


def snapshot(top: str = "/"):
    found = {}
    for directory, _, files in os.walk(top):
        for name in files:
            path = os.path.join(directory, name)
            found[path] = raw(path) if not os.path.islink(path) else os.readlink(path)
    return found


def test_dry_run_hotplug_rules_writes_nothing(fs, cli_hosts, capsys):
    system(fs)
    add_memory_blocks(fs, {0: "online"})
    before = snapshot()
    assert cli.main(["--dry-run", "hotplug-rules"]) == 0
    assert snapshot() == before
    assert capsys.readouterr().out.splitlines() == [f"would write {RULE}",
                                                   "would run udevadm control --reload"]
    assert cli_hosts.made[0].commands == []


def test_dry_run_hotplug_rules_does_not_claim_it_wrote(fs, cli_hosts, capsys):
    system(fs)
    assert cli.main(["--dry-run", "hotplug-rules"]) == 0
    assert f"gandi: {RULE}: written" not in capsys.readouterr().err.splitlines()


def test_cli_hotplug_rules_renders_the_configuration_under_a_root(fs, cli_hosts):
    system(fs, root=ROOT)
    add_memory_blocks(fs, {0: "online"}, root=ROOT)
    fs.create_file(f"{ROOT}/etc/default/gandi",
                   contents="CONFIG_CPU_HOTPLUG=0\nCONFIG_MEMORY_ZONE=online_movable\n")
    assert cli.main(["--root", ROOT, "hotplug-rules"]) == 0
    wanted = replace(Settings(), cpu_hotplug=False, memory_zone="online_movable")
    assert raw(f"{ROOT}{RULE}") == online.render_rules(wanted, False)
    assert not os.path.exists(RULE)
    assert cli_hosts.made[0].commands == [], "under --root, this system's udevd is not reloaded"


# -- status ----------------------------------------------------------------------------------------
def test_cpu_status(host, fs):
    add_cpus(fs, {0: None, 1: "1", 2: "0", 3: "0", 5: "1"})
    assert cpu.status(host) == {"present": 5, "online": 3, "offline": [2, 3]}


def test_memory_status(host, fs):
    add_memory_blocks(fs, BLOCKS)
    assert memory.status(host) == {"block_size": BLOCK_SIZE, "online": 2, "offline": [2, 4],
                                   "online_bytes": 2 * BLOCK_SIZE}


def test_status_on_a_guest_without_memory_blocks(host):
    assert memory.status(host) == {"block_size": 0, "online": 0, "offline": [], "online_bytes": 0}


# -- sysfs numbers from a hostile tree -------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [("", []), ("0", [0]), ("0-3,6", [0, 1, 2, 3, 6]),
                                            ("3,0-1,1", [0, 1, 3]), ("8191", [8191])])
def test_cpu_list_parses_the_kernel_format(text, expected):
    assert sysfs.cpu_list(text) == expected


@pytest.mark.parametrize("text", ["\u00b2", "1-\u00b3", "\u0663", "0-4294967295", "0-8192", "8192", "3-1",
                                  "+1", " 1", "1_0", "0x1", "0-", "-1", ",", "0,,1", "0-3:2/4", "9" * 5000])
def test_cpu_list_rejects_garbage_and_unbounded_ranges(text):
    with pytest.raises(sysfs.Garbage):
        sysfs.cpu_list(text)


@pytest.mark.parametrize("text, base, expected", [("0", 10, 0), ("18446744073709551615", 10, 2 ** 64 - 1),
                                                  ("8000000", 16, 0x8000000), ("fFfF", 16, 0xFFFF)])
def test_number_parses_ascii_digits(text, base, expected):
    assert sysfs.number(text, base) == expected


@pytest.mark.parametrize("text, base", [("", 10), ("\u00b2", 10), ("\u00b2", 16), ("1_000", 16), ("0x10", 16),
                                        ("-1", 10), ("1" * 21, 10), ("f" * 17, 16), ("1e3", 10)])
def test_number_rejects_what_the_kernel_never_prints(text, base):
    with pytest.raises(sysfs.Garbage):
        sysfs.number(text, base)


@pytest.mark.parametrize("online_list", ["\u00b2", "0-\u00b2", "0-9000", "2-1"])
def test_a_garbage_online_list_is_one_warning_naming_the_file(host, fs, caplog, online_list):
    add_cpus(fs, {0: None, 1: "1", 2: "0"})
    _write(f"{CPU_DIR}/online", online_list + "\n")
    assert cpu.status(host) == {"present": 3, "online": 1, "offline": [1, 2]}
    assert cpu.online_count(host) == 1
    warned = messages(caplog, logging.WARNING)
    assert len(warned) == 2 and all(m.startswith(f"{CPU_DIR}/online: ") for m in warned)


def test_cpu_and_memory_directories_with_non_ascii_digits_are_not_cpus_nor_blocks(host, fs):
    add_cpus(fs, {0: None, 1: "1"})
    add_memory_blocks(fs, {0: "online"})
    for fake in (f"{CPU_DIR}/cpu\u0662", f"{CPU_DIR}/cpu\u00b2", f"{CPU_DIR}/cpu{'9' * 200}",
                 f"{MEMORY_DIR}/memory\u0661", f"{MEMORY_DIR}/memory{'9' * 200}"):
        os.makedirs(fake)
    assert cpu.numbers(host) == [0, 1]
    assert memory.blocks(host) == [0]


@pytest.mark.parametrize("size", ["\u00b2", "1_000", "-8000000", "f" * 17])
def test_a_garbage_block_size_is_unknown_with_one_warning(host, fs, caplog, size):
    add_memory_blocks(fs, BLOCKS)
    _write(f"{MEMORY_DIR}/block_size_bytes", size + "\n")
    assert memory.status(host)["block_size"] == 0
    assert messages(caplog, logging.WARNING) == [
        f"{MEMORY_DIR}/block_size_bytes: expected a hexadecimal number, got {size!r}; ignored"]


def test_cli_status_yaml_has_cpus_and_memory(fs, cli_hosts, capsys):
    system(fs)
    add_cpus(fs, CPUS)
    add_memory_blocks(fs, BLOCKS)
    assert cli.main(["status", "--format", "yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["cpus"] == {"present": 4, "online": 2, "offline": [2, 3]}
    assert data["memory"] == {"block_size": BLOCK_SIZE, "online": 2, "offline": [2, 4],
                              "online_bytes": 2 * BLOCK_SIZE}
    assert cli_hosts.made[0].writes == []


def test_cli_status_text_has_the_cpus_and_memory_lines(fs, cli_hosts, capsys):
    system(fs)
    add_cpus(fs, CPUS)
    add_memory_blocks(fs, BLOCKS)
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CPUS    4 present, 2 online, offline: 2,3" in lines
    assert "MEMORY  blocks of 128.0MiB: 2 online (256.0MiB), offline: 2,4" in lines


def test_cli_status_text_after_online_all(fs, cli_hosts, capsys):
    system(fs)
    add_cpus(fs, CPUS)
    add_memory_blocks(fs, BLOCKS)
    assert cli.main(["cpu", "online-all"]) == 0
    assert cli.main(["memory", "online-all"]) == 0
    capsys.readouterr()
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CPUS    4 present, 4 online, offline: -" in lines
    assert "MEMORY  blocks of 128.0MiB: 4 online (512.0MiB), offline: -" in lines


# -- multiqueue interfaces follow the vCPUs --------------------------------------------------------
def configured_nic(fs, host: FakeHost) -> None:
    """eth1, a virtio-net interface that iface attach configured (its record says so)."""
    add_nic(fs, "eth1", 3, MAC)
    lease.save(host, "eth1", {"interface": "eth1", "mac": MAC, "driver": "virtio_net",
                              "state": "configured", "reason": "10.0.1.5/24 via gandi-dhcp"})
    host.handlers["ethtool"] = lambda argv: Result(argv, 0, ETHTOOL_L if argv[1] == "-l" else "")


def ethtool_set(host: FakeHost) -> List[List[str]]:
    return [argv for argv in host.commands if argv[:2] == ["ethtool", "-L"]]


def test_cpus_onlined_retune_the_multiqueue_interfaces(host, fs):
    add_cpus(fs, CPUS)
    configured_nic(fs, host)
    cpu.online_all(host, Settings())
    assert ethtool_set(host) == [["ethtool", "-L", "eth1", "combined", "4"]], \
        "one queue pair per vCPU online now, the two just onlined included"
    assert os.path.exists(net.multiqueue_marker("eth1"))


def test_nothing_onlined_nothing_retuned(host, fs):
    add_cpus(fs, {0: None, 1: "1", 2: "1"})
    configured_nic(fs, host)
    cpu.online_all(host, Settings())
    assert host.commands == []


def test_cpus_that_all_failed_to_come_online_retune_nothing(host, fs, monkeypatch):
    add_cpus(fs, CPUS)
    configured_nic(fs, host)
    refuse(monkeypatch, host, errno.EPERM)
    assert all(o.failed for o in cpu.online_all(host, Settings()) if o.name != "cpu1")
    assert host.commands == []


def test_multiqueue_off_retunes_nothing(host, fs):
    add_cpus(fs, CPUS)
    configured_nic(fs, host)
    cpu.online_all(host, replace(Settings(), multiqueue=False))
    assert (cpu_file(2), cpu_file(3)) == ("1", "1")
    assert host.commands == []


def test_interfaces_not_configured_by_us_are_not_retuned(host, fs):
    add_cpus(fs, CPUS)
    configured_nic(fs, host)
    record = lease.load(host, "eth1")
    lease.save(host, "eth1", dict(record, state="left", reason="holds the default route"))
    cpu.online_all(host, Settings())
    assert host.commands == []


def test_cli_iface_retune(fs, cli_hosts):
    system(fs)
    add_cpus(fs, {0: None, 1: "1"})
    configured_nic(fs, FakeHost())
    cli_hosts.setup.append(lambda h: h.handlers.update(
        ethtool=lambda argv: Result(argv, 0, ETHTOOL_L if argv[1] == "-l" else "")))
    assert cli.main(["iface", "retune"]) == 0
    assert ethtool_set(cli_hosts.made[0]) == [["ethtool", "-L", "eth1", "combined", "2"]]


def test_cli_online_all_with_hotplug_off_in_the_configuration_writes_nothing(fs, cli_hosts, capsys):
    system(fs)
    add_cpus(fs, CPUS)
    add_memory_blocks(fs, BLOCKS)
    fs.create_file("/etc/default/gandi", contents="CONFIG_CPU_HOTPLUG=0\nCONFIG_MEMORY_HOTPLUG=off\n")
    assert cli.main(["cpu", "online-all"]) == 0
    assert cli.main(["memory", "online-all"]) == 0
    assert [h.writes for h in cli_hosts.made] == [[], []]
    err = capsys.readouterr().err
    assert "gandi: cpus: CONFIG_CPU_HOTPLUG=0, left as they are" in err.splitlines()
    assert "gandi: memory: CONFIG_MEMORY_HOTPLUG=0, left as it is" in err.splitlines()
    assert (cpu_file(2), block_file(2)) == ("0\n", "offline\n")


def test_detach_removes_the_multiqueue_marker(host, fs):
    add_cpus(fs, {0: None, 1: "1"})
    configured_nic(fs, host)
    net.retune_all(host, Settings())
    assert os.path.exists(net.multiqueue_marker("eth1"))
    assert net.detach(host, Settings(), "eth1").state == "detached"
    assert not os.path.exists(net.multiqueue_marker("eth1"))


def test_a_failed_attach_leaves_no_multiqueue_marker(host, fs, monkeypatch):
    add_cpus(fs, {0: None, 1: "1"})
    add_nic(fs, "eth1", 3, MAC)
    add_sysctls(fs, "eth1")
    fs.create_file("/usr/sbin/dhclient")  # our own client, and no DHCP server answers
    monkeypatch.setattr(net.time, "sleep", lambda seconds: None)
    host.handlers.update(ethtool=lambda argv: Result(argv, 0, ETHTOOL_L if argv[1] == "-l" else ""),
                         ip=lambda argv: Result(argv, 0, "[]" if "-j" in argv else ""),
                         dhclient=lambda argv: Result(argv, 2, stderr="No DHCPOFFERS received."))
    outcome = net.attach(host, replace(Settings(), dhcp_retries=1), "eth1")
    assert outcome.state == "failed"
    assert ["ethtool", "-l", "eth1"] in host.commands, "tune_channels ran"
    assert not os.path.exists(net.multiqueue_marker("eth1"))


# -- configuration ---------------------------------------------------------------------------------
def test_online_keys_defaults():
    settings = config.parse("", "/etc/default/gandi")
    assert (settings.cpu_hotplug, settings.memory_hotplug, settings.memory_zone) == (True, True, "online")


@pytest.mark.parametrize("zone", ZONES)
def test_online_keys_good_values(zone):
    text = f"CONFIG_CPU_HOTPLUG=0\nCONFIG_MEMORY_HOTPLUG=no\nCONFIG_MEMORY_ZONE='{zone}'\n"
    settings = config.parse(text, "/etc/default/gandi")
    assert settings.problems == ()
    assert (settings.cpu_hotplug, settings.memory_hotplug, settings.memory_zone) == (False, False, zone)


@pytest.mark.parametrize("line, name", [
    ("CONFIG_MEMORY_ZONE=movable", "memory_zone"),
    ("CONFIG_MEMORY_ZONE=ONLINE", "memory_zone"),
    ("CONFIG_MEMORY_ZONE=", "memory_zone"),
    ("CONFIG_MEMORY_ZONE='online online_movable'", "memory_zone"),
    ("CONFIG_MEMORY_ZONE=offline", "memory_zone"),
    ("CONFIG_CPU_HOTPLUG=2", "cpu_hotplug"),
    ("CONFIG_MEMORY_HOTPLUG=maybe", "memory_hotplug"),
])
def test_online_keys_bad_values_name_the_line_and_keep_the_default(line, name):
    settings = config.parse(f"CONFIG_NETWORK=1\n{line}\n", "/etc/default/gandi")
    [(level, message)] = settings.problems
    assert level == logging.ERROR
    assert message.startswith("/etc/default/gandi:2: " + line.split("=", 1)[0] + "=")
    assert getattr(settings, name) == getattr(Settings(), name)
    if name == "memory_zone":
        assert message.endswith("expected online, online_movable or online_kernel; using the default "
                                "online")
    else:
        assert message.endswith("expected 1 or 0; using the default 1")


def test_a_bad_zone_is_reported_and_the_default_zone_is_used(fs, cli_hosts, capsys):
    system(fs)
    add_memory_blocks(fs, {2: "offline"})
    fs.create_file("/etc/default/gandi", contents="# gandi\nCONFIG_MEMORY_HOTPLUG=1\n"
                                                  "CONFIG_MEMORY_ZONE=movable\n")
    assert cli.main(["memory", "online-all"]) == 0
    assert ("gandi: error: /etc/default/gandi:3: CONFIG_MEMORY_ZONE='movable': expected online, "
            "online_movable or online_kernel; using the default online") in capsys.readouterr().err
    assert cli_hosts.made[0].writes == [(block_path(2), "online")]


# -- shipped files ---------------------------------------------------------------------------------
def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(path)
    return parser


def exec_starts(path: Path) -> List[str]:
    """Every ExecStart= line, in order (configparser keeps only the last of repeated keys)."""
    return [line.split("=", 1)[1].strip() for line in path.read_text().splitlines()
            if line.startswith("ExecStart=")]


def gandi_vm_args(command: str) -> Tuple[str, List[str]]:
    """(systemd's prefix characters, gandi-vm's arguments) of an Exec line."""
    prefix = re.match(r"[-@:+!]*", command).group(0)
    argv = shlex.split(command[len(prefix):])
    assert argv[0] == "/usr/bin/gandi-vm", command
    return prefix, argv[1:]


def test_retune_unit_runs_iface_retune_only_when_a_multiqueue_marker_exists():
    unit = _unit(RETUNE_UNIT)
    glob = unit["Unit"]["ConditionPathExistsGlob"]
    assert glob == "/run/gandi/iface/*.multiqueue"
    assert fnmatch.fnmatchcase(net.multiqueue_marker("ens4"), glob), "the marker tune_channels writes"
    assert not fnmatch.fnmatchcase(lease.path("ens4"), glob), "an interface record is no marker"
    assert unit["Service"]["Type"] == "oneshot"
    [command] = exec_starts(RETUNE_UNIT)
    assert command == "/usr/bin/gandi-vm iface retune"
    args = cli._parser().parse_args(gandi_vm_args(command)[1])
    assert (args.command, args.action) == ("iface", "retune")


def test_online_rule_assigns_attributes_and_only_wants_the_retune_unit():
    text = SHIPPED_RULES.read_text()
    lines = rule_lines(text)
    assert not any("RUN" in line or "PROGRAM" in line or "IMPORT{program}" in line for line in lines)
    assert lines[0] == ACTION_FILTER, "filter on ACTION first: bind/unbind/online/offline events too"
    assert lines[-1] == END_LABEL
    assert re.findall(r'SYSTEMD_WANTS}\+="([^"]+)"', text) == [RETUNE_UNIT.name]
    assert RETUNE_UNIT.is_file()
    assigned = re.findall(r'(ATTR\{\w+\})="', text)
    assert sorted(set(assigned)) == ["ATTR{online}", "ATTR{state}"]


def test_boot_unit_is_one_mount_all_process():
    """gandi-mount.service's boot job is one interpreter start: mount-all onlines, then mounts."""
    steps = [(prefix, " ".join(args)) for prefix, args in map(gandi_vm_args, exec_starts(MOUNT_UNIT))]
    assert steps == [("", "mount-all")]


def test_the_configured_rule_is_in_place_before_udev_coldplug():
    # `early-boot` renders the rule (what `hotplug-rules` does) in the process that also grows the
    # system disk: one interpreter start for both early jobs.
    units = [path for path in sorted((REPO / "systemd").glob("*.service"))
             if any(shlex.split(c.lstrip("-@:+!"))[0] == "/usr/bin/gandi-vm"  # not postboot's
                    and gandi_vm_args(c)[1] in (["hotplug-rules"], ["early-boot"])
                    for c in exec_starts(path))]
    assert units
    for path in units:
        unit = _unit(path)["Unit"]
        assert "systemd-udev-trigger.service" in unit.get("Before", "").split(), path.name
        assert unit.get("DefaultDependencies") == "no", path.name


# -- mount-all: gandi-mount's one process ----------------------------------------------------------
def test_mount_all_onlines_what_is_offline_then_mounts(fs, cli_hosts, capsys):
    system(fs)
    add_cpus(fs, CPUS)
    add_memory_blocks(fs, BLOCKS)
    assert cli.main(["mount-all"]) == 0
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CPUS    4 present, 4 online, offline: -" in lines
    assert "MEMORY  blocks of 128.0MiB: 4 online (512.0MiB), offline: -" in lines


def test_mount_all_mounts_even_when_onlining_breaks(fs, cli_hosts, monkeypatch, capsys):
    # What the '-' of two ExecStart lines gave, in one process: onlining neither stops the
    # mounts nor decides the exit status.
    system(fs)
    mounted: List[str] = []
    monkeypatch.setattr("gandi_vm.cpu.online_all", lambda host, settings: 1 / 0)
    monkeypatch.setattr("gandi_vm.disk.mount_all",
                        lambda host, settings: mounted.append("mount-all") or [])
    assert cli.main(["mount-all"]) == 0
    assert mounted == ["mount-all"]
    assert "cpu online-all: failed: ZeroDivisionError: division by zero" in capsys.readouterr().err
