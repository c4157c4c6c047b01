"""What the handlers decided for each device, kept under /run (rebuilt every boot).

`detach` unmounts only what a record says we mounted, and `status` reports the last decision
(mounted, skipped and why, failed and why) without redoing the work.

Next to a disk's record, plain files for the units' gate (systemd/unit-gate, a shell script that
reads files with `read` and parses no JSON), each holding the disk's identity (`disk.identity`):
NAME.handled, "attached at this boot by mount-all or a burst, the unit's start has nothing left to
do", and NAME.untouched, "gandi mounted nothing there, the unit's stop has nothing to undo". The
gate empties what it used (rm would be a process): an empty file counts as none.
"""

from __future__ import annotations


from gandi_vm.host import Host

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional
    Record = Dict[str, object]

STATE_DIR = "/run/gandi/disk"
# The platform's swap devices we handled (swap.py): a separate directory, so that a disk record
# and a swap record for one device never overwrite each other.
SWAP_DIR = "/run/gandi/swap"
# The plain files next to a disk's record that the units' gate reads (see above).
HANDLED, UNTOUCHED = "handled", "untouched"

# The fields a record holds and their types; older records may lack some (diskseq).
_FIELDS = {"device": str, "devno": str, "diskseq": str, "size": int, "fstype": str, "label": str,
           "mountpoint": (str, type(None)), "ours": bool, "state": str, "reason": str,
           # swap records
           "kind": str, "priority": (int, type(None)), "formatted": bool, "whole_disk": str}


def load(host: Host, name: str, directory: str = STATE_DIR) -> Optional[Record]:
    """The record, or None if there is none or it is not one we wrote (a truncated file, a hand
    edit): detach acts on a record's mountpoint, so it must be an absolute path a file can have."""
    import json  # start-up cost (see gandi_vm.cli)

    try:
        record = json.loads(host.read_text(f"{directory}/{name}.json"))
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None
    if not isinstance(record, dict):
        return None
    if not all(isinstance(value, _FIELDS[key]) for key, value in record.items() if key in _FIELDS):
        return None
    mountpoint = record.get("mountpoint")
    if isinstance(mountpoint, str) and (not mountpoint.startswith("/") or "\0" in mountpoint):
        return None
    return record


def save(host: Host, name: str, record: Record, directory: str = STATE_DIR) -> None:
    """Write the record; an unchanged record rewrites nothing (handlers run many times)."""
    import json  # start-up cost (see gandi_vm.cli)

    host.write_text(f"{directory}/{name}.json", json.dumps(record, sort_keys=True, indent=1) + "\n")


def forget(host: Host, name: str, directory: str = STATE_DIR) -> None:
    host.remove(f"{directory}/{name}.json")
    if directory == STATE_DIR:
        for gate_file in (HANDLED, UNTOUCHED):
            host.remove(_gate_path(name, gate_file))



def _gate_path(name: str, gate_file: str) -> str:
    return f"{STATE_DIR}/{name}.{gate_file}"


def mark(host: Host, name: str, gate_file: str, identity: str) -> None:
    """Leave a gate file (HANDLED or UNTOUCHED) for the disk as it is now; an empty identity
    (no diskseq) still marks UNTOUCHED, which the gate then cannot compare."""
    host.write_text(_gate_path(name, gate_file), identity + "\n")


def unmark(host: Host, name: str, gate_file: str) -> None:
    host.remove(_gate_path(name, gate_file))


def recorded(host: Host, directory: str = STATE_DIR) -> List[str]:
    """The names with a record; an emptied record file (the units' gate forgets without rm) is none."""
    return [f[:-5] for f in host.listdir(directory)
            if f.endswith(".json") and _holds_anything(host, f"{directory}/{f}")]


def _holds_anything(host: Host, path: str) -> bool:
    try:
        return bool(host.read_bytes(path, 1))
    except OSError:  # forgotten meanwhile
        return False
