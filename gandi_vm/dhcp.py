"""Our own DHCP client, for interfaces no network stack claims: dhclient, dhcpcd or udhcpc.

The client runs with our event script, so every address, route and rule is put in place by
routing.py from a parsed Lease, never by a shell script reading the options. The script itself is
a few lines of sh: while `iface attach` waits for the interface's first lease, the script hands
the event over to it (`handing_over`: the interpreter already running applies it, none is
started, an interpreter start being seconds under QEMU/TCG); any later event (a renewal, an
expiry, the release at detach) goes to `gandi-vm iface lease`. The client is started in the
unit's cgroup: it renews the lease for as long as the interface is attached, and the unit's stop
(or `iface detach`) releases the lease and ends it.
"""

from __future__ import annotations

import os
import sys

from gandi_vm import log, sysfs
from gandi_vm.host import Host
from gandi_vm.lease import STATE_DIR

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import threading
    from typing import Callable, List, Mapping, Optional

    # What the attach does with a handed-over event: lease_event's verdict, from (event, env).
    Apply = Callable[[Optional[str], Mapping[str, str]], int]

CLIENTS = ("dhclient", "dhcpcd", "udhcpc")  # in order of preference when several are installed
_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
# Not under /run: Debian's initramfs mounts /run noexec, and the client must execute the script.
SCRIPT = "/var/lib/gandi-vm/lease-script"
STOP_TIMEOUT = 20

# The events the script's work is for (dhclient and dhcpcd name them in $reason, udhcpc in $1).
# Any other (PREINIT: attach brought the link up before it started the client; CARRIER,
# leasefail, FAIL...) needs nothing: the script exits 0 without starting anything.
BIND_EVENTS = frozenset({"BOUND", "RENEW", "REBIND", "REBOOT", "bound", "renew"})
UNBIND_EVENTS = frozenset({"EXPIRE", "RELEASE", "STOP", "STOPPED", "deconfig", "DEPARTED"})
TIMEOUT_EVENT = "TIMEOUT"  # dhclient: no server, try the old lease; exit 0 would make it trust it

# The hand-over (see the script below): attach's poll for a handed-over event, and how long the
# script waits for the verdict. Applying a lease is a handful of `ip` commands: well under a
# second, a few under TCG; the bound is for an attach that is stuck, so the client never is.
_POLL = 0.02
_SCRIPT_POLL = 0.05
VERDICT_WAIT = 30

_SCRIPT_TEXT = r"""#!/bin/sh
# Written by gandi-vm at each attach: the DHCP client's event script (see gandi_vm/dhcp.py).
# While `gandi-vm iface attach` waits for this interface's first lease, it applies the event
# itself: no interpreter is started here. Any other event goes to `gandi-vm iface lease`.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
state=@STATE@

lease_command() {
    exec @PYTHON@ -sE -c @CODE@ "$@"
}

# dhclient and dhcpcd name the event in $reason, udhcpc in $1.
case ${1:-${reason-}} in
    @EVENTS@) ;;
    *) exit 0 ;;
esac
# The name becomes a file name below: anything but a kernel interface name goes to
# `iface lease`, which refuses it.
case ${interface-} in
    '' | . | .. | *[!A-Za-z0-9_.@+-]*) lease_command "$@" ;;
esac
[ "${#interface}" -le 15 ] || lease_command "$@"

# Is an attach waiting for this interface (its marker names its pid)? If not, or if it was
# killed before it could remove its marker: a renewal, an expiry, a release... for Python.
waiting=$state/$interface.waiting
pid=
{ read -r pid <"$waiting"; } 2>/dev/null
case $pid in
    '' | 0* | *[!0-9]*) lease_command "$@" ;;
esac
kill -0 "$pid" 2>/dev/null || lease_command "$@"

# The event ($1: udhcpc's, empty for the others) and the environment, each NUL-terminated,
# written aside and renamed into place: the attach never reads half of it. Without `env -0`
# (busybox), Python.
handed=$state/$interface.event.$$
verdict=$state/$interface.verdict.$$
if ! { printf '%s\000' "${1-}" && env -0; } >"$handed.new" 2>/dev/null ||
    ! mv -f "$handed.new" "$handed"; then
    rm -f "$handed.new"
    lease_command "$@"
fi

# Its verdict is our exit status. An attach that stops waiting (it gave up on this attempt and
# is stopping the client, or it was killed) takes no more events: exit 1, not applied, rather
# than `iface lease`, which would put an address back behind a failed attempt's cleanup.
tries=@TRIES@
while [ "$tries" -gt 0 ]; do
    if [ -f "$verdict" ]; then
        read -r status <"$verdict"
        case $status in
            [0-9]) exit "$status" ;;
        esac
        exit 1
    fi
    [ -f "$waiting" ] && kill -0 "$pid" 2>/dev/null || break
    sleep @SLEEP@ 2>/dev/null || sleep 1
    tries=$((tries - 1))
done
rm -f "$handed"
exit 1
"""


def installed(host: Host) -> Optional[str]:
    for client in CLIENTS:
        if any(host.exists(f"{d}/{client}") for d in _BIN_DIRS):
            return client
    return None


def write_script(host: Host, config: Optional[str]) -> str:
    """The executable the client calls on each event: sh, which hands the event to a waiting
    attach or runs this very gandi_vm package's `iface lease` with the same root and
    configuration, whatever environment the client gives its script (dhclient gives almost
    none). Rewritten at each attach, so it follows the installed interpreter and the root."""
    import shlex

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = ["--root", host.root, *(["--config", config] if config else []), "iface", "lease"]
    code = (f"import sys; sys.path.insert(0, {package_parent!r}); "
            f"from gandi_vm.cli import main; sys.exit(main({argv!r} + sys.argv[1:]))")
    events = sorted(BIND_EVENTS | UNBIND_EVENTS | {TIMEOUT_EVENT})
    text = _SCRIPT_TEXT
    for key, value in (("@STATE@", shlex.quote(host.path(STATE_DIR))),
                       ("@PYTHON@", shlex.quote(sys.executable)), ("@CODE@", shlex.quote(code)),
                       ("@EVENTS@", " | ".join(events)),
                       ("@TRIES@", str(int(VERDICT_WAIT / _SCRIPT_POLL))),
                       ("@SLEEP@", str(_SCRIPT_POLL))):
        text = text.replace(key, value)
    host.write_text(SCRIPT, text, mode=0o755)
    return host.path(SCRIPT)


# -- the hand-over of the first lease ------------------------------------------------------------
def waiting_marker(name: str) -> str:
    return f"{STATE_DIR}/{name}.waiting"


def _handed_pid(name: str, kind: str, entry: str) -> Optional[str]:
    """The script's pid in a hand-over file name `NAME.KIND.PID`, or None: another interface's
    (`ens4.event` is a valid name too) or a temporary file."""
    prefix = f"{name}.{kind}."
    pid = entry[len(prefix):] if entry.startswith(prefix) else ""
    return pid if pid.isascii() and pid.isdigit() else None


class handing_over:
    """While the `with` block runs (our client getting its first lease), the event script hands
    each event for `name` to `apply(event, env)` in this process and exits with its verdict.

    The marker names this process: a script that finds it and this process alive hands over;
    one that finds it gone falls back to `iface lease`. Removed in every case, with whatever an
    event left. A dry run starts no client: nothing to hand over, nothing written. (A class, not
    contextlib.contextmanager: contextlib costs milliseconds of every iface command's start-up.)"""

    def __init__(self, host: Host, name: str, apply: Apply):
        self.host, self.name, self.apply = host, name, apply
        self.stop: Optional[threading.Event] = None
        self.server: Optional[threading.Thread] = None

    def __enter__(self) -> None:
        if self.host.dry_run:
            return
        import threading

        self.stop = threading.Event()
        self.host.write_text(waiting_marker(self.name), f"{os.getpid()}\n")
        self.server = threading.Thread(target=_serve, args=(self.host, self.name, self.apply, self.stop),
                                       daemon=True, name=f"gandi-handover-{self.name}")
        self.server.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.stop is None or self.server is None:
            return
        self.stop.set()
        self.server.join()
        self.host.remove(waiting_marker(self.name))
        for entry in self.host.listdir(STATE_DIR):
            if _handed_pid(self.name, "event", entry) or _handed_pid(self.name, "verdict", entry):
                self.host.remove(f"{STATE_DIR}/{entry}")


def _serve(host: Host, name: str, apply: Apply, stop) -> None:
    while not stop.wait(_POLL):
        for entry in host.listdir(STATE_DIR):
            pid = _handed_pid(name, "event", entry)
            if pid is not None:
                verdict = take_event(host, name, f"{STATE_DIR}/{entry}", apply)
                host.write_text(f"{STATE_DIR}/{name}.verdict.{pid}", f"{verdict}\n")


def take_event(host: Host, name: str, path: str, apply: Apply) -> int:
    """Apply one handed-over event file (removed): the exit status `iface lease` would give."""
    from gandi_vm.lease import LeaseError, MAX_HANDOVER, from_handover

    try:
        data = host.read_bytes(path, MAX_HANDOVER + 1)
    except OSError as e:
        log.error("iface %s: handed-over event %s: %s", name, path, e.strerror)
        return 1
    finally:
        host.remove(path)
    try:
        event, env = from_handover(data)
    except LeaseError as e:
        log.error("iface %s: handed-over event rejected: %s", name, e)
        return 1
    if env.get("interface") != name:
        log.error("iface %s: handed-over event names interface %s; ignored", name,
                  sysfs.quoted(env.get("interface", ""), 32))
        return 1
    try:
        return apply(event, env)
    except Exception as e:
        # As `iface lease` would (cli.main): one line, exit 1. Raised here, it would end the
        # thread and leave the client's script waiting for a verdict until its bound.
        log.error("iface lease: internal error: %s: %s", type(e).__name__,
                  sysfs.quoted(str(e), 200))
        return 1


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
