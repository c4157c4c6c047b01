"""Our own DHCP client, for interfaces no network stack claims: dhclient, dhcpcd or udhcpc.

The client runs with our lease script (`gandi-vm iface lease`), so every address, route and rule
is put in place by routing.py from a parsed Lease, never by a shell script reading the options.
The client is started in the unit's cgroup: it renews the lease for as long as the interface is
attached, and the unit's stop (or `iface detach`) releases the lease and ends it.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

from gandi_vm import sysfs
from gandi_vm.host import Host
from gandi_vm.lease import STATE_DIR

CLIENTS = ("dhclient", "dhcpcd", "udhcpc")  # in order of preference when several are installed
_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# Not under /run: Debian's initramfs mounts /run noexec, and the client must execute the script.
SCRIPT = "/var/lib/gandi-vm/lease-script"
STOP_TIMEOUT = 20


def installed(host: Host) -> Optional[str]:
    for client in CLIENTS:
        if any(host.exists(f"{d}/{client}") for d in _BIN_DIRS):
            return client
    return None


def write_script(host: Host, config: Optional[str]) -> str:
    """The executable the client calls on each lease event: this very gandi_vm package, with the
    same root and configuration, whatever environment the client gives its script (dhclient
    gives almost none). Rewritten at each attach, so it follows the installed interpreter."""
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = ["--root", host.root, *(["--config", config] if config else []), "iface", "lease"]
    text = (f"#!{sys.executable} -sE\n"
            "# Written by gandi-vm: the DHCP client's event script (see gandi_vm/dhcp.py).\n"
            "import os, sys\n"
            "# attach brought the link up before it started the client: spare an interpreter.\n"
            "if os.environ.get('reason') == 'PREINIT':\n"
            "    sys.exit(0)\n"
            f"sys.path.insert(0, {package_parent!r})\n"
            "from gandi_vm.cli import main\n"
            f"sys.exit(main({argv!r} + sys.argv[1:]))\n")
    host.write_text(SCRIPT, text, mode=0o755)
    return host.path(SCRIPT)


def _files(host: Host, client: str, name: str) -> dict:
    return {kind: host.path(f"{STATE_DIR}/{name}.{client}.{kind}") for kind in ("pid", "leases")}


def start_argv(host: Host, client: str, name: str, script: str, timeout: int,
               secondary: bool) -> List[str]:
    """One attempt: the command returns once a lease is bound (the client then stays in the
    background to renew it) or fails after `timeout` seconds."""
    files = _files(host, client, name)
    if client == "dhclient":
        conf = f"{STATE_DIR}/dhclient.conf"
        host.write_text(conf, (
            "# Written by gandi-vm for its own dhclient runs.\n"
            f"timeout {timeout};\n"
            "request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers,\n"
            "        domain-search, host-name, interface-mtu;\n"))
        return ["dhclient", "-4", "-1", "-v", "-cf", host.path(conf), "-sf", script,
                "-pf", files["pid"], "-lf", files["leases"], name]
    if client == "dhcpcd":
        # dhcpcd puts the address in place itself; -G keeps its gateway out of the main table
        # for a secondary interface (the lease script puts it in the interface's own table).
        # With no configuration file dhcpcd asks for almost nothing: name the options we keep.
        options = [word for option in ("domain_name_servers", "domain_name", "domain_search",
                                       "host_name") for word in ("-o", option)]
        return ["dhcpcd", "-4", "-w", "-t", str(timeout), "-f", "/dev/null", "-c", script,
                "--noipv4ll", *options, *(["-G"] if secondary else []), name]
    # udhcpc: -n fails after the tries, -R releases the lease when it is told to stop.
    tries = max(1, timeout // 3)
    return ["udhcpc", "-i", name, "-n", "-R", "-t", str(tries), "-T", "3", "-A", "3",
            "-O", "search", "-s", script, "-p", files["pid"]]


def stop(host: Host, client: str, name: str, script: str) -> None:
    """Release the lease and end the client we started for this interface (and nothing else).
    An unplugged interface has nothing to release through: the client is only ended."""
    files = _files(host, client, name)
    present = host.exists(f"/sys/class/net/{name}")
    if present and client == "dhclient":
        host.run(["dhclient", "-4", "-r", "-cf", "/dev/null", "-sf", script, "-pf", files["pid"],
                  "-lf", files["leases"], name], timeout=STOP_TIMEOUT)
    elif client == "dhcpcd":
        # dhcpcd keeps its own pid file and renames its processes: ask it to release (-k), or
        # just to exit (-x) when the interface is gone.
        host.run(["dhcpcd", "-4", "-k" if present else "-x", "-f", "/dev/null", "-c", script, name],
                 timeout=STOP_TIMEOUT)
    # Whatever the release did, no client of ours may outlive the interface's record.
    _terminate(host, files["pid"], client, name)
    for path in files.values():
        host.remove(host.guest(path) or path)


def _terminate(host: Host, pidfile: str, client: str, name: str) -> None:
    """SIGTERM the pid in our pidfile, only if that process is still our client for `name`."""
    try:
        with open(pidfile, encoding="ascii", errors="replace") as f:
            pid = sysfs.number(f.read(32).strip(), limit=4194305)  # pid_max's largest value
        if pid == 0:  # kill(0) would signal our own process group
            return
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, sysfs.Garbage):
        return
    if os.path.basename(argv[0]).decode(errors="replace") != client or name.encode() not in argv:
        return
    if host.dry_run:
        host.run(["kill", str(pid)], timeout=5)
        return
    import signal
    import time

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):  # udhcpc -R sends its release before it exits
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                if f.read().rpartition(")")[2].split()[:1] == ["Z"]:
                    return  # exited; its parent (init) has not reaped it yet
        except OSError:
            return
        time.sleep(0.1)
