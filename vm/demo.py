#!/usr/bin/env python3
"""Show gandi-vm at work in a real guest: hot-plug a disk, the platform's swap disk, a NIC, a vCPU
and memory, grow the system disk, then unplug the disk and the NIC.

Builds or reuses the end-to-end test guest (vm/build-image, needs root), boots it under QEMU and
tells what the guest did with each resource, with the time each step took, measured from QMP's
acknowledgement of the hotplug command.

Waits hold on a busy machine: where a unit of ours does the work, the demo waits for that unit's
own verdict (active or failed) before looking at its effect; every wait is written for an idle
machine and stretched by how much slower than that the guest booted (qemu_guest.Guest.slowness).

The summary lists each scenario as passed, FAILED (with why) or skipped. Exit status: 0 when every
scenario passed (the guest booted, the disk was mounted, the swap disk formatted and swapped on,
the NIC configured, / grew with its disk, the disk and the NIC were cleaned
up after their unplug, the vCPU and the memory came online, the guest powered off); 1 otherwise
(the guest's journal for gandi-* units and its console tail are printed at each failure).

    vm/demo.py [--image DIR]        (as root; scripts/demo installs what it needs first)
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

from disks import gandiswap_disk  # noqa: E402
from qemu_guest import IDLE_BOOT, Guest, GuestError, build_image, make_disk  # noqa: E402

# Waits on an idle machine (seconds), scaled by the guest's slowness.
ONLINE_WAIT = 15.0  # udevd onlines a vCPU or a memory block while it handles the event
DISK_WAIT = 30.0  # gandi-disk@: one python3 start, blkid, e2fsck, mount
NIC_WAIT = 60.0  # gandi-iface@: the DHCP client's first DISCOVER comes after a delay under TCG
CLEANUP_WAIT = 30.0  # the units' ExecStop after an unplug
GROW_WAIT = 60.0  # gandi-resize@: one python3 start, resize2fs
ROOT_GROWTH = 1 << 30  # what block_resize adds to the system disk
LABEL = "demo-data"
MOUNTPOINT = f"/srv/{LABEL}"
DISK_ID = "demo-disk"
SWAP_ID = "demo-swap"
NIC_ID = "demo-nic"
NIC_MAC = "52:54:00:de:00:01"
NIC_NET = "10.0.3.0/24"  # the boot NIC's user network is 10.0.2.0/24
CPU_ID = "demo-cpu"
DIMM_ID = "dimm1"
DIMM_BYTES = 256 << 20


class ScenarioFailed(Exception):
    """A scenario's outcome is not the expected one; the message says why, for the summary."""


class ScenarioSkipped(Exception):
    """The scenario cannot run because an earlier one failed; the message says which."""


@dataclass
class Row:
    scenario: str
    status: str  # passed, FAILED or skipped
    what: str  # the outcome when passed, the reason otherwise
    seconds: Optional[float] = None


class Story:
    """Prints the steps with the time since the start, and keeps the rows of the summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.rows: List[Row] = []

    def step(self, title: str) -> None:
        print(f"\n[{time.monotonic() - self.started:6.1f}s] {title}", flush=True)

    def say(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines() or [""]:
            print(f"          {line}", flush=True)

    def show(self, text: str) -> None:
        """Guest output, set apart from the narration."""
        for line in text.rstrip("\n").splitlines() or ["(nothing)"]:
            print(f"            | {line}", flush=True)

    def passed(self, scenario: str, what: str, seconds: Optional[float]) -> None:
        self.rows.append(Row(scenario, "passed", what, seconds))

    def failed(self, scenario: str, why: str) -> None:
        self.say(f"FAILED: {why}")
        self.rows.append(Row(scenario, "FAILED", why))

    def skipped(self, scenario: str, why: str) -> None:
        self.say(f"skipped: {why}")
        self.rows.append(Row(scenario, "skipped", why))

    def failures(self) -> List[Row]:
        return [row for row in self.rows if row.status == "FAILED"]

    def summary(self) -> None:
        print("\nSummary (seconds from the QMP acknowledgement, or of the step itself)\n")
        width = max(len(row.scenario) for row in self.rows)
        print(f"  {'scenario':<{width}}  result   seconds  outcome, or why not")
        print(f"  {'-' * width}  -------  -------  {'-' * 19}")
        for row in self.rows:
            figure = f"{row.seconds:7.2f}" if row.seconds is not None else "      -"
            print(f"  {row.scenario:<{width}}  {row.status:<7}  {figure}  {row.what}")


def diagnostics(guest: Guest) -> None:
    print("\n---- guest journal (gandi-* units) ----")
    print(guest.journal().rstrip() or "(empty)")
    print("---- guest serial console (tail) ----")
    print(guest.console_tail().rstrip())
    print("----")


# -- the scenes: each returns its outcome and figure, or raises ScenarioFailed/ScenarioSkipped --
Outcome = Tuple[str, Optional[float]]


def unit_verdict(guest: Guest, unit: str, wait: float, since: float) -> float:
    """The seconds from `since` until `unit` succeeded; ScenarioFailed saying how it did not."""
    state, result, took = guest.unit_outcome(unit, wait, since)
    if took is None:
        raise ScenarioFailed(f"{unit} still {state or 'unknown'} {guest.scaled(wait):.0f} s "
                             "after the plug")
    if state != "active":
        raise ScenarioFailed(f"{unit} {state} (Result={result})")
    return took


def wait_cleaned(guest: Guest, checks: Dict[str, str], since: float) -> float:
    """Poll until each shell test of `checks` (what is left -> a test true once it is gone)
    holds; returns the seconds from `since`, or raises ScenarioFailed naming what is left."""
    took = guest.poll(" && ".join(checks.values()), CLEANUP_WAIT, since)
    if took is None:
        left = [what for what, test in checks.items() if guest.run(test).returncode != 0]
        raise ScenarioFailed(f"{guest.scaled(CLEANUP_WAIT):.0f} s after device_del: "
                             + (", ".join(left) or "cleaned up only after the wait"))
    return took


def disk_unit_verdict(guest: Guest, story: Story, named: str, unit: str, acked: float) -> float:
    """Wait for a plugged disk's gandi-disk@ unit to succeed (seconds since `acked`), then show
    what it logged, whatever its verdict."""
    story.say(f"{named}; waiting for {unit} to succeed or fail (up to "
              f"{guest.scaled(DISK_WAIT):.0f} s)")
    try:
        return unit_verdict(guest, unit, DISK_WAIT, acked)
    finally:
        story.say("what the unit logged:")
        story.show(guest.run(f"journalctl -b -o cat --no-pager -u {unit}").stdout)


def disk_plug(guest: Guest, story: Story, found: Dict[str, str], tmp: Path) -> Outcome:
    story.step(f"Disk: hot-plug a 64 MiB ext4 disk labelled '{LABEL}', made on the host")
    image = make_disk(tmp / f"{LABEL}.raw", "ext4", LABEL)
    guest.add_disk(image, DISK_ID)
    acked = time.monotonic()
    story.say("QMP blockdev-add + device_add virtio-blk-pci acknowledged")
    name = guest.kernel_name(DISK_ID)
    unit = f"gandi-disk@{name}.service"
    took = disk_unit_verdict(guest, story, f"the guest calls it /dev/{name}", unit, acked)
    mount = guest.run(f"findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS {MOUNTPOINT}")
    if mount.returncode != 0:
        story.show(guest.run("lsblk -o NAME,SIZE,FSTYPE,LABEL,MOUNTPOINTS").stdout)
        raise ScenarioFailed(f"{unit} succeeded but nothing is mounted at {MOUNTPOINT}")
    story.say(f"{unit} mounted it {took:.2f} s after the acknowledgement:")
    story.show(mount.stdout)
    found["disk"] = name  # for the unplug scene
    return f"/dev/{name} mounted at {MOUNTPOINT}", took


def disk_unplug(guest: Guest, story: Story, found: Dict[str, str]) -> Outcome:
    story.step("Disk: unplug it (device_del, wait for DEVICE_DELETED, blockdev-del)")
    name = found.get("disk")
    if name is None:
        raise ScenarioSkipped("the disk was never mounted")
    started = time.monotonic()
    guest.remove_disk(DISK_ID)
    unit = f"gandi-disk@{name}.service"
    try:
        took = wait_cleaned(guest, {
            f"{MOUNTPOINT} still mounted": f"! findmnt -n {MOUNTPOINT} >/dev/null",
            f"{MOUNTPOINT} still there": f"! test -e {MOUNTPOINT}",
            f"{unit} not inactive": f'test "$(systemctl show -p ActiveState --value {unit})" = inactive',
        }, started)
    finally:
        story.say("in the guest now:")
        story.show(guest.run(f"echo \"findmnt {MOUNTPOINT}: $(findmnt -n {MOUNTPOINT} || echo none)\"; "
                             f"echo \"{MOUNTPOINT}: $(test -e {MOUNTPOINT} && echo present || echo gone)\"; "
                             f"echo \"{unit}: $(systemctl is-active {unit})\"").stdout)
    story.say(f"unmounted, mountpoint removed and unit inactive {took:.2f} s after device_del")
    story.show(guest.run(f"journalctl -b -o cat --no-pager -u {unit} | tail -n 3").stdout)
    return "unmounted, mountpoint removed, unit inactive", took


def swap_plug(guest: Guest, story: Story, tmp: Path) -> Outcome:
    story.step("Swap: hot-plug a blank 128 MiB disk whose GPT partition is named gandiswap, as the "
               "platform marks its swap disk")
    guest.add_disk(gandiswap_disk(tmp / "swap.raw"), SWAP_ID)
    acked = time.monotonic()
    story.say("QMP blockdev-add + device_add virtio-blk-pci acknowledged")
    partition = guest.kernel_name(SWAP_ID) + "1"
    unit = f"gandi-disk@{partition}.service"
    took = disk_unit_verdict(guest, story, f"its partition is /dev/{partition}", unit, acked)
    swaps = guest.run("swapon --show=NAME,SIZE,PRIO,LABEL")
    story.show(swaps.stdout)
    if f"/dev/{partition} " not in swaps.stdout:
        raise ScenarioFailed(f"{unit} succeeded but /dev/{partition} is not swapped on")
    return f"/dev/{partition} formatted with mkswap -L swap and swapped on", took


def root_grow(guest: Guest, story: Story) -> Outcome:
    story.step(f"System disk: grow it by {ROOT_GROWTH >> 30} GiB while the guest runs (QMP block_resize)")
    df = "df -h --output=source,size,used,avail,target /"
    story.show(guest.check(df))
    disk = guest.disk_sectors("vda") * 512
    before = int(guest.check("df -B1 --output=size / | tail -n 1"))
    guest.resize_root(disk + ROOT_GROWTH)
    acked = time.monotonic()
    unit = f"gandi-resize@vda:{(disk + ROOT_GROWTH) // 512}.service"
    story.say(f"block_resize acknowledged; the kernel's change uevent (RESIZE=1) starts {unit}; "
              f"waiting up to {guest.scaled(GROW_WAIT):.0f} s for df to show / grown")
    took = guest.poll(f"test $(df -B1 --output=size / | tail -n 1) -ge {before + ROOT_GROWTH * 9 // 10}",
                      GROW_WAIT, acked)
    story.show(guest.check(df))
    story.say("what the unit logged:")
    story.show(guest.run(f"journalctl -b -o cat --no-pager -t gandi -u {unit}").stdout)
    if took is None:
        raise ScenarioFailed(f"/ not grown {guest.scaled(GROW_WAIT):.0f} s after block_resize")
    story.say(f"/ grown online {took:.2f} s after the acknowledgement, no reboot")
    return f"/ grown by {ROOT_GROWTH >> 30} GiB online", took


def nic(guest: Guest, story: Story, found: Dict[str, str]) -> Outcome:
    story.step(f"NIC: hot-plug a virtio NIC (MAC {NIC_MAC}) on a user-mode network with its own "
               f"DHCP server ({NIC_NET})")
    guest.add_nic(NIC_ID, NIC_MAC, NIC_NET)
    acked = time.monotonic()
    story.say("QMP netdev_add user + device_add virtio-net-pci acknowledged")
    name = guest.nic_name(NIC_MAC)
    found["nic"] = name  # unplugged and checked even if its configuration fails
    unit = f"gandi-iface@{name}.service"
    story.say(f"interface {name} appeared {time.monotonic() - acked:.2f} s after the acknowledgement; "
              f"waiting for {unit} (DHCP) to succeed or fail (up to {guest.scaled(NIC_WAIT):.0f} s)")
    try:
        took = unit_verdict(guest, unit, NIC_WAIT, acked)
    finally:
        story.say(f"{name} as the guest has it:")
        story.show(guest.run(f"ip -br addr show dev {name}; ip -4 route show default; ip rule; "
                             f"ip route show table $((10000 + $(cat /sys/class/net/{name}/ifindex)))"
                             ).stdout)
    if guest.run(f"ip -4 -o addr show dev {name} | grep -q inet").returncode != 0:
        story.show(guest.run(f"journalctl -b -o cat --no-pager -u {unit}").stdout)
        raise ScenarioFailed(f"{unit} succeeded but {name} has no IPv4 address")
    story.say(f"configured {took:.2f} s after the acknowledgement; the main default route stays on "
              "the first NIC, the new one has its own table and source rule")
    return f"{name} has an address, its own table and rule", took


def nic_unplug(guest: Guest, story: Story, found: Dict[str, str]) -> Outcome:
    story.step("NIC: unplug it (device_del, wait for DEVICE_DELETED, netdev_del)")
    name = found.get("nic")
    if name is None:
        raise ScenarioSkipped("the NIC never appeared in the guest")
    started = time.monotonic()
    guest.remove_nic(NIC_ID)
    try:
        took = wait_cleaned(guest, {
            f"interface {name} still there": f"! test -e /sys/class/net/{name}",
            f"/run/gandi/iface/{name}.yaml still there": f"! test -e /run/gandi/iface/{name}.yaml",
            "our routing rule still there": "! ip rule | grep -q 'lookup 1[0-9]\\{4\\}'",
        }, started)
    finally:
        story.show(guest.run("ip -br addr; ip rule").stdout)
    story.say(f"interface {name}, its rule, table and record gone {took:.2f} s after device_del")
    return "interface, rule, table and record gone", took


def vcpu(guest: Guest, story: Story) -> Outcome:
    story.step("vCPU: hot-plug one into a free slot of query-hotpluggable-cpus")
    before = guest.cpus()
    online = guest.check("cat /sys/devices/system/cpu/online").strip()
    story.say(f"before: cpus online {online}")
    props = guest.add_cpu(CPU_ID)
    acked = time.monotonic()
    story.say("QMP device_add qemu64-x86_64-cpu acknowledged for slot "
              + ", ".join(f"{k}={v}" for k, v in sorted(props.items())))
    wait = guest.scaled(ONLINE_WAIT)
    if guest.poll(f"test $(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l) -gt {len(before)}",
                  ONLINE_WAIT, acked) is None:
        raise ScenarioFailed(f"no new cpu in the guest's sysfs {wait:.0f} s after the plug")
    new = sorted(set(guest.cpus()) - set(before))
    story.say(f"cpu{new[0]} appeared {time.monotonic() - acked:.2f} s after the acknowledgement; "
              f"waiting up to {wait:.0f} s for it to be online")
    took = guest.poll(f"grep -qx 1 /sys/devices/system/cpu/cpu{new[0]}/online", ONLINE_WAIT, acked)
    online = guest.check("cat /sys/devices/system/cpu/online").strip()
    present = guest.check("cat /sys/devices/system/cpu/present").strip()
    story.show(f"present: {present}\nonline:  {online}")
    story.say("not unplugged: after a vCPU hot-unplug this QEMU under TCG is unstable (QEMU-NOTES)")
    if took is None:
        raise ScenarioFailed(f"cpu{new[0]} still offline {wait:.0f} s after the plug")
    story.say(f"cpu{new[0]} online {took:.2f} s after the acknowledgement, onlined by udevd "
              "itself (ATTR{online}=\"1\" in 87-gandi-online.rules, no process)")
    return f"cpu{new[0]} online", took


def memory(guest: Guest, story: Story) -> Outcome:
    story.step(f"Memory: hot-plug {DIMM_BYTES >> 20} MiB (memory-backend-ram + pc-dimm)")
    meminfo = "grep MemTotal /proc/meminfo"
    total_before = guest.check(meminfo).strip()
    before = guest.memory_blocks()
    block_bytes = int(guest.check("cat /sys/devices/system/memory/block_size_bytes"), 16)
    expected = DIMM_BYTES // block_bytes
    story.say(f"before: {total_before}; {len(before)} blocks of {block_bytes >> 20} MiB, "
              f"{sum(s == 'online' for s in before.values())} online")
    guest.add_memory(DIMM_ID, DIMM_BYTES)
    acked = time.monotonic()
    story.say(f"QMP object-add memory-backend-ram mem-{DIMM_ID} + device_add pc-dimm {DIMM_ID} "
              "acknowledged")
    wait = guest.scaled(ONLINE_WAIT)
    glob = "/sys/devices/system/memory/memory[0-9]*"
    if guest.poll(f"test $(ls -d {glob} | wc -l) -ge {len(before) + expected}", ONLINE_WAIT,
                  acked) is None:
        raise ScenarioFailed(f"no new memory blocks in the guest's sysfs {wait:.0f} s after the plug")
    new = sorted(set(guest.memory_blocks()) - set(before))
    story.say(f"{len(new)} new blocks (memory{new[0]}..memory{new[-1]}) appeared "
              f"{time.monotonic() - acked:.2f} s after the acknowledgement; waiting up to "
              f"{wait:.0f} s for them to be online")
    took = guest.poll(" && ".join(f"grep -qx online /sys/devices/system/memory/memory{n}/state"
                      for n in new), ONLINE_WAIT, acked)
    after = guest.memory_blocks()
    total_after = guest.check(meminfo).strip()
    story.show("\n".join(f"memory{n}: {after[n]}" for n in new)
               + f"\nall blocks: {sum(s == 'online' for s in after.values())} online, "
               f"{sum(s != 'online' for s in after.values())} offline"
               + f"\nMemTotal before: {total_before.split(':')[1].strip()}, "
               f"after: {total_after.split(':')[1].strip()}")
    story.say("not unplugged: a pc-dimm unplug is a request the guest must honour (offline the "
              "blocks, then eject through ACPI), so the demo leaves the DIMM in place")
    if took is None:
        offline = [f"memory{n}" for n in new if after[n] != "online"]
        raise ScenarioFailed(f"{', '.join(offline)} still offline {wait:.0f} s after the plug")
    story.say(f"all new blocks online {took:.2f} s after the acknowledgement, onlined by udevd "
              "itself (ATTR{state}=\"online\", no process)")
    return f"{len(new)} blocks online", took


def scene(guest: Guest, story: Story, scenario: str, run: Callable[[], Outcome]) -> None:
    """Run one scene and record its row; a failure or an error prints the guest's diagnostics,
    and the next scene still runs."""
    try:
        what, seconds = run()
    except ScenarioSkipped as e:
        story.skipped(scenario, str(e))
    except ScenarioFailed as e:
        story.failed(scenario, str(e))
        diagnostics(guest)
    except (GuestError, OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        story.say(f"ERROR: {e}")
        first_line = next(iter(str(e).splitlines()), "") or type(e).__name__
        story.failed(scenario, f"error: {first_line}")
        diagnostics(guest)
    else:
        story.passed(scenario, what, seconds)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="use this image directory instead of building it")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    story = Story()
    story.step("Image: " + ("given with --image" if args.image else
                            "vm/build-image (cached after the first build)"))
    started = time.monotonic()
    try:
        image = args.image or build_image()
    except GuestError as e:
        raise SystemExit(f"demo: {e}") from None
    story.say(f"{image} ({time.monotonic() - started:.1f} s)")

    story.step("Boot: Debian 12 guest under QEMU, -smp 1,maxcpus=4, -m 512M,slots=4,maxmem=2G")
    started = time.monotonic()
    guest = Guest(image)  # probes KVM by booting the kernel, unless GANDI_VM_ACCEL is set
    story.say(f"accelerator: {guest.accel} (chosen in {time.monotonic() - started:.1f} s; "
              "GANDI_VM_ACCEL=tcg|kvm skips the probe)")
    try:
        try:
            booted = guest.start()
        except (GuestError, OSError) as e:
            story.say(str(e))  # QEMU's exit status and last messages, if it died
            print("---- guest serial console (tail) ----\n" + guest.console_tail())
            story.failed("boot", next(iter(str(e).splitlines()), "") or type(e).__name__)
            return verdict(story)
        story.say(f"guest agent answered after {guest.agent_seconds:.1f} s, system {guest.state} "
                  f"after {booted:.1f} s; the waits below are stretched x{guest.slowness:.1f} "
                  f"(an idle machine boots it in about {IDLE_BOOT:.0f} s)")
        story.show(guest.run("systemd-analyze time | head -n 1; "
                             "systemd-analyze blame | grep gandi-").stdout)
        if guest.state == "running":
            story.passed("boot", f"running, waits x{guest.slowness:.1f}", booted)
        else:
            failed_units = guest.run("systemctl --failed --no-legend --plain | awk '{print $1}'")
            story.failed("boot", f"system {guest.state}; failed units: "
                         + (" ".join(failed_units.stdout.split()) or "none listed"))

        found: Dict[str, str] = {}  # guest names of what was plugged: disk, nic
        with tempfile.TemporaryDirectory(prefix="gandi-demo-") as tmp:
            scene(guest, story, "disk plug -> mounted", lambda: disk_plug(guest, story, found, Path(tmp)))
            scene(guest, story, "swap disk plug -> swap on", lambda: swap_plug(guest, story, Path(tmp)))
            scene(guest, story, "system disk grown -> / grown", lambda: root_grow(guest, story))
            scene(guest, story, "nic plug -> address", lambda: nic(guest, story, found))
            scene(guest, story, "memory plug -> online", lambda: memory(guest, story))
            # vCPUs last: the least stable hotplug of this QEMU under TCG (QEMU-NOTES)
            scene(guest, story, "vcpu plug -> online", lambda: vcpu(guest, story))
            scene(guest, story, "disk unplug -> cleaned up", lambda: disk_unplug(guest, story, found))
            scene(guest, story, "nic unplug -> cleaned up", lambda: nic_unplug(guest, story, found))
        scene(guest, story, "shutdown", lambda: shutdown(guest, story))
    finally:
        guest.stop()
    return verdict(story)


def shutdown(guest: Guest, story: Story) -> Outcome:
    story.step("Shutdown: systemctl poweroff in the guest")
    took = guest.shutdown()  # stop() quits QEMU through QMP if this fails
    story.say(f"QEMU exited {took:.1f} s later")
    return "powered off", took


def verdict(story: Story) -> int:
    """Print the summary and the verdict naming each failed scenario; the exit status."""
    story.summary()
    failures = story.failures()
    if failures:
        print("\ndemo: FAILED: " + "; ".join(f"{row.scenario} ({row.what})" for row in failures))
        return 1
    print(f"\ndemo: every scenario passed, in {time.monotonic() - story.started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
