"""The sysctl plugin: the shipped /etc/gandi/sysctl.conf linked into /etc/sysctl.d (and given to
the running kernel once), or `sysctl -p` at boot where there is no sysctl.d, only when a value
differs."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Optional

import pytest
from fakeroot import snapshot
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.host import Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, Context, sysctl

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TEXT = (REPO / "etc/gandi/sysctl.conf").read_text()  # read before pyfakefs hides the repo
DROPIN = "/etc/sysctl.d/90-gandi.conf"
APPLY = ["sysctl", "-q", "-p", "/etc/gandi/sysctl.conf"]


def apply(host: FakeHost):
    return sysctl.apply(Context(host, Settings(), name="sysctl"))



def answering(host: FakeHost, code: int = 0, stderr: str = "") -> FakeHost:
    host.handlers["sysctl"] = lambda argv: Result(argv, code, stderr=stderr)
    return host


def running_values(fs, root: str = "", **overrides: Optional[str]) -> None:
    """/proc/sys as the kernel shows it, with the shipped values unless overridden."""
    values = {"kernel/panic": "10\n", "net/ipv4/conf/all/arp_notify": "1\n",
              "kernel/printk": "4\t4\t1\t7\n"}
    values.update({k.replace("__", "/"): v for k, v in overrides.items()})
    for key, value in values.items():
        if value is not None:
            fs.create_file(f"{root}/proc/sys/{key}", contents=value)


@pytest.fixture
def debian(fs):
    fs.create_file("/etc/gandi/sysctl.conf", contents=SHIPPED_TEXT)
    fs.create_dir("/etc/sysctl.d")
    fs.create_file("/etc/sysctl.d/99-sysctl.conf", contents="# the owner's\nvm.swappiness = 5\n")
    return answering(FakeHost())


def test_fresh_system_links_the_file_and_applies_it_once(debian):
    outcome = apply(debian)
    assert outcome.state == CHANGED
    assert os.readlink(DROPIN) == "/etc/gandi/sysctl.conf"
    assert debian.commands == [APPLY]
    with open("/etc/sysctl.d/99-sysctl.conf") as f:
        assert f.read() == "# the owner's\nvm.swappiness = 5\n"


def test_second_apply_changes_nothing_and_runs_nothing(debian):
    apply(debian)
    before, debian.commands[:] = snapshot(), []
    assert apply(debian).state == UNCHANGED
    assert debian.commands == []
    assert snapshot() == before


@pytest.mark.parametrize("owner", ["file", "mask"])
def test_the_owners_dropin_wins(debian, fs, owner):
    if owner == "file":
        fs.create_file(DROPIN, contents="kernel.panic = 0\n")
    else:
        fs.create_symlink(DROPIN, "/dev/null")
    before = snapshot()
    outcome = apply(debian)
    assert outcome.state == SKIPPED
    assert "owner" in outcome.detail
    assert snapshot() == before
    assert debian.commands == []


def test_missing_shipped_file_is_a_skip(debian, fs):
    fs.remove("/etc/gandi/sysctl.conf")
    outcome = apply(debian)
    assert outcome.state == SKIPPED
    assert "/etc/gandi/sysctl.conf" in outcome.detail
    assert not os.path.lexists(DROPIN)


def test_under_root_the_link_is_made_but_the_running_kernel_is_left_alone(fs):
    fs.create_file("/vm/etc/gandi/sysctl.conf", contents=SHIPPED_TEXT)
    fs.create_dir("/vm/etc/sysctl.d")
    host = answering(FakeHost(root="/vm"))
    assert apply(host).state == CHANGED
    assert os.readlink("/vm" + DROPIN) == "/etc/gandi/sysctl.conf"  # resolves inside the guest
    assert host.commands == []


def test_missing_sysctl_binary_still_links(debian, caplog):
    del debian.handlers["sysctl"]
    outcome = apply(debian)
    assert outcome.state == CHANGED
    assert outcome.detail == f"{DROPIN} -> /etc/gandi/sysctl.conf"
    assert "next boot" in caplog.text


def test_a_failing_sysctl_is_reported(debian):
    answering(debian, 255, "sysctl: cannot stat /proc/sys/kernel/panic: No such file or directory")
    outcome = apply(debian)
    assert outcome.state == FAILED
    assert "cannot stat" in outcome.detail


@pytest.fixture
def no_sysctl_d(fs):
    """An old guest: no /etc/sysctl.d, so nothing applies the file at boot but us."""
    fs.create_file("/etc/gandi/sysctl.conf", contents=SHIPPED_TEXT)
    return answering(FakeHost())


def test_without_sysctl_d_values_already_set_run_nothing(no_sysctl_d, fs):
    running_values(fs)  # kernel.printk reads back tab-separated: still the same value
    assert apply(no_sysctl_d).state == UNCHANGED
    assert no_sysctl_d.commands == []


def test_without_sysctl_d_a_differing_value_runs_sysctl(no_sysctl_d, fs):
    running_values(fs, kernel__panic="0\n")
    outcome = apply(no_sysctl_d)
    assert outcome.state == CHANGED
    assert no_sysctl_d.commands == [APPLY]


def test_keys_this_kernel_lacks_do_not_force_a_run_every_boot(no_sysctl_d, fs):
    running_values(fs, net__ipv4__conf__all__arp_notify=None)
    assert apply(no_sysctl_d).state == UNCHANGED


def test_without_sysctl_d_and_without_sysctl_it_is_a_skip(no_sysctl_d, fs):
    del no_sysctl_d.handlers["sysctl"]
    running_values(fs, kernel__panic="0\n")
    outcome = apply(no_sysctl_d)
    assert outcome.state == SKIPPED
    assert "sysctl not found" in outcome.detail


def test_without_sysctl_d_under_root_it_is_a_skip(fs):
    fs.create_file("/vm/etc/gandi/sysctl.conf", contents=SHIPPED_TEXT)
    host = answering(FakeHost(root="/vm"))
    assert apply(host).state == SKIPPED
    assert host.commands == []


def test_parse_and_proc_paths():
    values, problems = sysctl.parse("# c\n; c\n\nkernel.panic=10\n-net.ipv6.conf.all.x = 1 \nbad line\n"
                                    "net/ipv4/conf/eth0.100/arp_notify = 1\n")
    assert values == {"kernel.panic": "10", "net.ipv6.conf.all.x": "1",
                      "net/ipv4/conf/eth0.100/arp_notify": "1"}
    assert problems == ["line 6: no '=' in 'bad line'"]
    assert sysctl.proc_path("kernel.panic") == "/proc/sys/kernel/panic"
    assert sysctl.proc_path("net.ipv4.conf.eth0/100.arp_notify") == \
        "/proc/sys/net/ipv4/conf/eth0.100/arp_notify"
    assert sysctl.proc_path("net/ipv4/conf/eth0.100/arp_notify") == \
        "/proc/sys/net/ipv4/conf/eth0.100/arp_notify"


def test_shipped_file_is_small_and_every_setting_says_why():
    values, problems = sysctl.parse(SHIPPED_TEXT)
    assert 3 <= len(values) <= 5 and problems == []
    lines = SHIPPED_TEXT.splitlines()
    for index, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            assert lines[index - 1].startswith("# "), f"no comment above {line!r}"


def test_dry_run_changes_no_byte(debian):
    plan = io.StringIO()
    host = answering(FakeHost(dry_run=True, plan=plan))
    host.show_diffs = True
    before = snapshot()
    assert apply(host).state == CHANGED
    assert snapshot() == before
    assert host.commands == []
    assert f"would symlink {DROPIN} -> /etc/gandi/sysctl.conf" in plan.getvalue()
    assert "would run sysctl -q -p /etc/gandi/sysctl.conf" in plan.getvalue()


# -- hostile input (issue 11) ----------------------------------------------------------------------
@pytest.mark.parametrize("line, shown", [
    ("net.ipv4.\0x = 1", r"'net.ipv4.\x00x'"),
    ("kernel/../../../etc/shadow = x", "'kernel/../../../etc/shadow'"),  # never read outside /proc/sys
    ("kernel..panic = 1", "'kernel..panic'"),
    ("kernel.panic\u2028 = 1", r"'kernel.panic\u2028'"),
    (" = 1", "''"),
])
def test_a_key_that_names_no_proc_sys_file_is_one_warning_naming_the_line(fs, caplog, line, shown):
    fs.create_file("/etc/gandi/sysctl.conf", contents=f"# shipped\n{line}\nkernel.panic = 10\n")
    fs.create_file("/etc/shadow", contents="x\n")
    running_values(fs, kernel__panic="0\n")
    host = answering(FakeHost())

    outcome = apply(host)

    assert outcome.state == CHANGED, outcome.detail  # kernel.panic differed: sysctl -p ran
    assert host.commands == [APPLY]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"sysctl: /etc/gandi/sysctl.conf line 2: {shown} is not a sysctl key; line skipped"]
    assert "\0" not in caplog.text and "\u2028" not in caplog.text


def test_lines_are_split_as_sysctl_reads_them():
    # "\r" and U+2028 do not end a line for sysctl: no key is hidden inside another line's value.
    values, problems = sysctl.parse("kernel.a = 1\rkernel.b = 2\nkernel.c = 3\u2028kernel.d = 4\n")
    assert values == {"kernel.a": "1\rkernel.b = 2", "kernel.c": "3\u2028kernel.d = 4"}
    assert problems == []
