"""Helpers of the integration tests: real `gandi-vm` runs against real loop devices.

Every test gets an `env` (see `Env`): it makes disk images in tmp_path, attaches them as loop
devices, writes a configuration naming exactly those loop devices (so `mount-all` and `status`
never look at the machine's own disks), runs the CLI as a subprocess, and in teardown unmounts,
detaches and forgets everything it made, whether the test passed or not.

Assertions read the kernel's mount table through findmnt(8) and the file system directly.

Growth tests (`gandi-vm grow`) also make partitioned disks (GPT or MBR, `Env.partitions`), mount
them themselves (`Env.mount`), and build LVM volume groups confined to their own loop devices
(`Env.volume_group`): a test-local LVM_SYSTEM_DIR whose filter accepts only those devices, so
neither the test nor the program it runs ever scans or changes the machine's own disks.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STATE_DIR = Path("/run/gandi/disk")
SWAP_STATE_DIR = Path("/run/gandi/swap")
GROW_STATE_DIR = Path("/run/gandi/grow")
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
    "udevadm": "udev", "systemd-analyze": "systemd", "growpart": "cloud-guest-utils",
    "btrfs": "btrfs-progs", "blockdev": "util-linux", "lvm": "lvm2", "sgdisk": "gdisk",
}
BASE_TOOLS = ("losetup", "mount", "umount", "findmnt", "blkid", "mkfs.ext4", "e2fsck")


def which(tool: str) -> Optional[str]:
    return shutil.which(tool, path=TOOL_PATH)


def require(*tools: str) -> None:
    """Skip the calling test when a tool is missing, naming the tool and its package."""
    for tool in tools:
        if which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package {PACKAGES.get(tool, '?')})")


def sh(*argv: Union[str, bytes, Path], check: bool = True, timeout: float = 60,
       env: Optional[Mapping[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a setup/teardown command; on failure the exception names the command and its output.
    `env`: variables added to the environment (LVM_SYSTEM_DIR)."""
    env = dict(os.environ, PATH=TOOL_PATH, LC_ALL="C", **(env or {}))
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


def grow_outcomes(run: Run) -> Dict[str, Tuple[str, str]]:
    """mountpoint -> (outcome, the rest of the line) from `grow <mountpoint>: <outcome>: ...`
    log lines: the outcome word is the contract, the rest is wording."""
    found = {}
    for line in run.stderr.splitlines():
        match = GROW_LINE.search(line)
        if match:
            found[match["mountpoint"]] = (match["outcome"], match["why"].strip())
    return found


GROW_LINE = re.compile(r"\bgrow (?P<mountpoint>/\S*): (?P<outcome>grown|unchanged|skipped|failed)"
                       r"\b:?(?P<why>.*)")


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
        self.volume_groups: List[str] = []
        self.lvm_dir: Optional[Path] = None  # LVM_SYSTEM_DIR of volume_group()
        self._lvm_devices: List[str] = []
        self._volumes: List[str] = []  # dm-N of the logical volumes made
        self._images = 0
        self._mountpoints = 0

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

    def partitioned_disk(self, fstype: str, label: Optional[str], size_mb: int = 64,
                         table: str = "gpt") -> Disk:
        """A GPT (or MBR: table="dos") disk with one partition spanning it; returns the
        partition (loopNp1)."""
        [part] = self.partitions(size_mb, ",,L\n", table)
        mkfs(fstype, Path(part.dev), label)
        return part

    def partitions(self, size_mb: int, layout: str, table: str = "gpt") -> List[Disk]:
        """A loop device with the partitions of an sfdisk script (`layout`, after the label
        line), each known to the kernel; returns them in the order of their numbers."""
        require("sfdisk", "partx")
        image = self.image(size_mb)
        sh_input(["sfdisk", "-q", str(image)], f"label: {table}\n{layout}")
        numbers = [int(line.split(":")[0].strip()[len(str(image)):])
                   for line in sh("sfdisk", "-d", image).stdout.decode().splitlines()
                   if line.startswith(str(image))]
        loop = self.attach_loop(image, partscan=True)
        parts = [f"{loop}p{n}" for n in sorted(numbers)]
        if not wait_for(lambda: all(os.path.exists(f"/sys/class/block/{p}") for p in parts), 1.0):
            # Kernels built without CONFIG_EFI_PARTITION (or CONFIG_MSDOS_PARTITION) ignore
            # `losetup -P`; partx parses the table in user space and adds the partitions with BLKPG.
            sh("partx", "-a", f"/dev/{loop}", check=False)
        for part in parts:
            if not wait_for(lambda: os.path.exists(f"/dev/{part}"), 5.0):  # noqa: B023
                pytest.fail(f"/dev/{part} did not appear after partx -a /dev/{loop}")
        self.names += [loop, *parts]
        return [Disk(part, image, loop) for part in parts]

    def mount(self, disk: Disk, options: str = "", source: Optional[str] = None) -> Path:
        """Mount the disk (or `source`, a /dev path) on a new directory of tmp_path, as the
        owner's own mount would be: gandi keeps no record of it."""
        self._mountpoints += 1
        target = self.tmp / f"mnt{self._mountpoints}"
        target.mkdir()
        sh("mount", *(["-o", options] if options else []), source or disk.dev, target)
        return target

    def grow(self, disk: Disk, size_mb: int) -> None:
        """Enlarge the image and tell the loop driver, as a platform grows a virtual disk."""
        with open(disk.image, "r+b") as f:
            f.truncate(size_mb * MiB)
        sh("losetup", "-c", f"/dev/{disk.loop}")

    # -- LVM -----------------------------------------------------------------------------------
    def lvm_env(self) -> Dict[str, str]:
        """The environment of every LVM command of this test, the program's included."""
        if self.lvm_dir is None:
            return {}
        return {"LVM_SYSTEM_DIR": str(self.lvm_dir), "LVM_SUPPRESS_FD_WARNINGS": "1"}

    def lvm(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        assert self.lvm_dir is not None, "volume_group() first"
        return sh("lvm", *argv, check=check, env=self.lvm_env())

    def volume_group(self, pv: Disk, lv_size_mb: int) -> Tuple[str, Disk]:
        """A volume group (uniquely named) on `pv` with one logical volume of `lv_size_mb`;
        returns the group's name and the LV (a dm-N Disk on pv's loop). Skips where the kernel
        has no device-mapper: no LV can be activated there."""
        require("lvm")
        reason = device_mapper_missing()
        if reason:
            pytest.skip(reason)
        self._lvm_devices.append(pv.dev)
        self._write_lvm_conf()
        vg = f"gandiit{os.getpid()}x{len(self.volume_groups)}x{os.urandom(3).hex()}"
        self.lvm("pvcreate", "-q", "-y", pv.dev)
        self.volume_groups.append(vg)  # from here on, cleanup removes it
        self.lvm("vgcreate", "-q", vg, pv.dev)
        self.lvm("lvcreate", "-q", "-y", "-n", "lv", "-L", f"{lv_size_mb}m", vg)
        # Without udev, libdm makes /dev/mapper/VG-lv a node of its own, not a link to dm-N.
        number = os.stat(f"/dev/mapper/{vg}-lv").st_rdev
        name = os.path.basename(os.path.realpath(
            f"/sys/dev/block/{os.major(number)}:{os.minor(number)}"))
        forget_records(name)  # a dm-N of an earlier run's volume
        self._volumes.append(name)
        return vg, Disk(name, pv.image, pv.loop)

    def _write_lvm_conf(self) -> None:
        """LVM confined to this test's devices and directories, not waiting for a udev that this
        machine may not run; the host's /etc/lvm stays untouched."""
        self.lvm_dir = self.tmp / "lvm"
        for sub in ("", "backup", "archive", "lock", "cache"):
            (self.lvm_dir / sub).mkdir(exist_ok=True)
        accept = ", ".join(f'"a|^{re.escape(dev)}$|"' for dev in self._lvm_devices)
        (self.lvm_dir / "lvm.conf").write_text(f"""\
devices {{
    global_filter = [ {accept}, "r|.*|" ]
    filter = [ {accept}, "r|.*|" ]
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
    scan = [ "/dev" ]
}}
activation {{
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}}
global {{
    locking_dir = "{self.lvm_dir / 'lock'}"
}}
backup {{
    backup_dir = "{self.lvm_dir / 'backup'}"
    archive_dir = "{self.lvm_dir / 'archive'}"
}}
""")

    def _remove_volume_groups(self, problems: List[str]) -> None:
        for vg in self.volume_groups:
            self.lvm("vgchange", "-q", "-an", vg, check=False)
            done = self.lvm("vgremove", "-q", "-ff", "-y", vg, check=False)
            if done.returncode != 0 and vg.encode() in self.lvm("vgs", "--noheadings", "-o",
                                                                 "vg_name", check=False).stdout:
                problems.append(f"vgremove {vg}: {done.stderr.decode(errors='replace').strip()}")
            # What an LVM run with the host's configuration would have left for this group.
            for leftover in [f"/etc/lvm/backup/{vg}", *glob.glob(f"/etc/lvm/archive/{vg}_*.vg"),
                             *glob.glob(f"/run/lock/lvm/V_{vg}*")]:
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
            if os.path.isdir(f"/dev/{vg}"):
                problems.append(f"/dev/{vg} left behind")
        for dev in self._lvm_devices:
            self.lvm("pvremove", "-q", "-ff", "-y", dev, check=False)
        for name in self._volumes:
            forget_records(name)
        self.volume_groups, self._lvm_devices, self._volumes = [], [], []

    # -- the program ---------------------------------------------------------------------------
    def write_config(self) -> Path:
        settings = {
            "CONFIG_DISK_ROOT": str(self.root),
            "CONFIG_DISK_DEVICES": " ".join(self.names),
            "GANDI_HOOK_DIR": str(self.hooks),
            # Never the machine's own "/" (the default): a growth test names its mountpoints.
            "CONFIG_GROW_ROOT": "0",
            "CONFIG_GROW_MOUNTPOINTS": "",
        }
        settings.update(self.settings)
        text = "".join(f"{key}='{value}'\n" for key, value in settings.items())
        self.config.write_text("# written by tests/integration\n" + text)
        return self.config

    def gandi(self, *args: str, timeout: float = 120, env: Optional[Mapping[str, str]] = None,
              binds: Optional[Mapping[str, Path]] = None) -> Run:
        """Run the real program; a traceback is a bug whatever the exit status.
        `env`: variables added to its environment (the LVM configuration of volume_group() is
        always there). `binds`: {host path: file} bind-mounted over the host path in a private
        mount namespace of this run only (an /etc/fstab of the test's own: the machine's is never
        written)."""
        self.write_config()
        argv = [sys.executable, "-m", "gandi_vm", "--config", str(self.config), *args]
        environment = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        environment.update(self.lvm_env(), **(env or {}), PYTHONPATH=str(REPO))
        command = argv
        if binds:
            require("unshare", "mount")
            script = "".join(f'"$0" --bind "${i * 2 + 1}" "${i * 2 + 2}" || exit 125\n'
                             for i in range(len(binds))) + f'shift {len(binds) * 2}\nexec "$@"\n'
            pairs = [str(p) for target, source in binds.items() for p in (source, target)]
            command = [str(which("unshare")), "-m", "--propagation", "private", "sh", "-c", script,
                       str(which("mount")), *pairs, *argv]
        done = subprocess.run(command, cwd=REPO, env=environment, stdin=subprocess.DEVNULL,
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
        if self.volume_groups or self._lvm_devices:
            self._remove_volume_groups(problems)
        for loop in reversed(self.loops):
            swapoff_loop(loop, problems)
            if glob.glob(f"/sys/class/block/{loop}/{loop}p*"):
                sh("partx", "-d", f"/dev/{loop}", check=False)
            done = sh("losetup", "-d", f"/dev/{loop}", check=False)
            if done.returncode != 0:
                problems.append(f"losetup -d /dev/{loop}: {done.stderr.decode().strip()}")
            forget_records(loop)
        return problems


def device_mapper_missing() -> Optional[str]:
    """Why LVM logical volumes cannot be activated here, or None."""
    with contextlib.suppress(OSError), open("/proc/misc", encoding="ascii") as f:
        if any(line.split()[1:] == ["device-mapper"] for line in f):
            return None
    return "the kernel has no device-mapper (not in /proc/misc): no LVM logical volume here"


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
    """The records gandi keeps of a device (loop3, dm-2) and of its partitions."""
    for directory in (SWAP_STATE_DIR, STATE_DIR, GROW_STATE_DIR):
        for path in [directory / f"{loop}.json", *directory.glob(f"{loop}p*.json")]:
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
