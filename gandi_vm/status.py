"""Render `gandi-vm status` (disks, interfaces, swaps) as aligned tables or as YAML."""

from __future__ import annotations

from gandi_vm.host import printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence

COLUMNS = ("device", "size", "fstype", "label", "mountpoint", "state", "reason")
SWAP_COLUMNS = ("swap", "size", "used", "priority", "ours", "state", "reason")
GROW_COLUMNS = ("grow", "disk", "disk_size", "partition_end", "filesystem_size", "left", "state",
                "reason")
IFACE_COLUMNS = ("interface", "mac", "driver", "operstate", "addresses", "stack", "table", "state",
                 "reason")


def human_size(size: object) -> str:
    if not isinstance(size, int):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError


def render(disks: Sequence[Dict[str, object]], interfaces: Sequence[Dict[str, object]],
           fmt: str, cpus: Optional[Dict[str, object]] = None,
           memory: Optional[Dict[str, object]] = None,
           swaps: Optional[Sequence[Dict[str, object]]] = None,
           instance: Optional[Dict[str, object]] = None,
           growth: Optional[Sequence[Dict[str, object]]] = None) -> str:
    if fmt == "yaml":
        import yaml

        data = {"disks": list(disks), "interfaces": list(interfaces), "cpus": cpus,
                "memory": memory}
        if swaps is not None:
            data["swaps"] = list(swaps)
        if instance is not None:
            data["instance"] = instance
        if growth is not None:
            data["growth"] = list(growth)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
    disk_rows = [[human_size(row["size"]) if c == "size" else _cell(row.get(c)) for c in COLUMNS]
                 for row in disks]
    iface_rows = [[_cell(row.get(c)) for c in IFACE_COLUMNS] for row in interfaces]
    text = _table(COLUMNS, disk_rows)
    if interfaces:
        text += "\n" + _table(IFACE_COLUMNS, iface_rows)
        for row in interfaces:
            lease = row.get("lease")
            if isinstance(lease, dict):
                shown = ", ".join(f"{k} {_cell(v)}" for k, v in lease.items() if v)
                text += f"lease {_cell(row['interface'])}: {shown}\n"
    if swaps:
        swap_rows = [[_swap_cell(c, row) for c in SWAP_COLUMNS] for row in swaps]
        text += "\n" + _table(SWAP_COLUMNS, swap_rows)
    if cpus is not None:
        text += (f"\nCPUS    {cpus['present']} present, {cpus['online']} online, offline: "
                 f"{_cell(cpus['offline'])}\n")
    if memory is not None:
        text += (f"MEMORY  blocks of {human_size(memory['block_size'])}: {memory['online']} online "
                 f"({human_size(memory['online_bytes'])}), offline: {_cell(memory['offline'])}\n")
    if instance is not None:
        text += _instance(instance)
    if growth:
        grow_rows = [[_grow_cell(c, row) for c in GROW_COLUMNS] for row in growth]
        text += "\n" + _table(GROW_COLUMNS, grow_rows)
    return text


def _instance(record: Dict[str, object]) -> str:
    """Where the instance's first-boot configuration came from, when, and what it skipped."""
    if not record.get("instance_id"):
        return "\nINSTANCE  no configuration applied (no platform drive, no config-2)\n"
    done = record.get("set")
    text = (f"\nINSTANCE  {_cell(record['instance_id'])} from {_cell(record.get('origin'))} "
            f"({_cell(record.get('source'))}), applied {_cell(record.get('applied_at'))}")
    if isinstance(done, dict) and done:
        text += ", set " + ", ".join(f"{_cell(k)} {_cell(v)}" for k, v in done.items())
    text += "\n"
    script = record.get("script")
    if isinstance(script, dict):
        text += (f"  script {_cell(script.get('path'))}: {_cell(script.get('result'))} "
                 f"(ran {_cell(script.get('ran_at'))})\n")
    skipped = record.get("skipped")
    for why in skipped if isinstance(skipped, list) else ():
        text += f"  skipped: {_cell(why)}\n"
    return text


def _swap_cell(column: str, row: Dict[str, object]) -> str:
    if column in ("size", "used"):
        return human_size(row.get(column))
    if column == "ours":
        return "yes" if row.get("ours") else "no"
    return _cell(row.get("device" if column == "swap" else column))


def _grow_cell(column: str, row: Dict[str, object]) -> str:
    if column.endswith(("_size", "_end")) or column == "left":
        return human_size(row.get(column))
    return _cell(row.get("mountpoint" if column == "grow" else column))


def _cell(value: object) -> str:
    """A table cell; "-" for nothing, the elements of a list joined by commas."""
    if isinstance(value, (list, tuple)):
        # Labels come from disk images and leases from the network: nothing reaches the
        # terminal as itself but printable text (an undecodable byte shows as \\udcNN).
        return ",".join(printable(str(v)) for v in value) or "-"
    if value in (None, ""):
        return "-"
    return printable(str(value))


def _table(columns: Sequence[str], rows: List[List[str]]) -> str:
    """Aligned columns; the last (a free-text reason) is not padded."""
    table = [[c.upper() for c in columns], *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns) - 1)]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] + "\n" for r in table
    )
