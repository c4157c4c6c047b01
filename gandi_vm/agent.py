"""The resident agent: one interpreter start for all the units that need gandi-vm.

A Python interpreter start costs 1 to 4 s under emulation, paid by every boot service and every
hotplug event that goes to gandi-vm. This process pays it once: systemd starts it on the first
request (gandi-agent.socket, a FIFO only root may write), it imports the handlers' modules, and
then forks a copy of itself per request, already started and imported, which runs the command as
`gandi-vm ARGS` would (`cli.main`) and exits. A fork is milliseconds; the copy starts from this
process's clean state, so requests share nothing and run side by side.

The work stays the requesting unit's: the request's processes join the cgroup of the unit's
process (so `systemctl stop` ends what they left, such as a DHCP client, a restart of the agent
does not end them, and the unit's resources are counted there), its output is the unit's journal
(the client prints it), and its exit status is the unit's. The client, systemd/unit-gate, is a
shell script: where the FIFO is missing (the socket disabled, an old systemd) it execs gandi-vm as
before.

A request is one line, written in one write(2) (atomic on a FIFO):
    v1 NONCE PID ARG...
PID is the client's, whose reply FIFO is RUN/gandi/agent/PID.reply (it made it, and holds it
open); NONCE, from the kernel's random UUID, marks the last line, `NONCE exit STATUS`, which no
output of the command can forge. Only the units' commands are accepted (`REQUESTS`), each word
a plain token: the FIFO is root's, but a malformed line is still one journal line here, never a
traceback nor a command.
"""

from __future__ import annotations

import os
import signal
import stat
import sys

from gandi_vm import log

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

# The commands the units send (systemd/unit-gate): their words, then how many names follow.
REQUESTS: Dict[Tuple[str, ...], int] = {
    ("disk", "attach"): 1, ("disk", "detach"): 1,
    ("iface", "attach"): 1, ("iface", "detach"): 1,
    ("mount-all",): 0, ("config", "apply"): 0,
}
MAX_LINE = 4096  # PIPE_BUF: a longer line could not have been written atomically
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")  # kernel names, as the gate passes
_NONCE_CHARS = frozenset("0123456789abcdef-")
SD_LISTEN_FDS_START = 3


class BadRequest(ValueError):
    """A request line that is not one the units send (the message says why, in one line)."""


class Request:
    """One parsed request line."""

    __slots__ = ("nonce", "pid", "argv")

    def __init__(self, nonce: str, pid: int, argv: List[str]):
        self.nonce, self.pid, self.argv = nonce, pid, argv


def parse(line: bytes) -> Request:
    """The request in one line (without its newline), or BadRequest."""
    from gandi_vm import sysfs

    if len(line) >= MAX_LINE:
        raise BadRequest(f"request of {len(line)} bytes, longer than {MAX_LINE}")
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise BadRequest(f"request {sysfs.quoted(line.decode('latin-1'), 80)}: not ASCII") from None
    shown = sysfs.quoted(" ".join(words), 80)
    if len(words) < 4 or words[0] != "v1":
        raise BadRequest(f"request {shown}: not `v1 NONCE PID ARG...`")
    nonce, pid, argv = words[1], words[2], words[3:]
    if not 8 <= len(nonce) <= 64 or not set(nonce) <= _NONCE_CHARS:
        raise BadRequest(f"request {shown}: bad nonce")
    if not pid.isdigit() or not pid.isascii() or len(pid) > 10 or int(pid) < 2:
        raise BadRequest(f"request {shown}: bad client pid")
    for count in range(len(argv), 0, -1):
        names = REQUESTS.get(tuple(argv[:count]))
        if names is not None:
            break
    else:
        raise BadRequest(f"request {shown}: not a command the units send")
    if len(argv) - count != names or not all(w and set(w) <= _NAME_CHARS for w in argv[count:]):
        raise BadRequest(f"request {shown}: expects {names} kernel name(s) after the command")
    return Request(nonce, int(pid), argv)


def reply_path(root: str, pid: int) -> str:
    return os.path.join(root, "run/gandi/agent", f"{pid}.reply")


def listen_fd(environ: Dict[str, str]) -> Optional[int]:
    """The FIFO systemd passed (sd_listen_fds(3)): one descriptor, for this very process."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or environ.get("LISTEN_FDS") != "1":
        return None
    return SD_LISTEN_FDS_START


# The standard modules gandi_vm imports where it uses them (start-up cost of a process of its
# own, see gandi_vm.cli); here they are loaded once, and every worker finds them loaded.
_LAZY_STDLIB = ("json", "ipaddress", "subprocess", "tempfile", "threading", "shlex",
                "fnmatch", "difflib", "fcntl", "shutil", "signal", "zlib", "importlib", "socket",
                "traceback")


# What only an instance's first boot uses (the platform's archive and configuration, an OpenStack
# drive; with them dataclasses, typing, tarfile, hashlib): the worker that needs them imports them,
# the agent of every other boot does not.
_FIRST_BOOT = frozenset({"configdrive", "provision", "openstack"})


def preload() -> None:
    """Import the modules of gandi_vm and its plugins, and what they import lazily: once here,
    instead of in each worker (each millisecond here is tens under emulation)."""
    import importlib

    import gandi_vm
    from gandi_vm import plugins

    for package in (gandi_vm, plugins):
        # The package's files, not pkgutil (whose imports cost more than they save here).
        for entry in sorted(os.listdir(os.path.dirname(package.__file__))):
            name, extension = os.path.splitext(entry)
            if extension == ".py" and not name.startswith("__") and name not in _FIRST_BOOT:
                importlib.import_module(f"{package.__name__}.{name}")  # not __main__: it runs
    for name in _LAZY_STDLIB:
        importlib.import_module(name)


def serve(fd: int, root: str = "/", run: Optional[Callable[[Sequence[str]], int]] = None) -> None:
    """Read requests from the FIFO on fd until end of file (never, from systemd, which holds it
    open too) and start a worker for each."""
    if run is None:
        from gandi_vm import cli

        run = cli.main
    signal.signal(signal.SIGCHLD, _reap)
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        if len(pending) >= MAX_LINE:  # no newline in sight: not a request, and never will be
            log.warning("agent: dropped %d bytes without a newline", len(pending))
            pending = b""
        for line in lines:
            if line:
                _start(line, root, run)


def _reap(signum: int, frame: object) -> None:
    """Collect the supervisors that ended (each wrote its client's answer itself)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _start(line: bytes, root: str, run: Callable[[Sequence[str]], int]) -> None:
    try:
        request = parse(line)
    except BadRequest as e:
        log.warning("agent: %s", e)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:  # the supervisor: it answers the client whatever becomes of the worker
        status = 1
        try:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            status = _supervise(request, root, run)
        except BaseException as e:  # nothing may escape a forked copy of the agent
            log.error("agent: request %s: %s: %s", " ".join(request.argv), type(e).__name__, e)
        finally:
            os._exit(status)


def _supervise(request: Request, root: str, run: Callable[[Sequence[str]], int]) -> int:
    path = reply_path(root, request.pid)
    try:
        # Non-blocking: the client opened its FIFO before writing the request; if it is gone
        # there is no reader, and ENXIO says so at once instead of blocking forever.
        reply = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError as e:
        log.warning("agent: request %s: no reply FIFO %s: %s", " ".join(request.argv), path,
                    e.strerror)
        return 1
    if not stat.S_ISFIFO(os.fstat(reply).st_mode):
        os.close(reply)
        log.warning("agent: request %s: %s is not a FIFO", " ".join(request.argv), path)
        return 1
    try:
        os.set_blocking(reply, True)
        # From here on this process and the worker are the unit's: stopping or restarting the
        # agent (an upgrade) ends neither, and the unit's stop ends both.
        if not join_cgroup(root, request.pid):
            _answer(reply, path, request.nonce, 1)
            return 1
        worker = os.fork()
        if worker == 0:
            _work(request, reply, root, run)  # never returns
        status = os.waitstatus_to_exitcode(os.waitpid(worker, 0)[1])
        if status < 0:
            os.write(reply, f"<3>gandi-vm {' '.join(request.argv)}: killed by signal "
                            f"{-status}\n".encode())
            status = 1
        _answer(reply, path, request.nonce, status)
        return 0
    except OSError as e:  # the client went away (EPIPE): its unit was stopped meanwhile
        log.warning("agent: request %s: %s", " ".join(request.argv), e.strerror)
        return 1
    finally:
        os.close(reply)
        try:
            os.unlink(path)
        except OSError:
            pass


def _answer(reply: int, path: str, nonce: str, status: int) -> None:
    """The client's last line, its exit status; the FIFO is removed first: once answered, the
    client may be gone."""
    os.unlink(path)
    os.write(reply, f"\n{nonce} exit {status}\n".encode())


def _work(request: Request, reply: int, root: str, run: Callable[[Sequence[str]], int]) -> None:
    """The worker: answer on the client's FIFO, run the command, exit."""
    status = 1
    try:
        os.dup2(reply, 1)
        os.dup2(reply, 2)
        os.close(reply)
        # An agent rooted elsewhere (--root: the tests) runs its commands rooted there too.
        status = run(request.argv if root == "/" else ["--root", root, *request.argv])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException as e:
        log.error("gandi-vm %s: internal error: %s: %s", " ".join(request.argv),
                  type(e).__name__, e)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def join_cgroup(root: str, pid: int) -> bool:
    """Move this process into the cgroup of process pid (the unit that asked), as systemd
    tracks it: the unified hierarchy's, or name=systemd's on a hybrid one. False, with the
    reason logged, when the client is gone (its unit stopped: nothing to do for it)."""
    try:
        with open(os.path.join(root, f"proc/{pid}/cgroup"), "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        log.error("agent: the unit's process %d is gone: not run", pid)
        return False
    where: Dict[bytes, bytes] = {}
    for line in lines:
        hierarchy, _, rest = line.partition(b":")
        controllers, _, path = rest.partition(b":")
        if hierarchy == b"0" and not controllers or controllers == b"name=systemd":
            where[controllers] = path
    if b"name=systemd" in where:
        target = os.path.join(root, "sys/fs/cgroup/systemd")
        path = where[b"name=systemd"]
    elif b"" in where:
        target = os.path.join(root, "sys/fs/cgroup")
        path = where[b""]
    else:
        log.warning("agent: no systemd cgroup for process %d: running in the agent's", pid)
        return True
    procs = os.path.join(target, os.fsdecode(path).lstrip("/"), "cgroup.procs")
    if "/../" in f"/{procs}/":
        log.warning("agent: odd cgroup path %r for process %d: running in the agent's", path, pid)
        return True
    try:
        with open(procs, "w") as f:
            f.write(f"{os.getpid()}\n")
    except FileNotFoundError:
        log.error("agent: the unit of process %d is gone: not run", pid)
        return False
    except OSError as e:
        log.warning("agent: cannot join the cgroup of process %d (%s): running in the agent's",
                    pid, e.strerror)
    return True


def main(root: str) -> int:
    """`gandi-vm agent`: serve the FIFO systemd passed."""
    fd = listen_fd(dict(os.environ))
    if fd is None:
        log.error("agent: no FIFO from systemd (LISTEN_FDS): started by gandi-agent.socket only")
        return 2
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not the workers' to see
    preload()
    log.info("agent: ready")
    serve(fd, root)
    return 0
