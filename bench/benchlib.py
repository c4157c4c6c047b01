"""What the bench scripts share: commands that fail in one line, timing, summaries, signals, JSON."""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

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
