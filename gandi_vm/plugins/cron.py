"""Cron: spread /etc/crontab's hourly, daily, weekly and monthly runs by machine id (CONFIG_CRON).

Every clone of an image carries the same /etc/crontab, so a fleet of guests would start its
cron.daily jobs (logrotate, man-db, apt) in the same second on shared disks and networks. Each
run-parts line gets a minute (and, but for the hourly one, an hour) derived from /etc/machine-id:
different across machines, the same at every boot of one machine. Only those two fields change;
their separators, the rest of each line, and every other line stay byte for byte.
"""

from __future__ import annotations

import re

from gandi_vm.host import lines_keepends
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Optional, Tuple

ORDER = 90
FLAG = "CONFIG_CRON"

CRONTAB = "/etc/crontab"
MACHINE_ID = "/etc/machine-id"

# minute, hour, then the rest (day of month, month, day of week, user, command), with the exact
# whitespace between fields kept in groups of their own.
_LINE = re.compile(r"(?P<lead>[ \t]*)(?P<minute>\S+)(?P<sep1>[ \t]+)(?P<hour>\S+)(?P<rest>[ \t]+.*)",
                   re.DOTALL)
_NUMBER = re.compile(r"[0-9]{1,2}")
_RUN_PARTS = re.compile(r"\brun-parts\b.*/etc/cron\.(hourly|daily|weekly|monthly)\b")


def apply(ctx: Context) -> Outcome:
    host = ctx.host
    if not host.is_file(CRONTAB):
        return ctx.skip(f"no {CRONTAB}")
    machine_id = (host.read_attr(MACHINE_ID) or "") if host.is_file(MACHINE_ID) else ""
    if not machine_id:
        # An empty file is the "not yet initialised" state of an image: deriving from it would give
        # every clone the same times, which is what this plugin exists to avoid.
        return ctx.skip(f"{MACHINE_ID} missing or empty: no per-machine times to derive")
    text = host.read_text(CRONTAB)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ctx.skip(f"{CRONTAB} is not UTF-8 text; left as it is")
    lines = lines_keepends(text)  # cron ends a line at "\n" only: a comment's "\r" hides no entry
    found = False
    for index, line in enumerate(lines):
        spread = _spread(line, machine_id)
        if spread is not None:
            found = True
            lines[index] = spread
    if not found:
        # RHEL-like systems run these from /etc/cron.d/0hourly and anacron instead.
        return ctx.skip(f"no run-parts line for /etc/cron.hourly..monthly in {CRONTAB}")
    ctx.write(CRONTAB, "".join(lines))
    return ctx.done()


def schedule(machine_id: str, period: str) -> Tuple[int, int]:
    """(minute, hour) for one period: a hash of the machine id and the period, so that one
    machine's daily, weekly and monthly runs do not all start at once either."""
    import hashlib  # start-up cost (see gandi_vm.cli)

    digest = hashlib.sha256(f"{machine_id}:{period}".encode("utf-8", "surrogateescape")).digest()
    number = int.from_bytes(digest[:8], "big")
    return number % 60, (number // 60) % 24


def _spread(line: str, machine_id: str) -> Optional[str]:
    """The line with its minute (and hour) replaced, or None when it is not a run-parts line."""
    if line.lstrip().startswith("#"):
        return None
    match = _LINE.fullmatch(line)
    command = _RUN_PARTS.search(line)
    if match is None or command is None:
        return None
    period = command.group(1)
    minute, hour = schedule(machine_id, period)
    # A time that is not a plain number ("*/10", "1-5", "@daily") is someone's deliberate choice.
    if not _NUMBER.fullmatch(match["minute"]) or not (
            _NUMBER.fullmatch(match["hour"]) or (period == "hourly" and match["hour"] == "*")):
        return line
    new_hour = match["hour"] if period == "hourly" else str(hour)
    return f"{match['lead']}{minute}{match['sep1']}{new_hour}{match['rest']}"
