"""The resident agent in a real guest (issue 14): one interpreter for the boot services and the
hotplug units, the work done in the unit that asked, and gandi-vm without it.

gandi-agent.socket's first request starts `gandi-vm agent`; every later command is a fork of it
(gandi_vm/agent.py), which joins the cgroup of the unit whose gate asked. What is checked is
what systemd and the kernel show: the agent's process, the DHCP client in gandi-iface@'s own
cgroup, the FIFO gone with the socket and the unit's command exec'd instead.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Iterator

import pytest

from qemu_guest import Guest, make_disk

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from benchlib import TRACE_ARGS, clear_trace, exec_trace  # noqa: E402

MAC = "52:54:00:12:34:71"
WAIT = 120  # seconds on an idle machine (Guest.scaled stretches them)


@pytest.fixture(scope="module")
def guest(image: Path) -> Iterator[Guest]:
    """A guest with the kernel's exec trace (benchlib.TRACE_ARGS): execs are counted by the kernel."""
    with Guest(image, kernel_args=TRACE_ARGS) as vm:
        yield vm


def agent_pids(guest: Guest) -> list:
    """The agent's main process and its workers still running (`gandi-vm agent` all)."""
    return guest.run("pgrep -f '^/usr/bin/python3 /usr/bin/gandi-vm agent$'").stdout.split()


def test_the_boot_services_ran_in_one_resident_interpreter(guest: Guest):
    guest.wait_until("systemctl is-active --quiet gandi-config.service gandi-mount.service", WAIT)
    assert guest.check("systemctl is-active gandi-agent.socket gandi-agent.service").split() == \
        ["active", "active"]
    assert guest.check("stat -c '%a %U %F' /run/gandi/agent/requests").strip() == "600 root fifo"
    main = guest.check("systemctl show -p MainPID --value gandi-agent.service").strip()
    assert agent_pids(guest) == [main]
    # Both boot services' lines are in their own journal, not the agent's.
    assert "mounted" in guest.check("journalctl -b -o cat -t gandi -u gandi-mount.service") or \
        "skipped" in guest.check("journalctl -b -o cat -t gandi -u gandi-mount.service")
    assert "plugin ssh:" in guest.check("journalctl -b -o cat -t gandi -u gandi-config.service")
    rss = guest.check(f"sed -n 's/^VmRSS:[[:space:]]*//p' /proc/{main}/status").strip()
    print(f"resident agent: pid {main}, VmRSS {rss}")


def test_a_nics_dhcp_client_lives_in_its_units_cgroup_and_goes_with_it(guest: Guest):
    guest.add_nic("agent-nic", mac=MAC, slot=17)
    name = guest.nic_name(MAC)
    unit = f"gandi-iface@{name}.service"
    guest.wait_until(f"systemctl is-active --quiet {unit}", WAIT)
    cgroup = guest.check(f"systemctl show -p ControlGroup --value {unit}").strip()
    procs = guest.check(f"cat {shlex.quote(f'/sys/fs/cgroup{cgroup}/cgroup.procs')}").split()
    client = guest.check(f"pgrep -f 'dhclient.* {name}$'").split()
    assert client and client[0] in procs, (client, procs)
    assert agent_pids(guest) == [guest.check("systemctl show -p MainPID --value "
                                             "gandi-agent.service").strip()], "a worker was left"

    guest.remove_nic("agent-nic")
    guest.wait_until(f'test "$(systemctl is-active {unit})" = inactive', WAIT)
    assert guest.run(f"pgrep -f 'dhclient.* {name}$'").returncode == 1, "client still running"


def test_without_the_agents_socket_the_units_run_gandi_vm_themselves(guest: Guest, tmp_path: Path):
    guest.check("systemctl stop gandi-agent.socket gandi-agent.service")
    try:
        assert guest.run("test -e /run/gandi/agent/requests").returncode == 1, "the FIFO stayed"
        clear_trace(guest)
        guest.add_disk(make_disk(tmp_path / "noagent.img", "ext4", "noagent"), "noagent")
        name = guest.kernel_name("noagent")
        guest.wait_until(f"systemctl is-active --quiet gandi-disk@{name}.service", WAIT)
        assert guest.check("findmnt -n -o SOURCE --mountpoint /srv/noagent").strip() == f"/dev/{name}"
        traced = exec_trace(guest)
        assert traced["gandi_vm"] == 1 and traced["gandi_requests"] == 0, traced
        assert agent_pids(guest) == []
        guest.remove_disk("noagent")
        guest.wait_until(f'test "$(systemctl is-active gandi-disk@{name}.service)" = inactive', WAIT)
        assert guest.check("findmnt -n --mountpoint /srv/noagent || true").strip() == ""
    finally:
        guest.check("systemctl start gandi-agent.socket")
    # The next request starts the agent again.
    guest.check("systemctl restart gandi-config.service")
    assert len(agent_pids(guest)) == 1
