"""Nosegneg: the nosegneg libc hwcap on 32-bit x86 Xen guests, and on no other (CONFIG_NOSEGNEG).

Xen truncates a 32-bit paravirtual guest's segment limits to guard its own memory at the top of
the address space, so glibc's default TLS accesses (a negative, wrapping offset from %gs) each
trap into the hypervisor. A glibc built with -mno-tls-direct-seg-refs lives in the "nosegneg"
hwcap directories, and the loader only uses them when /etc/ld.so.conf.d/libc6-xen.conf says
`hwcap 1 nosegneg`. Anywhere else (64-bit, KVM) that line only costs lookups, and a guest moved
off Xen must lose it.
"""

from __future__ import annotations

import os

from gandi_vm.host import lines, lines_keepends
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import List

ORDER = 80
FLAG = "CONFIG_NOSEGNEG"


CONF = "/etc/ld.so.conf.d/libc6-xen.conf"
LINE = "hwcap 1 nosegneg"
X86_32 = ("i386", "i486", "i586", "i686")
TIMEOUT = 60


def apply(ctx: Context) -> Outcome:
    # The running kernel's machine type, as `uname -m` prints it, without a process for it (the
    # same answer under --root: uname would describe the running kernel there too).
    machine = os.uname().machine
    xen = ctx.host.exists("/proc/xen") or ctx.host.read_attr("/sys/hypervisor/type") == "xen"
    current = ctx.host.read_text(CONF) if ctx.host.is_file(CONF) else None
    if machine in X86_32 and xen:
        if current is not None and _ours(current):
            return ctx.done()
        # An owner's lines in the file stay; ours is added.
        text = (current or "") + ("\n" if current and not current.endswith("\n") else "") + LINE + "\n"
        changed = ctx.write(CONF, text)
    else:
        if current is None or not _ours(current):
            return ctx.done()
        rest = _without_ours(current)
        if any(line.strip() and not line.lstrip().startswith("#") for line in rest):
            changed = ctx.write(CONF, "".join(rest))
        else:
            changed = ctx.remove(CONF)
    if changed:
        return _ldconfig(ctx)
    return ctx.done()


def _ours(text: str) -> bool:
    return any(_is_ours(line) for line in lines(text))


def _without_ours(text: str) -> List[str]:
    return [line for line in lines_keepends(text) if not _is_ours(line)]


def _is_ours(line: str) -> bool:
    """ldconfig splits lines on "\n" and words on blanks (space, tab) only: "hwcap\u20281" is
    one word to it, not our directive."""
    return [word for word in line.rstrip("\n").replace("\t", " ").split(" ") if word] == LINE.split()


def _ldconfig(ctx: Context) -> Outcome:
    # The loader reads ld.so.cache, not the configuration: rebuild it (the root's, under --root).
    argv = ["ldconfig"] if ctx.host.root == "/" else ["ldconfig", "-r", ctx.host.root]
    result = ctx.run(argv, timeout=TIMEOUT)
    if not result.ok:
        return ctx.fail(f"{' '.join(argv)}: {result.why()} ({CONF} was changed)")
    return ctx.done()
