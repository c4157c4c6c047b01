"""`gandi-vm --root ROOT config apply` on a real Debian 12 root, checked with the distro's own tools.

The root is a debootstrapped minbase with openssh-server, tzdata and cron installed by apt, as a
customer's image would have them; the DHCP lease data an interface attach would have stored is put
in place by hand. Everything runs from this tree's code, on this machine, with --root.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from debian_root import Chroot, debian_root

REPO = Path(__file__).resolve().parents[2]
MGMT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFbPXCfehK2J2+xmBdwgOI0f+7Urg26/6EwhGUbgB21L gandi-mgmt"
LEASE = """interface: ens3
role: primary
state: configured
lease:
  address: 192.0.2.10
  prefixlen: 24
  gateway: 192.0.2.1
  dns: [192.0.2.53]
  search: [example.test]
  domain: example.test
  hostname: vm-integration
"""


@pytest.fixture(scope="module")
def root() -> Iterator[Chroot]:
    with debian_root() as chroot:
        chroot.check("apt-get", "update", "-q")
        chroot.check("apt-get", "install", "-y", "-q", "--no-install-recommends",
                     "openssh-server", "tzdata", "cron")
        chroot.path("/run/sshd").mkdir(parents=True, exist_ok=True)  # for `sshd -T`
        # A key that exists must never be regenerated; one that is missing is generated.
        chroot.path("/etc/ssh/ssh_host_ed25519_key").unlink()
        chroot.path("/etc/ssh/ssh_host_ed25519_key.pub").unlink()
        chroot.path("/etc/resolv.conf").unlink()
        chroot.path("/etc/gandi").mkdir(exist_ok=True)
        chroot.path("/etc/gandi/mgmt.pub").write_text(MGMT_KEY + "\n")
        chroot.path("/etc/default").mkdir(exist_ok=True)
        chroot.path("/etc/default/gandi").write_text("CONFIG_SSHMGMT=1\n")
        chroot.path("/run/gandi/iface").mkdir(parents=True)
        chroot.path("/run/gandi/iface/ens3.yaml").write_text(LEASE)
        yield chroot


def gandi(root: Chroot, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gandi_vm", "--root", str(root.top), *args],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
                               "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def applied(root: Chroot) -> subprocess.CompletedProcess:
    rsa = root.path("/etc/ssh/ssh_host_rsa_key").read_bytes()
    done = gandi(root, "config", "apply")
    assert done.returncode == 0, done.stderr
    assert root.path("/etc/ssh/ssh_host_rsa_key").read_bytes() == rsa, "an existing key was replaced"
    return done


def test_a_second_apply_changes_nothing(root: Chroot, applied):
    again = gandi(root, "config", "apply")
    assert again.returncode == 0, again.stderr
    changed = [line for line in again.stderr.splitlines() if ": changed" in line]
    assert changed == []


def test_sshd_accepts_the_configuration_with_the_hardened_settings(root: Chroot, applied):
    effective = root.check("/usr/sbin/sshd", "-T").splitlines()
    assert "permitrootlogin without-password" in effective  # how sshd -T names prohibit-password
    assert "permitemptypasswords no" in effective
    root.check("ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key.pub")


def test_the_management_key_is_there_once_with_safe_modes(root: Chroot, applied):
    keys = root.path("/root/.ssh/authorized_keys")
    assert keys.read_text().count(MGMT_KEY.split()[1]) == 1
    assert (os.stat(keys).st_mode & 0o777, os.stat(keys.parent).st_mode & 0o777) == (0o600, 0o700)
    assert "ED25519" in root.check("ssh-keygen", "-l", "-f", "/root/.ssh/authorized_keys")


def test_timezone_hostname_and_resolver(root: Chroot, applied):
    assert root.check("readlink", "-f", "/etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Paris"
    assert root.check("date", "+%Z").strip() in ("CET", "CEST")
    assert root.path("/etc/hostname").read_text() == "vm-integration\n"
    assert root.check("getent", "hosts", "vm-integration").split()[0] == "127.0.1.1"
    resolv = root.path("/etc/resolv.conf").read_text()
    assert "nameserver 192.0.2.53" in resolv and "search example.test" in resolv


def test_crontab_times_come_from_the_machine_id(root: Chroot, applied):
    crontab = root.path("/etc/crontab").read_text()
    hourly = [line for line in crontab.splitlines() if "/etc/cron.hourly" in line]
    assert len(hourly) == 1 and re.match(r"\d+\s+\*\s", hourly[0]), hourly
