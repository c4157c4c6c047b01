"""disk.attach end to end on a fake system: what ends up in the tree, the state record, the
Outcome, and the commands the host was asked to run."""

from __future__ import annotations

import io
import json
import os
import stat
from gandi_vm.record import replace

import pytest
from fakesys import FakeHost, add_disk, blkid_udev, write_swaps

from gandi_vm import disk, mounts
from gandi_vm.config import Settings
from gandi_vm.host import Result

SETTINGS = Settings()
MOUNT_OPTIONS = SETTINGS.mount_params
STATE = "/run/gandi/disk/vdb.json"
HOOK = "/etc/gandi/hooks/post-disk-attach"


@pytest.fixture
def vdb(host, fs):
    """The plain guest plus vdb (1 GiB) carrying an ext4 filesystem labelled 'data'."""
    add_disk(fs, "vdb", "253:16", 2097152)
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data", uuid="1111-2222"))
    return host


def record(name="vdb"):
    with open(f"/run/gandi/disk/{name}.json", encoding="utf-8") as f:
        return json.load(f)


def mounted_at(host, mountpoint):
    mount = mounts.mount_at(host, mountpoint)
    return mount.source if mount else None


def tree(top="/"):
    """Every path under top, with file contents, for before/after comparisons."""
    found = {}
    for directory, dirs, files in os.walk(top):
        found[directory] = None
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[path] = f.read()
        for name in dirs:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found[path] = os.readlink(path)
    return found


# -- success ---------------------------------------------------------------------------------
def test_attach_checks_and_mounts_under_the_disk_root(vdb):
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome == disk.Outcome("vdb", disk.MOUNTED, "ext4, label 'data'", "/srv/data")
    assert vdb.commands == [
        ["blkid", "-p", "-o", "udev", "/dev/vdb"],
        ["e2fsck", "-p", "/dev/vdb"],
        ["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, "/dev/vdb", "/srv/data"],
    ]
    assert os.path.isdir("/srv/data") and not os.path.islink("/srv/data")
    assert stat.S_IMODE(os.stat("/srv/data").st_mode) == 0o755
    assert mounted_at(vdb, "/srv/data") == "/dev/vdb"
    assert record() == {
        "device": "vdb", "devno": "253:16", "diskseq": "", "size": 2097152 * 512, "fstype": "ext4",
        "label": "'data'", "mountpoint": "/srv/data", "ours": True, "state": "mounted",
        "reason": "ext4, label 'data'",
    }


def test_mountpoint_mode_does_not_depend_on_the_umask(vdb):
    old = os.umask(0o077)
    try:
        disk.attach(vdb, SETTINGS, "vdb")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat("/srv/data").st_mode) == 0o755


def test_attach_by_dev_path_and_by_label_link(vdb):
    os.makedirs("/dev/disk/by-label")
    os.symlink("../../vdb", "/dev/disk/by-label/data")
    assert disk.attach(vdb, SETTINGS, "/dev/disk/by-label/data").mountpoint == "/srv/data"


def test_disk_root_is_created_when_missing(vdb):
    os.rmdir("/srv")
    settings = replace(SETTINGS, disk_root="/mnt/disks")
    assert disk.attach(vdb, settings, "vdb").mountpoint == "/mnt/disks/data"
    assert stat.S_IMODE(os.stat("/mnt/disks").st_mode) == 0o755


def test_no_label_uses_the_kernel_name(vdb):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", uuid="1111-2222"))
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.mountpoint == "/srv/vdb"
    assert outcome.reason == "ext4, label (none)"


def test_xfs_is_mounted_without_a_check(vdb):
    vdb.signatures["vdb"] = (0, blkid_udev("xfs", label="logs"))
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/logs"
    assert vdb.programs() == ["blkid", "mount"]
    assert vdb.commands[-1][:3] == ["mount", "-t", "xfs"]


def test_e2fsck_corrected_errors_still_mounts(vdb):
    vdb.fsck_rc = 1
    assert disk.attach(vdb, SETTINGS, "vdb").state == disk.MOUNTED
    assert mounted_at(vdb, "/srv/data") == "/dev/vdb"


def test_mount_options_come_from_the_settings(vdb):
    disk.attach(vdb, replace(SETTINGS, mount_params="ro,noexec"), "vdb")
    assert vdb.commands[-1] == ["mount", "-t", "ext4", "-o", "ro,noexec", "/dev/vdb",
                                "/srv/data"]


# -- idempotence -----------------------------------------------------------------------------
def test_second_attach_changes_nothing(vdb):
    disk.attach(vdb, SETTINGS, "vdb")
    before = os.stat(STATE)
    content = record()
    vdb.commands.clear()

    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.MOUNTED
    assert outcome.reason == "already mounted at /srv/data"
    assert outcome.mountpoint == "/srv/data"
    assert vdb.commands == []
    after = os.stat(STATE)
    assert (after.st_ino, after.st_mtime) == (before.st_ino, before.st_mtime)
    assert record() == content
    assert len(mounts.of_device(mounts.mount_table(vdb), "253:16", "vdb")) == 1


def test_a_mount_made_by_someone_else_is_reported_not_redone(vdb, fs):
    with open("/proc/self/mountinfo", "a") as f:
        f.write("40 22 253:16 / /mnt/manual rw - ext4 /dev/vdb rw\n")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.MOUNTED
    assert outcome.reason == "already mounted at /mnt/manual (not by gandi)"
    assert vdb.commands == []
    assert record()["ours"] is False
    assert not os.path.exists("/srv/data")


# -- failures --------------------------------------------------------------------------------
def test_uncorrected_fsck_errors_leave_the_disk_unmounted(vdb):
    vdb.fsck_rc = 4
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.failed
    assert outcome.mountpoint is None
    assert "not mounted" in outcome.reason and "errors left uncorrected" in outcome.reason
    assert vdb.programs() == ["blkid", "e2fsck"]
    assert not os.path.exists("/srv/data")
    saved = record()
    assert saved["state"] == "failed" and "not mounted" in saved["reason"]
    assert saved["ours"] is False


def test_fsck_that_cannot_run_is_a_failure(vdb):
    vdb.handlers["e2fsck"] = lambda argv: Result(argv, 127, stderr="e2fsck: not found")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.failed and "e2fsck could not run" in outcome.reason
    assert "mount" not in vdb.programs()


def test_failed_mount_removes_the_mountpoint_it_created(vdb):
    vdb.mount_rc = 32
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.failed
    assert outcome.reason == "mount on /srv/data failed: mount: /srv/data: wrong fs type"
    assert vdb.programs() == ["blkid", "e2fsck", "mount"]
    assert not os.path.exists("/srv/data")
    assert os.path.isdir("/srv")
    assert record()["state"] == "failed"


def test_failed_mount_keeps_an_empty_directory_that_was_already_there(vdb):
    os.mkdir("/srv/data", 0o700)
    vdb.mount_rc = 32
    assert disk.attach(vdb, SETTINGS, "vdb").failed
    assert os.path.isdir("/srv/data")


def test_blkid_failure_is_a_failure(vdb):
    vdb.signatures["vdb"] = (4, "")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.failed and outcome.reason.startswith("blkid failed")
    assert vdb.programs() == ["blkid"]


# -- the mountpoint: never over data, never outside the root ---------------------------------
def test_a_non_empty_directory_is_never_mounted_over(vdb, fs):
    fs.create_file("/srv/data/precious.txt", contents="keep me")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.mountpoint == "/srv/data_2"
    assert vdb.commands[-1][-1] == "/srv/data_2"
    assert mounted_at(vdb, "/srv/data") is None
    with open("/srv/data/precious.txt") as f:
        assert f.read() == "keep me"


def test_an_empty_existing_directory_is_used(vdb):
    os.mkdir("/srv/data")
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data"


def test_a_symlink_is_not_used_as_mountpoint(vdb, fs):
    fs.create_dir("/etc/secret")
    os.symlink("/etc/secret", "/srv/data")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.mountpoint == "/srv/data_2"
    assert os.readlink("/srv/data") == "/etc/secret"
    assert all("/etc/secret" not in " ".join(argv) for argv in vdb.commands)


def test_a_dangling_symlink_or_a_file_is_not_used(vdb, fs):
    os.symlink("/nonexistent", "/srv/data")
    fs.create_file("/srv/data_2")
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data_3"
    assert not os.path.exists("/nonexistent")


def test_an_empty_mountpoint_of_another_disk_is_not_used(vdb, fs):
    os.mkdir("/srv/data")
    with open("/proc/self/mountinfo", "a") as f:
        f.write("40 22 253:99 / /srv/data rw - ext4 /dev/vdz rw\n")
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data_2"


def test_two_disks_with_the_same_label(vdb, fs):
    add_disk(fs, "vdc", "253:32", 2097152)
    vdb.signatures["vdc"] = vdb.signatures["vdb"]
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data"
    assert disk.attach(vdb, SETTINGS, "vdc").mountpoint == "/srv/data_2"
    assert mounted_at(vdb, "/srv/data_2") == "/dev/vdc"


@pytest.mark.parametrize("encoded, mountpoint", [
    ("..\\x2f..\\x2fetc", "/srv/etc"),
    ("../../etc", "/srv/etc"),
    ("..", "/srv/vdb"),
    ("\\x24(touch\\x20\\x2ftmp\\x2fpwned)", "/srv/touch_tmp_pwned"),
    ("a\\x20b", "/srv/a_b"),
    ("\\xff\\xfe", "/srv/vdb"),
    ("x" * 300, "/srv/" + "x" * 64),
])
def test_hostile_labels_land_inside_the_disk_root(vdb, encoded, mountpoint):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", label=encoded))
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.mountpoint == mountpoint
    assert os.path.isdir(mountpoint)
    assert sorted(os.listdir("/etc")) == ["fstab"]  # nothing created or mounted in /etc


def test_a_disk_root_that_is_a_symlink_elsewhere_still_keeps_mounts_inside_it(vdb, fs):
    fs.create_dir("/data/disks")
    os.rmdir("/srv")
    os.symlink("/data/disks", "/srv")
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data"
    assert os.path.isdir("/data/disks/data")
    # The kernel shows /data/disks/data; a second attach must still recognise its own mount.
    assert mounted_at(vdb, "/data/disks/data") == "/dev/vdb"
    vdb.commands.clear()
    again = disk.attach(vdb, SETTINGS, "vdb")
    assert again.reason == "already mounted at /srv/data"
    assert vdb.commands == []
    assert disk.detach(vdb, SETTINGS, "vdb").state == disk.UNMOUNTED
    assert vdb.commands == [["umount", "/srv/data"]]
    assert not os.path.exists("/data/disks/data")


# -- skips -----------------------------------------------------------------------------------
def test_allow_mount_0_skips_without_running_anything(vdb):
    outcome = disk.attach(vdb, replace(SETTINGS, allow_mount=False), "vdb")
    assert outcome.state == disk.SKIPPED and outcome.reason == "CONFIG_ALLOW_MOUNT=0"
    assert vdb.commands == []
    assert not os.path.exists("/srv/data")


def test_the_system_disk_is_skipped_without_a_probe(vdb):
    outcome = disk.attach(vdb, SETTINGS, "vda1")
    assert outcome.state == disk.SKIPPED and "system disk vda" in outcome.reason
    assert vdb.commands == []


def test_a_disk_with_active_swap_is_skipped(vdb, fs):
    write_swaps(fs, ["/dev/vdb"])
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.SKIPPED and "active swap" in outcome.reason
    assert vdb.commands == []


@pytest.mark.parametrize("output, words", [
    (blkid_udev("swap", usage="other", uuid="1"), "swap"),
    (blkid_udev("LVM2_member", usage="raid"), "LVM2_member"),
    (blkid_udev("", usage="", ID_PART_TABLE_TYPE="gpt"), "gpt partition table"),
])
def test_what_is_not_a_filesystem_is_skipped(vdb, output, words):
    vdb.signatures["vdb"] = (0, output)
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.SKIPPED and words in outcome.reason
    assert vdb.programs() == ["blkid"]
    assert record()["state"] == "skipped"


def test_an_empty_disk_is_skipped(vdb):
    del vdb.signatures["vdb"]  # blkid exit 2
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert (outcome.state, outcome.reason) == (disk.SKIPPED, "no filesystem")


def test_an_ambivalent_probe_is_skipped(vdb):
    vdb.signatures["vdb"] = (8, blkid_udev("ext4"))
    assert "ambivalent" in disk.attach(vdb, SETTINGS, "vdb").reason
    assert vdb.programs() == ["blkid"]


def test_a_disk_in_fstab_is_left_to_fstab(vdb, fs):
    with open("/etc/fstab", "a") as f:
        f.write("UUID=1111-2222 /var/lib/data ext4 defaults,nofail 0 2\n")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.SKIPPED
    assert outcome.reason == "listed in /etc/fstab line 3 (for /var/lib/data)"
    assert vdb.programs() == ["blkid"]


def test_a_partitioned_disk_is_skipped_and_its_partitions_attached(host, fs):
    add_disk(fs, "vdc", "253:32", 4194304,
             partitions=[("vdc1", "253:33", 2048), ("vdc2", "253:34", 4190208)])
    host.signatures["vdc2"] = (0, blkid_udev("ext4", label="part"))
    outcome = disk.attach(host, SETTINGS, "vdc")
    assert outcome.state == disk.SKIPPED and "partitioned" in outcome.reason
    assert host.commands == []
    assert disk.attach(host, SETTINGS, "vdc2").mountpoint == "/srv/part"


# -- hooks -----------------------------------------------------------------------------------
def test_post_attach_hook_runs_with_device_type_and_mountpoint(vdb, fs):
    fs.create_file(HOOK, st_mode=0o100755, contents="#!/bin/sh\n")
    vdb.handlers[HOOK] = lambda argv: Result(argv, 0)
    disk.attach(vdb, SETTINGS, "vdb")
    assert vdb.commands[-1] == [HOOK, "/dev/vdb", "ext4", "/srv/data"]


def test_a_failing_hook_leaves_the_disk_mounted(vdb, fs):
    fs.create_file(HOOK, st_mode=0o100755, contents="#!/bin/sh\nexit 1\n")
    vdb.handlers[HOOK] = lambda argv: Result(argv, 1, stderr="hook: boom")
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    assert outcome.state == disk.MOUNTED
    assert vdb.programs()[-1] == "post-disk-attach"
    assert mounted_at(vdb, "/srv/data") == "/dev/vdb"
    assert record()["state"] == "mounted"


def test_a_non_executable_hook_is_not_run(vdb, fs):
    fs.create_file(HOOK, st_mode=0o100644, contents="#!/bin/sh\n")
    disk.attach(vdb, SETTINGS, "vdb")
    assert "post-disk-attach" not in vdb.programs()


# -- dry run ---------------------------------------------------------------------------------
def test_dry_run_changes_nothing_and_prints_the_plan(fs):
    from fakesys import system

    system(fs)
    os.rmdir("/srv")
    add_disk(fs, "vdb", "253:16", 2097152)
    fs.create_file(HOOK, st_mode=0o100755)
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    before = tree()

    outcome = disk.attach(host, SETTINGS, "vdb")

    assert outcome.state == disk.MOUNTED and outcome.mountpoint == "/srv/data"
    assert tree() == before
    assert host.programs() == ["blkid"]  # the probe is a query: it really ran
    assert plan.getvalue().splitlines() == [
        "would run e2fsck -p /dev/vdb",
        "would mkdir -m 0755 /srv (owner root:root)",
        "would mkdir -m 0755 /srv/data (owner root:root)",
        f"would run mount -t ext4 -o {MOUNT_OPTIONS} /dev/vdb /srv/data",
        f"would write {STATE}",  # the record first: the hook may read it
        f"would run {HOOK} /dev/vdb ext4 /srv/data",
    ]


def test_dry_run_plan_goes_to_stdout_by_default(vdb, capsys):
    vdb.dry_run = True
    disk.attach(vdb, SETTINGS, "vdb")
    out = capsys.readouterr().out
    assert "would run mount -t ext4" in out
    assert not os.path.exists("/srv/data")


# -- mount-all -------------------------------------------------------------------------------
def test_mount_all_attaches_each_eligible_disk(vdb, fs):
    add_disk(fs, "vdc", "253:32", 2097152)
    add_disk(fs, "sr0", "11:0", 2097152)
    vdb.signatures["vdc"] = (0, blkid_udev("xfs", label="logs"))
    vdb.signatures["sr0"] = (0, blkid_udev("iso9660", label="cd"))
    outcomes = disk.mount_all(vdb, SETTINGS)
    assert [(o.device, o.state, o.mountpoint) for o in outcomes] == [
        ("vda", disk.SKIPPED, None),
        ("vda1", disk.SKIPPED, None),
        ("vdb", disk.MOUNTED, "/srv/data"),
        ("vdc", disk.MOUNTED, "/srv/logs"),
    ]


def test_mount_all_goes_on_after_a_failure(vdb, fs):
    add_disk(fs, "vdc", "253:32", 2097152)
    vdb.signatures["vdc"] = (0, blkid_udev("xfs", label="logs"))

    def broken(argv):
        if argv[-1].endswith("vdb"):
            raise OSError(5, "Input/output error")
        return FakeHost._blkid(vdb, argv)

    vdb.handlers["blkid"] = broken
    outcomes = {o.device: o for o in disk.mount_all(vdb, SETTINGS)}
    assert outcomes["vdb"].failed and "Input/output error" in outcomes["vdb"].reason
    assert outcomes["vdc"].mountpoint == "/srv/logs"


# -- hostile input (issue 11) ----------------------------------------------------------------
NON_ASCII = {  # label as written by mkfs -> as blkid encodes it in ID_FS_LABEL_ENC (UTF-8 as is)
    "accented": "Donn\u00e9es", "cyrillic": "\u0414\u0430\u043d\u043d\u044b\u0435",
    "greek": "\u0394\u03b5\u03b4\u03bf\u03bc\u03ad\u03bd\u03b1", "cjk": "\u6570\u636e",
    "emoji": "\U0001f4be",
}


@pytest.mark.parametrize("label", NON_ASCII.values(), ids=NON_ASCII.keys())
def test_a_non_ascii_label_stays_ours_from_attach_to_detach(vdb, label):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", label=label))
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == f"/srv/{label}"

    again = disk.attach(vdb, SETTINGS, "vdb")
    assert again.reason == f"already mounted at /srv/{label}"  # not "(not by gandi)"
    [row] = [r for r in disk.status(vdb, SETTINGS) if r["device"] == "vdb"]
    assert (row["mountpoint"], row["label"]) == (f"/srv/{label}", repr(label))

    assert disk.detach(vdb, SETTINGS, "vdb").state == disk.UNMOUNTED
    assert mounts.mount_at(vdb, f"/srv/{label}") is None
    assert not os.path.exists(f"/srv/{label}")


@pytest.mark.parametrize("line, claimed", [
    ("LABEL=\u0414\u0430\u043d\u043d\u044b\u0435 /data ext4 defaults 0 2\n", False),
    ("LABEL=caf\u00e9 /data ext4 defaults 0 2\n", True),
    ("LABEL=caf\\303\\251 /data ext4 defaults 0 2\n", True),  # the same bytes, escaped
    ('LABEL="caf\u00e9" /data ext4 defaults 0 2\n', True),
    ("LABEL=CAF\u00c9 /data ext4 defaults 0 2\n", False),  # labels are case-sensitive
    ("LABEL='caf\u00e9' /data ext4 defaults 0 2\n", True),
    ('LABEL="caf\u00e9 /data ext4 defaults 0 2\n', False),  # no closing quote: libblkid refuses
    ('LABEL=caf\u00e9" /data ext4 defaults 0 2\n', False),  # not quoted: the quote is the label's
])
def test_fstab_labels_are_compared_as_bytes(vdb, line, claimed):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", label="caf\u00e9"))
    with open("/etc/fstab", "a", encoding="utf-8") as f:
        f.write(line)
    outcome = disk.attach(vdb, SETTINGS, "vdb")
    if claimed:
        assert (outcome.state, outcome.reason) == (disk.SKIPPED,
                                                   "listed in /etc/fstab line 3 (for /data)")
    else:
        assert outcome.mountpoint == "/srv/caf\u00e9"


def test_a_label_holding_quotes_is_named_quoted(vdb):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", label='\\x22a\\x22'))
    with open("/etc/fstab", "a", encoding="utf-8") as f:
        f.write("LABEL='\"a\"' /data ext4 defaults 0 2\n")
    assert disk.attach(vdb, SETTINGS, "vdb").state == disk.SKIPPED


def test_an_invalid_utf8_label_in_fstab_claims_the_same_bytes(vdb):
    vdb.signatures["vdb"] = (0, blkid_udev("ext4", label="x\\xff"))
    with open("/etc/fstab", "a", encoding="utf-8") as f:
        f.write("LABEL=x\\377 /data ext4 defaults 0 2\n")
    assert disk.attach(vdb, SETTINGS, "vdb").state == disk.SKIPPED


@pytest.mark.parametrize("spec", ["/dev/\\000", "/dev/vd\0b", "LABEL=\\000", "\0"])
def test_a_nul_byte_in_fstab_is_a_line_that_names_no_device(vdb, spec):
    with open("/etc/fstab", "a", encoding="utf-8") as f:
        f.write(f"{spec} /x ext4 defaults 0 0\n")
    assert disk.attach(vdb, SETTINGS, "vdb").mountpoint == "/srv/data"
    assert [o.state for o in disk.mount_all(vdb, SETTINGS)] == [disk.SKIPPED, disk.SKIPPED,
                                                                disk.MOUNTED]
    assert [r["state"] for r in disk.status(vdb, SETTINGS)][-1] == disk.MOUNTED
