"""Timezone: point /etc/localtime at the zone the owner chose (CONFIG_TIMEZONE, CONFIG_TIMEZONE_NAME)."""

from __future__ import annotations

import posixpath

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Optional

    from gandi_vm.plugins import Context, Outcome

ORDER = 40
FLAG = "CONFIG_TIMEZONE"

ZONEINFO = "/usr/share/zoneinfo"


def apply(ctx: Context) -> Outcome:
    from gandi_vm import provision

    # The zone the instance's own configuration set at its first boot wins over
    # CONFIG_TIMEZONE_NAME's default, on every later boot too.
    provisioned = provision.instance_set(ctx.host, "timezone")
    if provisioned is not None:
        return ctx.skip(f"timezone {provisioned[:64]!r} was set by the instance's configuration "
                        f"({provision.RECORD}); left as it is")
    return set_zone(ctx, ctx.settings.timezone_name, "CONFIG_TIMEZONE_NAME")


def set_zone(ctx: Context, zone: str, key: str = "timezone") -> Outcome:
    """Point /etc/localtime at `zone` (checked here) and write /etc/timezone."""
    if not ctx.host.is_dir(ZONEINFO):
        return ctx.skip(f"tzdata not installed (no {ZONEINFO}); /etc/localtime left as it is")
    if zone_file(ctx, zone) is None:
        return ctx.refuse(f"{key}={zone[:64]!r}: no such zone under {ZONEINFO}")
    target = f"{ZONEINFO}/{zone}"
    # Tools (timedatectl, Debian's tzdata) read the zone's name from the link itself, so the link
    # must name the zone as configured, not merely resolve to the same file (tzdata makes many zones
    # links to one another); RHEL's relative "../usr/share/zoneinfo/ZONE" names it too, and is kept.
    link = ctx.host.readlink("/etc/localtime")
    if link is None or posixpath.normpath(posixpath.join("/etc", link)) != target:
        ctx.symlink("/etc/localtime", target)
    ctx.write("/etc/timezone", zone + "\n")
    return ctx.done()


def zone_file(ctx: Context, zone: str) -> Optional[str]:
    """The zone's regular file (guest path, symlinks resolved), or None if it is not a zone.

    The config parser already restricts the name's characters; this re-checks, because Settings can
    be built without it, and because a zone directory may hold links that lead elsewhere."""
    parts = zone.split("/")
    if not zone or zone.startswith("/") or any(p in ("", ".", "..") for p in parts) or \
            any(ord(c) < 32 for c in zone):
        return None
    base = ctx.host.realpath(ZONEINFO)
    resolved = ctx.host.realpath(f"{ZONEINFO}/{zone}")
    if base is None or resolved is None or not resolved.startswith(base.rstrip("/") + "/"):
        return None
    if not ctx.host.is_file(resolved):
        return None
    # Not every regular file there is a zone (leapseconds, tzdata.zi, *.tab): zones are TZif files.
    try:
        magic = ctx.host.read_text(resolved)[:4]
    except OSError:
        return None
    return resolved if magic == "TZif" else None


