"""OpenStack config drive (a filesystem labelled config-2), so the same image boots on
OpenStack-based platforms: applied like gandi/config (gandi_vm/provision.py).

The drive is found by its label (/dev/disk/by-label/config-2, else blkid), mounted read-only,
nosuid,nodev,noexec on a private directory under /run/gandi (0700; never under the disk root,
where gandi-vm mounts the owner's disks), read (openstack/latest/meta_data.json and user_data,
bounded, links not followed), and always unmounted before anything is applied.

meta_data.json: `uuid` is the instance id, `hostname`, and `public_keys` (name -> key) go to
root's authorized_keys, or to CONFIG_PROVISION_USER's (created if missing). user_data that starts
with #! is copied to a root-only file and run once per instance with CONFIG_INIT_TIMEOUT;
anything else (cloud-config, MIME) is ignored with one line: gandi-vm is not cloud-init.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Tuple

from gandi_vm import log
from gandi_vm.host import Host, lines
from gandi_vm.provision import (MAX_DOCUMENT, STATE_DIR, Applied, ProvisionError, declare,
                                gather, parse_openstack, read_bounded, run_script)
from gandi_vm.sysfs import quoted


LABELS = ("config-2", "CONFIG-2")  # vfat labels are often upper case
MOUNT_DIR = "/run/gandi/config-2"
META_DATA = "openstack/latest/meta_data.json"
USER_DATA = "openstack/latest/user_data"
USER_SCRIPT = f"{STATE_DIR}/user-data"  # a root-only copy: the drive itself is mounted noexec
MAX_USER_DATA = 16 << 20  # OpenStack limits user_data to 64 KiB base64; a little room
MOUNT_TIMEOUT = 30
PROBE_TIMEOUT = 10
_DEVICE = re.compile(r"/dev/[A-Za-z0-9._/:-]+")


def find_device(host: Host) -> Optional[str]:
    """The config-2 filesystem's device: the udev link when there is one (no process), else
    what blkid finds by probing (the link may not exist yet early in boot)."""
    for label in LABELS:
        link = f"/dev/disk/by-label/{label}"
        if host.exists(link):
            device = host.realpath(link)
            if device is not None and _DEVICE.fullmatch(device):
                return device
    for label in LABELS:
        # -c /dev/null: probe the devices now, not a cache an image may have brought along.
        result = host.run(["blkid", "-c", "/dev/null", "-t", f"LABEL={label}", "-o", "device"],
                          timeout=PROBE_TIMEOUT, changes=False)
        found = [line.strip() for line in lines(result.stdout) if line.strip()] if result.ok else []
        if found and _DEVICE.fullmatch(found[0]):
            if len(found) > 1:
                log.warning("provision: several config-2 filesystems (%s), using %s",
                            ", ".join(quoted(f, 40) for f in found[:4]), found[0])
            return found[0]
    return None


def read_drive(host: Host, directory: str) -> Tuple[Optional[bytes], Optional[bytes], List[str]]:
    """(meta_data.json bytes, user_data bytes, problems) from a mounted drive's directory."""
    problems: List[str] = []
    meta = user = None
    for name, limit in ((META_DATA, MAX_DOCUMENT), (USER_DATA, MAX_USER_DATA)):
        path = f"{directory}/{name}"
        if not host.exists(path):
            continue
        if not host.is_file(path):
            problems.append(f"config-2 {name}: not a regular file (a link?), not read")
            continue
        try:
            data = read_bounded(host, path, limit)
        except ProvisionError as e:
            problems.append(f"config-2 {name}: larger than {limit} bytes, not read"
                            if "larger" in str(e) else str(e))
            continue
        except OSError as e:
            problems.append(f"config-2 {name}: {e.strerror or e}")
            continue
        if name == META_DATA:
            meta = data
        else:
            user = data
    return meta, user, problems


def provision(host: Host, settings: Any) -> Optional[Applied]:
    """Apply a config-2 drive; None when there is none."""
    device = find_device(host)
    if device is None:
        return None
    applied = Applied()
    origin = f"config-2 {device}"
    if host.dry_run:
        # Mounting is a change: a dry run says what it would read, and stops there.
        log.info("(dry run) provision: would mount %s read-only on %s and apply %s", device,
                 MOUNT_DIR, META_DATA)
        return applied
    meta, user_data, problems = _read_mounted(host, device)
    for problem in problems:
        log.warning("provision: %s", problem)
        applied.skipped.append(problem)
    if meta is None:
        if not problems:
            applied.skipped.append(f"{origin}: no {META_DATA}")
            log.warning("provision: %s: no %s", origin, META_DATA)
        return applied
    try:
        request = parse_openstack(meta, gather(host, settings), settings.provision_user,
                                  origin=f"{origin} {META_DATA}")
    except ProvisionError as e:
        log.warning("provision: %s", e)
        applied.skipped.append(str(e))
        return applied
    declare(host, settings, request, applied)
    if user_data is not None and request.instance_id is not None:
        _user_data(host, settings, user_data, request.instance_id, applied)
    return applied


def _read_mounted(host: Host, device: str) -> Tuple[Optional[bytes], Optional[bytes], List[str]]:
    host.mkdir("/run/gandi", 0o755)
    if not host.mkdir(MOUNT_DIR, 0o700) and not host.is_dir(MOUNT_DIR):
        return None, None, [f"{MOUNT_DIR} is not a directory, config-2 not read"]
    try:
        result = host.run(["mount", "-t", "iso9660,vfat", "-o", "ro,nosuid,nodev,noexec",
                           device, host.path(MOUNT_DIR)], timeout=MOUNT_TIMEOUT)
        if not result.ok:
            return None, None, [f"config-2 {device}: mount failed: {result.why()}"]
        try:
            return read_drive(host, MOUNT_DIR)
        finally:
            done = host.run(["umount", host.path(MOUNT_DIR)], timeout=MOUNT_TIMEOUT)
            if not done.ok:
                log.warning("provision: umount %s: %s; lazily detached", MOUNT_DIR, done.why())
                host.run(["umount", "-l", host.path(MOUNT_DIR)], timeout=MOUNT_TIMEOUT)
    finally:
        host.rmdir(MOUNT_DIR)


def _user_data(host: Host, settings: Any, data: bytes, instance_id: str, applied: Applied) -> None:
    if not data.startswith(b"#!"):
        kind = "cloud-config" if data.startswith(b"#cloud-config") else "not a #! script"
        log.info("provision: config-2 user_data ignored (%s): only a #! script is run", kind)
        return
    from gandi_vm.provision import record

    script = record(host).get("script")
    if isinstance(script, dict) and script.get("instance") == instance_id:
        log.info("provision: user_data already ran for this instance (%s), not run again",
                 script.get("ran_at"))
        return
    # A fresh root-only copy: the drive is mounted noexec, and is unmounted by now.
    host.mkdir(STATE_DIR, 0o755)
    host.remove(USER_SCRIPT)
    host.write_text(USER_SCRIPT, data.decode("utf-8", "surrogateescape"), mode=0o700)
    run_script(host, settings, USER_SCRIPT, instance_id, applied)
