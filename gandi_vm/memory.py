"""Memory blocks: online every block that is offline (`memory online-all`), report them in `status`.

At hotplug time the udev rule onlines new blocks itself (online.py), unless the kernel does it
already; this handler is the boot-time coldplug and the by-hand equivalent. Blocks go to the zone
CONFIG_MEMORY_ZONE names (`online` lets the kernel choose, `online_movable` keeps them removable
again, `online_kernel` usable for kernel allocations). It never offlines anything.
"""

from __future__ import annotations

from gandi_vm import log, online, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Host

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List


MEMORY_DIR = "/sys/devices/system/memory"
# Block N covers physical addresses from N times the block size: with at most 52 bits of physical
# address (x86_64 with 5-level paging, arm64) and blocks of at least 16 MiB (powerpc), N < 2**28.
MAX_BLOCKS = 2 ** 28


def blocks(host: Host) -> List[int]:
    """The memory blocks present, by number."""
    return sysfs.numbered(host.listdir(MEMORY_DIR), "memory", limit=MAX_BLOCKS)


def block_size(host: Host) -> int:
    """Bytes per memory block (hexadecimal in sysfs); 0 when unknown (absent, or garbage)."""
    return sysfs.read_number(host, f"{MEMORY_DIR}/block_size_bytes", base=16) or 0


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
