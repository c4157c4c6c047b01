"""/etc/default/gandi (or /etc/sysconfig/gandi) -> a frozen Settings object.

The file keeps the historic shell `KEY=VALUE` syntax, but it is parsed with shlex, never sourced:
nothing in it is executed or expanded. A bad value is reported as `file:line: ...` and that key
keeps its default, so a typo never stops a handler.
"""

from __future__ import annotations

import posixpath

from gandi_vm import host as hostlib, log, sysfs
from gandi_vm.host import Host
from gandi_vm.record import Record, replace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple


DEFAULT_PATHS = ("/etc/default/gandi", "/etc/sysconfig/gandi")
# No setting needs more; a longer line is garbage, refused before shlex spends time on it.
MAX_LINE = 4096


class Settings(Record, uncompared=("problems",)):
    allow_mount: bool = True
    mount_params: str = "rw,nosuid,nodev,noatime"
    disk_root: str = "/srv"
    hook_dir: str = "/etc/gandi/hooks"
    disk_devices: Tuple[str, ...] = ("vd*", "xvd*", "sd*", "nvme*", "hd*")
    fsck_timeout: int = 600
    network: bool = True
    nodhcp: Tuple[str, ...] = ()
    multiqueue: bool = True
    dhcp_timeout: int = 30
    dhcp_retries: int = 4
    cpu_hotplug: bool = True
    memory_hotplug: bool = True
    memory_zone: str = "online"
    # boot-time configuration plugins (gandi-vm config apply)
    console: bool = True
    hostname: bool = True
    nameserver: bool = True
    timezone: bool = True
    timezone_name: str = "Europe/Paris"
    sshd: bool = True
    sshmgmt: bool = False
    sshmgmt_key: str = "/etc/gandi/mgmt.pub"
    motd: bool = True
    sysctl: bool = True
    nosegneg: bool = True
    cron: bool = True
    fscheck: bool = True
    plugin_dir: str = "/etc/gandi/plugins.d"
    # the platform's swap disk, its config drive, and first-boot provisioning
    swap: bool = True
    swap_device: str = ""  # "" = found as the platform marks it (gandiswap, label swap, names)
    swap_priority: Optional[int] = None  # None = the kernel's default
    provision: bool = True
    provision_user: str = ""  # "" = root gets the OpenStack public keys
    init_timeout: int = 600
    # growing filesystems into the space their disk gained (grow.py)
    grow_root: bool = True
    grow_root_lv: bool = False
    grow_mountpoints: Tuple[str, ...] = ("/",)
    source: str = "(defaults)"
    # (logging level, "file:line: message") for each line that was not taken as written
    problems: Tuple[Tuple[int, str], ...] = ()


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected 1 or 0")


def _plain(value: str) -> bool:
    """No '..' component, and only printable characters: no control character, no U+2028, no
    undecodable byte (a lone surrogate), none of which a path we log, print or mount may hold."""
    return value.isprintable() and ".." not in value.split("/")


def _directory(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    if not _plain(value):
        raise ValueError("expected a plain absolute path (no '..', no control characters)")
    # normpath keeps a leading "//" (POSIX leaves it implementation-defined); mountinfo never
    # shows one, so "//srv/data" would never match the mount table (nor be unmounted).
    normal = "/" + posixpath.normpath(value).lstrip("/")
    if normal == "/":
        raise ValueError("refusing '/'")
    return normal


# Mount options reach mount(8) as one argv element; still, keep them to what option syntax allows.
_MOUNT_OPTION = r"[A-Za-z0-9_.:=+-]+"


def _mount_params(value: str) -> str:
    options = value.split(",")
    if not value or not all(sysfs.fullmatch(_MOUNT_OPTION, o) for o in options):
        raise ValueError("expected comma-separated mount options such as rw,nosuid,nodev")
    return value


_DEVICE_PATTERN = r"[A-Za-z0-9*?\[\]_-]+"


def _patterns(value: str) -> Tuple[str, ...]:
    patterns = tuple(value.split())
    if not all(sysfs.fullmatch(_DEVICE_PATTERN, p) for p in patterns):
        raise ValueError("expected space-separated kernel name patterns such as 'vd* sd*'")
    return patterns


# Interface names as the kernel and udev give them; patterns allowed ("eth*").
_IFACE_PATTERN = r"[A-Za-z0-9*?\[\]_.-]{1,15}"


def _interfaces(value: str) -> Tuple[str, ...]:
    names = tuple(value.split())
    if not all(sysfs.fullmatch(_IFACE_PATTERN, n) for n in names):
        raise ValueError("expected space-separated interface names or patterns such as 'eth1 ens*'")
    return names


def _bounded(value: str, low: int, high: int, what: str) -> int:
    try:
        number = sysfs.number(value)
    except sysfs.Garbage:
        number = -1
    if not low <= number <= high:
        raise ValueError(f"expected a number {what}between {low} and {high}")
    return number


def _count(value: str) -> int:
    return _bounded(value, 1, 100, "")


def _memory_zone(value: str) -> str:
    if value not in ("online", "online_movable", "online_kernel"):
        raise ValueError("expected online, online_movable or online_kernel")
    return value


_ZONE = r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*"


def _zone_name(value: str) -> str:
    """A name such as Europe/Paris; whether the zone exists is the timezone plugin's check."""
    if not sysfs.fullmatch(_ZONE, value) or len(value) > 100:
        raise ValueError("expected a zone name such as Europe/Paris")
    return value


def _file(value: str) -> str:
    if not value.startswith("/") or not _plain(value):
        raise ValueError("expected a plain absolute path")
    return value


def _seconds(value: str) -> int:
    return _bounded(value, 1, 86400, "of seconds ")


def _swap_device(value: str) -> str:
    """A kernel name (vdb, xvda2) or a /dev path (/dev/disk/by-label/swap); "" for automatic."""
    if value and not (sysfs.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:!-]{0,63}", value)
                      or (value.startswith("/dev/") and _plain(value))):
        raise ValueError("expected a kernel name such as vdb or a path under /dev")
    return value


def _swap_priority(value: str) -> Optional[int]:
    return None if value == "" else _bounded(value, 0, 32767, "")


def _mountpoints(value: str) -> Tuple[str, ...]:
    """Absolute paths, as the kernel shows them in mountinfo: normalized, "/" allowed."""
    paths = []
    for word in value.split():
        if not word.startswith("/") or not _plain(word):
            raise ValueError("expected space-separated absolute mountpoints such as '/ /var'")
        paths.append("/" + posixpath.normpath(word).lstrip("/"))
    return tuple(dict.fromkeys(paths))


# useradd's default NAME_REGEX on Debian, which other distros' rules also accept.
_USER = r"[a-z_][a-z0-9_-]{0,31}"


def _user_name(value: str) -> str:
    if value and not sysfs.fullmatch(_USER, value):
        raise ValueError("expected a user name such as admin (lower case, digits, _ and -)")
    return value


# key -> (Settings field, parser). Historic names are kept so existing files keep working.
KEYS: Dict[str, Tuple[str, Callable[[str], object]]] = {
    "CONFIG_ALLOW_MOUNT": ("allow_mount", _boolean),
    "CONFIG_MOUNT_PARAMS": ("mount_params", _mount_params),
    "CONFIG_DISK_ROOT": ("disk_root", _directory),
    "GANDI_HOOK_DIR": ("hook_dir", _directory),
    "CONFIG_DISK_DEVICES": ("disk_devices", _patterns),
    "CONFIG_FSCK_TIMEOUT": ("fsck_timeout", _seconds),
    "CONFIG_NETWORK": ("network", _boolean),
    "CONFIG_NODHCP": ("nodhcp", _interfaces),
    "CONFIG_MULTIQUEUE": ("multiqueue", _boolean),
    "CONFIG_DHCP_TIMEOUT": ("dhcp_timeout", _seconds),
    "CONFIG_DHCP_RETRIES": ("dhcp_retries", _count),
    "CONFIG_CPU_HOTPLUG": ("cpu_hotplug", _boolean),
    "CONFIG_MEMORY_HOTPLUG": ("memory_hotplug", _boolean),
    "CONFIG_MEMORY_ZONE": ("memory_zone", _memory_zone),
    "CONFIG_CONSOLE": ("console", _boolean),
    "CONFIG_HOSTNAME": ("hostname", _boolean),
    "CONFIG_NAMESERVER": ("nameserver", _boolean),
    "CONFIG_TIMEZONE": ("timezone", _boolean),
    "CONFIG_TIMEZONE_NAME": ("timezone_name", _zone_name),
    "CONFIG_SSHD": ("sshd", _boolean),
    "CONFIG_SSHMGMT": ("sshmgmt", _boolean),
    "CONFIG_SSHMGMT_KEY": ("sshmgmt_key", _file),
    "CONFIG_MOTD": ("motd", _boolean),
    "CONFIG_SYSCTL": ("sysctl", _boolean),
    "CONFIG_NOSEGNEG": ("nosegneg", _boolean),
    "CONFIG_CRON": ("cron", _boolean),
    "CONFIG_FSCHECK": ("fscheck", _boolean),
    "GANDI_PLUGIN_DIR": ("plugin_dir", _directory),
    "CONFIG_SWAP": ("swap", _boolean),
    "CONFIG_SWAP_DEVICE": ("swap_device", _swap_device),
    "CONFIG_SWAP_PRIORITY": ("swap_priority", _swap_priority),
    "CONFIG_PROVISION": ("provision", _boolean),
    "CONFIG_PROVISION_USER": ("provision_user", _user_name),
    "CONFIG_INIT_TIMEOUT": ("init_timeout", _seconds),
    "CONFIG_GROW_ROOT": ("grow_root", _boolean),
    "CONFIG_GROW_ROOT_LV": ("grow_root_lv", _boolean),
    "CONFIG_GROW_MOUNTPOINTS": ("grow_mountpoints", _mountpoints),
}
_KEY = r"[A-Za-z_][A-Za-z0-9_]*"


def parse(text: str, source: str) -> Settings:
    """Parse the file's text; problems are collected (and logged), never raised. Lines end at
    "\n" only, as the shell reads them, so that file:line is the line an editor shows and no
    other character (\r, \f, U+2028) can start a line of its own inside another."""
    values: Dict[str, object] = {}
    problems: List[Tuple[int, str]] = []

    def problem(lineno: int, message: str, level: int = log.ERROR) -> None:
        problems.append((level, f"{source}:{lineno}: {message}"))

    import shlex  # start-up cost: loaded when a file is read, not when a command is chosen

    for lineno, line in enumerate(hostlib.lines(text), 1):
        if len(line) > MAX_LINE:
            problem(lineno, f"line longer than {MAX_LINE} characters; ignored")
            continue
        try:
            words = shlex.split(_without_comment(line), posix=True)
        except ValueError as e:
            problem(lineno, f"cannot parse line ({e}); ignored")
            continue
        if words[:1] == ["export"]:
            words = words[1:]
        if not words:
            continue
        key, sep, value = words[0].partition("=")
        if len(words) != 1 or not sep or not sysfs.fullmatch(_KEY, key):
            problem(lineno, f"expected KEY=VALUE, got {sysfs.quoted(line.strip())}; ignored")
            continue
        if key not in KEYS:
            problem(lineno, f"unknown key {key[:40]}{'...' if len(key) > 40 else ''}; ignored",
                    log.WARNING)
            continue
        name, convert = KEYS[key]
        try:
            values[name] = convert(value)
        except ValueError as e:
            default = getattr(Settings(), name)
            shown = " ".join(default) if isinstance(default, tuple) else default
            if isinstance(default, bool):
                shown = int(default)
            problem(lineno, f"{key}={sysfs.quoted(value)}: {e}; using the default {shown!s}")
    return replace(Settings(), source=source, problems=tuple(problems), **values)


def _without_comment(line: str) -> str:
    """The line without its comment, as the shell finds one: a `#` that starts a word, outside
    quotes. (shlex's `comments=True` also cuts at a `#` inside a word: `KEY=a#b` would be `a`.)"""
    quote = ""
    escaped = False
    for i, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def load(host: Host, explicit: Optional[str] = None) -> Settings:
    """Read the explicit file (a path on the invoking system), else the first default file
    that exists under the host's root; defaults when there is none."""
    if explicit is not None:
        try:
            # read as Host.read_text reads the default files: bytes kept, no newline translation
            with open(explicit, encoding="utf-8", errors="surrogateescape", newline="") as f:
                settings = parse(f.read(), explicit)
        except OSError as e:
            settings = _unreadable(explicit, e)
    else:
        settings = Settings()
        for candidate in DEFAULT_PATHS:
            try:
                text = host.read_text(candidate)
            except FileNotFoundError:
                continue
            except OSError as e:
                settings = _unreadable(candidate, e)
                break
            settings = parse(text, candidate)
            break
    for level, message in settings.problems:
        log.log(level, "%s", message)
    return settings


def _unreadable(path: str, error: OSError) -> Settings:
    return replace(Settings(), problems=((log.ERROR, f"{path}: {error.strerror}; using defaults"),))
