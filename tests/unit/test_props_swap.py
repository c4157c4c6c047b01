"""Properties of the platform swap's decisions and of the config drive's archive validator on
hostile input: arbitrary bytes where the archive should be, and generated archives with hostile
member names, types and modes. Either the archive is refused whole in one line naming a member,
or every member it accepted lies safely under gandi/; never another exception, never a hang."""

from __future__ import annotations

import io
import os
import posixpath
import tarfile

from hypothesis import given, strategies as st

from gandi_vm import configdrive, swap
from gandi_vm.blockdev import Signature
from gandi_vm.host import Host

TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
         tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z"]
COMPONENTS = st.one_of(st.sampled_from(["gandi", "..", ".", "", "config", "init", "etc", "/",
                                        "a\nb", "\x1b[2J", "é", "x" * 300, "\\", "gandi "]),
                       st.text(max_size=12))
NAMES = st.lists(COMPONENTS, min_size=1, max_size=5).map("/".join)


@st.composite
def members(draw):
    info = tarfile.TarInfo(draw(NAMES))
    info.type = draw(st.sampled_from(TYPES))
    info.mode = draw(st.sampled_from([0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o777, 0o7777, 0]))
    info.linkname = draw(st.sampled_from(["", "/etc/shadow", "../x", "gandi/config"]))
    data = draw(st.binary(max_size=64)) if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else b""
    info.size = len(data)
    return info, data


def build(items, fmt):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for info, data in items:
            try:
                tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
            except (ValueError, UnicodeError):
                continue  # a name this format cannot hold: not in the archive
    return buffer.getvalue()


class Memory(Host):
    """A Host whose /dev/vdb is a bytes buffer; nothing else is read, and writing is refused."""

    def __init__(self, blob: bytes):
        super().__init__("/nonexistent-root", dry_run=True)
        self.blob = blob

    def read_bytes(self, guest_path, size, offset=0):
        assert guest_path == "/dev/vdb"
        return self.blob[offset:offset + size]

    def exists(self, guest_path):
        return False

    def readlink(self, guest_path):
        return None


def check(blob: bytes):
    host = Memory(bytes(configdrive.OFFSET) + blob + bytes(4096))
    result = configdrive.read_archive(host, "vdb")
    assert result.state in ("extracted", "missing", "empty", "corrupt", "refused"), result
    assert "\n" not in result.line and result.line.isprintable(), result.line
    if result.state == "refused":
        assert "nothing changed" in result.line
    return result


def accepted_names(blob: bytes):
    """What the validator accepted, checked member by member, or None if refused or unreadable."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(blob), mode="r:")
        return configdrive.validate(tar, "gandi", "/nonexistent-root/var/lib/gandi-vm")
    except configdrive.Refused as e:
        assert "\n" not in str(e) and str(e).isprintable()
        return None
    except (tarfile.TarError, EOFError, ValueError, OSError, UnicodeError):
        return None


@given(st.lists(members(), max_size=6), st.sampled_from([tarfile.GNU_FORMAT, tarfile.PAX_FORMAT,
                                                         tarfile.USTAR_FORMAT]))
def test_generated_archives_are_refused_whole_or_safe(items, fmt):
    blob = build(items, fmt)
    check(blob)
    accepted = accepted_names(blob)
    for member in accepted or ():
        assert member.kind in ("file", "dir")
        assert member.name == "gandi" or member.name.startswith("gandi/")
        parts = member.name.split("/")
        assert ".." not in parts and "." not in parts and "" not in parts
        assert posixpath.normpath(member.name) == member.name
        assert member.mode & 0o7000 == 0
        assert member.name.isprintable()


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_where_the_archive_should_be(blob):
    check(blob)


@given(st.binary(min_size=1, max_size=1024), st.integers(0, 3))
def test_garbage_after_a_valid_header(garbage, at):
    good = build([(tarfile.TarInfo("gandi/config"), b"")], tarfile.GNU_FORMAT)
    check(good[:512 * at] + garbage)


# -- the device-finding decision on arbitrary facts -------------------------------------------
TEXT = st.text(max_size=20)


@given(name=st.sampled_from(["vdb", "sdb", "xvda2", "xvdz1", "xvdz", "vdb1", "nvme0n1p2"]),
       configured=st.one_of(st.none(), st.sampled_from(["", "vdb", "sdb"])),
       partname=st.one_of(st.sampled_from(["gandiswap", "GANDISWAP", ""]), TEXT),
       fstype=st.sampled_from(["", "swap", "ext4", "swsuspend"]),
       label=st.one_of(st.none(), st.sampled_from(["swap", "SWAP", "swap\\x00", ""]), TEXT),
       present=st.booleans())
def test_kind_is_one_of_the_marks_in_order(name, configured, partname, fstype, label, present):
    properties = {"ID_FS_TYPE": fstype} if fstype else {}
    if label is not None:
        properties["ID_FS_LABEL_ENC"] = label
    kind = swap.kind_of(name, configured, partname, Signature(properties), present)
    if configured != "":
        assert kind == (swap.CONFIGURED if configured == name else None)
    elif partname == "gandiswap":
        assert kind == swap.GANDISWAP
    elif fstype == "swap" and label == "swap":
        assert kind == swap.LABELLED
    elif name in swap.FIXED_NAMES and not present:
        assert kind == swap.FIXED
    else:
        assert kind is None


@given(kind=st.sampled_from([swap.CONFIGURED, swap.GANDISWAP, swap.LABELLED, swap.FIXED]),
       size=st.sampled_from([0, 1 << 30]), read_only=st.booleans(),
       holders=st.sampled_from([(), ("dm-0",)]), partitions=st.sampled_from([(), ("x1",)]),
       mounted=st.sampled_from([(), ("/srv/a",)]), active=st.booleans(),
       fstab_line=st.one_of(st.none(), st.integers(1, 9)), probe_error=st.sampled_from(["", "e"]),
       ambivalent=st.booleans(), fstype=st.sampled_from(["", "swap", "ext4", "swsuspend"]),
       partition_table=st.sampled_from(["", "gpt"]), blank=st.one_of(st.none(), st.booleans()),
       blank_error=st.sampled_from(["", "EIO"]))
def test_the_decision_never_formats_what_may_hold_data(**facts):
    f = swap.Facts(**facts)
    decision = swap.decide(f)
    assert decision.action in (swap.ACTIVE, swap.FORMAT, swap.REUSE, swap.REFUSE, swap.NOT_OURS)
    assert decision.reason and "\n" not in decision.reason
    if decision.action == swap.FORMAT:
        assert not f.active and f.size and not f.read_only and not f.mounted and not f.holders
        assert not f.partitions and not f.fstype and not f.partition_table and not f.ambivalent
        assert not f.probe_error and f.fstab_line is None
        assert f.blank or f.kind == swap.GANDISWAP
    if decision.action == swap.REUSE:
        assert f.fstype == "swap" and not f.mounted
    if decision.action == swap.NOT_OURS:
        assert f.kind == swap.FIXED
    if f.active:
        assert decision.action == swap.ACTIVE


def test_no_file_was_written_by_the_properties():
    assert not os.path.exists("/nonexistent-root")
