"""Boot the end-to-end test guest under QEMU and drive it.

QMP (a unix socket) drives the machine: hot-plugging and removing disks, growing them. The guest
agent (qemu-ga over virtio-serial) runs commands inside and returns their output, so the host reads
real outcomes: the mount table, sysfs, systemd's view of our units. Used by tests/vm, the demo and
bench/hotplug_latency.py.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

QEMU = "qemu-system-x86_64"
# The kernel command line after root=DEVICE (Guest's `root`: /dev/vda for the image's whole-disk
# filesystem, /dev/vda1 for a partitioned root disk).
CMDLINE = "rw console=ttyS0 panic=-1 systemd.show_status=0 mitigations=off"
# Seconds from QEMU's start to `systemctl is-system-running` = running for the test image under
# TCG on an idle lab machine. Every wait below is written for such a machine; a guest that boots
# slower (other guests running, a slower CPU) runs every later step slower alike, so its waits
# stretch by the same factor, up to MAX_SLOWNESS (beyond that, waiting longer hides a real hang).
IDLE_BOOT = 30.0
MAX_SLOWNESS = 8.0


class GuestError(RuntimeError):
    pass


def build_image(capture_log: bool = False, variant: str = "") -> Path:
    """The guest image for this tree, built by vm/build-image (or its cached copy): the demo, the
    vm suite and the benchmarks boot the same one. Its progress goes to our stderr unless
    `capture_log`, then the log's end is in the GuestError. `variant` "bare" or "cloud-init" is
    the same image without gandi-vm, or that plus cloud-init (bench/boot_cost.py compares them)."""
    done = subprocess.run([str(Path(__file__).resolve().parent / "build-image"), *filter(None, [variant])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE if capture_log else None,
                          text=True, timeout=1800, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        log = "\n".join((done.stderr or "").strip().split("\n")[-20:])
        raise GuestError(f"vm/build-image failed (exit {done.returncode})" + (f":\n{log}" if log else ""))
    return Path(done.stdout.strip().split("\n")[-1])


@dataclass
class Run:
    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"{' '.join(self.argv)}: exit {self.returncode}\n{self.stdout}{self.stderr}"


class _JsonSocket:
    """Newline-delimited JSON over a unix socket (both QMP and qemu-ga speak it)."""

    def __init__(self, path: Path, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise GuestError(f"cannot connect to {path}") from None
                time.sleep(0.1)
        # Our own buffer: a timeout in a makefile() reader leaves it unusable for good.
        self.buffer = b""

    def send(self, message: Dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self, timeout: float) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            line, newline, rest = self.buffer.partition(b"\n")
            if newline:
                self.buffer = rest
                line = line.replace(b"\xff", b"").strip()  # qemu-ga's sync delimiter
                if line:
                    return json.loads(line)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout(f"no reply within {timeout}s")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise GuestError("connection closed")
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


class QMP:
    def __init__(self, path: Path):
        self.channel = _JsonSocket(path, timeout=30)
        self.events: List[Dict[str, Any]] = []
        self.channel.receive(timeout=30)  # greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        message: Dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.channel.send(message)
        while True:
            reply = self.channel.receive(timeout=60)
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise GuestError(f"QMP {command}: {reply['error'].get('desc')}")
            elif "return" in reply:
                return reply["return"]

    def wait_event(self, name: str, timeout: float, **data: Any) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["event"] == name and all(event.get("data", {}).get(k) == v
                                                  for k, v in data.items()):
                    self.events.remove(event)
                    return event
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"no QMP event {name} {data} within {timeout}s")
            try:
                reply = self.channel.receive(timeout=left)
            except socket.timeout:
                continue
            if "event" in reply:
                self.events.append(reply)


class Agent:
    """qemu-guest-agent: guest-exec with captured output."""

    def __init__(self, path: Path):
        self.channel = _JsonSocket(path, timeout=30)
        self._id = 0

    def sync(self, timeout: float) -> None:
        """Resynchronize after a (re)connect: stale replies are skipped up to our id."""
        self._id += 1
        self.channel.sock.sendall(b"\xff")
        self.channel.send({"execute": "guest-sync-delimited", "arguments": {"id": self._id}})
        while self.channel.receive(timeout=timeout).get("return") != self._id:
            pass

    def call(self, command: str, timeout: float = 30, **arguments: Any) -> Any:
        message: Dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.channel.send(message)
        reply = self.channel.receive(timeout=timeout)
        if "error" in reply:
            raise GuestError(f"guest agent {command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def exec(self, argv: Sequence[str], timeout: float) -> Run:
        pid = self.call("guest-exec", path=argv[0], arg=list(argv[1:]), **{"capture-output": True})["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status.get("exited"):
                out, err = (base64.b64decode(status.get(key, "")).decode(errors="replace")
                            for key in ("out-data", "err-data"))
                return Run(argv, status.get("exitcode", -1), out, err)
            if time.monotonic() > deadline:
                raise GuestError(f"{' '.join(argv)}: still running after {timeout}s")
            time.sleep(0.02)


@functools.lru_cache(maxsize=None)
def kvm_usable(kernel: Path) -> bool:
    """Whether KVM really runs a guest here: boot the kernel with no root and expect its panic.

    On some hosts /dev/kvm exists but QEMU aborts (an MSR assertion with -cpu host) or the guest
    hangs; only a real boot tells. Under KVM the panic comes within seconds, so a probe that is
    still running after 20 s has hung. Asked once per process; GANDI_VM_ACCEL=tcg|kvm skips it."""
    forced = os.environ.get("GANDI_VM_ACCEL")
    if forced:
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        done = subprocess.run(
            [QEMU, "-accel", "kvm", "-cpu", "host", "-m", "256M", "-display", "none",
             "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"],
            capture_output=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return False
    return b"Kernel panic" in done.stdout


def make_disk(path: Path, fstype: str, label: str = "", size_mb: int = 64) -> Path:
    """A raw disk image made on the host (ext4, xfs or swap), as a customer would bring one."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    tool = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"],
            "swap": ["mkswap", "-q"]}[fstype]
    subprocess.run(tool + (["-L", label] if label else []) + [str(path)], check=True,
                   capture_output=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return path


FORWARDED_PORT = 7777
DHCP_HOSTNAME = "vm-from-dhcp"  # what the first NIC's DHCP server tells the guest its name is


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Guest:
    """One throwaway VM: root disk in snapshot mode, room to hot-plug disks, vCPUs and memory.

    boot_disks are attached before boot (virtio, serial bootN: /dev/disk/by-id/virtio-bootN) and
    written in place. With persistent=True the root disk is a qcow2 overlay of the image in the
    guest's working directory instead of a snapshot, so that what the guest wrote survives
    reboot() (a clean power-off, then a boot of the same disks); the image itself is never
    written either way. kernel_args are appended to the kernel command line.

    The root disk is the image's rootfs.raw (ext4 on the whole disk, root=/dev/vda) unless
    root_disk names another raw image, such as disks.gpt_root_image()'s, booted with
    root=`root` (/dev/vda1 for that one). root_size (bytes) gives the root disk a larger virtual
    size than its image: a qcow2 overlay of that size in the working directory, as a platform
    hands out a system disk bigger than the filesystem on it. resize_root() grows it while the
    guest runs (QMP block_resize)."""

    def __init__(self, image: Path, boot_disks: Sequence[Path] = (), persistent: bool = False,
                 kernel_args: str = "", root_disk: Optional[Path] = None, root: str = "/dev/vda",
                 root_size: Optional[int] = None):
        self.image = image
        self.kernel_args = kernel_args  # appended to CMDLINE (boot-time tracing, for a bench)
        self.root_disk = root_disk or image / "rootfs.raw"
        self.root = root
        if root_size is not None and root_size < self.root_disk.stat().st_size:
            raise ValueError(f"root_size {root_size} is smaller than {self.root_disk}")
        self.root_size = root_size
        self.boot_disks = list(boot_disks)
        self.persistent = persistent
        self.workdir = Path(tempfile.mkdtemp(prefix="gandi-vm-"))
        self.boots = 0  # start() calls so far; each boot's console goes to its own file
        self.console = self.workdir / "console.log"
        self.qemu_log = self.workdir / "qemu.log"
        self.process: Optional[subprocess.Popen] = None
        self.accel = "kvm" if kvm_usable(image / "vmlinuz") else "tcg"
        self.slowness = 1.0  # measured by start(): how much slower than IDLE_BOOT this guest booted
        self._disks: Dict[str, str] = {}  # device id -> node name
        # The first NIC's user-mode network forwards this host port to the guest's FORWARDED_PORT,
        # so a test can reach the guest through that NIC (the agent goes through virtio-serial).
        self.forwarded_port = _free_port()

    def command(self) -> List[str]:
        argv = [QEMU, "-machine", "pc", "-accel", self.accel, "-cpu",
                "host" if self.accel == "kvm" else "qemu64",
                "-smp", "1,maxcpus=4", "-m", "512M,slots=4,maxmem=2G",
                "-display", "none", "-monitor", "none", "-no-reboot",
                "-serial", f"file:{self.console}",
                "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
                "-chardev", f"socket,path={self.workdir / 'qga.sock'},server=on,wait=off,id=qga0",
                "-device", "virtio-serial", "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
                "-append", f"root={self.root} {CMDLINE} {self.kernel_args}".strip(),
                "-drive", self._root_drive(),
                "-device", "virtio-blk-pci,drive=root",
                "-netdev", f"user,id=net0,hostname={DHCP_HOSTNAME},"
                f"hostfwd=tcp:127.0.0.1:{self.forwarded_port}-:{FORWARDED_PORT}",
                "-device", "virtio-net-pci,netdev=net0"]
        for index, disk in enumerate(self.boot_disks):
            argv += ["-drive", f"file={disk},format=raw,if=none,id=boot{index}",
                     "-device", f"virtio-blk-pci,drive=boot{index},serial=boot{index}"]
        return argv

    def _root_drive(self) -> str:
        """The root drive, whose BlockBackend is `root` (block_resize's device): the image in
        snapshot mode, or an overlay of it in the working directory when the guest is persistent
        or its root disk larger than the image (the image is never written either way)."""
        if not self.persistent and self.root_size is None:
            return f"file={self.root_disk},format=raw,if=none,id=root,snapshot=on"
        overlay = self.workdir / "root.qcow2"
        if not overlay.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                            str(self.root_disk), str(overlay)]
                           + ([str(self.root_size)] if self.root_size is not None else []),
                           check=True, capture_output=True)
        return f"file={overlay},format=qcow2,if=none,id=root"

    def __enter__(self) -> "Guest":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 300) -> float:
        """Boot; returns the seconds until the system was running (or degraded), and sets
        `slowness` from them."""
        started = time.monotonic()
        self.boots += 1
        if self.boots > 1:  # a reboot: the previous boot's console and sockets are done with
            self.console = self.workdir / f"console-{self.boots}.log"
            for channel in (self.qmp.channel, self.agent.channel):
                channel.close()
            for sock in ("qmp.sock", "qga.sock"):
                (self.workdir / sock).unlink(missing_ok=True)
            self._disks.clear()
        # QEMU's own messages go to a file: an unread pipe could fill up and stall it.
        with open(self.qemu_log, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)
        self.qmp = QMP(self.workdir / "qmp.sock")
        self.agent = Agent(self.workdir / "qga.sock")
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                raise GuestError(self.exit_report())
            try:
                self.agent.sync(timeout=2)
                break
            except (GuestError, socket.timeout, OSError):
                if time.monotonic() > deadline:
                    raise GuestError(f"guest agent silent after {timeout}s\n{self.console_tail()}") from None
        self.agent_seconds = time.monotonic() - started  # until the agent answered
        # Boot-time units (gandi-mount among them) finish before any scenario starts.
        self.state = self.run("systemctl is-system-running --wait", timeout=timeout).stdout.strip()
        booted = time.monotonic() - started
        self.slowness = min(MAX_SLOWNESS, max(1.0, booted / IDLE_BOOT))
        return booted

    def reboot(self, timeout: float = 300) -> float:
        """A clean power-off from inside, then a boot of the same disks (the root overlay of a
        persistent guest included; hot-plugged disks are gone); returns the new boot's seconds
        to running, like start(), and measures the slowness again."""
        if not self.persistent:
            raise GuestError("reboot() of a guest whose root disk is a snapshot would lose it")
        self.shutdown()
        return self.start(timeout)

    def scaled(self, seconds: float) -> float:
        """A wait written for an idle machine, stretched by this guest's measured slowness."""
        return seconds * self.slowness

    def run(self, script: str, timeout: float = 120) -> Run:
        """Run a shell snippet of the test's own (never data from a device) inside the guest."""
        return self.agent.exec(["/bin/sh", "-c", script], timeout=timeout)

    def check(self, script: str, timeout: float = 120) -> str:
        done = self.run(script, timeout)
        if done.returncode != 0:
            raise GuestError(str(done))
        return done.stdout

    def poll(self, script: str, timeout: float, since: Optional[float] = None) -> Optional[float]:
        """Run the snippet until it succeeds: the seconds from `since` (a time.monotonic(), by
        default now), or None once `timeout` seconds (on an idle machine: scaled()) have passed.
        One poll is one guest-agent round trip (65-85 ms), which bounds the resolution of any
        figure measured this way."""
        since = time.monotonic() if since is None else since
        limit = self.scaled(timeout)
        while True:
            if self.run(script, timeout=30).returncode == 0:
                return time.monotonic() - since
            if time.monotonic() - since > limit:
                return None

    def read_file(self, path: str) -> bytes:
        """A guest file's bytes (through base64: the agent's output is decoded as text)."""
        return base64.b64decode(self.check(f"base64 -w0 -- '{path}'"))

    def boot_id(self) -> str:
        return self.check("cat /proc/sys/kernel/random/boot_id").strip()

    def unit_seconds(self, unit: str) -> Optional[float]:
        """How long a oneshot unit's main process ran this boot (ExecMainStart to ExecMainExit,
        systemd's monotonic clock); None if it did not run, or has not ended."""
        shown = self.check(f"systemctl show -p ExecMainStartTimestampMonotonic "
                           f"-p ExecMainExitTimestampMonotonic {unit}")
        times = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        start = int(times.get("ExecMainStartTimestampMonotonic") or 0)
        end = int(times.get("ExecMainExitTimestampMonotonic") or 0)
        return (end - start) / 1e6 if start and end >= start else None

    def boot_analysis(self) -> Dict[str, Any]:
        """systemd's own account of this boot: `systemd-analyze time` (first line) and the
        gandi-* lines of `systemd-analyze blame` ({unit: "1.234s"})."""
        blame = self.run("systemd-analyze blame --no-pager | grep gandi-").stdout
        units = {}
        for line in blame.splitlines():
            figure, _, unit = line.strip().rpartition(" ")
            units[unit] = figure.strip()
        return {"systemd_analyze_time": self.run("systemd-analyze time | head -n 1").stdout.strip(),
                "units_blame": units}

    def wait_until(self, script: str, timeout: float) -> float:
        """Poll until the snippet succeeds; returns the seconds it took, raises after timeout
        (scaled)."""
        took = self.poll(script, timeout)
        if took is None:
            raise GuestError(f"still false after {self.scaled(timeout):.0f}s: {script}")
        return took

    def unit_outcome(self, unit: str, timeout: float,
                     since: Optional[float] = None) -> Tuple[str, str, Optional[float]]:
        """Wait for a oneshot unit's own verdict (active or failed) rather than for its effect:
        however long the host's load makes the unit take, its end is what tells. Returns its
        ActiveState and Result, and the seconds from `since` to the verdict (None: still none
        after `timeout`, scaled; the states are then the last seen)."""
        show = f"systemctl show -p ActiveState -p Result {unit}"
        took = self.poll(f"{show} | grep -qxE 'ActiveState=(active|failed)'", timeout, since)
        shown = dict(line.split("=", 1) for line in self.check(show).splitlines() if "=" in line)
        return shown.get("ActiveState", ""), shown.get("Result", ""), took

    # -- hotplug -----------------------------------------------------------------------------
    def add_disk(self, image: Path, device_id: str) -> None:
        """Hot-plug a raw image as a virtio disk whose serial is its id (/dev/disk/by-id/virtio-ID)."""
        node = f"node-{device_id}"
        self.qmp.execute("blockdev-add", driver="raw", **{"node-name": node},
                         file={"driver": "file", "filename": str(image)})
        self.qmp.execute("device_add", driver="virtio-blk-pci", drive=node, id=device_id,
                         serial=device_id)
        self._disks[device_id] = node

    def remove_disk(self, device_id: str, timeout: float = 60) -> None:
        self.qmp.execute("device_del", id=device_id)
        self.qmp.wait_event("DEVICE_DELETED", self.scaled(timeout), device=device_id)
        self.qmp.execute("blockdev-del", **{"node-name": self._disks.pop(device_id)})

    def resize_disk(self, device_id: str, size: int) -> None:
        self.qmp.execute("block_resize", **{"node-name": self._disks[device_id]}, size=size)

    def resize_root(self, size: int) -> None:
        """Grow the root disk to `size` bytes while the guest runs (block_resize of the `root`
        BlockBackend: the snapshot's or the overlay's top node; the image stays as it is). The
        guest's kernel sees the new capacity and sends a change uevent with RESIZE=1."""
        self.qmp.execute("block_resize", device="root", size=size)

    def disk_sectors(self, name: str = "vda") -> int:
        """The guest kernel's size of a block device, in 512-byte sectors (sysfs)."""
        return int(self.check(f"cat /sys/class/block/{name}/size"))

    def add_nic(self, device_id: str, mac: str, net: str = "10.0.3.0/24",
                slot: Optional[int] = None) -> None:
        """Hot-plug a virtio NIC on a user-mode network of its own (own DHCP server on net); in
        PCI slot `slot` if given, which makes its predictable name ens<slot> known beforehand."""
        self.qmp.execute("netdev_add", type="user", id=f"netdev-{device_id}", net=net)
        self.qmp.execute("device_add", driver="virtio-net-pci", netdev=f"netdev-{device_id}",
                         id=device_id, mac=mac, **({} if slot is None else {"addr": hex(slot)}))

    def remove_nic(self, device_id: str, timeout: float = 60) -> None:
        self.qmp.execute("device_del", id=device_id)
        self.qmp.wait_event("DEVICE_DELETED", self.scaled(timeout), device=device_id)
        self.qmp.execute("netdev_del", id=f"netdev-{device_id}")

    def nic_name(self, mac: str, timeout: float = 30) -> str:
        """The guest's name for the interface with this MAC (ens5...), once it exists."""
        find = ("for i in /sys/class/net/*; do "
                f'[ "$(cat $i/address)" = "{mac.lower()}" ] && echo ${{i##*/}} && exit 0; done; exit 1')
        self.wait_until(find, timeout)
        return self.check(find).strip()

    def add_cpu(self, device_id: str) -> Dict[str, Any]:
        """Hot-plug a vCPU into the first free slot; returns the slot's props (socket-id...)."""
        free = [slot for slot in self.qmp.execute("query-hotpluggable-cpus")
                if "qom-path" not in slot]
        if not free:
            raise GuestError("no free vCPU slot (maxcpus reached)")
        slot = free[-1]  # the list runs from the highest id down; take the lowest free one
        self.qmp.execute("device_add", driver=slot["type"], id=device_id, **slot["props"])
        return slot["props"]

    def add_memory(self, device_id: str, size: int) -> None:
        """Hot-plug a pc-dimm of size bytes backed by a memory-backend-ram mem-ID."""
        self.qmp.execute("object-add", **{"qom-type": "memory-backend-ram"},
                         id=f"mem-{device_id}", size=size)
        self.qmp.execute("device_add", driver="pc-dimm", id=device_id, memdev=f"mem-{device_id}")

    def cpus(self) -> Dict[int, bool]:
        """The guest's logical CPUs (sysfs cpuN) and whether each is online."""
        out = self.check("cd /sys/devices/system/cpu && for c in cpu[0-9]*; do "
                         "echo ${c#cpu} $(cat $c/online 2>/dev/null || echo 1); done")
        return {int(n): state == "1" for n, state in (line.split() for line in out.splitlines())}

    def memory_blocks(self) -> Dict[int, str]:
        """The guest's memory blocks (sysfs memoryN) and their state (online, offline...)."""
        out = self.check("cd /sys/devices/system/memory && grep -H . memory[0-9]*/state")
        blocks = {}
        for line in out.splitlines():
            path, _, state = line.partition(":")
            blocks[int(path.split("/")[0][len("memory"):])] = state.strip()
        return blocks

    def kernel_name(self, device_id: str, timeout: float = 30) -> str:
        """The guest's name for a disk we plugged (vdb, vdc...), once udev has linked it."""
        link = f"/dev/disk/by-id/virtio-{device_id}"
        self.wait_until(f"test -e {link}", timeout)
        return self.check(f"basename $(readlink -f {link})").strip()

    # -- diagnostics -------------------------------------------------------------------------
    def console_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no console output)"

    def exit_report(self) -> str:
        """How QEMU ended, with its last messages; empty while it runs."""
        if self.process is None or self.process.poll() is None:
            return ""
        try:
            tail = self.qemu_log.read_text(errors="replace").strip().splitlines()[-20:]
        except OSError:
            tail = []
        return "\n".join([f"QEMU exited with status {self.process.returncode}"] + tail)

    def journal(self, lines: int = 80) -> str:
        if self.exit_report():
            return "(no journal: the guest is gone)"
        try:
            return self.run(f"journalctl -b --no-pager -n {lines} -u 'gandi-*'",
                            timeout=30).stdout
        except (GuestError, OSError) as e:
            return f"(journal unavailable: {e})"

    def shutdown(self, timeout: float = 120) -> float:
        """Power off from inside and wait for QEMU to exit (-no-reboot; timeout scaled); returns
        the seconds.

        Not qemu-ga's guest-shutdown: it runs `shutdown +0`, which needs D-Bus and logind, absent
        from this minimal guest. stop() is still needed afterwards to remove the working directory."""
        started = time.monotonic()
        try:
            self.run("systemctl --no-block poweroff", timeout=30)
        except (GuestError, OSError):
            pass  # the agent may be stopped before it reports the exit status
        try:
            self.process.wait(timeout=self.scaled(timeout))
        except subprocess.TimeoutExpired:
            raise GuestError(f"guest still running {self.scaled(timeout):.0f}s after the poweroff") from None
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.qmp.execute("quit")
            except (GuestError, OSError):
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
