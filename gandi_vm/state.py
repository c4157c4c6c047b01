"""What the handlers decided for each device, kept under /run (rebuilt every boot).

`detach` unmounts only what a record says we mounted, and `status` reports the last decision
(mounted, skipped and why, failed and why) without redoing the work.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from gandi_vm.host import Host

STATE_DIR = "/run/gandi/disk"

# Record fields: device, devno, size, fstype, label, mountpoint, state, reason.
Record = Dict[str, object]


def load(host: Host, name: str) -> Optional[Record]:
    try:
        record = json.loads(host.read_text(f"{STATE_DIR}/{name}.json"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def save(host: Host, name: str, record: Record) -> None:
    """Write the record; an unchanged record rewrites nothing (handlers run many times)."""
    host.write_text(f"{STATE_DIR}/{name}.json", json.dumps(record, sort_keys=True, indent=1) + "\n")


def forget(host: Host, name: str) -> None:
    host.remove(f"{STATE_DIR}/{name}.json")


def recorded(host: Host) -> List[str]:
    return [f[:-5] for f in host.listdir(STATE_DIR) if f.endswith(".json")]
