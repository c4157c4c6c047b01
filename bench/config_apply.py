#!/usr/bin/env python3
"""Wall time of `gandi-vm config apply` over a typical Debian 12 root, total and per plugin.

Needs root: builds (or reuses) the debootstrapped Debian 12 root of the packaging tests, installs
openssh-server, tzdata and cron in a copy, puts a DHCP lease record in place, then runs
`gandi-vm --root ROOT config apply` --runs times. The first run changes things (host keys, files);
the next ones find everything in place, which is what every boot after the first does. Per-plugin
times come from the runner's own log lines ("plugin NAME: STATE (N ms)"). Also compares the
command's start-up (`config list`) with `python3 -c pass`. Prints figures; asserts nothing.

    bench/config_apply.py [--runs N]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "packaging"))

from debian_root import debian_root  # noqa: E402

LEASE = """interface: ens3
role: primary
state: configured
lease: {address: 192.0.2.10, prefixlen: 24, gateway: 192.0.2.1, dns: [192.0.2.53],
        search: [example.test], domain: example.test, hostname: vm-bench}
"""
LINE = re.compile(r"plugin (\S+): (\S+?)(?::.*)? \((\d+) ms\)$", re.MULTILINE)


def gandi(top: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandi_vm", "--root", str(top), *args],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                               "PYTHONPATH": str(REPO)})


def timed(argv: List[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, env={"PYTHONPATH": str(REPO)})
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="applies after the first (default 10)")
    args = parser.parse_args()
    with debian_root() as root:
        root.check("apt-get", "update", "-q")
        root.check("apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server",
                   "tzdata", "cron")
        for key in ("ed25519", "ecdsa"):  # a first boot generates what is missing
            for suffix in ("", ".pub"):
                root.path(f"/etc/ssh/ssh_host_{key}_key{suffix}").unlink()
        root.path("/run/sshd").mkdir(parents=True, exist_ok=True)
        root.path("/run/gandi/iface").mkdir(parents=True)
        root.path("/run/gandi/iface/ens3.yaml").write_text(LEASE)

        totals: List[float] = []
        per_plugin: Dict[str, List[float]] = {}
        first: Dict[str, str] = {}
        for run in range(args.runs + 1):
            started = time.perf_counter()
            done = gandi(root.top, "config", "apply")
            elapsed = (time.perf_counter() - started) * 1000
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            for name, state, ms in LINE.findall("\n".join(done.stderr.splitlines())):
                if run == 0:
                    first[name] = f"{state} {ms} ms"
                else:
                    per_plugin.setdefault(name, []).append(float(ms))
            if run:
                totals.append(elapsed)

    print(f"gandi-vm config apply on a Debian 12 root (openssh-server, tzdata, cron), "
          f"first run + {args.runs} runs\n")
    print(f"  {'plugin':<12} {'first run':<22} {'later runs median (ms)':>22}")
    for name in first:
        later = per_plugin.get(name, [0.0])
        print(f"  {name:<12} {first[name]:<22} {statistics.median(later):>22.1f}")
    print(f"\n  total, later runs: median {statistics.median(totals):.0f} ms "
          f"(min {min(totals):.0f}, max {max(totals):.0f}), whole command from start to exit")
    bare = timed([sys.executable, "-c", "pass"], 10)
    listing = timed([sys.executable, "-m", "gandi_vm", "config", "list"], 10)
    print(f"  start-up: python3 -c pass {bare:.1f} ms; gandi-vm config list {listing:.1f} ms "
          f"({listing / bare:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
