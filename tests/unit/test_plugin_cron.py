"""The cron plugin: /etc/crontab's run-parts lines get minutes and hours derived from the machine
id; nothing else in the file changes, not even a tab."""

from __future__ import annotations

import io
import os

import pytest
from fakeroot import snapshot
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.plugins import CHANGED, SKIPPED, UNCHANGED, Context, cron

MACHINE_A = "4f0a3c1e9b2d4c6e8f0a1b2c3d4e5f60"
MACHINE_B = "b7e2d9a4c1f34e5d9a8b7c6d5e4f3a21"

HEAD = ("# /etc/crontab: system-wide crontab\n"
        "SHELL=/bin/sh\n"
        "# m h dom mon dow user\tcommand\n")
HOURLY = "\troot    cd / && run-parts --report /etc/cron.hourly\n"
DAILY = "\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n"
WEEKLY = "\t* * 7\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.weekly; }\n"
MONTHLY = "\t1 * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.monthly; }\n"
DEBIAN = (HEAD + "17 *\t* * *" + HOURLY + "25 6" + DAILY + "47 6" + WEEKLY + "52 6" + MONTHLY + "#\n")
RHEL = ("SHELL=/bin/bash\nPATH=/sbin:/bin:/usr/sbin:/usr/bin\nMAILTO=root\n\n"
        "# For details see man 4 crontabs\n")


def apply(host: FakeHost):
    return cron.apply(Context(host, Settings(), name="cron"))



def crontab() -> str:
    with open("/etc/crontab", newline="") as f:
        return f.read()


def expected(machine_id: str) -> str:
    s = {period: cron.schedule(machine_id, period) for period in ("hourly", "daily", "weekly", "monthly")}
    return (HEAD + f"{s['hourly'][0]} *\t* * *" + HOURLY
            + f"{s['daily'][0]} {s['daily'][1]}" + DAILY
            + f"{s['weekly'][0]} {s['weekly'][1]}" + WEEKLY
            + f"{s['monthly'][0]} {s['monthly'][1]}" + MONTHLY + "#\n")


@pytest.fixture
def debian(fs):
    fs.create_file("/etc/crontab", contents=DEBIAN)
    fs.create_file("/etc/machine-id", contents=MACHINE_A + "\n")
    return FakeHost()


def test_fresh_debian_crontab_gets_per_machine_times(debian):
    assert apply(debian).state == CHANGED
    text = crontab()
    assert text == expected(MACHINE_A)
    # Only the time fields moved: every separator and the rest of each line are as they were.
    assert [line.split(" ", 2)[-1] for line in text.splitlines()[3:]] == \
        [line.split(" ", 2)[-1] for line in DEBIAN.splitlines()[3:]]
    assert debian.commands == []


def test_second_apply_changes_nothing(debian):
    apply(debian)
    before = snapshot()
    assert apply(debian).state == UNCHANGED
    assert snapshot() == before


def test_deterministic_per_machine_and_different_across_machines(fs):
    results = {}
    for machine_id in (MACHINE_A, MACHINE_B, MACHINE_A):
        fs.create_file("/etc/crontab", contents=DEBIAN)
        fs.create_file("/etc/machine-id", contents=machine_id + "\n")
        apply(FakeHost())
        results.setdefault(machine_id, set()).add(crontab())
        for path in ("/etc/crontab", "/etc/machine-id"):
            os.remove(path)
    assert len(results[MACHINE_A]) == 1
    assert results[MACHINE_A] != results[MACHINE_B]
    minutes_a = [cron.schedule(MACHINE_A, p)[0] for p in ("hourly", "daily", "weekly", "monthly")]
    minutes_b = [cron.schedule(MACHINE_B, p)[0] for p in ("hourly", "daily", "weekly", "monthly")]
    assert all(a != b for a, b in zip(minutes_a, minutes_b))


def test_schedule_is_in_range():
    for machine_id in (MACHINE_A, MACHINE_B, "x"):
        for period in ("hourly", "daily", "weekly", "monthly"):
            minute, hour = cron.schedule(machine_id, period)
            assert 0 <= minute < 60 and 0 <= hour < 24


def test_the_owners_lines_and_choices_are_kept(fs):
    owner = ("MAILTO=me@example.org\n"
             "*/30 *  * * *  root  cd / && run-parts --report /etc/cron.hourly\n"
             "# 25 6 * * * root run-parts /etc/cron.daily\n"
             "0 3 * * *   backup  /usr/local/bin/backup --to /srv\n"
             "25   6 * * *   root  run-parts /etc/cron.daily\n")
    fs.create_file("/etc/crontab", contents=owner)
    fs.create_file("/etc/machine-id", contents=MACHINE_A)
    apply(FakeHost())
    minute, hour = cron.schedule(MACHINE_A, "daily")
    assert crontab() == owner.replace("25   6 * * *   root  run-parts",
                                      f"{minute}   {hour} * * *   root  run-parts")


def test_a_missing_final_newline_is_kept(fs):
    fs.create_file("/etc/crontab", contents="SHELL=/bin/sh\n52 6" + MONTHLY.rstrip("\n"))
    fs.create_file("/etc/machine-id", contents=MACHINE_B)
    apply(FakeHost())
    minute, hour = cron.schedule(MACHINE_B, "monthly")
    assert crontab() == f"SHELL=/bin/sh\n{minute} {hour}" + MONTHLY.rstrip("\n")


def test_rhel_crontab_without_run_parts_is_a_skip(fs):
    fs.create_file("/etc/crontab", contents=RHEL)
    fs.create_file("/etc/machine-id", contents=MACHINE_A)
    outcome = apply(FakeHost())
    assert outcome.state == SKIPPED
    assert "run-parts" in outcome.detail
    assert crontab() == RHEL


@pytest.mark.parametrize("machine_id", [None, "", "\n"])
def test_no_machine_id_is_a_skip(debian, fs, machine_id):
    os.remove("/etc/machine-id")
    if machine_id is not None:
        fs.create_file("/etc/machine-id", contents=machine_id)
    outcome = apply(debian)
    assert outcome.state == SKIPPED
    assert "/etc/machine-id" in outcome.detail
    assert crontab() == DEBIAN


def test_no_crontab_is_a_skip(debian):
    os.remove("/etc/crontab")
    outcome = apply(debian)
    assert outcome.state == SKIPPED
    assert outcome.detail == "no /etc/crontab"
    assert not os.path.exists("/etc/crontab")


def test_a_crontab_that_is_not_utf8_is_left_alone(debian, fs):
    os.remove("/etc/crontab")
    fs.create_file("/etc/crontab", contents=b"# caf\xe9\n17 *\t* * *" + HOURLY.encode())
    outcome = apply(debian)
    assert outcome.state == SKIPPED
    with open("/etc/crontab", "rb") as f:
        assert f.read() == b"# caf\xe9\n17 *\t* * *" + HOURLY.encode()


def test_dry_run_changes_no_byte(debian):
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    before = snapshot()
    assert apply(host).state == CHANGED
    assert snapshot() == before
    assert "-25 6\t* * *\troot" in plan.getvalue()


# -- hostile input (issue 11) ----------------------------------------------------------------------
def test_a_run_parts_line_inside_a_comment_is_the_owners_comment(fs):
    # cron ends a line at "\n" only: the text after the form feed is still the comment.
    hidden = "# old:\x0c25 6\t* * *\troot\tcd / && run-parts --report /etc/cron.daily\n"
    fs.create_file("/etc/crontab", contents=DEBIAN + hidden)
    fs.create_file("/etc/machine-id", contents=MACHINE_A + "\n")
    apply(FakeHost())
    assert crontab() == expected(MACHINE_A) + hidden
