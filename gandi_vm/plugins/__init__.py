"""Boot-time configuration plugins (`gandi-vm config apply`): one module per concern.

A plugin is a module here with three names, in the shape of cloud-init's config modules:

    ORDER = 40                 # plugins run in ascending ORDER
    FLAG = "CONFIG_TIMEZONE"   # the /etc/default/gandi key (a boolean) that enables it
    def apply(ctx: Context) -> Outcome: ...

`apply` acts only through the Context, never on the Host directly: every file it writes is atomic,
keeps mode and owner, keeps a one-time backup of the original, shows up in a dry run as a unified
diff, and is reported as a change; every command it runs is planned in a dry run. It returns
`ctx.done()` (changed or unchanged, from what it wrote), `ctx.skip(why)` (nothing to do here, such
as a binary that is missing), `ctx.refuse(why)` (invalid input: a one-line error naming the key,
and nothing written) or `ctx.fail(why)` (a command it needed failed). A second run right after
the first must report every plugin unchanged.
"""

from __future__ import annotations

from gandi_vm.config import Settings
from gandi_vm.host import Host, Result, command_line
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import List, Optional, Sequence


NAMES = ("console", "hostname", "nameserver", "timezone", "ssh", "motd", "sysctl", "nosegneg",
         "cron", "fscheck")
CHANGED, UNCHANGED, SKIPPED, FAILED = "changed", "unchanged", "skipped", "failed"
BACKUP_DIR = "/var/lib/gandi-vm/backup"


class Outcome(Record):
    state: str
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.state == FAILED


class Context(Record, mutable=True):
    """What a plugin may use: the rooted host, the settings, and writers that keep the rules."""

    host: Host
    settings: Settings
    name: str = ""
    changes: List[str] = []

    # -- writers ---------------------------------------------------------------------------------
    def write(self, path: str, text: str, mode: int = 0o644) -> bool:
        """Replace a file's text atomically; a file that already holds it is not touched (not
        even backed up). A symlink is replaced by a file: callers that must not do that check."""
        try:
            if self.host.is_file(path) and self.host.read_text(path) == text:
                return False
        except (OSError, UnicodeDecodeError):
            pass
        self._backup(path)
        if self.host.write_text(path, text, mode=mode):
            self.changes.append(path)
            return True
        return False

    def symlink(self, path: str, target: str) -> bool:
        if self.host.readlink(path) == target:
            return False
        self._backup(path)
        if self.host.symlink(path, target):
            self.changes.append(f"{path} -> {target}")
            return True
        return False

    def remove(self, path: str) -> bool:
        if not self.host.exists(path):
            return False
        self._backup(path)
        if self.host.remove(path):
            self.changes.append(f"{path} removed")
            return True
        return False

    def run(self, argv: Sequence[str], timeout: float, changes: bool = True) -> Result:
        """Run a command; one that changes the system is only planned in a dry run."""
        result = self.host.run(argv, timeout=timeout, changes=changes)
        if changes and result.returncode != 127:  # a program that is not there changed nothing
            self.changes.append(command_line(argv))
        return result

    def _backup(self, path: str) -> None:
        """Keep the original the first time we touch a file of the owner's (never overwritten)."""
        if self.host.is_file(path) and not self.host.exists(BACKUP_DIR + path):
            self.host.copy(path, BACKUP_DIR + path)

    # -- what the DHCP servers said --------------------------------------------------------------
    def lease_values(self, key: str) -> List[object]:
        """A lease field from every interface record, the primary interface's first."""
        from gandi_vm import lease  # start-up cost (see gandi_vm.cli)

        records = [r for r in (lease.load(self.host, n) for n in lease.recorded(self.host)) if r]
        records.sort(key=lambda r: r.get("role") != "primary")
        values: List[object] = []
        for record in records:
            data = record.get("lease")
            if isinstance(data, dict) and data.get(key) not in (None, "", []):
                values.append(data[key])
        return values

    # -- outcomes --------------------------------------------------------------------------------
    def done(self) -> Outcome:
        return Outcome(CHANGED, ", ".join(self.changes)) if self.changes else Outcome(UNCHANGED)

    @staticmethod
    def skip(why: str) -> Outcome:
        return Outcome(SKIPPED, why)

    @staticmethod
    def refuse(why: str) -> Outcome:
        """Invalid input (a configuration value, a lease value): nothing was written."""
        return Outcome(FAILED, why)

    @staticmethod
    def fail(why: str) -> Outcome:
        """What the plugin needed failed (a command, a reload); said in one line."""
        return Outcome(FAILED, why)


def flag_enabled(settings: Settings, flag: Optional[str]) -> bool:
    from gandi_vm import config

    return flag is None or bool(getattr(settings, config.KEYS[flag][0]))
