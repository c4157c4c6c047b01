"""Console: a login getty on each console the hypervisor provides (CONFIG_CONSOLE).

The consoles are those the kernel writes to: /proc/consoles, else /sys/class/tty/console/active.
On systemd the getty is enabled the way `systemctl enable` does it, by a symlink in
getty.target.wants, so that it also works under --root where systemctl cannot run; without
systemd, /etc/inittab gets one getty line per console. Where /etc/securetty exists, the console
is listed there, or root could not log in on the one terminal left when the network is broken.
"""

from __future__ import annotations

import posixpath
import re

from gandi_vm import log
from gandi_vm.host import Host, lines
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, List, Optional

ORDER = 10
FLAG = "CONFIG_CONSOLE"


# Serial lines (ttyS), virtio and Xen consoles (hvc, xvc) and virtual terminals (ttyN). A name is
# written into a unit name and into inittab and securetty, so anything else is ignored.
_CONSOLE = re.compile(r"(ttyS|hvc|xvc|tty)[0-9]{1,3}")
_SERIAL = ("ttyS", "hvc", "xvc")

WANTS = "/etc/systemd/system/getty.target.wants"
UNIT_DIRS = ("/lib/systemd/system", "/usr/lib/systemd/system")
INITTAB = "/etc/inittab"
SECURETTY = "/etc/securetty"


def consoles(host: Host) -> List[str]:
    """The console names the kernel uses, checked, without duplicates, in the kernel's order."""
    names: List[str] = []
    try:
        names = [line.split()[0] for line in lines(host.read_text("/proc/consoles")) if line.split()]
    except OSError:
        pass
    if not names:
        names = (host.read_attr("/sys/class/tty/console/active") or "").split()
    found: List[str] = []
    for name in names:
        # tty0 means "the foreground virtual terminal", which no getty can own; tty1 is the one
        # shown at boot.
        if name == "tty0":
            name = "tty1"
        if _CONSOLE.fullmatch(name) and name not in found:
            found.append(name)
        elif name not in found:
            log.info("console: ignoring console %r (not a terminal we start a getty on)", name)
    return found


def is_serial(name: str) -> bool:
    return name.startswith(_SERIAL)


def has_systemd(host: Host) -> bool:
    # /run/systemd/system is systemd's own test for "booted with systemd"; under --root (nothing
    # booted there) the presence of the binary says which init the root will boot with.
    return any(host.exists(p) for p in ("/run/systemd/system", "/lib/systemd/systemd",
                                        "/usr/lib/systemd/systemd"))


def apply(ctx: Context) -> Outcome:
    names = consoles(ctx.host)
    if not names:
        return ctx.skip("no console found in /proc/consoles or /sys/class/tty/console/active")
    if has_systemd(ctx.host):
        missing = [name for name in names if not _enable_getty(ctx, name)]
        if len(missing) == len(names):
            return ctx.skip(f"no getty unit for {', '.join(missing)} under "
                            f"{' or '.join(UNIT_DIRS)}")
    else:
        if not ctx.host.is_file(INITTAB):
            return ctx.skip("neither systemd nor /etc/inittab: no known way to start a getty")
        problem = _edit(ctx, INITTAB, lambda text: _inittab(text, names))
        if problem is not None:
            return ctx.skip(problem)
    if ctx.host.is_file(SECURETTY):
        problem = _edit(ctx, SECURETTY, lambda text: _securetty(text, names))
        if problem is not None:
            # The gettys are enabled all the same; only root's login there may be refused.
            log.warning("console: %s", problem)
    return ctx.done()


def _enable_getty(ctx: Context, name: str) -> bool:
    """Link the getty template's instance into getty.target.wants; False without a template."""
    template = "serial-getty@.service" if is_serial(name) else "getty@.service"
    instance = template.replace("@", f"@{name}")
    link = f"{WANTS}/{instance}"
    # The owner masked the getty (a link to /dev/null) or enabled it already, maybe from another
    # unit directory: both stay as they are.
    for masked in (f"/etc/systemd/system/{instance}", f"/etc/systemd/system/{template}"):
        if ctx.host.readlink(masked) == "/dev/null":
            log.info("console: %s is masked; not enabling it", masked)
            return True
    current = ctx.host.readlink(link)
    if current is not None and posixpath.basename(current) == template:
        return True
    unit = _find_unit(ctx.host, template)
    if unit is None:
        log.warning("console: no %s under %s; no getty on %s", template, " or ".join(UNIT_DIRS), name)
        return False
    ctx.symlink(link, unit)
    return True


def _find_unit(host: Host, template: str) -> Optional[str]:
    # Where `systemctl enable` would point the link: the first unit directory holding the template.
    for directory in UNIT_DIRS:
        if host.exists(f"{directory}/{template}"):
            return f"{directory}/{template}"
    return None


def _edit(ctx: Context, path: str, change: Callable[[str], str]) -> Optional[str]:
    """Apply change(text) -> text to an owner's file; why not, when it cannot be done."""
    text = ctx.host.read_text(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Rewriting would change bytes we did not mean to touch.
        return f"{path} is not UTF-8 text; left as it is"
    ctx.write(path, change(text))
    return None


def _inittab(text: str, names: List[str]) -> str:
    """Append one getty line for each console that has none; every other line is kept."""
    ids = set()
    running = set()
    for line in lines(text):  # init reads lines up to "\n": a "\r" in a comment hides nothing
        fields = line.split(":", 3)
        if line.lstrip().startswith("#") or len(fields) < 4:
            continue
        ids.add(fields[0])
        if "getty" in fields[3]:
            running.update(fields[3].split())
    added = []
    for name in names:
        if name in running:
            continue
        number = 0
        while f"g{number}" in ids:
            number += 1
        ids.add(f"g{number}")
        added.append(f"g{number}:2345:respawn:/sbin/getty -L {name} 115200 vt100\n")
    if not added:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(added)


def _securetty(text: str, names: List[str]) -> str:
    # pam_securetty compares each line, less its "\n", with the terminal's name: exactly.
    listed = set(lines(text))
    missing = [name for name in names if name not in listed]
    if not missing:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(f"{name}\n" for name in missing)
