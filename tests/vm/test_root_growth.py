"""The system disk grows with its virtual disk, at boot and while the guest runs (issue 13).

TestWholeDisk boots the test image (ext4 directly on /dev/vda, a 2 GiB filesystem) on a 3 GiB
virtual disk: gandi-mount.service grows / after local-fs.target (online, as cloud-init's growpart
does: nothing of ours runs before sysinit.target), in the process that mounts the disks anyway.
Then, without a reboot: block_resize to 4 GiB, then 5 GiB, each grows / online through one
gandi-resize@vda:<sectors>.service run; a change uevent without a capacity change starts nothing;
with CONFIG_GROW_ROOT=0 a resize grows nothing and `gandi-vm status` says why.

TestGptDisk boots the same filesystem in GPT partition 1 (`gandiroot`, root=/dev/vda1) on a 3 GiB
disk: the partition is grown to the end of the disk (the backup GPT moved there) and / with it,
at boot; then block_resize grows both online.

Whether a gandi-vm process ran is read from the kernel (the guests boot with
trace_event=sched:sched_process_exec, as bench/boot_provision.py does), not from our own logs.
The seconds from the block_resize acknowledgement to the grown / (df, polled through the guest
agent: one poll costs about 65-85 ms, which bounds the figure's precision) are printed and
written to bench/results/grow_online.json.

Each class has its own guest (class scope: one QEMU at a time), two boots in all.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import yaml

from disks import gpt_root_image, missing_tools
from qemu_guest import Guest

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "bench" / "results" / "grow_online.json"
GIB = 1 << 30
FS_SIZE = 2 * GIB  # the test image's ext4 (vm/build-image)
TRACE_ARGS = "trace_event=sched:sched_process_exec trace_buf_size=2M"
# tracefs where systemd mounts it, or under debugfs on older systems
TRACE = ("$(for d in /sys/kernel/tracing /sys/kernel/debug/tracing; do "
         "[ -e $d/trace ] && echo $d/trace && break; done)")
GANDI_VM = "/usr/bin/gandi-vm"
WAIT = 60  # seconds on an idle machine (scaled): one gandi-vm start, growpart, resize2fs
QUIET = 5  # seconds on an idle machine (scaled) in which an event that starts nothing shows so


@pytest.fixture(scope="module")
def figures(request: pytest.FixtureRequest) -> Iterator[Dict[str, Dict[str, float]]]:
    """Seconds from block_resize's acknowledgement to the grown /, per layout; written to
    bench/results/grow_online.json (git ignores bench/results) and to the terminal, with or
    without -s, when the module ends."""
    measured: Dict[str, Dict[str, float]] = {}
    yield measured
    if not measured:
        return
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps({
        "meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "what": "seconds from the QMP block_resize acknowledgement to `df -B1 "
                         "--output=size /` showing the grown filesystem, polled through the "
                         "guest agent (one poll: about 65-85 ms)"},
        "seconds": measured}, indent=2) + "\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print()
        for layout, runs in measured.items():
            for label, seconds in runs.items():
                print(f"block_resize -> / grown, {layout}, {label}: {seconds:.2f} s")
        print(f"(written to {FIGURES.relative_to(REPO)})")


@pytest.fixture(scope="class")
def guest(request: pytest.FixtureRequest, image: Path) -> Iterator[Guest]:
    """The class's own guest, booted with the root disk its root_options() describe."""
    if missing_tools():
        pytest.skip("cannot build the partitioned root disk: missing " + ", ".join(missing_tools()))
    with Guest(image, kernel_args=TRACE_ARGS, **request.cls.root_options(image)) as vm:
        yield vm


# -- what the guest shows -------------------------------------------------------------------------

def df_size(guest: Guest) -> int:
    return int(guest.check("df -B1 --output=size / | tail -n 1"))


def ext4_bytes(guest: Guest, device: str) -> int:
    """The filesystem's own size, from its superblock (block count x block size)."""
    fields = dict(line.split(":", 1) for line in guest.check(
        f"dumpe2fs -h {device} 2>/dev/null").splitlines() if ":" in line)
    return int(fields["Block count"]) * int(fields["Block size"])


def sectors(guest: Guest, name: str) -> int:
    return int(guest.check(f"cat /sys/class/block/{name}/size"))


def partition_table(guest: Guest) -> dict:
    return json.loads(guest.check("sfdisk --json /dev/vda"))["partitiontable"]


def show(guest: Guest, unit: str, *properties: str) -> Dict[str, str]:
    out = guest.check(f"systemctl show {' '.join('-p ' + p for p in properties)} {unit}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def systemd_lines(guest: Guest, pattern: str) -> List[str]:
    """What systemd logged this boot about the units matching the glob (Starting/Finished...)."""
    return guest.check(f"journalctl -b -o cat --no-pager _PID=1 | grep -F '{pattern}' || true"
                       ).splitlines()


def gandi_lines(guest: Guest, unit: str) -> List[str]:
    return guest.check(f"journalctl -b -o cat --no-pager -t gandi -u '{unit}'").splitlines()


def clear_trace(guest: Guest) -> None:
    guest.check(f"echo > {TRACE}")


def gandi_vm_execs(guest: Guest) -> int:
    """How many times /usr/bin/gandi-vm was executed since the trace was cleared (the kernel's
    sched_process_exec events; an overflow of the buffer fails the test rather than undercount)."""
    out = guest.check(f"cat {TRACE}")
    header = [line for line in out.splitlines() if "entries-in-buffer/entries-written" in line]
    if header:
        in_buffer, written = header[0].split(":")[1].split()[0].split("/")
        assert in_buffer == written, f"the exec trace lost events: {header[0]}"
    return sum(1 for line in out.splitlines()
               if "sched_process_exec:" in line and f"filename={GANDI_VM} " in line)


def resize_unit(size: int) -> str:
    return f"gandi-resize@vda:{size // 512}.service"


def wait_unit_end(guest: Guest, unit: str) -> str:
    """Wait for systemd's last word on a oneshot unit that does not remain active (and may be
    unloaded once done): "Finished ..." or "Failed ..."; returns that line."""
    guest.wait_until(f"journalctl -b -o cat --no-pager _PID=1 | grep -F '{unit}' | "
                     "grep -qE '^(Finished|Failed) '", WAIT)
    return [line for line in systemd_lines(guest, unit)
            if line.startswith(("Finished ", "Failed "))][-1]


def grow_online(guest: Guest, figures: Dict[str, Dict[str, float]], layout: str, label: str,
                size: int) -> float:
    """block_resize the root disk to `size`; returns (and records) the seconds from the QMP
    acknowledgement until df shows / grown by at least 90% of the space added (ext4 keeps the
    rest for its inode tables)."""
    before, disk_before = df_size(guest), sectors(guest, "vda") * 512
    clear_trace(guest)
    guest.resize_root(size)
    acked = time.monotonic()
    took = guest.poll(f"test $(df -B1 --output=size / | tail -n 1) -ge "
                      f"{before + (size - disk_before) * 9 // 10}", WAIT, acked)
    assert took is not None, (f"/ still {df_size(guest)} bytes {guest.scaled(WAIT):.0f} s after "
                              f"block_resize to {size}")
    figures.setdefault(layout, {})[label] = round(took, 2)
    return took


# -- ext4 on the whole disk -----------------------------------------------------------------------

class TestWholeDisk:
    @staticmethod
    def root_options(image: Path) -> dict:
        return {"root_size": 3 * GIB}

    def test_root_is_grown_to_the_whole_disk_at_boot(self, guest: Guest):
        assert sectors(guest, "vda") * 512 == 3 * GIB
        assert ext4_bytes(guest, "/dev/vda") == 3 * GIB
        assert df_size(guest) > FS_SIZE + GIB // 2  # df of the 2 GiB filesystem: 1.9 GiB
        assert guest.check("systemctl --failed --no-legend --plain") == ""

    def test_gandi_mount_grew_it_after_local_fs_target(self, guest: Guest):
        mount = show(guest, "gandi-mount.service", "Result", "ActiveState",
                     "ExecMainStartTimestampMonotonic")
        local = show(guest, "local-fs.target", "ActiveEnterTimestampMonotonic")
        sysinit = show(guest, "sysinit.target", "ActiveEnterTimestampMonotonic")
        assert (mount["Result"], mount["ActiveState"]) == ("success", "active"), mount
        # local-fs.target comes before sysinit.target, and the growth after both.
        assert int(mount["ExecMainStartTimestampMonotonic"]) >= int(
            sysinit["ActiveEnterTimestampMonotonic"]) >= int(
            local["ActiveEnterTimestampMonotonic"]) > 0, (mount, sysinit, local)
        assert any(line.startswith("grow /: grown: ")
                   for line in gandi_lines(guest, "gandi-mount.service"))

    def test_no_other_process_grew_it_at_boot(self, guest: Guest):
        assert systemd_lines(guest, "gandi-resize@") == []
        # Every "grow" line of this boot came from gandi-mount's process.
        everywhere = guest.check("journalctl -b -o cat --no-pager -t gandi | grep '^grow ' || true")
        assert everywhere.splitlines() == [line for line in gandi_lines(guest, "gandi-mount.service")
                                           if line.startswith("grow ")]

    def test_block_resize_grows_root_online(self, guest: Guest, figures):
        grow_online(guest, figures, "whole disk", "first resize, 3 -> 4 GiB", 4 * GIB)
        assert wait_unit_end(guest, resize_unit(4 * GIB)).startswith("Finished ")
        assert ext4_bytes(guest, "/dev/vda") == 4 * GIB
        assert gandi_vm_execs(guest) == 1  # the one gandi-resize@ run

    def test_a_second_block_resize_grows_root_again(self, guest: Guest, figures):
        grow_online(guest, figures, "whole disk", "second resize, 4 -> 5 GiB", 5 * GIB)
        assert wait_unit_end(guest, resize_unit(5 * GIB)).startswith("Finished ")
        assert ext4_bytes(guest, "/dev/vda") == 5 * GIB
        assert gandi_vm_execs(guest) == 1
        assert guest.check("systemctl --failed --no-legend --plain") == ""

    def test_a_change_event_without_a_size_change_starts_nothing(self, guest: Guest):
        resize_units = systemd_lines(guest, "gandi-resize@")
        size = sectors(guest, "vda")
        clear_trace(guest)
        guest.check("udevadm trigger --action=change --settle /sys/class/block/vda")
        time.sleep(guest.scaled(QUIET))  # a unit systemd would start has started by now
        assert gandi_vm_execs(guest) == 0
        assert systemd_lines(guest, "gandi-resize@") == resize_units
        assert sectors(guest, "vda") == size

    def test_with_grow_root_off_a_resize_grows_nothing_and_status_says_why(self, guest: Guest):
        guest.check("sed -i '/^CONFIG_GROW_ROOT=/d' /etc/default/gandi && "
                    "echo CONFIG_GROW_ROOT=0 >>/etc/default/gandi")
        before = df_size(guest)
        guest.resize_root(6 * GIB)
        guest.wait_until(f"test $(cat /sys/class/block/vda/size) -eq {6 * GIB // 512}", WAIT)
        unit = resize_unit(6 * GIB)
        assert wait_unit_end(guest, unit).startswith("Finished ")
        assert "grow /: skipped: CONFIG_GROW_ROOT=0" in gandi_lines(guest, unit)
        assert df_size(guest) == before
        assert ext4_bytes(guest, "/dev/vda") == 5 * GIB

        [row] = [row for row in yaml.safe_load(guest.check("gandi-vm status --format yaml"))["growth"]
                 if row["mountpoint"] == "/"]
        assert (row["state"], row["reason"]) == ("disabled", "CONFIG_GROW_ROOT=0"), row
        assert (row["disk"], row["disk_size"], row["filesystem_size"]) == ("vda", 6 * GIB, 5 * GIB)
        assert row["left"] >= GIB * 9 // 10, row
        text = guest.check("gandi-vm status")
        assert "CONFIG_GROW_ROOT=0" in text and "disabled" in text

    def test_with_grow_root_off_grow_says_so_and_runs_nothing(self, guest: Guest):
        # The owner's opt-out holds for an explicit `gandi-vm grow` too.
        done = guest.run("gandi-vm grow --dry-run")
        shown = done.stdout + done.stderr
        assert done.returncode == 0, shown
        assert "CONFIG_GROW_ROOT=0" in shown and "resize2fs" not in shown, shown
        assert ext4_bytes(guest, "/dev/vda") == 5 * GIB

    def test_grow_dry_run_prints_the_resize2fs_it_would_run_and_changes_nothing(self, guest: Guest):
        """The same guest, its configuration copied with CONFIG_GROW_ROOT=1."""
        guest.check("sed 's/^CONFIG_GROW_ROOT=.*/CONFIG_GROW_ROOT=1/' /etc/default/gandi "
                    ">/run/gandi-grow-on")
        done = guest.run("gandi-vm --config /run/gandi-grow-on grow --dry-run")
        shown = done.stdout + done.stderr
        assert done.returncode == 0, shown
        assert "resize2fs" in shown and "/dev/vda" in shown, shown
        assert ext4_bytes(guest, "/dev/vda") == 5 * GIB
        assert sectors(guest, "vda") * 512 == 6 * GIB


# -- ext4 in GPT partition 1 --------------------------------------------------------------------

class TestGptDisk:
    @staticmethod
    def root_options(image: Path) -> dict:
        return {"root_disk": gpt_root_image(image), "root": "/dev/vda1", "root_size": 3 * GIB}

    def assert_partition_fills_the_disk(self, guest: Guest, size: int) -> None:
        disk = sectors(guest, "vda")
        assert disk * 512 == size
        table = partition_table(guest)
        # The backup GPT moved to the disk's end: 32 sectors of entries and its header.
        assert table["lastlba"] == disk - 34, table
        [part] = table["partitions"]
        assert (part["name"], part["start"]) == ("gandiroot", 2048), part
        assert part["start"] + part["size"] - 1 == table["lastlba"], table
        assert sectors(guest, "vda1") == part["size"]
        verify = guest.run("sfdisk --verify /dev/vda")
        assert verify.returncode == 0 and "No errors detected" in verify.stdout, str(verify)
        assert ext4_bytes(guest, "/dev/vda1") >= part["size"] * 512 - (1 << 20)

    def test_partition_and_root_are_grown_to_the_end_at_boot(self, guest: Guest):
        assert guest.check("findmnt -n -o SOURCE /").strip() == "/dev/vda1"
        self.assert_partition_fills_the_disk(guest, 3 * GIB)
        assert df_size(guest) > FS_SIZE + GIB // 2  # df of the 2 GiB filesystem: 1.9 GiB
        assert systemd_lines(guest, "gandi-resize@") == []
        assert any(line.startswith("grow /: grown: ")
                   for line in gandi_lines(guest, "gandi-mount.service"))
        assert guest.check("systemctl --failed --no-legend --plain") == ""

    def test_block_resize_grows_partition_and_root_online(self, guest: Guest, figures):
        grow_online(guest, figures, "GPT partition", "3 -> 4 GiB", 4 * GIB)
        assert wait_unit_end(guest, resize_unit(4 * GIB)).startswith("Finished ")
        self.assert_partition_fills_the_disk(guest, 4 * GIB)
        assert gandi_vm_execs(guest) == 1
        assert guest.check("systemctl --failed --no-legend --plain") == ""
