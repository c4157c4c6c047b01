"""The motd plugin: an update-motd.d snippet where that directory exists, else one line in
/etc/motd, added once, with the owner's text kept."""

from __future__ import annotations

import os
import stat

from fakeroot import context, dry_host, link, put, read, snapshot
from fakesys import FakeHost

from gandi_vm.plugins import CHANGED, SKIPPED, UNCHANGED, motd

LINE = motd.LINE + "\n"


def test_update_motd_d_gets_an_executable_snippet(fs):
    os.makedirs("/etc/update-motd.d")
    put("/etc/motd", "owner's words\n")
    assert motd.apply(context(FakeHost())).state == CHANGED
    script = read("/etc/update-motd.d/50-gandi")
    assert script.startswith("#!/bin/sh\n") and f"printf '%s\\n' '{motd.LINE}'" in script
    assert stat.S_IMODE(os.stat("/etc/update-motd.d/50-gandi").st_mode) == 0o755
    assert read("/etc/motd") == "owner's words\n"


def test_the_snippet_is_static_posix_sh():
    # Nothing in the line may be expanded by the shell, nor close the single quotes.
    assert not any(c in motd.LINE for c in "'$`\\\n")


def test_the_owner_disabling_the_snippet_is_respected(fs):
    os.makedirs("/etc/update-motd.d")
    motd.apply(context(FakeHost()))
    os.chmod("/etc/update-motd.d/50-gandi", 0o644)  # run-parts skips it now
    before = snapshot()
    assert motd.apply(context(FakeHost())).state == UNCHANGED
    assert snapshot() == before


def test_etc_motd_gets_our_line_once_after_the_owners_text(fs):
    put("/etc/motd", "Welcome to db1.\nNo backups on Sundays.")
    assert motd.apply(context(FakeHost())).state == CHANGED
    assert read("/etc/motd") == "Welcome to db1.\nNo backups on Sundays.\n" + LINE
    assert read("/var/lib/gandi-vm/backup/etc/motd") == "Welcome to db1.\nNo backups on Sundays."
    before = snapshot()
    assert motd.apply(context(FakeHost())).state == UNCHANGED
    assert snapshot() == before


def test_our_line_moved_by_the_owner_is_left_where_it_is(fs):
    put("/etc/motd", LINE + "owner's text below\n")
    before = snapshot()
    assert motd.apply(context(FakeHost())).state == UNCHANGED
    assert snapshot() == before


def test_a_missing_motd_is_created(fs):
    os.makedirs("/etc")
    assert motd.apply(context(FakeHost())).state == CHANGED
    assert read("/etc/motd") == LINE


def test_a_motd_link_is_left_to_the_tool_behind_it(fs):
    put("/run/motd", "dynamic\n")
    link("/run/motd", "/etc/motd")
    before = snapshot()
    outcome = motd.apply(context(FakeHost()))
    assert outcome.state == SKIPPED and "/etc/motd is a link to /run/motd" in outcome.detail
    assert snapshot() == before


def test_dry_run_prints_a_diff_and_changes_no_byte(fs):
    put("/etc/motd", "hello\n")
    before = snapshot()
    host, plan = dry_host()
    assert motd.apply(context(host)).state == CHANGED
    assert snapshot() == before
    assert plan.getvalue().endswith(f" hello\n+{motd.LINE}\n")


def test_docstring_and_metadata():
    assert motd.ORDER == 60 and motd.FLAG == "CONFIG_MOTD"
    assert motd.__doc__.splitlines()[0].startswith("Motd: ")


def test_our_line_glued_to_another_by_u2028_is_not_ours(fs):
    # pam_motd prints the file as it is: after U+2028 our text is part of the owner's line.
    put("/etc/motd", f"Welcome.\u2028{motd.LINE}\n")
    assert motd.apply(context(FakeHost())).state == CHANGED
    assert read("/etc/motd") == f"Welcome.\u2028{motd.LINE}\n{motd.LINE}\n"
