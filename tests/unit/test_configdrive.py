"""configdrive: the historic archive at 512 KiB of the swap disk, read as hostile input."""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import tarfile

import pytest
from fakesys import FakeHost, add_disk

from gandi_vm import configdrive

KiB = 1024
OFFSET = configdrive.OFFSET


def member(name, data=b"", kind=tarfile.REGTYPE, mode=0o644, linkname="", size=None):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = linkname
    info.size = len(data) if size is None else size
    return info, data


def archive(*members, fmt=tarfile.GNU_FORMAT):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is None:  # a header only, whatever size it claims
                header = info.tobuf(tar.format, tar.encoding, tar.errors)
                tar.fileobj.write(header)
                tar.offset += len(header)
                continue
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def device(blob, name="vdb", at=OFFSET, size=None):
    size = size or max(2048 * KiB, at + len(blob) + 64 * KiB)
    content = bytearray(size)
    content[at:at + len(blob)] = blob
    with open(f"/dev/{name}", "wb") as f:
        f.write(bytes(content))


@pytest.fixture
def drive(host, fs):
    add_disk(fs, "vdb", "253:16", 4096)
    return host


HISTORIC = archive(member("gandi/", kind=tarfile.DIRTYPE, mode=0o755),
                   member("gandi/config", b'{"vm_hostname": "h"}'),
                   member("gandi/init", b"#!/bin/sh\nexit 0\n", mode=0o755))


def test_a_historic_archive_is_presented_at_gandi(drive):
    device(HISTORIC)

    result = configdrive.read_archive(drive, "vdb")

    assert result.state == "extracted" and result.members == 3
    assert os.path.islink("/gandi")
    target = os.readlink("/gandi")
    assert target.startswith("var/lib/gandi-vm/drive.")
    assert stat.S_IMODE(os.stat("/" + target).st_mode) == 0o700
    with open("/gandi/config", "rb") as f:
        assert f.read() == b'{"vm_hostname": "h"}'
    assert stat.S_IMODE(os.stat("/gandi/init").st_mode) == 0o755
    assert configdrive.ours(drive) == "/" + target


def test_reading_it_again_changes_nothing_and_a_new_archive_replaces_ours(drive):
    device(HISTORIC)
    configdrive.read_archive(drive, "vdb")
    first = os.readlink("/gandi")

    again = configdrive.read_archive(drive, "vdb")
    assert again.state == "unchanged" and os.readlink("/gandi") == first

    device(archive(member("gandi/config", b"{}")))
    new = configdrive.read_archive(drive, "vdb")
    assert new.state == "extracted" and os.readlink("/gandi") != first
    assert not os.path.exists("/" + first)  # the previous drive directory is removed
    assert not os.path.exists("/gandi/init")


@pytest.mark.parametrize("blob, state", [
    (b"", "missing"),
    (b"\x01" * 600, "missing"),  # no tar header
    (archive(), "missing"),  # an empty tar is all zeros
    (HISTORIC[:1536] + b"\xff" * 512, "corrupt"),  # a bad header after a good one
])
def test_missing_empty_or_corrupt_changes_nothing(drive, caplog, blob, state):
    device(blob)
    caplog.set_level(logging.INFO, "gandi")
    result = configdrive.read_archive(drive, "vdb")
    assert result.state == state
    assert not result.applied and not os.path.lexists("/gandi")
    assert len([r for r in caplog.records if "config drive" in r.message]) == 1
    assert "nothing changed" in result.line and "\n" not in result.line


def test_an_archive_cut_by_the_end_of_the_disk_is_corrupt(drive):
    blob = archive(member("gandi/config", b"x" * 100 * KiB))
    device(blob[:20 * KiB], size=OFFSET + 20 * KiB)
    result = configdrive.read_archive(drive, "vdb")
    assert result.state in ("corrupt", "failed", "refused") and not os.path.lexists("/gandi")


def setuid(name):
    return member(name, b"x", mode=0o4755)


@pytest.mark.parametrize("hostile, words", [
    ([member("etc/passwd", b"root::0:0::/:/bin/sh")], "'etc/passwd' lies outside gandi/"),
    ([member("/gandi/config", b"{}")], "absolute path"),
    ([member("gandi/../etc/shadow", b"x")], "'..'"),
    ([member("gandi/./config", b"x")], "'.' component"),
    ([member("gandi/link", kind=tarfile.SYMTYPE, linkname="/etc/shadow")], "is a symlink"),
    ([member("gandi/hard", kind=tarfile.LNKTYPE, linkname="gandi/config")], "is a hard link"),
    ([member("gandi/dev", kind=tarfile.CHRTYPE)], "is a device"),
    ([member("gandi/blk", kind=tarfile.BLKTYPE)], "is a device"),
    ([member("gandi/fifo", kind=tarfile.FIFOTYPE)], "is a fifo"),
    ([setuid("gandi/suid")], "setuid"),
    ([member("gandi/dir", kind=tarfile.DIRTYPE, mode=0o1777)], "sticky"),
    ([(member("gandi/big", size=configdrive.MAX_MEMBER + 1)[0], None)], "larger than 16 MiB"),
    ([member("gandi", b"x")], "not a directory"),
    ([member("gandi/a\nb", b"x")], "control character"),
    ([member("gandi/a", b"x"), member("gandi/a", b"y")], "appears twice"),
    ([member("gandi/a", b"x"), member("gandi/a/b", b"y")], "inside the file"),
])
def test_a_hostile_member_refuses_the_whole_archive(drive, caplog, hostile, words):
    good = [member("gandi/config", b"{}")]
    device(archive(*good, *hostile))
    result = configdrive.read_archive(drive, "vdb")
    assert result.state == "refused", result.line
    assert words in result.line and "\n" not in result.line
    assert not os.path.lexists("/gandi")
    assert not [d for d in os.listdir("/var/lib/gandi-vm") if d.startswith("drive.")] \
        if os.path.isdir("/var/lib/gandi-vm") else True
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1


def test_a_tar_bomb_of_members_is_refused(drive, monkeypatch):
    monkeypatch.setattr(configdrive, "MAX_MEMBERS", 50)
    device(archive(*[member(f"gandi/f{i}", b"") for i in range(60)]))
    result = configdrive.read_archive(drive, "vdb")
    assert result.state == "refused" and "tar bomb" in result.line


def test_a_tar_bomb_by_total_size_is_refused(drive, monkeypatch):
    monkeypatch.setattr(configdrive, "MAX_TOTAL", 10 * KiB)
    device(archive(*[member(f"gandi/f{i}", b"x" * 4 * KiB) for i in range(4)]))
    result = configdrive.read_archive(drive, "vdb")
    assert result.state == "refused" and "in all" in result.line


def test_a_pax_header_claiming_gigabytes_is_refused_without_reading_it(drive):
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 8 * 1024 ** 3 - 1
    device(header.tobuf(tarfile.USTAR_FORMAT))
    result = configdrive.read_archive(drive, "vdb")
    assert result.state in ("refused", "corrupt") and not os.path.lexists("/gandi")


def test_a_gandi_that_is_not_ours_is_left_alone(drive):
    os.makedirs("/gandi")
    with open("/gandi/config", "w") as f:
        f.write("owner's")
    device(HISTORIC)
    result = configdrive.read_archive(drive, "vdb")
    assert result.state == "refused" and "not made by gandi-vm" in result.line
    with open("/gandi/config") as f:
        assert f.read() == "owner's"


def test_a_foreign_symlink_at_gandi_is_left_alone(drive):
    os.symlink("/etc", "/gandi")
    device(HISTORIC)
    assert configdrive.read_archive(drive, "vdb").state == "refused"
    assert os.readlink("/gandi") == "/etc"


def test_dry_run_reads_and_plans(fs, caplog):
    from fakesys import system

    system(fs)
    add_disk(fs, "vdb", "253:16", 4096)
    device(HISTORIC)
    caplog.set_level(logging.INFO, "gandi")
    result = configdrive.read_archive(FakeHost(dry_run=True), "vdb")
    assert result.state == "extracted" and "would extract 3 members" in result.line
    assert not os.path.lexists("/gandi") and not os.path.exists("/var/lib/gandi-vm")


# -- kernel modules -------------------------------------------------------------------------------
RELEASE = "6.1.0-18-amd64"


def modules_tarball(*members, compress=True):
    blob = archive(*members)
    return gzip.compress(blob) if compress else blob


@pytest.fixture
def kernel(drive, fs):
    fs.create_file("/proc/sys/kernel/osrelease", contents=RELEASE + "\n")
    os.makedirs(f"/lib/modules/{RELEASE}/kernel", exist_ok=True)
    drive.handlers["depmod"] = lambda argv: __import__("gandi_vm.host").host.Result(argv, 0)
    return drive


def test_modules_for_the_running_kernel_are_installed(kernel):
    ko = f"lib/modules/{RELEASE}/extra/gandi.ko"
    tarball = modules_tarball(member("lib/", kind=tarfile.DIRTYPE, mode=0o755),
                              member(ko, b"\x7fELF"))
    other = modules_tarball(member("lib/modules/5.10.0/extra/x.ko", b"x"))
    device(archive(member(f"gandi/modules-{RELEASE}.tar.gz", tarball),
                   member("gandi/modules-5.10.0.tar.gz", other)))

    result = configdrive.read_archive(kernel, "vdb")

    assert result.state == "extracted" and "1 files installed" in result.line
    with open("/" + ko, "rb") as f:
        assert f.read() == b"\x7fELF"
    assert not os.path.exists("/lib/modules/5.10.0")
    assert ["depmod", "-a", RELEASE] in kernel.commands


@pytest.mark.parametrize("bad", [
    member("lib/modules/other/evil.ko", b"x"),
    member(f"lib/modules/{RELEASE}/../../../etc/x", b"x"),
    member(f"lib/modules/{RELEASE}/l", kind=tarfile.SYMTYPE, linkname="/etc/shadow"),
    member(f"lib/modules/{RELEASE}/s.ko", b"x", mode=0o6755),
])
def test_a_hostile_module_tarball_installs_nothing(kernel, caplog, bad):
    tarball = modules_tarball(member(f"lib/modules/{RELEASE}/ok.ko", b"ok"), bad)
    device(archive(member(f"gandi/modules-{RELEASE}.tar.gz", tarball)))
    result = configdrive.read_archive(kernel, "vdb")
    assert result.state == "extracted" and "refused" in result.line
    assert not os.path.exists(f"/lib/modules/{RELEASE}/ok.ko")
    assert "depmod" not in kernel.programs()


def test_a_gzip_bomb_module_tarball_is_refused(kernel, monkeypatch):
    monkeypatch.setattr(configdrive, "MAX_ARCHIVE", 64 * KiB)
    bomb = gzip.compress(b"\0" * (4 * 1024 * KiB))
    with pytest.raises(configdrive.Refused, match="bomb"):
        configdrive.decompress(bomb, limit=64 * KiB)


def test_module_tarball_names():
    assert configdrive.module_tarball_release(f"modules-{RELEASE}.tar.gz") == RELEASE
    assert configdrive.module_tarball_release(f"modules-{RELEASE}.tar.xz") == RELEASE
    assert configdrive.module_tarball_release(f"modules-{RELEASE}.tgz") == RELEASE
    assert configdrive.module_tarball_release("config") is None
