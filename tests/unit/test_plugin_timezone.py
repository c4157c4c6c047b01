"""The timezone plugin: /etc/localtime and /etc/timezone name only a zone that exists."""

from __future__ import annotations

import os

import pytest
from fakeroot import context, dry_host, link, put, read, snapshot
from fakesys import FakeHost

from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, timezone

TZIF = "TZif2\0\0\0 binary zone data\n"


@pytest.fixture
def zoneinfo(fs):
    for zone in ("Europe/Paris", "Europe/Berlin", "UTC", "America/New_York"):
        put(f"/usr/share/zoneinfo/{zone}", TZIF + zone)
    link("../America/New_York", "/usr/share/zoneinfo/US/Eastern")  # tzdata's backward links
    put("/usr/share/zoneinfo/leapseconds", "# not a zone\n")
    os.makedirs("/etc", exist_ok=True)
    return fs


def test_a_fresh_system_gets_the_link_and_the_name(zoneinfo):
    outcome = timezone.apply(context(FakeHost()))
    assert outcome.state == CHANGED
    assert os.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert read("/etc/timezone") == "Europe/Paris\n"


def test_a_second_apply_changes_nothing(zoneinfo):
    timezone.apply(context(FakeHost(), timezone_name="UTC"))
    before = snapshot()
    assert timezone.apply(context(FakeHost(), timezone_name="UTC")).state == UNCHANGED
    assert snapshot() == before


def test_a_relative_link_naming_the_zone_is_kept(zoneinfo):
    link("../usr/share/zoneinfo/Europe/Paris", "/etc/localtime")  # RHEL's spelling
    put("/etc/timezone", "Europe/Paris\n")
    before = snapshot()
    assert timezone.apply(context(FakeHost())).state == UNCHANGED
    assert snapshot() == before


def test_the_owners_copied_zone_file_is_replaced_and_backed_up(zoneinfo):
    put("/etc/localtime", TZIF + "owner copy")
    put("/etc/timezone", "Europe/Berlin\n")
    assert timezone.apply(context(FakeHost())).state == CHANGED
    assert os.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert read("/var/lib/gandi-vm/backup/etc/localtime") == TZIF + "owner copy"
    assert read("/var/lib/gandi-vm/backup/etc/timezone") == "Europe/Berlin\n"
    # a second change keeps the first original
    assert timezone.apply(context(FakeHost(), timezone_name="UTC")).state == CHANGED
    assert read("/var/lib/gandi-vm/backup/etc/timezone") == "Europe/Berlin\n"
    assert read("/etc/timezone") == "UTC\n"


def test_a_zone_link_inside_zoneinfo_is_accepted_under_its_own_name(zoneinfo):
    assert timezone.apply(context(FakeHost(), timezone_name="US/Eastern")).state == CHANGED
    assert os.readlink("/etc/localtime") == "/usr/share/zoneinfo/US/Eastern"
    assert read("/etc/timezone") == "US/Eastern\n"


def test_without_tzdata_the_plugin_skips(fs):
    put("/etc/timezone", "Etc/UTC\n")
    before = snapshot()
    outcome = timezone.apply(context(FakeHost()))
    assert outcome.state == SKIPPED and "tzdata not installed" in outcome.detail
    assert snapshot() == before


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "Europe", "leapseconds",
                                  "Escape", "Europe/../UTC", "", "a\nb"])
def test_an_unknown_or_escaping_zone_is_refused_and_nothing_written(zoneinfo, zone):
    link("/etc/passwd", "/usr/share/zoneinfo/Escape")
    put("/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    before = snapshot()
    outcome = timezone.apply(context(FakeHost(), timezone_name=zone))
    assert outcome.state == FAILED
    assert outcome.detail == (f"CONFIG_TIMEZONE_NAME={zone!r}: no such zone under /usr/share/zoneinfo")
    assert snapshot() == before


def test_dry_run_prints_the_plan_and_changes_no_byte(zoneinfo):
    put("/etc/timezone", "Europe/Berlin\n")
    link("/usr/share/zoneinfo/Europe/Berlin", "/etc/localtime")
    before = snapshot()
    host, plan = dry_host()
    assert timezone.apply(context(host)).state == CHANGED
    assert snapshot() == before
    out = plan.getvalue()
    assert "would symlink /etc/localtime -> /usr/share/zoneinfo/Europe/Paris" in out
    assert "--- a/etc/timezone\n+++ b/etc/timezone\n" in out
    assert "-Europe/Berlin\n+Europe/Paris\n" in out


def test_docstring_and_metadata():
    assert timezone.ORDER == 40 and timezone.FLAG == "CONFIG_TIMEZONE"
    assert timezone.__doc__.splitlines()[0].startswith("Timezone: ")
