#!/usr/bin/env python3
"""Benchmark `gandi-vm disk attach` on a real loop device, and split its time into parts.

Needs root. Creates a 1 GiB sparse ext4 image in a temporary directory, attaches it to a loop
device, and writes a configuration whose CONFIG_DISK_ROOT is a temporary directory. Then, for
each run: times one full `python3 -m gandi_vm disk attach loopN`, detaches it (not timed), and
times each part of the attach on its own, on the same device and in the same run:

  start-up    `python3 -c "import gandi_vm.cli, gandi_vm.disk"`: interpreter plus every module
              the attach path imports (the reference `python3 -m gandi_vm --version` only loads
              the command line module)
  blkid       `blkid -p -o udev /dev/loopN`
  e2fsck      `e2fsck -p /dev/loopN` on the unmounted device
  mount       `mount -t ext4 -o rw,nosuid,nodev,noatime` (the `umount` is timed apart: attach
              does not unmount)
  remainder   total - (start-up + blkid + e2fsck + mount), per run: argument parsing, config,
              sysfs and mountinfo reads, locks, state record, logging

Also times `python3 -c pass` as the bare-interpreter reference and runs `-X importtime` to show
which imports the start-up spends its time in. Only prints figures (and writes them as JSON);
it asserts nothing about time. Everything it creates is removed at the end, even on an error
or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import benchlib
from benchlib import BenchError, Interrupted, summarize, unwind_on_signals, write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL = "benchdata"
IMAGE_BYTES = 1 << 30
MOUNT_OPTIONS = "rw,nosuid,nodev,noatime"  # gandi's default CONFIG_MOUNT_PARAMS
ATTACH_IMPORTS = "import gandi_vm.cli, gandi_vm.disk"
STATE_DIR = "/run/gandi/disk"
TIMEOUT = 300
# Handlers are started by udev/systemd with a minimal environment; run everything with one too.
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "PYTHONPATH": REPO,
}
TOOLS = ("losetup", "mkfs.ext4", "e2fsck", "blkid", "mount", "umount")




# -- commands ----------------------------------------------------------------------------------
def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    return benchlib.run(argv, ENV, str(REPO), TIMEOUT, check)


def timed(argv: Sequence[str]) -> float:
    return benchlib.timed(argv, ENV, str(REPO), TIMEOUT)


# -- the test device -----------------------------------------------------------------------------
def mounts_under(directory: str) -> List[str]:
    """Mountpoints at or below a directory, deepest first."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ")
            if len(fields) > 4:
                point = fields[4].replace("\\040", " ")
                if point == directory or point.startswith(directory + "/"):
                    found.append(point)
    return sorted(found, key=len, reverse=True)


class Fixture:
    """A temporary directory holding an ext4 image on a loop device, a disk root and a config."""

    def __init__(self, python: str, base: Optional[str]):
        self.python = python
        self.base = base
        self.tmp: Optional[str] = None
        self.image = ""
        self.loop: Optional[str] = None  # "loopN"

    def setup(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="gandi-bench-", dir=self.base)
        self.image = os.path.join(self.tmp, "disk.img")
        self.disk_root = os.path.join(self.tmp, "srv")
        self.scratch = os.path.join(self.tmp, "mnt")  # for the mount part timed alone
        self.config = os.path.join(self.tmp, "gandi.conf")
        os.mkdir(self.scratch)
        with open(self.image, "wb") as f:
            f.truncate(IMAGE_BYTES)
        # Initialise inode tables and journal now, so no ext4lazyinit thread writes during runs.
        run(["mkfs.ext4", "-q", "-F", "-L", LABEL,
             "-E", "lazy_itable_init=0,lazy_journal_init=0", self.image])
        device = run(["losetup", "-f", "--show", self.image]).stdout.strip()
        if not device.startswith("/dev/"):
            raise BenchError(f"losetup printed {device!r}, not a device")
        self.loop = device[len("/dev/"):]
        with open(self.config, "w", encoding="utf-8") as f:
            f.write(f"CONFIG_DISK_ROOT={self.disk_root}\n"
                    f"CONFIG_DISK_DEVICES=\"{self.loop}\"\n"
                    # an empty hook directory: the machine's own hooks must not run
                    f"GANDI_HOOK_DIR={os.path.join(self.tmp, 'hooks')}\n")

    @property
    def device(self) -> str:
        return f"/dev/{self.loop}"

    @property
    def mountpoint(self) -> str:
        return os.path.join(self.disk_root, LABEL)

    def gandi(self, *args: str) -> List[str]:
        return [self.python, "-m", "gandi_vm", "--config", self.config, *args]

    def cleanup(self) -> List[str]:
        """Undo everything that exists; returns the problems (never raises)."""
        problems: List[str] = []
        if self.tmp is None:
            return problems
        for point in mounts_under(self.tmp):
            if run(["umount", point], check=False).returncode != 0:
                if run(["umount", "-l", point], check=False).returncode != 0:
                    problems.append(f"could not unmount {point}")
        if self.loop:
            self._forget_record()
        # Every loop device backed by our image, also one attached just before an interruption.
        if os.path.exists(self.image):
            listed = run(["losetup", "-n", "-O", "NAME", "-j", self.image], check=False).stdout
            for device in listed.split():
                if run(["losetup", "-d", device], check=False).returncode != 0:
                    problems.append(f"could not detach {device}")
        if mounts_under(self.tmp):
            problems.append(f"{self.tmp} still has mounts; left in place")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if os.path.exists(self.tmp):
                problems.append(f"could not remove {self.tmp}")
        return problems

    def _forget_record(self) -> None:
        """gandi's state record for our device, if it still names a mountpoint of ours."""
        path = os.path.join(STATE_DIR, f"{self.loop}.json")
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except (OSError, ValueError):
            return
        mountpoint = record.get("mountpoint") if isinstance(record, dict) else None
        if isinstance(mountpoint, str) and mountpoint.startswith(self.tmp + "/"):
            try:
                os.unlink(path)
            except OSError:
                pass


# -- measurements --------------------------------------------------------------------------------
def attach_once(fx: Fixture) -> float:
    start = time.perf_counter()
    done = run(fx.gandi("disk", "attach", fx.loop), check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0 or not os.path.ismount(fx.mountpoint):
        why = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BenchError(f"disk attach {fx.loop} did not mount {fx.mountpoint} "
                         f"(exit {done.returncode}): {why[0]}")
    if "e2fsck" not in done.stderr:
        raise BenchError(f"disk attach {fx.loop} did not report an e2fsck: {done.stderr.strip()}")
    return elapsed


def detach_once(fx: Fixture) -> None:
    run(fx.gandi("disk", "detach", fx.loop))
    if mounts_under(fx.disk_root):
        raise BenchError(f"disk detach {fx.loop} left {mounts_under(fx.disk_root)} mounted")


def one_run(fx: Fixture) -> Dict[str, float]:
    """Every figure of one run, the full attach first (the device is then unmounted again)."""
    sample = {"attach": attach_once(fx)}
    detach_once(fx)
    py = fx.python
    sample["python_pass"] = timed([py, "-c", "pass"])
    sample["gandi_version"] = timed([py, "-m", "gandi_vm", "--version"])
    sample["startup"] = timed([py, "-c", ATTACH_IMPORTS])
    sample["blkid"] = timed(["blkid", "-p", "-o", "udev", fx.device])
    sample["e2fsck"] = timed(["e2fsck", "-p", fx.device])
    sample["mount"] = timed(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, fx.device, fx.scratch])
    sample["umount"] = timed(["umount", fx.scratch])
    parts = ("startup", "blkid", "e2fsck", "mount")
    sample["remainder"] = sample["attach"] - sum(sample[p] for p in parts)
    sample["startup_over_pass"] = sample["startup"] - sample["python_pass"]
    return sample


def import_times(python: str, runs: int) -> List[Dict[str, Any]]:
    """Every module the start-up imports, with its depth in the import tree and its cumulative
    time (itself plus what it imported first), median over runs in ms, slowest first."""
    per_module: Dict[tuple, List[float]] = {}
    for _ in range(runs):
        stderr = run([python, "-X", "importtime", "-c", ATTACH_IMPORTS]).stderr
        this_run: Dict[tuple, float] = {}
        for line in stderr.splitlines():
            parts = line.split("|")
            if not line.startswith("import time:") or len(parts) != 3:
                continue
            try:
                cumulative = int(parts[1]) / 1000
            except ValueError:
                continue  # the header line
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip()) - 1) // 2  # after one separator space
            key = (name.strip(), depth)
            this_run[key] = this_run.get(key, 0.0) + cumulative
        for key, value in this_run.items():
            per_module.setdefault(key, []).append(value)
    rows = [{"module": name, "depth": depth, "cumulative_ms": round(statistics.median(v), 3)}
            for (name, depth), v in per_module.items()]
    return sorted(rows, key=lambda r: r["cumulative_ms"], reverse=True)


# -- report --------------------------------------------------------------------------------------
ROWS = (  # key, label, indented
    ("attach", "disk attach, total", False),
    ("startup", "start-up: interpreter + attach-path imports", True),
    ("blkid", "blkid -p -o udev", True),
    ("e2fsck", "e2fsck -p", True),
    ("mount", "mount -o " + MOUNT_OPTIONS, True),
    ("remainder", "remainder: handler logic (total - parts)", True),
    (None, "reference (not part of the split)", False),
    ("python_pass", "python3 -c pass", True),
    ("gandi_version", "python3 -m gandi_vm --version", True),
    ("startup_over_pass", "start-up - python3 -c pass", True),
    ("umount", "umount (attach does not unmount)", True),
)


def render(meta: Dict[str, object], summary: Dict[str, Dict[str, Any]],
           imports: List[Dict[str, Any]]) -> str:
    total = summary["attach"]["median"]
    width = max(len(label) for _, label, _ in ROWS) + 2
    lines = [
        f"gandi-vm disk attach: {meta['runs']} runs (+{meta['warmup']} warm-up not counted), "
        f"{meta['device']} ({meta['image']}), python {meta['python_version']} "
        f"({meta['python']}), kernel {meta['kernel']}",
        "",
        f"{'':{width}}{'median':>9}{'min':>9}{'max':>9}{'share':>8}   (ms)",
    ]
    for key, label, indented in ROWS:
        text = ("  " + label) if indented else label
        if key is None:
            lines.append(text)
            continue
        row = summary[key]
        share = ""
        if key in ("attach", "startup", "blkid", "e2fsck", "mount", "remainder"):
            share = f"{100 * row['median'] / total:.0f}%"
        lines.append(f"{text:{width}}{row['median']:>9.1f}{row['min']:>9.1f}{row['max']:>9.1f}"
                     f"{share:>8}")
    ratio = meta["startup_vs_pass_ratio"]
    lines += ["", f"start-up is {ratio:.2f}x a bare `python3 -c pass` (medians); "
              "remainder and `start-up - python3 -c pass` are per-run differences"]
    if imports:
        lines += ["", f"slowest imports of the start-up (python3 -X importtime -c "
                  f"'{ATTACH_IMPORTS}'; median ms, cumulative: a module's time includes "
                  "the modules it imported first, indented by depth):"]
        for row in imports[:15]:
            indent = "  " * row["depth"]
            lines.append(f"  {row['cumulative_ms']:>7.1f}  {indent}{row['module']}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    return benchlib.parse_args(argv, __doc__.split("\n\n")[0], "disk_attach", "the image")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("disk_attach.py: needs root (loop devices, mount): run it as root", file=sys.stderr)
        return 1
    missing = [t for t in TOOLS if shutil.which(t, path=ENV["PATH"]) is None]
    if missing or not os.access(args.python, os.X_OK):
        print(f"disk_attach.py: missing: {' '.join(missing) or args.python}", file=sys.stderr)
        return 1

    unwind_on_signals()
    fx = Fixture(args.python, args.tmpdir)
    status = 0
    try:
        fx.setup()
        samples = []
        for index in range(args.warmup + args.runs):
            sample = one_run(fx)
            if index >= args.warmup:
                samples.append(sample)
        imports = import_times(args.python, args.runs)
    except BenchError as e:
        print(f"disk_attach.py: {e}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, Interrupted):
        print("disk_attach.py: interrupted, cleaning up", file=sys.stderr)
        status = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
        for problem in fx.cleanup():
            print(f"disk_attach.py: cleanup: {problem}", file=sys.stderr)
            status = status or 1
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if status:
        return status

    summary = summarize(samples)
    python_version = run([args.python, "-c", "import platform; print(platform.python_version())"])
    meta: Dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs,
        "warmup": args.warmup,
        "device": f"/dev/{fx.loop}",
        "image": f"{IMAGE_BYTES >> 30} GiB sparse ext4, label {LABEL}",
        "python": args.python,
        "python_version": python_version.stdout.strip(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "gandi_vm": os.path.join(REPO, "gandi_vm"),
        "startup_vs_pass_ratio": round(
            summary["startup"]["median"] / summary["python_pass"]["median"], 3),
    }
    print(render(meta, summary, imports))
    write_json(str(args.json), {"meta": meta, "ms": summary, "imports_ms": imports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
