"""Helpers of the integration tests: real `gandi-vm` runs against real loop devices.

Every test gets an `env` (see `Env`): it makes disk images in tmp_path, attaches them as loop
devices, writes a configuration naming exactly those loop devices (so `mount-all` and `status`
never look at the machine's own disks), runs the CLI as a subprocess, and in teardown unmounts,
detaches and forgets everything it made, whether the test passed or not.

Assertions read the kernel's mount table through findmnt(8) and the file system directly.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = Path("/run/gandi/disk")
SWAP_STATE_DIR = Path("/run/gandi/swap")
CAP_SYS_RESOURCE = 24
MiB = 1024 * 1024
# The sbin directories hold every tool used here; pytest may run from a user PATH without them.
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# tool -> Debian package, for the skip reason
PACKAGES = {
    "losetup": "mount", "mount": "mount", "umount": "mount", "findmnt": "util-linux",
    "partx": "util-linux", "blkid": "util-linux", "unshare": "util-linux",
    "mkfs.ext4": "e2fsprogs", "e2fsck": "e2fsprogs", "debugfs": "e2fsprogs",
    "resize2fs": "e2fsprogs", "mkfs.xfs": "xfsprogs", "xfs_growfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs", "mkswap": "util-linux", "sfdisk": "fdisk",
    "udevadm": "udev", "systemd-analyze": "systemd",
}
BASE_TOOLS = ("losetup", "mount", "umount", "findmnt", "blkid", "mkfs.ext4", "e2fsck")


def which(tool: str) -> Optional[str]:
    return shutil.which(tool, path=TOOL_PATH)


def require(*tools: str) -> None:
    """Skip the calling test when a tool is missing, naming the tool and its package."""
    for tool in tools:
        if which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package {PACKAGES.get(tool, '?')})")


def sh(*argv: Union[str, bytes, Path], check: bool = True,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a setup/teardown command; on failure the exception names the command and its output."""
    env = dict(os.environ, PATH=TOOL_PATH, LC_ALL="C")
    done = subprocess.run([a if isinstance(a, bytes) else str(a) for a in argv], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()}")
    return done


def has_capability(bit: int) -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return False


# -- the mount table, as the kernel reports it ---------------------------------------------------
@dataclass(frozen=True)
class MountEntry:
    target: str
    source: str
    fstype: str
    options: str
    devno: str

    @property
    def option_set(self) -> set:
        return set(self.options.split(","))


def mount_table() -> List[MountEntry]:
    out = sh("findmnt", "-J", "-l", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS,MAJ:MIN").stdout
    return [MountEntry(fs["target"], fs["source"] or "", fs["fstype"], fs["options"] or "",
                       fs["maj:min"])
            for fs in json.loads(out)["filesystems"]]


def devno(name: str) -> str:
    return Path(f"/sys/class/block/{name}/dev").read_text().strip()


def underlying_mode(mountpoint: str) -> str:
    """`mode uid gid` of the directory a filesystem is mounted on (not of the filesystem's root):
    unmount it inside a private mount namespace, so the real mount stays as it is."""
    script = 'umount "$1" && stat -c "%a %u %g" "$1"'
    return sh("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
              mountpoint).stdout.decode().strip()


# -- the program --------------------------------------------------------------------------------
@dataclass
class Run:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")

    def error_lines(self) -> List[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("gandi: error:")]


@dataclass
class Disk:
    name: str  # kernel name: loop3, or loop3p1 for a partition
    image: Path
    loop: str  # the whole loop device this lives on

    @property
    def dev(self) -> str:
        return f"/dev/{self.name}"


class Env:
    """One test's disks, disk root, hook directory and configuration."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.root = tmp_path / "srv"
        self.hooks = tmp_path / "hooks"
        self.config = tmp_path / "gandi.conf"
        self.settings: Dict[str, str] = {}
        self.loops: List[str] = []
        self.names: List[str] = []  # every kernel name the configuration lists
        self._images = 0

    # -- disks ---------------------------------------------------------------------------------
    def image(self, size_mb: int) -> Path:
        self._images += 1
        path = self.tmp / f"disk{self._images}.img"
        with open(path, "wb") as f:
            f.truncate(size_mb * MiB)
        return path

    def attach_loop(self, image: Path, partscan: bool = False, read_only: bool = False) -> str:
        argv = (["losetup", "-f", "--show"] + (["-P"] if partscan else [])
                + (["-r"] if read_only else []) + [str(image)])
        path = sh(*argv).stdout.decode().strip()
        name = os.path.basename(path)
        self.loops.append(name)
        forget_records(name)  # a name reused from an earlier run must start without a record
        return name

    def disk(self, fstype: Optional[str] = None, label: Union[str, bytes, None] = None,
             size_mb: Optional[int] = None,
             prepare: Optional[Callable[[Path], None]] = None, read_only: bool = False) -> Disk:
        """A loop device holding a fresh filesystem (or swap, or zeros when fstype is None);
        `prepare(image)` runs on the image file before it becomes a loop device."""
        size_mb = size_mb or {"xfs": 320, "btrfs": 128}.get(fstype or "", 32)
        image = self.image(size_mb)
        if fstype is not None:
            mkfs(fstype, image, label)
        if prepare is not None:
            prepare(image)
        name = self.attach_loop(image, read_only=read_only)
        self.names.append(name)
        return Disk(name, image, name)

    def partitioned_disk(self, fstype: str, label: Optional[str], size_mb: int = 64) -> Disk:
        """A GPT disk with one partition spanning it; returns the partition (loopNp1)."""
        require("sfdisk", "partx")
        image = self.image(size_mb)
        sh_input(["sfdisk", "-q", str(image)], "label: gpt\n,,L\n")
        loop = self.attach_loop(image, partscan=True)
        part = f"{loop}p1"
        if not wait_for(lambda: os.path.exists(f"/sys/class/block/{part}"), 1.0):
            # Kernels built without CONFIG_EFI_PARTITION ignore `losetup -P`; partx parses the
            # table in user space and adds the partitions with BLKPG.
            sh("partx", "-a", f"/dev/{loop}")
        if not wait_for(lambda: os.path.exists(f"/dev/{part}"), 5.0):
            pytest.fail(f"/dev/{part} did not appear after partx -a /dev/{loop}")
        mkfs(fstype, Path(f"/dev/{part}"), label)
        self.names += [loop, part]
        return Disk(part, image, loop)

    def grow(self, disk: Disk, size_mb: int) -> None:
        """Enlarge the image and tell the loop driver, as a platform grows a virtual disk."""
        with open(disk.image, "r+b") as f:
            f.truncate(size_mb * MiB)
        sh("losetup", "-c", f"/dev/{disk.loop}")

    # -- the program ---------------------------------------------------------------------------
    def write_config(self) -> Path:
        settings = {
            "CONFIG_DISK_ROOT": str(self.root),
            "CONFIG_DISK_DEVICES": " ".join(self.names),
            "GANDI_HOOK_DIR": str(self.hooks),
        }
        settings.update(self.settings)
        text = "".join(f"{key}='{value}'\n" for key, value in settings.items())
        self.config.write_text("# written by tests/integration\n" + text)
        return self.config

    def gandi(self, *args: str, timeout: float = 120) -> Run:
        """Run the real program; a traceback is a bug whatever the exit status."""
        self.write_config()
        argv = [sys.executable, "-m", "gandi_vm", "--config", str(self.config), *args]
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(REPO)
        done = subprocess.run(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        run = Run(argv, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in run.stderr, str(run)
        return run

    def gandi_parallel(self, *commands: Sequence[str], timeout: float = 120) -> List[Run]:
        """Start several runs at once (as udev starts one unit per device) and wait for all."""
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        env["PYTHONPATH"] = str(REPO)
        started = []
        for args in commands:
            argv = [sys.executable, "-m", "gandi_vm", "--config", str(self.config), *args]
            started.append((argv, subprocess.Popen(argv, cwd=REPO, env=env,
                                                   stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                   text=True)))
        runs = []
        for argv, process in started:
            try:
                out, err = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
            runs.append(Run(argv, process.returncode, out, err))
        for run in runs:
            assert "Traceback" not in run.stderr, str(run)
        return runs

    def status(self) -> Dict[str, dict]:
        run = self.gandi("status", "--format", "yaml")
        assert run.returncode == 0, str(run)
        rows = yaml.safe_load(run.stdout)["disks"]
        return {row["device"]: row for row in rows}

    # -- facts ---------------------------------------------------------------------------------
    def mounts(self, name: str) -> List[MountEntry]:
        """Where the kernel has this device mounted. btrfs shows an anonymous device number
        (0:NN) in the mount table, so the source path counts too."""
        number = devno(name)
        return [m for m in mount_table() if m.devno == number or m.source == f"/dev/{name}"]

    def our_mounts(self) -> List[tuple]:
        """The part of the mount table these tests may change: our devices, or under tmp_path."""
        numbers = {devno(n) for n in self.names if os.path.exists(f"/sys/class/block/{n}")}
        sources = {f"/dev/{n}" for n in self.names}
        tmp = str(self.tmp)
        return sorted((m.target, m.devno, m.fstype, m.options) for m in mount_table()
                      if m.devno in numbers or m.source in sources
                      or m.target == tmp or m.target.startswith(tmp + "/"))

    def inside_root(self, path: str) -> bool:
        real_root = os.path.realpath(self.root)
        return os.path.realpath(path).startswith(real_root + "/")

    # -- teardown ------------------------------------------------------------------------------
    def cleanup(self) -> List[str]:
        """Undo everything, whatever state the test left; returns what could not be undone."""
        problems: List[str] = []
        numbers, sources = set(), set()
        for loop in self.loops:
            for node in glob.glob(f"/sys/class/block/{loop}") + glob.glob(
                    f"/sys/class/block/{loop}/{loop}p*"):
                sources.add("/dev/" + os.path.basename(node))
                with contextlib.suppress(OSError):
                    numbers.add(Path(node, "dev").read_text().strip())
        tmp = str(self.tmp)
        for _ in range(3):
            stale = [m.target for m in mount_table()
                     if m.devno in numbers or m.source in sources
                     or m.target == tmp or m.target.startswith(tmp + "/")]
            if not stale:
                break
            for target in sorted(stale, key=len, reverse=True):  # deepest first
                if sh("umount", target, check=False).returncode != 0:
                    sh("umount", "-l", target, check=False)
        else:
            problems.append(f"still mounted: {stale}")
        for loop in reversed(self.loops):
            swapoff_loop(loop, problems)
            if glob.glob(f"/sys/class/block/{loop}/{loop}p*"):
                sh("partx", "-d", f"/dev/{loop}", check=False)
            done = sh("losetup", "-d", f"/dev/{loop}", check=False)
            if done.returncode != 0:
                problems.append(f"losetup -d /dev/{loop}: {done.stderr.decode().strip()}")
            forget_records(loop)
        return problems


def swapoff_loop(loop: str, problems: List[str]) -> None:
    """Turn off the swap areas a test enabled on this loop device or its partitions."""
    for path in swaps():
        name = path[len("/dev/"):] if path.startswith("/dev/") else ""
        if name == loop or name.startswith(loop + "p"):
            done = sh("swapoff", path, check=False)
            if done.returncode != 0:
                problems.append(f"swapoff {path}: {done.stderr.decode().strip()}")


def swaps() -> List[str]:
    with open("/proc/swaps", encoding="utf-8") as f:
        return [line.split()[0] for line in f.read().split("\n")[1:] if line.strip()]


def forget_records(loop: str) -> None:
    for path in [SWAP_STATE_DIR / f"{loop}.json", *SWAP_STATE_DIR.glob(f"{loop}p*.json")]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    for path in [STATE_DIR / f"{loop}.json", *STATE_DIR.glob(f"{loop}p*.json")]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def mkfs(fstype: str, target: Path, label: Union[str, bytes, None]) -> None:
    tool = {"ext4": "mkfs.ext4", "xfs": "mkfs.xfs", "btrfs": "mkfs.btrfs", "swap": "mkswap"}[fstype]
    require(tool)
    force = {"ext4": "-F", "xfs": "-f", "btrfs": "-f", "swap": "-f"}[fstype]
    argv: List[Union[str, bytes, Path]] = [tool, force] + ([] if fstype == "swap" else ["-q"])
    if label is not None:
        argv += ["-L", label]
    sh(*argv, target)


def sh_input(argv: Sequence[str], text: str) -> None:
    env = dict(os.environ, PATH=TOOL_PATH, LC_ALL="C")
    done = subprocess.run(list(argv), input=text, env=env, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# -- damaged ext4 images ---------------------------------------------------------------------
def damage(image: Path, *requests: str) -> None:
    """Apply debugfs requests, then mark the filesystem as not cleanly unmounted so that
    `e2fsck -p` checks it instead of trusting the clean flag."""
    require("debugfs")
    for request in (*requests, "ssv state 0"):
        sh("debugfs", "-w", "-R", request, image)


def e2fsck_p_exit(image: Path) -> int:
    """What `e2fsck -p` says about this image, measured on a copy (the original stays damaged)."""
    copy = image.with_suffix(".copy")
    shutil.copyfile(image, copy)
    try:
        return sh("e2fsck", "-p", copy, check=False).returncode
    finally:
        copy.unlink()


def repairable(image: Path) -> None:
    damage(image, "ssv free_blocks_count 1")
    if e2fsck_p_exit(image) != 1:
        pytest.fail("test setup: e2fsck -p should repair a wrong free blocks count (exit 1)")


def unrepairable(image: Path) -> None:
    damage(image, "clri <2>")  # the root directory's inode
    if e2fsck_p_exit(image) & 4 == 0:
        pytest.fail("test setup: e2fsck -p should leave a cleared root inode uncorrected (exit 4)")
