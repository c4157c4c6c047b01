"""Helpers of the network integration tests: real `gandi-vm iface` runs in network namespaces.

A `Lab` is a small network of its own, made of two namespaces with unique names:

  guest   where gandi-vm, its DHCP client and every `ip` query run: `lo`, a primary interface
          `eth0` (192.0.2.2/24, default route via 192.0.2.1 in the main table) and the secondary
          interfaces (`ens4`, `ens5`...), each the guest end of a veth pair, down as a hot-plugged
          NIC arrives;
  server  the other ends: `uplink` (192.0.2.1, strict rp_filter), one `srvN` per secondary
          (10.99.N.1/24), and 198.51.100.1 on `lo`, an address that is only reachable from a
          secondary address through that interface's own routing table (a request arriving on
          `uplink` from a 10.99.N.x source fails the strict reverse-path check). ONE dnsmasq
          serves every secondary not listed as unserved, each on its own subnet, with a router,
          two name servers, a search domain and a hostile host name (option 12, forced).

gandi-vm only configures interfaces backed by a device and veth is virtual, so it runs with
`--root` pointing at a fake tree (`root/`): a sysfs where every interface of the guest is a
virtio NIC (ifindex and MAC copied from the guest namespace), `proc -> /proc` (ip netns exec
gives the namespace's own /proc/sys/net), /etc/default/gandi, and `usr`: a symlink to /usr, or,
when a client is chosen, a `usr/sbin` holding only that DHCP client so that dhcp.installed()
sees no other. Commands themselves act on the real kernel, inside the guest namespace.

Nothing here imports pytest: bench/iface_attach.py uses the same Lab. `missing()` and `unusable()`
say why a lab cannot be built here (the tests skip with that reason). `cleanup()` kills every process left in
the namespaces (dnsmasq, dhclient, udhcpc, dhcpcd and its privilege-separated helpers), deletes
the namespaces and the files dhcpcd keeps outside the root; namespaces left by a process that is
gone (a run that was killed) are removed when the next Lab starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NS_PREFIX = "gandi-it-"
_NS_NAME = re.compile(rf"{re.escape(NS_PREFIX)}(\d+)-\d+-(guest|server)")
CLIENTS = ("dhclient", "dhcpcd", "udhcpc")
# tool -> Debian package, for skip reasons
PACKAGES = {"ip": "iproute2", "dnsmasq": "dnsmasq-base", "dhclient": "isc-dhcp-client",
            "dhcpcd": "dhcpcd-base", "udhcpc": "udhcpc", "ethtool": "ethtool"}
TABLE_BASE = 10000  # gandi_vm.routing.TABLE_BASE, restated: tests check it, not import it
STATE_DIR = "run/gandi/iface"  # under the lab's root
PRIMARY, PRIMARY_CIDR, PRIMARY_GATEWAY = "eth0", "192.0.2.2/24", "192.0.2.1"
REMOTE = "198.51.100.1"
# A host name a hostile DHCP server could send: shell syntax that would create MARKER if anything
# ever ran it through a shell. No commas (dnsmasq splits option values on them).
HOSTILE_HOSTNAME = "evil;$(touch${IFS}MARKER)`touch${IFS}MARKER`'\"x"
SYSCTLS = ("ipv4/conf/{}/arp_announce", "ipv4/conf/{}/arp_ignore", "ipv4/conf/{}/rp_filter",
           "ipv6/conf/{}/accept_ra", "ipv6/conf/{}/accept_ra_defrtr")
# dhcpcd keeps its pid files, control sockets and leases at fixed paths of the real system, named
# after the interface only, whatever --root says: a Lab removes those of its interfaces in cleanup,
# so that the next lab's dhcpcd never starts from an earlier lab's lease.
DHCPCD_DIRS = ("/run/dhcpcd", "/var/lib/dhcpcd")
_serial = 0


class LabError(RuntimeError):
    """Setting the lab up failed; the message names the command and what it said."""


def which(tool: str) -> Optional[str]:
    return shutil.which(tool, path=TOOL_PATH)


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=TOOL_PATH, LC_ALL="C")
    done = subprocess.run([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, errors="replace", timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(map(str, argv))} exited {done.returncode}: "
                       f"{(done.stderr or done.stdout).strip()}")
    return done


def missing(*tools: str) -> Optional[str]:
    """Why a lab needing these tools cannot be built here (a precise skip reason), or None."""
    if os.geteuid() != 0:
        return "not root: network namespaces and veth pairs need CAP_NET_ADMIN"
    for tool in ("ip", "dnsmasq", *tools):
        if which(tool) is None:
            return f"{tool} not installed (Debian package {PACKAGES.get(tool, '?')})"
    return None


def unusable() -> Optional[str]:
    """Why network namespaces and veth pairs do not work here, or None (probes the kernel)."""
    name = f"{NS_PREFIX}{os.getpid()}-probe"
    done = sh("ip", "netns", "add", name, check=False)
    if done.returncode != 0:
        return f"ip netns add does not work here: {done.stderr.strip()}"
    try:
        done = sh("ip", "-n", name, "link", "add", "probe0", "type", "veth", "peer", "name",
                  "probe1", check=False)
        if done.returncode != 0:
            return f"cannot create a veth pair: {done.stderr.strip()}"
    finally:
        sh("ip", "netns", "del", name, check=False)
    return None


# -- processes and namespaces ------------------------------------------------------------------
def _state(pid: int) -> str:
    """One-letter process state; '' when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _alive(pid: int) -> bool:
    return _state(pid) not in ("", "Z", "X")


def namespace_pids(ns: str) -> List[int]:
    """Live processes in a namespace (zombies have left it: PID 1 may not reap them here)."""
    done = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in done.stdout.split() if p.isdigit() and _alive(int(p))]


def kill_namespace(ns: str) -> List[str]:
    """SIGTERM every process in the namespace, SIGKILL what is left; returns the survivors."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
        pids = namespace_pids(ns)
        if not pids:
            return []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
    return [f"pid {p} ({_comm(p)}) survives SIGKILL in {ns}" for p in namespace_pids(ns)]


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _cmdline(pid: int) -> List[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def namespaces() -> List[str]:
    done = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def delete_namespace(ns: str) -> List[str]:
    problems = kill_namespace(ns)
    done = sh("ip", "netns", "del", ns, check=False)
    if done.returncode != 0 and ns in namespaces():
        problems.append(f"ip netns del {ns}: {done.stderr.strip()}")
    return problems


def remove_stale_namespaces() -> None:
    """Namespaces of earlier labs whose process is gone (killed runs): their processes and
    interfaces must not linger, nor their names be reused."""
    for ns in namespaces():
        match = _NS_NAME.fullmatch(ns)
        if match and not _alive(int(match.group(1))):
            delete_namespace(ns)


# -- the lab -----------------------------------------------------------------------------------
@dataclass
class Secondary:
    """One hot-plugged NIC: `name` in the guest, `peer` in the server, subnet 10.99.<subnet>.0/24."""

    name: str
    subnet: int
    slot: int  # PCI slot of the fake virtio device
    served: bool = True
    ifindex: int = 0
    mac: str = ""

    @property
    def peer(self) -> str:
        return f"srv{self.subnet}"

    @property
    def gateway(self) -> str:
        return f"10.99.{self.subnet}.1"

    @property
    def network(self) -> str:
        return f"10.99.{self.subnet}.0/24"

    @property
    def dns(self) -> List[str]:
        return [self.gateway, f"10.99.{self.subnet}.2"]

    @property
    def search(self) -> str:
        return f"net{self.subnet}.example.test"

    @property
    def pool(self) -> List[str]:
        return [f"10.99.{self.subnet}.{n}" for n in range(50, 100)]

    @property
    def table(self) -> int:
        return TABLE_BASE + self.ifindex

    @property
    def priority(self) -> int:
        """The rule's priority: the table number, folded below 32766 (the rule that looks up
        main) for an ifindex that would reach it."""
        return TABLE_BASE + (self.table - TABLE_BASE) % (32766 - TABLE_BASE)


@dataclass
class Run:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (f"$ {' '.join(self.argv)}\nexit {self.returncode} after {self.seconds:.1f}s\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")

    def lines(self, level: str) -> List[str]:
        """stderr lines logged at a level: 'warning', 'error'."""
        return [line for line in self.stderr.splitlines() if line.startswith(f"gandi: {level}:")]


class Lab:
    """Two namespaces, the veth pairs between them, dnsmasq, and the fake root gandi-vm runs on.

    secondaries  names of the hot-plugged interfaces, served on 10.99.10.0/24, 10.99.11.0/24...
    unserved     those of them dnsmasq does not serve (a DHCP server that is down)
    client       the only DHCP client installed under the root; None: the root's /usr is the
                 host's, where gandi-vm picks dhclient
    python       the interpreter that runs gandi_vm (and, through it, its lease script)
    ping_check   let dnsmasq ping an address before offering it (slower; off by default)
    renew_after  seconds from a lease to its renewal (DHCP option 58, T1); None: dnsmasq's
                 default, half the lease
    count_python run gandi_vm with an interpreter that notes each of its runs (python_runs()):
                 the lease script gandi-vm writes starts the same one
    """

    def __init__(self, tmp: Path, secondaries: Sequence[str] = ("ens4",),
                 unserved: Sequence[str] = (), client: Optional[str] = None,
                 python: str = sys.executable, ping_check: bool = False,
                 renew_after: Optional[int] = None, count_python: bool = False):
        global _serial
        _serial += 1
        unknown = set(unserved) - set(secondaries)
        if unknown or (client is not None and client not in CLIENTS):
            raise ValueError(f"unserved {sorted(unknown)} or client {client!r}")
        self.tmp = Path(tmp)
        self.root = self.tmp / "root"
        self.python = python
        self.plain_python = python  # the lab's own probes (reach), never counted
        self.client = client
        self.ping_check = ping_check  # dnsmasq's ICMP probe before an offer (off: faster)
        self.renew_after = renew_after
        self.python_log = self.tmp / "python-runs" if count_python else None
        stem = f"{NS_PREFIX}{os.getpid()}-{_serial}"
        self.guest, self.server = f"{stem}-guest", f"{stem}-server"
        self.secondaries = [Secondary(name, 10 + i, 5 + i, name not in unserved)
                            for i, name in enumerate(secondaries)]
        # Short and outside tmp: the whole host name must fit in option 12 (255 bytes).
        self.marker = Path("/tmp") / f"{stem}-hostname-ran"
        self.hostname = HOSTILE_HOSTNAME.replace("MARKER", str(self.marker))
        self.dnsmasq: Optional[subprocess.Popen] = None
        self.dnsmasq_log = self.tmp / "dnsmasq.log"
        self._made: List[str] = []

    def __getitem__(self, name: str) -> Secondary:
        for secondary in self.secondaries:
            if secondary.name == name:
                return secondary
        raise KeyError(name)

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        problems = self.cleanup()
        if problems and exc[0] is None:
            raise LabError("teardown left state behind: " + "; ".join(problems))

    # -- setup ---------------------------------------------------------------------------------
    def start(self) -> "Lab":
        remove_stale_namespaces()
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        for ns in (self.guest, self.server):
            sh("ip", "netns", "add", ns)
            self._made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        g, s = self.guest, self.server
        sh("ip", "-n", g, "link", "add", PRIMARY, "type", "veth", "peer", "name", "uplink",
           "netns", s)
        sh("ip", "-n", s, "addr", "add", f"{PRIMARY_GATEWAY}/24", "dev", "uplink")
        sh("ip", "-n", s, "link", "set", "uplink", "up")
        self.write_sysctl("ipv4/conf/uplink/rp_filter", "1", server=True)
        sh("ip", "-n", s, "addr", "add", f"{REMOTE}/32", "dev", "lo")
        # No duplicate address detection on the primary: its link-local address must not turn
        # from tentative to valid between two snapshots of a test.
        self.write_sysctl(f"ipv6/conf/{PRIMARY}/accept_dad", "0")
        sh("ip", "-n", g, "addr", "add", PRIMARY_CIDR, "dev", PRIMARY)
        sh("ip", "-n", g, "link", "set", PRIMARY, "up")
        sh("ip", "-n", g, "route", "add", "default", "via", PRIMARY_GATEWAY, "dev", PRIMARY)
        for sec in self.secondaries:
            sh("ip", "-n", g, "link", "add", sec.name, "type", "veth", "peer", "name", sec.peer,
               "netns", s)
            sh("ip", "-n", s, "addr", "add", f"{sec.gateway}/24", "dev", sec.peer)
            sh("ip", "-n", s, "link", "set", sec.peer, "up")
            [link] = self.ip_json("link", "show", "dev", sec.name)
            sec.ifindex, sec.mac = int(link["ifindex"]), str(link["address"])
        self._fake_root()
        if self.python_log is not None:
            self.python = str(counting_python(self.tmp / "python", self.python, self.python_log))
        self.write_config()
        if any(sec.served for sec in self.secondaries):
            self._start_dnsmasq()

    def _fake_root(self) -> None:
        root = self.root
        for directory in ("etc/default", "run", "sys/class/net", "sys/devices/system/cpu",
                          "sys/bus/virtio/drivers/virtio_net"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "proc").symlink_to("/proc")
        (root / "sys/devices/system/cpu/online").write_text("0-1\n")
        if self.client is None:
            (root / "usr").symlink_to("/usr")
        else:
            (root / "usr/sbin").mkdir(parents=True)
            real = which(self.client)
            if real is None:
                raise LabError(f"{self.client} not installed")
            (root / "usr/sbin" / self.client).symlink_to(real)
        links = [(PRIMARY, 4, 0)] + [(sec.name, sec.slot, i + 1)
                                     for i, sec in enumerate(self.secondaries)]
        for name, slot, number in links:
            [link] = self.ip_json("link", "show", "dev", name)
            device = f"devices/pci0000:00/0000:00:{slot:02x}.0/virtio{number}"
            (root / "sys" / device).mkdir(parents=True)
            (root / "sys" / device / "driver").symlink_to("../../../../bus/virtio/drivers/virtio_net")
            base = root / "sys/class/net" / name
            base.mkdir()
            (base / "device").symlink_to(f"../../../{device}")
            (base / "ifindex").write_text(f"{link['ifindex']}\n")
            (base / "address").write_text(f"{link['address']}\n")
            (base / "type").write_text("1\n")
            (base / "operstate").write_text("up\n" if name == PRIMARY else "down\n")

    def _start_dnsmasq(self) -> None:
        argv = ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--port=0",
                "--bind-interfaces", "--log-facility=-", "--log-dhcp",
                f"--dhcp-leasefile={self.tmp / 'dnsmasq.leases'}",
                f"--pid-file={self.tmp / 'dnsmasq.pid'}",
                f"--dhcp-option-force=12,{self.hostname}"]
        if not self.ping_check:
            argv.append("--no-ping")
        if self.renew_after is not None:
            argv.append(f"--dhcp-option=option:T1,{self.renew_after}")
        for sec in self.secondaries:
            if not sec.served:
                continue
            tag = f"net{sec.subnet}"
            argv += [f"--interface={sec.peer}",
                     f"--dhcp-range=set:{tag},{sec.pool[0]},{sec.pool[-1]},255.255.255.0,1h",
                     f"--dhcp-option=tag:{tag},option:router,{sec.gateway}",
                     f"--dhcp-option=tag:{tag},option:dns-server,{','.join(sec.dns)}",
                     f"--dhcp-option=tag:{tag},option:domain-search,{sec.search}"]
        with open(self.dnsmasq_log, "wb") as log:
            self.dnsmasq = subprocess.Popen(["ip", "netns", "exec", self.server, *argv],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env={"PATH": TOOL_PATH, "LC_ALL": "C"})
        pidfile = self.tmp / "dnsmasq.pid"
        deadline = time.monotonic() + 10
        while not (pidfile.exists() and pidfile.read_text().strip()):
            if self.dnsmasq.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"dnsmasq did not start (exit {self.dnsmasq.poll()}): "
                               f"{self.dnsmasq_log.read_text(errors='replace').strip()}")
            time.sleep(0.02)

    # -- teardown ------------------------------------------------------------------------------
    def cleanup(self) -> List[str]:
        """Undo everything, whatever state the test left; returns what could not be undone."""
        problems: List[str] = []
        for ns in self._made:  # guest first: its DHCP clients may still talk to dnsmasq
            problems += kill_namespace(ns)
        if self.dnsmasq is not None:
            if self.dnsmasq.poll() is None:
                self.dnsmasq.terminate()
            try:
                self.dnsmasq.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
                self.dnsmasq.wait(timeout=5)
        for ns in reversed(self._made):
            problems += delete_namespace(ns)
        self._made = []
        with contextlib.suppress(FileNotFoundError):
            self.marker.unlink()
        for directory in DHCPCD_DIRS:
            for sec in self.secondaries:
                for path in Path(directory).glob(f"{sec.name}*"):
                    with contextlib.suppress(OSError):
                        path.unlink()
        return problems

    # -- running things in the namespaces ------------------------------------------------------
    def exec(self, *argv: str, server: bool = False, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.server if server else self.guest, *argv,
                  check=check, timeout=timeout)

    @property
    def env(self) -> Dict[str, str]:
        """What udev and systemd give a handler (PATH, LC_ALL), plus this checkout."""
        return {"PATH": TOOL_PATH, "LC_ALL": "C", "PYTHONPATH": str(REPO)}

    def gandi_argv(self, *args: str) -> List[str]:
        return ["ip", "netns", "exec", self.guest, self.python, "-m", "gandi_vm",
                "--root", str(self.root), *args]

    def gandi(self, *args: str, timeout: float = 180) -> Run:
        """Run the real program in the guest namespace; a traceback is a bug whatever the exit."""
        argv = self.gandi_argv(*args)
        start = time.monotonic()
        done = subprocess.run(argv, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout,
                              check=False)
        run = Run(argv, done.returncode, done.stdout, done.stderr, time.monotonic() - start)
        if "Traceback" in run.stderr:
            raise AssertionError(str(run))
        return run

    def unplug(self, name: str) -> None:
        """What a hot-unplug does: the interface leaves the kernel (with its addresses and
        routes, not the rules that name them) and sysfs."""
        sh("ip", "-n", self.guest, "link", "del", name)
        base = self.root / "sys/class/net" / name
        shutil.rmtree(os.path.realpath(base / "device"))
        shutil.rmtree(base)

    def write_config(self, **settings: object) -> None:
        """/etc/default/gandi under the root: CONFIG_* keys, as given."""
        text = "".join(f"{key}={value}\n" for key, value in settings.items())
        (self.root / "etc/default/gandi").write_text("# written by tests/integration\n" + text)

    def write_sysctl(self, path: str, value: str, server: bool = False) -> None:
        self.exec("sh", "-c", 'printf "%s\\n" "$2" > "/proc/sys/net/$1"', "sh", path, value,
                  server=server)

    # -- facts, from inside the guest namespace -----------------------------------------------
    def ip_json(self, *args: str, server: bool = False) -> List[Dict]:
        """`ip -j ARGS` in a namespace; an absent table is an empty list."""
        ns = self.server if server else self.guest
        done = sh("ip", "-n", ns, "-j", *args, check=False)
        if done.returncode != 0:
            if "does not exist" in done.stderr:
                return []
            raise LabError(f"ip -n {ns} -j {' '.join(args)}: {done.stderr.strip()}")
        return json.loads(done.stdout) if done.stdout.strip() else []

    def rules(self, priority: Optional[int] = None) -> List[Dict]:
        return self.ip_json("-4", "rule", "show", *(["priority", str(priority)] if priority else []))

    def routes(self, table: object = "main") -> List[Dict]:
        return self.ip_json("-4", "route", "show", "table", str(table))

    def default_routes(self) -> List[Dict]:
        return self.ip_json("-4", "route", "show", "default", "table", "main")

    def addresses(self, name: str) -> List[str]:
        """Global IPv4 addresses of an interface, address/prefixlen."""
        return [f"{a['local']}/{a['prefixlen']}"
                for link in self.ip_json("-4", "addr", "show", "dev", name)
                for a in link.get("addr_info", []) if a.get("scope") == "global"]

    def operstate(self, name: str) -> str:
        [link] = self.ip_json("link", "show", "dev", name)
        return str(link["operstate"])

    def snapshot(self) -> Dict[str, object]:
        """Every link state, address, route (all tables) and rule of the guest namespace, without
        what the kernel changes on its own (a veth gets its qdisc at its first `up`)."""
        return {
            "links": [{k: link.get(k) for k in ("ifname", "flags", "operstate", "mtu", "address")}
                      for link in self.ip_json("link", "show")],
            "addresses": [(link["ifname"], [{k: a.get(k) for k in ("family", "local", "prefixlen",
                                                                   "scope", "tentative")}
                                            for a in link.get("addr_info", [])])
                          for link in self.ip_json("addr", "show")],
            "routes4": self.ip_json("-4", "route", "show", "table", "all"),
            "routes6": self.ip_json("-6", "route", "show", "table", "all"),
            "rules4": self.ip_json("-4", "rule", "show"),
            "rules6": self.ip_json("-6", "rule", "show"),
        }

    def sysctls(self, name: str) -> Dict[str, str]:
        """The per-interface sysctls attach may change, read inside the guest namespace."""
        paths = [f"/proc/sys/net/{template.format(name)}" for template in SYSCTLS]
        script = 'for f; do printf "%s=%s\\n" "$f" "$(cat "$f" 2>/dev/null)"; done'
        out = self.exec("sh", "-c", script, "sh", *paths).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    def processes(self) -> List[Dict[str, object]]:
        """Live processes of the guest namespace (gandi-vm leaves only its DHCP client there)."""
        return [{"pid": pid, "comm": _comm(pid), "argv": _cmdline(pid)}
                for pid in namespace_pids(self.guest)]

    def clients(self, name: Optional[str] = None) -> List[Dict[str, object]]:
        """DHCP client processes in the guest (for one interface when named)."""
        return [p for p in self.processes() if p["comm"] in CLIENTS
                and (name is None or any(name in str(a) for a in p["argv"]))]  # type: ignore[union-attr]

    def route_get(self, destination: str, source: str) -> Dict:
        [route] = self.ip_json("-4", "route", "get", destination, "from", source)
        return route

    def reach(self, source: str, destination: str, port: int = 9, timeout: float = 3) -> str:
        """Open a TCP connection from `source` in the guest: 'answered' when the other end
        replied (a refusal is an answer: nothing listens there), else why not."""
        code = ("import socket, sys\n"
                "s = socket.socket()\n"
                f"s.settimeout({timeout})\n"
                f"s.bind(({source!r}, 0))\n"
                "try:\n"
                f"    s.connect(({destination!r}, {port}))\n"
                "except ConnectionRefusedError:\n"
                "    print('answered')\n"
                "except OSError as e:\n"
                "    print(type(e).__name__, e)\n"
                "else:\n"
                "    print('answered')\n")
        return self.exec(self.plain_python, "-c", code, timeout=timeout + 10).stdout.strip()

    # -- gandi's files ---------------------------------------------------------------------------
    def record_path(self, name: str) -> Path:
        return self.root / STATE_DIR / f"{name}.yaml"

    def record(self, name: str) -> Optional[Dict]:
        import yaml

        try:
            data = yaml.safe_load(self.record_path(name).read_text())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def state_files(self) -> List[str]:
        """What gandi keeps under the root's /run/gandi/iface (the lease script is regenerated
        on each attach and may stay)."""
        directory = self.root / STATE_DIR
        return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []

    def python_runs(self) -> List[Tuple[int, List[str]]]:
        """Each run of the interpreter that ended (count_python): its exit status and arguments."""
        assert self.python_log is not None, "Lab(count_python=True)"
        runs = []
        for record in _read_text(self.python_log).split("\0\n")[:-1]:
            status, *argv = record.split("\0")
            runs.append((int(status), argv))
        return runs

    def diagnostics(self) -> str:
        """What to print when an assertion fails: dnsmasq's log, the guest's state."""
        parts = [f"dnsmasq log:\n{_tail(self.dnsmasq_log)}"]
        for args in (("addr", "show"), ("rule", "show"), ("route", "show", "table", "all")):
            parts.append(f"ip {' '.join(args)}:\n" + sh("ip", "-n", self.guest, *args,
                                                        check=False).stdout)
        parts.append(f"processes: {self.processes()}")
        parts.append(f"state files: {self.state_files()}")
        return "\n".join(parts)


def counting_python(directory: Path, python: str, log: Path) -> Path:
    """An interpreter (directory/bin/python3) that appends, as each of its runs ends, the run's
    exit status and arguments to `log` (NUL-separated, then NUL and a newline). The real one runs
    with it as argv[0], so sys.executable names it, and through it what starts sys.executable:
    gandi-vm's lease script. Its pyvenv.cfg gives the real one's home and site packages."""
    real = os.path.realpath(python)
    (directory / "bin").mkdir(parents=True)
    (directory / "pyvenv.cfg").write_text(f"home = {os.path.dirname(real)}\n"
                                          "include-system-site-packages = true\n")
    wrapper = directory / "bin" / "python3"
    wrapper.write_text("#!/bin/bash\n"
                       f'(exec -a "$0" {shlex.quote(real)} "$@")\n'
                       "status=$?\n"
                       f"{{ printf '%s\\0' \"$status\" \"$@\"; echo; }} >> {shlex.quote(str(log))}\n"
                       'exit "$status"\n')
    wrapper.chmod(0o755)
    return wrapper


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


@contextlib.contextmanager
def lab(tmp: Path, **options: object) -> Iterator[Lab]:
    """A started Lab, cleaned up whatever happens (for scripts; tests use the fixture)."""
    made = Lab(tmp, **options)  # type: ignore[arg-type]
    with made:
        yield made
