"""`gandi-vm mount-all` at boot: every disk handled, one bad disk never stops the others, and a
second run changes nothing."""

from __future__ import annotations

from gandi_integration import STATE_DIR, unrepairable


def test_mount_all_twice(env):
    good = env.disk("ext4", label="good")
    swap = env.disk("swap")
    bad = env.disk("ext4", label="bad", prepare=unrepairable)
    empty = env.disk(None)

    first = env.gandi("mount-all")

    assert first.returncode == 1, str(first)  # the unrepairable disk failed...
    assert [m.target for m in env.mounts(good.name)] == [str(env.root / "good")]  # ...not the rest
    for disk in (swap, bad, empty):
        assert env.mounts(disk.name) == []
    rows = env.status()
    assert {name: rows[name]["state"] for name in (good.name, swap.name, bad.name, empty.name)} == {
        good.name: "mounted", swap.name: "skipped", bad.name: "failed", empty.name: "skipped"}
    table = env.our_mounts()
    state_file = STATE_DIR / f"{good.name}.json"
    saved = (state_file.read_bytes(), state_file.stat().st_mtime_ns)

    second = env.gandi("mount-all")

    assert second.returncode == 1, str(second)
    assert env.our_mounts() == table
    assert (state_file.read_bytes(), state_file.stat().st_mtime_ns) == saved
    assert sorted(p.name for p in env.root.iterdir()) == ["good"]
