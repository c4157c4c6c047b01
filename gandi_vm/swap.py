"""The platform's swap disk: find it, decide (format, reuse, refuse), swapon; swapoff at unplug.

The platform marks its swap disk, in this order of preference:
1. `CONFIG_SWAP_DEVICE` when the owner names one (then nothing is looked for automatically);
2. a GPT partition named `gandiswap` (the kernel's PARTNAME in sysfs, or blkid's
   ID_PART_ENTRY_NAME);
3. a swap signature labelled `swap`;
4. the historic fixed names xvda2, xvdz1, xvdz, sdb, only while no `gandiswap` partition is
   present, and only when the device is blank or already holds a swap signature: a fixed name
   holding anything else is an ordinary data disk, left to `disk attach`.

A blank device (its first 512 KiB are zeros) or a `gandiswap` partition without any signature is
formatted with `mkswap -L swap`; an existing swap signature is reused as is; anything else is
never formatted (one line says why). Then `swapon` (`-p CONFIG_SWAP_PRIORITY`). Before anything is
written, the historic config drive at 512 KiB of the whole disk is read (configdrive.py).

There is no unit of our own: `gandi-disk@DEV.service` (disk.attach, and mount-all at boot) hands
a platform swap device here, under the disk's lock; its stop (disk.detach) hands it back for
`swapoff`. A hot-unplug removes the device before any process can act: the kernel still lists
the dead area in /proc/swaps, so detach tries `swapoff` of it, logs an error if that fails
(modern kernels cannot reopen a deleted disk), and exits 0 so that no unit is left failed.
What we did is kept in /run/gandi/swap/DEV.json, for detach and `status`.
"""

from __future__ import annotations

from gandi_vm import blockdev, log, mounts, state, sysfs
from gandi_vm.blockdev import BlockDevice, Signature
from gandi_vm.config import Settings
from gandi_vm.host import Host, lines
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple


PARTNAME = "gandiswap"
LABEL = b"swap"
FIXED_NAMES = ("xvda2", "xvdz1", "xvdz", "sdb")
BLANK_BYTES = 512 * 1024
MKSWAP_TIMEOUT = 120
SWAPON_TIMEOUT = 60
SWAPOFF_TIMEOUT = 600  # swapoff pages every used page back in: slow when much is swapped out

# Why a device is the platform's swap (the order above)
CONFIGURED, GANDISWAP, LABELLED, FIXED = (
    "CONFIG_SWAP_DEVICE", "GPT partition gandiswap", "swap labelled 'swap'", "platform name")
# Decisions
ACTIVE, FORMAT, REUSE, REFUSE, NOT_OURS = "active", "format", "reuse", "refuse", "not ours"
# Outcome states
ON, SKIPPED, FAILED, OFF, UNCHANGED = "active", "skipped", "failed", "off", "unchanged"


class Outcome(Record):
    device: str
    state: str
    reason: str

    @property
    def failed(self) -> bool:
        return self.state == FAILED

    def line(self) -> str:
        return f"swap {self.device}: {self.state}: {self.reason}"


class Facts(Record):
    """What the decision needs to know of a candidate; gathered through the Host."""

    kind: str
    size: int = 0
    read_only: bool = False
    holders: Tuple[str, ...] = ()
    partitions: Tuple[str, ...] = ()
    mounted: Tuple[str, ...] = ()
    active: bool = False
    fstab_line: Optional[int] = None
    probe_error: str = ""
    ambivalent: bool = False
    fstype: str = ""
    partition_table: str = ""
    blank: Optional[bool] = None  # None: not read, or unreadable
    blank_error: str = ""


class Decision(Record):
    action: str
    reason: str


# -- decisions (pure) --------------------------------------------------------------------------
def kind_of(name: str, configured: Optional[str], partname: str, sig: Optional[Signature],
            gandiswap_present: bool) -> Optional[str]:
    """Why this device is the platform's swap, or None. `configured` is CONFIG_SWAP_DEVICE's
    kernel name ("" when unset, None when it names no device of this system)."""
    if configured != "":
        return CONFIGURED if configured == name else None
    if partname == PARTNAME:
        return GANDISWAP
    if sig is not None and sig.fstype == "swap" and sig.label == LABEL:
        return LABELLED
    if name in FIXED_NAMES and not gandiswap_present:
        return FIXED
    return None


def decide(facts: Facts) -> Decision:
    """Format, reuse, refuse (one line why), or leave to `disk attach` (a fixed name that does not
    look like swap). A refusal never writes to the device."""
    decision = _decide(facts)
    if facts.kind == FIXED and decision.action == REFUSE:
        return Decision(NOT_OURS, f"{decision.reason}: not the platform's swap")
    return decision


def _decide(f: Facts) -> Decision:
    if f.active:
        return Decision(ACTIVE, "already an active swap")
    if f.size == 0:
        return Decision(REFUSE, "zero size (no medium)")
    if f.read_only:
        return Decision(REFUSE, "read-only device")
    if f.mounted:
        return Decision(REFUSE, f"mounted at {f.mounted[0]}")
    if f.holders:
        return Decision(REFUSE, f"in use by {' '.join(f.holders)}")
    if f.partitions:
        return Decision(REFUSE, f"partitioned ({' '.join(f.partitions)}): never formatted")
    if f.probe_error:
        return Decision(REFUSE, f"blkid failed: {f.probe_error}")
    if f.ambivalent:
        return Decision(REFUSE, "several signatures found (ambivalent probe): never formatted")
    if f.fstype == "swap":
        return Decision(REUSE, "swap signature reused as is")
    if f.fstab_line is not None:
        return Decision(REFUSE, f"listed in /etc/fstab line {f.fstab_line}: left to the owner")
    if f.fstype or f.partition_table:
        return Decision(REFUSE, f"holds {f.fstype or f.partition_table + ' partition table'}: "
                                "never formatted")
    if f.blank:
        return Decision(FORMAT, "blank (its first 512 KiB are zeros)")
    if f.kind == GANDISWAP:
        return Decision(FORMAT, "GPT partition gandiswap without any signature")
    if f.blank_error:
        return Decision(REFUSE, f"cannot read its first 512 KiB ({f.blank_error}): never formatted")
    return Decision(REFUSE, "not blank and no known signature (it may hold data): never formatted")


# -- facts ---------------------------------------------------------------------------------------
def partname(host: Host, name: str, sig: Optional[Signature] = None) -> str:
    """A GPT partition's name: the kernel's PARTNAME (sysfs, no process), else blkid's."""
    try:
        text = host.read_text(f"/sys/class/block/{name}/uevent")
    except OSError:
        text = ""
    for line in lines(text):
        key, _, value = line.partition("=")
        if key == "PARTNAME":
            return value
    if sig is not None:
        raw = blockdev.decode_udev_string(sig.properties.get("ID_PART_ENTRY_NAME", ""))
        return raw.decode("utf-8", "replace")
    return ""


def marked(sig: Signature) -> bool:
    """What blkid shows of the platform's marks: a swap labelled `swap`, or a partition named
    `gandiswap` that sysfs did not name (a partition added by partx carries no PARTNAME)."""
    name = blockdev.decode_udev_string(sig.properties.get("ID_PART_ENTRY_NAME", ""))
    return (sig.fstype == "swap" and sig.label == LABEL) or name == PARTNAME.encode()


def gandiswap_present(host: Host) -> bool:
    return any(partname(host, name) == PARTNAME for name in host.listdir("/sys/class/block"))


def configured_name(host: Host, settings: Settings) -> Optional[str]:
    """CONFIG_SWAP_DEVICE as a kernel name; "" when unset, None when no such device is present."""
    if not settings.swap_device:
        return ""
    try:
        return blockdev.kernel_name(host, settings.swap_device)
    except blockdev.NoSuchDevice:
        return None


def area_of(host: Host, name: str) -> Optional[mounts.SwapArea]:
    """The active swap area on this (present) device: its listed path resolves to /dev/NAME. A
    deleted area only matches when the device itself is gone (a new disk may have its name)."""
    present = host.exists(f"/sys/class/block/{name}")
    for area in mounts.swap_areas(host):
        if not area.path.startswith("/dev/"):
            continue
        if area.deleted:
            if not present and area.path == f"/dev/{name}":
                return area
            continue
        if present and (area.path == f"/dev/{name}" or host.realpath(area.path) == f"/dev/{name}"):
            return area
    return None


def is_blank(host: Host, name: str) -> Tuple[Optional[bool], str]:
    try:
        head = host.read_bytes(f"/dev/{name}", BLANK_BYTES)
    except OSError as e:
        return None, str(e.strerror or e)
    if len(head) < BLANK_BYTES:
        return False, ""
    return head.count(0) == BLANK_BYTES, ""


def _fstab_line(host: Host, name: str, sig: Signature) -> Optional[int]:
    from gandi_vm import disk  # disk imports this module

    claim = disk.fstab_claim(mounts.fstab(host), f"/dev/{name}", sig, host.realpath)
    return claim.lineno if claim else None


# -- attach --------------------------------------------------------------------------------------
def handle(host: Host, settings: Settings, dev: BlockDevice,
           sig: Optional[Signature] = None) -> Optional[Outcome]:
    """The platform swap's part of `disk attach`, under the disk's lock: None when `dev` is not
    the platform's swap (the caller goes on with it as a disk), else what was done.

    Called first without a signature (the marks that need no probe: CONFIG_SWAP_DEVICE,
    gandiswap, the fixed names), then by disk.attach with blkid's signature for the label."""
    if not (settings.swap or settings.provision):
        return None
    name = dev.name
    configured = configured_name(host, settings)
    present = dev.name in FIXED_NAMES and configured == "" and gandiswap_present(host)
    kind = kind_of(name, configured, partname(host, name, sig), sig, present)
    if kind is None:
        return None
    area = area_of(host, name)
    if area is not None:
        facts = Facts(kind, active=True)
    else:
        sig = sig or blockdev.probe(host, name)
        blank, blank_error = (None, "")
        if not sig.fstype and not sig.partition_table and not sig.error and not sig.ambivalent:
            blank, blank_error = is_blank(host, name)
        table = mounts.mount_table(host)
        facts = Facts(
            kind=kind, size=dev.size, read_only=dev.read_only, holders=dev.holders,
            partitions=dev.partitions,
            mounted=tuple(m.mountpoint for m in mounts.of_device(table, dev.devno, name)),
            fstab_line=_fstab_line(host, name, sig), probe_error=sig.error or "",
            ambivalent=sig.ambivalent, fstype=sig.fstype, partition_table=sig.partition_table,
            blank=blank, blank_error=blank_error)
    decision = decide(facts)
    if decision.action == NOT_OURS:
        log.debug("swap %s: %s", name, decision.reason)
        return None
    if decision.action in (FORMAT, REUSE):
        # Before anything is written. Never from an active area (its bytes are memory pages), nor
        # from a device refused as swap (then it is not the platform's swap disk we know).
        _read_drive(host, dev, decision.action)
    if not settings.swap:
        return _done(host, dev, kind, SKIPPED, f"{kind}, CONFIG_SWAP=0: not enabled", ours=False)
    return _act(host, settings, dev, kind, decision, area)


def _read_drive(host: Host, dev: BlockDevice, action: str) -> None:
    """The config drive lies 512 KiB into the whole disk. A swap area used in an earlier boot may
    hold, past its header, memory pages of any process of that boot: a local user could have
    planted an archive there. So the drive is read from a swap area only before its first
    format, and from the disk of a swap partition only up to that partition's start."""
    from gandi_vm import configdrive

    end = None
    if dev.partition_number is not None:
        start = sysfs.read_number(host, f"/sys/class/block/{dev.name}/start")
        if start is None:
            log.warning("swap %s: partition start unknown: config drive not read", dev.name)
            return
        end = start * 512
    elif action == REUSE:
        log.info("swap %s: a swap area used before (its bytes may be memory pages of an earlier "
                 "boot): config drive not read", dev.name)
        return
    with host.lock("config-drive"):
        configdrive.read_archive(host, dev.disk, end)


def _act(host: Host, settings: Settings, dev: BlockDevice, kind: str, decision: Decision,
         area: Optional[mounts.SwapArea]) -> Outcome:
    name = dev.name
    if decision.action == ACTIVE:
        previous = state.load(host, name, state.SWAP_DIR)
        if previous and previous.get("ours") and previous.get("devno") == dev.devno:
            return Outcome(name, ON, f"{kind}: already active (swapon by gandi)")
        shown = area.path if area else f"/dev/{name}"
        return _done(host, dev, kind, ON, f"{kind}: already active as {shown} (not by gandi)",
                     ours=False)
    if decision.action == REFUSE:
        return _done(host, dev, kind, SKIPPED, f"{kind}: {decision.reason}", ours=False)
    path = host.path(f"/dev/{name}")
    formatted = decision.action == FORMAT
    if formatted:
        result = host.run(["mkswap", "-L", "swap", path], timeout=MKSWAP_TIMEOUT)
        if not result.ok:
            return _done(host, dev, kind, FAILED, f"{kind}: mkswap failed: {result.why()}",
                         ours=False)
    argv = ["swapon"]
    if settings.swap_priority is not None:
        argv += ["-p", str(settings.swap_priority)]
    result = host.run(argv + [path], timeout=SWAPON_TIMEOUT)
    if not result.ok:
        return _done(host, dev, kind, FAILED, f"{kind}: swapon failed: {result.why()}",
                     ours=False, formatted=formatted)
    what = "formatted (mkswap -L swap, " + decision.reason + ")" if formatted else decision.reason
    priority = f", priority {settings.swap_priority}" if settings.swap_priority is not None else ""
    return _done(host, dev, kind, ON, f"{kind}: {what}; swapon{priority}", ours=True,
                 formatted=formatted, priority=settings.swap_priority)


def _done(host: Host, dev: BlockDevice, kind: str, status: str, reason: str, ours: bool,
          formatted: bool = False, priority: Optional[int] = None) -> Outcome:
    record: state.Record = {
        "device": dev.name, "devno": dev.devno, "diskseq": dev.diskseq, "size": dev.size,
        "kind": kind, "whole_disk": dev.disk, "ours": ours, "formatted": formatted,
        "priority": priority, "state": status, "reason": reason}
    state.save(host, dev.name, record, state.SWAP_DIR)
    return Outcome(dev.name, status, reason)


def attach(host: Host, settings: Settings, dev: str) -> Optional[Outcome]:
    """One device, under its disk lock, as `swap.setup` and tests call it: the platform swap's
    outcome, or None when the device is not the platform's swap."""
    name = blockdev.kernel_name(host, dev)
    with host.lock(f"disk-{name}"):
        device = blockdev.read(host, name)
        outcome = handle(host, settings, device)
        if outcome is None and _may_be_labelled(host, settings, device):
            sig = blockdev.probe(host, name)
            if marked(sig):
                outcome = handle(host, settings, device, sig)
    if outcome is not None:
        report(host, outcome)
    return outcome


def _may_be_labelled(host: Host, settings: Settings, dev: BlockDevice) -> bool:
    """Worth a blkid probe for the `swap` label: no device named by the owner, not partitioned,
    not in use, has a medium."""
    return (not settings.swap_device and dev.size > 0 and not dev.partitions
            and not dev.holders and (settings.swap or settings.provision))


def report(host: Host, outcome: Outcome) -> None:
    prefix = "(dry run) " if host.dry_run else ""
    log.log(log.ERROR if outcome.failed else log.INFO, "%s%s", prefix, outcome.line())


def setup(host: Host, settings: Settings) -> List[str]:
    """Boot (the first step of `config apply`): attach the platform swap device(s) present now,
    each under its disk lock, reading the config drive first; one line per device. Idempotent:
    an active swap is left as it is (mount-all may have done it already).

    With CONFIG_SWAP=0 the drive is still read when CONFIG_PROVISION=1 (provisioning needs
    /gandi); with both off, nothing is looked for."""
    if not (settings.swap or settings.provision):
        return ["swap: CONFIG_SWAP=0 and CONFIG_PROVISION=0: the platform swap is not looked for"]
    from gandi_vm import disk

    names = disk.eligible(host, settings)
    configured = configured_name(host, settings)
    if configured is None:
        return [f"swap: CONFIG_SWAP_DEVICE={settings.swap_device}: no such block device"]
    if configured:
        names = [configured]
    results = []
    for name in names:
        try:
            outcome = attach(host, settings, name)
        except blockdev.NoSuchDevice:
            continue  # unplugged meanwhile
        except Exception as e:  # one device never stops the others, nor the boot
            log.error("swap %s: failed: %s: %s", name, type(e).__name__, e)
            results.append(f"swap {name}: failed: {type(e).__name__}: {e}")
            continue
        if outcome is not None:
            results.append(outcome.line())
    return results or ["swap: no platform swap device present"]


# -- detach --------------------------------------------------------------------------------------
def detach(host: Host, name: str) -> Optional[Outcome]:
    """The platform swap's part of `disk detach` (under the disk's lock): None when we hold no
    swap record for this device. Never fails the unit: a swapoff that fails is an error line."""
    record = state.load(host, name, state.SWAP_DIR)
    if record is None:
        return None
    if not record.get("ours"):
        state.forget(host, name, state.SWAP_DIR)
        return Outcome(name, UNCHANGED, "swap not enabled by gandi: left as it is")
    area = area_of(host, name)
    gone = not host.exists(f"/sys/class/block/{name}")
    if area is None:
        state.forget(host, name, state.SWAP_DIR)
        return Outcome(name, UNCHANGED, "no longer an active swap")
    if not area.deleted:
        result = host.run(["swapoff", host.path(area.path)], timeout=SWAPOFF_TIMEOUT)
    else:
        result = _swapoff_dead(host, name, str(record.get("devno") or ""))
    if result.ok:
        state.forget(host, name, state.SWAP_DIR)
        return Outcome(name, OFF, f"swapoff {area.path}")
    if gone:
        state.forget(host, name, state.SWAP_DIR)
        log.error("swap %s: the device was unplugged under an active swap and swapoff of the dead "
                  "area failed (%s): the kernel lists it in /proc/swaps until reboot, and the pages "
                  "that were there are lost", name, result.why())
        return Outcome(name, UNCHANGED, f"dead swap area {area.path} still listed")
    log.error("swap %s: swapoff %s failed: %s", name, area.path, result.why())
    return Outcome(name, UNCHANGED, f"swapoff failed, still active: {result.why()}")


def _swapoff_dead(host: Host, name: str, devno: str):
    """swapoff a deleted area: its node is gone, so through a temporary node of its number
    (the kernel compares the opened device with the area's; a new disk on that number differs)."""
    from gandi_vm.host import Result

    first = host.run(["swapoff", host.path(f"/dev/{name}")], timeout=SWAPOFF_TIMEOUT)
    major, _, minor = devno.partition(":")
    if first.ok or not (major.isdigit() and minor.isdigit()):
        return first
    # on devtmpfs: /run is mounted nodev, where opening a node is always EACCES
    node = f"/dev/.gandi-swapoff-{name}"
    host.remove(node)
    made = host.run(["mknod", "-m", "0600", host.path(node), "b", major, minor], timeout=15)
    if not made.ok:
        return Result(first.argv, first.returncode, first.stdout,
                      f"{first.why()}; mknod failed: {made.why()}")
    try:
        return host.run(["swapoff", host.path(node)], timeout=SWAPOFF_TIMEOUT)
    finally:
        host.remove(node)


# -- status --------------------------------------------------------------------------------------
def status(host: Host) -> List[Dict[str, object]]:
    """Every swap area the kernel lists (ours or not, active or dead), then our records of platform
    swap devices that are not active (refused, failed), with why."""
    rows: List[Dict[str, object]] = []
    records = {name: state.load(host, name, state.SWAP_DIR) or {}
               for name in state.recorded(host, state.SWAP_DIR)}
    listed = set()
    for area in mounts.swap_areas(host):
        name = _record_for(host, area, records)
        record = records.get(name or "", {})
        if name:
            listed.add(name)
        rows.append({
            "device": area.path, "size": area.size, "used": area.used,
            "priority": area.priority, "ours": bool(record.get("ours")),
            "state": "dead" if area.deleted else "active",
            "reason": ("device unplugged: swapoff failed, listed until reboot" if area.deleted
                       else str(record.get("reason") or "not enabled by gandi")),
        })
    for name, record in sorted(records.items()):
        if name in listed or not record:
            continue
        rows.append({"device": f"/dev/{name}", "size": record.get("size"), "used": None,
                     "priority": record.get("priority"), "ours": False,
                     "state": record.get("state"), "reason": record.get("reason")})
    return rows


def _record_for(host: Host, area: mounts.SwapArea,
                records: Dict[str, Dict[str, object]]) -> Optional[str]:
    if not area.path.startswith("/dev/"):
        return None
    name = area.path[len("/dev/"):]
    if not area.deleted:
        resolved = host.realpath(area.path)
        if resolved and resolved.startswith("/dev/"):
            name = resolved[len("/dev/"):]
    return name if name in records else None
