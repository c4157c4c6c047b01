"""vCPUs: online every present CPU that is offline (`cpu online-all`), report them in `status`.

At hotplug time the udev rule onlines a new CPU itself with an attribute assignment (no process
at all, see online.py); this handler is the boot-time coldplug and the by-hand equivalent, for
CPUs added while the VM was stopped or whose event was missed. It never offlines anything, and
never touches cpu0 (which often has no `online` file at all: it cannot be offlined).
"""

from __future__ import annotations

from gandi_vm import log, online, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Host

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List


CPU_DIR = "/sys/devices/system/cpu"


def online_count(host: Host) -> int:
    """How many CPUs are online (at least cpu0, which is always)."""
    return max(len(_online(host)), 1)


def _online(host: Host) -> List[int]:
    """The online CPUs from the kernel's range list ("0-3,6"); cpu0 alone when the list is
    absent or garbage (one warning), as cpu0 is never offline."""
    found = sysfs.read_cpu_list(host, f"{CPU_DIR}/online")
    return [0] if found is None else found


def numbers(host: Host) -> List[int]:
    """The CPUs present, by number."""
    return sysfs.numbered(host.listdir(CPU_DIR), "cpu", limit=sysfs.MAX_CPUS)


def online_all(host: Host, settings: Settings) -> List[online.Outcome]:
    if not settings.cpu_hotplug:
        log.info("cpus: CONFIG_CPU_HOTPLUG=0, left as they are")
        return []
    present = numbers(host)
    outcomes = [online.bring_online(host, f"cpu{n}", f"{CPU_DIR}/cpu{n}/online", "0", "1")
                for n in present if n != 0 and host.exists(f"{CPU_DIR}/cpu{n}/online")]
    done = [o for o in outcomes if o.changed]
    log.info("cpus: %d present, %d online%s", len(present), online_count(host),
             f", {len(done)} onlined now" if done else "")
    if done:
        from gandi_vm import net

        net.retune_all(host, settings)  # one virtio-net queue pair per online vCPU
    return outcomes


def status(host: Host) -> Dict[str, object]:
    present = numbers(host)
    online_now = set(_online(host))
    return {"present": len(present), "online": len([n for n in present if n in online_now]),
            "offline": sorted(n for n in present if n not in online_now)}
