"""The console plugin: a getty on each hypervisor console, by unit symlink on systemd (what
`systemctl enable` does, without running it) or by an inittab line, and the console in securetty."""

from __future__ import annotations

import io
import os

import pytest
from fakeroot import snapshot
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.plugins import CHANGED, SKIPPED, UNCHANGED, Context, console

WANTS = "/etc/systemd/system/getty.target.wants"
PROC_CONSOLES = "ttyS0                -W- (EC p a)    4:64\ntty0                 -WU (E  p  )    4:1\n"
INITTAB = ("# /etc/inittab: init(8) configuration.\n"
           "id:2:initdefault:\n"
           "1:2345:respawn:/sbin/getty --noclear 38400 tty1\n"
           "#T0:23:respawn:/sbin/getty -L ttyS0 9600 vt100\n"
           "ca:12345:ctrlaltdel:/sbin/shutdown -t1 -a -r now\n")


def apply(host: FakeHost):
    return console.apply(Context(host, Settings(), name="console"))



@pytest.fixture
def systemd(fs):
    """A systemd guest (Debian layout) whose kernel console is ttyS0 and tty0."""
    fs.create_dir("/run/systemd/system")
    fs.create_file("/lib/systemd/system/serial-getty@.service", contents="[Unit]\n")
    fs.create_file("/lib/systemd/system/getty@.service", contents="[Unit]\n")
    fs.create_file("/proc/consoles", contents=PROC_CONSOLES)
    fs.create_file("/etc/securetty", contents="# root may log in on\nconsole\ntty1\n")
    return FakeHost()


def test_fresh_systemd_guest_gets_gettys_by_symlink_and_securetty(systemd):
    outcome = apply(systemd)
    assert outcome.state == CHANGED
    assert os.readlink(f"{WANTS}/serial-getty@ttyS0.service") == "/lib/systemd/system/serial-getty@.service"
    # tty0 is "the foreground terminal": the getty goes on tty1.
    assert os.readlink(f"{WANTS}/getty@tty1.service") == "/lib/systemd/system/getty@.service"
    assert sorted(os.listdir(WANTS)) == ["getty@tty1.service", "serial-getty@ttyS0.service"]
    with open("/etc/securetty") as f:
        assert f.read() == "# root may log in on\nconsole\ntty1\nttyS0\n"
    assert systemd.commands == []  # no systemctl: the same code works under --root


def test_second_apply_changes_nothing(systemd):
    apply(systemd)
    before = snapshot()
    outcome = apply(systemd)
    assert outcome.state == UNCHANGED
    assert snapshot() == before


def test_usr_lib_units_when_lib_has_none(fs):
    fs.create_file("/usr/lib/systemd/systemd")
    fs.create_file("/usr/lib/systemd/system/serial-getty@.service")
    fs.create_file("/sys/class/tty/console/active", contents="hvc0\n")
    assert apply(FakeHost()).state == CHANGED
    assert os.readlink(f"{WANTS}/serial-getty@hvc0.service") == \
        "/usr/lib/systemd/system/serial-getty@.service"


def test_active_consoles_are_used_without_proc_consoles(systemd, fs):
    fs.remove("/proc/consoles")
    fs.create_file("/sys/class/tty/console/active", contents="tty0 xvc0\n")
    apply(systemd)
    assert sorted(os.listdir(WANTS)) == ["getty@tty1.service", "serial-getty@xvc0.service"]


def test_odd_console_names_are_ignored(systemd, fs):
    fs.remove("/proc/consoles")
    fs.create_file("/proc/consoles", contents=(
        "ttyS0;reboot -W- (EC p a) 4:64\n../../etc/x -W- (E) 1:1\nttyUSB0 -W- (E) 188:0\n"
        "hvc0 -W- (E) 229:0\nhvc0 -W- (E) 229:0\n"))
    apply(systemd)
    assert os.listdir(WANTS) == ["serial-getty@hvc0.service"]
    with open("/etc/securetty") as f:
        assert f.read().splitlines()[-1] == "hvc0"


def test_no_console_is_a_skip(fs):
    fs.create_dir("/run/systemd/system")
    outcome = apply(FakeHost())
    assert outcome.state == SKIPPED
    assert "no console" in outcome.detail
    assert not os.path.exists(WANTS)


def test_owner_masked_or_enabled_gettys_are_kept(systemd, fs):
    fs.create_symlink("/etc/systemd/system/serial-getty@ttyS0.service", "/dev/null")
    fs.create_symlink(f"{WANTS}/getty@tty1.service", "/usr/lib/systemd/system/getty@.service")
    apply(systemd)
    assert not os.path.lexists(f"{WANTS}/serial-getty@ttyS0.service")
    assert os.readlink(f"{WANTS}/getty@tty1.service") == "/usr/lib/systemd/system/getty@.service"


def test_no_getty_unit_at_all_is_a_skip(fs):
    fs.create_dir("/run/systemd/system")
    fs.create_file("/proc/consoles", contents=PROC_CONSOLES)
    outcome = apply(FakeHost())
    assert outcome.state == SKIPPED
    assert "no getty unit for ttyS0, tty1" in outcome.detail
    assert not os.path.exists(WANTS)


def test_no_securetty_is_not_created(systemd, fs):
    fs.remove("/etc/securetty")
    apply(systemd)
    assert not os.path.exists("/etc/securetty")


@pytest.fixture
def sysvinit(fs):
    fs.create_file("/proc/consoles", contents=PROC_CONSOLES)
    fs.create_file("/etc/inittab", contents=INITTAB)
    return FakeHost()


def test_without_systemd_inittab_gets_one_line_per_console(sysvinit):
    assert apply(sysvinit).state == CHANGED
    with open("/etc/inittab") as f:
        # tty1 already has the owner's getty; the commented T0 line is not a getty.
        assert f.read() == INITTAB + "g0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n"
    assert not os.path.exists(WANTS)
    before = snapshot()
    assert apply(sysvinit).state == UNCHANGED
    assert snapshot() == before


def test_inittab_ids_do_not_collide_and_a_missing_newline_is_added(sysvinit, fs):
    fs.remove("/etc/inittab")
    fs.create_file("/etc/inittab", contents="g0:2345:respawn:/usr/local/bin/mine")
    apply(sysvinit)
    with open("/etc/inittab") as f:
        assert f.read() == ("g0:2345:respawn:/usr/local/bin/mine\n"
                            "g1:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n"
                            "g2:2345:respawn:/sbin/getty -L tty1 115200 vt100\n")


def test_neither_systemd_nor_inittab_is_a_skip(sysvinit, fs):
    fs.remove("/etc/inittab")
    outcome = apply(sysvinit)
    assert outcome.state == SKIPPED
    assert "inittab" in outcome.detail


def test_dry_run_changes_no_byte(systemd):
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    before = snapshot()
    assert apply(host).state == CHANGED
    assert snapshot() == before
    out = plan.getvalue()
    assert f"would symlink {WANTS}/serial-getty@ttyS0.service" in out
    assert "+ttyS0" in out  # the securetty diff


def test_a_securetty_that_is_not_utf8_is_left_alone(systemd, fs, caplog):
    fs.remove("/etc/securetty")
    fs.create_file("/etc/securetty", contents=b"console\n# caf\xe9\n")
    assert apply(systemd).state == CHANGED  # the gettys are enabled all the same
    with open("/etc/securetty", "rb") as f:
        assert f.read() == b"console\n# caf\xe9\n"
    assert "not UTF-8" in caplog.text


# -- hostile input (issue 11) ----------------------------------------------------------------------
def test_a_getty_line_inside_an_inittab_comment_is_not_a_getty():
    # init reads lines up to "\n": after the vertical tab this is still the comment.
    text = "# was:\x0bg0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n"
    assert console._inittab(text, ["ttyS0"]) == text + "g0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n"


@pytest.mark.parametrize("listed", ["ttyS0 ", "ttyS0\r", "# ttyS0\u2028ttyS0", " ttyS0"])
def test_securetty_lists_a_console_only_as_pam_compares_it(listed):
    # pam_securetty compares the whole line, less its "\n", with the terminal name.
    assert console._securetty(f"{listed}\n", ["ttyS0"]) == f"{listed}\nttyS0\n"
