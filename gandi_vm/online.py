"""Onlining vCPUs and memory blocks: the udev rule that does it at hotplug, and the write with
bounded retries that the boot-time handlers use.

The rule is the fast path: `ATTR{online}="1"` is a sysfs write done by udevd itself while it
processes the event, no process is spawned. udev cannot read /etc/default/gandi, so the rule is
rendered from the configuration (at boot by `gandi-vm early-boot`, gandi-early.service, before
udev's coldplug; on demand by `gandi-vm hotplug-rules`) into /run/udev/rules.d, where it
overrides the shipped default of the same name (and a file of that name in /etc overrides both).
"""

from __future__ import annotations

import errno
import time
from typing import Optional

from gandi_vm import log
from gandi_vm.config import Settings
from gandi_vm.host import Host
from gandi_vm.record import Record


RULE_NAME = "87-gandi-online.rules"
RULE_PATH = f"/run/udev/rules.d/{RULE_NAME}"
ATTEMPTS = 4
# The kernel refuses for a while what it will accept a moment later (EBUSY while a block's pages
# are still being isolated, EAGAIN); EINVAL can come from a zone not ready yet. EPERM and the rest
# are final.
TRANSIENT = (errno.EBUSY, errno.EAGAIN, errno.EINVAL)


class Outcome(Record):
    name: str
    changed: bool
    error: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def bring_online(host: Host, name: str, path: str, offline: str, wanted: str) -> Outcome:
    """Write `wanted` to the attribute if it holds `offline`; retried a bounded number of times.
    Anything else it holds (already online, in any zone) is left as it is: we never offline. The
    state is read again before each attempt: udev's rule may online the block in the meantime."""
    for attempt in range(1, ATTEMPTS + 1):
        if host.read_attr(path) != offline:
            if attempt > 1:
                log.info("%s: onlined meanwhile by someone else", name)
            return Outcome(name, False)
        try:
            host.write_attr(path, wanted)
        except OSError as e:
            if e.errno in TRANSIENT and attempt < ATTEMPTS:
                time.sleep(0.1 * 2 ** attempt)
                continue
            if host.read_attr(path) not in (offline, None):
                log.info("%s: onlined meanwhile by someone else", name)
                return Outcome(name, False)
            why = f"{e.strerror or e} (errno {e.errno}) after {attempt} attempts"
            log.error("%s: cannot write %s to %s: %s", name, wanted, path, why)
            return Outcome(name, False, why)
        log.info("%s: %s (%s)", name, "would be onlined" if host.dry_run else "onlined", wanted)
        return Outcome(name, True)
    raise AssertionError("unreachable")


def auto_onlined(host: Host) -> bool:
    """Whether the kernel onlines hot-added memory itself (memhp_default_state, or a distro's
    auto_online_blocks setting): then the rule must leave memory blocks alone."""
    return (host.read_attr("/sys/devices/system/memory/auto_online_blocks") or "offline") != "offline"


def render_rules(settings: Settings, kernel_auto_onlines: bool) -> str:
    lines = ["# gandi-vm: online hot-added vCPUs and memory blocks. The copy in the udev rules directory",
             "# of the package is the default; at boot, `gandi-vm hotplug-rules` renders the one for",
             "# /etc/default/gandi into /run/udev/rules.d, which overrides it (and /etc overrides both).",
             "# Onlining is an attribute assignment done by udevd itself: no process is spawned.",
             'ACTION!="add", GOTO="gandi_online_end"', ""]
    if settings.cpu_hotplug:
        lines += ['SUBSYSTEM=="cpu", TEST=="online", ATTR{online}=="0", ATTR{online}="1"',
                  "# Interfaces tuned for multiqueue follow the vCPU count; the unit is skipped by",
                  "# systemd itself (a condition, no process) unless such an interface exists.",
                  'SUBSYSTEM=="cpu", TAG+="systemd", ENV{SYSTEMD_WANTS}+="gandi-retune.service"']
    else:
        lines.append("# CONFIG_CPU_HOTPLUG=0: hot-added vCPUs are left offline.")
    if not settings.memory_hotplug:
        lines.append("# CONFIG_MEMORY_HOTPLUG=0: hot-added memory is left offline.")
    elif kernel_auto_onlines:
        lines.append("# The kernel onlines hot-added memory itself (auto_online_blocks): left to it.")
    else:
        lines.append(f'SUBSYSTEM=="memory", ATTR{{state}}=="offline", '
                     f'ATTR{{state}}="{settings.memory_zone}"')
    return "\n".join(lines + ["", 'LABEL="gandi_online_end"', ""])


def write_rules(host: Host, settings: Settings) -> bool:
    """Render the rule for this configuration; udev re-reads its rules when one changed."""
    changed = host.write_text(RULE_PATH, render_rules(settings, auto_onlined(host)))
    if changed and host.root == "/":  # under --root, this system's udevd has nothing to reload
        result = host.run(["udevadm", "control", "--reload"], timeout=30)
        if not result.ok and result.returncode != 127:
            log.warning("udevadm control --reload: %s", result.why())
    shown = ("would be written" if host.dry_run else "written") if changed else "unchanged"
    log.info("%s: %s", RULE_PATH, shown)
    return changed
