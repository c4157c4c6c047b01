#!/usr/bin/env python3
"""Measure hotplug latency in a real guest: from QMP's acknowledgement to a usable resource.

Needs root (vm/build-image builds or reuses the Debian 12 guest image with this tree's .deb) and
the QEMU lock of the machine (`flock /tmp/qemu.lock bench/hotplug_latency.py`). Boots one guest
under QEMU and, for each device kind, times --runs hotplugs from the acknowledgement of the QMP
command that plugs the device to the moment the guest can use it:

  disk         a fresh 64 MiB labelled ext4 image each run: mounted under /srv (then unplugged,
               and the cleanup timed too: mount and mountpoint gone, unit inactive)
  disk-byhand  the floor: the same disk with our unit masked for its kernel name (systemctl mask
               --runtime gandi-disk@vdX), and what our handler does done by a shell script
               started in the guest before the plug: `udevadm wait` for the device, e2fsck -p,
               mkdir, mount. Same plug, same udev path, same poll of the mount
  burst        6 labelled disks plugged back to back: all 6 mounted, from the first plug's
               acknowledgement (then unplugged)
  burst-byhand the floor of a burst: the same 6 plugs with our unit masked for their 6 kernel
               names, and a script doing disk-byhand's steps for each disk in turn as it comes.
               Its ratio to disk-byhand is what the plugs themselves cost (the guest sees the
               6 devices one after another): the bound under which no handler can bring `burst`
  nic          a virtio NIC in PCI slot 16 (ens16) on a user-mode network of its own with DHCP:
               an IPv4 address assigned (then unplugged)
  nic-byhand   the floor: the same NIC with gandi-iface@ens16 masked, and `dhclient -1` with
               Debian's dhclient-script run by a script started in the guest before the plug,
               once udev has named the interface
  memory       a 256 MiB pc-dimm: all its memory blocks online (never unplugged: at most 4 slots)
  vcpu         a vCPU in a free slot: online (never unplugged: QEMU under TCG is unstable after a
               vCPU unplug; at most 3 free slots)

Every event's processes are counted by the kernel: the guest boots with benchlib.TRACE_ARGS, the
trace buffer is emptied before each plug and read once the guest is usable and no gandi-* unit
is still starting: how many programs were executed (the bench's own polls, run by the guest
agent, left out; so are the by-hand scripts), and how many of them were /usr/bin/gandi-vm, that
is our Python interpreters. The goals of issue 14 are printed as ratios of medians: disk over
disk-byhand (at most 1.3x), nic over nic-byhand (1.5x), burst over disk (2x); and, as the
floor of that last one, burst-byhand over disk-byhand.

For memory and vCPUs it also counts what the event cost in processes, from the guest's journal
(udevd runs at debug level for this): the programs udevd spawned ("Starting '...'"), the units
systemd started, and the attribute writes udevd made itself ("ATTR ... writing"). The onlining
rule is an attribute assignment, so the expected count of processes is 0.

A resource that is not usable within --timeout (on an idle machine, stretched by the guest's
slowness: its boot time over an idle machine's) ends the runs of its kind, reported as an error
with what the guest showed, instead of N timeouts. Also reports the boot: seconds until the guest
agent answered and until systemd reported the system running, and what our units cost at boot
(`systemd-analyze blame`, gandi-* lines).

Every figure is found by polling from the host through the guest agent; one poll costs about
65-85 ms (measured and printed), which bounds the resolution. Only prints figures (and writes
them as JSON); it asserts nothing about time. Exit status 1 if the guest does not boot or a
kind fails.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

from benchlib import TRACE_ARGS, clear_trace, exec_trace, subset, write_json  # noqa: E402
from qemu_guest import QEMU, Guest, GuestError, build_image, make_disk  # noqa: E402

DEFAULT_JSON = REPO / "bench" / "results" / "hotplug_latency.json"
# vCPUs last: the least stable hotplug under TCG. Each floor right after what it is the floor of.
KINDS = ("disk", "disk-byhand", "burst", "burst-byhand", "nic", "nic-byhand", "memory", "vcpu")
DISK_TIMEOUT = 60.0  # the disk is built: a generous bound, a miss is a failure
BURST = 6
BURST_TIMEOUT = 180.0
NIC_SLOT = 16  # a fixed PCI slot: the interface's predictable name is ens16 before it exists
# Issue 14's goals: (kind, the kind it is compared with, the highest ratio of their medians).
GOALS = (("disk", "disk-byhand", 1.3), ("nic", "nic-byhand", 1.5), ("burst", "disk", 2.0))
# Not a goal: what the same ratio is by hand, the plugs' own cost (printed beside the goals).
FLOORS = (("burst-byhand", "disk-byhand"), ("burst", "burst-byhand"))
BYHAND_DONE = "/run/bench-byhand.done"
LABEL = "bench-data"
MOUNTPOINT = f"/srv/{LABEL}"
DIMM_BYTES = 256 << 20
DIMM_SLOTS = 4  # -m 512M,slots=4,maxmem=2G
CPU_SYSFS = "/sys/devices/system/cpu"
MEM_SYSFS = "/sys/devices/system/memory"


class NotUsable(Exception):
    """The resource appeared in the guest but was not usable within the bound."""


def poll_cost(guest: Guest, count: int = 10) -> float:
    """Median seconds of one guest-agent round trip running a command (`true`)."""
    samples = []
    for _ in range(count):
        started = time.monotonic()
        guest.run("true")
        samples.append(time.monotonic() - started)
    return statistics.median(samples)


# -- one measured run per kind -----------------------------------------------------------------
# Each returns {figure: seconds}: "usable" is the headline figure, the others are secondary.
# `bound` is how long the resource may take to become usable on an idle machine; Guest.poll
# stretches it by the guest's slowness.

def process_counts(guest: Guest, bound: float = 30) -> Dict[str, Any]:
    """The processes the event cost since the trace was emptied: once no gandi-* unit is starting
    or stopping any more (bound seconds at most, scaled), the programs executed and how many of them
    were /usr/bin/gandi-vm, and the busiest programs ({path: count}, kept in the JSON)."""
    guest.poll("! systemctl list-units --no-legend --plain --state=activating,deactivating "
               "'gandi-*' | grep -q .", bound)
    traced = exec_trace(guest)
    if traced["execs"] is None:
        return {}
    return {"execs_count": float(traced["execs"]), "gandi_vm_count": float(traced["gandi_vm"]),
            "gandi_requests_count": float(traced["gandi_requests"]),
            "python_count": float(traced["python"]), "programs": traced["programs"]}


def free_disk_names(guest: Guest, count: int = 1) -> List[str]:
    """The kernel names the next virtio disks get: the first vdX not in use."""
    used = set(guest.check("ls /sys/block").split())
    return [f"vd{c}" for c in "bcdefghijklmnopqrstuvwxyz" if f"vd{c}" not in used][:count]


def start_byhand(guest: Guest, script: str) -> None:
    """Start a shell script in the guest, in the background, that writes its exit status to
    BYHAND_DONE: it waits there for the device before the plug, as our rule and unit do. The trace
    is emptied first, as the mask's daemon-reload ran systemd's generators, and not after: the
    script's fork from the guest agent must be in it, so that its processes count as the bench's."""
    clear_trace(guest)
    guest.check(f"rm -f {BYHAND_DONE}; setsid sh -c '{script}; echo $? >{BYHAND_DONE}' "
                "</dev/null >/dev/null 2>&1 &")


def byhand_status(guest: Guest, bound: float) -> str:
    """The by-hand script's exit status, once it has written it."""
    guest.poll(f"test -s {BYHAND_DONE}", bound)
    return guest.run(f"cat {BYHAND_DONE}").stdout.strip() or "(none)"


def plug_disk(guest: Guest, tmp: Path, device: str, label: str) -> Path:
    image = make_disk(tmp / f"{device}.raw", "ext4", label)
    guest.add_disk(image, device)
    return image


def unplug_disks(guest: Guest, devices: Dict[str, str], bound: float) -> float:
    """Unplug the disks ({device id: mountpoint}); the seconds until every mount and mountpoint
    is gone and no gandi-disk@ unit of theirs is active."""
    names = {device: guest.kernel_name(device) for device in devices}
    started = time.monotonic()
    for device in devices:
        guest.remove_disk(device)  # device_del (acknowledged at once), DEVICE_DELETED, blockdev-del
    cleaned = guest.poll(" && ".join(
        f"! findmnt -n {mountpoint} >/dev/null && ! test -e {mountpoint} && "
        f"! systemctl -q is-active gandi-disk@{names[device]}.service"
        for device, mountpoint in devices.items()), bound, started)
    if cleaned is None:
        raise GuestError(f"{', '.join(devices.values())} not cleaned up {guest.scaled(bound):.0f} s "
                         "after the unplug")
    return cleaned


def disk_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    device = f"bench-disk{index}"
    image = plug_disk(guest, tmp, device, LABEL)
    acked = time.monotonic()
    usable = guest.poll(f"findmnt -n {MOUNTPOINT} >/dev/null", bound, acked)
    if usable is None:
        raise GuestError(f"{device}: nothing mounted at {MOUNTPOINT} {guest.scaled(bound):.0f} s "
                         "after the plug")
    counts = process_counts(guest)
    cleaned = unplug_disks(guest, {device: MOUNTPOINT}, bound)
    image.unlink()
    return {"usable": usable, "unplug_cleaned": cleaned, **counts}


def disk_byhand_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    device, [name] = f"bench-byhand{index}", free_disk_names(guest)
    unit = f"gandi-disk@{name}.service"
    guest.check(f"systemctl mask --runtime {unit}")
    try:
        start_byhand(guest, f"udevadm wait --timeout=300 /dev/{name} && e2fsck -p /dev/{name} && "
                            f"mkdir -p {MOUNTPOINT} && mount /dev/{name} {MOUNTPOINT}")
        image = plug_disk(guest, tmp, device, LABEL)
        acked = time.monotonic()
        usable = guest.poll(f"findmnt -n {MOUNTPOINT} >/dev/null", bound, acked)
        if guest.kernel_name(device) != name:
            raise GuestError(f"{device} is not {name}: our unit was not masked for it")
        if usable is None:
            raise GuestError(f"{device}: the by-hand script mounted nothing at {MOUNTPOINT} "
                             f"{guest.scaled(bound):.0f} s after the plug (status "
                             f"{byhand_status(guest, 1)})")
        counts = process_counts(guest)
        byhand_status(guest, bound)
        guest.check(f"umount {MOUNTPOINT} && rmdir {MOUNTPOINT}")
        guest.remove_disk(device)
    finally:
        guest.check(f"systemctl unmask --runtime {unit}")
    image.unlink()
    return {"usable": usable, **counts}


def plug_burst(guest: Guest, tmp: Path, devices: Dict[str, str], bound: float,
               images: List[Path]) -> Optional[float]:
    """Plug the disks ({device id: mountpoint}, each labelled as its mountpoint's last part) back
    to back, their images appended to images; the seconds from the first plug's acknowledgement
    until all are mounted, or None after bound."""
    acked = 0.0
    for number, (device, mountpoint) in enumerate(devices.items()):
        images.append(plug_disk(guest, tmp, device, mountpoint.rpartition("/")[2]))
        if number == 0:
            acked = time.monotonic()
    return guest.poll(" && ".join(f"findmnt -n {mountpoint} >/dev/null"
                                  for mountpoint in devices.values()), bound, acked)


def burst_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    devices = {f"bench-burst{index}-{n}": f"/srv/bench-b{n}" for n in range(BURST)}
    images: List[Path] = []
    usable = plug_burst(guest, tmp, devices, bound, images)
    if usable is None:
        mounted = guest.run("findmnt -n -o TARGET | grep -c '^/srv/bench-b'").stdout.strip()
        raise GuestError(f"{mounted or 0} of {BURST} disks mounted {guest.scaled(bound):.0f} s "
                         "after the first plug")
    counts = process_counts(guest)
    cleaned = unplug_disks(guest, devices, bound)
    for image in images:
        image.unlink()
    return {"usable": usable, "unplug_cleaned": cleaned, **counts}


def burst_byhand_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    names = free_disk_names(guest, BURST)
    devices = {f"bench-hburst{index}-{n}": f"/srv/bench-h{n}" for n in range(BURST)}
    units = " ".join(f"gandi-disk@{name}.service" for name in names)
    guest.check(f"systemctl mask --runtime {units}")
    images: List[Path] = []
    try:
        start_byhand(guest, " && ".join(
            f"udevadm wait --timeout=300 /dev/{name} && e2fsck -p /dev/{name} && "
            f"mkdir -p {mountpoint} && mount /dev/{name} {mountpoint}"
            for name, mountpoint in zip(names, devices.values())))
        usable = plug_burst(guest, tmp, devices, bound, images)
        if [guest.kernel_name(device) for device in devices] != names:
            raise GuestError(f"{', '.join(devices)} are not {', '.join(names)}: our units were "
                             "not masked for them")
        if usable is None:
            raise GuestError(f"the by-hand script did not mount all {BURST} disks "
                             f"{guest.scaled(bound):.0f} s after the first plug (status "
                             f"{byhand_status(guest, 1)})")
        counts = process_counts(guest)
        byhand_status(guest, bound)
        guest.check(" && ".join(f"umount {mountpoint} && rmdir {mountpoint}"
                                for mountpoint in devices.values()))
        for device in devices:
            guest.remove_disk(device)
    finally:
        guest.check(f"systemctl unmask --runtime {units}")
    for image in images:
        image.unlink()
    return {"usable": usable, **counts}


def nic_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    device, mac, name = f"bench-nic{index}", f"52:54:00:be:00:{index:02x}", f"ens{NIC_SLOT}"
    guest.add_nic(device, mac, net=f"10.0.{10 + index}.0/24", slot=NIC_SLOT)
    acked = time.monotonic()
    try:
        if guest.nic_name(mac) != name:
            raise GuestError(f"{device} is not {name}")
        appeared = time.monotonic() - acked
        usable = guest.poll(f"ip -4 -o addr show dev {name} | grep -q inet", bound, acked)
        counts = process_counts(guest) if usable is not None else {}
    finally:
        unplugged = time.monotonic()
        guest.remove_nic(device)
        # The next plug gets the same name: its unit would not start while this one still stops.
        cleaned = guest.poll(f"systemctl is-active gandi-iface@{name}.service | "
                             "grep -qxE 'inactive|failed'", 2 * bound, unplugged)
    if usable is None:
        raise NotUsable(f"{name} appeared {appeared:.2f} s after the plug, has no IPv4 address "
                        f"after {guest.scaled(bound):.0f} s")
    if cleaned is None:
        raise GuestError(f"gandi-iface@{name} still active {guest.scaled(2 * bound):.0f} s after "
                         "the unplug")
    return {"usable": usable, "interface_appeared": appeared, "unplug_cleaned": cleaned, **counts}


def nic_byhand_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    device, mac, name = f"bench-nicbh{index}", f"52:54:00:be:01:{index:02x}", f"ens{NIC_SLOT}"
    unit = f"gandi-iface@{name}.service"
    client = f"-pf /run/bench-dhclient.pid -lf /run/bench-dhclient.leases {name}"
    # Debian's dhclient-script rewrites /etc/resolv.conf: put the guest's back afterwards.
    guest.check(f"systemctl mask --runtime {unit} && cp -a /etc/resolv.conf /run/bench-resolv.conf")
    try:
        start_byhand(guest, f"udevadm wait --timeout=300 /sys/class/net/{name} && "
                            f"dhclient -4 -1 -sf /sbin/dhclient-script {client}")
        guest.add_nic(device, mac, net=f"10.0.{30 + index}.0/24", slot=NIC_SLOT)
        acked = time.monotonic()
        try:
            if guest.nic_name(mac) != name:
                raise GuestError(f"{device} is not {name}: our unit was not masked for it")
            appeared = time.monotonic() - acked
            usable = guest.poll(f"ip -4 -o addr show dev {name} | grep -q inet", bound, acked)
            counts = process_counts(guest) if usable is not None else {}
            status = byhand_status(guest, bound)
        finally:
            guest.run("kill $(cat /run/bench-dhclient.pid) 2>/dev/null; rm -f /run/bench-dhclient.*")
            guest.remove_nic(device)
    finally:
        guest.check(f"systemctl unmask --runtime {unit} && cp -a /run/bench-resolv.conf "
                    "/etc/resolv.conf")
    if usable is None:
        raise NotUsable(f"{name} appeared {appeared:.2f} s after the plug, has no IPv4 address "
                        f"after {guest.scaled(bound):.0f} s (by-hand dhclient: status {status})")
    return {"usable": usable, "interface_appeared": appeared, **counts}


def memory_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    before = guest.memory_blocks()
    block_bytes = int(guest.check(f"cat {MEM_SYSFS}/block_size_bytes"), 16)
    cursor = journal_cursor(guest)
    guest.add_memory(f"bench-dimm{index}", DIMM_BYTES)
    acked = time.monotonic()
    wanted = len(before) + DIMM_BYTES // block_bytes
    if guest.poll(f"test $(ls -d {MEM_SYSFS}/memory[0-9]* | wc -l) -ge {wanted}", bound,
                  acked) is None:
        raise GuestError(f"no new memory blocks in the guest {guest.scaled(bound):.0f} s after the plug")
    appeared = time.monotonic() - acked
    new = sorted(set(guest.memory_blocks()) - set(before))
    usable = guest.poll(" && ".join(f"grep -qx online {MEM_SYSFS}/memory{n}/state" for n in new),
                        bound, acked)
    if usable is None:
        raise NotUsable(f"memory{new[0]}..memory{new[-1]} appeared {appeared:.2f} s after the plug, "
                       f"still offline after {guest.scaled(bound):.0f} s")
    return {"usable": usable, "blocks_appeared": appeared, **event_costs(guest, cursor),
            **process_counts(guest)}


def journal_cursor(guest: Guest) -> str:
    out = guest.check("journalctl -n 0 --show-cursor --no-pager")
    return out.strip().rpartition("-- cursor: ")[2]


def event_costs(guest: Guest, cursor: str) -> Dict[str, float]:
    """What the events since `cursor` cost: programs udevd spawned, units systemd started, and the
    sysfs writes udevd made itself. Counted from the journal (udevd at debug level)."""
    def count(selector: str, pattern: str) -> float:
        out = guest.run(f"journalctl --no-pager -o cat --after-cursor='{cursor}' {selector} "
                        f"| grep -c {pattern}").stdout.strip()
        return float(out or 0)

    udevd = "_COMM=systemd-udevd '_COMM=(udev-worker)'"  # its workers rename themselves
    return {"udev_spawned_count": count(udevd, "\"Starting '\""),
            "units_started_count": count("_PID=1", "'^Starting .*\\.service'"),
            "udev_attr_writes_count": count(udevd, "\"ATTR '.*' writing\"")}


def vcpu_run(guest: Guest, index: int, bound: float, tmp: Path) -> Dict[str, Any]:
    before = guest.cpus()
    cursor = journal_cursor(guest)
    guest.add_cpu(f"bench-cpu{index}")
    acked = time.monotonic()
    if guest.poll(f"test $(ls -d {CPU_SYSFS}/cpu[0-9]* | wc -l) -gt {len(before)}", bound,
                  acked) is None:
        raise GuestError(f"no new cpu in the guest {guest.scaled(bound):.0f} s after the plug")
    appeared = time.monotonic() - acked
    cpu = min(set(guest.cpus()) - set(before))
    usable = guest.poll(f"grep -qx 1 {CPU_SYSFS}/cpu{cpu}/online", bound, acked)
    if usable is None:
        raise NotUsable(f"cpu{cpu} appeared {appeared:.2f} s after the plug, still offline after "
                       f"{guest.scaled(bound):.0f} s")
    return {"usable": usable, "cpu_appeared": appeared, **event_costs(guest, cursor),
            **process_counts(guest)}


RUNNERS: Dict[str, Callable[[Guest, int, float, Path], Dict[str, Any]]] = {
    "disk": disk_run, "disk-byhand": disk_byhand_run, "burst": burst_run,
    "burst-byhand": burst_byhand_run, "nic": nic_run,
    "nic-byhand": nic_byhand_run, "memory": memory_run, "vcpu": vcpu_run}


def free_cpu_slots(guest: Guest) -> int:
    return sum("qom-path" not in slot for slot in guest.qmp.execute("query-hotpluggable-cpus"))


def measure(guest: Guest, kind: str, runs: int, timeout: float, tmp: Path) -> Dict[str, Any]:
    """All runs of one kind; the first run that fails ends them."""
    result: Dict[str, Any] = {"status": "ok", "runs": 0, "samples_s": {}, "note": ""}
    limit = DIMM_SLOTS if kind == "memory" else free_cpu_slots(guest) if kind == "vcpu" else None
    if limit is not None and runs > limit:
        result["note"] = f"{limit} runs: no more free slots (never unplugged)"
        runs = limit
    bound = {"disk": DISK_TIMEOUT, "disk-byhand": DISK_TIMEOUT, "burst": BURST_TIMEOUT,
             "burst-byhand": BURST_TIMEOUT}.get(kind, timeout)
    for index in range(runs):
        clear_trace(guest)
        try:
            figures = RUNNERS[kind](guest, index, bound, tmp)
        except NotUsable as e:
            result["status"] = f"error: {e}"
            result["note"] = f"{e}; stopped after this attempt"
            print(f"  {kind}: {result['status']}: {e}", flush=True)
            break
        except (GuestError, OSError, subprocess.SubprocessError, ValueError) as e:
            result["status"] = f"error: {e}"
            break
        result["runs"] += 1
        result.setdefault("programs", []).append(figures.pop("programs", {}))
        for name, seconds in figures.items():
            result["samples_s"].setdefault(name, []).append(round(seconds, 3))
        print(f"  {kind} run {index + 1}/{runs}: " + ", ".join(
            f"{name} {value:.0f}" if name.endswith("_count") else f"{name} {value:.2f} s"
            for name, value in figures.items()), flush=True)
    result["stats_s"] = {name: {"median": round(statistics.median(samples), 3),
                                "min": min(samples), "max": max(samples)}
                         for name, samples in result["samples_s"].items()}
    return result


def boot_costs(guest: Guest) -> Dict[str, Any]:
    blame = guest.run("systemd-analyze blame --no-pager | grep gandi-").stdout
    units = {}
    for line in blame.splitlines():
        figure, _, unit = line.strip().rpartition(" ")
        units[unit] = figure.strip()
    return {"systemd_analyze_time": guest.run("systemd-analyze time | head -n 1").stdout.strip(),
            "units_blame": units}


def ratio(kinds: Dict[str, Any], kind: str, against: str) -> Optional[float]:
    """The ratio of two kinds' median `usable` in this run (None where one is missing)."""
    medians = [kinds.get(k, {}).get("stats_s", {}).get("usable", {}).get("median")
               for k in (kind, against)]
    return round(medians[0] / medians[1], 3) if None not in medians and medians[1] else None


def goals(kinds: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Issue 14's ratios of the kinds measured in this run."""
    out = []
    for kind, against, goal in GOALS:
        value = ratio(kinds, kind, against)
        out.append({"kind": kind, "against": against, "goal": goal, "ratio": value,
                    "met": None if value is None else value <= goal})
    return out


def floors(kinds: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [{"kind": kind, "against": against, "ratio": ratio(kinds, kind, against)}
            for kind, against in FLOORS]


def report(results: Dict[str, Any]) -> None:
    boot = results["boot"]
    print("\nBoot")
    print(f"  guest agent answered after   {boot['agent_answered_s']:6.2f} s (from QEMU's start)")
    print(f"  system {boot['state']:<8} after       {boot['system_running_s']:6.2f} s "
          f"(bounds stretched x{boot['slowness']:.1f})")
    print(f"  {boot['systemd_analyze_time']}")
    print("  our units at boot (systemd-analyze blame):")
    for unit, figure in boot["units_blame"].items() or [("(none)", "")]:
        print(f"    {figure:>9}  {unit}")

    print("\nHotplug: seconds from the QMP command's acknowledgement (median, min, max over runs);"
          "\n*_count rows are counts per event, not seconds\n")
    rows = [("kind", "figure", "status", "runs", "median", "min", "max")]
    for kind, result in results["kinds"].items():
        stats = result["stats_s"] or {"usable": None}
        for name, figure in stats.items():
            shown = "{:.0f}" if name.endswith("_count") else "{:.2f}"
            cells = tuple(shown.format(figure[k]) for k in ("median", "min", "max")) \
                if figure else ("-", "-", "-")
            rows.append((kind, name, result["status"] if name == "usable" else "",
                         str(result["runs"]), *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                               for i, (cell, width) in enumerate(zip(row, widths))))
        if number == 0:
            print("  " + "  ".join("-" * width for width in widths))
    print()
    print("  usable: disk mounted under /srv (burst: all 6); nic IPv4 address assigned; memory all "
          "new blocks online;\n  vcpu online\n  unplug_cleaned: from device_del to mount and mountpoint "
          "gone, "
          "unit inactive\n  udev_spawned_count: programs udevd started for the event; "
          "units_started_count: systemd units\n  started; udev_attr_writes_count: sysfs writes "
          "udevd made itself (the onlining)\n  execs_count: "
          "programs executed for the event (kernel trace; the bench's own left out), "
          "gandi_vm_count: of them\n  /usr/bin/gandi-vm; gandi_requests_count: commands the "
          "resident agent served (a fork each,\n  no exec); python_count: Python interpreters "
          "(python3, or a script whose #! names it)")
    for kind, result in results["kinds"].items():
        if result["note"]:
            print(f"  {kind}: {result['note']}")

    print("\nIssue 14's goals (ratios of the medians of `usable`) and the processes per event "
          "(medians)")
    for goal in results["goals"]:
        shown = "-" if goal["ratio"] is None else f"{goal['ratio']:.2f}x"
        verdict = "-" if goal["ratio"] is None else "MET" if goal["met"] else "NOT MET"
        print(f"  {goal['kind']:<6} / {goal['against']:<12} {shown:>6}   goal <= {goal['goal']}x: "
              f"{verdict}")
    for floor in results["floors"]:
        shown = "-" if floor["ratio"] is None else f"{floor['ratio']:.2f}x"
        print(f"  {floor['kind']} / {floor['against']:<12} {shown:>6}   (not a goal: the same "
              "plugs' cost with the work done by hand)")
    for kind, result in results["kinds"].items():
        stats = result["stats_s"]
        if "execs_count" in stats:
            print(f"  {kind:<12} {stats['execs_count']['median']:4.0f} processes, "
                  f"{stats['gandi_vm_count']['median']:.0f} of them /usr/bin/gandi-vm, "
                  f"{stats.get('gandi_requests_count', {}).get('median', 0):.0f} agent requests, "
                  f"{stats['python_count']['median']:.0f} Python interpreters in all")
    poll_ms = results["meta"]["poll_ms"]
    print(f"\nResolution: every figure is found by polling from the host through the guest agent. "
          f"One poll\n(a guest-exec round trip) took {poll_ms:.0f} ms here (typically about 65-85 ms "
          f"on these machines),\nso a figure can be late by up to one poll.")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="hotplugs per kind (default 5)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help=f"where to write the figures (default {DEFAULT_JSON.relative_to(REPO)})")
    parser.add_argument("--timeout", type=float, default=15.0,
                        help="seconds a nic, memory or vcpu hotplug may take to be usable on an idle "
                        "machine, stretched by the guest's slowness (default 15)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--image", type=Path, help="use this image directory instead of building it")
    args = parser.parse_args(argv)
    kinds = subset(parser, args.kinds, KINDS, "kinds")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    try:
        image = args.image or build_image()
    except GuestError as e:
        print(f"hotplug_latency: {e}", file=sys.stderr)
        return 1

    guest = Guest(image, kernel_args=TRACE_ARGS)
    print(f"Booting {image.name} under QEMU ({guest.accel})...", flush=True)
    status = 0
    try:
        try:
            running = guest.start()
        except (GuestError, OSError) as e:
            print(f"hotplug_latency: the guest did not boot: {e}\n{guest.console_tail()}",
                  file=sys.stderr)
            return 1
        results: Dict[str, Any] = {
            "meta": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": platform.node(),
                "qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                       check=False).stdout.splitlines()[0],
                "accel": guest.accel, "image": str(image), "runs": args.runs,
                "timeout_s": args.timeout, "poll_ms": round(poll_cost(guest) * 1000, 1),
            },
            "boot": {"agent_answered_s": round(guest.agent_seconds, 3),
                     "system_running_s": round(running, 3), "state": guest.state,
                     "slowness": round(guest.slowness, 2),
                     **boot_costs(guest)},
            "kinds": {},
        }
        # Programs udevd spawns are logged at debug level only ("Starting '...'").
        guest.check("udevadm control --log-priority=debug")
        with tempfile.TemporaryDirectory(prefix="gandi-bench-") as tmp:
            for kind in kinds:
                print(f"Measuring {kind}...", flush=True)
                result = measure(guest, kind, args.runs, args.timeout, Path(tmp))
                results["kinds"][kind] = result
                if result["status"].startswith("error"):
                    print(f"  {kind}: {result['status']}", flush=True)
                    print("---- guest journal (gandi-*) ----\n" + guest.journal())
                    print("---- guest serial console (tail) ----\n" + guest.console_tail())
                    status = 1
    finally:
        guest.stop()

    results["goals"] = goals(results["kinds"])
    results["floors"] = floors(results["kinds"])
    report(results)
    write_json(str(args.json), results)
    return status


if __name__ == "__main__":
    sys.exit(main())
