"""`gandi-vm disk attach`: what gets mounted where, what is skipped, and why."""

from __future__ import annotations

import os

from gandi_integration import STATE_DIR, require, underlying_mode


def test_labelled_ext4_is_mounted_under_its_label(env):
    require("unshare")
    disk = env.disk("ext4", label="data")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    mountpoint = str(env.root / "data")
    [mount] = env.mounts(disk.name)
    assert mount.target == mountpoint
    assert mount.fstype == "ext4"
    assert {"nosuid", "nodev", "noatime", "rw"} <= mount.option_set, mount.options
    assert underlying_mode(mountpoint) == "755 0 0"
    row = env.status()[disk.name]
    assert row["state"] == "mounted"
    assert row["mountpoint"] == mountpoint
    assert row["fstype"] == "ext4"
    assert (STATE_DIR / f"{disk.name}.json").is_file()


def test_attach_accepts_a_dev_path_and_a_second_attach_changes_nothing(env):
    disk = env.disk("ext4", label="twice")

    first = env.gandi("disk", "attach", disk.dev)
    table = env.our_mounts()
    record = (STATE_DIR / f"{disk.name}.json").read_bytes()
    second = env.gandi("disk", "attach", disk.name)

    assert first.returncode == 0 and second.returncode == 0, f"{first}\n{second}"
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / "twice")]
    assert env.our_mounts() == table
    assert (STATE_DIR / f"{disk.name}.json").read_bytes() == record


def test_unlabelled_ext4_is_mounted_under_its_kernel_name(env):
    disk = env.disk("ext4")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / disk.name)]


def test_labelled_xfs_is_mounted(env):
    require("mkfs.xfs")
    disk = env.disk("xfs", label="logs")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    [mount] = env.mounts(disk.name)
    assert (mount.target, mount.fstype) == (str(env.root / "logs"), "xfs")
    assert {"nosuid", "nodev", "noatime"} <= mount.option_set, mount.options


def test_swap_is_skipped(env):
    disk = env.disk("swap")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert env.mounts(disk.name) == []
    assert not env.root.exists() or os.listdir(env.root) == []
    row = env.status()[disk.name]
    assert row["state"] == "skipped"
    assert "swap" in row["reason"]
    assert row["mountpoint"] is None


def test_empty_device_is_skipped(env):
    disk = env.disk(None)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert env.mounts(disk.name) == []
    row = env.status()[disk.name]
    assert row["state"] == "skipped"
    assert "no filesystem" in row["reason"]


def test_partitioned_disk_is_skipped_and_its_partition_mounted(env):
    part = env.partitioned_disk("ext4", label="inpart")

    whole = env.gandi("disk", "attach", part.loop)
    assert whole.returncode == 0, str(whole)
    assert env.mounts(part.loop) == []
    rows = env.status()
    assert rows[part.loop]["state"] == "skipped"
    assert "partitioned" in rows[part.loop]["reason"]

    run = env.gandi("disk", "attach", part.name)
    assert run.returncode == 0, str(run)
    assert [m.target for m in env.mounts(part.name)] == [str(env.root / "inpart")]
    assert env.status()[part.name]["state"] == "mounted"


def test_two_disks_with_the_same_label_get_distinct_mountpoints(env):
    first = env.disk("ext4", label="same")
    second = env.disk("ext4", label="same")

    runs = [env.gandi("disk", "attach", first.name), env.gandi("disk", "attach", second.name)]

    assert all(r.returncode == 0 for r in runs), "\n".join(map(str, runs))
    assert [m.target for m in env.mounts(first.name)] == [str(env.root / "same")]
    assert [m.target for m in env.mounts(second.name)] == [str(env.root / "same_2")]


def test_non_empty_directory_is_never_mounted_over(env):
    disk = env.disk("ext4", label="data")
    (env.root / "data").mkdir(parents=True)
    precious = env.root / "data" / "precious.txt"
    precious.write_text("keep me\n")
    before = os.stat(precious)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / "data_2")]
    assert not any(m.target == str(env.root / "data") for m in env.mounts(disk.name))
    after = os.stat(precious)
    assert precious.read_text() == "keep me\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino, before.st_mtime_ns, before.st_size)
    assert os.listdir(env.root / "data") == ["precious.txt"]


def test_allow_mount_0_mounts_nothing(env):
    disks = [env.disk("ext4", label="nope"), env.disk("ext4")]
    env.settings["CONFIG_ALLOW_MOUNT"] = "0"

    runs = [env.gandi("disk", "attach", disks[0].name), env.gandi("mount-all")]

    assert all(r.returncode == 0 for r in runs), "\n".join(map(str, runs))
    for disk in disks:
        assert env.mounts(disk.name) == []
    assert not env.root.exists() or os.listdir(env.root) == []
    rows = env.status()
    assert all(rows[d.name]["state"] == "skipped" for d in disks), rows
    assert "CONFIG_ALLOW_MOUNT=0" in rows[disks[0].name]["reason"]


def test_dry_run_prints_the_plan_and_changes_nothing(env):
    disk = env.disk("ext4", label="plan")
    table = env.our_mounts()

    run = env.gandi("--dry-run", "disk", "attach", disk.dev)

    assert run.returncode == 0, str(run)
    plan = run.stdout.splitlines()
    assert plan and all(line.startswith("would ") for line in plan), run.stdout
    assert any(line.startswith("would run mount ") and disk.dev in line for line in plan), plan
    assert any(str(env.root / "plan") in line for line in plan), plan
    assert env.our_mounts() == table
    assert env.mounts(disk.name) == []
    assert not env.root.exists()
    assert not (STATE_DIR / f"{disk.name}.json").exists()


def test_unknown_device_is_a_usage_error(env):
    run = env.gandi("disk", "attach", "nosuchdisk0")

    assert run.returncode == 2, str(run)
    assert len(run.error_lines()) == 1, str(run)


def test_a_symlinked_disk_root_still_recognises_its_own_mounts(env):
    real = env.tmp / "real"
    real.mkdir()
    env.root.symlink_to(real)
    disk = env.disk("ext4", label="data")

    first = env.gandi("disk", "attach", disk.name)
    record = (STATE_DIR / f"{disk.name}.json").read_bytes()
    second = env.gandi("disk", "attach", disk.name)

    assert first.returncode == 0 and second.returncode == 0, f"{first}\n{second}"
    assert [m.target for m in env.mounts(disk.name)] == [str(real / "data")]
    assert "not by gandi" not in second.stderr, str(second)
    assert (STATE_DIR / f"{disk.name}.json").read_bytes() == record
    detach = env.gandi("disk", "detach", disk.name)
    assert detach.returncode == 0, str(detach)
    assert env.mounts(disk.name) == []
    assert os.listdir(real) == []


def test_concurrent_attaches_of_same_labelled_disks_are_serialized(env):
    disks = [env.disk("ext4", label="same") for _ in range(4)]

    runs = env.gandi_parallel(*[("disk", "attach", d.name) for d in disks])

    assert all(r.returncode == 0 for r in runs), "\n".join(map(str, runs))
    targets = sorted(m.target for d in disks for m in env.mounts(d.name))
    expected = sorted(str(env.root / n) for n in ("same", "same_2", "same_3", "same_4"))
    assert targets == expected


def test_a_failed_mount_leaves_no_mountpoint_behind(env):
    disk = env.disk("ext4", label="data")
    env.settings["CONFIG_MOUNT_PARAMS"] = "rw,nosuid,no_such_option"

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 1, str(run)
    assert len(run.error_lines()) == 1, str(run)
    assert env.mounts(disk.name) == []
    assert os.listdir(env.root) == []
    row = env.status()[disk.name]
    assert row["state"] == "failed" and "mount" in row["reason"], row


def test_read_only_device_is_skipped(env):
    disk = env.disk("ext4", label="ro", read_only=True)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert env.mounts(disk.name) == []
    row = env.status()[disk.name]
    assert row["state"] == "skipped" and "read-only" in row["reason"], row
