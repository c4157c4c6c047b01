"""The real program (`python3 -m gandi_vm`, a process of its own, its own stdout and stderr) on a
few fixed garbage guests: an answer and an exit status, never a traceback, and the tree unchanged.

Only --dry-run and read-only commands, on a tree with no disk and no interface: nothing the
program could run (blkid, ip, mount) has anything of this host to act on. The generated cases,
run in process, are in test_props_online_config.py."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parents[2]
CPU_DIR = "sys/devices/system/cpu"
MEMORY_DIR = "sys/devices/system/memory"

GARBAGE_CONFIG = (b"CONFIG_CPU_HOTPLUG=1\x00\n"          # NUL
                  b"CONFIG_DISK_ROOT=/srv/\xff\xfe\n"    # invalid UTF-8
                  b"CONFIG_MEMORY_ZONE=online\xe2\x80\xa8CONFIG_MEMORY_ZONE=x\n"  # U+2028
                  b"CONFIG_TIMEZONE_NAME='Europe/Paris\n"  # unbalanced quote
                  b"export\nexport CONFIG_MOTD=0 CONFIG_CRON=0\n"
                  b"CONFIG_FSCK_TIMEOUT=\xc2\xb2\n"      # a superscript two
                  + b"x" * 100000 + b"\n")
CASES = {
    "superscript": {f"{CPU_DIR}/online": b"0-\xc2\xb2\n", f"{MEMORY_DIR}/block_size_bytes": b"\xc2\xb2\n"},
    "unbounded": {f"{CPU_DIR}/online": b"0-4294967295\n", f"{MEMORY_DIR}/block_size_bytes": b"f" * 5000},
    "binary": {f"{CPU_DIR}/online": b"\x00\xff\n\n", f"{MEMORY_DIR}/block_size_bytes": b"\x80",
               f"{MEMORY_DIR}/memory1/state": b"\xff\n", f"{CPU_DIR}/cpu1/online": b"\x00"},
}
COMMANDS = (["status"], ["status", "--format", "yaml"], ["cpu", "online-all", "--dry-run"],
            ["memory", "online-all", "--dry-run"], ["config", "list"], ["mount-all", "--dry-run"],
            ["iface", "attach-all", "--dry-run"], ["grow", "--dry-run"],
            ["disk", "resize", "vda:123", "--dry-run"])


def fingerprint(root: Path) -> Dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in root.rglob("*")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_program_on_a_garbage_guest(tmp_path, case):
    files = {**CASES[case], "etc/default/gandi": GARBAGE_CONFIG, f"{MEMORY_DIR}/memory0/state": b"online\n"}
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)
    before = fingerprint(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8"}
    env.pop("JOURNAL_STREAM", None)
    for argv in COMMANDS:
        done = subprocess.run([sys.executable, "-m", "gandi_vm", "--root", str(tmp_path), *argv],
                              capture_output=True, env=env, timeout=60, check=False)
        err = done.stderr.decode("utf-8", "replace")
        assert done.returncode in (0, 1, 2), (argv, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        assert all(line.startswith("gandi: ") for line in err.splitlines()), (argv, err)
    assert fingerprint(tmp_path) == before


def test_the_agent_outside_systemd_on_a_garbage_guest(tmp_path):
    # The agent reads no configuration (each worker reads its own): the garbage one gives no line.
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/gandi").write_bytes(GARBAGE_CONFIG)
    before = fingerprint(tmp_path)
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID")}
    done = subprocess.run([sys.executable, "-m", "gandi_vm", "--root", str(tmp_path), "agent"],
                          capture_output=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=60,
                          check=False)
    assert (done.returncode, done.stdout, done.stderr.decode()) == (2, b"", (
        "gandi: error: agent: no FIFO from systemd (LISTEN_FDS): started by gandi-agent.socket "
        "only\n"))
    assert fingerprint(tmp_path) == before
