#!/usr/bin/env python3
"""Benchmark the start-up of gandi-vm's hot-path commands against a bare `python3 -c pass`.

Issue 14's goal: a handler starts within 1.3x `python3 -c pass`. Builds the sample guest root of
scripts/sample-root in a temporary directory and runs every command rooted in it (`--root`),
with `--dry-run` where the command changes anything: nothing on this machine is touched. Each
run times every command once, in an order rotated from run to run (interleaved, so a drift of
the machine's load spreads over all of them), with the minimal environment udev and systemd
give a handler (PATH, LC_ALL=C) plus PYTHONPATH pointing at this checkout. Then runs each
command under `-X importtime` to count the modules it imports and to list the slowest imports
of the slowest command, and reports whether gandi_vm's compiled bytecode exists for the
interpreter's cache tag. Only prints figures (and writes them as JSON); it asserts nothing about
time. Runs as root or not; the temporary directory is removed at the end, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import benchlib
from benchlib import BenchError, Interrupted, summarize, unwind_on_signals, write_json

REPO = benchlib.REPO
GOAL = 1.3  # issue 14: a handler's start within 1.3x `python3 -c pass`
TIMEOUT = 120
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "PYTHONPATH": REPO,
}
TOOLS = ("mkfs.ext4", "mkswap", "blkid")  # scripts/sample-root and the disk probes
FLOOR = "python -c pass"

# name -> arguments after the interpreter; ROOT is replaced by the sample tree. The names are
# those of scripts/sample-root: vdb is an ext4 labelled "data", ens4 a hot-plugged virtio NIC.
COMMANDS: List[Tuple[str, List[str]]] = [
    (FLOOR, ["-c", "pass"]),
    ("python -S -c pass", ["-S", "-c", "pass"]),
    ("--version", ["-m", "gandi_vm", "--version"]),
    ("disk attach", ["-m", "gandi_vm", "--root", "ROOT", "disk", "attach", "vdb", "--dry-run"]),
    ("disk resize", ["-m", "gandi_vm", "--root", "ROOT", "disk", "resize", "vdb:65536",
                     "--dry-run"]),
    ("iface attach", ["-m", "gandi_vm", "--root", "ROOT", "iface", "attach", "ens4", "--dry-run"]),
    ("early-boot", ["-m", "gandi_vm", "--root", "ROOT", "early-boot", "--dry-run"]),
    ("config apply", ["-m", "gandi_vm", "--root", "ROOT", "config", "apply", "--dry-run"]),
    ("mount-all", ["-m", "gandi_vm", "--root", "ROOT", "mount-all", "--dry-run"]),
    ("status", ["-m", "gandi_vm", "--root", "ROOT", "status"]),
]
REFERENCES = {FLOOR, "python -S -c pass"}  # not handlers: no goal applies


# -- bytecode --------------------------------------------------------------------------------------
def cache_tag(python: str) -> str:
    done = benchlib.run([python, "-c", "import sys; print(sys.implementation.cache_tag)"],
                        ENV, REPO, TIMEOUT)
    return done.stdout.strip()


def bytecode_state(package: str, tag: str) -> Dict[str, Any]:
    """How many of the package's modules have a .pyc for this cache tag, and how many are fresh
    (the .pyc's header names the source's current mtime and size, or it is hash-based)."""
    sources, present, fresh, missing = 0, 0, 0, []
    for directory, dirs, files in os.walk(package):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            sources += 1
            source = os.path.join(directory, name)
            pyc = os.path.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc")
            try:
                with open(pyc, "rb") as f:
                    header = f.read(16)
            except OSError:
                missing.append(os.path.relpath(source, os.path.dirname(package)))
                continue
            present += 1
            st = os.stat(source)
            flags = int.from_bytes(header[4:8], "little") if len(header) == 16 else -1
            if flags == 0:
                ok = (int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
                      and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)
            else:
                ok = flags in (1, 3)  # hash-based: checked against the source, or never
            fresh += ok
    return {"package": package, "cache_tag": tag, "modules": sources, "pyc_present": present,
            "pyc_fresh": fresh, "missing": missing}


def describe_bytecode(state: Dict[str, Any]) -> str:
    return (f"{state['pyc_present']}/{state['modules']} modules have a {state['cache_tag']} .pyc, "
            f"{state['pyc_fresh']} fresh")


# -- measurements ----------------------------------------------------------------------------------
def argv_of(python: str, args: List[str], root: str) -> List[str]:
    return [python] + [root if a == "ROOT" else a for a in args]


def timed(argv: List[str], cwd: str) -> Tuple[float, int]:
    start = time.perf_counter()
    done = benchlib.run(argv, ENV, cwd, TIMEOUT, check=False)
    return (time.perf_counter() - start) * 1000, done.returncode


def measure(python: str, root: str, runs: int, warmup: int
            ) -> Tuple[List[Dict[str, float]], Dict[str, List[int]]]:
    samples: List[Dict[str, float]] = []
    codes: Dict[str, List[int]] = {name: [] for name, _ in COMMANDS}
    for index in range(warmup + runs):
        shift = index % len(COMMANDS)
        order = COMMANDS[shift:] + COMMANDS[:shift]
        sample: Dict[str, float] = {}
        for name, args in order:
            sample[name], code = timed(argv_of(python, args, root), root)
            if index >= warmup:
                codes[name].append(code)
        if index >= warmup:
            samples.append({name: sample[name] for name, _ in COMMANDS})
    return samples, codes


def parse_importtime(stderr: str) -> List[Tuple[str, int, int]]:
    """(module with its nesting indentation, self us, cumulative us) per imported module."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        rows.append((parts[2].rstrip()[1:], int(parts[0]), int(parts[1])))
    return rows


def import_times(python: str, root: str, repeats: int) -> Dict[str, Dict[str, Any]]:
    """Per command: modules imported, and the median self/cumulative ms of each over repeats."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, args in COMMANDS:
        argv = argv_of(python, args, root)
        per_module: Dict[str, List[Tuple[int, int]]] = {}
        counts = []
        for _ in range(repeats):
            done = benchlib.run([argv[0], "-X", "importtime"] + argv[1:], ENV, root, TIMEOUT,
                                check=False)
            rows = parse_importtime(done.stderr)
            counts.append(len(rows))
            for module, self_us, cumulative_us in rows:
                per_module.setdefault(module, []).append((self_us, cumulative_us))
        modules = [{"module": module,
                    "self_ms": round(statistics.median(t[0] for t in times) / 1000, 3),
                    "cumulative_ms": round(statistics.median(t[1] for t in times) / 1000, 3)}
                   for module, times in per_module.items()]
        modules.sort(key=lambda row: row["cumulative_ms"], reverse=True)
        gandi = sum(1 for m in per_module if m.strip().startswith("gandi_vm"))
        total = sum(row["cumulative_ms"] for row in modules if not row["module"].startswith(" "))
        out[name] = {"modules": max(counts), "gandi_vm_modules": gandi,
                     "imports_total_ms": round(total, 3), "imports": modules}
    return out


# -- report ----------------------------------------------------------------------------------------
def render(meta: Dict[str, Any], summary: Dict[str, Dict[str, Any]], codes: Dict[str, List[int]],
           imports: Dict[str, Dict[str, Any]], slowest: str) -> str:
    floor = summary[FLOOR]["median"]
    lines = [
        f"python {meta['python']} ({meta['python_version']}), {meta['runs']} interleaved runs "
        f"after {meta['warmup']} warm-up, kernel {meta['kernel']}, {meta['cpus']} CPUs",
        f"bytecode in the checkout before the runs: {describe_bytecode(meta['bytecode_before'])}",
        f"bytecode after the runs:                  {describe_bytecode(meta['bytecode_after'])}",
        "",
        f"{'command':<18} {'median':>7} {'min':>7} {'max':>7} {'x pass':>7}  "
        f"{'goal ' + str(GOAL) + 'x':<9} {'modules':>7} {'gandi':>5} {'imp ms':>6} {'exit':>4}",
    ]
    for name, _ in COMMANDS:
        s = summary[name]
        ratio = s["median"] / floor
        goal = "-" if name in REFERENCES else ("MET" if ratio <= GOAL else "NOT MET")
        exits = sorted(set(codes[name]))
        lines.append(f"{name:<18} {s['median']:>7.1f} {s['min']:>7.1f} {s['max']:>7.1f} "
                     f"{ratio:>6.2f}x  {goal:<9} {imports[name]['modules']:>7} "
                     f"{imports[name]['gandi_vm_modules']:>5} {imports[name]['imports_total_ms']:>6.1f} "
                     f"{'/'.join(map(str, exits)):>4}")
    handlers = [n for n, _ in COMMANDS if n not in REFERENCES]
    met = sum(1 for n in handlers if summary[n]["median"] / floor <= GOAL)
    lines += ["", f"(ms; x pass = median / median of `python -c pass`; goal {GOAL}x met by "
                  f"{met} of {len(handlers)} commands; modules = lines of -X importtime, "
                  f"gandi = of them gandi_vm's;\n imp ms = sum of the top-level cumulative import times, "
                  f"measured apart under -X importtime)",
              "", f"slowest imports of `{slowest}` (median cumulative ms over "
                  f"{meta['importtime_runs']} -X importtime runs; self ms; indented = nested):"]
    for row in imports[slowest]["imports"][:8]:
        lines.append(f"  {row['cumulative_ms']:>7.1f}  {row['self_ms']:>6.1f}  {row['module']}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs (default 20)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="runs done first and not counted: page cache, .pyc files (default 1)")
    parser.add_argument("--importtime-runs", type=int, default=5, metavar="N",
                        help="-X importtime runs per command (default 5)")
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results", "startup.json"),
                        metavar="PATH", help="where to write the figures "
                                             "(default bench/results/startup.json)")
    parser.add_argument("--python", default=benchlib.DEFAULT_PYTHON,
                        help=f"interpreter that runs gandi_vm (default {benchlib.DEFAULT_PYTHON})")
    parser.add_argument("--tmpdir", default=None,
                        help="where to create the sample root (default $TMPDIR or /tmp)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.importtime_runs < 1:
        parser.error("--runs and --importtime-runs must be at least 1, --warmup at least 0")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t, path=ENV["PATH"]) is None]
    if missing or not os.access(args.python, os.X_OK):
        print(f"startup.py: missing: {' '.join(missing) or args.python}", file=sys.stderr)
        return 1

    unwind_on_signals()
    package = os.path.join(REPO, "gandi_vm")
    tmp = tempfile.mkdtemp(prefix="gandi-bench-startup-", dir=args.tmpdir)
    root = os.path.join(tmp, "root")
    status = 0
    try:
        tag = cache_tag(args.python)
        before = bytecode_state(package, tag)
        benchlib.run([os.path.join(REPO, "scripts", "sample-root"), root,
                      os.path.join(REPO, "etc", "default", "gandi")], ENV, REPO, TIMEOUT)
        samples, codes = measure(args.python, root, args.runs, args.warmup)
        imports = import_times(args.python, root, args.importtime_runs)
        after = bytecode_state(package, tag)
    except BenchError as e:
        print(f"startup.py: {e}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, Interrupted, subprocess.TimeoutExpired) as e:
        print(f"startup.py: {'timed out' if isinstance(e, subprocess.TimeoutExpired) else 'interrupted'}"
              ", cleaning up", file=sys.stderr)
        status = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
        shutil.rmtree(tmp, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if status:
        return status

    summary = summarize(samples)
    handlers = [n for n, _ in COMMANDS if n not in REFERENCES]
    slowest = max(handlers, key=lambda n: summary[n]["median"])
    floor = summary[FLOOR]["median"]
    python_version = benchlib.run([args.python, "-c", "import platform; "
                                   "print(platform.python_version())"], ENV, REPO, TIMEOUT)
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs,
        "warmup": args.warmup,
        "importtime_runs": args.importtime_runs,
        "python": args.python,
        "python_version": python_version.stdout.strip(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "euid": os.geteuid(),
        "env": ENV,
        "goal_ratio": GOAL,
        "bytecode_before": before,
        "bytecode_after": after,
        "slowest": slowest,
    }
    ratios = {n: round(summary[n]["median"] / floor, 3) for n, _ in COMMANDS}
    print(render(meta, summary, codes, imports, slowest))
    write_json(str(args.json), {
        "meta": meta,
        "commands": {n: " ".join(["python"] + a) for n, a in COMMANDS},
        "ms": summary,
        "ratio_to_pass": ratios,
        "goal_met": {n: ratios[n] <= GOAL for n in handlers},
        "exit_codes": codes,
        "imports": imports,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
