#!/usr/bin/env python3
"""Measure what gandi-vm adds to a reboot of the Debian 12 guest, against what cloud-init adds.

Needs root (vm/build-image builds or reuses three images of the same Debian 12 base: `bare`, the
.deb's dependencies without gandi-vm; `gandi`, the test image with the package and its default
/etc/default/gandi; `cloud-init`, bare plus Debian's cloud-init) and the QEMU lock of the machine
(`flock /tmp/qemu.lock bench/boot_cost.py`: one QEMU at a time). Each kind gets a persistent root
overlay and is booted once, not counted: the instance's first boot (cloud-init's per-instance
modules, gandi-vm's first `config apply`). Then --rounds rounds: in each, every kind is booted
again on its overlay (a reboot: a clean power-off, then QEMU restarted on the same disks), in an
order rotated from round to round, so that a drift of the host's load spreads over all kinds.

The cloud-init guest keeps its NoCloud seed attached (a vfat disk labelled cidata: meta-data with
an instance-id and a hostname, user-data with a user, SSH keys, a timezone, growpart and
resize_rootfs as Debian configures them), so that ds-identify finds a datasource and cloud-init
runs its four stages at every boot, as on a cloud.

For each measured boot: `systemd-analyze time` (kernel, initrd, userspace, and the time to the
default target, multi-user or graphical, in userspace), the seconds from QEMU's start until
`systemctl is-system-running --wait` returned, the processes executed during the boot (from the
kernel's exec trace, see benchlib.TRACE_ARGS: all of them, /usr/bin/gandi-vm's, the Python
interpreters', cloud-init's), the gandi-* and cloud-* lines of `systemd-analyze blame`, and which
of those units are ordered before sysinit.target (`systemctl list-dependencies --after
sysinit.target`) and ran.

Prints the medians and spread per kind, then issue 14's figures: a kind's cost is the median of
its userspace time to the default target minus the bare kind's; the goal is cost(gandi) at most
0.2x cost(cloud-init), and nothing of ours run before sysinit.target. Figures only (also as JSON):
exit status 1 only if a guest does not boot.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

from benchlib import TRACE_ARGS, analyze_time, exec_trace, median, seconds, subset, write_json  # noqa: E402
from disks import missing_tools, nocloud_seed  # noqa: E402
from qemu_guest import QEMU, Guest, GuestError, build_image  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "boot_cost.json"
KINDS = ("bare", "gandi", "cloud-init")
GOAL = 0.2  # issue 14: the package adds at most 0.2x what cloud-init adds to a reboot
UNITS = re.compile(r"^(gandi-|cloud-)")  # the units of the two packages
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxs3kDP1gpwHvAqCr1QRYtzebmdRIX4mg7ZL2rf34Ox bench@host"
USER_DATA = f"""#cloud-config
hostname: bench-cloud
fqdn: bench-cloud.example.net
manage_etc_hosts: true
timezone: Asia/Tokyo
ssh_authorized_keys: ["{KEY}"]
users:
  - default
  - name: bench
    groups: [adm]
    shell: /bin/bash
    ssh_authorized_keys: ["{KEY}"]
growpart: {{mode: auto, devices: ["/"]}}
resize_rootfs: true
"""
# Figures in seconds, in the order they are printed; *_count are counts.
FIGURES = ("system_running_s", "kernel_s", "initrd_s", "userspace_s", "target_s",
           "units_blame_s", "execs_count", "gandi_vm_count", "gandi_requests_count", "python_count",
           "cloud_init_count")


def seed(tmp: Path) -> Path:
    return nocloud_seed(tmp / "cidata.img",
                        f"instance-id: bench-cloud-{os.getpid()}\nlocal-hostname: bench-cloud\n",
                        USER_DATA)


def blame(guest: Guest) -> Dict[str, str]:
    """The two packages' lines of `systemd-analyze blame`: {unit: "1.234s"}."""
    units = {}
    for line in guest.run("systemd-analyze blame --no-pager").stdout.splitlines():
        figure, _, unit = line.strip().rpartition(" ")
        if UNITS.match(unit):
            units[unit] = figure.strip()
    return units


def before_sysinit(guest: Guest) -> Dict[str, bool]:
    """The two packages' units ordered before sysinit.target, each with whether it ran this boot
    (a unit whose condition failed is ordered there but costs nothing)."""
    listed = guest.run("systemctl list-dependencies --after --plain --no-legend --no-pager "
                       "sysinit.target").stdout
    names = sorted({word for line in listed.splitlines() for word in line.split()
                    if UNITS.match(word)})
    ran = {}
    for unit in names:
        shown = guest.run(f"systemctl show -p InactiveExitTimestampMonotonic "
                          f"-p ExecMainStartTimestampMonotonic {unit}").stdout
        ran[unit] = any(value.strip() not in ("", "0") for _, _, value in
                        (line.partition("=") for line in shown.splitlines()))
    return ran


def measure_boot(guest: Guest) -> Dict[str, Any]:
    """Boot the guest (its first boot or a reboot) and read what this boot cost."""
    running = guest.start()
    traced = exec_trace(guest)  # first: nothing of the bench's own in it, the agent's aside
    analysis = guest.run("systemd-analyze time").stdout.strip()
    times = analyze_time(analysis)
    units = blame(guest)
    figures: Dict[str, Optional[float]] = {
        "system_running_s": round(running, 3),
        **{k: times.get(k) for k in ("kernel_s", "initrd_s", "userspace_s")},
        "target_s": times.get("multi_user_s", times.get("graphical_s")),
        "units_blame_s": round(sum(seconds(f) for f in units.values()), 3),
        **{f"{k}_count": traced[k] for k in ("execs", "gandi_vm", "gandi_requests", "python",
                                            "cloud_init")},
    }
    failed = guest.run("systemctl --failed --no-legend --plain").stdout.strip()
    return {"figures": figures, "state": guest.state, "systemd_analyze_time": analysis,
            "blame": units, "before_sysinit": before_sysinit(guest), "trace": traced,
            "failed_units": failed, "hostname": guest.run("hostname").stdout.strip(),
            # why a unit failed, in the JSON: the error lines of the journal
            "errors": guest.run("journalctl -b -p err --no-pager -o short-monotonic | tail -n 20"
                                ).stdout.strip() if failed else ""}


def rotated(kinds: List[str], by: int) -> List[str]:
    return kinds[by % len(kinds):] + kinds[:by % len(kinds)]


def spread(values: List[Optional[float]]) -> str:
    present = [v for v in values if v is not None]
    return f"{min(present):.2f}-{max(present):.2f}" if present else "-"


def report(results: Dict[str, Any]) -> None:
    medians, boots = results["medians"], results["boots"]
    kinds = list(medians)
    print(f"\nReboots: median (min-max) over {results['meta']['rounds']} round(s) per kind "
          f"({results['meta']['accel']}); seconds unless *_count\n")
    rows = [("figure", *kinds)]
    for figure in FIGURES:
        cells = []
        for kind in kinds:
            value = medians[kind].get(figure)
            samples = [b["figures"].get(figure) for b in boots if b["kind"] == kind and b["measured"]]
            if value is None:
                cells.append("-")
            elif figure.endswith("_count"):
                cells.append(f"{value:.0f} ({spread(samples).replace('.00', '')})")
            else:
                cells.append(f"{value:.2f} ({spread(samples)})")
        rows.append((figure, *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))))
        if number == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print("\n  system_running_s: QEMU's start to `systemctl is-system-running --wait`\n"
          "  kernel_s, initrd_s, userspace_s: `systemd-analyze time`; target_s: its "
          "'multi-user.target (or graphical.target)\n    reached after ... in userspace'\n"
          "  units_blame_s: the sum of the gandi-* and cloud-* lines of `systemd-analyze blame`\n"
          "  *_count: execve() during the boot (kernel trace; the bench's own, the guest agent's, "
          "left out): all, of\n    /usr/bin/gandi-vm, of Python (python3, or a script whose #! "
          "names it), of cloud-init's programs")

    print("\nPer kind (last measured boot): units of the package in `systemd-analyze blame`")
    for kind in kinds:
        last = [b for b in boots if b["kind"] == kind and b["measured"]]
        if last:
            lines = ", ".join(f"{u} {f}" for u, f in last[-1]["blame"].items()) or "(none)"
            print(f"  {kind}: {lines}")

    costs = results["costs"]
    print("\nIssue 14: what each package adds to the bare guest's reboot (medians)")
    for kind in ("gandi", "cloud-init"):
        cost = costs.get(kind)
        if cost is not None:
            print(f"  cost({kind}) = {cost['target_s']:+.2f} s to the default target in userspace "
                  f"({cost['system_running_s']:+.2f} s to running from QEMU's start), "
                  f"{cost['execs_count']:+.0f} processes (per reboot: "
                  f"{medians[kind]['gandi_vm_count']:.0f} gandi-vm, "
                  f"{medians[kind]['gandi_requests_count']:.0f} served by gandi-vm's agent, "
                  f"{medians[kind]['python_count']:.0f} Python interpreters in all, "
                  f"{medians[kind]['cloud_init_count']:.0f} cloud-init)")
    ratio = costs.get("ratio")
    if ratio is not None:
        print(f"  cost(gandi) / cost(cloud-init) = {ratio:.2f}x   goal <= {GOAL}x: "
              f"{'MET' if ratio <= GOAL else 'NOT MET'}")
    for kind in kinds:
        units = results["before_sysinit"].get(kind, {})
        ran = [u for u, r in units.items() if r]
        if kind != "bare":
            print(f"  {kind}: nothing before sysinit.target: {'no' if ran else 'yes'}"
                  + (f" (ran: {', '.join(ran)})" if ran else "")
                  + (f"; ordered there but did not run: {', '.join(u for u in units if not units[u])}"
                     if any(not r for r in units.values()) else ""))
    for boot in boots:
        notes = []
        if boot.get("error"):
            notes.append(f"error: {boot['error']}")
        if boot.get("failed_units"):
            notes.append(f"failed units: {boot['failed_units']}")
        if boot.get("trace", {}).get("lost"):
            notes.append(f"trace lost {boot['trace']['lost']} events")
        if notes:
            print(f"  {boot['kind']} boot {boot['boot']}: " + "; ".join(notes))


def costs_of(medians: Dict[str, Dict[str, Optional[float]]]) -> Dict[str, Any]:
    """Each package's cost over the bare kind, and the ratio the goal is about."""
    out: Dict[str, Any] = {}
    bare = medians.get("bare", {})
    for kind in ("gandi", "cloud-init"):
        figures = medians.get(kind, {})
        if all(figures.get(f) is not None and bare.get(f) is not None
               for f in ("target_s", "system_running_s", "execs_count")):
            out[kind] = {f: round(figures[f] - bare[f], 3)
                         for f in ("target_s", "system_running_s", "execs_count")}
    if "gandi" in out and "cloud-init" in out and out["cloud-init"]["target_s"] > 0:
        out["ratio"] = round(out["gandi"]["target_s"] / out["cloud-init"]["target_s"], 3)
        out["goal"] = GOAL
        out["goal_met"] = out["ratio"] <= GOAL
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="measured reboots of each kind, round-robin (default 3)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)} (default all)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--image", type=Path,
                        help="the gandi kind's image directory instead of building this tree's")
    args = parser.parse_args(argv)
    kinds = subset(parser, args.kinds, KINDS, "kinds")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    missing = missing_tools()
    if missing:
        print("boot_cost: missing " + ", ".join(missing), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        images = {kind: (args.image or build_image()) if kind == "gandi"
                  else build_image(variant=kind) for kind in kinds}
    except GuestError as e:
        print(f"boot_cost: {e}", file=sys.stderr)
        return 1

    status = 0
    boots: List[Dict[str, Any]] = []
    guests: Dict[str, Guest] = {}
    with tempfile.TemporaryDirectory(prefix="gandi-bench-cost-") as tmp:
        try:
            for kind in kinds:
                guests[kind] = Guest(images[kind], persistent=True, kernel_args=TRACE_ARGS,
                                     boot_disks=[seed(Path(tmp))] if kind == "cloud-init" else [])
            for boot in range(args.rounds + 1):
                for kind in rotated([k for k in kinds if k in guests], boot):
                    guest = guests[kind]
                    what = "first boot, not counted" if boot == 0 else f"reboot {boot}/{args.rounds}"
                    print(f"Booting {kind} ({what})...", flush=True)
                    try:
                        measured = measure_boot(guest)
                        guest.shutdown()
                    except (GuestError, OSError, subprocess.SubprocessError) as e:
                        print(f"  {kind}: the guest did not boot: {str(e).splitlines()[0]}\n"
                              f"{guest.console_tail()}", flush=True)
                        boots.append({"kind": kind, "boot": boot, "measured": False,
                                      "error": str(e).splitlines()[0], "figures": {}})
                        guest.stop()
                        del guests[kind]  # its overlay is gone with its working directory
                        status = 1
                        continue
                    measured.update(kind=kind, boot=boot, measured=boot > 0)
                    boots.append(measured)
                    figures = measured["figures"]
                    print(f"  {measured['state']} after {figures['system_running_s']:.1f} s, "
                          f"target after {figures['target_s'] or 0:.1f} s in userspace, "
                          f"{figures['execs_count']} execs ({figures['gandi_vm_count']} gandi-vm, "
                          f"{figures['gandi_requests_count']} agent requests, "
                          f"{figures['cloud_init_count']} cloud-init)", flush=True)
        finally:
            for guest in guests.values():
                guest.stop()

    measured_boots = [b for b in boots if b["measured"]]
    medians = {kind: {f: median([b["figures"].get(f) for b in measured_boots if b["kind"] == kind])
                      for f in FIGURES} for kind in kinds}
    results: Dict[str, Any] = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "host": platform.node(),
                 "qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                        check=False).stdout.splitlines()[0],
                 "accel": next((g.accel for g in guests.values()), "tcg"),
                 "images": {k: str(v) for k, v in images.items()}, "rounds": args.rounds},
        "medians": medians,
        "costs": costs_of(medians),
        "before_sysinit": {kind: next((b["before_sysinit"] for b in reversed(measured_boots)
                                       if b["kind"] == kind), {}) for kind in kinds},
        "boots": boots,
    }
    report(results)
    write_json(str(args.json), results)
    return status


if __name__ == "__main__":
    sys.exit(main())
