"""`gandi-vm disk detach`: unmount what attach mounted, never yank a busy filesystem."""

from __future__ import annotations

import subprocess

from gandi_integration import STATE_DIR, sh, which


def test_detach_unmounts_and_removes_the_mountpoint(env):
    disk = env.disk("ext4", label="gone")
    attach = env.gandi("disk", "attach", disk.name)
    assert attach.returncode == 0, str(attach)
    mountpoint = env.root / "gone"
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]

    run = env.gandi("disk", "detach", disk.name)

    assert run.returncode == 0, str(run)
    assert env.mounts(disk.name) == []
    assert not mountpoint.exists()
    assert not (STATE_DIR / f"{disk.name}.json").exists()
    again = env.gandi("disk", "detach", disk.name)
    assert again.returncode == 0, str(again)


def test_detach_of_a_busy_mount_fails_and_keeps_it(env):
    disk = env.disk("ext4", label="busy")
    attach = env.gandi("disk", "attach", disk.name)
    assert attach.returncode == 0, str(attach)
    mountpoint = env.root / "busy"
    (mountpoint / "file").write_text("open me\n")

    holder = subprocess.Popen([which("sleep") or "sleep", "60"], cwd=mountpoint)
    try:
        busy = env.gandi("disk", "detach", disk.name)

        assert busy.returncode == 1, str(busy)
        assert len(busy.error_lines()) == 1, str(busy)
        assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]
        assert (mountpoint / "file").read_text() == "open me\n"
        assert (STATE_DIR / f"{disk.name}.json").exists()
    finally:
        holder.kill()
        holder.wait()

    run = env.gandi("disk", "detach", disk.name)

    assert run.returncode == 0, str(run)
    assert env.mounts(disk.name) == []
    assert not mountpoint.exists()


def test_detach_leaves_a_mount_gandi_did_not_make(env):
    disk = env.disk("ext4", label="theirs")
    elsewhere = env.tmp / "theirs"
    elsewhere.mkdir()
    sh("mount", disk.dev, elsewhere)

    attach = env.gandi("disk", "attach", disk.name)
    run = env.gandi("disk", "detach", disk.name)

    assert attach.returncode == 0 and run.returncode == 0, f"{attach}\n{run}"
    assert [m.target for m in env.mounts(disk.name)] == [str(elsewhere)]
    assert not env.root.exists() or not (env.root / "theirs").exists()
