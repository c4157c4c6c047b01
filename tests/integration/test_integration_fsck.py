"""Before mounting an ext* filesystem, `e2fsck -p` runs: what it repairs is mounted, what it
cannot repair is left alone (and said so)."""

from __future__ import annotations

import os

from gandi_integration import repairable, unrepairable


def test_errors_e2fsck_repairs_do_not_stop_the_mount(env):
    disk = env.disk("ext4", label="fixed", prepare=repairable)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert [m.target for m in env.mounts(disk.name)] == [str(env.root / "fixed")]
    assert env.status()[disk.name]["state"] == "mounted"


def test_errors_e2fsck_cannot_repair_stop_the_mount(env):
    disk = env.disk("ext4", label="broken", prepare=unrepairable)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 1, str(run)
    assert len(run.error_lines()) == 1, str(run)
    assert env.mounts(disk.name) == []
    assert not (env.root / "broken").exists()
    assert not env.root.exists() or os.listdir(env.root) == []
    row = env.status()[disk.name]
    assert row["state"] == "failed"
    assert "e2fsck" in row["reason"] and "uncorrected" in row["reason"], row
    assert row["mountpoint"] is None
