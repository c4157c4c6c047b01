"""Properties of every parser of outside data on the disk side: labels, the kernel's mount and
swap tables, /etc/fstab, blkid's udev output, sysfs attributes, our own records read back, and
the status rendering of all of them.

The contract: a parser gives its own answer (an empty list, None, a fallback name, a record
refused) or its module's own error, never another exception, never a hang. Inputs are built as a
file read with surrogateescape gives them: any code point, undecodable bytes as lone surrogates,
and the separators that Python honours and the kernel does not. Hosts are a dict of texts or a
temporary directory made in the test body (pyfakefs's `fs` fixture is per test, not per example).
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from typing import Dict, List

import yaml
from hypothesis import given
from hypothesis import strategies as st
from test_labels import assert_safe

from gandi_vm import blockdev, disk, labels, mounts, state, status
from gandi_vm.config import Settings
from gandi_vm.host import Host, Result

SETTINGS = Settings()
# Pieces that break naive parsers: separators Python honours, escapes, NUL, an undecodable byte.
TRICKY = st.sampled_from(["\n", "\x0b", "\x0c", "\x1c", "\x1e", "\x85", "\u2028", "\u2029", "\0",
                          "\udce9", "\\", "\\040", "\\000", "\\777", "\\x2f", " ", "\t", "-", "#",
                          "=", "/", "..", "LABEL=", "UUID="])
PIECES = st.one_of(st.text(max_size=6), TRICKY)
TEXT = st.lists(PIECES, max_size=12).map("".join)
FILE_TEXT = st.lists(st.one_of(PIECES, st.just("\n")), max_size=40).map("".join)
# The kernel escapes these four in a path it shows in mountinfo and swaps (seq_path).
KERNEL_ESCAPED = b" \t\n\\"


def as_read(raw: bytes) -> str:
    """Bytes as Host.read_text gives them."""
    return raw.decode("utf-8", "surrogateescape")


def kernel_escape(raw: bytes) -> str:
    """A path as the kernel writes it in /proc/self/mountinfo and /proc/swaps."""
    return as_read(b"".join(b"\\%03o" % byte if byte in KERNEL_ESCAPED else bytes([byte])
                            for byte in raw))


def blkid_encode(raw: bytes) -> str:
    """A label as blkid_encode_string writes ID_FS_LABEL_ENC: valid UTF-8 characters kept,
    whitespace, backslash and undecodable bytes as \\xNN."""
    out = []
    for char in as_read(raw):
        if char.isspace() or char == "\\" or "\udc80" <= char <= "\udcff" or not char.isprintable():
            out.append("".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogateescape")))
        else:
            out.append(char)
    return "".join(out)


NOTHING_FOUND = Result(["blkid"], 2)  # blkid's exit status when a device holds no signature


class TextHost(Host):
    """A Host whose files are a dict of texts and whose blkid prints a canned answer."""

    def __init__(self, files: Dict[str, str], blkid: Result = NOTHING_FOUND):
        super().__init__("/")
        self.files = files
        self.blkid = blkid

    def read_text(self, guest_path: str) -> str:
        try:
            return self.files[guest_path]
        except KeyError:
            raise FileNotFoundError(guest_path) from None

    def run(self, argv, timeout, changes=True) -> Result:
        return self.blkid


# -- labels ------------------------------------------------------------------------------------
LABEL_BYTES = st.one_of(st.binary(max_size=300),
                        st.lists(PIECES, max_size=20).map(lambda p: "".join(p).encode(
                            "utf-8", "surrogateescape")))


@given(LABEL_BYTES)
def test_any_label_is_one_safe_component_inside_the_root(label):
    name = labels.component(label, "vdb")
    assert_safe(name)
    mountpoint = labels.choose("/srv", name, lambda path: None)
    assert posixpath.dirname(mountpoint) == "/srv"
    assert posixpath.normpath(mountpoint) == mountpoint


@given(LABEL_BYTES)
def test_a_label_survives_blkid_encoding_and_probe(label):
    out = f"ID_FS_LABEL_ENC={blkid_encode(label)}\nID_FS_TYPE=ext4\nID_FS_USAGE=filesystem\n"
    sig = blockdev.probe(TextHost({}, Result([], 0, out)), "vdb")
    assert sig.label == label
    assert (sig.fstype, sig.usage) == ("ext4", "filesystem")


@given(TEXT)
def test_decode_udev_string_takes_anything(encoded):
    assert isinstance(blockdev.decode_udev_string(encoded), bytes)


@given(FILE_TEXT, st.sampled_from([0, 2, 4, 8]))
def test_probe_takes_any_blkid_output(out, code):
    sig = blockdev.probe(TextHost({}, Result([], code, out)), "vdb")
    assert all("\n" not in key + value for key, value in sig.properties.items())
    assert isinstance(sig.label, (bytes, type(None)))
    assert disk.signature_skip(sig) is None or isinstance(disk.signature_skip(sig), str)


# -- mount tables and fstab --------------------------------------------------------------------
@given(st.binary(max_size=60))
def test_unescape_undoes_the_kernels_escapes(raw):
    assert mounts.unescape(kernel_escape(raw)).encode("utf-8", "surrogateescape") == raw


@given(TEXT)
def test_unescape_takes_anything_read_from_a_file(field):
    assert isinstance(mounts.unescape(field), str)


@given(st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
def test_a_mountinfo_row_reads_back_as_the_kernel_wrote_it(mountpoint, source):
    row = (f"31 22 253:32 / {kernel_escape(mountpoint)} rw shared:1 - ext4 "
           f"{kernel_escape(source)} rw\n")
    [mount] = mounts.mount_table(TextHost({"/proc/self/mountinfo": row}))
    assert mount.mountpoint.encode("utf-8", "surrogateescape") == mountpoint
    assert mount.source.encode("utf-8", "surrogateescape") == source
    assert (mount.devno, mount.fstype) == ("253:32", "ext4")


@given(st.lists(st.binary(min_size=1, max_size=30), max_size=4))
def test_swaps_read_back_as_the_kernel_wrote_them(paths):
    text = "Filename\tType\tSize\tUsed\tPriority\n" + "".join(
        f"{kernel_escape(p)}\tfile\t1048572\t0\t-2\n" for p in paths)
    found = mounts.active_swaps(TextHost({"/proc/swaps": text}))
    assert [p.encode("utf-8", "surrogateescape") for p in found] == paths


@given(FILE_TEXT)
def test_tables_take_any_text(text):
    host = TextHost({"/proc/self/mountinfo": text, "/proc/swaps": text, "/etc/fstab": text})
    table = mounts.mount_table(host)
    assert len(table) <= text.count("\n") + 1
    assert isinstance(mounts.active_swaps(host), list)
    entries = mounts.fstab(host)
    assert all(entry.spec and not entry.spec.startswith("#") for entry in entries)
    assert all(1 <= entry.lineno <= text.count("\n") + 1 for entry in entries)


@given(FILE_TEXT, LABEL_BYTES)
def test_fstab_claim_takes_any_fstab(text, label):
    sig = blockdev.Signature({"ID_FS_LABEL_ENC": blkid_encode(label), "ID_FS_UUID": "1234",
                              "ID_PART_ENTRY_NAME": as_read(label)})
    entries = mounts.fstab(TextHost({"/etc/fstab": text}))
    claim = disk.fstab_claim(entries, "/dev/vdb", sig, lambda path: None)
    assert claim is None or claim in entries


@given(LABEL_BYTES.filter(bool), st.sampled_from(['"', "'"]))
def test_fstab_names_a_label_by_its_escaped_bytes(label, quote):
    # fstab(5) escapes as mountinfo does; quoted, as a label may itself hold quotes.
    spec = f"LABEL={quote}{kernel_escape(label)}{quote}"
    entries = mounts.fstab(TextHost({"/etc/fstab": f"{spec} /data ext4 defaults 0 2\n"}))
    sig = blockdev.Signature({"ID_FS_LABEL_ENC": blkid_encode(label)})
    assert disk.fstab_claim(entries, "/dev/vdb", sig, lambda path: None) == entries[0]


# -- sysfs -------------------------------------------------------------------------------------
@given(st.lists(st.binary(max_size=30), min_size=5, max_size=5))
def test_sysfs_garbage_gives_facts_not_exceptions(values):
    with tempfile.TemporaryDirectory() as root:
        base = os.path.join(root, "sys/class/block/vdb1")
        os.makedirs(os.path.join(base, "holders"))
        for name, value in zip(("size", "partition", "ro", "dev", "diskseq"), values):
            with open(os.path.join(base, name), "wb") as f:
                f.write(value)
        dev = blockdev.read(Host(root), "vdb1")
    assert dev.size >= 0 and dev.size % 512 == 0
    assert dev.partition_number is None or dev.partition_number >= 0
    assert isinstance(dev.read_only, bool) and isinstance(dev.devno, str)


# -- our own records, read back ----------------------------------------------------------------
def nested(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
                    nested, max_leaves=10)
FIELDS = ["device", "devno", "diskseq", "size", "fstype", "label", "mountpoint", "ours", "state",
          "reason"]
RECORD = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON | TEXT.map(lambda t: "/" + t), max_size=10)
    .map(lambda r: json.dumps(r).encode()),
    st.binary(max_size=60),
    st.integers(1, 5000).map(lambda depth: b"[" * depth),
)


@given(RECORD)
def test_any_record_is_refused_or_safe_to_act_on(content):
    with tempfile.TemporaryDirectory() as root:
        host = Host(root)
        for directory in ("run/gandi/disk", "proc/self", "sys/class/block", "srv"):
            os.makedirs(os.path.join(root, directory))
        open(os.path.join(root, "proc/self/mountinfo"), "w").close()
        with open(os.path.join(root, "run/gandi/disk/vdb.json"), "wb") as f:
            f.write(content)
        record = state.load(host, "vdb")
        if record is not None:
            mountpoint = record.get("mountpoint")
            assert mountpoint is None or (mountpoint.startswith("/") and "\0" not in mountpoint)
        rows = disk.status(host, SETTINGS)
        # An empty file is a record the units' gate forgot (it empties, rm being a process).
        assert [row["state"] for row in rows] == (["gone"] if content else [])
        status.render(rows, [], "text")
        status.render(rows, [], "yaml")
        assert disk.detach(host, SETTINGS, "vdb").state in (disk.UNCHANGED, disk.UNMOUNTED)


# -- status ------------------------------------------------------------------------------------
CELL = st.one_of(st.none(), st.integers(), TEXT, st.lists(TEXT, max_size=3))


def neutral(value: object) -> object:
    """The same shape with harmless text, to count the lines a rendering should have."""
    if isinstance(value, str):
        return "x"
    if isinstance(value, list):
        return [neutral(v) for v in value]
    if isinstance(value, dict):
        return {k: neutral(v) for k, v in value.items()}
    return value


def printable_lines(text: str) -> List[str]:
    found = text.split("\n")
    assert all(line.isprintable() for line in found), text
    return found


DISK_ROWS = st.lists(st.fixed_dictionaries({c: CELL for c in status.COLUMNS}), max_size=3)
IFACE_ROWS = st.lists(st.fixed_dictionaries(
    {**{c: CELL for c in status.IFACE_COLUMNS},
     "lease": st.none() | st.dictionaries(st.sampled_from(["dns", "search", "router"]), CELL)}),
    max_size=2)


@given(DISK_ROWS, IFACE_ROWS)
def test_status_text_prints_nothing_unprintable(disks, interfaces):
    text = status.render(disks, interfaces, "text")
    shape = status.render(neutral(disks), neutral(interfaces), "text")
    assert len(printable_lines(text)) == len(shape.split("\n"))


@given(DISK_ROWS, IFACE_ROWS)
def test_status_yaml_is_printable_ascii_and_reads_back(disks, interfaces):
    text = status.render(disks, interfaces, "yaml")
    assert text.isascii()
    printable_lines(text)
    assert yaml.safe_load(text) == {"disks": disks, "interfaces": interfaces, "cpus": None,
                                    "memory": None}
