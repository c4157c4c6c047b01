"""Properties on hostile input for the configuration parser, the sysfs numbers of vCPUs and memory,
and the command line. The contract: the module's own error (a problem
naming file:line, a `sysfs.Garbage`, a one-line log), never another exception, never a hang.

Hosts are built over a temporary directory made inside each example (pyfakefs's function-scoped
`fs` would be shared by every example Hypothesis runs)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import subprocess
import tempfile
from typing import Dict, Iterator, List, Tuple
from unittest import mock

from fakesys import cpu_ranges, ext4_superblock, gpt
from hypothesis import given
from hypothesis import strategies as st

from gandi_vm import cli, config, cpu, memory, net, netstack, online, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Host, lines

SRC = "/etc/default/gandi"
ZONES = ("online", "online_movable", "online_kernel")

# Pieces a hostile or broken file is made of: the separators str.splitlines() would honour,
# NUL, undecodable bytes (lone surrogates, as read_text gives them), quotes, shell syntax, and
# the Unicode digits int() takes but the kernel never prints.
TRICKY = st.sampled_from(["\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\x00", "\udcff", "'", '"',
                          "\\", "#", "$(", "`", "=", " ", "\t", "-", ",", "/", "..", "\u00b2", "\u0663",
                          "0x", "_", "+", "export "])
FRAGMENT = st.one_of(st.text(max_size=6), TRICKY, st.sampled_from(sorted(config.KEYS)),
                     st.sampled_from(["1", "0", "yes", "/srv", "online_movable", "vd*", "30"]))
LINE = st.lists(FRAGMENT, max_size=8).map("".join)
CONFIG_TEXT = st.one_of(st.lists(LINE, max_size=12).map("\n".join), st.text(max_size=200))


# -- configuration ---------------------------------------------------------------------------------
@given(CONFIG_TEXT)
def test_any_text_gives_settings_and_problems_naming_their_line(text):
    settings = config.parse(text, SRC)
    count = len(lines(text))
    for level, message in settings.problems:
        assert level in (logging.WARNING, logging.ERROR)
        where = re.match(re.escape(SRC) + r":(\d+): ", message)
        assert where and 1 <= int(where.group(1)) <= count, message
        assert "\n" not in message and len(message) < 300, message
    # Whatever was taken passes its own check again: no garbage survives into a setting.
    assert settings.memory_zone in ZONES
    assert 1 <= settings.fsck_timeout <= 86400 and 1 <= settings.dhcp_timeout <= 86400
    assert 1 <= settings.dhcp_retries <= 100
    for path in (settings.disk_root, settings.hook_dir, settings.plugin_dir, settings.sshmgmt_key):
        assert path.startswith("/") and path.isprintable() and ".." not in path.split("/")
    assert all(p.isascii() for p in settings.disk_devices + settings.nodhcp)


@given(st.lists(st.tuples(st.sampled_from(sorted(config.KEYS)), st.text(max_size=20)), max_size=8))
def test_every_line_is_taken_or_reported_once(assignments):
    text = "".join(f"{key}={value}\n" for key, value in assignments)
    settings = config.parse(text, SRC)
    reported = [int(m.split(":")[1]) for _, m in settings.problems]
    assert len(reported) == len(set(reported))  # one problem at most per line


# -- sysfs numbers ---------------------------------------------------------------------------------
NUMBER_TEXT = st.one_of(st.text(max_size=30), st.lists(st.one_of(st.sampled_from("0123456789abcdefx-,"),
                                                                 TRICKY), max_size=30).map("".join))


@given(NUMBER_TEXT, st.sampled_from([10, 16]))
def test_a_number_is_parsed_strictly_or_rejected(text, base):
    try:
        value = sysfs.number(text, base)
    except sysfs.Garbage as e:
        assert "\n" not in str(e)
        return
    assert text.isascii() and 0 <= value < 2 ** 64 and int(text, base) == value


@given(NUMBER_TEXT)
def test_a_cpu_list_is_bounded_or_rejected(text):
    try:
        found = sysfs.cpu_list(text)
    except sysfs.Garbage:
        return
    assert found == sorted(set(found)) and all(0 <= n < sysfs.MAX_CPUS for n in found)


@given(st.sets(st.integers(0, sysfs.MAX_CPUS - 1), max_size=64))
def test_the_kernel_format_round_trips(numbers):
    assert sysfs.cpu_list(cpu_ranges(numbers)) == sorted(numbers)


@given(st.integers(0, 2 ** 64), st.integers(0, 2 ** 64))
def test_a_range_past_nr_cpus_is_garbage_without_allocating(low, high):
    try:
        found = sysfs.cpu_list(f"{low}-{high}")
    except sysfs.Garbage:
        assert high < low or high >= sysfs.MAX_CPUS
    else:
        assert found == list(range(low, high + 1))


def _encoded(text: str) -> bytes:
    """The bytes of a file that read_text gives back as `text` (lone surrogates: invalid UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


ATTRIBUTE = st.one_of(st.binary(max_size=40), NUMBER_TEXT.map(_encoded))
ENTRY = st.one_of(st.sampled_from(["cpu0", "cpu1", "cpu8191", "cpu8192", "cpufreq", "cpu\u0663", "cpu\u00b2",
                                   "cpu01", "memory0", "memory3", "memory\u0661", "memory0x1", "memory-1",
                                   "cpu" + "9" * 200]),
                  st.text(st.characters(blacklist_characters="/\x00"), min_size=1, max_size=12))


@contextlib.contextmanager
def temporary_host(dry_run: bool = False) -> Iterator[Host]:
    with tempfile.TemporaryDirectory() as root:
        yield Host(root, dry_run=dry_run)


def _put(host: Host, guest_path: str, content: bytes) -> None:
    real = host.path(guest_path)
    os.makedirs(os.path.dirname(real), exist_ok=True)
    with open(real, "wb") as f:
        f.write(content)


def _entry(host: Host, directory: str, name: str, attribute: str, content: bytes) -> None:
    try:
        _put(host, f"{directory}/{name}/{attribute}", content)
    except (OSError, UnicodeEncodeError):  # a name this file system cannot hold is no test
        pass


@given(st.dictionaries(st.sampled_from(["online", "present", "possible"]), ATTRIBUTE),
       st.dictionaries(ENTRY, ATTRIBUTE, max_size=6), ATTRIBUTE,
       st.dictionaries(ENTRY, ATTRIBUTE, max_size=6))
def test_cpu_and_memory_facts_from_any_attributes(lists, cpus, block_size, blocks):
    with temporary_host(dry_run=True) as host:
        for name, content in lists.items():
            _put(host, f"{cpu.CPU_DIR}/{name}", content)
        for name, content in cpus.items():
            _entry(host, cpu.CPU_DIR, name, "online", content)
        _put(host, f"{memory.MEMORY_DIR}/block_size_bytes", block_size)
        for name, content in blocks.items():
            _entry(host, memory.MEMORY_DIR, name, "state", content)
        facts = cpu.status(host)
        assert facts["present"] <= len(cpus) and facts["online"] <= facts["present"]
        assert 1 <= cpu.online_count(host) <= sysfs.MAX_CPUS
        state = memory.status(host)
        assert 0 <= state["block_size"] < 2 ** 64 and state["online"] <= len(blocks)
        settings = Settings()
        with contextlib.redirect_stdout(io.StringIO()):  # the dry-run plan
            for outcome in cpu.online_all(host, settings) + memory.online_all(host, settings):
                assert not outcome.failed


# -- the command line on a garbage guest -----------------------------------------------------------
COMMANDS = (["status"], ["status", "--format", "yaml"], ["disk", "attach", "vdb"], ["disk", "detach", "vdb"],
            ["mount-all"], ["iface", "attach", "eth1"], ["iface", "attach-all"], ["cpu", "online-all"],
            ["memory", "online-all"], ["config", "list"], ["config", "apply"],
            ["grow"], ["disk", "resize", "vdb:4194304"], ["disk", "resize", "vda1"])
DISK = "/sys/devices/pci0000:00/virtio2/block/vdb"
VDA = "/sys/devices/pci0000:00/virtio1/block/vda"
NIC = "/sys/devices/pci0000:00/virtio3/net/eth1"
# The files of a small guest, each with a plausible content that the example may replace by garbage.
PLAUSIBLE: Dict[str, bytes] = {
    f"{DISK}/size": b"2097152\n", f"{DISK}/ro": b"0\n", f"{DISK}/dev": b"253:16\n",
    f"{DISK}/removable": b"0\n", "/dev/vdb": bytes(1024) + ext4_superblock(512 << 20),
    # vda, its GPT and vda1 (/) as an image of 10 GiB left them, the disk since grown to 20 GiB
    f"{VDA}/size": b"41943040\n", f"{VDA}/dev": b"253:0\n", f"{VDA}/queue/logical_block_size": b"512\n",
    f"{VDA}/vda1/size": b"20969439\n", f"{VDA}/vda1/start": b"2048\n", f"{VDA}/vda1/partition": b"1\n",
    f"{VDA}/vda1/dev": b"253:1\n", "/dev/vda": gpt(20 << 30),
    "/dev/vda1": bytes(1024) + ext4_superblock(10 << 30),
    f"{NIC}/ifindex": b"3\n", f"{NIC}/address": b"52:54:00:12:34:56\n", f"{NIC}/type": b"1\n",
    f"{NIC}/operstate": b"down\n", f"{NIC}/mtu": b"1500\n",
    "/proc/self/mountinfo": b"22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
                            b"23 22 253:16 / /srv/data rw,nosuid - ext4 /dev/vdb rw\n",
    "/proc/swaps": b"Filename\tType\tSize\tUsed\tPriority\n", "/proc/cmdline": b"root=/dev/vda1 ro\n",
    "/etc/fstab": b"UUID=1111 / ext4 defaults 0 1\n", "/etc/hostname": b"vm\n",
    "/etc/resolv.conf": b"nameserver 192.0.2.1\n", "/etc/hosts": b"127.0.0.1 localhost\n",
    "/etc/network/interfaces": b"auto lo\niface lo inet loopback\n",
    "/etc/ssh/sshd_config": b"PermitRootLogin no\n",
    "/etc/machine-id": b"0123456789abcdef0123456789abcdef\n",
    f"{cpu.CPU_DIR}/online": b"0-1\n", f"{cpu.CPU_DIR}/present": b"0-2\n",
    f"{cpu.CPU_DIR}/cpu1/online": b"1\n", f"{cpu.CPU_DIR}/cpu2/online": b"0\n",
    f"{memory.MEMORY_DIR}/block_size_bytes": b"8000000\n",
    f"{memory.MEMORY_DIR}/auto_online_blocks": b"offline\n",
    f"{memory.MEMORY_DIR}/memory0/state": b"online\n", f"{memory.MEMORY_DIR}/memory1/state": b"offline\n",
    "/run/gandi/disk/vdb.json":
        b'{"fstype": "ext4", "label": "data", "mountpoint": "/srv/data", "ours": true}\n',
    "/run/gandi/iface/eth1.yaml": b"stack: gandi-dhcp\nclient: dhclient\ntable: 1003\n",
    "/usr/sbin/dhclient": b"#!/bin/sh\n",
}
LINKS = {"/sys/class/block/vdb": DISK, "/sys/dev/block/253:16": DISK, "/sys/class/net/eth1": NIC,
         "/sys/class/block/vda": VDA, "/sys/dev/block/253:0": VDA, "/sys/class/block/vda1": f"{VDA}/vda1",
         "/sys/dev/block/253:1": f"{VDA}/vda1",
         f"{NIC}/device": "/sys/devices/pci0000:00/virtio3",
         "/sys/devices/pci0000:00/virtio3/driver": "/sys/bus/virtio/drivers/virtio_net"}
GARBAGE = st.one_of(st.binary(max_size=60), LINE.map(_encoded))
TREE = st.fixed_dictionaries({path: st.one_of(st.just(content), GARBAGE, st.none())
                              for path, content in PLAUSIBLE.items()})
CONFIG_BYTES = st.one_of(CONFIG_TEXT.map(_encoded), st.binary(max_size=200))


class Clock:
    """time for the modules that wait (DHCP settling, retries): sleeping moves it on at once."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# What the commands answer (exit status, output): blkid's probe, ip's JSON and ethtool's channels
# plausible or garbage too; any other command succeeds and prints nothing.
PLAUSIBLE_OUTPUT = {"blkid": "ID_FS_USAGE=filesystem\nID_FS_TYPE=ext4\nID_FS_LABEL=data\nID_FS_UUID=1111\n",
                    "ip": "[]",
                    "ethtool": "Combined:\t4\nCurrent hardware settings:\nCombined:\t1\n"}
OUTPUTS = st.fixed_dictionaries({program: st.tuples(st.sampled_from([0, 0, 1, 2, 127]),
                                                    st.one_of(st.just(text), LINE, st.text(max_size=60)))
                                 for program, text in PLAUSIBLE_OUTPUT.items()})


class Commands:
    """Stands for subprocess.run: nothing of the host is ever run (mount, ip, hostname), so that
    even a run without --dry-run touches only the temporary root."""

    def __init__(self, answers: Dict[str, Tuple[int, str]]):
        self.answers = answers

    def __call__(self, argv, **kwargs) -> subprocess.CompletedProcess:
        code, out = self.answers.get(os.path.basename(argv[0]), (0, ""))
        return subprocess.CompletedProcess(argv, code, out, "")


def _build(root: str, tree: Dict[str, object], config_file: bytes) -> None:
    for path, content in {**tree, "/etc/default/gandi": config_file}.items():
        if content is not None:
            real = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, "wb") as f:
                f.write(content)  # type: ignore[arg-type]
    for link, target in LINKS.items():
        real = os.path.join(root, link.lstrip("/"))
        os.makedirs(os.path.dirname(real), exist_ok=True)
        os.makedirs(os.path.join(root, target.lstrip("/")), exist_ok=True)
        os.symlink(os.path.relpath(target, os.path.dirname(link)), real)


def _fingerprint(root: str) -> Dict[str, Tuple[str, int, str]]:
    """Every entry under root: its kind, mode and content (or link target)."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            real = os.path.join(directory, name)
            st_ = os.lstat(real)
            if os.path.islink(real):
                seen[real] = ("link", st_.st_mode, os.readlink(real))
            elif os.path.isdir(real):
                seen[real] = ("dir", st_.st_mode, "")
            else:
                with open(real, "rb") as f:
                    seen[real] = ("file", st_.st_mode, hashlib.sha256(f.read()).hexdigest())
    return seen


def run_cli(argv: List[str]) -> Tuple[object, str, str]:
    """cli.main in process, with a real stdout's strict UTF-8 and stderr's backslashreplace."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            mock.patch.dict(os.environ, {}, clear=False) as env:
        env.pop("JOURNAL_STREAM", None)
        try:
            code: object = cli.main(argv)
        except SystemExit as e:
            code = e.code
        out.flush()
        err.flush()
    return code, out.buffer.getvalue().decode(), err.buffer.getvalue().decode()  # type: ignore[attr-defined]


def check_cli(root: str, argv: List[str]) -> None:
    code, _, err = run_cli(["--root", root, *argv])
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert all(line.startswith("gandi: ") for line in lines(err)), (argv, err)


@given(TREE, CONFIG_BYTES, OUTPUTS)
def test_every_command_on_a_garbage_guest_is_an_answer_not_a_traceback(tree, config_file, outputs):
    clock = Clock()
    with tempfile.TemporaryDirectory() as root, \
            mock.patch("subprocess.run", Commands(outputs)), \
            mock.patch.object(netstack, "time", clock), mock.patch.object(net, "time", clock), \
            mock.patch.object(online, "time", clock):
        _build(root, tree, config_file)
        before = _fingerprint(root)
        for argv in COMMANDS:
            check_cli(root, [*argv, "--dry-run"])
        assert _fingerprint(root) == before, "a dry run changed the tree"
        for argv in COMMANDS:
            check_cli(root, argv)
        with open(os.path.join(root, "etc/default/gandi"), "rb") as f:
            assert f.read() == config_file
