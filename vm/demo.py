#!/usr/bin/env python3
"""Show gandi-vm at work in a real guest: hot-plug a disk, a NIC, a vCPU and memory, then unplug.

Builds or reuses the end-to-end test guest (vm/build-image, needs root), boots it under QEMU and
tells what the guest did with each resource, with the time each step took, measured from QMP's
acknowledgement of the hotplug command.

Exit status: 0 when the guest booted, the disk was mounted and the NIC configured (and both were
cleaned up after their unplug), and the vCPU and the memory came online; 1 otherwise (the
guest's journal for gandi-* units and its console tail are printed then).

    sudo vm/demo.py [--image DIR]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "vm"))

from qemu_guest import Guest, GuestError, make_disk  # noqa: E402

WAIT = 15.0  # how long a not-yet-built capability is given before the demo says so
DISK_WAIT = 30.0
LABEL = "demo-data"
MOUNTPOINT = f"/srv/{LABEL}"
DISK_ID = "demo-disk"
NIC_ID = "demo-nic"
NIC_MAC = "52:54:00:de:00:01"
NIC_NET = "10.0.3.0/24"  # the boot NIC's user network is 10.0.2.0/24
CPU_ID = "demo-cpu"
DIMM_ID = "dimm1"
DIMM_BYTES = 256 << 20


class Story:
    """Prints the steps with the time since the start, and keeps the rows of the summary."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.rows: List[Tuple[str, str, Optional[float]]] = []
        self.essential_failed = False

    def step(self, title: str) -> None:
        print(f"\n[{time.monotonic() - self.started:6.1f}s] {title}", flush=True)

    def say(self, text: str) -> None:
        for line in text.rstrip("\n").splitlines() or [""]:
            print(f"          {line}", flush=True)

    def show(self, text: str) -> None:
        """Guest output, set apart from the narration."""
        for line in text.rstrip("\n").splitlines() or ["(nothing)"]:
            print(f"            | {line}", flush=True)

    def row(self, kind: str, result: str, seconds: Optional[float]) -> None:
        self.rows.append((kind, result, seconds))

    def summary(self) -> None:
        print("\nSummary (seconds from the QMP acknowledgement, or of the step itself)\n")
        width = max(len(kind) for kind, _, _ in self.rows)
        rwidth = max(len(result) for _, result, _ in self.rows)
        print(f"  {'kind':<{width}}  {'result':<{rwidth}}  seconds")
        print(f"  {'-' * width}  {'-' * rwidth}  -------")
        for kind, result, seconds in self.rows:
            figure = f"{seconds:7.2f}" if seconds is not None else "      -"
            print(f"  {kind:<{width}}  {result:<{rwidth}}  {figure}")


def diagnostics(guest: Guest) -> None:
    print("\n---- guest journal (gandi-* units) ----")
    print(guest.journal().rstrip() or "(empty)")
    print("---- guest serial console (tail) ----")
    print(guest.console_tail().rstrip())
    print("----")


# -- the scenes ------------------------------------------------------------------------------
def disk_plug(guest: Guest, story: Story, found: Dict[str, str], tmp: Path) -> None:
    story.step(f"Disk: hot-plug a 64 MiB ext4 disk labelled '{LABEL}', made on the host")
    image = make_disk(tmp / f"{LABEL}.raw", "ext4", LABEL)
    guest.add_disk(image, DISK_ID)
    acked = time.monotonic()
    story.say("QMP blockdev-add + device_add virtio-blk-pci acknowledged; waiting for the mount")
    took = guest.poll(f"findmnt -n {MOUNTPOINT} >/dev/null", DISK_WAIT, acked)
    if took is None:
        story.say(f"FAILED: nothing mounted at {MOUNTPOINT} {DISK_WAIT:.0f} s after the plug")
        story.show(guest.run("lsblk -o NAME,SIZE,FSTYPE,LABEL,MOUNTPOINTS").stdout)
        story.row("disk plug -> mounted", "FAILED", None)
        story.essential_failed = True
        diagnostics(guest)
        return
    name = guest.kernel_name(DISK_ID)
    story.say(f"the guest calls it /dev/{name}; gandi-disk@{name}.service mounted it "
              f"{took:.2f} s after the acknowledgement:")
    story.show(guest.check(f"findmnt -n -o TARGET,SOURCE,FSTYPE,OPTIONS {MOUNTPOINT}"))
    story.say("what the unit logged:")
    story.show(guest.run(f"journalctl -b -o cat --no-pager -u gandi-disk@{name}.service").stdout)
    story.row("disk plug -> mounted", "mounted", took)
    found["disk"] = name  # for the unplug scene


def disk_unplug(guest: Guest, story: Story, found: Dict[str, str]) -> None:
    name = found.get("disk")
    story.step("Disk: unplug it (device_del, wait for DEVICE_DELETED, blockdev-del)")
    if name is None:
        story.say("skipped: the disk was never mounted")
        story.row("disk unplug -> cleaned up", "skipped", None)
        return
    started = time.monotonic()
    guest.remove_disk(DISK_ID)
    unit = f"gandi-disk@{name}.service"
    took = guest.poll(f"! findmnt -n {MOUNTPOINT} >/dev/null && ! test -e {MOUNTPOINT} && "
                      f"! systemctl -q is-active {unit}", DISK_WAIT, started)
    story.say("in the guest now:")
    story.show(guest.run(f"echo \"findmnt {MOUNTPOINT}: $(findmnt -n {MOUNTPOINT} || echo none)\"; "
                         f"echo \"{MOUNTPOINT}: $(test -e {MOUNTPOINT} && echo present || echo gone)\"; "
                         f"echo \"{unit}: $(systemctl is-active {unit})\"").stdout)
    if took is None:
        story.say(f"FAILED: not cleaned up {DISK_WAIT:.0f} s after the unplug")
        story.row("disk unplug -> cleaned up", "FAILED", None)
        story.essential_failed = True
        diagnostics(guest)
        return
    story.say(f"unmounted, mountpoint removed and unit inactive {took:.2f} s after device_del")
    story.show(guest.run(f"journalctl -b -o cat --no-pager -u {unit} | tail -n 3").stdout)
    story.row("disk unplug -> cleaned up", "cleaned up", took)


def nic(guest: Guest, story: Story, found: Dict[str, str]) -> None:
    story.step(f"NIC: hot-plug a virtio NIC (MAC {NIC_MAC}) on a user-mode network with its own "
               f"DHCP server ({NIC_NET})")
    guest.add_nic(NIC_ID, NIC_MAC, NIC_NET)
    acked = time.monotonic()
    story.say("QMP netdev_add user + device_add virtio-net-pci acknowledged")
    name = guest.nic_name(NIC_MAC)
    story.say(f"interface {name} appeared {time.monotonic() - acked:.2f} s after the acknowledgement; "
              f"waiting up to {WAIT:.0f} s for an IPv4 address")
    took = guest.poll(f"ip -4 -o addr show dev {name} | grep -q inet", WAIT, acked)
    state = guest.run(f"ip -br addr show dev {name}; ip -4 route show default; "
                      f"ip rule; ip route show table $((10000 + $(cat /sys/class/net/{name}/ifindex)))"
                      ).stdout
    if took is None:
        story.say("no address. The interface as the guest left it:")
        story.show(state)
        story.row("nic plug -> address", "no address", None)
        story.essential_failed = True
    else:
        story.say(f"address assigned {took:.2f} s after the acknowledgement; the main default route "
                  "stays on the first NIC, the new one has its own table and source rule:")
        story.show(state)
        story.row("nic plug -> address", "configured", took)
    found["nic"] = name


def nic_unplug(guest: Guest, story: Story, found: Dict[str, str]) -> None:
    story.step("NIC: unplug it (device_del, wait for DEVICE_DELETED, netdev_del)")
    started = time.monotonic()
    guest.remove_nic(NIC_ID)
    name = found.get("nic", "")
    took = guest.poll(f"! test -e /sys/class/net/{name} && ! test -e /run/gandi/iface/{name}.yaml && "
                      f"! ip rule | grep -q 'lookup 1[0-9]\\{{4\\}}'", WAIT, started) if name else None
    story.show(guest.check("ip -br addr; ip rule"))
    if took is None:
        story.say("the interface or our routing rule is still there")
        story.row("nic unplug -> cleaned up", "not cleaned up", None)
        story.essential_failed = True
    else:
        story.say(f"interface {name}, its rule, table and record gone {took:.2f} s after device_del")
        story.row("nic unplug -> cleaned up", "cleaned up", took)


def vcpu(guest: Guest, story: Story) -> None:
    story.step("vCPU: hot-plug one into a free slot of query-hotpluggable-cpus")
    before = guest.cpus()
    online = guest.check("cat /sys/devices/system/cpu/online").strip()
    story.say(f"before: cpus online {online}")
    props = guest.add_cpu(CPU_ID)
    acked = time.monotonic()
    story.say("QMP device_add qemu64-x86_64-cpu acknowledged for slot "
              + ", ".join(f"{k}={v}" for k, v in sorted(props.items())))
    count = len(before)
    if guest.poll(f"test $(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l) -gt {count}",
                  WAIT, acked) is None:
        raise GuestError(f"no new cpu in the guest's sysfs {WAIT:.0f} s after the plug")
    new = sorted(set(guest.cpus()) - set(before))
    story.say(f"cpu{new[0]} appeared {time.monotonic() - acked:.2f} s after the acknowledgement; "
              f"waiting up to {WAIT:.0f} s for it to be online")
    took = guest.poll(f"grep -qx 1 /sys/devices/system/cpu/cpu{new[0]}/online", WAIT, acked)
    online = guest.check("cat /sys/devices/system/cpu/online").strip()
    present = guest.check("cat /sys/devices/system/cpu/present").strip()
    story.show(f"present: {present}\nonline:  {online}")
    if took is None:
        story.say(f"cpu{new[0]} stays offline")
        story.row("vcpu plug -> online", "offline", None)
        story.essential_failed = True
    else:
        story.say(f"cpu{new[0]} online {took:.2f} s after the acknowledgement, onlined by udevd "
                  "itself (ATTR{online}=\"1\" in 87-gandi-online.rules, no process)")
        story.row("vcpu plug -> online", "online", took)
    story.say("not unplugged: after a vCPU hot-unplug this QEMU under TCG is unstable (QEMU-NOTES)")


def memory(guest: Guest, story: Story) -> None:
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
    glob = "/sys/devices/system/memory/memory[0-9]*"
    if guest.poll(f"test $(ls -d {glob} | wc -l) -ge {len(before) + expected}", WAIT, acked) is None:
        raise GuestError(f"no new memory blocks in the guest's sysfs {WAIT:.0f} s after the plug")
    new = sorted(set(guest.memory_blocks()) - set(before))
    story.say(f"{len(new)} new blocks (memory{new[0]}..memory{new[-1]}) appeared "
              f"{time.monotonic() - acked:.2f} s after the acknowledgement; waiting up to "
              f"{WAIT:.0f} s for them to be online")
    took = guest.poll(" && ".join(f"grep -qx online /sys/devices/system/memory/memory{n}/state"
                      for n in new), WAIT, acked)
    after = guest.memory_blocks()
    total_after = guest.check(meminfo).strip()
    story.show("\n".join(f"memory{n}: {after[n]}" for n in new)
               + f"\nall blocks: {sum(s == 'online' for s in after.values())} online, "
               f"{sum(s != 'online' for s in after.values())} offline"
               + f"\nMemTotal before: {total_before.split(':')[1].strip()}, "
               f"after: {total_after.split(':')[1].strip()}")
    if took is None:
        story.say("the new blocks stay offline")
        story.row("memory plug -> online", "offline", None)
        story.essential_failed = True
    else:
        story.say(f"all new blocks online {took:.2f} s after the acknowledgement, onlined by udevd "
                  "itself (ATTR{state}=\"online\", no process)")
        story.row("memory plug -> online", "online", took)
    story.say("not unplugged: a pc-dimm unplug is a request the guest must honour (offline the "
              "blocks, then eject through ACPI), so the demo leaves the DIMM in place")


def scene(guest: Guest, story: Story, kind: str, run: Callable[[], None]) -> None:
    """Run one scene; an error is reported and fails the demo, and the next scene still runs."""
    try:
        run()
    except (GuestError, OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        story.say(f"ERROR: {e}")
        story.row(kind, "error", None)
        story.essential_failed = True
        diagnostics(guest)


def build_image() -> Path:
    done = subprocess.run([str(REPO / "vm" / "build-image")], stdout=subprocess.PIPE, text=True,
                          check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"demo: vm/build-image failed (exit {done.returncode})")
    return Path(done.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="use this image directory instead of building it")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    story = Story()
    story.step("Image: " + ("given with --image" if args.image else
                            "vm/build-image (cached after the first build)"))
    started = time.monotonic()
    image = args.image or build_image()
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
            story.say(f"FAILED: {e}")  # QEMU's exit status and last messages, if it died
            print("---- guest serial console (tail) ----\n" + guest.console_tail())
            return 1
        story.say(f"guest agent answered after {guest.agent_seconds:.1f} s, system {guest.state} "
                  f"after {booted:.1f} s")
        story.show(guest.run("systemd-analyze time | head -n 1; "
                             "systemd-analyze blame | grep gandi-").stdout)
        story.row("boot (until system running)", guest.state, booted)

        found: Dict[str, str] = {}  # guest names of what was plugged: disk, nic
        with tempfile.TemporaryDirectory(prefix="gandi-demo-") as tmp:
            scene(guest, story, "disk plug -> mounted", lambda: disk_plug(guest, story, found, Path(tmp)))
            scene(guest, story, "nic plug -> address", lambda: nic(guest, story, found))
            scene(guest, story, "memory plug -> online", lambda: memory(guest, story))
            # vCPUs last: the least stable hotplug of this QEMU under TCG (QEMU-NOTES)
            scene(guest, story, "vcpu plug -> online", lambda: vcpu(guest, story))
            scene(guest, story, "disk unplug -> cleaned up", lambda: disk_unplug(guest, story, found))
            scene(guest, story, "nic unplug -> cleaned up", lambda: nic_unplug(guest, story, found))

        story.step("Shutdown: systemctl poweroff in the guest")
        try:
            took = guest.shutdown()
            story.say(f"QEMU exited {took:.1f} s later")
            story.row("shutdown", "powered off", took)
        except (GuestError, OSError) as e:
            story.say(f"{e}; stopping QEMU instead")
            story.row("shutdown", "forced (QMP quit)", None)
    finally:
        guest.stop()

    story.summary()
    if story.essential_failed:
        print("\ndemo: the disk scenario (the built capability) FAILED")
        return 1
    print(f"\ndemo: done in {time.monotonic() - story.started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
