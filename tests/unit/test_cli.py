"""The command line on a fake tree under --root: exit codes, one-line errors, parseable output.

Nothing is executed: gandi_vm.host's subprocess.run is replaced by canned answers (blkid,
e2fsck, mount) so that Host itself, dry-run included, runs unchanged."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from fakesys import add_disk, blkid_udev, system

from gandi_vm import __version__, cli

ROOT = "/vm"


class Commands:
    """Stand-in for subprocess.run: records argv, answers from `answers[program]`."""

    def __init__(self):
        self.argv = []
        self.answers = {"blkid": (2, ""), "e2fsck": (0, ""), "mount": (0, "")}

    def __call__(self, argv, **kwargs):
        self.argv.append(list(argv))
        code, out = self.answers.get(os.path.basename(argv[0]), (127, ""))
        return subprocess.CompletedProcess(argv, code, out, "")

    def programs(self):
        return [os.path.basename(a[0]) for a in self.argv]


@pytest.fixture
def commands(monkeypatch):
    fake = Commands()
    monkeypatch.setattr("subprocess.run", fake)
    return fake


@pytest.fixture
def vm(fs, commands):
    system(fs, root=ROOT)
    add_disk(fs, "vdb", "253:16", 2097152, root=ROOT)
    commands.answers["blkid"] = (0, blkid_udev("ext4", label="data", uuid="1111-2222"))
    return commands


def snapshot(top=ROOT):
    found = set()
    for directory, dirs, files in os.walk(top):
        found.update(os.path.join(directory, n) for n in dirs + files)
    return found


def test_unknown_device_is_a_one_line_error(vm, capsys):
    code = cli.main(["--root", ROOT, "--dry-run", "disk", "attach", "vdz"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.splitlines() == ["gandi: error: vdz: no such block device"]
    assert "Traceback" not in err
    assert vm.argv == []


@pytest.mark.parametrize("dev", ["../../etc/passwd", "/etc/passwd", "a/b"])
def test_hostile_device_arguments_are_refused(vm, capsys, dev):
    assert cli.main(["--root", ROOT, "disk", "attach", dev]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert vm.argv == []


def test_dry_run_attach_prints_the_plan_and_changes_nothing(vm, capsys):
    before = snapshot()
    assert cli.main(["--root", ROOT, "--dry-run", "disk", "attach", "vdb"]) == 0
    out = capsys.readouterr().out
    assert f"would run mount -t ext4 -o rw,nosuid,nodev,noatime {ROOT}/dev/vdb {ROOT}/srv/data" \
        in out.splitlines()
    assert "would mkdir -m 0755 /srv/data (owner root:root)" in out.splitlines()
    assert snapshot() == before
    assert vm.programs() == ["blkid"]
    assert vm.argv[0] == ["blkid", "-p", "-o", "udev", f"{ROOT}/dev/vdb"]


def test_global_options_after_the_subcommand(vm, capsys):
    before = snapshot()
    assert cli.main(["disk", "attach", "vdb", "--root", ROOT, "--dry-run"]) == 0
    assert "would run mount" in capsys.readouterr().out
    assert snapshot() == before


def test_attach_for_real_under_a_root(vm, capsys):
    assert cli.main(["disk", "--root", ROOT, "attach", "/dev/vdb"]) == 0
    assert vm.programs() == ["blkid", "e2fsck", "mount"]
    assert os.path.isdir(f"{ROOT}/srv/data")
    assert os.path.isfile(f"{ROOT}/run/gandi/disk/vdb.json")
    assert "disk vdb: mounted" in capsys.readouterr().err


def test_a_failed_attach_exits_1(vm, capsys):
    vm.answers["e2fsck"] = (4, "")
    assert cli.main(["--root", ROOT, "disk", "attach", "vdb"]) == 1
    err = capsys.readouterr().err
    assert "gandi: error: disk vdb: failed: not mounted" in err
    assert "mount" not in vm.programs()


def test_a_skip_exits_0(vm, capsys):
    assert cli.main(["--root", ROOT, "disk", "attach", "vda"]) == 0
    assert "skipped" in capsys.readouterr().err


def test_detach_with_nothing_to_do(vm, capsys):
    assert cli.main(["--root", ROOT, "disk", "detach", "vdq"]) == 0
    assert vm.argv == []


def test_usage_errors_exit_2(vm, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--root", ROOT, "disk", "attach"])
    assert exit.value.code == 2
    with pytest.raises(SystemExit) as exit:
        cli.main(["frobnicate"])
    assert exit.value.code == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"gandi-vm {__version__}"


def test_explicit_config_is_used_and_its_problems_reported(vm, fs, capsys):
    fs.create_file("/tmp/gandi.conf", contents="CONFIG_ALLOW_MOUNT=maybe\nCONFIG_DISK_ROOT=/mnt\n")
    assert cli.main(["--root", ROOT, "--config", "/tmp/gandi.conf", "--dry-run",
                     "disk", "attach", "vdb"]) == 0
    captured = capsys.readouterr()
    assert "gandi: error: /tmp/gandi.conf:1: CONFIG_ALLOW_MOUNT='maybe'" in captured.err
    assert "would mkdir -m 0755 /mnt/data (owner root:root)" in captured.out


def test_status_yaml_parses(vm, fs, capsys):
    add_disk(fs, "vdc", "253:32", 4096, root=ROOT)
    vm.answers["blkid"] = (0, blkid_udev("ext4", label="we\\x27ird\\x0a: {label}"))
    assert cli.main(["--root", ROOT, "status", "--format", "yaml"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    rows = {row["device"]: row for row in data["disks"]}
    assert sorted(rows) == ["vda", "vda1", "vdb", "vdc"]
    assert rows["vdc"]["size"] == 4096 * 512
    assert rows["vdc"]["state"] == "not handled"
    assert rows["vdc"]["label"] == repr("we'ird\n: {label}")
    assert rows["vda1"]["mountpoint"] == "/"
    assert set(rows["vdb"]) == {"device", "size", "fstype", "label", "mountpoint", "state",
                                "reason"}
    assert data["growth"] == [{"mountpoint": "/", "device": None, "disk": None, "disk_size": None,
                               "partition_end": None, "filesystem_size": None, "left": 0,
                               "state": "refused", "reason": "no ext4 superblock"}]


def test_status_after_attach_and_unplug(vm, fs, capsys):
    assert cli.main(["--root", ROOT, "disk", "attach", "vdb"]) == 0
    os.unlink(f"{ROOT}/sys/class/block/vdb")
    capsys.readouterr()
    assert cli.main(["--root", ROOT, "status", "--format", "yaml"]) == 0
    rows = {row["device"]: row for row in yaml.safe_load(capsys.readouterr().out)["disks"]}
    assert rows["vdb"]["state"] == "gone"
    assert rows["vdb"]["fstype"] == "ext4"


def test_status_text_is_a_table(vm, capsys):
    assert cli.main(["--root", ROOT, "status"]) == 0
    disks, _, rest = capsys.readouterr().out.partition("\n\n")
    lines = disks.splitlines()
    assert lines[0].split() == ["DEVICE", "SIZE", "FSTYPE", "LABEL", "MOUNTPOINT", "STATE",
                                "REASON"]
    assert rest.splitlines()[0].startswith("CPUS ")
    assert [line.split()[0] for line in lines[1:]] == ["vda", "vda1", "vdb"]
    assert "1.0GiB" in lines[3]
    # After the other sections, the GROW table: one row per CONFIG_GROW_MOUNTPOINTS (here `/`,
    # whose vda1 holds no superblock in this fake tree).
    *_, growth = rest.rstrip("\n").split("\n\n")
    assert [line.split() for line in growth.splitlines()] == [
        ["GROW", "DISK", "DISK_SIZE", "PARTITION_END", "FILESYSTEM_SIZE", "LEFT", "STATE", "REASON"],
        ["/", "-", "-", "-", "-", "0B", "refused", "no", "ext4", "superblock"]]


# -- the agent ------------------------------------------------------------------------------------
@pytest.mark.parametrize("listen", [{}, {"LISTEN_FDS": "1", "LISTEN_PID": "1"},
                                    {"LISTEN_FDS": "2", "LISTEN_PID": "self"}],
                         ids=["no LISTEN_FDS", "another process's", "two descriptors"])
def test_the_agent_without_its_fifo_from_systemd_is_one_line_and_exit_2(tmp_path, capsys,
                                                                         monkeypatch, listen):
    for name in ("LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    for name, value in listen.items():
        monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)

    def no_settings(*args):
        raise AssertionError("the agent read the configuration (each worker reads its own)")

    monkeypatch.setattr("gandi_vm.config.load", no_settings)
    assert cli.main(["--root", str(tmp_path), "agent"]) == 2
    assert capsys.readouterr() == ("", "gandi: error: agent: no FIFO from systemd (LISTEN_FDS): "
                                       "started by gandi-agent.socket only\n")
    assert list(tmp_path.iterdir()) == []


# -- the last resort -------------------------------------------------------------------------------
def _broken(args, host, settings):
    raise KeyError("no such\nkey")


def _break(monkeypatch, *words):
    monkeypatch.setitem(cli.COMMANDS, words, cli.Command(lambda: _broken))


def test_a_bug_in_a_command_is_one_line_naming_it_and_exit_1(vm, capsys, monkeypatch):
    _break(monkeypatch, "cpu", "online-all")
    assert cli.main(["--root", ROOT, "cpu", "online-all"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gandi: error: cpu online-all: internal error: KeyError: \"'no such\\\\nkey'\""]


def test_verbose_keeps_the_traceback_of_a_bug(vm, capsys, monkeypatch):
    _break(monkeypatch, "status")
    assert cli.main(["--root", ROOT, "-v", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gandi: error: status: internal error: KeyError: ")
    assert "Traceback (most recent call last):" in err and "in _broken" in err


def test_a_bug_while_reading_the_configuration_is_caught_too(vm, fs, capsys, monkeypatch):
    fs.create_file(f"{ROOT}/etc/default/gandi", contents="CONFIG_ALLOW_MOUNT=1\n")
    monkeypatch.setattr("gandi_vm.config.parse", lambda text, source: 1 / 0)
    assert cli.main(["--root", ROOT, "config", "list"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "gandi: error: config list: internal error: ZeroDivisionError: 'division by zero'"]


# -- the fast parser reads what argparse reads -------------------------------------------------------
TOKENS = ["disk", "attach", "detach", "resize", "iface", "lease", "attach-all", "retune", "cpu",
          "memory", "online-all", "config", "list", "apply", "status", "mount-all", "grow", "agent",
          "hotplug-rules", "early-boot", "vdb", "BOUND", "", "--root", "/r", "--root=/s", "--root=",
          "--dry-run", "--dry-run=1", "--config", "/c", "--config=/d", "-v", "--verbose", "-vv",
          "--only", "ssh", "--only=motd", "--format", "yaml", "json", "--format=text", "--batch",
          "--", "-", "-x", "--ro", "--dry", "-h", "--help", "--version"]


def _by_argparse(argv):
    """What argparse makes of argv (None: a usage error, help or version, i.e. SystemExit)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            namespace = vars(cli._parser().parse_args(argv))
    except SystemExit:
        return None
    words = tuple(namespace.pop(key) for key in ("command", "action") if key in namespace)
    return vars(cli.Arguments(words, namespace))


def _inserted(words, tokens, positions):
    argv = list(words)
    for token, position in zip(tokens, positions):
        argv.insert(position % (len(argv) + 1), token)
    return argv


# A command's words with tokens inserted anywhere (most of them near what units give), and any
# list of tokens at all.
COMMAND_LINES = st.one_of(
    st.builds(_inserted, st.sampled_from(sorted(cli.COMMANDS)),
              st.lists(st.sampled_from(TOKENS), max_size=5), st.lists(st.integers(0, 8), max_size=5)),
    st.lists(st.sampled_from(TOKENS), max_size=7))


@settings(max_examples=2000, deadline=None)
@given(COMMAND_LINES)
def test_what_the_fast_parser_accepts_argparse_reads_the_same(argv):
    fast = cli._fast_parse(argv)
    if fast is not None:
        assert vars(fast) == _by_argparse(argv), argv


@pytest.mark.parametrize("argv", [
    ["disk", "attach", "vdb"], ["--root", "/r", "disk", "--dry-run", "attach", "vdb", "-v"],
    ["disk", "attach", "--batch", "vdb"], ["--root=/r", "status", "--format", "yaml"],
    ["config", "apply", "--only=ssh"], ["iface", "lease"], ["iface", "lease", "--dry-run", "BOUND"],
    ["mount-all", "--config", "/c"], ["memory", "online-all"], ["iface", "attach-all"], ["agent"]])
def test_the_command_lines_units_and_scripts_give_never_load_argparse(argv):
    # A unit's, udev's or the DHCP client's command line: the fast parser takes it whole.
    assert vars(cli._fast_parse(argv)) == _by_argparse(argv)


@pytest.mark.parametrize("argv", [["disk", "attach"],
                                  ["--dry", "status"], ["status", "--format", "json"], ["-h"],
                                  ["config", "--only", "ssh", "apply"], ["early-boot"],
                                  ["agent", "vdb"], ["agent", "--only", "ssh"]])
def test_what_it_does_not_take_exactly_goes_to_argparse(argv):
    assert cli._fast_parse(argv) is None
