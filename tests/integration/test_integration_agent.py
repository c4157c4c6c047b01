"""The resident agent for real: `python3 -m gandi_vm agent` serving its FIFO (passed as fd 3 with
LISTEN_FDS, as gandi-agent.socket does), and the real units' gate (GANDI_ROOT=ROOT) driving a
real `disk attach` and `disk detach` of a loop device through it, checked in the mount table.

The agent runs chrooted in ROOT rather than with `--root ROOT`: the kernel's mount table
(/proc/self/mountinfo) names mountpoints relative to the reading process's root, so only a
chrooted agent sees its mount as /srv/data, which detach looks for; under --root it would read
ROOT/srv/data and find nothing of its own to unmount. ROOT holds its own /etc/default/gandi
(CONFIG_DISK_ROOT=/srv, that loop device only), /run and a plain-file sys/fs/cgroup (the worker
joins the gate's cgroup there, never in the host's cgroup tree); the host's /usr, /dev, /proc,
this checkout and the block parts of /sys are bind-mounted into it, so that the loop device's
sysfs links resolve inside ROOT. Every mount is under tmp_path, which the `env` fixture unmounts
(the binds, and the disk if a test failed before its detach) before it detaches the loop device.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from gandi_integration import REPO, TOOL_PATH, Env, require, sh

GATE = REPO / "systemd" / "unit-gate"
TIMEOUT = 120  # seconds: an attach runs e2fsck and mount
# The parts of /sys a disk's facts are read from, and where its links lead.
SYSFS_BINDS = ("class", "devices", "block", "dev")


class Agent:
    """The real agent, in its own session so that the finalizer ends it with its workers."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log
        fifo = root / "run/gandi/agent/requests"
        # systemd holds the FIFO open for as long as the socket listens: a request written
        # while the agent starts waits in it.
        self.held = os.open(fifo, os.O_RDWR)
        script = ('exec 3<>/run/gandi/agent/requests; '
                  'LISTEN_FDS=1 LISTEN_PID=$$ exec "$PYTHON" -m gandi_vm agent')
        env = {"PATH": TOOL_PATH, "LC_ALL": "C", "PYTHONPATH": str(REPO),
               "PYTHON": sys.executable}
        with open(log, "wb") as out:
            self.process = subprocess.Popen(["chroot", str(root), "sh", "-c", script], env=env,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                            start_new_session=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while "gandi: agent: ready" not in self.log.read_text():
            assert self.process.poll() is None, f"the agent exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"the agent is not ready: {self.log.read_text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=TIMEOUT)
        os.close(self.held)


@pytest.fixture
def guest(env: Env) -> Iterator[Path]:
    """ROOT, as described above; its binds are unmounted by env's cleanup (all of tmp_path)."""
    require("chroot")
    root = env.tmp / "guest"
    binds = ["/usr", "/dev", "/proc", str(REPO), *(f"/sys/{part}" for part in SYSFS_BINDS)]
    for directory in ("run/gandi/agent", "run/gandi/lock", "etc/default", "srv", *binds):
        (root / directory.lstrip("/")).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{link}"):  # merged /usr: the same links as the host's
            (root / link).symlink_to(os.readlink(f"/{link}"))
        elif os.path.isdir(f"/{link}"):
            binds.append(f"/{link}")
            (root / link).mkdir()
    os.mkfifo(root / "run/gandi/agent/requests", 0o600)
    (root / "etc/fstab").write_text("")
    (root / "etc/mtab").symlink_to("../proc/self/mounts")
    for path in binds:
        sh("mount", "--bind", path, root / path.lstrip("/"))
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if controllers == "name=systemd" or hierarchy == "0" and not controllers:
            cgroup = root / "sys/fs/cgroup" / ("systemd" if controllers else "") / path.lstrip("/")
            cgroup.mkdir(parents=True, exist_ok=True)
            (cgroup / "cgroup.procs").write_text("")
    yield root


@pytest.fixture
def agent(guest: Path, env: Env) -> Iterator[Agent]:
    running = Agent(guest, env.tmp / "agent.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def gate(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The units' gate as systemd runs it, rooted; a gandi-vm it exec'd instead of asking the
    agent would leave its arguments in ROOT/exec.log."""
    stand_in = root / "gandi-vm"
    stand_in.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >>"$GANDI_ROOT/exec.log"\nexit 99\n')
    stand_in.chmod(0o755)
    env = {"PATH": TOOL_PATH, "LC_ALL": "C", "GANDI_ROOT": str(root), "GANDI_VM": str(stand_in)}
    return subprocess.run(["sh", str(GATE), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


def joined(root: Path) -> List[str]:
    return [p.read_text() for p in sorted((root / "sys/fs/cgroup").rglob("cgroup.procs"))
            if p.read_text()]


def test_a_disk_attached_and_detached_through_the_agent(env, guest, agent):
    disk = env.disk("ext4", label="data")
    (guest / "etc/default/gandi").write_text(
        f"CONFIG_DISK_ROOT=/srv\nCONFIG_DISK_DEVICES={disk.name}\nCONFIG_GROW_ROOT=0\n"
        f"GANDI_HOOK_DIR=/etc/gandi/hooks\n")
    mountpoint = guest / "srv/data"

    attach = gate(guest, "disk", "attach", disk.name)

    assert attach.returncode == 0, (attach, agent.log.read_text())
    assert f"gandi: disk {disk.name}: mounted" in attach.stdout, attach.stdout
    assert attach.stderr == ""
    [mount] = env.mounts(disk.name)
    assert (mount.target, mount.fstype) == (str(mountpoint), "ext4")
    assert {"nosuid", "nodev", "noatime"} <= mount.option_set, mount.options
    assert (guest / f"run/gandi/disk/{disk.name}.json").is_file()  # the rooted record
    assert len(joined(guest)) == 1  # the worker went into the gate's (fake) cgroup
    assert replies_removed(guest)

    detach = gate(guest, "disk", "detach", disk.name)

    assert detach.returncode == 0, (detach, agent.log.read_text())
    assert f"gandi: disk {disk.name}: unmounted: unmounted from /srv/data" in detach.stdout
    assert env.mounts(disk.name) == [], detach.stdout
    assert not mountpoint.exists()
    assert not (guest / "exec.log").exists()  # both went through the agent
    assert agent.process.poll() is None  # and it is still serving
    assert "Traceback" not in agent.log.read_text() + attach.stdout + detach.stdout


def replies_removed(root: Path) -> bool:
    """True once the supervisors removed the reply FIFOs (just after the gate's answer)."""
    deadline = time.monotonic() + 10
    while sorted(os.listdir(root / "run/gandi/agent")) != ["requests"]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
