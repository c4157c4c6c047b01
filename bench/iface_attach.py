#!/usr/bin/env python3
"""Benchmark `gandi-vm iface attach` on a real veth pair against dnsmasq, and the same DHCP
client (dhclient) run by hand on the same interface.

Needs root. Builds the network lab of the integration tests (tests/integration/gandi_netns.py):
a guest network namespace with a primary interface holding the default route and one secondary
interface `ens4` (down, as a hot-plugged NIC arrives), whose other end is served by dnsmasq in a
server namespace, and the fake --root that makes gandi-vm see `ens4` as a virtio NIC. Then, in
each run, alternately:

  gandi       `ip netns exec GUEST python3 -m gandi_vm --root R iface attach ens4`: dhclient
              with gandi's sh lease script, which hands the first lease to the waiting attach
              (later events run `python3 -m gandi_vm iface lease`), and attach puts the
              address, the table and the rule in place
  by hand     `ip netns exec GUEST dhclient -4 -1 -cf CONF -sf SCRIPT ... ens4`: the same
              dhclient, the same dhclient.conf as gandi writes (same requested options), with a
              ten-line shell script making the same kernel changes (link up, the five sysctls,
              address, table routes, rule)

For both it records when the address appears in the guest namespace (seen by an `ip monitor
address` started once, before the runs) and when the command exits, both from the command's
start. Between runs, which are not timed, the lease is released, everything is removed and the
link is put down again, so that each run starts from the same state. It also times the CLI's
start-up: `python3 -c pass`, `python3 -m gandi_vm --version` and the imports of the attach path.
Only prints figures (and writes them as JSON); it asserts nothing about time. The namespaces,
dnsmasq and every client are removed at the end, even on an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import gandi_netns  # noqa: E402
from gandi_netns import Lab, LabError  # noqa: E402

import benchlib  # noqa: E402
from benchlib import BenchError, Interrupted, summarize, unwind_on_signals, write_json  # noqa: E402

NAME = "ens4"
ATTACH_IMPORTS = "import gandi_vm.cli, gandi_vm.disk, gandi_vm.net, yaml"
TIMEOUT = 60
ENV = {"PATH": gandi_netns.TOOL_PATH, "LC_ALL": "C", "PYTHONPATH": str(REPO)}
# What gandi_vm/dhcp.py writes as dhclient.conf (timeout: gandi's default CONFIG_DHCP_TIMEOUT).
DHCLIENT_CONF = """timeout 30;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,
        domain-search, host-name, interface-mtu;
"""
# The same kernel changes as gandi's lease script for a secondary interface, and nothing else.
BY_HAND_SCRIPT = """#!/bin/sh
T=%(table)d
echo "$reason" >> %(events)s
case "$reason" in
PREINIT)
    ip link set dev "$interface" up
    for s in ipv4/conf/$interface/arp_announce=2 ipv4/conf/$interface/arp_ignore=1 \\
             ipv4/conf/$interface/rp_filter=2 ipv6/conf/$interface/accept_ra=2 \\
             ipv6/conf/$interface/accept_ra_defrtr=0; do echo "${s#*=}" > "/proc/sys/net/${s%%=*}"; done ;;
BOUND|RENEW|REBIND|REBOOT)
    ip addr replace "$new_ip_address/$new_subnet_mask" broadcast + dev "$interface" \\
        valid_lft "$new_dhcp_lease_time" preferred_lft "$new_dhcp_lease_time"
    ip route replace "$new_network_number/$new_subnet_mask" dev "$interface" src "$new_ip_address" table $T
    ip route replace default via "${new_routers%%%% *}" dev "$interface" table $T
    ip rule del priority $T 2>/dev/null
    ip rule add from "$new_ip_address" lookup $T priority $T ;;
EXPIRE|RELEASE|STOP|FAIL)
    ip rule del priority $T 2>/dev/null
    ip route flush table $T 2>/dev/null
    [ -z "$old_ip_address" ] || ip addr del "$old_ip_address/$old_subnet_mask" dev "$interface" ;;
TIMEOUT)
    exit 1 ;;
esac
exit 0
"""
BASELINE_WHY = ("baseline: the same dhclient and dhclient.conf with a minimal shell script making the same "
                "kernel changes; not Debian's dhclient-script, which also rewrites /etc/resolv.conf "
                "(the host's: ip netns exec shares /etc) and runs its hook directories, work gandi "
                "does not do")




# -- commands ----------------------------------------------------------------------------------
def run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    return benchlib.run(argv, ENV, str(REPO), TIMEOUT, check)


def timed(argv: Sequence[str]) -> float:
    return benchlib.timed(argv, ENV, str(REPO), TIMEOUT)


class AddressMonitor:
    """`ip monitor address` in the guest namespace; each line timestamped when it arrives."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.lines: "queue.Queue[Tuple[float, str]]" = queue.Queue()
        self.process = subprocess.Popen(["ip", "-n", lab.guest, "monitor", "address"],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1, env=ENV)
        threading.Thread(target=self._read, daemon=True).start()
        # Subscribed once a change we make shows up.
        run(["ip", "-n", lab.guest, "addr", "add", "127.0.0.99/32", "dev", "lo"])
        self.wait(re.compile(r"\d+: lo\s+inet 127\.0\.0\.99/32"), time.perf_counter(), 5)
        run(["ip", "-n", lab.guest, "addr", "del", "127.0.0.99/32", "dev", "lo"])
        self.wait(re.compile(r"Deleted \d+: lo\s+inet 127\.0\.0\.99/32"), time.perf_counter(), 5)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))

    def drain(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()

    def wait(self, pattern: "re.Pattern[str]", start: float, seconds: float) -> float:
        """Milliseconds from `start` to the first line matching `pattern`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                stamp, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BenchError(f"ip monitor: no {pattern.pattern!r} within {seconds}s") from None
            if pattern.match(line):
                return (stamp - start) * 1000

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=5)


# -- measurements --------------------------------------------------------------------------------
ADDRESS = re.compile(rf"\d+: {NAME}\s+inet 10\.")


def timed_until_address(lab: Lab, monitor: AddressMonitor, argv: List[str],
                        what: str) -> Tuple[float, float]:
    """(ms to the address in the namespace, ms to the command's exit), from its start."""
    monitor.drain()
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace", env=ENV,
                               cwd=REPO)
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"{what} did not finish within {TIMEOUT}s") from None
    exited = (time.perf_counter() - start) * 1000
    if process.returncode != 0:
        why = (err.strip() or out.strip()).splitlines()[-1:] or ["no output"]
        raise BenchError(f"{what} failed (exit {process.returncode}): {why[0]}")
    return monitor.wait(ADDRESS, start, 5), exited


def reset(lab: Lab, sysctls: Dict[str, str], what: str) -> None:
    """Back to a freshly plugged NIC: no address, rule, table, client; sysctls as found; down."""
    run(["ip", "-n", lab.guest, "link", "set", "dev", NAME, "down"])
    script = 'for kv; do printf "%s\\n" "${kv#*=}" > "${kv%%=*}"; done'
    lab.exec("sh", "-c", script, "sh", *(f"{k}={v}" for k, v in sysctls.items()))
    table = lab[NAME].table
    left = [p for p, ok in (("address", lab.addresses(NAME)), ("rule", lab.rules(table)),
                            ("table", lab.routes(table)), ("client", lab.clients(NAME)),
                            ("record", lab.record_path(NAME).exists())) if ok]
    if left:
        raise BenchError(f"after {what}: {', '.join(left)} left behind")


class ByHand:
    """dhclient run directly, with the minimal script."""

    def __init__(self, lab: Lab, directory: Path):
        self.lab = lab
        self.conf, self.script = directory / "dhclient.conf", directory / "by-hand.sh"
        self.pid, self.leases = directory / "by-hand.pid", directory / "by-hand.leases"
        self.events = directory / "by-hand.events"
        self.conf.write_text(DHCLIENT_CONF)
        self.script.write_text(BY_HAND_SCRIPT % {"table": lab[NAME].table,
                                                 "events": self.events})
        self.script.chmod(0o755)

    def take_events(self) -> List[str]:
        """The DHCP events dhclient ran its script for since the last call."""
        try:
            events = self.events.read_text().split()
        except FileNotFoundError:
            return []
        self.events.unlink()
        return events

    def argv(self, *flags: str) -> List[str]:
        return ["ip", "netns", "exec", self.lab.guest, "dhclient", "-4", *flags, "-cf",
                str(self.conf), "-sf", str(self.script), "-pf", str(self.pid), "-lf",
                str(self.leases), NAME]

    def release(self) -> None:
        run(self.argv("-r"))
        self.leases.unlink(missing_ok=True)  # as gandi's detach removes its leases file


def one_run(lab: Lab, monitor: AddressMonitor, by_hand: ByHand, python: str,
            sysctls: Dict[str, str], events: List[str]) -> Dict[str, float]:
    """Every figure of one run; `events` receives the DHCP events of the attach by hand (gandi's
    lease script runs for the same ones, one interpreter each)."""
    sample: Dict[str, float] = {}
    sample["gandi_address"], sample["gandi_exit"] = timed_until_address(
        lab, monitor, lab.gandi_argv("iface", "attach", NAME), "gandi-vm iface attach")
    run(lab.gandi_argv("iface", "detach", NAME))
    reset(lab, sysctls, "gandi-vm iface detach")
    sample["hand_address"], sample["hand_exit"] = timed_until_address(
        lab, monitor, by_hand.argv("-1", "-v"), "dhclient by hand")
    events[:] = by_hand.take_events()
    by_hand.release()
    by_hand.take_events()
    reset(lab, sysctls, "dhclient -r")
    sample["address_over_hand"] = sample["gandi_address"] - sample["hand_address"]
    sample["exit_over_hand"] = sample["gandi_exit"] - sample["hand_exit"]
    sample["python_pass"] = timed([python, "-c", "pass"])
    sample["gandi_version"] = timed([python, "-m", "gandi_vm", "--version"])
    sample["startup"] = timed([python, "-c", ATTACH_IMPORTS])
    sample["netns_exec"] = timed(["ip", "netns", "exec", lab.guest, "true"])
    return sample


# -- report --------------------------------------------------------------------------------------
ROWS = (  # key, label, indented
    (None, "from the command's start", False),
    ("gandi_address", "gandi-vm iface attach: address present", True),
    ("hand_address", "dhclient by hand: address present", True),
    ("address_over_hand", "difference (per run)", True),
    ("gandi_exit", "gandi-vm iface attach: exit", True),
    ("hand_exit", "dhclient by hand: exit (lease bound, daemon forked)", True),
    ("exit_over_hand", "difference (per run)", True),
    (None, "start-up (outside the namespace)", False),
    ("python_pass", "python3 -c pass", True),
    ("gandi_version", "python3 -m gandi_vm --version", True),
    ("startup", "python3 -c '" + ATTACH_IMPORTS + "'", True),
    ("netns_exec", "ip netns exec GUEST true (in every figure above)", True),
)


def render(meta: Dict[str, Any], summary: Dict[str, Dict[str, Any]]) -> str:
    width = max(len(label) for _, label, _ in ROWS) + 4
    lines = [
        f"gandi-vm iface attach: {meta['runs']} runs (+{meta['warmup']} warm-up not counted), "
        f"veth {NAME} in a network namespace, dnsmasq {meta['dnsmasq']}, {meta['client']}, "
        f"python {meta['python_version']} ({meta['python']}), kernel {meta['kernel']}",
        meta["baseline"],
        "",
        f"{'':{width}}{'median':>9}{'min':>9}{'max':>9}   (ms)",
    ]
    for key, label, indented in ROWS:
        text = ("  " + label) if indented else label
        if key is None:
            lines.append(text)
            continue
        row = summary[key]
        lines.append(f"{text:{width}}{row['median']:>9.1f}{row['min']:>9.1f}{row['max']:>9.1f}")
    events = meta["dhcp_events"]
    lines += ["", f"`--version` is {meta['version_vs_pass_ratio']:.2f}x a bare `python3 -c pass` "
              f"(medians); an attach starts one interpreter, the command: the sh lease script "
              f"hands it the first lease's dhclient events ({', '.join(events)}), and PREINIT "
              "runs no process"]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    return benchlib.parse_args(argv, __doc__.split("\n\n")[0], "iface_attach", "the lab's files")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    reason = gandi_netns.missing("dhclient") or gandi_netns.unusable()
    if reason:
        print(f"iface_attach.py: {reason}", file=sys.stderr)
        return 1
    if not os.access(args.python, os.X_OK):
        print(f"iface_attach.py: missing: {args.python}", file=sys.stderr)
        return 1

    unwind_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix="gandi-bench-iface-", dir=args.tmpdir))
    lab = Lab(tmp / "lab", secondaries=(NAME,), python=args.python)
    monitor: Optional[AddressMonitor] = None
    status = 0
    samples = []
    events: List[str] = []
    try:
        lab.start()
        monitor = AddressMonitor(lab)
        by_hand = ByHand(lab, tmp)
        sysctls = {k: v for k, v in lab.sysctls(NAME).items() if v}
        for index in range(args.warmup + args.runs):
            sample = one_run(lab, monitor, by_hand, args.python, sysctls, events)
            if index >= args.warmup:
                samples.append(sample)
    except (BenchError, LabError) as e:
        print(f"iface_attach.py: {e}", file=sys.stderr)
        status = 1
    except (KeyboardInterrupt, Interrupted):
        print("iface_attach.py: interrupted, cleaning up", file=sys.stderr)
        status = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # let the cleanup finish
        if monitor is not None:
            monitor.stop()
        problems = lab.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
        for problem in problems:
            print(f"iface_attach.py: cleanup: {problem}", file=sys.stderr)
            status = status or 1
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if status:
        return status

    summary = summarize(samples)
    python_version = run([args.python, "-c", "import platform; print(platform.python_version())"])
    dnsmasq = run(["dnsmasq", "--version"]).stdout.split()[2]
    client = run(["dhclient", "--version"], check=False)
    meta: Dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs,
        "warmup": args.warmup,
        "python": args.python,
        "python_version": python_version.stdout.strip(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "dnsmasq": dnsmasq + " (no ping check)",
        "client": (client.stdout + client.stderr).strip().splitlines()[0],
        "dhcp_events": events,
        "gandi_vm": str(REPO / "gandi_vm"),
        "baseline": BASELINE_WHY,
        "version_vs_pass_ratio": round(
            summary["gandi_version"]["median"] / summary["python_pass"]["median"], 3),
    }
    print(render(meta, summary))
    write_json(str(args.json), {"meta": meta, "ms": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
