"""Strict parsers for the numbers the kernel prints in sysfs and /proc, for every module to share.

A sysfs tree is a fact we read, not a promise: under `--root` it is whatever a sample or a broken
image holds, and even the real kernel changes formats between versions. Python's own helpers are
too lenient for it: `'²'.isdigit()` is true but `int('²')` fails, `int('٣')` is 3 (any Unicode
digit), `int()` takes "+7", " 7", "1_000" and, past 4300 digits, raises instead of parsing, and a
cpu list "0-4294967295" expanded naively allocates without bound. So: ASCII digits only, a bounded
length, bounded ranges, and one `Garbage` error (a ValueError) that the caller reports as one line
naming the file (`read_number`, `read_cpu_list` do that for a Host).
"""

from __future__ import annotations

from gandi_vm import log

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Iterable, List, Optional
    from gandi_vm.host import Host


# The kernel's largest NR_CPUS (CONFIG_NR_CPUS_RANGE_END on x86_64 with MAXSMP): no cpu list can
# name a CPU at or past it.
MAX_CPUS = 8192
# A 64-bit value is 20 decimal or 16 hexadecimal digits; anything longer is not a kernel number.
_MAX_DIGITS = {10: 20, 16: 16}
_DIGITS = {10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF")}


class Garbage(ValueError):
    """Text that is not what the kernel prints in that attribute."""


def number(text: str, base: int = 10, limit: Optional[int] = None) -> int:
    """A non-negative integer as the kernel prints it: ASCII digits of `base` (10, or 16 as in
    memory/block_size_bytes, printed with "%lx": no "0x"), at most a 64-bit value's digits, and
    below `limit` when given."""
    if not text or len(text) > _MAX_DIGITS[base] or not _DIGITS[base].issuperset(text):
        raise Garbage(f"expected a {'hexadecimal' if base == 16 else 'decimal'} number, "
                      f"got {quoted(text)}")
    value = int(text, base)
    if limit is not None and value >= limit:
        raise Garbage(f"{value} is out of range (at most {limit - 1})")
    return value


def cpu_list(text: str, limit: int = MAX_CPUS) -> List[int]:
    """The CPUs of a kernel cpu list ("0-3,6", or "" for none), sorted and without duplicates;
    every number below `limit`, so the list can never grow past `limit` items."""
    found = set()
    for part in text.split(",") if text else ():
        first, dash, last = part.partition("-")
        low = number(first, limit=limit)
        high = number(last, limit=limit) if dash else low
        if high < low:
            raise Garbage(f"range {quoted(part)} ends before it starts")
        found.update(range(low, high + 1))
    return sorted(found)


def numbered(names: Iterable[str], prefix: str, limit: Optional[int] = None) -> List[int]:
    """The numbers N of the entries named `prefix`N ("cpu3", "memory12") in a directory listing,
    sorted; other entries ("cpufreq", "cpu٣", "memory0x1") are not ours and are left out."""
    found = []
    for name in names:
        if name.startswith(prefix):
            try:
                found.append(number(name[len(prefix):], limit=limit))
            except Garbage:
                continue
    return sorted(found)


def read_number(host: "Host", path: str, base: int = 10, limit: Optional[int] = None) -> Optional[int]:
    """The number in a one-line attribute; None if it is absent, or garbage (then one warning)."""
    text = host.read_attr(path)
    if text is None:
        return None
    try:
        return number(text, base, limit)
    except Garbage as e:
        log.warning("%s: %s; ignored", path, e)
        return None


def read_cpu_list(host: "Host", path: str) -> Optional[List[int]]:
    """The CPUs of a cpu list attribute (online, present, possible); None if it is absent, or
    garbage (then one warning)."""
    text = host.read_attr(path)
    if text is None:
        return None
    try:
        return cpu_list(text)
    except Garbage as e:
        log.warning("%s: %s; ignored", path, e)
        return None


def fullmatch(pattern: str, text: str) -> bool:
    """Whether the whole text matches the pattern. The patterns are kept as strings and `re` is
    imported at the first check, not when a module that defines one is loaded (start-up cost);
    re caches what it compiled."""
    import re

    return re.fullmatch(pattern, text) is not None


def quoted(text: str, limit: int = 40) -> str:
    """Hostile text for a one-line message: escaped (no newline, control character or undecodable
    byte reaches the log as itself), and cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
