"""Boot-time configuration in a real guest: what gandi-config.service and the primary NIC's lease
left in place, checked with the guest's own tools (hostname, date, systemctl, sshd -T).

QEMU's user network hands out the hostname DHCP_HOSTNAME (qemu_guest.py); the image's own
/etc/hostname says gandi-guest, so the new name can only come from the lease.
"""

from __future__ import annotations

from qemu_guest import DHCP_HOSTNAME, Guest

OWNER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAFvrsiTZUJZbcZbAITt/CdgifWkpD86rXtVhrLaaD7/ owner@laptop"
MGMT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFbPXCfehK2J2+xmBdwgOI0f+7Urg26/6EwhGUbgB21L gandi-mgmt"


def test_hostname_comes_from_the_dhcp_lease(guest: Guest):
    guest.wait_until(f'test "$(hostname)" = {DHCP_HOSTNAME}', 60)
    assert guest.check("cat /etc/hostname").strip() == DHCP_HOSTNAME
    assert guest.check(f"getent hosts {DHCP_HOSTNAME}").split()[0] == "127.0.1.1"


def test_timezone_is_the_configured_one(guest: Guest):
    assert guest.check("readlink -f /etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Paris"
    assert guest.check("date +%Z").strip() in ("CET", "CEST")


def test_a_getty_runs_on_the_serial_console(guest: Guest):
    assert guest.check("systemctl is-active serial-getty@ttyS0.service").strip() == "active"


def test_sshd_runs_with_the_hardened_settings(guest: Guest):
    assert guest.check("systemctl is-active ssh.service").strip() == "active"
    effective = guest.check("sshd -T").splitlines()
    assert "permitrootlogin without-password" in effective  # sshd -T's name for prohibit-password
    assert "permitemptypasswords no" in effective


def test_the_management_key_follows_the_configuration(guest: Guest):
    guest.check(f"echo '{MGMT_KEY}' >/etc/gandi/mgmt.pub && mkdir -p -m 700 /root/.ssh && "
                f"echo '{OWNER_KEY}' >>/root/.ssh/authorized_keys")
    owner_lines = guest.check("cat /root/.ssh/authorized_keys").splitlines()
    guest.check("sed -i 's/^CONFIG_SSHMGMT=.*/CONFIG_SSHMGMT=1/' /etc/default/gandi && "
                "gandi-vm config apply --only ssh")
    keys = guest.check("cat /root/.ssh/authorized_keys").splitlines()
    assert keys.count(MGMT_KEY) == 1 and keys[:len(owner_lines)] == owner_lines
    assert guest.check("stat -c '%a %U' /root/.ssh/authorized_keys /root/.ssh").split() == [
        "600", "root", "700", "root"]
    guest.check("sed -i 's/^CONFIG_SSHMGMT=.*/CONFIG_SSHMGMT=0/' /etc/default/gandi && "
                "gandi-vm config apply --only ssh")
    assert guest.check("cat /root/.ssh/authorized_keys").splitlines() == owner_lines
