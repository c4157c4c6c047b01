"""Hostile labels: whatever the image's owner wrote, the mountpoint stays inside the disk root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gandi_integration import require

PWNED = Path("/tmp/pwned")
LONG_LABEL = "../" * 40 + "y" * 135  # 255 bytes: btrfs's limit, far beyond ext4's 16


def tree(path: Path) -> set:
    """The entries directly inside `path`."""
    return {str(p) for p in path.iterdir()} if path.exists() else set()


@pytest.fixture
def no_pwned():
    if PWNED.exists() or PWNED.is_symlink():
        PWNED.unlink()
    yield
    assert not PWNED.exists(), "a label was executed by a shell"


def attach_all_and_check(env, disks):
    # Other sessions may create files in /tmp meanwhile: compare the directories that only this
    # test writes to (its tmp_path and pytest's directory around it, where '../../x' would land).
    outside = {p: tree(p) for p in (env.tmp, env.tmp.parent)}

    runs = [env.gandi("disk", "attach", disk.name) for disk in disks]

    assert all(r.returncode == 0 for r in runs), "\n".join(map(str, runs))
    targets = []
    for disk in disks:
        [mount] = env.mounts(disk.name)
        assert env.inside_root(mount.target), mount.target
        assert os.path.dirname(mount.target) == str(env.root), mount.target
        name = os.path.basename(mount.target)
        assert name not in ("", ".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 64, name
        targets.append(mount.target)
    assert len(set(targets)) == len(disks)
    # Nothing appeared anywhere but the disk root.
    assert sorted(os.listdir(env.root)) == sorted(os.path.basename(t) for t in targets)
    assert tree(env.tmp) - outside[env.tmp] <= {str(env.root), str(env.config)}
    assert tree(env.tmp.parent) == outside[env.tmp.parent]
    return targets


def test_hostile_ext4_labels_stay_inside_the_root(env, no_pwned):
    labels = ["../../etc", "a b", "..", "x\ny", b"\xff\xfe/../z"]
    disks = [env.disk("ext4", label=label) for label in labels]

    targets = attach_all_and_check(env, disks)

    # The sanitized names, for the record of what the program chose.
    names = [os.path.basename(t) for t in targets]
    assert names[0] == "etc"
    assert names[1] == "a_b"
    assert names[2] == disks[2].name  # nothing usable left: the kernel name
    assert names[3] == "x_y"
    assert names[4] == disks[4].name  # invalid UTF-8: the kernel name


def test_hostile_btrfs_labels_stay_inside_the_root(env, no_pwned):
    require("mkfs.btrfs")
    if "btrfs" not in Path("/proc/filesystems").read_text().split():
        pytest.skip("the kernel has no btrfs support (not in /proc/filesystems)")
    assert len(LONG_LABEL.encode()) == 255
    labels = ["$(touch /tmp/pwned)", LONG_LABEL, "z" * 255]
    disks = [env.disk("btrfs", label=label) for label in labels]

    targets = attach_all_and_check(env, disks)

    assert [m.fstype for d in disks for m in env.mounts(d.name)] == ["btrfs"] * 3
    names = [os.path.basename(t) for t in targets]
    assert names[0] == "touch_tmp_pwned"
    # blkid's udev output cuts ID_FS_LABEL_ENC short when escapes lengthen it, so fewer 'y' may
    # survive; what matters is that no '..' or '/' does.
    assert re.fullmatch(r"y{1,64}", names[1]), names[1]
    assert names[2] == "z" * 64


# One ext4 label (at most 16 bytes) per script class: each must mount under its own name, show
# in status as itself, be recognized as ours by a second attach, and detach.
SCRIPTS = {
    "accented": "Donn\u00e9es",
    "cyrillic": "\u0414\u0430\u043d\u043d\u044b\u0435",
    "greek": "\u0394\u03b5\u03b4\u03bf\u03bc\u03ad\u03bd\u03b1",
    "cjk": "\u6570\u636e",
    "emoji": "\U0001f4be",
}


def kernel_mountpoints() -> list:
    """Every mountpoint in /proc/self/mountinfo, as bytes with the kernel's \\NNN escapes undone:
    read independently of gandi_vm.mounts, which is under test."""
    raw = Path("/proc/self/mountinfo").read_bytes()
    return [re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), line.split(b" ")[4])
            for line in raw.split(b"\n") if line]


@pytest.mark.parametrize("label", SCRIPTS.values(), ids=SCRIPTS.keys())
def test_a_label_in_any_script_mounts_shows_and_detaches(env, label):
    disk = env.disk("ext4", label=label)
    target = env.root / label

    run = env.gandi("disk", "attach", disk.name)
    assert run.returncode == 0, str(run)
    assert bytes(target) in kernel_mountpoints()
    again = env.gandi("disk", "attach", disk.name)
    assert again.returncode == 0 and f"already mounted at {target}\n" in again.stderr, str(again)

    row = env.status()[disk.name]
    assert (row["mountpoint"], row["label"], row["state"]) == (str(target), repr(label), "mounted")
    text = env.gandi("status")
    assert text.returncode == 0 and str(target) in text.stdout, str(text)

    run = env.gandi("disk", "detach", disk.name)
    assert run.returncode == 0 and "unmounted from" in run.stderr, str(run)
    assert bytes(target) not in kernel_mountpoints()
    assert not target.exists()
