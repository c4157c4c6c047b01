"""vCPUs as sysfs shows them."""

from __future__ import annotations

from gandi_vm.host import Host


def online_count(host: Host) -> int:
    """How many CPUs are online, from the kernel's range list ("0-3,6")."""
    count = 0
    for part in (host.read_attr("/sys/devices/system/cpu/online") or "0").split(","):
        first, _, last = part.partition("-")
        if first.isdigit():
            count += int(last) - int(first) + 1 if last.isdigit() else 1
    return max(count, 1)
