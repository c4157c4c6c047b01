"""The DHCP client's event script (sh, written by dhcp.write_script), run for real by dash and by
busybox sh, against a real waiting attach (dhcp.handing_over in this process) or none.

The script's `gandi-vm iface lease` is replaced by a stub interpreter (the script execs whatever
sys.executable was when it was written) that records how it was called and exits 7: so every
test says which way an event went, the hand-over or the interpreter. With the clients themselves:
test_integration_iface.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from gandi_vm import dhcp
from gandi_vm.host import Host
from gandi_integration import which

STUB_EXIT = 7
SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}
# What a hostile DHCP server may put in an option, as the client passes it (bytes, not UTF-8).
# What the shell adds to what it exports (busybox sh: PATH, PWD, SHLVL), as `iface lease` would
# get them too.
SHELL_NAMES = ("PATH", "PWD", "SHLVL")
HOSTILE = b"evil;$(touch${IFS}/tmp/x)`id`'\"\n\\x\xff"


class Script:
    """The script written for a root under tmp, the stub's record, and one run."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch, shell: List[str]):
        self.tmp, self.shell = tmp, shell
        self.ran = tmp / "stub-ran"
        stub = tmp / "python-stub"
        stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {self.ran}\nexit {STUB_EXIT}\n')
        stub.chmod(0o755)
        monkeypatch.setattr(sys, "executable", str(stub))
        self.host = Host(str(tmp / "root"))
        self.state = Path(self.host.path("/run/gandi/iface"))
        self.state.mkdir(parents=True)
        self.write()

    def write(self) -> None:
        self.path = dhcp.write_script(self.host, None)

    def run(self, env: Dict[str, bytes], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # What dhclient gives its script: the event's variables, nothing else (no PATH).
        return subprocess.run([*self.shell, self.path, *args], env={k.encode(): v for k, v in env.items()},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                              check=False)

    def stub_argv(self) -> Optional[List[str]]:
        """The arguments the interpreter was started with after `-sE -c CODE`, or None."""
        if not self.ran.exists():
            return None
        argv = self.ran.read_text().splitlines()
        assert argv[:2] == ["-sE", "-c"] and "'iface', 'lease'" in argv[2], argv
        return argv[3:]

    def files(self) -> List[str]:
        return sorted(p.name for p in self.state.iterdir())


@pytest.fixture(params=sorted(SHELLS))
def script(request, tmp_path, monkeypatch) -> Script:
    shell = SHELLS[request.param]
    if which(shell[0]) is None:
        pytest.skip(f"{shell[0]} not installed")
    return Script(tmp_path, monkeypatch, shell)


def bound(name: str = "ens4", **more: bytes) -> Dict[str, bytes]:
    return {"reason": b"BOUND", "interface": name.encode(), "new_ip_address": b"10.99.10.50",
            "new_subnet_mask": b"255.255.255.0", **more}


class Attach:
    """An `apply` for dhcp.handing_over: records what it was given, answers `verdict`."""

    def __init__(self, verdict: int = 0):
        self.verdict = verdict
        self.calls: List[tuple] = []

    def __call__(self, event, env):
        self.calls.append((event, dict(env)))
        return self.verdict


# -- no attach waiting ------------------------------------------------------------------------------
@pytest.mark.parametrize("env, args", [
    ({"reason": b"PREINIT", "interface": b"ens4"}, ()),
    ({"reason": b"CARRIER", "interface": b"ens4"}, ()),
    ({"reason": b"FAIL", "interface": b"../x"}, ()),
    ({"interface": b"ens4"}, ("leasefail",)),
    ({"interface": b"ens4"}, ("nak",)),
], ids=["PREINIT", "CARRIER", "FAIL", "udhcpc leasefail", "udhcpc nak"])
def test_an_event_with_nothing_to_do_exits_0_and_starts_nothing(script, env, args):
    done = script.run(env, *args)
    assert (done.returncode, done.stderr) == (0, b"")
    assert script.stub_argv() is None and script.files() == []


@pytest.mark.parametrize("args", [(), ("renew",)], ids=["dhclient", "udhcpc"])
def test_without_a_waiting_attach_the_event_goes_to_iface_lease(script, args):
    env = bound(new_host_name=HOSTILE) if not args else {"interface": b"ens4", "ip": b"10.99.10.51"}

    done = script.run(env, *args)

    assert done.returncode == STUB_EXIT, done
    assert script.stub_argv() == list(args)
    assert script.files() == []


@pytest.mark.parametrize("marker", ["", "abc\n", "0\n", "007\n", "-1\n", "dead"])
def test_a_marker_naming_no_live_process_is_no_waiting_attach(script, marker):
    if marker == "dead":
        child = subprocess.Popen(["true"])
        child.wait()
        marker = f"{child.pid}\n"
    (script.state / "ens4.waiting").write_text(marker)

    done = script.run(bound())

    assert done.returncode == STUB_EXIT, done
    assert script.files() == ["ens4.waiting"]


@pytest.mark.parametrize("name", [b"", b".", b"..", b"../../x", b"a b", b"x" * 16,
                                  b"$(touch x)", b"ens4\n", b"\xff"])
def test_a_name_that_is_no_interface_name_goes_to_iface_lease_and_names_no_file(script, name):
    # iface lease refuses it (exit 2); the script makes no path of it, even with an attach waiting
    (script.state / "ens4.waiting").write_text(f"{os.getpid()}\n")
    env = bound()
    env["interface"] = name

    done = script.run(env)

    assert done.returncode == STUB_EXIT, done
    assert script.files() == ["ens4.waiting"]
    assert sorted(p.name for p in script.tmp.iterdir()) == ["python-stub", "root", "stub-ran"]


# -- an attach waiting ------------------------------------------------------------------------------
@pytest.mark.parametrize("verdict", [0, 1])
def test_the_waiting_attach_applies_the_event_and_its_verdict_is_the_exit_status(script, verdict):
    attach = Attach(verdict)
    env = bound(new_host_name=HOSTILE, new_domain_search=b"a.example b.example")

    with dhcp.handing_over(script.host, "ens4", attach):
        done = script.run(env)

    assert done.returncode == verdict, done
    assert script.stub_argv() is None
    [(event, got)] = attach.calls
    assert event is None
    assert {k: os.fsencode(v) for k, v in got.items() if k not in SHELL_NAMES} == env
    assert script.files() == []


def test_udhcpc_s_event_argument_is_handed_over(script):
    attach = Attach()
    env = {"interface": b"ens4", "ip": b"10.99.10.52", "mask": b"24", "router": b"10.99.10.1"}

    with dhcp.handing_over(script.host, "ens4", attach):
        assert script.run(env, "bound").returncode == 0
        assert script.run({"interface": b"ens4"}, "deconfig").returncode == 0

    assert [(event, got.get("ip")) for event, got in attach.calls] == [("bound", "10.99.10.52"),
                                                                       ("deconfig", None)]
    assert script.stub_argv() is None


def test_an_event_for_another_interface_is_not_handed_over(script):
    attach = Attach()
    with dhcp.handing_over(script.host, "ens4", attach):
        done = script.run(bound("ens5"))
    assert done.returncode == STUB_EXIT and attach.calls == []


def test_a_stuck_attach_is_waited_for_a_bounded_time_then_exit_1(script, monkeypatch):
    monkeypatch.setattr(dhcp, "VERDICT_WAIT", 1)
    script.write()
    (script.state / "ens4.waiting").write_text(f"{os.getpid()}\n")  # alive, but serving nothing

    started = time.monotonic()
    done = script.run(bound(), timeout=30)

    assert done.returncode == 1, done
    assert 1 <= time.monotonic() - started < 15
    assert script.stub_argv() is None
    assert script.files() == ["ens4.waiting"]  # its event taken back


def test_an_attach_that_stops_waiting_takes_no_more_events_and_the_script_exits_1(script):
    # The attach gave up (its client timed out) while the script was handing over: not applied,
    # and not given to `iface lease` either, which would put an address back behind the cleanup.
    marker = script.state / "ens4.waiting"
    marker.write_text(f"{os.getpid()}\n")
    threading.Timer(0.5, marker.unlink).start()

    started = time.monotonic()
    done = script.run(bound())

    assert done.returncode == 1, done
    assert time.monotonic() - started < dhcp.VERDICT_WAIT / 2
    assert script.stub_argv() is None and script.files() == []


def test_without_env_0_the_event_goes_to_iface_lease(script):
    """An env without -0 (busybox before 1.35 has none): the hand-over is impossible, the
    interpreter takes the event, and no partial file is left."""
    if which("unshare") is None:
        pytest.skip("unshare not installed (Debian package util-linux)")
    old_env = script.tmp / "old-env"
    old_env.write_text('#!/bin/sh\necho "env: unrecognized option: 0" >&2\nexit 1\n')
    old_env.chmod(0o755)
    attach = Attach()
    # over the real env in a mount namespace of the run's own: the host keeps its env
    mount = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(old_env),
             str(Path(which("env") or "/usr/bin/env").resolve())]

    with dhcp.handing_over(script.host, "ens4", attach):
        done = subprocess.run([*mount, *script.shell, script.path], env={
            k: v.decode() for k, v in bound().items()}, capture_output=True, timeout=60, check=False)

    assert done.returncode == STUB_EXIT, done
    assert attach.calls == [] and script.stub_argv() == []
    assert script.files() == []
