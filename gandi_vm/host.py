"""The system boundary: every file, sysfs attribute and command goes through a Host.

A Host maps guest paths ("/srv/data", "/sys/class/block/vdb") onto a root directory, so the same
code runs on the real system (root "/"), on a sample tree (`--root`), and in pyfakefs unit tests.
With dry_run, nothing is changed: each action is printed as a plan line instead, while queries
(reading files, running probes such as blkid) still happen so that the plan is the real one.
"""

from __future__ import annotations

import errno
import os
import posixpath
import sys

from gandi_vm import log
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import List, Optional, Sequence, TextIO


# Commands run with a stable, parseable locale and a PATH that finds sbin tools even when we are
# started from a minimal environment (udev, systemd units, cron).
_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
}
# LVM's commands read their configuration from $LVM_SYSTEM_DIR when it is set: whoever chose
# another LVM configuration for us (a test confining LVM to its own loop device) keeps it.
if "LVM_SYSTEM_DIR" in os.environ:
    _ENV["LVM_SYSTEM_DIR"] = os.environ["LVM_SYSTEM_DIR"]


# What a script run with `lingering` may print before the rest is not kept (it is logged).
_LINGERING_OUTPUT = 1 << 20


class InvalidPath(OSError):
    """A guest path no file can have (a NUL byte): callers treat it as any unreadable file."""


class UnknownName(Exception):
    """A name on the command line that names nothing here (a device, an interface, a plugin):
    a usage error, which the command line reports in one line with exit status 2."""


def lines(text: str) -> List[str]:
    """The lines of a file as the kernel, blkid, sshd, ifupdown and the shell read them: split on
    "\\n" only. `str.splitlines()` also splits on \\r, \\v, \\f, \\x1c-\\x1e, \\x85 and U+2028/9,
    which would let a hostile value hide a line inside another (or split a label in two). A final
    newline ends the last line; it does not start an empty one."""
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    return parts


def lines_keepends(text: str) -> List[str]:
    """`lines()`, each keeping its "\\n", for edits that must give back every other byte as read."""
    parts = text.split("\n")
    kept = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        kept.append(parts[-1])
    return kept


class Result(Record):
    """Outcome of an external command; callers decide what a failure means."""

    argv: Sequence[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """The last telling line the command printed, to quote in a one-line error."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines()
                     if line.strip() and not line.strip().startswith(_BOILERPLATE)]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"


# Trailing advice lines that tools print after the actual cause (e2fsck, mount).
_BOILERPLATE = ("(i.e., without -a or -p options)", "dmesg(1) may have more information")


class Host:
    """Rooted access to the system, with an optional dry-run that prints instead of acting."""

    def __init__(self, root: str = "/", dry_run: bool = False, plan: Optional[TextIO] = None):
        self.root = os.path.abspath(root)
        self.dry_run = dry_run
        self._plan = plan
        self._planned_dirs: set = set()  # in dry-run, directories the plan already creates
        self.show_diffs = False  # in dry-run, print a unified diff of each file write_text plans

    # -- paths -------------------------------------------------------------------------------
    def path(self, guest_path: str) -> str:
        """The real path of an absolute guest path; lexically it can never climb above root.

        A path holding a NUL byte (from a hostile fstab, interfaces or sysctl file) names nothing
        the kernel could open: it is an OSError like any missing file, never a ValueError."""
        if "\0" in guest_path:
            raise InvalidPath(errno.EINVAL, "path contains a NUL byte", guest_path)
        if not guest_path.startswith("/"):
            raise ValueError(f"not an absolute path: {guest_path!r}")
        normal = posixpath.normpath(guest_path).lstrip("/")
        return os.path.join(self.root, normal) if normal else self.root

    def guest(self, real_path: str) -> Optional[str]:
        """The guest path of a real path, or None if it lies outside root."""
        real_path = os.path.abspath(real_path)
        if self.root == "/":
            return real_path
        if real_path == self.root:
            return "/"
        if real_path.startswith(self.root + "/"):
            return real_path[len(self.root):]
        return None

    def realpath(self, guest_path: str) -> Optional[str]:
        """Resolve symlinks; None when the result escapes root or the path is invalid."""
        try:
            return self.guest(os.path.realpath(self.path(guest_path)))
        except InvalidPath:
            return None

    # -- queries -----------------------------------------------------------------------------
    def exists(self, guest_path: str) -> bool:
        try:
            return os.path.lexists(self.path(guest_path))
        except InvalidPath:
            return False

    def is_file(self, guest_path: str) -> bool:
        """A regular file, not a symlink to one."""
        try:
            real = self.path(guest_path)
        except InvalidPath:
            return False
        return os.path.isfile(real) and not os.path.islink(real)

    def readlink(self, guest_path: str) -> Optional[str]:
        try:
            return os.readlink(self.path(guest_path))
        except OSError:
            return None

    def is_dir(self, guest_path: str) -> bool:
        """A real directory, not a symlink to one (a symlink may point anywhere)."""
        try:
            real = self.path(guest_path)
        except InvalidPath:
            return False
        return os.path.isdir(real) and not os.path.islink(real)

    def listdir(self, guest_path: str) -> List[str]:
        try:
            return sorted(os.listdir(self.path(guest_path)))
        except OSError:
            return []

    def read_text(self, guest_path: str) -> str:
        """A file's text exactly as its bytes: undecodable bytes as surrogates, and no newline
        translation (Python's default turns a lone \\r into \\n, a line break no reader sees)."""
        with open(self.path(guest_path), encoding="utf-8", errors="surrogateescape",
                  newline="") as f:
            return f.read()

    def read_bytes(self, guest_path: str, size: int, offset: int = 0) -> bytes:
        """Up to `size` bytes of a file or block device from `offset` (fewer at its end): what a
        device holds (a blank check, an archive at a fixed offset) is read, never written.
        Raises OSError like read_text."""
        with open(self.path(guest_path), "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            chunks = []
            while size > 0:
                chunk = f.read(size)
                if not chunk:
                    break
                chunks.append(chunk)
                size -= len(chunk)
            return b"".join(chunks)

    def statvfs(self, guest_path: str) -> os.statvfs_result:
        return os.statvfs(self.path(guest_path))

    def read_attr(self, guest_path: str) -> Optional[str]:
        """A sysfs-style one-line attribute, or None if absent or unreadable."""
        try:
            return self.read_text(guest_path).strip()
        except OSError:
            return None

    def run(self, argv: Sequence[str], timeout: float, changes: bool = True,
            input: Optional[str] = None, lingering: bool = False) -> Result:
        """Run a command without a shell. Commands that change the system are only planned in
        dry-run; queries (changes=False) always run. Never raises for the command's failure.

        `input` is the command's standard input (else /dev/null): data that must not appear on a
        command line, such as `chpasswd -e`'s password hashes. It is never logged nor planned.

        `lingering`: the command may leave a background process holding its output (a platform
        or user script starting a daemon). Its output is then collected through files, so the
        wait ends when the command exits, not when the last holder of a pipe does."""
        argv = [str(a) for a in argv]
        if changes and self.dry_run:
            self._say("run " + command_line(argv))
            return Result(argv, 0)
        log.debug("running %s", command_line(argv))
        import subprocess  # a handler that decides without running anything never loads it

        try:
            if lingering:
                return self._run_lingering(argv, timeout)
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL if input is None else None,
                input=input,
                capture_output=True,
                timeout=timeout,
                env=_ENV,
                text=True,
                errors="replace",
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Result(argv, 124, stderr=f"{argv[0]}: timed out after {timeout:g}s")
        except OSError as e:
            return Result(argv, 127, stderr=f"{argv[0]}: {e.strerror}")
        except ValueError:  # a NUL byte in an argument taken from hostile data
            return Result(argv, 127, stderr=f"{argv[0]}: an argument contains a NUL byte")
        return Result(argv, done.returncode, done.stdout, done.stderr)

    def _run_lingering(self, argv: List[str], timeout: float) -> Result:
        import subprocess
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            returncode = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        timeout=timeout, env=_ENV, check=False).returncode
            texts = []
            for f in (out, err):
                f.seek(0)
                texts.append(f.read(_LINGERING_OUTPUT).decode("utf-8", "replace"))
        return Result(argv, returncode, *texts)

    # -- actions -----------------------------------------------------------------------------
    def mkdir(self, guest_path: str, mode: int = 0o755) -> bool:
        """Create one directory owned by root; False if it already existed."""
        if self.dry_run:
            if self.exists(guest_path) or guest_path in self._planned_dirs:
                return False
            self._planned_dirs.add(guest_path)
            self._say(f"mkdir -m {mode:04o} {guest_path} (owner root:root)")
            return True
        real = self.path(guest_path)
        try:
            os.mkdir(real, mode)
        except FileExistsError:
            return False
        os.chmod(real, mode)  # the umask must not decide a mountpoint's mode
        if os.geteuid() == 0:
            os.chown(real, 0, 0)
        return True

    def rmdir(self, guest_path: str) -> bool:
        """Remove an empty directory; False (and nothing removed) if it is not empty or absent."""
        if self.dry_run:
            self._say(f"rmdir {guest_path}")
            return True
        try:
            os.rmdir(self.path(guest_path))
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST, errno.EBUSY):
                raise
            return False
        return True

    def write_text(self, guest_path: str, text: str, mode: int = 0o644) -> bool:
        """Atomically replace a file (temp file, fsync, rename); False if it already held text.

        An existing file keeps its mode and owner; `mode` applies to a new file."""
        real = self.path(guest_path)
        owner = None
        try:
            with open(real, encoding="utf-8", errors="surrogateescape", newline="") as f:
                if f.read() == text:
                    return False
                st = os.fstat(f.fileno())
                mode, owner = st.st_mode & 0o7777, (st.st_uid, st.st_gid)
        except OSError:
            pass
        if self.dry_run:
            self._say(f"write {guest_path}")
            if self.show_diffs:
                self._diff(guest_path, text)
            return True
        import tempfile  # only writers pay for it, not every hotplug handler's start-up

        directory = os.path.dirname(real)
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".gandi-")
        try:
            # surrogateescape: the bytes read_text could not decode go back out unchanged
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if owner is not None and os.geteuid() == 0:
                os.chown(tmp, *owner)
            os.replace(tmp, real)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return True

    def symlink(self, guest_path: str, target: str) -> bool:
        """Point a symlink at target, replacing what is there atomically; False if it already
        did. The target is written as given (an absolute target resolves inside the guest)."""
        if self.readlink(guest_path) == target:
            return False
        if self.dry_run:
            self._say(f"symlink {guest_path} -> {target}")
            return True
        real = self.path(guest_path)
        os.makedirs(os.path.dirname(real), mode=0o755, exist_ok=True)
        temporary = f"{real}.gandi-new"
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        os.symlink(target, temporary)
        os.replace(temporary, real)
        return True

    def copy(self, guest_path: str, to_guest_path: str) -> None:
        """Copy a file with its mode and times (backups; nothing is copied in a dry run)."""
        if self.dry_run:
            return
        import shutil

        destination = self.path(to_guest_path)
        os.makedirs(os.path.dirname(destination), mode=0o700, exist_ok=True)
        shutil.copy2(self.path(guest_path), destination)

    def write_attr(self, guest_path: str, value: str) -> bool:
        """Write a sysfs or /proc/sys attribute in place (a temp file and a rename mean nothing
        there); False if it already held the value. Raises OSError with the kernel's answer."""
        if self.read_attr(guest_path) == value:
            return False
        if self.dry_run:
            self._say(f"write {value} to {guest_path}")
            return True
        with open(self.path(guest_path), "w", encoding="ascii") as f:
            f.write(value)
        return True

    def remove(self, guest_path: str) -> bool:
        if self.dry_run:
            if self.exists(guest_path):
                self._say(f"remove {guest_path}")
                return True
            return False
        try:
            os.unlink(self.path(guest_path))
        except FileNotFoundError:
            return False
        return True

    def lock(self, name: str) -> Lock:
        """An exclusive lock under /run/gandi/lock, held until the `with` block ends.

        Overlapping events for one device (udev may queue add and change back to back, and the
        boot-time mount-all may race a coldplug unit) must not act at the same time."""
        return Lock(None if self.dry_run else self.path("/run/gandi/lock"), name)

    def _diff(self, guest_path: str, text: str) -> None:
        import difflib

        try:
            before = self.read_text(guest_path)
        except OSError:
            before = ""
        diff = difflib.unified_diff(before.splitlines(keepends=True), text.splitlines(keepends=True),
                                    f"a{guest_path}", f"b{guest_path}")
        out = self._plan or sys.stdout
        for line in diff:
            out.write(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
        out.flush()

    def _say(self, line: str) -> None:
        print("would " + line, file=self._plan or sys.stdout, flush=True)


class Lock:
    """Host.lock's context manager (a class: contextlib costs milliseconds at start-up)."""

    def __init__(self, directory: Optional[str], name: str):
        self.directory = directory  # None: a dry run takes no lock
        self.name = name
        self.fd: Optional[int] = None

    def __enter__(self) -> None:
        if self.directory is None:
            return
        import fcntl

        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        self.fd = os.open(os.path.join(self.directory, self.name + ".lock"),
                          os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def printable(text: str) -> str:
    """Hostile text (a label, a lease, a script's output) for a terminal or a log line: every
    character that is not printable (newline, escape sequence, C1 control, bidi override, U+2028,
    an undecodable byte's surrogate) shown as its Python escape, never acted on."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def command_line(argv: Sequence[str]) -> str:
    """Show a command readably in a plan, log or change line (display only, never executed)."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)
