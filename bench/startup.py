#!/usr/bin/env python3
"""Benchmark the start-up of gandi-vm's hot-path commands against a bare `python3 -c pass`.

Issue 14's goal: a handler starts within 1.3x `python3 -c pass`. A handler's *start* is the
interpreter, the parse of its command line and the imports of what that command uses, before it
acts: `gandi_vm.cli.load(argv)`, timed as `python3 -c "...; load(sys.argv[1:])" ARGS`. The *whole*
command is `main()` through the same launcher as the packages' /usr/bin/gandi-vm (`from
gandi_vm.cli import main`), acting in --dry-run.

Builds the sample guest root of scripts/sample-root in a temporary directory and runs every
command rooted in it (`--root`, `--dry-run` where the command changes anything): nothing on this
machine is touched. Each run times every variant once, in an order rotated from run to run
(interleaved, so a drift of the machine's load spreads over all of them), with the minimal
environment udev and systemd give a handler (PATH, LC_ALL=C) plus PYTHONPATH pointing at this
checkout. Then runs each variant under `-X importtime` to list the modules it imports beyond
`python3 -c pass` (gandi_vm's by name) and the slowest imports of the slowest start, and reports
whether compiled bytecode exists: gandi_vm's in the checkout for the interpreter's cache tag, and
in the built packages (dist/): the .deb's postinst byte-compiles with py3compile at install
(dh_python3), the .rpm's payload and scriptlets; and what each package's launcher imports before
gandi_vm (setuptools' console script imported `re`). Only prints figures (and writes them as JSON); it
asserts nothing about time. Runs as root or not; the temporary directory is removed at the end,
even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import glob
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
LOAD = "import sys; from gandi_vm.cli import load; load(sys.argv[1:])"
MAIN = "import sys; from gandi_vm.cli import main; sys.exit(main())"

# Not handlers, no goal: the bare interpreter, without site, and --version (argparse's path).
REFERENCES: List[Tuple[str, List[str]]] = [
    (FLOOR, ["-c", "pass"]),
    ("python -S -c pass", ["-S", "-c", "pass"]),
    ("--version", ["-c", MAIN, "--version"]),
]
# name -> gandi-vm's arguments, ROOT replaced by the sample tree, and whether the start goal
# applies (a handler udev, systemd or a DHCP client starts). The names are those of
# scripts/sample-root: vdb is an ext4 labelled "data", ens4 a hot-plugged virtio NIC.
HANDLERS: List[Tuple[str, List[str], bool]] = [
    ("disk attach", ["--root", "ROOT", "disk", "attach", "vdb", "--dry-run"], True),
    ("disk detach", ["--root", "ROOT", "disk", "detach", "vdb", "--dry-run"], True),
    ("disk resize", ["--root", "ROOT", "disk", "resize", "vdb:65536", "--dry-run"], True),
    ("iface attach", ["--root", "ROOT", "iface", "attach", "ens4", "--dry-run"], True),
    ("iface lease", ["--root", "ROOT", "iface", "lease", "--dry-run"], True),
    ("mount-all", ["--root", "ROOT", "mount-all", "--dry-run"], True),
    ("config apply", ["--root", "ROOT", "config", "apply", "--dry-run"], True),
    ("cpu online-all", ["--root", "ROOT", "cpu", "online-all", "--dry-run"], True),
    ("memory online-all", ["--root", "ROOT", "memory", "online-all", "--dry-run"], True),
    ("status", ["--root", "ROOT", "status"], False),
]


def variants() -> List[Tuple[str, List[str]]]:
    """Every timed command line: the references, each handler's start and whole run."""
    out = list(REFERENCES)
    for name, args, _ in HANDLERS:
        out += [(f"start {name}", ["-c", LOAD, *args]), (f"run {name}", ["-c", MAIN, *args])]
    return out


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


# -- the built packages ----------------------------------------------------------------------------
def newest(pattern: str) -> Optional[str]:
    found = glob.glob(os.path.join(REPO, "dist", pattern))
    return max(found, key=os.path.getmtime) if found else None


def launcher_imports(text: str) -> List[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith(("import ", "from "))]


def package_bytecode(sources_mtime: float) -> Dict[str, Any]:
    """What the built .deb and .rpm (dist/) do about bytecode: .pyc files in the payload, and a
    byte-compilation at install in the maintainer scripts (the deb's postinst runs dh_python3's
    py3compile, with the guest's own interpreter); and what their launcher imports."""
    out: Dict[str, Any] = {}
    deb = newest("gandi-vm_*.deb")
    if deb and shutil.which("dpkg-deb"):
        listing = benchlib.run(["dpkg-deb", "-c", deb], ENV, REPO, TIMEOUT).stdout
        with tempfile.TemporaryDirectory() as control:
            benchlib.run(["dpkg-deb", "-e", deb, control], ENV, REPO, TIMEOUT)
            try:
                with open(os.path.join(control, "postinst"), encoding="utf-8") as f:
                    postinst = f.read()
            except FileNotFoundError:
                postinst = ""
            benchlib.run(["dpkg-deb", "-x", deb, control], ENV, REPO, TIMEOUT)
            with open(os.path.join(control, "usr/bin/gandi-vm"), encoding="utf-8") as f:
                launcher = f.read()
        out["deb"] = {"file": os.path.relpath(deb, REPO),
                      "stale": os.path.getmtime(deb) < sources_mtime,
                      "pyc_in_payload": listing.count(".pyc\n"),
                      "compiles_at_install": "py3compile -p gandi-vm" in postinst,
                      "launcher_imports": launcher_imports(launcher)}
    rpm = newest("gandi-vm-*.rpm")
    if rpm and shutil.which("rpm"):
        listing = benchlib.run(["rpm", "-qlp", rpm], ENV, REPO, TIMEOUT).stdout
        scripts = benchlib.run(["rpm", "-qp", "--scripts", rpm], ENV, REPO, TIMEOUT).stdout
        # rpm2cpio's archive to cpio's stdin: two commands, no shell around the file's name.
        archive = subprocess.run(["rpm2cpio", rpm], capture_output=True, timeout=TIMEOUT).stdout
        launcher = subprocess.run(["cpio", "-i", "--quiet", "--to-stdout", "./usr/bin/gandi-vm"],
                                  input=archive, capture_output=True, timeout=TIMEOUT
                                  ).stdout.decode("utf-8", "replace")
        out["rpm"] = {"file": os.path.relpath(rpm, REPO),
                      "stale": os.path.getmtime(rpm) < sources_mtime,
                      "pyc_in_payload": listing.count(".pyc\n"),
                      "compiles_at_install": "compileall" in scripts or "py_compile" in scripts,
                      "launcher_imports": launcher_imports(launcher)}
    return out


def describe_packages(packages: Dict[str, Any]) -> List[str]:
    lines = []
    for kind in ("deb", "rpm"):
        state = packages.get(kind)
        if state is None:
            lines.append(f"  {kind}: none in dist/ (packaging/build-{kind} builds it)")
            continue
        stale = " (older than the sources: rebuild with packaging/build-" + kind + ")" if state["stale"] \
            else ""
        if state["pyc_in_payload"]:
            how = f"ships {state['pyc_in_payload']} .pyc files"
        elif state["compiles_at_install"]:
            how = "ships no .pyc; byte-compiled at install by its maintainer script"
        else:
            how = "ships no .pyc and compiles none at install: the first start (as root) writes " \
                  "__pycache__, paying the compilation once"
        lines.append(f"  {kind}: {state['file']}{stale}: {how}; its /usr/bin/gandi-vm imports "
                     f"{', '.join(state['launcher_imports']) or 'nothing'}")
    return lines


# -- measurements ----------------------------------------------------------------------------------
def argv_of(python: str, args: List[str], root: str) -> List[str]:
    return [python] + [root if a == "ROOT" else a for a in args]


def timed(argv: List[str], cwd: str) -> Tuple[float, int]:
    start = time.perf_counter()
    done = benchlib.run(argv, ENV, cwd, TIMEOUT, check=False)
    return (time.perf_counter() - start) * 1000, done.returncode


def measure(python: str, root: str, runs: int, warmup: int
            ) -> Tuple[List[Dict[str, float]], Dict[str, List[int]]]:
    commands = variants()
    samples: List[Dict[str, float]] = []
    codes: Dict[str, List[int]] = {name: [] for name, _ in commands}
    for index in range(warmup + runs):
        shift = index % len(commands)
        sample: Dict[str, float] = {}
        for name, args in commands[shift:] + commands[:shift]:
            sample[name], code = timed(argv_of(python, args, root), root)
            if index >= warmup:
                codes[name].append(code)
        if index >= warmup:
            samples.append({name: sample[name] for name, _ in commands})
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
    """Per variant: modules imported (those beyond `python -c pass` by name), and the median
    self/cumulative ms of each over repeats."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, args in variants():
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
        total = sum(row["cumulative_ms"] for row in modules if not row["module"].startswith(" "))
        out[name] = {"modules": max(counts), "names": sorted(m.strip() for m in per_module),
                     "imports_total_ms": round(total, 3), "imports": modules}
    floor = set(out[FLOOR]["names"])
    for entry in out.values():
        entry["beyond_pass"] = [m for m in entry["names"] if m not in floor]
        entry["gandi_vm"] = [m for m in entry["names"] if m.startswith("gandi_vm")]
    return out


# -- report ----------------------------------------------------------------------------------------
def render(meta: Dict[str, Any], summary: Dict[str, Dict[str, Any]], codes: Dict[str, List[int]],
           imports: Dict[str, Dict[str, Any]], slowest: str) -> str:
    floor = summary[FLOOR]["median"]

    def ratio(name: str) -> float:
        return summary[name]["median"] / floor

    lines = [
        f"python {meta['python']} ({meta['python_version']}), {meta['runs']} interleaved runs "
        f"after {meta['warmup']} warm-up, kernel {meta['kernel']}, {meta['cpus']} CPUs",
        "",
        f"{'reference':<24} {'median':>7} {'min':>7} {'max':>7} {'x pass':>7} {'modules':>7}",
    ]
    for name, _ in REFERENCES:
        s = summary[name]
        lines.append(f"{name:<24} {s['median']:>7.1f} {s['min']:>7.1f} {s['max']:>7.1f} "
                     f"{ratio(name):>6.2f}x {imports[name]['modules']:>7}")
    lines += ["", f"{'':<24} {'start: parse + imports, no action':<47} | "
                  f"{'whole command (--dry-run)':<28}",
              f"{'command':<24} {'median':>7} {'min':>7} {'x pass':>7}  {'goal ' + str(GOAL) + 'x':<9}"
              f" {'modules':>7} {'gandi':>5} | {'median':>7} {'x pass':>7} {'modules':>7} {'exit':>4}"]
    for name, _, hot in HANDLERS:
        start, run = f"start {name}", f"run {name}"
        goal = "-" if not hot else ("MET" if ratio(start) <= GOAL else "NOT MET")
        lines.append(f"{name:<24} {summary[start]['median']:>7.1f} {summary[start]['min']:>7.1f} "
                     f"{ratio(start):>6.2f}x  {goal:<9} {imports[start]['modules']:>7} "
                     f"{len(imports[start]['gandi_vm']):>5} | {summary[run]['median']:>7.1f} "
                     f"{ratio(run):>6.2f}x {imports[run]['modules']:>7} "
                     f"{'/'.join(map(str, sorted(set(codes[run])))):>4}")
    handlers = [name for name, _, hot in HANDLERS if hot]
    met = sum(1 for name in handlers if ratio(f"start {name}") <= GOAL)
    lines += ["", f"(ms; x pass = median / median of `python -c pass`; goal {GOAL}x of the start met "
                  f"by {met} of {len(handlers)} handlers (status is no handler); modules = lines of "
                  f"-X importtime, gandi = of them gandi_vm's)",
              "", "what each start imports beyond `python -c pass` (gandi_vm's modules without "
                  "their prefix):"]
    for name, _, _ in HANDLERS:
        beyond = imports[f"start {name}"]["beyond_pass"]
        ours = [m[len("gandi_vm."):] for m in beyond if m.startswith("gandi_vm.")]
        other = [m for m in beyond if not m.startswith("gandi_vm")]
        lines.append(f"  {name + ':':<25} gandi_vm: {' '.join(ours)}")
        lines.append(f"  {'':<25} other: {' '.join(other) or '-'}")
    lines += ["", f"slowest imports of `start {slowest}` (median cumulative ms over "
                  f"{meta['importtime_runs']} -X importtime runs; self ms; indented = nested):"]
    for row in imports[f"start {slowest}"]["imports"][:8]:
        lines.append(f"  {row['cumulative_ms']:>7.1f}  {row['self_ms']:>6.1f}  {row['module']}")
    lines += ["", "compiled bytecode:",
              f"  checkout before the runs: {describe_bytecode(meta['bytecode_before'])}",
              f"  checkout after the runs:  {describe_bytecode(meta['bytecode_after'])}",
              *describe_packages(meta["packages"])]
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
        sources_mtime = max(os.path.getmtime(p) for p in
                            glob.glob(os.path.join(package, "**", "*.py"), recursive=True))
        packages = package_bytecode(sources_mtime)
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
    floor = summary[FLOOR]["median"]
    handlers = [name for name, _, hot in HANDLERS if hot]
    slowest = max(handlers, key=lambda n: summary[f"start {n}"]["median"])
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
        "packages": packages,
        "slowest_start": slowest,
    }
    ratios = {n: round(summary[n]["median"] / floor, 3) for n in summary}
    print(render(meta, summary, codes, imports, slowest))
    write_json(str(args.json), {
        "meta": meta,
        "commands": {n: " ".join(["python"] + a) for n, a in variants()},
        "ms": summary,
        "ratio_to_pass": ratios,
        "start_goal_met": {n: ratios[f"start {n}"] <= GOAL for n in handlers},
        "exit_codes": codes,
        "imports": imports,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
