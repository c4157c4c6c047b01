"""Fscheck: an ext root filesystem with periodic checks disabled gets a 6-month interval (CONFIG_FSCHECK).

mke2fs disables both periodic checks (mount count and interval) by default since e2fsprogs 1.42,
so a guest that runs for years never has its root filesystem checked at boot. The historic gandi
behaviour, kept here: when neither check is enabled, set a check interval of six months. A
filesystem whose owner set either check is left alone.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

from gandi_vm import blockdev, log, mounts
from gandi_vm.host import Host
from gandi_vm.plugins import Context, Outcome

ORDER = 100
FLAG = "CONFIG_FSCHECK"


EXT = ("ext2", "ext3", "ext4")
INTERVAL = "6m"
TIMEOUT = 60
_FIELD = re.compile(r"^(Maximum mount count|Check interval):\s*(-?[0-9]+)", re.MULTILINE)


def apply(ctx: Context) -> Outcome:
    host = ctx.host
    try:
        root = mounts.mount_at(host, "/")
    except OSError as e:
        return ctx.skip(f"cannot read /proc/self/mountinfo: {e.strerror}")
    if root is None:
        return ctx.skip("nothing is mounted on / in /proc/self/mountinfo")
    if root.fstype not in EXT:
        return ctx.skip(f"the root filesystem is {root.fstype}, not ext2/3/4: no periodic check to set")
    device = root_device(host, root)
    if device is None:
        return ctx.skip(f"cannot find the device of / (source {root.source}, device {root.devno})")
    listing = ctx.run(["tune2fs", "-l", device], timeout=TIMEOUT, changes=False)
    if listing.returncode == 127:
        return ctx.skip("tune2fs not found (e2fsprogs is not installed)")
    if not listing.ok:
        return ctx.fail(f"tune2fs -l {device}: {listing.why()}")
    fields = superblock(listing.stdout)
    if len(fields) != 2:
        return ctx.fail(f"tune2fs -l {device}: no mount count or check interval in its output")
    if fields["Maximum mount count"] > 0 or fields["Check interval"] != 0:
        return ctx.done()
    log.info("fscheck: periodic checks of %s are disabled; setting a %s interval", device, INTERVAL)
    result = ctx.run(["tune2fs", "-i", INTERVAL, device], timeout=TIMEOUT)
    if not result.ok:
        return ctx.fail(f"tune2fs -i {INTERVAL} {device}: {result.why()}")
    return ctx.done()


def root_device(host: Host, root: mounts.Mount) -> Optional[str]:
    """The real path of the device node mounted on /: its source when that node exists (not the
    kernel's placeholder /dev/root), else the node named by its device number in sysfs."""
    if root.source.startswith("/dev/") and host.exists(root.source):
        return host.path(root.source)
    name = blockdev.name_of_devno(host, root.devno)
    if name is not None and host.exists(f"/dev/{name}"):
        return host.path(f"/dev/{name}")
    return None


def superblock(listing: str) -> Dict[str, int]:
    """The two check settings from `tune2fs -l` ("Check interval: 0 (<none>)")."""
    return {m.group(1): int(m.group(2)) for m in _FIELD.finditer(listing)}
