"""Boot: the boot services ran and succeeded, and a disk attached before boot is mounted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from qemu_guest import Guest, make_disk


@pytest.fixture(scope="module")
def guest(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    disk = make_disk(tmp_path_factory.mktemp("boot") / "bootdata.img", "ext4", "bootdata")
    with Guest(image, boot_disks=[disk]) as vm:
        yield vm


RAN = {"LoadState": "loaded", "ActiveState": "active", "Result": "success", "ExecMainStatus": "0"}


def unit_state(guest: Guest, unit: str) -> dict:
    # systemd answers Result=success even for a unit that does not exist: LoadState tells.
    shown = guest.check(f"systemctl show -p LoadState -p ActiveState -p Result -p ExecMainStatus {unit}")
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def test_the_guest_boots_with_no_failed_unit(guest: Guest):
    assert guest.check("systemctl --failed --no-legend --plain") == ""
    assert guest.state == "running"


def test_gandi_mount_ran_and_succeeded(guest: Guest):
    assert unit_state(guest, "gandi-mount.service") == RAN


def test_gandi_config_ran_and_succeeded(guest: Guest):
    assert unit_state(guest, "gandi-config.service") == RAN


def test_nothing_of_ours_runs_before_sysinit_target(guest: Guest):
    """The onlining rule reads the configuration itself and / grows in gandi-mount: no unit of
    ours is ordered before sysinit.target, and none started before it was reached."""
    assert unit_state(guest, "gandi-early.service")["LoadState"] == "not-found"
    before = guest.check("systemctl list-dependencies --after --all --plain --no-pager "
                         "sysinit.target")
    assert [unit for unit in before.split() if unit.startswith("gandi-")] == [], before
    reached = int(guest.check("systemctl show -p ActiveEnterTimestampMonotonic --value "
                              "sysinit.target"))
    started = guest.check("systemctl show -p Id -p InactiveExitTimestampMonotonic 'gandi-*'")
    units = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
             for block in started.split("\n\n") if block.strip()]
    assert any(unit["Id"] == "gandi-mount.service" for unit in units), units
    for unit in units:
        if int(unit["InactiveExitTimestampMonotonic"]):  # 0: never started this boot
            assert int(unit["InactiveExitTimestampMonotonic"]) >= reached, (unit, reached)


def test_disk_attached_before_boot_is_mounted_under_its_label(guest: Guest):
    name = guest.kernel_name("boot0")
    [mount] = json.loads(guest.check("findmnt -J -o TARGET,SOURCE,OPTIONS /srv/bootdata"))["filesystems"]
    assert mount["source"] == f"/dev/{name}"
    assert {"nosuid", "nodev", "noatime"} <= set(mount["options"].split(","))


def test_the_system_disk_is_left_alone(guest: Guest):
    status = json.loads(guest.check("gandi-vm status --format yaml | python3 -c "
                                    "'import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))'"))
    vda = next(row for row in status["disks"] if row["device"] == "vda")
    assert vda["state"] == "skipped" and "system disk" in vda["reason"]
    assert vda["mountpoint"] == "/"
