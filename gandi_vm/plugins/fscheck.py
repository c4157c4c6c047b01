"""Fscheck: an ext root filesystem with periodic checks disabled gets a 6-month interval (CONFIG_FSCHECK).

mke2fs disables both periodic checks (mount count and interval) by default since e2fsprogs 1.42,
so a guest that runs for years never has its root filesystem checked at boot. The historic gandi
behaviour, kept here: when neither check is enabled, set a check interval of six months. A
filesystem whose owner set either check is left alone.
"""

from __future__ import annotations

import struct

from gandi_vm import blockdev, log, mounts
from gandi_vm.host import Host
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Optional

ORDER = 100
FLAG = "CONFIG_FSCHECK"


EXT = ("ext2", "ext3", "ext4")
INTERVAL = "6m"
TIMEOUT = 60


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
    # Read from the superblock by this process: a boot where the checks are already set (every
    # boot after the first) spawns no tune2fs at all.
    from gandi_vm import grow  # start-up cost: only for an ext root

    try:
        superblock = grow.read_superblock(host, root.fstype, device)
        grow.filesystem_size(root.fstype, superblock)  # checks its magic and block size
    except OSError as e:
        return ctx.fail(f"cannot read the superblock of {device}: {e.strerror or e}")
    except grow.Refused as e:
        return ctx.fail(f"{device}: {e}")
    # s_max_mnt_count (signed: -1 is disabled, as tune2fs -l prints it), s_checkinterval (seconds)
    max_count, = struct.unpack_from("<h", superblock, 0x36)
    interval, = struct.unpack_from("<I", superblock, 0x44)
    if max_count > 0 or interval != 0:
        return ctx.done()
    log.info("fscheck: periodic checks of %s are disabled; setting a %s interval", device, INTERVAL)
    result = ctx.run(["tune2fs", "-i", INTERVAL, host.path(device)], timeout=TIMEOUT)
    if result.returncode == 127:
        return ctx.skip("tune2fs not found (e2fsprogs is not installed)")
    if not result.ok:
        return ctx.fail(f"tune2fs -i {INTERVAL} {device}: {result.why()}")
    return ctx.done()


def root_device(host: Host, root: mounts.Mount) -> Optional[str]:
    """The guest path of the device node mounted on /: its source when that node exists (not the
    kernel's placeholder /dev/root), else the node named by its device number in sysfs."""
    if root.source.startswith("/dev/") and host.exists(root.source):
        return root.source
    name = blockdev.name_of_devno(host, root.devno)
    if name is not None and host.exists(f"/dev/{name}"):
        return f"/dev/{name}"
    return None
