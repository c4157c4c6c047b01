"""The historic config drive: a tar archive the platform writes 512 KiB into the swap disk.

The platform (gandi-hosting-vm2's bootstrap) stored a plain tar archive at 512 KiB (128 blocks of
4 KiB) of the whole swap disk, even when the swap itself is that disk's `gandiswap` partition. Its
`gandi/` directory holds `config` (JSON), `init` (an executable run once by provisioning) and
possibly kernel module tarballs. The historic package extracted it straight onto `/`; here the
archive is hostile input:

- every member is checked before anything is written: only regular files and directories under
  `gandi/`, no absolute path, no `.`/`..`/empty component, no link, device, fifo or sparse file, no
  setuid/setgid/sticky bit, no control character in a name, each member at most 16 MiB, 64 MiB and
  10,000 members in all (more is a tar bomb). One bad member refuses the whole archive, in one line
  naming it. tarfile's `data` filter is applied too where Python has it (3.12, 3.11.4+), so the
  checks are the same by hand on 3.9;
- it is extracted into a fresh root-only directory `/var/lib/gandi-vm/drive.XXXXXXXX` (0700),
  then presented at `/gandi` by an atomically replaced symlink (relative, so it also resolves under
  `--root`). A `/gandi` we did not make (a real directory, someone else's symlink) is never
  removed: the drive is then refused in one line;
- a missing (zeros, no tar header), empty or corrupt archive changes nothing, in one line;
- a kernel module tarball `gandi/modules-<release>.tar[.gz|.tgz|.xz|.bz2]` is installed only for
  the running kernel (`/proc/sys/kernel/osrelease`), only members under `lib/modules/<release>/`,
  through the same checks, then `depmod -a <release>`.

Reading the same archive again changes nothing (its SHA-256 is kept in the record).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import tarfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from gandi_vm import log
from gandi_vm.host import Host
from gandi_vm.sysfs import quoted


DRIVE_DIR = "/gandi"  # where provisioning reads `config` and `init`
STORE = "/var/lib/gandi-vm"
RECORD = f"{STORE}/drive.json"
_PREFIX = "drive."
_OURS = re.compile(r"var/lib/gandi-vm/drive\.[A-Za-z0-9_]{4,32}")

OFFSET = 512 * 1024
MAX_MEMBER = 16 * 1024 * 1024
MAX_TOTAL = 64 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_NAME = 1024
MAX_DEPTH = 16
SHOWN = 200  # characters of a member's name quoted in a message
# What the headers of MAX_MEMBERS members may take besides their data (long names, pax records),
# on top of MAX_TOTAL: past it, the archive is a bomb whatever its headers say.
_HEADER_ROOM = MAX_MEMBERS * 4 * 512 + 2 * 10240
MAX_ARCHIVE = MAX_TOTAL + _HEADER_ROOM
_WINDOW = 256 * 1024
DEPMOD_TIMEOUT = 300
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}")
_MODULES = re.compile(r"modules-(?P<release>.+?)\.(?:tar|tar\.gz|tgz|tar\.xz|tar\.bz2)")


class Refused(Exception):
    """The archive is refused whole; the message is one line naming the member and why."""


@dataclass(frozen=True)
class Result:
    """What reading the drive did; `line` is the one log line saying so."""

    state: str  # extracted, unchanged, missing, empty, corrupt, refused, failed
    line: str
    members: int = 0

    @property
    def applied(self) -> bool:
        return self.state in ("extracted", "unchanged")


# -- member checks (pure) ----------------------------------------------------------------------
def member_problem(name: str, kind: str, mode: int, size: int, top: str = "gandi") -> Optional[str]:
    """Why a member may not be extracted, or None. `kind` is "file", "dir" or what else it is
    ("symlink", "hard link", "device", "fifo", "sparse file", "unknown type N"); members must lie
    under `top/` (a path of one or more components) or be `top` itself (a directory)."""
    if kind not in ("file", "dir"):
        return f"is a {kind}"
    if not name:
        return "has an empty name"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        return f"has a name longer than {MAX_NAME} bytes"
    if not name.isprintable() or "\\" in name:
        return "has a control character, backslash or undecodable byte in its name"
    if name.startswith("/"):
        return "has an absolute path"
    parts = name.split("/")
    if kind == "dir" and len(parts) > 1 and parts[-1] == "":
        parts.pop()  # "gandi/" names a directory
    if ".." in parts:
        return "has a '..' component"
    if "." in parts or "" in parts:
        return "has an empty or '.' component"
    if len(parts) > MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} levels"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in parts):
        return "has a component longer than 255 bytes"
    top_parts = top.split("/")
    if parts[:len(top_parts)] != top_parts:
        return f"lies outside {top}/"
    if len(parts) == len(top_parts) and kind != "dir":
        return f"is {top} itself but not a directory"
    if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
        return "has a setuid, setgid or sticky bit"
    if mode < 0 or mode > 0o7777:
        return "has an invalid mode"
    if size < 0 or size > MAX_MEMBER:
        return f"is larger than {MAX_MEMBER // (1024 * 1024)} MiB"
    return None


def kind_of(info: tarfile.TarInfo) -> str:
    if info.issparse():
        return "sparse file"
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hard link"
    if info.ischr() or info.isblk():
        return "device"
    if info.isfifo():
        return "fifo"
    return f"member of unknown type {info.type!r}"


@dataclass(frozen=True)
class Member:
    name: str  # normalized: no trailing slash
    kind: str  # file or dir
    mode: int  # permission bits kept (0o755 at most)
    offset: int
    size: int


def validate(tar: tarfile.TarFile, top: str, dest: str) -> List[Member]:
    """Check every member of an open archive; raise Refused on the first bad one, or on a bomb.

    Members lie under `top`; when `top` has several components (`lib/modules/<release>`), its
    parents may come as plain directory members, which are passed over."""
    members: List[Member] = []
    kinds: Dict[str, str] = {}
    parents = {"/".join(top.split("/")[:n]) for n in range(1, len(top.split("/")))}
    total = 0
    seen = 0
    for info in tar:
        seen += 1
        if seen > MAX_MEMBERS:
            raise Refused(f"more than {MAX_MEMBERS} members (a tar bomb)")
        kind = kind_of(info)
        if kind == "dir" and info.name.rstrip("/") in parents and not (
                info.mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX)):
            continue
        why = member_problem(info.name, kind, info.mode, info.size, top)
        if why is None and hasattr(tarfile, "data_filter"):
            try:
                tarfile.data_filter(info, dest)
            except tarfile.FilterError as e:
                why = f"refused by tarfile's data filter ({type(e).__name__})"
        if why:
            raise Refused(f"member {quoted(info.name, SHOWN)} {why}")
        name = info.name.rstrip("/")
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if kinds.setdefault(parent, "dir") != "dir":
                raise Refused(f"member {quoted(info.name, SHOWN)} lies inside the file "
                              f"{quoted(parent, SHOWN)}")
        previous = kinds.get(name)
        if previous is not None and (previous != "dir" or kind != "dir"):
            raise Refused(f"member {quoted(info.name, SHOWN)} appears twice")
        kinds[name] = kind
        total += info.size if kind == "file" else 0
        if total > MAX_TOTAL:
            raise Refused(f"members larger than {MAX_TOTAL // (1024 * 1024)} MiB in all "
                          f"(a tar bomb), at {quoted(info.name, SHOWN)}")
        members.append(Member(name, kind, (info.mode & 0o755) if kind == "file" else 0o755,
                              info.offset_data, info.size if kind == "file" else 0))
    return members


# -- reading the device -----------------------------------------------------------------------
class _Window(io.RawIOBase):
    """A seekable, read-only view of `length` bytes of a device from `start`, read through the
    Host in windows; reading past `length` raises Refused (a bomb), never allocates it."""

    def __init__(self, read: Callable[[int, int], bytes], start: int, length: int):
        self._read = read
        self._start = start
        self._length = length
        self._position = 0
        self._cache: Tuple[int, bytes] = (-1, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position}.get(whence)
        if base is None:
            raise OSError("seek from the end is not supported")
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = len(buffer)
        if self._position + wanted > self._length:
            if self._position >= self._length:
                raise Refused(f"archive runs past the {self._length} bytes it may take (a tar "
                              "bomb, or it overlaps the swap area)")
            wanted = self._length - self._position
        data = b""
        while len(data) < wanted:
            at = self._position + len(data)
            base = at - at % _WINDOW
            if self._cache[0] != base:
                self._cache = (base, self._read(self._start + base, _WINDOW))
            chunk = self._cache[1][at - base:at - base + wanted - len(data)]
            if not chunk:
                break
            data += chunk
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


def _open_tar(fileobj) -> tarfile.TarFile:
    # errorlevel=2 would raise on any problem; only the reading matters, we never use extract*.
    return tarfile.open(fileobj=fileobj, mode="r:", encoding="utf-8", errors="surrogateescape")


def _corrupt(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:120]}" if str(e) else type(e).__name__


def read_archive(host: Host, whole_disk: str, end: Optional[int] = None) -> Result:
    """Read, check and present the archive at 512 KiB of /dev/WHOLE_DISK (see the module doc).
    Never raises for what the disk holds; the Result says what happened in one line.

    `end`: the byte of the disk the archive must end before (the start of a swap partition that
    was in use: what lies past it may be memory pages of an earlier boot)."""
    device = f"/dev/{whole_disk}"
    where = f"config drive on {device} at 512 KiB"

    def read(offset: int, size: int) -> bytes:
        return host.read_bytes(device, size, offset)

    try:
        head = read(OFFSET, 512)
    except OSError as e:
        return _said(host, Result("failed", f"{where}: cannot read: {e.strerror or e}"), error=True)
    if len(head) < 512 or head.count(0) == 512:
        return _said(host, Result("missing", f"{where}: no archive (zeros): nothing changed"))
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return _said(host, Result("missing", f"{where}: no tar header: nothing changed"))
    length = MAX_ARCHIVE if end is None else max(0, min(MAX_ARCHIVE, end - OFFSET))
    window = _Window(read, OFFSET, length)
    try:
        tar = _open_tar(window)
        members = validate(tar, "gandi", host.path(STORE))
        end = tar.offset
        # tarfile takes an invalid header after good members for the end of the archive: a
        # half-written or overwritten archive must not pass for a shorter one.
        window.seek(end)
        if window.read(512) != bytes(512):
            raise tarfile.ReadError(f"no end-of-archive marker at byte {end} (truncated or "
                                    "overwritten)")
    except Refused as e:
        return _said(host, Result("refused", f"{where}: refused: {e}; nothing changed"), error=True)
    except (tarfile.TarError, EOFError, ValueError, OSError, UnicodeError) as e:
        return _said(host, Result("corrupt", f"{where}: corrupt archive ({_corrupt(e)}): "
                                            "nothing changed"), error=True)
    if not members:
        return _said(host, Result("empty", f"{where}: empty archive: nothing changed"))
    digest = hashlib.sha256()
    window.seek(0)
    remaining = end
    while remaining > 0:
        chunk = window.read(min(remaining, _WINDOW))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return _present(host, where, members, lambda m: _member_data(window, m), digest.hexdigest())


def _member_data(window: _Window, member: Member) -> bytes:
    window.seek(member.offset)
    data = window.read(member.size)
    if len(data) != member.size:
        raise Refused(f"member {quoted(member.name, SHOWN)} is cut short by the end of the disk")
    return data


def _said(host: Host, result: Result, error: bool = False) -> Result:
    prefix = "(dry run) " if host.dry_run else ""
    log.log(log.WARNING if error else log.INFO, "%s%s", prefix, result.line)
    return result


# -- presenting it at /gandi --------------------------------------------------------------------
def ours(host: Host) -> Optional[str]:
    """The drive directory /gandi points to if we made /gandi (guest path), else None."""
    target = host.readlink(DRIVE_DIR)
    if target is None or not _OURS.fullmatch(target):
        return None
    return "/" + target


def _load_record(host: Host) -> Dict[str, str]:
    import json

    try:
        record = json.loads(host.read_text(RECORD))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(record, dict) or not all(isinstance(v, str) for v in record.values()):
        return {}
    return record


def _present(host: Host, where: str, members: List[Member], data: Callable[[Member], bytes],
             digest: str) -> Result:
    count = len(members)
    previous = ours(host)
    if host.exists(DRIVE_DIR) and previous is None:
        return _said(host, Result("refused", f"{where}: {DRIVE_DIR} exists and was not made by "
                                             f"gandi-vm: left as it is, nothing changed"),
                     error=True)
    record = _load_record(host)
    if (previous and record.get("sha256") == digest and record.get("dir") == previous
            and host.is_dir(previous)):
        return _said(host, Result("unchanged", f"{where}: same archive as {DRIVE_DIR} "
                                               f"({count} members): nothing changed", count))
    if host.dry_run:
        return _said(host, Result("extracted", f"{where}: would extract {count} members to "
                                               f"{STORE}/{_PREFIX}XXXXXXXX and point {DRIVE_DIR} "
                                               "at it", count))
    import shutil
    import tempfile

    _makedirs(host, STORE)
    real = tempfile.mkdtemp(prefix=_PREFIX, dir=host.path(STORE))
    os.chmod(real, 0o700)
    fresh = host.guest(real) or ""
    try:
        _extract(real, members, data, strip=1)  # gandi/config -> /gandi/config
        modules = _modules(host, real)
        _write_record(host, {"dir": fresh, "sha256": digest})
        host.symlink(DRIVE_DIR, fresh.lstrip("/"))
    except (Refused, OSError) as e:
        shutil.rmtree(real, ignore_errors=True)
        why = str(e) if isinstance(e, Refused) else f"{e.strerror or e} ({e.filename or ''})"
        return _said(host, Result("failed", f"{where}: not extracted: {why}; nothing changed"),
                     error=True)
    if previous and previous != fresh and host.realpath(previous) == previous:
        shutil.rmtree(host.path(previous), ignore_errors=True)
    line = f"{where}: {count} members extracted to {fresh}, presented at {DRIVE_DIR}"
    if modules:
        line += f"; {modules}"
    return _said(host, Result("extracted", line, count))


def _write_record(host: Host, record: Dict[str, str]) -> None:
    import json

    host.write_text(RECORD, json.dumps(record, sort_keys=True) + "\n", mode=0o600)


def _makedirs(host: Host, path: str) -> None:
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        host.mkdir("/" + "/".join(parts[:depth]))


def _extract(real_top: str, members: List[Member], data: Callable[[Member], bytes],
             strip: int = 0) -> int:
    """Write checked members under real_top (a fresh directory: nothing there can be a link,
    and members are only files and directories). Returns the number of files written."""
    files = 0
    for member in members:
        parts = member.name.split("/")[strip:]
        if not parts:
            continue
        path = os.path.join(real_top, *parts)
        _real_dirs(real_top, parts[:-1])
        if member.kind == "dir":
            _real_dirs(real_top, parts)
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data(member))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(path, member.mode)
        files += 1
    return files


def _real_dirs(real_top: str, parts: List[str]) -> None:
    path = real_top
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if os.path.islink(path) or not os.path.isdir(path):
                raise Refused(f"{quoted(part, SHOWN)} is not a directory") from None


# -- kernel modules -----------------------------------------------------------------------------
def running_release(host: Host) -> Optional[str]:
    """The running kernel's release (`uname -r`), read without a process; None if unusable."""
    release = host.read_attr("/proc/sys/kernel/osrelease")
    return release if release and _RELEASE.fullmatch(release) else None


def module_tarball_release(name: str) -> Optional[str]:
    """`modules-6.1.0-18-amd64.tar.gz` -> `6.1.0-18-amd64`; None for any other file name."""
    match = _MODULES.fullmatch(name)
    return match.group("release") if match else None


def _modules(host: Host, real_drive: str) -> str:
    """Install the module tarball of the running kernel found in the extracted drive."""
    release = running_release(host)
    directory = real_drive
    if release is None or os.path.islink(directory) or not os.path.isdir(directory):
        return ""
    wanted = [name for name in sorted(os.listdir(directory))
              if module_tarball_release(name) == release]
    if not wanted:
        return ""
    path = os.path.join(directory, wanted[0])
    if os.path.islink(path) or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        return install_modules(host, release, f.read())


def decompress(data: bytes, limit: int = MAX_ARCHIVE) -> bytes:
    """A gzip, xz or bzip2 stream (or plain data) decompressed, never past `limit` bytes."""
    import bz2
    import lzma
    import zlib

    if data[:2] == b"\x1f\x8b":
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif data[:6] == b"\xfd7zXZ\x00":
        decompressor = lzma.LZMADecompressor()
    elif data[:3] == b"BZh":
        decompressor = bz2.BZ2Decompressor()
    else:
        if len(data) > limit:
            raise Refused(f"larger than {limit // (1024 * 1024)} MiB")
        return data
    out = bytearray()
    try:
        out += decompressor.decompress(data, max_length=limit + 1)
    except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as e:
        raise Refused(f"cannot be decompressed ({_corrupt(e)})") from None
    if len(out) > limit:
        raise Refused(f"decompresses to more than {limit // (1024 * 1024)} MiB (a bomb)")
    return bytes(out)


def install_modules(host: Host, release: str, data: bytes) -> str:
    """Install a module tarball's `lib/modules/<release>/` members, then `depmod -a`. Returns the
    one-line summary (refusals included: nothing of a refused tarball is installed)."""
    import shutil
    import tempfile

    what = f"modules for {release}"
    top = f"lib/modules/{release}"
    try:
        plain = decompress(data)
        tar = _open_tar(io.BytesIO(plain))
        members = validate(tar, top, host.path("/"))
        if plain[tar.offset:tar.offset + 512] != bytes(512):
            raise tarfile.ReadError(f"no end-of-archive marker at byte {tar.offset}")
    except Refused as e:
        log.warning("%s: refused: %s; nothing installed", what, e)
        return f"{what} refused"
    except (tarfile.TarError, EOFError, ValueError, OSError, UnicodeError) as e:
        log.warning("%s: corrupt tarball (%s); nothing installed", what, _corrupt(e))
        return f"{what} corrupt"
    target = f"/lib/modules/{release}"
    resolved = host.realpath(target)
    if resolved is None or not host.is_dir(resolved):
        log.warning("%s: %s is not a directory of this system; nothing installed", what, target)
        return f"{what} not installed"
    strip = len(top.split("/"))
    files = [m for m in members if m.kind == "file" and len(m.name.split("/")) > strip]
    if host.dry_run:
        log.info("(dry run) %s: would install %d files into %s, then depmod -a %s",
                 what, len(files), target, release)
        return f"{what}: {len(files)} files planned"
    # Extract beside the target (same filesystem), then move each file in with a rename.
    staging = tempfile.mkdtemp(prefix=".gandi-modules.", dir=host.path(resolved))
    try:
        _extract(staging, members, lambda m: plain[m.offset:m.offset + m.size], strip=strip)
        installed = _move_in(staging, host.path(resolved))
    except (Refused, OSError) as e:
        log.warning("%s: not installed: %s", what, e)
        return f"{what} not installed"
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = host.run(["depmod", "-a", release], timeout=DEPMOD_TIMEOUT)
    if not result.ok:
        log.warning("%s: depmod -a %s failed: %s", what, release, result.why())
    return f"{what}: {installed} files installed"


def _move_in(staging: str, target: str) -> int:
    """Move staged files into target: directories are made (never through a symlink), a file
    replaces one of the same name atomically (rename), identical files are left alone."""
    moved = 0
    for directory, _dirs, files in os.walk(staging):
        relative = os.path.relpath(directory, staging)
        destination = target if relative == "." else os.path.join(target, relative)
        if os.path.islink(destination) or (os.path.exists(destination)
                                           and not os.path.isdir(destination)):
            raise Refused(f"{destination} is not a directory")
        os.makedirs(destination, mode=0o755, exist_ok=True)
        for name in files:
            source, final = os.path.join(directory, name), os.path.join(destination, name)
            if os.path.islink(final) or (os.path.lexists(final) and not os.path.isfile(final)):
                raise Refused(f"{final} exists and is not a regular file")
            if os.path.isfile(final) and _same(source, final):
                continue
            os.replace(source, final)
            moved += 1
    return moved


def _same(a: str, b: str) -> bool:
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()
