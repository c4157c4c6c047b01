"""vCPU and memory onlining: `cpu online-all` and `memory online-all` (bounded retries, never
offlining, never cpu0), the shipped udev rule evaluated as udevd evaluates it (it reads
/etc/default/gandi itself), `status`, the re-tuning of multiqueue interfaces once vCPUs came
online, the three configuration keys and the shipped files that tie the rule, the units and the
commands together.

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
import itertools
import logging
import os
import re
import shlex
from gandi_vm.record import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import yaml
from fakesys import (CPU_DIR, MEMORY_DIR, FakeHost, add_cpus, add_memory_blocks, add_nic, add_sysctls,
                     cpu_ranges, system)

from gandi_vm import cli, config, cpu, lease, memory, net, online, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Result

REPO = Path(__file__).resolve().parents[2]
SHIPPED_RULES = REPO / "udev" / "87-gandi-online.rules"
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

ACTION_FILTER = [("ACTION", None, "!=", "add"), ("GOTO", None, "=", "gandi_online_end")]
END_LABEL = [("LABEL", None, "=", "gandi_online_end")]

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


# -- the udev rule, evaluated as udevd does --------------------------------------------------------
# A small evaluator of the rule syntax 87-gandi-online.rules uses, after systemd 252's
# src/udev/udev-rules.c: a line's match keys are tested in order, and only if all match are its
# assignments done (the rule writes every match before its assignments); GOTO skips to its LABEL;
# IMPORT{file} reads the file as get_property_from_string() does. A key it does not know fails the
# test: the rule must keep to what is proven here.
TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?(==|!=|\+=|=)"([^"]*)"\s*(?:,|$)')
WHITESPACE = " \t\n\r"  # systemd's WHITESPACE, which strstrip() and skip_leading_chars() drop


def udev_rule_lines(text: str) -> List[List[Tuple[str, Optional[str], str, str]]]:
    r"""Each rule line as (key, attribute, operator, value) tokens; `\` continues a line."""
    joined = re.sub(r"\\\n", "", text)
    parsed = []
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens = [match.groups() for match in TOKEN.finditer(line)]
        assert "".join(m.group(0) for m in TOKEN.finditer(line)).strip() == line.strip(), line
        parsed.append(tokens)
    return parsed


def udev_property(line: str) -> Optional[Tuple[str, str]]:
    """A line of an IMPORT{file} as udevd reads it: KEY=value with the first '=', both stripped,
    one pair of matching quotes removed; nothing else (no escapes, comments only at line start,
    an empty value is no property)."""
    key, sep, value = line.lstrip(WHITESPACE).partition("=")
    if not key or key.startswith("#") or not sep:
        return None
    key, value = key.strip(WHITESPACE), value.strip(WHITESPACE)
    if not key or not value:
        return None
    if value[0] in "\"'":
        if len(value) == 1 or value[-1] != value[0]:
            return None
        value = value[1:-1]
    return key, value


def udev_match(patterns: str, value: Optional[str]) -> bool:
    return any(fnmatch.fnmatchcase(value or "", pattern) for pattern in patterns.split("|"))


class UdevEvent:
    """One uevent of a device: its sysfs attributes, the files the rule may read, what it did."""

    def __init__(self, subsystem: str, attrs: Dict[str, str], files: Dict[str, str],
                 action: str = "add"):
        self.subsystem, self.action = subsystem, action
        self.attrs, self.files = dict(attrs), files
        self.env: Dict[str, str] = {}
        self.written: List[Tuple[str, str]] = []
        self.tags: List[str] = []
        self.imported: List[str] = []

    def matches(self, key: str, attr: Optional[str], op: str, value: str) -> bool:
        if key == "ACTION":
            found = udev_match(value, self.action)
        elif key == "SUBSYSTEM":
            found = udev_match(value, self.subsystem)
        elif key == "ATTR":
            found = udev_match(value, self.attrs.get(attr))
        elif key == "ENV":
            found = udev_match(value, self.env.get(attr))
        elif key == "TEST":
            found = value in (self.files if value.startswith("/") else self.attrs)
        elif key == "IMPORT" and attr == "file" and op == "=":
            if value not in self.files:
                return False
            self.imported.append(value)
            for line in re.split(r"\r\n|[\n\r\0]", self.files[value]):  # read_line()'s ends
                prop = udev_property(line)
                if prop is not None:
                    self.env[prop[0]] = prop[1]
            return True
        else:
            raise AssertionError(f"the evaluator does not know the match {key}{{{attr}}}{op}")
        return found if op == "==" else not found

    def assign(self, key: str, attr: Optional[str], op: str, value: str) -> Optional[str]:
        """Do an assignment; a GOTO returns its label."""
        value = re.sub(r"\$env\{(\w+)\}", lambda m: self.env.get(m.group(1), ""), value)
        if key == "ATTR" and op == "=":
            self.attrs[attr] = value
            self.written.append((attr, value))
        elif key == "ENV" and op == "=":
            if value:
                self.env[attr] = value
            else:
                self.env.pop(attr, None)
        elif key == "ENV" and op == "+=":
            self.env[attr] = " ".join(filter(None, (self.env.get(attr), value)))
        elif key == "TAG" and op == "+=":
            self.tags.append(value)
        elif key == "GOTO" and op == "=":
            return value
        else:
            raise AssertionError(f"the evaluator does not know the assignment {key}{{{attr}}}{op}")
        return None

    def run(self, text: str) -> "UdevEvent":
        skipping_to = None
        for tokens in udev_rule_lines(text):
            if tokens[0][0] == "LABEL":
                if tokens[0][3] == skipping_to:
                    skipping_to = None
                continue
            if skipping_to is not None:
                continue
            matches = [t for t in tokens if t[2] in ("==", "!=") or t[0] in ("TEST", "IMPORT")]
            if not all(self.matches(*token) for token in matches):
                continue
            for token in tokens:
                if token not in matches:
                    skipping_to = self.assign(*token) or skipping_to
        assert skipping_to is None, f"GOTO {skipping_to}: no such label after it"
        return self


DEFAULT_FILE, SYSCONFIG_FILE = config.DEFAULT_PATHS
OFFLINE_CPU = {"online": "0"}


def hot_add(subsystem: str, attrs: Dict[str, str], files: Dict[str, str]) -> UdevEvent:
    return UdevEvent(subsystem, attrs, files).run(SHIPPED_RULES.read_text())


def rule_onlines_cpu(files: Dict[str, str]) -> bool:
    return hot_add("cpu", OFFLINE_CPU, files).written == [("online", "1")]


def rule_zone(files: Dict[str, str]) -> Optional[str]:
    """The zone the rule writes to an offline memory block; None when it leaves it offline."""
    written = hot_add("memory", {"state": "offline"}, files).written
    assert len(written) <= 1 and all(attr == "state" for attr, _ in written), written
    return written[0][1] if written else None


def spellings(word: str) -> List[str]:
    """Every upper/lower case spelling of the word."""
    return ["".join(chars) for chars in itertools.product(*({c.lower(), c.upper()} for c in word))]


# Every boolean config.py accepts, in every case, and values it refuses (then: the default).
BOOLEANS = sorted({s for word in ("0", "1", "no", "yes", "false", "true", "off", "on")
                   for s in spellings(word)})
REFUSED = ["", "2", "00", "-1", "maybe", "nein", "online", "offline", "movable", "ONLINE",
           "Online_movable", "online-movable", "online online_movable", "online_*", "*", "[o]ff"]
ZONE_VALUES = list(ZONES) + REFUSED


@pytest.mark.parametrize("quote", ["", '"', "'"], ids=["bare", "double", "single"])
def test_the_rule_reads_each_boolean_as_gandi_vm_does(quote):
    """Agreement with config.py for every accepted spelling, quoted or not, and for refused
    values (the default: onlined). Pins that the rule's lists are config.py's sets."""
    for key, attribute, decide in (
            ("CONFIG_CPU_HOTPLUG", "cpu_hotplug", rule_onlines_cpu),
            ("CONFIG_MEMORY_HOTPLUG", "memory_hotplug", lambda files: rule_zone(files) is not None)):
        for value in BOOLEANS + REFUSED:
            text = f"{key}={quote}{value}{quote}\n"
            expected = getattr(config.parse(text, DEFAULT_FILE), attribute)
            assert decide({DEFAULT_FILE: text}) is expected, text


@pytest.mark.parametrize("quote", ["", '"', "'"], ids=["bare", "double", "single"])
def test_the_rule_reads_the_zone_as_gandi_vm_does(quote):
    for value in ZONE_VALUES:
        text = f"CONFIG_MEMORY_ZONE={quote}{value}{quote}\n"
        assert rule_zone({DEFAULT_FILE: text}) == config.parse(text, DEFAULT_FILE).memory_zone, text


@pytest.mark.parametrize("files", [{}, {DEFAULT_FILE: ""}, {DEFAULT_FILE: "# nothing set\n"}],
                         ids=["no file", "empty", "comment"])
def test_defaults_without_the_keys_online_into_the_default_zone(files):
    assert rule_onlines_cpu(files) and rule_zone(files) == "online" == Settings().memory_zone


def test_the_shipped_configuration_file_reads_the_same_in_udev():
    shipped = (REPO / "etc/default/gandi").read_text()
    assert rule_onlines_cpu({DEFAULT_FILE: shipped}) and rule_zone({DEFAULT_FILE: shipped}) == "online"
    settings = config.parse(shipped, DEFAULT_FILE)
    keys = [udev_property(line) for line in shipped.splitlines()]
    read = {key: value for key, value in filter(None, keys)}
    assert read["CONFIG_CPU_HOTPLUG"] == str(int(settings.cpu_hotplug))
    assert read["CONFIG_MEMORY_HOTPLUG"] == str(int(settings.memory_hotplug))
    assert read["CONFIG_MEMORY_ZONE"] == settings.memory_zone


def test_the_first_configuration_file_that_exists_is_read_as_gandi_vm_reads_it():
    off = "CONFIG_CPU_HOTPLUG=0\nCONFIG_MEMORY_ZONE=online_kernel\n"
    assert not rule_onlines_cpu({SYSCONFIG_FILE: off}), "the RHEL path alone"
    assert rule_zone({SYSCONFIG_FILE: off}) == "online_kernel"
    # Both exist: /etc/default/gandi only, as config.load() reads it.
    assert rule_onlines_cpu({DEFAULT_FILE: "CONFIG_NETWORK=1\n", SYSCONFIG_FILE: off})
    assert not rule_onlines_cpu({DEFAULT_FILE: off, SYSCONFIG_FILE: "CONFIG_CPU_HOTPLUG=1\n"})
    event = hot_add("cpu", OFFLINE_CPU, {DEFAULT_FILE: off, SYSCONFIG_FILE: off})
    assert event.imported == [DEFAULT_FILE]


def test_the_last_line_of_a_key_wins_in_both():
    text = "CONFIG_CPU_HOTPLUG=0\nCONFIG_CPU_HOTPLUG=yes\nCONFIG_MEMORY_ZONE=online_kernel\n" \
           "CONFIG_MEMORY_ZONE=online_movable\n"
    settings = config.parse(text, DEFAULT_FILE)
    assert rule_onlines_cpu({DEFAULT_FILE: text}) is settings.cpu_hotplug is True
    assert rule_zone({DEFAULT_FILE: text}) == settings.memory_zone == "online_movable"


def test_the_imported_keys_are_dropped_after_the_decision():
    """IMPORT{file} makes every key a device property; udev would keep them in its database
    and send them with the device's events. Every key gandi-vm knows is dropped."""
    every_key = "".join(f"{key}=x\n" for key in config.KEYS)
    for subsystem, attrs in (("cpu", OFFLINE_CPU), ("memory", {"state": "offline"})):
        event = hot_add(subsystem, attrs, {DEFAULT_FILE: every_key})
        assert event.imported == [DEFAULT_FILE]
        assert set(event.env) <= {"SYSTEMD_WANTS"}, event.env
    text = SHIPPED_RULES.read_text()
    assert sorted(re.findall(r'ENV\{(\w+)\}=""', text)) == sorted(config.KEYS)


@pytest.mark.parametrize("subsystem, attrs", [
    ("cpu", {"online": "1"}), ("cpu", {}), ("memory", {"state": "online"}),
    ("memory", {"state": "going-offline"}), ("memory", {}), ("memory", {"state": "online_movable"}),
], ids=["cpu online", "cpu0", "block online", "going offline", "no state", "block in a zone"])
def test_a_device_not_offline_is_left_alone_and_the_file_not_read(subsystem, attrs):
    """Coldplug at boot replays every vCPU and block, all online: no decision, no import. A block
    the kernel onlined itself (auto_online_blocks) reads online by the time udevd sees it."""
    event = hot_add(subsystem, attrs, {DEFAULT_FILE: "CONFIG_MEMORY_ZONE=online_kernel\n"})
    assert (event.written, event.imported) == ([], [])


@pytest.mark.parametrize("action", ["change", "remove", "bind", "unbind", "online", "offline", "move"])
def test_only_add_events_do_anything(action):
    for subsystem, attrs in (("cpu", OFFLINE_CPU), ("memory", {"state": "offline"})):
        event = UdevEvent(subsystem, attrs, {}, action=action).run(SHIPPED_RULES.read_text())
        assert (event.written, event.env, event.tags) == ([], {}, [])


def test_every_vcpu_add_wants_the_retune_unit_whatever_the_configuration():
    for attrs in (OFFLINE_CPU, {"online": "1"}, {}):
        event = hot_add("cpu", attrs, {DEFAULT_FILE: "CONFIG_CPU_HOTPLUG=0\n"})
        assert (event.tags, event.env) == (["systemd"], {"SYSTEMD_WANTS": RETUNE_UNIT.name})
    assert hot_add("memory", {"state": "offline"}, {}).tags == []


@pytest.mark.parametrize("line", [
    "export CONFIG_CPU_HOTPLUG=0",  # udev's key is "export CONFIG_CPU_HOTPLUG"
    "CONFIG_CPU_HOTPLUG=0 # no hotplug",  # udev's value is "0 # no hotplug"
    "CONFIG_CPU_HOTPLUG=\\0",  # the shell's 0, udev's \0
])
def test_lines_udev_reads_differently_are_why_the_file_says_plain_key_value(line):
    """What etc/default/gandi warns about: udev reads such a line otherwise than gandi-vm (which
    takes the shell's meaning): the rule onlines the vCPU, `cpu online-all` would not."""
    assert config.parse(line + "\n", DEFAULT_FILE).cpu_hotplug is False
    assert rule_onlines_cpu({DEFAULT_FILE: line + "\n"})
    assert "read by udev too" in (REPO / "etc/default/gandi").read_text()


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
    assert "ethtool" not in host.programs(), "queues are tuned once the address is there"
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
    """(systemd's prefix characters, gandi-vm's arguments) of an Exec line: gandi-vm itself, or
    the units' gate, which runs gandi-vm with its arguments (in the resident agent or by exec)."""
    prefix = re.match(r"[-@:+!]*", command).group(0)
    argv = shlex.split(command[len(prefix):])
    assert argv[0] in ("/usr/bin/gandi-vm", "/usr/libexec/gandi-vm/unit-gate"), command
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
    lines = udev_rule_lines(text)
    keys = {(key, attr, op) for line in lines for key, attr, op, _ in line}
    # Matches, the two files imported, attribute and property assignments: no process at all.
    assert {key for key, _, _ in keys} <= {"ACTION", "SUBSYSTEM", "TEST", "ATTR", "ENV", "IMPORT",
                                          "TAG", "GOTO", "LABEL"}
    assert {attr for key, attr, _ in keys if key == "IMPORT"} == {"file"}
    imported = [value for line in lines for key, _, _, value in line if key == "IMPORT"]
    assert imported == list(config.DEFAULT_PATHS)
    assert lines[0] == ACTION_FILTER, "filter on ACTION first: bind/unbind/online/offline events too"
    assert lines[-1] == END_LABEL
    assert re.findall(r'SYSTEMD_WANTS}\+="([^"]+)"', text) == [RETUNE_UNIT.name]
    assert RETUNE_UNIT.is_file()
    assigned = {attr for key, attr, op in keys if key == "ATTR" and op == "="}
    assert assigned == {"online", "state"}


def test_boot_unit_is_one_mount_all_process():
    """gandi-mount.service's boot job is one command (in the agent, no interpreter start of its
    own): mount-all onlines, then mounts."""
    steps = [(prefix, " ".join(args)) for prefix, args in map(gandi_vm_args, exec_starts(MOUNT_UNIT))]
    assert steps == [("", "mount-all")]


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
