"""The system boundary: rooted paths cannot climb out, writes are atomic and keep mode, dry-run
changes nothing, commands never raise."""

from __future__ import annotations

import io
import os
import time
import stat

from gandi_vm.host import Host


def test_rooted_paths_never_climb_above_the_root(tmp_path):
    host = Host(str(tmp_path))
    assert host.path("/../../etc/passwd") == str(tmp_path / "etc/passwd")
    assert host.path("/srv/a/../../..") == str(tmp_path)
    assert host.guest(str(tmp_path / "srv/data")) == "/srv/data"
    assert host.guest("/etc") is None


def test_realpath_through_a_symlink_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "srv").mkdir()
    os.symlink("/etc", tmp_path / "srv" / "data")
    assert Host(str(tmp_path)).realpath("/srv/data") is None


def test_write_text_is_atomic_and_keeps_an_existing_files_mode(tmp_path):
    host = Host(str(tmp_path))
    target = tmp_path / "etc" / "file"
    assert host.write_text("/etc/file", "one\n", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    os.chmod(target, 0o640)
    assert host.write_text("/etc/file", "two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert not host.write_text("/etc/file", "two\n")  # unchanged: nothing rewritten
    assert sorted(os.listdir(tmp_path / "etc")) == ["file"]  # no temp file left behind


def test_dry_run_plans_instead_of_acting(tmp_path):
    plan = io.StringIO()
    host = Host(str(tmp_path), dry_run=True, plan=plan)
    assert host.mkdir("/srv")
    assert not host.mkdir("/srv")  # already in the plan
    host.write_text("/etc/x", "x")
    result = host.run(["touch", str(tmp_path / "touched")], timeout=5)
    assert result.ok
    assert os.listdir(tmp_path) == []
    assert plan.getvalue().splitlines() == [
        "would mkdir -m 0755 /srv (owner root:root)",
        "would write /etc/x",
        f"would run touch {tmp_path / 'touched'}",
    ]


def test_queries_run_even_in_dry_run_and_failures_are_values(tmp_path):
    host = Host(str(tmp_path), dry_run=True)
    assert host.run(["true"], timeout=5, changes=False).ok
    missing = host.run(["/nonexistent/tool"], timeout=5, changes=False)
    assert missing.returncode == 127 and "No such file" in missing.why()
    slow = host.run(["sleep", "5"], timeout=0.2, changes=False)
    assert slow.returncode == 124 and "timed out" in slow.why()


def test_a_script_leaving_a_daemon_on_its_output_is_waited_for_only_until_it_exits(tmp_path):
    """A platform script that starts a background process: with pipes, the wait lasted until the
    timeout and the script was reported as timed out although it had exited 0."""
    script = tmp_path / "init"
    script.write_text("#!/bin/sh\necho started\nsleep 12 &\necho done >&2\n")
    script.chmod(0o755)
    start = time.monotonic()
    result = Host(str(tmp_path)).run([str(script)], timeout=20, lingering=True)
    assert time.monotonic() - start < 8
    assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "done\n")
