"""Sysctl: apply the shipped /etc/gandi/sysctl.conf at boot (CONFIG_SYSCTL).

Where /etc/sysctl.d exists, the file is linked there as 90-gandi.conf: systemd-sysctl (or procps'
init script) then applies it at every boot, in its place among the distribution's and the owner's
files, and the owner can override or mask it the usual way. The running kernel gets it once, when
the link is made. Without /etc/sysctl.d, `sysctl -p` runs at boot, and only when a value differs.
"""

from __future__ import annotations

from gandi_vm import log
from gandi_vm.host import Host, lines
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Tuple

ORDER = 70
FLAG = "CONFIG_SYSCTL"


SHIPPED = "/etc/gandi/sysctl.conf"
DROPIN_DIR = "/etc/sysctl.d"
DROPIN = f"{DROPIN_DIR}/90-gandi.conf"
TIMEOUT = 30


def apply(ctx: Context) -> Outcome:
    host = ctx.host
    if not host.is_file(SHIPPED):
        return ctx.skip(f"no {SHIPPED} (the package ships it; was it removed?)")
    if host.is_dir(DROPIN_DIR):
        current = host.readlink(DROPIN)
        if host.exists(DROPIN) and current != SHIPPED:
            # A file of the owner's, or a link to /dev/null to mask ours: theirs wins.
            return ctx.skip(f"{DROPIN} is the owner's (not a link to {SHIPPED}); left as it is")
        if ctx.symlink(DROPIN, SHIPPED) and host.root == "/":
            # systemd-sysctl ran before us this boot: give the running kernel the values now.
            return _run_sysctl(ctx, linked=True)
        return ctx.done()
    if host.root != "/":
        return ctx.skip(f"no {DROPIN_DIR} under the root, and `sysctl -p` would only reach the running "
                        "kernel, not that root's")
    values, problems = parse(host.read_text(SHIPPED))
    for problem in problems:
        log.warning("sysctl: %s %s; line skipped", SHIPPED, problem)
    differing = differences(host, values)
    if not differing:
        return ctx.done()
    log.info("sysctl: %s differ from %s", ", ".join(differing), SHIPPED)
    return _run_sysctl(ctx, linked=False)


def _run_sysctl(ctx: Context, linked: bool) -> Outcome:
    argv = ["sysctl", "-q", "-p", ctx.host.path(SHIPPED)]
    result = ctx.run(argv, timeout=TIMEOUT)
    if result.returncode == 127:
        if linked:
            log.warning("sysctl: sysctl not found; %s applies from the next boot", SHIPPED)
            return ctx.done()
        return ctx.skip("sysctl not found (procps is not installed)")
    if not result.ok:
        return ctx.fail(f"sysctl -p {SHIPPED}: {result.why()}")
    return ctx.done()


# What procps' sysctl strips around keys and values (C isspace), and never more: a key ending in
# U+2028 is not the key without it.
_SPACE = " \t\n\v\f\r"


def parse(text: str) -> Tuple[Dict[str, str], List[str]]:
    """sysctl.conf(5) `key = value` lines -> ({key: value}, ["line N: why" for each line refused]);
    comments (# ;) and blank lines skipped, lines split on "\n" as sysctl reads them.

    A leading '-' (ignore a failure to set this key) is dropped from the key. A key that names no
    file under /proc/sys (a NUL or another control character, an empty, '.' or '..' component) is
    refused, so that comparing values never reads outside /proc/sys nor logs a raw control byte."""
    values: Dict[str, str] = {}
    problems: List[str] = []
    for number, line in enumerate(lines(text), 1):
        line = line.strip(_SPACE)
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        key = key.strip(_SPACE).lstrip("-")
        if not sep:
            problems.append(f"line {number}: no '=' in {line[:64]!r}")
        elif not key.isprintable() or any(part in ("", ".", "..")
                                          for part in proc_path(key)[len("/proc/sys/"):].split("/")):
            problems.append(f"line {number}: {key[:64]!r} is not a sysctl key")
        else:
            values[key] = value.strip(_SPACE)
    return values, problems


def proc_path(key: str) -> str:
    """The /proc/sys file of a key: dots separate components unless the first separator is a
    slash, in which case dots are literal (interface names such as eth0.100)."""
    slash, dot = key.find("/"), key.find(".")
    if slash != -1 and (dot == -1 or slash < dot):
        return "/proc/sys/" + key.strip("/")
    return "/proc/sys/" + key.translate(str.maketrans("./", "/."))


def differences(host: Host, values: Dict[str, str]) -> List[str]:
    """Keys whose running value differs, whitespace aside (kernel.printk reads "4\\t4\\t1\\t7")."""
    differing = []
    for key, value in values.items():
        current = host.read_attr(proc_path(key))
        if current is None:
            # Not in this kernel (IPv6 disabled, an older kernel): sysctl -p could not set it
            # either, and running it every boot for that would never settle.
            log.info("sysctl: %s does not exist in this kernel; not applied", key)
            continue
        if current.split() != value.split():
            differing.append(key)
    return differing
