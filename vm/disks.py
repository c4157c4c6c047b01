"""Disk images the hosting platform gives a VM, made on the host as plain files: no loop device,
no mount (sfdisk, mkfs.vfat and mtools write into the file itself).

- the historic platform archive: a tar with gandi/config (JSON) and gandi/init (executable),
  stored 512 KiB into the WHOLE swap disk;
- the swap disk: a GPT whose partition 1, named `gandiswap`, starts at 1 MiB (the archive lives
  in the gap between the partition table and the partition), or a whole disk whose first
  512 KiB are zero (blank: the guest formats it) with the archive after them;
- an OpenStack config drive: a vfat filesystem labelled `config-2` holding
  openstack/latest/meta_data.json and user_data (written with mtools: Debian package mtools);
- cloud-init's NoCloud seed: a vfat filesystem labelled `cidata` with meta-data and user-data;
- a partitioned system disk: the test image's root filesystem in GPT partition 1, named
  `gandiroot`, from 1 MiB (debugfs rewrites its /etc/fstab inside the file).

Used by tests/vm/test_first_boot.py, tests/vm/test_root_growth.py, bench/boot_provision.py and
bench/boot_cost.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

ARCHIVE_OFFSET = 512 * 1024  # where the platform writes its archive, from the disk's first byte
PARTITION_START = 1024 * 1024  # the gandiswap partition starts after the archive area
LINUX_SWAP_GUID = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_TAIL = 1024 * 1024  # room after the last partition for the backup GPT (33 sectors, aligned)
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
TOOLS = {"sfdisk": "fdisk", "mkfs.vfat": "dosfstools", "mmd": "mtools", "mcopy": "mtools",
         "blkid": "util-linux", "debugfs": "e2fsprogs"}


def missing_tools() -> List[str]:
    """The host tools these builders need and lack, as "command (Debian package)"."""
    return [f"{tool} (Debian package {package})" for tool, package in TOOLS.items()
            if shutil.which(tool, path=ENV["PATH"]) is None]


def _run(argv, **kwargs: Any) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=ENV, check=False,
                          **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))}: exit {done.returncode}\n"
                           f"{done.stdout}{done.stderr}")
    return done


def platform_archive(config: Mapping[str, Any], init: Optional[str] = None) -> bytes:
    """The historic archive: gandi/ (0700), gandi/config (JSON, 0600), gandi/init (0755 when
    given), all owned by 0:0 as the platform writes them."""
    buffer = io.BytesIO()

    def member(name: str, mode: int, data: Optional[bytes] = None) -> None:
        info = tarfile.TarInfo(name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = mode
        info.mtime = 1700000000
        if data is None:
            info.type = tarfile.DIRTYPE
            archive.addfile(info)
        else:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        member("gandi", 0o700)
        member("gandi/config", 0o600, json.dumps(config, indent=2).encode() + b"\n")
        if init is not None:
            member("gandi/init", 0o755, init.encode())
    data = buffer.getvalue()
    if len(data) > PARTITION_START - ARCHIVE_OFFSET:
        raise ValueError(f"archive of {len(data)} bytes does not fit before the partition")
    return data


def _write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def gandiswap_disk(path: Path, archive: Optional[bytes] = None, size_mb: int = 128) -> Path:
    """A GPT disk whose partition 1 (from 1 MiB to the end, type Linux swap) is named gandiswap
    and holds nothing yet; the archive (if any) 512 KiB into the whole disk."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    script = (f"label: gpt\n"
              f"start={PARTITION_START // 512}, type={LINUX_SWAP_GUID}, name=gandiswap\n")
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)], input=script)
    if archive is not None:
        _write_at(path, ARCHIVE_OFFSET, archive)
    return path


def blank_disk(path: Path, archive: Optional[bytes] = None, size_mb: int = 128) -> Path:
    """A whole disk with no partition table nor filesystem: its first 512 KiB are zero (blank,
    as the platform hands out a fresh swap disk), the archive (if any) right after them."""
    with open(path, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    if archive is not None:
        _write_at(path, ARCHIVE_OFFSET, archive)
    return path


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def partition_label(path: Path) -> Dict[str, Any]:
    """sfdisk's JSON view of the image's partition table."""
    return json.loads(_run(["sfdisk", "--json", str(path)]).stdout)["partitiontable"]


def vfat_drive(path: Path, label: str, files: Mapping[str, Union[str, bytes]],
               size_mb: int = 16) -> Path:
    """A vfat filesystem labelled `label` holding `files` ({"dir/name": content}), filled with
    mtools (mmd, mcopy: no mount, and this host's kernel may lack vfat)."""
    if path.exists():
        path.unlink()
    _run(["mkfs.vfat", "-C", "-n", label, str(path), str(size_mb * 1024)])
    image = ["-i", str(path)]
    directories = sorted({"/".join(name.split("/")[:depth])
                          for name in files for depth in range(1, name.count("/") + 1)})
    if directories:
        _run(["mmd", *image, *(f"::/{d}" for d in directories)])
    with tempfile.TemporaryDirectory(prefix="gandi-vfat-") as tmp:
        for number, (name, content) in enumerate(files.items()):
            source = Path(tmp) / str(number)
            source.write_bytes(content.encode() if isinstance(content, str) else content)
            _run(["mcopy", *image, str(source), f"::/{name}"])
    return path


def config_drive(path: Path, meta_data: Mapping[str, Any],
                 user_data: Optional[Union[str, bytes]] = None, label: str = "config-2",
                 size_mb: int = 16) -> Path:
    """An OpenStack config drive: vfat labelled config-2 with openstack/latest/meta_data.json and
    user_data."""
    files: Dict[str, Union[str, bytes]] = {
        "openstack/latest/meta_data.json": json.dumps(meta_data, indent=2) + "\n"}
    if user_data is not None:
        files["openstack/latest/user_data"] = user_data
    return vfat_drive(path, label, files, size_mb)


def nocloud_seed(path: Path, meta_data: str, user_data: str) -> Path:
    """cloud-init's NoCloud seed: vfat labelled cidata with meta-data and user-data (YAML text),
    which ds-identify recognizes by the label alone, so cloud-init runs its NoCloud datasource."""
    return vfat_drive(path, "cidata", {"meta-data": meta_data, "user-data": user_data})


def filesystem_label(path: Path) -> str:
    """What blkid reads as the image's label (the guest's libblkid reads it the same way)."""
    return _run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(path)]).stdout.strip()


def _copy_data(source: Path, target: Path, offset: int) -> None:
    """Copy the data extents of a sparse file into `target` at `offset` (its holes stay holes:
    the 2 GiB root filesystem holds about 500 MB)."""
    with open(source, "rb") as src, open(target, "r+b") as dst:
        end = os.fstat(src.fileno()).st_size
        position = 0
        while position < end:
            try:
                start = os.lseek(src.fileno(), position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            stop = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            src.seek(start)
            dst.seek(offset + start)
            left = stop - start
            while left:
                chunk = src.read(min(left, 8 << 20))
                dst.write(chunk)
                left -= len(chunk)
            position = stop
        dst.flush()
        os.fsync(dst.fileno())


def gpt_root_image(image: Path, fstab: str = "/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n") -> Path:
    """The test image's system disk, partitioned: a GPT whose partition 1, named `gandiroot`,
    starts at 1 MiB and holds a copy of rootfs.raw's ext4 filesystem, exactly filling it (1 MiB
    after it for the backup GPT), with /etc/fstab saying `fstab`. Boot it with root=/dev/vda1.

    Derived once per image and kept next to it (IMAGE/rootfs-gpt.raw: vm/build-image's cache
    removes it with its image); written as a plain file (sfdisk, then debugfs on the filesystem
    at its offset: no loop device, no mount, the host is left as it was)."""
    target = image / "rootfs-gpt.raw"
    if target.exists():
        return target
    source = image / "rootfs.raw"
    fs_size = source.stat().st_size
    partial = image / "rootfs-gpt.raw.partial"
    partial.unlink(missing_ok=True)
    with open(partial, "wb") as f:
        f.truncate(PARTITION_START + fs_size + GPT_TAIL)
    script = (f"label: gpt\n"
              f"start={PARTITION_START // 512}, size={fs_size // 512}, type={LINUX_FS_GUID}, "
              f"name=gandiroot\n")
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(partial)], input=script)
    _copy_data(source, partial, PARTITION_START)
    filesystem = f"{partial}?offset={PARTITION_START}"  # e2fsprogs' unix io option
    with tempfile.TemporaryDirectory(prefix="gandi-gptroot-") as tmp:
        new = Path(tmp) / "fstab"
        new.write_text(fstab)
        commands = Path(tmp) / "commands"
        commands.write_text(f"rm /etc/fstab\nwrite {new} /etc/fstab\n"
                            "sif /etc/fstab mode 0100644\nsif /etc/fstab uid 0\n"
                            "sif /etc/fstab gid 0\n")
        _run(["debugfs", "-w", "-f", str(commands), filesystem])
    # debugfs exits 0 whatever its commands did: read the file back.
    written = _run(["debugfs", "-R", "cat /etc/fstab", filesystem]).stdout
    if written != fstab:
        raise RuntimeError(f"debugfs left /etc/fstab in {partial} as {written!r}")
    _run(["e2fsck", "-f", "-n", filesystem])
    partial.rename(target)
    return target
