"""Hostname: name the machine from DHCP or the kernel command line (CONFIG_HOSTNAME)."""

from __future__ import annotations

import re

from gandi_vm import log
from gandi_vm.host import lines

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Optional, Tuple

    from gandi_vm.plugins import Context, Outcome


ORDER = 20
FLAG = "CONFIG_HOSTNAME"

HOSTS_ADDRESS = "127.0.1.1"  # Debian's convention: the machine's own name, apart from localhost
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# A new /etc/hosts must still resolve localhost, or many programs slow down or fail.
_NEW_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def valid(name: str) -> Optional[str]:
    """The RFC 1123 host name, lowercased (one trailing dot dropped), or None: labels of 1 to 63
    letters, digits and '-' (not first, not last), 253 bytes in all, and a last label that is not
    all digits (RFC 1123 2.1), so that an address such as 10.0.0.5 never passes for a name."""
    if not isinstance(name, str) or not name.isascii():
        return None
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if labels[-1].isdigit() or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return name


def _from_cmdline(ctx: Context) -> Optional[str]:
    cmdline = ctx.host.read_attr("/proc/cmdline") or ""
    names = [word[len("hostname="):] for word in cmdline.split() if word.startswith("hostname=")]
    return names[-1] if names else None  # the kernel lets a later parameter override an earlier one


def find(ctx: Context) -> Optional[Tuple[object, str]]:
    """(raw value, where it came from), the primary interface's lease first."""
    names = ctx.lease_values("hostname")
    if names:
        return names[0], "the DHCP lease"
    name = _from_cmdline(ctx)
    return (name, "the kernel command line") if name is not None else None


def apply(ctx: Context) -> Outcome:
    from gandi_vm import provision

    # The name the instance's own configuration set at its first boot (gandi/config, config-2)
    # wins over the lease and the kernel command line, on every later boot too.
    provisioned = provision.instance_set(ctx.host, "hostname")
    if provisioned is not None:
        return ctx.skip(f"hostname {provisioned[:64]!r} was set by the instance's configuration "
                        f"({provision.RECORD}); left as it is")
    found = find(ctx)
    if found is None:
        return ctx.skip("no hostname from DHCP or the kernel command line")
    raw, source = found
    return set_name(ctx, raw, source)


def set_name(ctx: Context, raw: object, source: str) -> Outcome:
    """Name the machine `raw` (validated here): /etc/hostname, /etc/hosts, the running name."""
    # Values from the network are hostile: they are validated before any use, and a bad one is
    # quoted (truncated) in the message, never passed on.
    text = raw if isinstance(raw, str) else str(raw)
    name = valid(text)
    if name is None:
        return ctx.refuse(f"CONFIG_HOSTNAME: hostname {text[:64]!r} from {source} is not a valid "
                          "RFC 1123 host name; nothing changed")
    if "." not in name:
        name = _with_domain(ctx, name)
    # /etc/hostname holds the first label alone, which must be a host name by itself too.
    short = valid(name.split(".")[0])
    if short is None:
        return ctx.refuse(f"CONFIG_HOSTNAME: hostname {name[:64]!r} from {source}: its first "
                          "label is all digits, not a host name by itself; nothing changed")

    ctx.write("/etc/hostname", short + "\n")
    _write_hosts(ctx, name, short)
    # Only the real machine has a running hostname of ours to set; a --root tree does not.
    if ctx.host.root == "/" and ctx.host.read_attr("/proc/sys/kernel/hostname") != short:
        result = ctx.run(["hostname", short], timeout=10)
        if not result.ok:
            return ctx.fail(f"CONFIG_HOSTNAME: setting the running hostname failed: {result.why()}")
    return ctx.done()


def _with_domain(ctx: Context, short: str) -> str:
    for domain in ctx.lease_values("domain"):
        fqdn = valid(f"{short}.{domain}") if isinstance(domain, str) else None
        if fqdn is not None:
            return fqdn
        log.warning("hostname: domain %r from the DHCP lease is not a domain name, ignored",
                    str(domain)[:64])
    return short


def hosts_text(text: str, name: str, short: str) -> str:
    """/etc/hosts with our 127.0.1.1 line in place of the first one there, or appended; every
    other line, comment and blank kept as it was."""
    ours = f"{HOSTS_ADDRESS}\t{name} {short}" if name != short else f"{HOSTS_ADDRESS}\t{short}"
    rows = lines(text)
    for index, line in enumerate(rows):
        words = line.split()
        if words and words[0] == HOSTS_ADDRESS:
            rows[index] = ours
            break
    else:
        rows.append(ours)
    return "\n".join(rows) + "\n"


def _write_hosts(ctx: Context, name: str, short: str) -> None:
    try:
        text = ctx.host.read_text("/etc/hosts")
    except FileNotFoundError:
        text = _NEW_HOSTS
    ctx.write("/etc/hosts", hosts_text(text, name, short))


