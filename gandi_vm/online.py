"""Onlining vCPUs and memory blocks: the write with bounded retries that `cpu online-all` and
`memory online-all` use (and mount-all, at boot, for what was attached while the VM was stopped or
whose event was missed).

At hotplug the udev rule 87-gandi-online.rules is the fast path, no process at all: udevd reads
/etc/default/gandi itself (IMPORT{file}) and writes the attribute (`ATTR{online}="1"`).
"""

from __future__ import annotations

import errno
import time

from gandi_vm import log
from gandi_vm.host import Host
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Optional


ATTEMPTS = 4
# The kernel refuses for a while what it will accept a moment later (EBUSY while a block's pages
# are still being isolated, EAGAIN); EINVAL can come from a zone not ready yet. EPERM and the rest
# are final.
TRANSIENT = (errno.EBUSY, errno.EAGAIN, errno.EINVAL)


class Outcome(Record):
    name: str
    changed: bool
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def bring_online(host: Host, name: str, path: str, offline: str, wanted: str) -> Outcome:
    """Write `wanted` to the attribute if it holds `offline`; retried a bounded number of times.
    Anything else it holds (already online, in any zone) is left as it is: we never offline. The
    state is read again before each attempt: udev's rule may online the block in the meantime."""
    for attempt in range(1, ATTEMPTS + 1):
        if host.read_attr(path) != offline:
            if attempt > 1:
                log.info("%s: onlined meanwhile by someone else", name)
            return Outcome(name, False)
        try:
            host.write_attr(path, wanted)
        except OSError as e:
            if e.errno in TRANSIENT and attempt < ATTEMPTS:
                time.sleep(0.1 * 2 ** attempt)
                continue
            if host.read_attr(path) not in (offline, None):
                log.info("%s: onlined meanwhile by someone else", name)
                return Outcome(name, False)
            why = f"{e.strerror or e} (errno {e.errno}) after {attempt} attempts"
            log.error("%s: cannot write %s to %s: %s", name, wanted, path, why)
            return Outcome(name, False, why)
        log.info("%s: %s (%s)", name, "would be onlined" if host.dry_run else "onlined", wanted)
        return Outcome(name, True)
    raise AssertionError("unreachable")
