"""The nosegneg plugin: `hwcap 1 nosegneg` in /etc/ld.so.conf.d/libc6-xen.conf on 32-bit x86 Xen
guests only, with ldconfig after each change, and nothing else in that file touched."""

from __future__ import annotations

import io
import os

import pytest
from fakeroot import snapshot
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.plugins import CHANGED, FAILED, UNCHANGED, Context, nosegneg

CONF = "/etc/ld.so.conf.d/libc6-xen.conf"
MACHINE = ["i686"]  # what the fake os.uname() says; guest() sets it


@pytest.fixture(autouse=True)
def _uname(monkeypatch):
    """The plugin reads the machine type from os.uname(), with no process: faked here."""
    real = os.uname()
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(
        (real.sysname, real.nodename, real.release, real.version, MACHINE[0])))


def apply(host: FakeHost):
    return nosegneg.apply(Context(host, Settings(), name="nosegneg"))



def guest(fs, machine: str = "i686", xen: str = "proc", root: str = "/") -> FakeHost:
    """A guest of that machine type; xen: "proc" (/proc/xen), "sysfs" (/sys/hypervisor/type) or ""."""
    if xen == "proc":
        fs.create_dir(os.path.join(root, "proc/xen"))
    elif xen == "sysfs":
        fs.create_file(os.path.join(root, "sys/hypervisor/type"), contents="xen\n")
    fs.create_dir(os.path.join(root, "etc/ld.so.conf.d"))
    MACHINE[0] = machine
    host = FakeHost(root=root)
    host.handlers["ldconfig"] = lambda argv: Result(argv, 0)
    return host


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("xen", ["proc", "sysfs"])
def test_32_bit_xen_guest_gets_the_file_and_ldconfig(fs, xen):
    host = guest(fs, "i686", xen)
    assert apply(host).state == CHANGED
    assert read(CONF) == "hwcap 1 nosegneg\n"
    assert host.commands == [["ldconfig"]]


def test_second_apply_changes_nothing(fs):
    host = guest(fs, "i586")
    apply(host)
    before, host.commands[:] = snapshot(), []
    assert apply(host).state == UNCHANGED
    assert snapshot() == before
    assert host.programs() == []  # no process at all: not even a query


@pytest.mark.parametrize("machine, xen", [("x86_64", "proc"), ("i686", ""), ("aarch64", "")])
def test_other_guests_lose_the_file(fs, machine, xen):
    host = guest(fs, machine, xen)
    fs.create_file(CONF, contents="hwcap 1 nosegneg\n")
    assert apply(host).state == CHANGED
    assert not os.path.exists(CONF)
    assert host.programs() == ["ldconfig"]
    host.commands[:] = []
    assert apply(host).state == UNCHANGED
    assert host.programs() == []


def test_other_guests_without_the_file_run_nothing(fs):
    host = guest(fs, "x86_64", "")
    assert apply(host).state == UNCHANGED
    assert not os.path.exists(CONF)
    assert host.programs() == []


def test_the_owners_lines_are_kept(fs):
    host = guest(fs, "i686")
    fs.create_file(CONF, contents="# mine\n/opt/lib32")
    apply(host)
    assert read(CONF) == "# mine\n/opt/lib32\nhwcap 1 nosegneg\n"
    # Moved to a 64-bit KVM host: our line goes, theirs stays.
    MACHINE[0] = "x86_64"
    os.rmdir("/proc/xen")
    assert apply(host).state == CHANGED
    assert read(CONF) == "# mine\n/opt/lib32\n"


def test_an_equivalent_line_of_the_owners_counts_as_ours(fs):
    host = guest(fs, "i686")
    fs.create_file(CONF, contents="# from the libc6-xen package\nhwcap  1  nosegneg\n")
    assert apply(host).state == UNCHANGED
    assert host.programs() == []


def test_failing_ldconfig_is_reported(fs):
    host = guest(fs)
    host.handlers["ldconfig"] = lambda argv: Result(argv, 1, stderr="ldconfig: cannot open cache")
    outcome = apply(host)
    assert outcome.state == FAILED
    assert "cannot open cache" in outcome.detail


def test_under_root_ldconfig_rebuilds_that_roots_cache(fs):
    host = guest(fs, "i686", "proc", root="/vm")
    assert apply(host).state == CHANGED
    assert read("/vm" + CONF) == "hwcap 1 nosegneg\n"
    assert host.commands[-1] == ["ldconfig", "-r", "/vm"]


def test_dry_run_changes_no_byte(fs):
    guest(fs)
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    MACHINE[0] = "i686"
    before = snapshot()
    assert apply(host).state == CHANGED
    assert snapshot() == before
    assert host.programs() == []
    assert "+hwcap 1 nosegneg" in plan.getvalue()
    assert "would run ldconfig" in plan.getvalue()


# -- hostile input (issue 11) ----------------------------------------------------------------------
def test_an_owner_line_glued_by_u2028_is_neither_ours_nor_removed(fs):
    """ldconfig reads lines up to "\\n" and words on blanks: this is one line of the owner's."""
    host = guest(fs, machine="x86_64", xen="")
    text = f"/opt/lib\u2028{nosegneg.LINE}\n"
    fs.create_file(CONF, contents=text)
    assert apply(host).state == UNCHANGED
    assert read(CONF) == text
