"""Render `gandi-vm status` rows as an aligned table or as YAML."""

from __future__ import annotations

from typing import Dict, List, Sequence

COLUMNS = ("device", "size", "fstype", "label", "mountpoint", "state", "reason")


def human_size(size: object) -> str:
    if not isinstance(size, int):
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError


def render(rows: Sequence[Dict[str, object]], fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump({"disks": list(rows)}, sort_keys=False, allow_unicode=False)
    table: List[List[str]] = [[c.upper() for c in COLUMNS]]
    for row in rows:
        cells = [human_size(row["size"]) if c == "size" else str(row.get(c) or "-") for c in COLUMNS]
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS) - 1)]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] + "\n" for r in table
    )
