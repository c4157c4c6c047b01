"""Memory blocks: online every block that is offline (`memory online-all`), report them in `status`.

At hotplug time the udev rule onlines new blocks itself (online.py), unless the kernel does it
already; this handler is the boot-time coldplug and the by-hand equivalent. Blocks go to the zone
CONFIG_MEMORY_ZONE names (`online` lets the kernel choose, `online_movable` keeps them removable
again, `online_kernel` usable for kernel allocations). It never offlines anything.
"""

from __future__ import annotations

import logging
import re
from typing import Dict, List

from gandi_vm import online
from gandi_vm.config import Settings
from gandi_vm.host import Host

log = logging.getLogger("gandi")

MEMORY_DIR = "/sys/devices/system/memory"
_BLOCK = re.compile(r"memory(\d+)")


def blocks(host: Host) -> List[int]:
    return sorted(int(m.group(1)) for m in map(_BLOCK.fullmatch, host.listdir(MEMORY_DIR)) if m)


def block_size(host: Host) -> int:
    try:
        return int(host.read_attr(f"{MEMORY_DIR}/block_size_bytes") or "0", 16)
    except ValueError:
        return 0


def online_all(host: Host, settings: Settings) -> List[online.Outcome]:
    if not settings.memory_hotplug:
        log.info("memory: CONFIG_MEMORY_HOTPLUG=0, left as it is")
        return []
    outcomes = [online.bring_online(host, f"memory block {n}", f"{MEMORY_DIR}/memory{n}/state",
                                    "offline", settings.memory_zone) for n in blocks(host)]
    state = status(host)
    done = len([o for o in outcomes if o.changed])
    log.info("memory: %d blocks online, %d offline, %d MiB online%s", state["online"],
             len(state["offline"]), state["online_bytes"] // 2 ** 20,  # type: ignore[operator]
             f", {done} onlined now" if done else "")
    return outcomes


def status(host: Host) -> Dict[str, object]:
    states = {n: host.read_attr(f"{MEMORY_DIR}/memory{n}/state") for n in blocks(host)}
    online_blocks = [n for n, state in states.items() if state == "online"]
    size = block_size(host)
    return {"block_size": size, "online": len(online_blocks),
            "offline": sorted(n for n, state in states.items() if state == "offline"),
            "online_bytes": len(online_blocks) * size}
