#!/usr/bin/env python3
"""Measure what first-boot provisioning costs a real guest's boot: with and without a config drive.

Needs root (vm/build-image builds or reuses the Debian 12 guest image with this tree's .deb; the
disks are made as plain files with sfdisk, mkfs.vfat and mtools). Boots a fresh guest (root disk
in snapshot mode: every boot is an instance's first) --runs times for each variant, interleaved
so that a drift of the host's load spreads over all of them:

  plain      no extra disk: nothing to provision (the baseline)
  config-2   an OpenStack config drive (vfat labelled config-2: meta_data.json with uuid,
             hostname and a public key, and a user_data script)
  gandiswap  the platform's swap disk: a GPT partition named gandiswap, formatted and swapon'd
             at boot, and the historic archive 512 KiB into the disk (gandi/config with a user,
             keys, hostname, timezone; gandi/init, also run with --postboot)
  grown-root no extra disk, but the root disk is 1 GiB larger than its 2 GiB filesystem (as a
             system disk enlarged while the VM was stopped): gandi-mount.service grows / after
             local-fs.target, in the process that mounts the disks anyway

For each boot it records: the seconds from QEMU's start until the guest agent answered and until
systemd said the system was running (or degraded); `systemd-analyze time`'s kernel, initrd and
userspace parts; how long gandi-config.service's and gandi-postboot.service's main process ran
(ExecMainStart to ExecMainExit, systemd's monotonic clock); every gandi-* line of
`systemd-analyze blame`; and how many times /usr/bin/gandi-vm was executed during the boot.

That count comes from the kernel: the guest boots with benchlib.TRACE_ARGS (exec and fork), so
the kernel's trace buffer holds one line per execve() from the first process on, whoever started
it (a unit's ExecStart, a second ExecStart line, a DHCP client's event script) and whether it logs
anything or not; the script counts the lines whose filename is /usr/bin/gandi-vm (every Python
interpreter of ours starts that way). The buffer is large enough for a boot; a lost event is
reported. Tracing costs the guest next to nothing, and every variant pays it.

Prints the median of each figure per variant and the ratios to the plain boot. Only prints
figures (and writes them as JSON); asserts nothing about time. Exit status 1 if a guest does not
boot or a variant's provisioning did not happen (no instance recorded).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

from disks import config_drive, gandiswap_disk, missing_tools, platform_archive  # noqa: E402
from benchlib import TRACE_ARGS, analyze_time, exec_trace, median, seconds, subset, write_json  # noqa: E402
from qemu_guest import QEMU, Guest, GuestError, build_image  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "boot_provision.json"
VARIANTS = ("plain", "config-2", "gandiswap", "grown-root")
GIB = 1 << 30
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxs3kDP1gpwHvAqCr1QRYtzebmdRIX4mg7ZL2rf34Ox bench@host"
HASH = ("$6$provsalt1$/X0H7vzb/3P0pd2SLN8yAHQsCP67CuZ68.eous8FHMg4YqRdoeIM43u1OnI6Bl/"
        "UlTJFeOgKCffFtDWnAIjQt0")
INIT = """#!/bin/sh
echo "init $*" >>/var/lib/bench-init
"""
USER_DATA = """#!/bin/sh
echo user_data >>/var/lib/bench-user-data
"""
# Figures in seconds, in the order they are printed; *_count are counts.
FIGURES = ("agent_answered_s", "system_running_s", "kernel_s", "initrd_s", "userspace_s",
           "gandi_mount_s", "gandi_config_s", "gandi_postboot_s", "gandi_units_blame_s",
           "gandi_vm_exec_count")


def make_disk(variant: str, run: int, tmp: Path) -> List[Path]:
    instance = f"bench-{variant}-{run}-{os.getpid()}"
    if variant == "config-2":
        return [config_drive(tmp / f"config2-{run}.img",
                             {"uuid": instance, "hostname": "bench-stack",
                              "public_keys": {"bench": KEY}}, USER_DATA)]
    if variant == "gandiswap":
        config = {"instance_id": instance, "hostname": "bench-swap", "timezone": "Asia/Tokyo",
                  "root": {"ssh_authorized_keys": [KEY]},
                  "users": [{"name": "bench", "password_hash": HASH, "ssh_authorized_keys": [KEY],
                             "groups": ["adm"], "shell": "/bin/bash"}]}
        return [gandiswap_disk(tmp / f"gandiswap-{run}.img", platform_archive(config, INIT))]
    return []


def one_boot(image: Path, variant: str, run: int, tmp: Path, trace: bool) -> Dict[str, Any]:
    disks = make_disk(variant, run, tmp)
    root_size = (image / "rootfs.raw").stat().st_size + GIB if variant == "grown-root" else None
    guest = Guest(image, boot_disks=disks, kernel_args=TRACE_ARGS if trace else "",
                  root_size=root_size)
    try:
        running = guest.start()
        analysis = guest.boot_analysis()
        figures: Dict[str, Any] = {
            "agent_answered_s": round(guest.agent_seconds, 3),
            "system_running_s": round(running, 3),
            **analyze_time(analysis["systemd_analyze_time"]),
            "gandi_mount_s": guest.unit_seconds("gandi-mount.service"),
            "gandi_config_s": guest.unit_seconds("gandi-config.service"),
            "gandi_postboot_s": guest.unit_seconds("gandi-postboot.service"),
            "gandi_units_blame_s": round(sum(seconds(f) for f in analysis["units_blame"].values()), 3),
        }
        traced = exec_trace(guest) if trace else {"gandi_vm": None}
        gandi_vm = traced.pop("gandi_vm")
        figures["gandi_vm_exec_count"] = None if gandi_vm is None else float(gandi_vm)
        instance = guest.run("cat /var/lib/gandi-vm/instance.json")
        provisioned = instance.returncode == 0 and bool(instance.stdout.strip())
        if variant == "grown-root":  # its job is the grown /, not an instance
            provisioned = int(guest.check("df -B1 --output=size / | tail -n 1")) > root_size - GIB
        return {"variant": variant, "accel": guest.accel, "state": guest.state,
                "slowness": round(guest.slowness, 2),
                "figures": figures, "trace": traced, "blame": analysis["units_blame"],
                "systemd_analyze_time": analysis["systemd_analyze_time"],
                "provisioned": provisioned,
                "swaps": guest.run("tail -n +2 /proc/swaps").stdout.strip(),
                "failed_units": guest.run("systemctl --failed --no-legend --plain").stdout.strip()}
    finally:
        guest.stop()


def report(results: Dict[str, Any]) -> None:
    medians = results["medians"]
    variants = list(medians)
    print(f"\nMedians over {results['meta']['runs']} boot(s) per variant "
          f"({results['meta']['accel']}); seconds unless *_count\n")
    rows = [("figure", *variants, *(f"{v}/plain" for v in variants if v != "plain"))]
    for figure in FIGURES:
        cells = [medians[v].get(figure) for v in variants]
        shown = ["-" if c is None else (f"{c:.0f}" if figure.endswith("_count") else f"{c:.2f}")
                 for c in cells]
        base = medians.get("plain", {}).get(figure)
        ratios = []
        for v in variants:
            if v == "plain":
                continue
            value = medians[v].get(figure)
            ratios.append(f"x{value / base:.2f}" if value is not None and base else "-")
        rows.append((figure, *shown, *ratios))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))))
        if number == 0:
            print("  " + "  ".join("-" * w for w in widths))
    print("\n  agent_answered_s, system_running_s: from QEMU's start (running = "
          "`systemctl is-system-running --wait`)\n  kernel_s, initrd_s, userspace_s: "
          "`systemd-analyze time`\n  gandi_mount_s, gandi_config_s, gandi_postboot_s: the unit's "
          "main process, "
          "ExecMainStart to ExecMainExit\n  gandi_units_blame_s: the sum of the gandi-* lines of "
          "`systemd-analyze blame`\n  gandi_vm_exec_count: execve() of /usr/bin/gandi-vm during "
          "the boot (kernel trace, sched_process_exec)")
    for boot in results["boots"]:
        notes = []
        if not boot["provisioned"] and boot["variant"] != "plain":
            notes.append("NOT done (no /var/lib/gandi-vm/instance.json, or / not grown)")
        if boot["failed_units"]:
            notes.append(f"failed units: {boot['failed_units']}")
        if boot.get("trace", {}).get("lost"):
            notes.append(f"trace lost {boot['trace']['lost']} events")
        if boot.get("error"):
            notes.append(f"error: {boot['error']}")
        if notes:
            print(f"  {boot['variant']} run {boot['run']}: " + "; ".join(notes))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="boots per variant (default 2)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--no-trace", action="store_true",
                        help="boot without the exec trace (no gandi_vm_exec_count)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--image", type=Path, help="use this image directory instead of building it")
    args = parser.parse_args(argv)
    variants = subset(parser, args.variants, VARIANTS, "variants")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    missing = missing_tools()
    if missing:
        print("boot_provision: missing " + ", ".join(missing), file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        image = args.image or build_image()
    except GuestError as e:
        print(f"boot_provision: {e}", file=sys.stderr)
        return 1

    status = 0
    boots: List[Dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gandi-bench-boot-") as tmp:
        for run in range(1, args.runs + 1):
            for variant in variants:
                print(f"Booting {variant} (run {run}/{args.runs})...", flush=True)
                try:
                    boot = one_boot(image, variant, run, Path(tmp), not args.no_trace)
                except (GuestError, OSError, subprocess.SubprocessError) as e:
                    print(f"  {variant}: the guest did not boot: {e}", flush=True)
                    boots.append({"variant": variant, "run": run, "error": str(e).splitlines()[0],
                                  "figures": {}, "provisioned": False, "failed_units": ""})
                    status = 1
                    continue
                boot["run"] = run
                boots.append(boot)
                if variant != "plain" and not boot["provisioned"]:
                    status = 1
                figures = boot["figures"]
                execs = figures["gandi_vm_exec_count"]
                print(f"  running after {figures['system_running_s']:.1f} s, gandi-config "
                      f"{figures['gandi_config_s'] or 0:.2f} s, gandi-vm started "
                      f"{'?' if execs is None else f'{execs:.0f}'} times; "
                      f"provisioned: {boot['provisioned']}", flush=True)

    accel = next((b["accel"] for b in boots if "accel" in b), "?")
    results: Dict[str, Any] = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "host": platform.node(),
                 "qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                        check=False).stdout.splitlines()[0],
                 "accel": accel, "image": str(image), "runs": args.runs,
                 "trace": not args.no_trace},
        "medians": {v: {f: median([b["figures"].get(f) for b in boots if b["variant"] == v])
                        for f in FIGURES} for v in variants},
        "boots": boots,
    }
    report(results)
    write_json(str(args.json), results)
    return status


if __name__ == "__main__":
    sys.exit(main())
