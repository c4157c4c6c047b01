"""What the bench scripts share: commands that fail in one line, timing, summaries, signals, JSON."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import time
from typing import Any, Dict, List, Mapping, Sequence


class BenchError(Exception):
    """A step of the benchmark failed; reported in one line."""


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwind like Ctrl-C so that the cleanup runs."""


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signal.Signals(signum).name)


def unwind_on_signals() -> None:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupted)


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
