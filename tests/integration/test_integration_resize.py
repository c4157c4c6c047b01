"""`gandi-vm disk resize`: grow a filesystem gandi mounted after its disk grew (a `change` uevent
with RESIZE=1). The filesystems of CONFIG_GROW_MOUNTPOINTS, the other kind `disk resize` grows,
are in test_integration_grow.py."""

from __future__ import annotations

import json
import os

import pytest

from gandi_integration import (CAP_SYS_RESOURCE, GROW_STATE_DIR, STATE_DIR, grow_outcomes,
                               has_capability, require)

EXT4_REFUSED = ("kernel refuses ext4 online resize: CAP_SYS_RESOURCE not in the effective "
                "capability set")


def fs_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def record(name: str) -> dict:
    return json.loads((STATE_DIR / f"{name}.json").read_text())


def outcome(run, mountpoint) -> str:
    """The outcome word of the run's `grow <mountpoint>: ...` line."""
    return grow_outcomes(run).get(str(mountpoint), ("no line",))[0]


def attached(env, disk, label):
    run = env.gandi("disk", "attach", disk.name)
    assert run.returncode == 0, str(run)
    mountpoint = env.root / label
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]
    return mountpoint


def test_xfs_grows_online_and_a_second_resize_changes_nothing(env):
    require("mkfs.xfs", "xfs_growfs")
    disk = env.disk("xfs", label="big", size_mb=320)
    mountpoint = attached(env, disk, "big")
    before = fs_bytes(mountpoint)

    state_file = STATE_DIR / f"{disk.name}.json"  # attach's record: resize leaves it alone
    saved = (state_file.read_bytes(), state_file.stat().st_mtime_ns)

    env.grow(disk, 480)
    run = env.gandi("disk", "resize", disk.name)

    assert run.returncode == 0 and outcome(run, mountpoint) == "grown", str(run)
    grown = fs_bytes(mountpoint)
    assert grown > before + 100 * 1024 * 1024, (before, grown)
    grow_file = GROW_STATE_DIR / f"{disk.name}.json"
    assert json.loads(grow_file.read_text())["state"] == "grown"

    again = env.gandi("disk", "resize", disk.name)

    assert again.returncode == 0 and outcome(again, mountpoint) == "unchanged", str(again)
    assert fs_bytes(mountpoint) == grown
    assert (state_file.read_bytes(), state_file.stat().st_mtime_ns) == saved
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]
    # A third event for the same size rewrites no record either.
    grow_saved = (grow_file.read_bytes(), grow_file.stat().st_mtime_ns)
    assert env.gandi("disk", "resize", disk.name).returncode == 0
    assert (grow_file.read_bytes(), grow_file.stat().st_mtime_ns) == grow_saved


def test_a_disk_enlarged_while_detached_grows_when_attached(env):
    """No resize event reaches a VM that was off while its disk grew: attach grows it."""
    require("mkfs.xfs", "xfs_growfs")
    disk = env.disk("xfs", label="big", size_mb=320)
    env.grow(disk, 480)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    mountpoint = env.root / "big"
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]
    assert outcome(run, mountpoint) == "grown", str(run)
    assert fs_bytes(mountpoint) > 400 * 1024 * 1024


def test_xfs_on_the_last_partition_grows_with_its_partition(env):
    require("mkfs.xfs", "xfs_growfs", "growpart")
    part = env.partitioned_disk("xfs", label="parted", size_mb=330)
    mountpoint = attached(env, part, "parted")
    skipped = env.gandi("disk", "attach", part.loop)  # records the whole disk, as udev would
    assert skipped.returncode == 0, str(skipped)
    before = fs_bytes(mountpoint)

    env.grow(part, 480)
    run = env.gandi("disk", "resize", part.loop)

    assert run.returncode == 0 and outcome(run, mountpoint) == "grown", str(run)
    assert fs_bytes(mountpoint) > before + 100 * 1024 * 1024, (before, fs_bytes(mountpoint))
    assert [m.target for m in env.mounts(part.name)] == [str(mountpoint)]


def test_ext4_grows_online(env):
    require("resize2fs")
    if not has_capability(CAP_SYS_RESOURCE):
        pytest.skip(EXT4_REFUSED)
    disk = env.disk("ext4", label="big", size_mb=64)
    mountpoint = attached(env, disk, "big")
    before = fs_bytes(mountpoint)

    env.grow(disk, 128)
    run = env.gandi("disk", "resize", disk.name)

    assert run.returncode == 0 and outcome(run, mountpoint) == "grown", str(run)
    assert fs_bytes(mountpoint) > before + 32 * 1024 * 1024
    again = env.gandi("disk", "resize", disk.name)
    assert again.returncode == 0 and outcome(again, mountpoint) == "unchanged", str(again)


def test_ext4_grow_refused_by_the_kernel_is_a_one_line_error(env):
    require("resize2fs")
    if has_capability(CAP_SYS_RESOURCE):
        pytest.skip("CAP_SYS_RESOURCE is in the effective set: the kernel allows ext4 online "
                    "resize here (test_ext4_grows_online covers it)")
    disk = env.disk("ext4", label="big", size_mb=64)
    mountpoint = attached(env, disk, "big")
    before = fs_bytes(mountpoint)

    env.grow(disk, 128)
    run = env.gandi("disk", "resize", disk.name)

    assert run.returncode == 1 and outcome(run, mountpoint) == "failed", str(run)
    [error] = run.error_lines()
    assert "resize2fs" in error, str(run)
    assert fs_bytes(mountpoint) == before
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]
    # Not taken as done: the next change event tries again (and fails the same way).
    retry = env.gandi("disk", "resize", disk.name)
    assert retry.returncode == 1 and len(retry.error_lines()) == 1, str(retry)
    assert "resize2fs" in retry.error_lines()[0], str(retry)
