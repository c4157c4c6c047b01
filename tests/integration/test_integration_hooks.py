"""The owner's post-disk-attach hook: called with device, type and mountpoint; advisory only."""

from __future__ import annotations

import os


def hook(env, body: str) -> None:
    env.hooks.mkdir(exist_ok=True)
    path = env.hooks / "post-disk-attach"
    path.write_text("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)


def test_post_attach_hook_gets_device_type_and_mountpoint(env):
    out = env.tmp / "hook.out"
    hook(env, f'echo "$@" > {out}\n')
    disk = env.disk("ext4", label="hooked")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    mountpoint = env.root / "hooked"
    assert out.read_text() == f"/dev/{disk.name} ext4 {mountpoint}\n"
    assert [m.target for m in env.mounts(disk.name)] == [str(mountpoint)]


def test_failing_hook_does_not_undo_the_mount(env):
    hook(env, "echo 'hook says no' >&2\nexit 3\n")
    disk = env.disk("ext4", label="hooked")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / "hooked")]
    assert "hook says no" in run.stderr, str(run)
    assert env.status()[disk.name]["state"] == "mounted"


def test_non_executable_hook_is_not_run(env):
    out = env.tmp / "hook.out"
    hook(env, f"touch {out}\n")
    os.chmod(env.hooks / "post-disk-attach", 0o644)
    disk = env.disk("ext4", label="plain")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert not out.exists()
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / "plain")]
