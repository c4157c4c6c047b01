"""The hand-over of a new interface's first lease from the DHCP client's event script to the
attach waiting for it (dhcp.handing_over, dhcp.take_event, the script dhcp.write_script writes).

The script itself runs for real in tests/integration (test_integration_lease_script.py, and each
client in test_integration_iface.py); here, the attach's side on a fake guest: the marker's life,
what a handed-over event becomes, and what a bad one cannot do.
"""

from __future__ import annotations

import os
import re
import shlex
import threading

import pytest
from test_net_attach import hand_over

from gandi_vm import dhcp, lease

STATE = "/run/gandi/iface"
MARKER = f"{STATE}/eth1.waiting"


class Recorder:
    """An `apply` that records what it was given and answers `verdict` (or raises `error`)."""

    def __init__(self, verdict=0, error=None):
        self.verdict, self.error = verdict, error
        self.calls = []

    def __call__(self, event, env):
        self.calls.append((event, dict(env)))
        if self.error is not None:
            raise self.error
        return self.verdict


def state_files():
    return sorted(os.listdir(STATE)) if os.path.isdir(STATE) else []


# -- the script dhcp.write_script writes ----------------------------------------------------------
def test_the_script_is_sh_and_names_the_events_it_acts_on(host):
    path = dhcp.write_script(host, "/etc/gandi.conf")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("#!/bin/sh\n") and os.access(path, os.X_OK)
    [pattern] = re.findall(r"\n    ([A-Za-z |]+)\) ;;\n", text)
    assert set(pattern.split(" | ")) == dhcp.BIND_EVENTS | dhcp.UNBIND_EVENTS | {"TIMEOUT"}
    assert "PREINIT" not in pattern  # answered by the script: attach brought the link up
    [command] = [shlex.split(line) for line in text.splitlines() if line.lstrip().startswith("exec ")]
    assert "main(['--root', '/', '--config', '/etc/gandi.conf', 'iface', 'lease']" in command[4]
    assert f"\ntries={int(dhcp.VERDICT_WAIT / 0.05)}\n" in text


# -- the marker ------------------------------------------------------------------------------------
def test_the_marker_names_this_process_while_the_block_runs_and_goes_after(host):
    with dhcp.handing_over(host, "eth1", Recorder()):
        with open(MARKER, encoding="ascii") as f:
            assert f.read() == f"{os.getpid()}\n"
    assert not os.path.exists(MARKER)


def test_the_marker_goes_when_the_block_raises(host):
    with pytest.raises(RuntimeError):
        with dhcp.handing_over(host, "eth1", Recorder()):
            raise RuntimeError("the client could not be started")
    assert state_files() == []
    assert [t.name for t in threading.enumerate() if t.name.startswith("gandi-")] == []


def test_a_dry_run_writes_no_marker(fs, capsys):
    from fakesys import FakeHost, system

    system(fs)
    host = FakeHost(dry_run=True)
    with dhcp.handing_over(host, "eth1", Recorder()):
        assert not os.path.exists(MARKER)
    assert capsys.readouterr().out == ""


def test_what_an_event_left_is_removed_and_nothing_of_another_interface(host, fs):
    # `eth1.event` is a valid interface name too: its files are not eth1's.
    others = [f"{STATE}/eth1.event.waiting", f"{STATE}/eth1.event.event.77", f"{STATE}/eth10.event.5",
              f"{STATE}/eth1.yaml", f"{STATE}/eth1.event.9.new"]
    for path in others:
        fs.create_file(path)
    with dhcp.handing_over(host, "eth1", Recorder()):
        fs.create_file(f"{STATE}/eth1.verdict.12", contents="0\n")  # the script read it and left
    assert state_files() == sorted(os.path.basename(p) for p in others)


# -- events handed over ----------------------------------------------------------------------------
def test_a_handed_over_event_is_applied_and_its_verdict_is_the_scripts_exit(host):
    apply = Recorder(verdict=1)
    env = {"reason": "BOUND", "interface": "eth1", "new_ip_address": "10.0.1.5",
           "new_host_name": "a\nb $(reboot)"}
    with dhcp.handing_over(host, "eth1", apply):
        assert hand_over(host, "eth1", None, env, pid=100) == 1
        assert hand_over(host, "eth1", "bound", {"interface": "eth1", "ip": "10.0.1.6"}, pid=101) == 1
    assert apply.calls == [(None, env), ("bound", {"interface": "eth1", "ip": "10.0.1.6"})]
    assert state_files() == []


def test_take_event_passes_the_verdict_through(host, fs):
    fs.create_file(f"{STATE}/eth1.event.3", contents=b"renew\0interface=eth1\0ip=10.0.1.7\0")
    apply = Recorder(verdict=0)
    assert dhcp.take_event(host, "eth1", f"{STATE}/eth1.event.3", apply) == 0
    assert apply.calls == [("renew", {"interface": "eth1", "ip": "10.0.1.7"})]
    assert state_files() == []


@pytest.mark.parametrize("data, logged", [
    (b"\0interface=eth1\0new_ip_address=10.0.1.5", "cut short"),
    (b"\0interface=eth2\0reason=BOUND\0", "names interface 'eth2'"),
    (b"\0reason=BOUND\0", "names interface ''"),
    (b"\0" * (lease.MAX_HANDOVER + 1), "more than"),
])
def test_a_bad_event_is_refused_with_one_line(host, fs, caplog, data, logged):
    fs.create_file(f"{STATE}/eth1.event.3", contents=data)
    apply = Recorder()
    assert dhcp.take_event(host, "eth1", f"{STATE}/eth1.event.3", apply) == 1
    assert apply.calls == []
    [line] = caplog.messages
    assert line.startswith("iface eth1: handed-over event ") and logged in line
    assert state_files() == []


def test_a_bug_in_apply_is_a_verdict_not_a_dead_thread(host, fs, caplog):
    fs.create_file(f"{STATE}/eth1.event.3", contents=b"\0interface=eth1\0")
    apply = Recorder(error=KeyError("gateway"))
    assert dhcp.take_event(host, "eth1", f"{STATE}/eth1.event.3", apply) == 1
    assert caplog.messages == ["iface lease: internal error: KeyError: \"'gateway'\""]


def test_a_vanished_event_file_is_a_verdict(host, caplog):
    assert dhcp.take_event(host, "eth1", f"{STATE}/eth1.event.3", Recorder()) == 1
    assert caplog.messages == [f"iface eth1: handed-over event {STATE}/eth1.event.3: "
                               "No such file or directory"]
