"""The owner's hooks in GANDI_HOOK_DIR: `post-disk-attach`, `pre-disk-detach`...

A hook is optional and advisory: it runs with a timeout, its exit status is logged, and its
failure never undoes or blocks what the handler did.
"""

from __future__ import annotations

import os

from gandi_vm import log
from gandi_vm.host import Host

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Sequence


HOOK_TIMEOUT = 60


def run_hook(host: Host, hook_dir: str, name: str, args: Sequence[str]) -> None:
    guest_path = f"{hook_dir}/{name}"
    real = host.path(guest_path)
    if not os.path.isfile(real):
        return
    if not os.access(real, os.X_OK):
        log.info("hook %s: not executable, skipped", guest_path)
        return
    result = host.run([real, *args], timeout=HOOK_TIMEOUT)
    if result.ok:
        log.info("hook %s: ok", guest_path)
    else:
        log.warning("hook %s: failed (%s)", guest_path, result.why())
