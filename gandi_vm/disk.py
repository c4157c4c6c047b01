"""Disks: attach (check and mount under CONFIG_DISK_ROOT/<label>), detach, resize, mount-all.

Each handler gathers facts through the Host, decides with pure functions (`sysfs_skip`,
`signature_skip`, `fstab_claim`, `labels.component`), then acts with a short list of Host calls.
Every decision is logged in one line and recorded under /run/gandi/disk for `status` and `detach`.
"""

from __future__ import annotations


from gandi_vm import blockdev, log, mounts, state, swap
from gandi_vm.blockdev import BlockDevice, Signature
from gandi_vm.config import Settings
from gandi_vm.host import Host
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:  # grow is imported where it is used: most attaches never need it
    from typing import Callable, Dict, List, Optional, Sequence, Tuple
    from gandi_vm import grow


# Mounts that make their disk the system disk; with active swap, found from the tables, not names.
SYSTEM_MOUNTPOINTS = ("/", "/boot", "/boot/efi")
MOUNT_TIMEOUT = 120
CONFIG_DRIVE_LABEL = b"config-2"

MOUNTED, SKIPPED, FAILED, UNMOUNTED, UNCHANGED = (
    "mounted", "skipped", "failed", "unmounted", "unchanged")


class Outcome(Record):
    device: str
    state: str
    reason: str
    mountpoint: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.state == FAILED

    def line(self) -> str:
        return f"disk {self.device}: {self.state}: {self.reason}"


def _report(host: Host, outcome: Outcome) -> None:
    prefix = "(dry run) " if host.dry_run else ""
    log.log(log.ERROR if outcome.failed else log.INFO, "%s%s", prefix, outcome.line())


# -- decisions (pure) --------------------------------------------------------------------------
def sysfs_skip(dev: BlockDevice, system: Dict[str, str]) -> Optional[str]:
    """Why a device must be left alone, from sysfs facts alone (no probe needed)."""
    if dev.disk in system:
        return f"on the system disk {dev.disk} ({system[dev.disk]})"
    if dev.size == 0:
        return "zero size (no medium)"
    if dev.read_only:
        return "read-only device"
    if dev.holders:
        return f"in use by {' '.join(dev.holders)}"
    if dev.partitions:
        return f"partitioned: {' '.join(dev.partitions)} are handled on their own"
    return None


def signature_skip(sig: Signature) -> Optional[str]:
    """Why what is written on the device is not something to mount (we never mkfs)."""
    if (sig.label or b"").lower() == CONFIG_DRIVE_LABEL:
        # Read-only metadata for provisioning, mounted privately at boot, never under the root.
        return "OpenStack config drive (label config-2): never mounted under the disk root"
    if sig.ambivalent:
        return "several signatures found (ambivalent probe), not guessing which one to mount"
    if sig.fstype == "swap":
        return "swap signature"
    if not sig.fstype:
        if sig.partition_table:
            return f"{sig.partition_table} partition table without visible partitions"
        return "no filesystem"
    if sig.usage != "filesystem":
        return f"holds {sig.fstype} ({sig.usage or 'unknown usage'}), not a filesystem"
    return None


def fstab_claim(entries: Sequence[mounts.FstabEntry], dev_path: str, sig: Signature,
                resolve: Callable[[str], Optional[str]]) -> Optional[mounts.FstabEntry]:
    """The /etc/fstab line that names this device, by UUID, LABEL, PARTUUID, PARTLABEL or path:
    the owner's configuration wins and we do not mount the device a second time.

    Tags are compared as bytes, as mount(8) resolves them: a label is whatever bytes the disk
    holds (blkid's `\\xNN` escapes undone), the fstab value whatever bytes its escapes stand for."""
    keys = {
        "UUID": sig.uuid.encode("utf-8", "surrogateescape"),
        "LABEL": sig.label or b"",
        "PARTUUID": sig.properties.get("ID_PART_ENTRY_UUID", "").encode("utf-8", "surrogateescape"),
        "PARTLABEL": blockdev.decode_udev_string(sig.properties.get("ID_PART_ENTRY_NAME", "")),
    }
    for entry in entries:
        kind, sep, value = entry.spec.partition("=")
        if sep and kind in keys:
            wanted, have = _tag_value(value), keys[kind]
            if kind.endswith("UUID"):  # hex digits in either case; labels are case-sensitive
                wanted, have = wanted.lower(), have.lower()
            if have and wanted == have:
                return entry
        elif entry.spec.startswith("/dev/") and resolve(entry.spec) == dev_path:
            return entry
    return None


def _tag_value(value: str) -> bytes:
    """The bytes a fstab tag's value names, as libblkid's blkid_parse_tag_string reads it: a value
    opening with a quote (" or ') ends at the last such quote (the label itself may hold quotes);
    without one, it names nothing (b"", which no device matches)."""
    if value[:1] in ('"', "'"):
        end = value.rfind(value[0], 1)
        value = value[1:end] if end > 0 else ""
    return value.encode("utf-8", "surrogateescape")


# -- facts -------------------------------------------------------------------------------------
def system_disks(host: Host, table: Sequence[mounts.Mount]) -> Dict[str, str]:
    """Disks holding /, /boot or active swap, through dm/md stacking: disk name -> why."""
    held: Dict[str, str] = {}

    def hold(name: Optional[str], why: str) -> None:
        for disk in blockdev.disks_under(host, name) if name else ():
            held.setdefault(disk, why)

    for mount in table:
        if mount.mountpoint in SYSTEM_MOUNTPOINTS:
            hold(blockdev.name_of_mount(host, mount.devno, mount.source),
                 f"holds {mount.mountpoint}")
    for path in mounts.active_swaps(host):
        hold(blockdev.name_of_path(host, path), "holds active swap")
    return held


def eligible(host: Host, settings: Settings) -> List[str]:
    """Block devices whose kernel name matches CONFIG_DISK_DEVICES, in kernel-name order."""
    import fnmatch  # start-up cost (see gandi_vm.cli)

    return [name for name in host.listdir("/sys/class/block")
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in settings.disk_devices)]


def identity(host: Host, name: str) -> str:
    """What tells this disk from another that takes its name later: the kernel's diskseq (Linux
    >= 5.15; a partition has none, its disk's stands for it), "" before: the units' gate and the
    handlers then cannot tell, and every event goes to a handler."""
    return host.read_attr(f"/sys/class/block/{blockdev.whole_disk(host, name)}/diskseq") or ""


def unhandled(host: Host, settings: Settings) -> List[str]:
    """Eligible disks present that no attach recorded as they are now (no record for their
    identity): what a burst's one handler takes on. Nothing without diskseq: a stale record of
    an unplugged disk could not be told from the new disk's."""
    names = []
    for name in eligible(host, settings):
        now = identity(host, name)
        record = state.load(host, name)
        if now and not (record and record.get("diskseq") == now):
            names.append(name)
    return names


# -- attach ------------------------------------------------------------------------------------
def attach(host: Host, settings: Settings, dev: str, batch: bool = False) -> Outcome:
    """Attach one disk. `batch` is the unit gate's (`disk attach --batch`, run with the gate's
    lock held): then also attach every other disk present that nothing attached at this boot, so
    that a burst of disks costs one interpreter, not one each; their units' gates, queued on that
    lock, find them marked HANDLED and end without gandi-vm."""
    name = blockdev.kernel_name(host, dev)
    outcome = _attach_one(host, settings, name)
    if batch:
        tried = {name}
        # Disks of the burst still arriving while the others are checked are taken too.
        while True:
            names = [other for other in unhandled(host, settings) if other not in tried]
            if not names:
                break
            tried.update(names)
            _attach_each(host, settings, names)
    return outcome


def _attach_one(host: Host, settings: Settings, name: str) -> Outcome:
    with host.lock(f"disk-{name}"):
        outcome, record = _attach(host, settings, name)
        if record is not None:
            state.save(host, name, record)
            if record["ours"]:
                state.unmark(host, name, state.UNTOUCHED)
            else:
                state.mark(host, name, state.UNTOUCHED, str(record["diskseq"]))
    _report(host, outcome)
    if record is not None and record["ours"]:
        # A disk enlarged while the VM was stopped sent no resize event: grow it now.
        from gandi_vm import grow
        from gandi_vm.hooks import run_hook

        grow.disk_resized(host, settings, blockdev.whole_disk(host, name))
        # Outside the lock and after the record, so the hook may call `gandi-vm` itself.
        run_hook(host, settings.hook_dir, "post-disk-attach",
                 [f"/dev/{name}", str(record["fstype"]), str(outcome.mountpoint)])
    return outcome


def _attach(host: Host, settings: Settings, name: str) -> Tuple[Outcome, Optional[state.Record]]:
    """Decide and act for one device; the record is None when nothing needs rewriting."""
    dev = blockdev.read(host, name)
    record = {"device": name, "devno": dev.devno, "diskseq": identity(host, name), "size": dev.size,
              "fstype": "", "label": "",
              "mountpoint": None, "ours": False}

    def done(status: str, reason: str, mountpoint: Optional[str] = None):
        record.update(state=status, reason=reason, mountpoint=mountpoint)
        return Outcome(name, status, reason, mountpoint), record

    def swapped(outcome: swap.Outcome):
        # The platform's swap disk: swap.py decided and acted; it is never mounted.
        record.update(fstype="swap" if outcome.state == swap.ON else record["fstype"])
        return done(outcome.state, f"platform swap, {outcome.reason}")

    handled = swap.handle(host, settings, dev)  # its marks that need no probe
    if handled is not None:
        return swapped(handled)
    if not settings.allow_mount:
        return done(SKIPPED, "CONFIG_ALLOW_MOUNT=0")
    table = mounts.mount_table(host)
    reason = sysfs_skip(dev, system_disks(host, table))
    if reason:
        return done(SKIPPED, reason)
    already = [m.mountpoint for m in mounts.of_device(table, dev.devno, name)]
    if already:
        previous = state.load(host, name)
        ours = previous.get("mountpoint") if previous and previous.get("ours") else None
        # `already` holds kernel paths (symlinks resolved); the record keeps the configured one.
        if ours and (ours in already or host.realpath(str(ours)) in already):
            return Outcome(name, MOUNTED, f"already mounted at {previous['mountpoint']}",
                           previous["mountpoint"]), None
        return done(MOUNTED, f"already mounted at {already[0]} (not by gandi)", already[0])

    sig = blockdev.probe(host, name)
    if sig.error:
        return done(FAILED, f"blkid failed: {sig.error}")
    record.update(fstype=sig.fstype, label=_display(sig.label))
    if swap.marked(sig):  # the label, or a gandiswap name only blkid shows
        handled = swap.handle(host, settings, dev, sig)
        if handled is not None:
            return swapped(handled)
    reason = signature_skip(sig)
    if reason:
        return done(SKIPPED, reason)
    claim = fstab_claim(mounts.fstab(host), f"/dev/{name}", sig, host.realpath)
    if claim:
        return done(SKIPPED, f"listed in /etc/fstab line {claim.lineno} (for {claim.mountpoint})")

    # Past every skip decision: what only a disk to mount needs.
    from gandi_vm import filesystems, labels  # start-up cost (see gandi_vm.cli)

    check = filesystems.check(host, sig.fstype, f"/dev/{name}", settings.fsck_timeout)
    if not check.ok:
        return done(FAILED, f"not mounted: {check.message}")
    log.info("disk %s: %s", name, check.message)

    component = labels.component(sig.label, fallback=name)
    with host.lock("disk-root"):
        mountpoint, why = _mount(host, settings, name, sig.fstype, component)
    if mountpoint is None:
        return done(FAILED, why)
    record["ours"] = True
    return done(MOUNTED, f"{sig.fstype}, label {record['label'] or '(none)'}", mountpoint)


def _display(label: Optional[bytes]) -> str:
    """A label as text for logs and status; repr() of it shows control characters escaped."""
    return "" if label is None else repr(label.decode("utf-8", "backslashreplace"))


def _mount(host: Host, settings: Settings, name: str, fstype: str,
           component: str) -> Tuple[Optional[str], Optional[str]]:
    """Create the mountpoint and mount; returns (mountpoint, None) or (None, why it failed)."""
    root = settings.disk_root
    _makedirs(host, root)
    real_root = host.realpath(root)
    if real_root is None:
        return None, f"disk root {root} resolves outside the system"

    def unusable(path: str) -> Optional[str]:
        if not host.exists(path):
            return None
        if not host.is_dir(path):
            return "not a directory"
        if mounts.mount_at(host, path):
            return "already a mountpoint"
        if host.listdir(path):
            return "not empty (it may hold data)"
        return None

    from gandi_vm import labels  # start-up cost (see gandi_vm.cli)

    mountpoint = labels.choose(root, component, unusable)
    if mountpoint is None:
        return None, f"no free mountpoint for {component!r} under {root}"
    if mountpoint != f"{root}/{component}":
        log.info("disk %s: %s/%s is taken, using %s", name, root, component, mountpoint)
    created = host.mkdir(mountpoint)
    # The label can no longer name a path outside the root, but the tree may hold symlinks.
    if not host.dry_run and host.realpath(mountpoint) != f"{real_root}/{mountpoint.rsplit('/', 1)[1]}":
        if created:
            host.rmdir(mountpoint)
        return None, f"refusing {mountpoint}: it resolves outside {root}"
    result = host.run(["mount", "-t", fstype, "-o", settings.mount_params,
                       host.path(f"/dev/{name}"), host.path(mountpoint)], timeout=MOUNT_TIMEOUT)
    if not result.ok:
        if created:
            host.rmdir(mountpoint)
        return None, f"mount on {mountpoint} failed: {result.why()}"
    return mountpoint, None


def _makedirs(host: Host, path: str) -> None:
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        host.mkdir("/" + "/".join(parts[:depth]))


# -- detach ------------------------------------------------------------------------------------
def detach(host: Host, settings: Settings, dev: str) -> Outcome:
    """Undo what attach did. The device may already be gone (unplugged), so work from the record."""
    name = blockdev.checked_name(dev.rsplit("/", 1)[-1])  # the device may be gone already
    with host.lock(f"disk-{name}"):
        record = state.load(host, name)
        outcome = _detach(host, settings, name, record)
    _report(host, outcome)
    _start_replugged(host, name, str((record or {}).get("diskseq") or ""))
    return outcome


def _start_replugged(host: Host, name: str, diskseq: str) -> None:
    """Start the unit of a new disk that took this name while the old one was being detached.

    systemd starts a device's SYSTEMD_WANTS units in "fail" job mode, which a stop job still
    running on gandi-disk@NAME defeats: the new disk's start is dropped. A start asked from here is
    queued after that stop instead. Only the kernel's diskseq (Linux >= 5.15) tells the disks apart."""
    present = identity(host, name)
    if not diskseq or not present or present == diskseq:
        return
    log.info("disk %s: a new disk took the name %s during the detach: starting its unit", name, name)
    result = host.run(["systemctl", "--no-block", "start", f"gandi-disk@{name}.service"], timeout=15)
    if not result.ok:
        log.warning("disk %s: cannot start gandi-disk@%s.service (%s): run gandi-vm disk attach %s",
                    name, name, result.why(), name)


def _detach(host: Host, settings: Settings, name: str,
            record: Optional[state.Record]) -> Outcome:
    swapped = swap.detach(host, name)  # None unless we hold a swap record for it
    if swapped is not None:
        state.forget(host, name)
        return Outcome(name, swapped.state, f"platform swap, {swapped.reason}")
    if not record or not record.get("ours"):
        state.forget(host, name)
        return Outcome(name, UNCHANGED, "nothing mounted by gandi")
    mountpoint = str(record["mountpoint"])
    mount = mounts.mount_at(host, mountpoint)
    ours = mount is not None and mounts.of_device([mount], str(record.get("devno")), name)
    if ours:
        from gandi_vm.hooks import run_hook  # start-up cost (see gandi_vm.cli)

        run_hook(host, settings.hook_dir, "pre-disk-detach", [f"/dev/{name}", mountpoint])
        result = host.run(["umount", host.path(mountpoint)], timeout=MOUNT_TIMEOUT)
        gone = not host.exists(f"/sys/class/block/{name}")
        if not result.ok and gone:
            # The device was unplugged under a busy mount: detach it lazily, nothing else can work.
            log.warning("disk %s: umount failed (%s), device gone: lazy unmount", name, result.why())
            result = host.run(["umount", "-l", host.path(mountpoint)], timeout=MOUNT_TIMEOUT)
        if not result.ok:
            return Outcome(name, FAILED, f"umount {mountpoint} failed: {result.why()}", mountpoint)
    if host.dry_run or mounts.mount_at(host, mountpoint) is None:
        host.rmdir(mountpoint)  # only if empty: whatever is left there is someone's data
    state.forget(host, name)
    if not ours:
        return Outcome(name, UNCHANGED, f"no longer mounted at {mountpoint}", mountpoint)
    return Outcome(name, UNMOUNTED, f"unmounted from {mountpoint}", mountpoint)


# -- resize ------------------------------------------------------------------------------------
def resize(host: Host, settings: Settings, dev: str) -> List[grow.Outcome]:
    """The platform changed the disk's capacity (gandi-resize@<disk>:<sectors>.service, started
    by the kernel's `change` uevent carrying RESIZE=1): grow what we may on it (grow.py). DEV
    may end in that instance's `:<sectors>`, the size the event announced; only logged."""
    name, sep, sectors = dev.rpartition(":")
    if not (sep and sectors.isdigit() and sectors.isascii()):
        name, sectors = dev, ""
    name = blockdev.kernel_name(host, name)
    if sectors:
        log.info("disk %s: capacity changed to %s sectors", name, sectors)
    disk = blockdev.whole_disk(host, name)
    from gandi_vm import grow

    outcomes = grow.disk_resized(host, settings, disk)
    if not outcomes:
        log.info("disk %s: nothing on it is ours to grow", disk)
    return outcomes


# -- boot --------------------------------------------------------------------------------------
def mount_all(host: Host, settings: Settings) -> List[Outcome]:
    """Attach every eligible disk present at boot. Coldplug's gandi-disk@ units are ordered after
    gandi-mount.service: their gates find these disks marked HANDLED and end without gandi-vm."""
    return _attach_each(host, settings, eligible(host, settings))


def _attach_each(host: Host, settings: Settings, names: Sequence[str]) -> List[Outcome]:
    """Attach each disk, one bad disk never stopping the others, and mark each HANDLED for its
    unit's gate, unless it failed: its own unit then tries again, and fails where it can be seen."""
    outcomes = []
    for name in names:
        try:
            outcome = _attach_one(host, settings, name)
        except Exception as e:  # whatever one disk does, the others are still handled
            log.error("disk %s: failed: %s: %s", name, type(e).__name__, e)
            log.debug("disk %s: details", name, exc_info=True)
            outcome = Outcome(name, FAILED, f"{type(e).__name__}: {e}")
        now = identity(host, name)
        if now and not outcome.failed:
            state.mark(host, name, state.HANDLED, now)
        outcomes.append(outcome)
    return outcomes


# -- status ------------------------------------------------------------------------------------
def status(host: Host, settings: Settings) -> List[Dict[str, object]]:
    """Each eligible or recorded disk: what it is and what gandi decided for it."""
    rows = []
    table = mounts.mount_table(host)
    for name in sorted(set(eligible(host, settings)) | set(state.recorded(host))):
        record = state.load(host, name) or {}
        present = host.exists(f"/sys/class/block/{name}")
        dev = blockdev.read(host, name) if present else None
        if present and not record:
            sig = blockdev.probe(host, name)
            record = {"fstype": sig.fstype, "label": _display(sig.label),
                      "state": "not handled", "reason": "no attach ran for it since boot"}
        mounted = [m.mountpoint for m in mounts.of_device(table, dev.devno, name)] if dev else []
        rows.append({
            "device": name,
            "size": dev.size if dev else record.get("size"),
            "fstype": record.get("fstype") or "",
            "label": record.get("label") or "",
            "mountpoint": mounted[0] if mounted else None,
            "state": record.get("state") if present else "gone",
            "reason": record.get("reason") if present else "device no longer present",
        })
    return rows
