"""`gandi-vm config apply` and `config list`: the boot-time configuration plugins, in order.

Built-in plugins (gandi_vm/plugins) run in ascending ORDER, each only when its flag is on; then
the owner's executables in GANDI_PLUGIN_DIR (historic /etc/gandi/plugins.d layout: lexical order,
executables only, package manager leftovers skipped), each with a timeout; then the hook
post-vm-config. Before the plugins, first-boot work: the platform's swap disk and config drive
(gandi_vm/swap.py) and the instance's provisioning (gandi_vm/provision.py), each reported like
a plugin; on a boot where sysfs and the udev database show none of the platform's disks (every
reboot of an instance without them) both are skipped, with no probe and without loading the
config drive's modules. A failing plugin is reported in one line and the others still run;
the exit status says whether any failed. Each plugin's duration is logged.
"""

from __future__ import annotations

import os
import time

from gandi_vm import log, plugins
from gandi_vm.config import Settings
from gandi_vm.hooks import run_hook
from gandi_vm.host import Host, UnknownName, printable
from gandi_vm.plugins import FAILED, SKIPPED, Context, Outcome
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Dict, List, Optional


LOCAL_TIMEOUT = 120
# Where provisioning finds the platform's drives (provision.DRIVE_DIR, openstack.LABELS; a unit
# test pins them): repeated so that a boot without them does not import openstack to learn it.
DRIVE_DIR = "/gandi"
CONFIG_DRIVE_LABELS = ("config-2", "CONFIG-2")
_LEFTOVERS = (".dpkg-old", ".dpkg-new", ".dpkg-dist", ".dpkg-tmp", ".rpmnew", ".rpmsave", "~")


class UnknownPlugin(UnknownName):
    """--only names no built-in plugin."""


class Ran(Record):
    name: str
    outcome: Outcome
    seconds: float


def modules() -> List[ModuleType]:
    import importlib  # start-up cost (see gandi_vm.cli)

    loaded = [importlib.import_module(f"gandi_vm.plugins.{name}") for name in plugins.NAMES]
    return sorted(loaded, key=lambda module: module.ORDER)


def _name(module: ModuleType) -> str:
    return module.__name__.rpartition(".")[2]


def listing(settings: Settings) -> List[Dict[str, object]]:
    return [{"plugin": _name(m), "order": m.ORDER, "flag": m.FLAG,
             "enabled": plugins.flag_enabled(settings, m.FLAG),
             "does": (m.__doc__ or "").strip().split("\n")[0]} for m in modules()]


def apply(host: Host, settings: Settings, only: Optional[str] = None,
          respect_flag: bool = False) -> List[Ran]:
    """Run the plugins. `only` runs one, even when its flag is off (asked by hand), unless
    `respect_flag` (asked by the code, such as interface attach)."""
    chosen = modules()
    host.show_diffs = True  # a dry run shows every file it would change as a unified diff
    if only is not None:
        chosen = [m for m in chosen if _name(m) == only]
        if not chosen:
            raise UnknownPlugin(f"no plugin named {only!r} (see `gandi-vm config list`)")
        from gandi_vm import provision

        # Not while config apply provisions the instance (see provision.INSTANCE_LOCK).
        with host.lock(provision.INSTANCE_LOCK):
            return [_run(host, settings, module, not respect_flag) for module in chosen]
    # First-boot work comes first, inside this process that boot starts anyway (no interpreter
    # of its own): the platform's swap disk and config drive, then the instance's configuration
    # and /gandi/init, so that the plugins after them see what they set.
    ran = _first_boot(host, settings)
    ran += [_run(host, settings, module, False) for module in chosen]
    ran += _run_local(host, settings)
    if not host.dry_run:
        run_hook(host, settings.hook_dir, "post-vm-config", [])
    return ran


def _first_boot(host: Host, settings: Settings) -> List[Ran]:
    nothing = _no_platform_media(host, settings)
    if nothing is not None:
        # A reboot of an instance without the platform's disks: nothing for swap or provision to
        # find, and neither blkid nor the config drive's modules (configdrive, openstack:
        # hashlib, tarfile, dataclasses...) are needed to learn it.
        return [_report(Ran(name, Outcome(SKIPPED, nothing), 0.0), host)
                for name in ("swap", "provision")]
    from gandi_vm import provision, swap

    return [_step(host, "swap", lambda: _swap_outcome(swap.setup(host, settings))),
            _step(host, "provision", lambda: provision.run(host, settings))]


def _no_platform_media(host: Host, settings: Settings) -> Optional[str]:
    """Why swap.setup and provision.run would find nothing this boot, read from files alone
    (sysfs, the udev database): None when they may find something, and must run.

    They look for the platform's swap disk (CONFIG_SWAP_DEVICE, the fixed names, a `gandiswap`
    partition, a swap signature) and config drives (/gandi, a filesystem labelled config-2),
    probing with blkid what the kernel does not name. udev's blkid builtin already probed every
    device it has processed: its database says the same without a process. A device udev has
    not processed yet (no entry) may hold anything: then they run, and probe it themselves."""
    from gandi_vm import blockdev, swap  # light: the modules of the disk handlers, not provision's

    if not (settings.swap or settings.provision):
        return "CONFIG_SWAP=0 and CONFIG_PROVISION=0: no platform disk looked for"
    if settings.swap_device or host.exists(DRIVE_DIR):
        return None
    for name in host.listdir("/sys/class/block"):
        if name in swap.FIXED_NAMES:
            return None
        properties = blockdev.udev_properties(host, name)
        if properties is None:
            return None
        if (swap.PARTNAME in (swap.partname(host, name), properties.get("ID_PART_ENTRY_NAME"))
                or properties.get("ID_FS_TYPE") == "swap"
                or properties.get("ID_FS_LABEL") in CONFIG_DRIVE_LABELS):
            return None
    return ("no platform swap disk nor config drive present (sysfs and the udev database, "
            "no probe)")


def _swap_outcome(said: List[str]) -> Outcome:
    """swap.setup logs its own lines and returns them (one per device): the step failed when
    one says so."""
    failed = [line for line in said if ": failed:" in line]
    return Outcome(FAILED, "; ".join(failed)) if failed else Outcome("done", "; ".join(said))


def _step(host: Host, name: str, action) -> Ran:
    started = time.monotonic()
    try:
        outcome = action()
    except Exception as e:  # like a plugin's: a bug here must not stop the plugins, nor the boot
        log.debug("%s", name, exc_info=True)
        outcome = Outcome(FAILED, f"internal error: {type(e).__name__}: {e}")
    return _report(Ran(name, outcome, time.monotonic() - started), host)


def _run(host: Host, settings: Settings, module: ModuleType, asked: bool) -> Ran:
    name = _name(module)
    if not plugins.flag_enabled(settings, module.FLAG) and not asked:
        return _report(Ran(name, Outcome("disabled", f"{module.FLAG}=0"), 0.0), host)
    started = time.monotonic()
    try:
        outcome = module.apply(Context(host=host, settings=settings, name=name))
    except Exception as e:  # a plugin's bug must not stop the others, nor the boot
        log.debug("plugin %s", name, exc_info=True)
        outcome = Outcome(FAILED, f"internal error: {type(e).__name__}: {e}")
    return _report(Ran(name, outcome, time.monotonic() - started), host)


def _run_local(host: Host, settings: Settings) -> List[Ran]:
    ran = []
    for entry in host.listdir(settings.plugin_dir):
        path = f"{settings.plugin_dir}/{entry}"
        real = host.path(path)
        if entry.startswith(".") or entry.endswith(_LEFTOVERS) or ".dpkg-" in entry:
            continue
        if not os.path.isfile(real) or not os.access(real, os.X_OK):
            continue
        started = time.monotonic()
        result = host.run([real], timeout=LOCAL_TIMEOUT)
        outcome = Outcome("ran") if result.ok else Outcome(FAILED, result.why())
        ran.append(_report(Ran(path, outcome, time.monotonic() - started), host))
    return ran


def _report(ran: Ran, host: Host) -> Ran:
    prefix = "(dry run) " if host.dry_run else ""
    # A detail may quote hostile data (a file's line, a command's output): one log line each,
    # whatever it holds, so a control character is shown escaped, never acted on by a terminal.
    detail = f": {printable(ran.outcome.detail)}" if ran.outcome.detail else ""
    log.log(log.ERROR if ran.outcome.failed else log.INFO, "%splugin %s: %s%s (%.0f ms)",
            prefix, ran.name, ran.outcome.state, detail, ran.seconds * 1000)
    return ran
