"""First-boot provisioning with the distro's real tools, in a temporary root (never this host's
accounts): useradd/usermod/chpasswd act inside it through their -R (chroot) option; /gandi/init
really runs by its own #! line; a real vfat filesystem labelled config-2 on a loop device is
mounted read-only, nosuid,nodev,noexec, read and unmounted."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import struct
from pathlib import Path

import pytest
from gandi_integration import sh, which

from gandi_vm import openstack, provision
from gandi_vm.config import Settings
from gandi_vm.host import Host

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (useradd -R chroots)")

HASH = "$6$saltsalt$" + "a" * 86
DRIVE = "var/lib/gandi-vm/drive.abcd1234"


def key(seed: int) -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} k{seed}"


@pytest.fixture
def guest(tmp_path: Path) -> Path:
    if not which("useradd") or not which("chpasswd"):
        pytest.skip("no useradd/chpasswd")
    top = tmp_path / "root"
    (top / "etc" / "default").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs", "nsswitch.conf"):
        if os.path.exists(f"/etc/{name}"):
            shutil.copy2(f"/etc/{name}", top / "etc" / name)
    if os.path.exists("/etc/default/useradd"):
        shutil.copy2("/etc/default/useradd", top / "etc" / "default" / "useradd")
    shutil.copytree("/etc/skel", top / "etc" / "skel")
    (top / "etc" / "shells").write_text("/bin/sh\n/bin/bash\n")
    (top / "etc" / "hostname").write_text("debian\n")
    (top / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n")
    (top / "home").mkdir()
    (top / "root").mkdir(mode=0o700)
    (top / "run").mkdir()
    return top


def drive(top: Path, document: dict, init: str = "") -> None:
    (top / DRIVE).mkdir(parents=True, mode=0o700)
    (top / DRIVE / "config").write_text(json.dumps(document))
    if init:
        (top / DRIVE / "init").write_text(init)
        (top / DRIVE / "init").chmod(0o755)
    (top / "gandi").symlink_to(DRIVE)


def passwd(top: Path, name: str):
    for line in (top / "etc" / "passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def test_users_keys_and_init_with_the_real_tools(guest: Path):
    before = Path("/etc/passwd").read_bytes(), Path("/etc/shadow").read_bytes()
    group = "sudo" if passwd(guest, "root") and "\nsudo:" in (guest / "etc/group").read_text() else ""
    drive(guest, {"instance_id": "i-1", "root": {"ssh_authorized_keys": [key(1)]},
                  "users": [{"name": "provtest", "password_hash": HASH, "sudo": bool(group),
                             "shell": "/bin/bash", "ssh_authorized_keys": [key(2), key(2)]}]},
          init="#!/bin/sh\necho \"init ran as $0 with $#\"\necho done > \"$(dirname \"$0\")/../ran\"\n")
    host = Host(str(guest))
    outcome = provision.run(host, Settings(init_timeout=30))
    assert outcome.state == "changed", outcome.detail

    entry = passwd(guest, "provtest")
    assert entry is not None and entry[6] == "/bin/bash"
    uid, gid, home = int(entry[2]), int(entry[3]), guest / entry[5].lstrip("/")
    shadow = next(line for line in (guest / "etc/shadow").read_text().splitlines()
                  if line.startswith("provtest:"))
    assert shadow.split(":")[1] == HASH
    if group:
        assert "provtest" in next(line for line in (guest / "etc/group").read_text().splitlines()
                                  if line.startswith("sudo:"))
    keys = home / ".ssh" / "authorized_keys"
    assert keys.read_text() == key(2) + "\n"
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert (keys.stat().st_uid, keys.stat().st_gid) == (uid, gid)
    assert ((home / ".ssh").stat().st_uid, (home / ".ssh").stat().st_gid) == (uid, gid)
    assert (guest / "root/.ssh/authorized_keys").read_text() == key(1) + "\n"
    # /gandi/init ran by its own #! (sh), once, and asked for postboot
    assert (guest / "var/lib/gandi-vm/ran").read_text() == "done\n"
    assert (guest / "var/lib/gandi-vm/postboot-pending").exists()
    record = json.loads((guest / "var/lib/gandi-vm/instance.json").read_text())
    assert record["instance_id"] == "i-1" and record["script"]["result"] == "exit 0"
    assert HASH not in (guest / "var/lib/gandi-vm/instance.json").read_text()
    # this host's accounts are untouched
    assert (Path("/etc/passwd").read_bytes(), Path("/etc/shadow").read_bytes()) == before

    # same instance: nothing again, the owner's changes stay
    keys.write_text("")
    (guest / "var/lib/gandi-vm/ran").unlink()
    assert provision.run(host, Settings(init_timeout=30)).state == "unchanged"
    assert keys.read_text() == "" and not (guest / "var/lib/gandi-vm/ran").exists()


def test_init_that_outlives_its_timeout_is_stopped(guest: Path):
    drive(guest, {"instance_id": "i-1"}, init="#!/bin/sh\nexec sleep 30\n")
    outcome = provision.run(Host(str(guest)), Settings(init_timeout=1))
    assert outcome.state == "failed" and "timed out after 1s" in outcome.detail


def test_a_real_config2_drive_is_read_and_unmounted(guest: Path, tmp_path: Path):
    if not which("mkfs.vfat") or not which("mcopy") or not which("losetup"):
        pytest.skip("no mkfs.vfat/mcopy/losetup")
    kernel = Path("/proc/filesystems").read_text().split()
    if "vfat" not in kernel:
        pytest.skip("this kernel has no vfat (config-2 is iso9660 or vfat)")
    if sh("blkid", "-c", "/dev/null", "-t", "LABEL=config-2", "-o", "device", check=False).stdout:
        pytest.skip("this host already has a config-2 filesystem")
    image = tmp_path / "config2.img"
    image.write_bytes(b"\0" * (4 << 20))
    sh("mkfs.vfat", "-n", "config-2", image)
    meta = tmp_path / "meta_data.json"
    meta.write_text(json.dumps({"uuid": "u-1", "hostname": "vm1", "public_keys": {"k": key(3)}}))
    script = tmp_path / "user_data"
    script.write_text("#!/bin/sh\necho user data ran\n")
    sh("mmd", "-i", image, "::openstack", "::openstack/latest")
    sh("mcopy", "-i", image, meta, "::openstack/latest/meta_data.json")
    sh("mcopy", "-i", image, script, "::openstack/latest/user_data")
    loop = sh("losetup", "--find", "--show", image).stdout.decode().strip()
    try:
        host = Host(str(guest))
        outcome = provision.run(host, Settings(init_timeout=30))
        assert outcome.state == "changed", outcome.detail
        assert (guest / "root/.ssh/authorized_keys").read_text() == key(3) + "\n"
        assert (guest / "etc/hostname").read_text() == "vm1\n"
        assert not (guest / "run/gandi/config-2").exists()
        assert loop not in Path("/proc/self/mountinfo").read_text()
        copy = guest / openstack.USER_SCRIPT.lstrip("/")
        assert stat.S_IMODE(copy.stat().st_mode) == 0o700
        record = json.loads((guest / "var/lib/gandi-vm/instance.json").read_text())
        assert (record["source"], record["instance_id"], record["script"]["result"]) == \
            ("config-2", "u-1", "exit 0")
    finally:
        sh("losetup", "-d", loop, check=False)
