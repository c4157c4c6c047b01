"""What the bench scripts share: commands that fail in one line, timing, summaries, signals, JSON,
and for the benches that boot a guest: systemd's time spans and the kernel's exec trace."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:  # vm/ is on the path of the benches that boot a guest, and only theirs
    from qemu_guest import Guest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PYTHON = "/usr/bin/python3"  # guests run the distro interpreter


class BenchError(Exception):
    """A step of the benchmark failed; reported in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so that the cleanup runs."""


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def unwind_on_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)


def parse_args(argv: Optional[Sequence[str]], description: str, name: str,
               tmp_what: str) -> argparse.Namespace:
    """The options the run-N-times benchmarks share; figures go to bench/results/NAME.json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=10, help="measured runs (default 10)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="runs done first and not counted: page cache, .pyc files (default 1)")
    parser.add_argument("--json", default=os.path.join(REPO, "bench", "results", f"{name}.json"),
                        metavar="PATH", help=f"where to write the figures (default "
                                             f"bench/results/{name}.json)")
    parser.add_argument("--python", default=DEFAULT_PYTHON,
                        help=f"interpreter that runs gandi_vm (default {DEFAULT_PYTHON})")
    parser.add_argument("--tmpdir", default=None,
                        help=f"where to create {tmp_what} (default $TMPDIR or /tmp)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    return args


def subset(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str],
           what: str) -> List[str]:
    """A comma-separated selection among `allowed` (--kinds, --variants), in the order given; an
    unknown name is a usage error."""
    chosen = [name for name in text.split(",") if name]
    unknown = set(chosen) - set(allowed)
    if unknown:
        parser.error(f"unknown {what} {sorted(unknown)}")
    return chosen


def run(argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float,
        check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", env=dict(env), cwd=cwd, timeout=timeout, check=False)
    if check and done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        why = lines[-1].strip() if lines else "no output"
        raise BenchError(f"`{' '.join(argv)}` failed (exit {done.returncode}): {why}")
    return done


def timed(argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float) -> float:
    """Wall time of one command in milliseconds; the command must succeed."""
    start = time.perf_counter()
    run(argv, env, cwd, timeout)
    return (time.perf_counter() - start) * 1000


def summarize(samples: List[Dict[str, float]]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                    "max": round(max(values), 3), "samples": [round(v, 3) for v in values]}
    return out


def write_json(path: str, data: Dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"\nfigures written to {path}")


# -- guests: what systemd says about a boot, and what the kernel saw executed ----------------------
# A guest booted with these kernel arguments has the kernel's trace buffer recording every execve()
# (sched_process_exec) and fork (sched_process_fork) from the first process on, whoever made it and
# whether it logs anything or not, which a count of journal lines or of units would miss. The forks
# tell which execs the bench itself caused: everything the guest agent (qemu-ga) runs for us, and
# its descendants, is left out of the counts. Tracing two events costs the guest next to nothing.
TRACE_ARGS = "trace_event=sched:sched_process_exec,sched:sched_process_fork trace_buf_size=4M"
TRACE_DIRS = "/sys/kernel/tracing /sys/kernel/debug/tracing"
GANDI_VM = "/usr/bin/gandi-vm"  # every Python interpreter of ours starts through it


def seconds(text: str) -> float:
    """systemd's time spans: 1min 2.345s, 812ms, 3.2s, 1h 2min."""
    units = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)\s*(h|min|ms|us|µs|s)\b", text):
        total += float(number) * units[unit]
    return total


def analyze_time(text: str) -> Dict[str, float]:
    """`systemd-analyze time`: `Startup finished in 2.1s (kernel) + 3.4s (initrd) + 15.2s
    (userspace) = 20.7s` and `multi-user.target reached after 14.9s in userspace` (as
    multi_user_s, or graphical_s)."""
    span = r"((?:[\d.]+(?:h|min|ms|us|µs|s)\s*)+)"
    parts = {f"{part}_s": round(seconds(figure), 3)
             for figure, part in re.findall(span + r"\((kernel|initrd|userspace)\)", text)}
    for target, figure in re.findall(r"(multi-user|graphical)\.target reached after " + span, text):
        parts[f"{target.replace('-', '_')}_s"] = round(seconds(figure), 3)
    return parts


def exec_trace(guest: "Guest") -> Dict[str, Any]:
    """What the kernel's trace buffer holds (since the boot, or since clear_trace()): the execs not
    caused by the bench, in all and by kind (gandi_vm: /usr/bin/gandi-vm; python: every Python
    interpreter started, python3 itself or a script whose #! names python, as gandi-vm, cloud-init
    or a DHCP client's event script are; cloud_init: cloud-init's programs), the execs left out as
    the bench's own (agent_execs), the commands gandi-vm's resident agent served (gandi_requests:
    the forks of its main process, one per request), every program with its count, and the events
    the buffer lost (None if the kernel has no trace buffer or its header is missing)."""
    out = guest.run(f"for d in {TRACE_DIRS}; do [ -r $d/trace ] && exec cat $d/trace; done; exit 1",
                    timeout=120)
    if out.returncode != 0:
        return {"execs": None, "gandi_vm": None, "python": None, "cloud_init": None,
                "agent_execs": None, "gandi_requests": None, "lost": None, "programs": {}}
    agent = guest.run("systemctl show -p MainPID --value gandi-agent.service 2>/dev/null").stdout
    counts = count_execs(out.stdout, agent.strip() if agent.strip() not in ("", "0") else None)
    # The trace names the script, not its interpreter: read the scripts' first line in the guest.
    names = " ".join(shlex.quote(name) for name in counts["programs"])
    python = guest.run(f"for f in {names}; do head -n 1 \"$f\" 2>/dev/null | "
                       "grep -aq '^#!.*python' && echo \"$f\"; done; true").stdout.split()
    counts["python"] = sum(n for name, n in counts["programs"].items()
                           if name in python or os.path.basename(name).startswith("python"))
    return counts


def clear_trace(guest: "Guest") -> None:
    """Empty the trace buffer, so that the next exec_trace() holds only what came after."""
    guest.run(f"for d in {TRACE_DIRS}; do [ -w $d/trace ] && : >$d/trace && exit 0; done; exit 1")


def count_execs(trace: str, gandi_agent: Optional[str] = None) -> Dict[str, Any]:
    """exec_trace's counts from the text of a trace buffer (all but the Python interpreters, which
    need the guest's files); gandi_agent is the pid of gandi-vm's resident agent, if it runs."""
    ours = set()  # pids forked by the guest agent, and their descendants
    programs: Counter = Counter()
    agent_execs = requests = 0
    for line in trace.splitlines():
        fork = re.search(r"sched_process_fork: comm=(.*?) pid=(\d+) child_comm=.*? child_pid=(\d+)",
                         line)
        if fork:
            requests += fork.group(2) == gandi_agent
            if fork.group(1) == "qemu-ga" or fork.group(2) in ours:
                ours.add(fork.group(3))
            continue
        exec_ = re.search(r"sched_process_exec: filename=(\S+) pid=(\d+)", line)
        if exec_:
            if exec_.group(2) in ours:
                agent_execs += 1
            else:
                programs[exec_.group(1)] += 1
    header = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", trace)
    return {"execs": sum(programs.values()), "gandi_vm": programs[GANDI_VM],
            "cloud_init": sum(n for name, n in programs.items() if "cloud-init" in name),
            "agent_execs": agent_execs, "gandi_requests": requests,
            "lost": int(header.group(2)) - int(header.group(1)) if header else None,
            "programs": dict(programs.most_common())}


def median(values: Sequence[Optional[float]]) -> Optional[float]:
    """The median of the values present (None: a figure missing from that boot or run)."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None
