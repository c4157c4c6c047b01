"""`gandi-vm grow` and `gandi-vm disk resize`: filesystems grown into the space their disk gained,
bottom up (partition, LVM physical volume, logical volume, filesystem), on real loop devices.

Each test mounts its own filesystem on a directory of tmp_path and names only that directory in
CONFIG_GROW_MOUNTPOINTS: the machine's "/" is never a candidate (Env.write_config defaults to
CONFIG_GROW_ROOT=0 and no mountpoint). Assertions read the outcome where it is: statvfs of the
mountpoint, the partition table (`sfdisk --json`, the GPT backup header in the disk's last
block), the kernel's partition size in sysfs, `pvs`/`lvs`; the log line is only checked for its
outcome word (grown, unchanged, skipped, failed) and, for a failure, the step it names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Tuple

import pytest
import yaml

from gandi_integration import (CAP_SYS_RESOURCE, MiB, Disk, Env, Run, grow_outcomes,
                               has_capability, mkfs, require, sh, which)

EXT4_REFUSED = ("kernel refuses ext4 online resize: CAP_SYS_RESOURCE not in the effective "
                "capability set")
MIN_GROWTH = 16 * MiB  # the contract: less is not worth a table rewrite
# What each filesystem needs to be made, and a size it grows to, in MiB (XFS wants 300 MiB).
SIZES = {"ext4": (64, 128), "xfs": (330, 480), "btrfs": (128, 256)}
TOOLS = {"ext4": ("mkfs.ext4", "resize2fs"), "xfs": ("mkfs.xfs", "xfs_growfs"),
         "btrfs": ("mkfs.btrfs", "btrfs")}
GROW_COMMANDS = ("growpart", "pvresize", "lvextend", "resize2fs", "xfs_growfs",
                 "btrfs filesystem resize")


# -- facts ----------------------------------------------------------------------------------------
def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def sectors(name: str) -> int:
    """The kernel's size of a block device or partition, in 512-byte sectors."""
    return int(Path(f"/sys/class/block/{name}/size").read_text())


def table(disk: Disk) -> dict:
    return json.loads(sh("sfdisk", "--json", f"/dev/{disk.loop}").stdout)["partitiontable"]


def entry(disk: Disk) -> dict:
    """The partition's line of the table (start and size in sectors)."""
    [row] = [p for p in table(disk)["partitions"] if p["node"] == disk.dev]
    return row


def verify(disk: Disk) -> str:
    """`sfdisk --verify` exits 0 even when it reports errors: read what it says."""
    done = sh("sfdisk", "--verify", f"/dev/{disk.loop}", check=False)
    text = (done.stdout + done.stderr).decode(errors="replace")
    assert "No errors detected" in text and "not on the end" not in text, text
    return text


def on_disk(disk: Disk) -> bytes:
    """What the image holds where tables live: its first MiB (MBR, GPT header and entries) and
    its last 64 KiB (the backup GPT), once the kernel wrote back what it holds in its caches."""
    os.sync()
    with open(disk.image, "rb") as f:
        head = f.read(MiB)
        f.seek(-64 * 1024, os.SEEK_END)
        return head + f.read()


def snapshot(disk: Disk, mountpoint: Path) -> Tuple[bytes, int, int]:
    return on_disk(disk), sectors(disk.name), fs_bytes(mountpoint)


def planned(run: Run) -> str:
    """The commands a run ran or planned, wherever it printed them."""
    return "\n".join(line for line in (run.stdout + run.stderr).splitlines()
                     if any(command in line for command in GROW_COMMANDS)
                     and "grow /" not in line)  # the outcome line names done steps, not commands


def require_fs(fstype: str) -> None:
    require(*TOOLS[fstype])
    if fstype == "ext4" and not has_capability(CAP_SYS_RESOURCE):
        pytest.skip(EXT4_REFUSED)


def configure(env: Env, *mountpoints: Path, **settings: str) -> None:
    env.settings.update({"CONFIG_GROW_ROOT": "1",
                         "CONFIG_GROW_MOUNTPOINTS": " ".join(map(str, mountpoints)), **settings})


def grow(env: Env, mountpoint: Path, expect: str, *args: str, **options) -> Run:
    """`gandi-vm grow`; its line for the mountpoint says `expect` (and nothing else failed)."""
    run = env.gandi("grow", *args, **options)
    outcomes = grow_outcomes(run)
    assert outcomes.get(str(mountpoint), ("no line",))[0] == expect, str(run)
    assert run.returncode == (1 if expect == "failed" else 0), str(run)
    return run


def make_partitioned(env: Env, table_type: str, fstype: str, grows: bool = True) -> \
        Tuple[Disk, Path]:
    """A disk with one partition holding a mounted filesystem; `grows`: the test expects the
    filesystem to grow (else nothing may run, and ext4 needs no capability)."""
    require("growpart")
    if grows:
        require_fs(fstype)
    else:
        require(*TOOLS[fstype])
    part = env.partitioned_disk(fstype, None, size_mb=SIZES[fstype][0], table=table_type)
    return part, env.mount(part)


# -- the last partition (GPT, MBR) and its filesystem ---------------------------------------------
@pytest.mark.parametrize("table_type, fstype", [("gpt", "ext4"), ("gpt", "xfs"), ("dos", "xfs"),
                                                ("dos", "ext4")])
def test_last_partition_and_its_filesystem_grow_to_the_end_of_the_disk(env, table_type, fstype):
    part, mountpoint = make_partitioned(env, table_type, fstype)
    configure(env, mountpoint)
    before = fs_bytes(mountpoint)
    old_end = entry(part)["start"] + entry(part)["size"]
    size_mb = SIZES[fstype][1]
    added = (size_mb - SIZES[fstype][0]) * MiB

    env.grow(part, size_mb)
    grow(env, mountpoint, "grown")

    disk_sectors = size_mb * MiB // 512
    row = entry(part)
    end = row["start"] + row["size"]
    if table_type == "gpt":
        # 128 entries of 128 bytes and the header: the backup takes the last 33 sectors.
        assert table(part)["lastlba"] == disk_sectors - 34
        assert end == disk_sectors - 33, (old_end, end, disk_sectors)
        with open(f"/dev/{part.loop}", "rb") as f:
            f.seek((disk_sectors - 1) * 512)
            assert f.read(8) == b"EFI PART", "no backup GPT header in the disk's last sector"
    else:
        assert disk_sectors - 2048 < end <= disk_sectors, (old_end, end, disk_sectors)
    verify(part)
    assert sectors(part.name) == row["size"], "the kernel still has the old partition size"
    grown = fs_bytes(mountpoint)
    assert grown >= before + added - MIN_GROWTH, (before, grown)
    assert [m.target for m in env.mounts(part.name)] == [str(mountpoint)]

    # A second run finds nothing worth doing: it plans no command and changes no byte.
    saved = snapshot(part, mountpoint)
    dry = env.gandi("grow", "--dry-run")
    assert dry.returncode == 0 and planned(dry) == "", str(dry)
    grow(env, mountpoint, "unchanged")
    assert snapshot(part, mountpoint) == saved


# -- a filesystem on the whole disk ---------------------------------------------------------------
@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs"])
def test_filesystem_on_the_whole_disk_grows(env, fstype):
    require_fs(fstype)
    small, big = SIZES[fstype]
    disk = env.disk(fstype, size_mb=small)
    mountpoint = env.mount(disk)
    configure(env, mountpoint)
    before = fs_bytes(mountpoint)

    env.grow(disk, big)
    grow(env, mountpoint, "grown")

    grown = fs_bytes(mountpoint)
    assert grown >= before + (big - small) * MiB - MIN_GROWTH, (before, grown)
    grow(env, mountpoint, "unchanged")
    assert fs_bytes(mountpoint) == grown


# -- LVM ------------------------------------------------------------------------------------------
def lvm_facts(env: Env, vg: str, pv: Disk) -> Dict[str, int]:
    pvs = env.lvm("pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pv_size,vg_free",
                  pv.dev).stdout.split()
    lvs = env.lvm("lvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "lv_size",
                  f"{vg}/lv").stdout.split()
    return {"pv_size": int(pvs[0]), "vg_free": int(pvs[1]), "lv_size": int(lvs[0])}


def logical_volume(env: Env) -> Tuple[Disk, str, Disk, Path, int]:
    """A GPT partition holding an LVM PV, its group's LV holding a mounted filesystem (ext4
    where the kernel lets ext4 grow online, else XFS); returns pv, vg, lv, mountpoint and the
    size in MiB to grow the disk to."""
    require("growpart", "lvm")
    fstype = "ext4" if has_capability(CAP_SYS_RESOURCE) else "xfs"
    require(*TOOLS[fstype])
    disk_mb, lv_mb = (64, 40) if fstype == "ext4" else (400, 320)
    [pv] = env.partitions(disk_mb, ",,V\n")
    vg, lv = env.volume_group(pv, lv_mb)
    mkfs(fstype, Path(lv.dev), None)
    mountpoint = env.mount(lv, source=f"/dev/mapper/{vg}-lv")
    return pv, vg, lv, mountpoint, disk_mb * 2


def test_lvm_physical_volume_grows_but_not_its_logical_volume_by_default(env):
    pv, vg, lv, mountpoint, size_mb = logical_volume(env)
    configure(env, mountpoint)
    before, fs_before = lvm_facts(env, vg, pv), fs_bytes(mountpoint)
    pv_sectors = sectors(pv.name)

    env.grow(pv, size_mb)
    grow(env, mountpoint, "grown")

    added = size_mb * MiB // 2
    after = lvm_facts(env, vg, pv)
    assert sectors(pv.name) >= pv_sectors + (added - MIN_GROWTH) // 512
    assert after["pv_size"] >= before["pv_size"] + added - MIN_GROWTH, (before, after)
    assert after["vg_free"] >= before["vg_free"] + added - MIN_GROWTH, (before, after)
    assert after["lv_size"] == before["lv_size"]
    assert fs_bytes(mountpoint) == fs_before
    verify(pv)
    grow(env, mountpoint, "unchanged")  # the free space is held for CONFIG_GROW_ROOT_LV=1
    assert lvm_facts(env, vg, pv) == after


def test_lvm_logical_volume_and_filesystem_grow_with_grow_root_lv(env):
    pv, vg, lv, mountpoint, size_mb = logical_volume(env)
    configure(env, mountpoint, CONFIG_GROW_ROOT_LV="1")
    before, fs_before = lvm_facts(env, vg, pv), fs_bytes(mountpoint)

    env.grow(pv, size_mb)
    grow(env, mountpoint, "grown")

    added = size_mb * MiB // 2
    after = lvm_facts(env, vg, pv)
    assert after["pv_size"] >= before["pv_size"] + added - MIN_GROWTH, (before, after)
    assert after["lv_size"] >= before["lv_size"] + before["vg_free"] + added - MIN_GROWTH
    assert after["vg_free"] < MIN_GROWTH, after
    assert fs_bytes(mountpoint) >= fs_before + added - 2 * MIN_GROWTH
    grow(env, mountpoint, "unchanged")


def test_lvm_dry_run_plans_every_layer_with_its_device(env):
    pv, vg, lv, mountpoint, size_mb = logical_volume(env)
    configure(env, mountpoint, CONFIG_GROW_ROOT_LV="1")
    env.grow(pv, size_mb)
    facts, saved = lvm_facts(env, vg, pv), snapshot(pv, mountpoint)

    run = env.gandi("grow", "--dry-run")

    assert run.returncode == 0, str(run)
    commands = planned(run)
    assert f"growpart /dev/{pv.loop} 1" in commands, str(run)
    assert f"pvresize /dev/{pv.name}" in commands, str(run)
    assert f"lvextend -l +100%FREE {vg}/lv" in commands, str(run)
    assert ("resize2fs" in commands) or ("xfs_growfs" in commands), str(run)
    assert snapshot(pv, mountpoint) == saved
    assert lvm_facts(env, vg, pv) == facts


# -- refusals: nothing changes, not one byte of the table -----------------------------------------
def assert_refused(env: Env, part: Disk, mountpoint: Path, expect: str = "skipped",
                   **options) -> Run:
    saved = snapshot(part, mountpoint)
    run = grow(env, mountpoint, expect, **options)
    assert snapshot(part, mountpoint) == saved, f"table or filesystem changed\n{run}"
    return run


def test_a_partition_followed_by_another_is_not_grown(env):
    require("growpart")
    first, second = env.partitions(64, ",24M,L\n,,L\n")
    mkfs("ext4", Path(first.dev), None)
    mountpoint = env.mount(first)
    configure(env, mountpoint)
    env.grow(first, 128)

    run = assert_refused(env, first, mountpoint)
    assert second.name in grow_outcomes(run)[str(mountpoint)][1], str(run)


def test_an_mbr_logical_partition_is_not_grown(env):
    require("growpart")
    parts = env.partitions(64, ",16M,L\n,,E\n,,L\n", table="dos")
    logical = parts[-1]
    assert logical.name.endswith("p5"), [p.name for p in parts]
    mkfs("ext4", Path(logical.dev), None)
    mountpoint = env.mount(logical)
    configure(env, mountpoint)
    env.grow(logical, 128)

    assert_refused(env, logical, mountpoint)


def damage(disk: Disk, offset: int) -> None:
    """Flip one byte of the disk through its loop device (so that no cache of the device holds
    the old byte); the kernel keeps the partitions it already knows."""
    fd = os.open(f"/dev/{disk.loop}", os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("table_type, offset, what", [
    ("gpt", 512 + 56, "a byte of the GPT header's disk GUID: its CRC no longer matches"),
    ("dos", 510, "the MBR signature 55 AA"),
])
def test_a_partition_table_that_does_not_check_out_is_not_rewritten(env, table_type, offset,
                                                                      what):
    part, mountpoint = make_partitioned(env, table_type, "ext4", grows=False)
    configure(env, mountpoint)
    damage(part, offset)
    env.grow(part, 128)

    run = assert_refused(env, part, mountpoint)
    assert "table" in grow_outcomes(run)[str(mountpoint)][1], str(run)


def test_x_gandi_nogrow_in_fstab_is_obeyed(env):
    # The fstab is the test's own, bind-mounted over /etc/fstab in the run's private mount
    # namespace: the machine's /etc/fstab is never written.
    part, mountpoint = make_partitioned(env, "gpt", "ext4", grows=False)
    configure(env, mountpoint)
    fstab = env.tmp / "fstab"
    fstab.write_text(f"# a test's fstab\n"
                     f"{part.dev} {mountpoint} ext4 defaults,x-gandi.nogrow 0 2\n")
    env.grow(part, 128)

    run = assert_refused(env, part, mountpoint, binds={"/etc/fstab": fstab})
    assert "nogrow" in grow_outcomes(run)[str(mountpoint)][1], str(run)


def test_a_read_only_mount_is_not_grown(env):
    # Growing writes to the filesystem: the owner's `ro` means no.
    require("growpart", *TOOLS["ext4"])
    part = env.partitioned_disk("ext4", None, size_mb=64)
    mountpoint = env.mount(part, "ro")
    configure(env, mountpoint)
    env.grow(part, 128)

    run = assert_refused(env, part, mountpoint)
    assert "read-only" in grow_outcomes(run)[str(mountpoint)][1], str(run)


def test_grow_root_0_grows_nothing(env):
    part, mountpoint = make_partitioned(env, "gpt", "ext4", grows=False)
    configure(env, mountpoint, CONFIG_GROW_ROOT="0")
    env.grow(part, 128)
    saved = snapshot(part, mountpoint)

    run = env.gandi("grow")

    assert run.returncode == 0, str(run)
    assert grow_outcomes(run).get(str(mountpoint), ("skipped",))[0] == "skipped", str(run)
    assert snapshot(part, mountpoint) == saved


def test_less_than_16_mib_gained_is_not_worth_a_rewrite(env):
    part, mountpoint = make_partitioned(env, "gpt", "ext4", grows=False)
    configure(env, mountpoint)
    env.grow(part, 64 + 8)

    assert_refused(env, part, mountpoint, expect="unchanged")


# -- a step that fails ----------------------------------------------------------------------------
def failing(env: Env, tool: str) -> Dict[str, Path]:
    """`binds` for a run where `tool` fails: a script of the test's, bind-mounted over the real
    tool in the run's own mount namespace only (the machine's tool stays as it is)."""
    fake = env.tmp / f"failing-{tool}"
    fake.write_text(f'#!/bin/sh\necho "{tool}: made to fail by the test" >&2\nexit 2\n')
    fake.chmod(0o755)
    return {str(which(tool)): fake}


@pytest.mark.parametrize("layer, cause", [("partition", "growpart"), ("filesystem", "resize2fs"),
                                          ("filesystem", "kernel without CAP_SYS_RESOURCE")])
def test_a_failing_step_exits_1_naming_it_and_leaves_its_layer_as_it_was(env, layer, cause):
    require("growpart", "resize2fs")
    if cause.startswith("kernel") and has_capability(CAP_SYS_RESOURCE):
        pytest.skip("CAP_SYS_RESOURCE is in the effective set: the kernel grows ext4 online here")
    part = env.partitioned_disk("ext4", None, size_mb=64)
    mountpoint = env.mount(part)
    configure(env, mountpoint)
    env.grow(part, 128)
    old, saved = entry(part), snapshot(part, mountpoint)
    binds = {} if cause.startswith("kernel") else failing(env, cause)

    run = grow(env, mountpoint, "failed", binds=binds)

    step = "growpart" if layer == "partition" else "resize2fs"
    why = grow_outcomes(run)[str(mountpoint)][1]
    assert layer in why and step in why, str(run)
    assert ("made to fail" in why) == bool(binds), str(run)  # the test's tool ran, not the real
    assert fs_bytes(mountpoint) == saved[2]
    if layer == "partition":  # byte for byte the table of before (its backup not at the end yet)
        assert snapshot(part, mountpoint) == saved, "a failed growpart changed the table"
    else:  # the partition step before it stays done, consistent, and the kernel knows it
        verify(part)
        row = entry(part)
        assert row["start"] == old["start"] and row["size"] == 128 * MiB // 512 - 33 - old["start"]
        assert sectors(part.name) == row["size"]
    # Tried again at the next run (failing the same way), and status says why it is not grown.
    again = grow(env, mountpoint, "failed", binds=binds)
    assert step in grow_outcomes(again)[str(mountpoint)][1], str(again)
    assert step in growth(env, mountpoint)["reason"]


# -- --dry-run ------------------------------------------------------------------------------------
def test_dry_run_prints_the_commands_and_changes_nothing(env):
    require("growpart")
    require(*TOOLS["ext4"])  # nothing runs: no capability needed
    part = env.partitioned_disk("ext4", None, size_mb=64)
    mountpoint = env.mount(part)
    configure(env, mountpoint)
    env.grow(part, 128)
    saved = snapshot(part, mountpoint)

    run = env.gandi("grow", "--dry-run")

    assert run.returncode == 0, str(run)
    commands = planned(run)
    assert f"growpart /dev/{part.loop} 1" in commands, str(run)
    assert f"resize2fs /dev/{part.name}" in commands, str(run)
    assert snapshot(part, mountpoint) == saved


# -- disk resize: the capacity change of one disk -------------------------------------------------
def test_disk_resize_grows_a_configured_mountpoint_on_that_disk(env):
    part, mountpoint = make_partitioned(env, "gpt", "xfs")
    configure(env, mountpoint)
    before = fs_bytes(mountpoint)
    env.grow(part, 480)

    # The unit's instance name: gandi-resize@<disk>:<sectors>.service
    run = env.gandi("disk", "resize", f"{part.loop}:{480 * MiB // 512}")

    assert run.returncode == 0, str(run)
    assert grow_outcomes(run)[str(mountpoint)][0] == "grown", str(run)
    assert fs_bytes(mountpoint) >= before + 150 * MiB - MIN_GROWTH
    verify(part)
    again = env.gandi("disk", "resize", part.loop)
    assert again.returncode == 0 and grow_outcomes(again)[str(mountpoint)][0] == "unchanged", \
        str(again)


@pytest.mark.parametrize("configured", [False, True])
def test_disk_resize_leaves_what_it_may_not_grow(env, configured):
    """Not configured, not mounted by gandi: the owner's; configured with CONFIG_GROW_ROOT=0:
    switched off. Either way the table and the filesystem stay as they were."""
    part, mountpoint = make_partitioned(env, "gpt", "ext4", grows=False)
    if configured:
        configure(env, mountpoint, CONFIG_GROW_ROOT="0")
    env.grow(part, 128)
    saved = snapshot(part, mountpoint)

    run = env.gandi("disk", "resize", part.loop)

    assert run.returncode == 0, str(run)
    assert grow_outcomes(run).get(str(mountpoint), ("skipped",))[0] == "skipped", str(run)
    assert snapshot(part, mountpoint) == saved


# -- status ---------------------------------------------------------------------------------------
def growth(env: Env, mountpoint: Path) -> dict:
    run = env.gandi("status", "--format", "yaml")
    assert run.returncode == 0, str(run)
    rows = [row for row in yaml.safe_load(run.stdout)["growth"]
            if row["mountpoint"] == str(mountpoint)]
    assert len(rows) == 1, run.stdout
    return rows[0]


def test_status_shows_the_space_left_and_why(env):
    part, mountpoint = make_partitioned(env, "gpt", "xfs")
    configure(env, mountpoint)
    old = entry(part)
    env.grow(part, 480)

    row = growth(env, mountpoint)

    assert row["disk"] == part.loop and row["disk_size"] == 480 * MiB, row
    assert row["partition_end"] == (old["start"] + old["size"]) * 512, row
    assert 0 < row["filesystem_size"] <= old["size"] * 512, row
    assert row["left"] >= 150 * MiB - MIN_GROWTH, row
    assert row["reason"], row
    text = env.gandi("status")
    assert text.returncode == 0 and str(mountpoint) in text.stdout, str(text)

    grow(env, mountpoint, "grown")
    row = growth(env, mountpoint)
    assert row["left"] < MIN_GROWTH, row
    assert row["partition_end"] == (entry(part)["start"] + entry(part)["size"]) * 512, row

    env.grow(part, 640)
    configure(env, mountpoint, CONFIG_GROW_ROOT="0")
    row = growth(env, mountpoint)
    assert row["left"] >= 150 * MiB - MIN_GROWTH and "CONFIG_GROW_ROOT" in row["reason"], row


# -- boot: mount-all grows what local-fs.target mounted -------------------------------------------
def test_mount_all_grows_a_configured_mountpoint_mounted_before_it(env):
    part, mountpoint = make_partitioned(env, "gpt", "xfs")
    configure(env, mountpoint)
    before = fs_bytes(mountpoint)
    env.grow(part, 480)

    run = env.gandi("mount-all")

    assert run.returncode == 0 and grow_outcomes(run)[str(mountpoint)][0] == "grown", str(run)
    assert fs_bytes(mountpoint) >= before + 150 * MiB - MIN_GROWTH
    verify(part)
    # The disk is the owner's (mounted, not by gandi): mount-all attached nothing of it.
    assert [m.target for m in env.mounts(part.name)] == [str(mountpoint)]
