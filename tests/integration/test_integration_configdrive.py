"""The historic config drive read from real loop devices: a historic archive at 512 KiB is
presented at /gandi; hostile archives (traversal, links, a tar bomb) change nothing. The Host is
rooted in a temporary directory whose dev/NAME is the real device node, so this machine's own
/gandi and /var/lib are never touched."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from gandi_vm import configdrive
from gandi_vm.host import Host

OFFSET = 512 * 1024


def archive(*members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = extra.get("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            info.linkname = extra.get("linkname", "")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def regular(name, data, **extra):
    return (name, data, tarfile.REGTYPE, extra)


def drive(env, blob: bytes):
    """A loop device whose bytes at 512 KiB are `blob`, and a Host rooted where dev/NAME is it."""
    def prepare(image: Path) -> None:
        with open(image, "r+b") as f:
            f.seek(OFFSET)
            f.write(blob)

    disk = env.disk(None, size_mb=max(4, (OFFSET + len(blob)) // (1024 * 1024) + 2), prepare=prepare)
    root = env.tmp / "guest"
    (root / "dev").mkdir(parents=True, exist_ok=True)
    os.symlink(disk.dev, root / "dev" / disk.name)
    return Host(str(root)), disk.name, root


def test_a_historic_archive_is_extracted_and_presented(env):
    blob = archive(("gandi", b"", tarfile.DIRTYPE, {}), regular("gandi/config", b'{"a": 1}'),
                   regular("gandi/init", b"#!/bin/sh\n", mode=0o755))
    host, name, root = drive(env, blob)

    result = configdrive.read_archive(host, name)

    assert result.state == "extracted", result.line
    assert (root / "gandi" / "config").read_bytes() == b'{"a": 1}'
    assert stat.S_IMODE((root / "gandi" / "init").stat().st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "gandi").st_mode) == 0o700
    assert configdrive.read_archive(host, name).state == "unchanged"


@pytest.mark.parametrize("hostile", [
    [regular("gandi/../../etc/cron.d/x", b"* * * * * root sh\n")],
    [regular("/gandi/config", b"{}")],
    [("gandi/config", b"", tarfile.SYMTYPE, {"linkname": "/etc/shadow"})],
    [("gandi/hard", b"", tarfile.LNKTYPE, {"linkname": "etc/passwd"})],
    [regular("gandi/su", b"x", mode=0o4755)],
])
def test_a_hostile_archive_changes_nothing(env, hostile):
    host, name, root = drive(env, archive(regular("gandi/ok", b"ok"), *hostile))

    result = configdrive.read_archive(host, name)

    assert result.state == "refused" and "nothing changed" in result.line, result.line
    assert not os.path.lexists(root / "gandi")
    assert not (root / "etc").exists()
    store = root / "var/lib/gandi-vm"
    assert not store.exists() or not [p for p in os.listdir(store) if p.startswith("drive.")]


def test_a_tar_bomb_is_refused(env, monkeypatch):
    monkeypatch.setattr(configdrive, "MAX_TOTAL", 1024 * 1024)
    blob = archive(*[regular(f"gandi/f{i}", bytes(256 * 1024)) for i in range(6)])
    host, name, root = drive(env, blob)

    result = configdrive.read_archive(host, name)

    assert result.state == "refused" and "tar bomb" in result.line, result.line
    assert not os.path.lexists(root / "gandi")


def test_a_blank_device_has_no_drive(env):
    host, name, root = drive(env, b"")
    result = configdrive.read_archive(host, name)
    assert result.state == "missing" and not os.path.lexists(root / "gandi")
