"""First-boot provisioning in a real guest: the platform's swap disk and its archive, and an
OpenStack config-2 drive (issue 12).

TestGandiswapDisk boots a guest whose second disk (vdb, attached before boot) has a GPT whose
partition 1 is named `gandiswap` and, 512 KiB into the whole disk, the historic archive:
gandi/config creates a user with a key and a password hash, gives root a key, sets the hostname
and the timezone; gandi/init appends one line to a marker file per run (another with --postboot).
Then the owner changes the user's password and keys, the guest reboots (a clean power-off and a
boot of the same disks: the root disk is a persistent overlay), and nothing may be applied again.

TestConfigDrive boots another guest with a vfat `config-2` drive (meta_data.json with uuid,
hostname, public_keys, and a user_data script), then hot-plugs a gandiswap disk (it becomes swap,
and its unplug swapoffs it cleanly) and a blank disk that is no swap candidate (left untouched).

The two groups have class-scoped guests: one QEMU at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, List

import pytest

from disks import (ARCHIVE_OFFSET, blank_disk, config_drive, gandiswap_disk, missing_tools,
                   platform_archive, read_at)
from qemu_guest import DHCP_HOSTNAME, Guest

INSTANCE_ID = "3f1c9a2e-issue12-gandiswap"
HOSTNAME = "prov-guest"
TIMEZONE = "Asia/Tokyo"  # not the image's Europe/Paris (CONFIG_TIMEZONE_NAME's default)
USER = "alice"
# Fixed test keys and hashes (ssh-keygen -t ed25519; openssl passwd -6): nothing secret.
USER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDxs3kDP1gpwHvAqCr1QRYtzebmdRIX4mg7ZL2rf34Ox alice@laptop"
ROOT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPljWWYoYcmsN3ol7j/xd4nnxzpE8T2ZMNtJjt4E7RcA ops@platform"
OWNER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZ6XWaDR0PYou+cF0Tz57jQmxItOfEZtO7I68gOLymE alice@home"
USER_HASH = ("$6$provsalt1$/X0H7vzb/3P0pd2SLN8yAHQsCP67CuZ68.eous8FHMg4YqRdoeIM43u1OnI6Bl/"
             "UlTJFeOgKCffFtDWnAIjQt0")
OWNER_HASH = ("$6$ownersalt$dv9vzaAEoQR1eLQzxIcqHAIfBjSYdsjZtvuHRyC.Tz9Khyzmy4WRlrHHxW4Wb7M/"
              "pGq/coal6/Af9rOexqsjd0")
ROOT_HASH = ("$6$rootsalt1$PFs2H0/yg4IkVOD2ndl9ENl3zN2xc8seRE1JI4zYJomEADsye2mGFHKY/bCm1DeTyv9aI"
             "38IvhvBwi0XQ7sMA1")

CONFIG = {
    "instance_id": INSTANCE_ID,
    "hostname": HOSTNAME,
    "timezone": TIMEZONE,
    "root": {"password_hash": ROOT_HASH, "ssh_authorized_keys": [ROOT_KEY]},
    "users": [{"name": USER, "password_hash": USER_HASH, "ssh_authorized_keys": [USER_KEY],
               "sudo": True, "groups": ["adm"], "shell": "/bin/bash"}],
}
# One line per run, with the boot it ran in: the count is the proof of "once per instance".
INIT = """#!/bin/sh
boot=$(cat /proc/sys/kernel/random/boot_id)
if [ "$1" = --postboot ]; then
  route=no
  ip -4 route show default | grep -q . && route=yes
  echo "postboot boot=$boot route=$route" >>/var/lib/marker-postboot
else
  echo "init boot=$boot args=$#" >>/var/lib/marker-init
fi
"""

STACK_UUID = "9b0e6c4d-issue12-config2"
STACK_HOSTNAME = "stack-guest"
STACK_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDZ6XWaDR0PYou+cF0Tz57jQmxItOfEZtO7I68gOLymE owner@openstack"
USER_DATA = """#!/bin/sh
echo "user_data boot=$(cat /proc/sys/kernel/random/boot_id)" >>/var/lib/marker-userdata
"""

WAIT = 60  # seconds on an idle machine (scaled): a boot unit's effect, a hot-plugged swap disk


@pytest.fixture(scope="module", autouse=True)
def _disk_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip("cannot build the platform's disks: missing " + ", ".join(missing))


@pytest.fixture(scope="class")
def guest(request: pytest.FixtureRequest, image: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    """The class's own guest (class scope: one QEMU at a time), booted with the disks its
    boot_disks() makes, its root disk persistent if the class says so."""
    disks = request.cls.boot_disks(tmp_path_factory.mktemp(request.cls.__name__))
    with Guest(image, boot_disks=disks, persistent=getattr(request.cls, "persistent", False)) as vm:
        yield vm


@pytest.fixture(scope="class")
def first_boot(guest: Guest) -> str:
    return guest.boot_id()


@pytest.fixture(scope="class")
def rebooted(guest: Guest, first_boot: str) -> Guest:
    """The owner takes over: a new password, the provisioned key replaced by another; then a
    reboot. Waits first for the post-boot run, so that it cannot legitimately come later."""
    guest.wait_until("test -s /var/lib/marker-postboot", WAIT)
    guest.check(f"echo '{USER}:{OWNER_HASH}' | chpasswd -e")
    guest.check(f"echo '{OWNER_KEY}' >/home/{USER}/.ssh/authorized_keys")
    guest.reboot()
    return guest


def lines(guest: Guest, path: str) -> list:
    done = guest.run(f"cat {path}")
    return done.stdout.splitlines() if done.returncode == 0 else []


def swaps(guest: Guest) -> dict:
    """/proc/swaps as {device: type}."""
    rows = guest.check("cat /proc/swaps").splitlines()[1:]
    return {row.split()[0]: row.split()[1] for row in rows if row.strip()}


def blkid(guest: Guest, device: str) -> dict:
    out = guest.run(f"blkid -p -o export {device}").stdout  # -p: the device, not the cache
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def mounted_sources(guest: Guest) -> list:
    return [line.split()[0] for line in guest.check("cat /proc/self/mounts").splitlines()]


def failed_units(guest: Guest) -> str:
    return guest.check("systemctl --failed --no-legend --plain")


def shadow_hash(guest: Guest, user: str) -> str:
    return guest.check(f"getent shadow {user}").split(":")[1]


def network_up(guest: Guest) -> None:
    """The primary NIC's lease is in (and with it the lease's re-run of the hostname plugin)."""
    guest.wait_until("ip -4 route show default | grep -q . && "
                     "systemctl is-active -q network-online.target", WAIT)


# -- the platform's swap disk with the historic archive ---------------------------------------

class TestGandiswapDisk:
    persistent = True  # the root disk survives the reboot

    @staticmethod
    def boot_disks(tmp: Path) -> List[Path]:
        return [gandiswap_disk(tmp / "swap.img", platform_archive(CONFIG, INIT))]

    # first boot

    def test_the_guest_boots_with_no_failed_unit(self, guest: Guest):
        assert failed_units(guest) == ""
        assert guest.check("systemctl show -p Result --value gandi-config.service").strip() == "success"

    def test_swap_is_active_on_the_gandiswap_partition_labelled_swap(self, guest: Guest):
        name = guest.kernel_name("boot0")
        assert swaps(guest).get(f"/dev/{name}1") == "partition", guest.check("cat /proc/swaps")
        probed = blkid(guest, f"/dev/{name}1")
        assert (probed.get("TYPE"), probed.get("LABEL"), probed.get("PART_ENTRY_NAME")) == (
            "swap", "swap", "gandiswap"), probed
        assert f"/dev/{name}1" in guest.check("swapon --show=NAME --noheadings --raw")

    def test_the_archive_area_is_left_as_the_platform_wrote_it(self, guest: Guest):
        archive = platform_archive(CONFIG, INIT)
        assert read_at(guest.boot_disks[0], ARCHIVE_OFFSET, len(archive)) == archive

    def test_gandi_is_root_only_and_holds_the_archive(self, guest: Guest):
        assert guest.check("stat -L -c '%a %U %G' /gandi").strip() == "700 root root"
        assert json.loads(guest.read_file("/gandi/config")) == CONFIG
        assert guest.read_file("/gandi/init").decode() == INIT
        assert guest.run("test -x /gandi/init").returncode == 0

    def test_the_swap_disk_is_not_mounted(self, guest: Guest):
        name = guest.kernel_name("boot0")
        assert not [s for s in mounted_sources(guest) if s.startswith(f"/dev/{name}")]

    def test_the_user_exists_as_configured(self, guest: Guest):
        entry = guest.check(f"getent passwd {USER}").strip().split(":")
        assert (entry[0], entry[5], entry[6]) == (USER, f"/home/{USER}", "/bin/bash"), entry
        assert shadow_hash(guest, USER) == USER_HASH
        assert "adm" in guest.check(f"id -nG {USER}").split()

    def test_the_user_may_use_sudo(self, guest: Guest):
        # No sudo in the image: the grant is the sudo group, or a sudoers drop-in naming the user.
        in_group = "sudo" in guest.check(f"id -nG {USER}").split()
        drop_in = guest.run(f"grep -rqsw {USER} /etc/sudoers.d").returncode == 0
        assert in_group or drop_in

    def test_the_users_key_is_authorized_with_safe_modes(self, guest: Guest):
        keys = guest.check(f"cat /home/{USER}/.ssh/authorized_keys").splitlines()
        assert keys.count(USER_KEY) == 1, keys
        modes = guest.check(f"stat -c '%a %U %G' /home/{USER}/.ssh /home/{USER}/.ssh/authorized_keys "
                            f"/home/{USER}").splitlines()
        group = guest.check(f"id -gn {USER}").strip()
        assert modes[:2] == [f"700 {USER} {group}", f"600 {USER} {group}"], modes
        assert modes[2].split()[1] == USER

    def test_root_gets_its_key_and_password_hash(self, guest: Guest):
        assert guest.check("cat /root/.ssh/authorized_keys").splitlines().count(ROOT_KEY) == 1
        assert guest.check("stat -c '%a %U' /root/.ssh /root/.ssh/authorized_keys").split() == [
            "700", "root", "600", "root"]
        assert shadow_hash(guest, "root") == ROOT_HASH

    def test_the_hostname_is_the_configured_one_even_after_the_lease(self, guest: Guest):
        network_up(guest)  # the lease says DHCP_HOSTNAME: it must not win over the owner's name
        assert guest.check("hostname").strip() == HOSTNAME != DHCP_HOSTNAME
        assert guest.check("cat /etc/hostname").strip() == HOSTNAME

    def test_the_timezone_is_the_configured_one(self, guest: Guest):
        assert guest.check("readlink -f /etc/localtime").strip() == f"/usr/share/zoneinfo/{TIMEZONE}"

    def test_init_ran_once_in_this_boot(self, guest: Guest):
        assert lines(guest, "/var/lib/marker-init") == [f"init boot={guest.boot_id()} args=0"]

    def test_postboot_ran_once_after_network_online_target(self, guest: Guest):
        guest.wait_until("test -s /var/lib/marker-postboot", WAIT)
        [line] = lines(guest, "/var/lib/marker-postboot")
        assert line.startswith(f"postboot boot={guest.boot_id()} "), line
        # A oneshot without RemainAfterExit: inactive again once done; its result tells.
        shown = guest.check("systemctl show -p Result -p ExecMainStatus gandi-postboot.service")
        assert set(shown.split()) == {"Result=success", "ExecMainStatus=0"}, shown
        online = guest.check("systemctl show -p ActiveEnterTimestampMonotonic --value "
                             "network-online.target")
        started = guest.check("systemctl show -p ExecMainStartTimestampMonotonic --value "
                              "gandi-postboot.service")
        assert int(started) >= int(online) > 0

    def test_postboot_found_the_network_up(self, guest: Guest):
        """What --postboot is for: the network is there (the primary NIC's lease, a default
        route), not only network-online.target reached."""
        guest.wait_until("test -s /var/lib/marker-postboot", WAIT)
        assert lines(guest, "/var/lib/marker-postboot")[0].endswith(" route=yes")

    def test_the_instance_is_recorded_and_shown(self, guest: Guest):
        assert INSTANCE_ID in guest.check("cat /var/lib/gandi-vm/instance.json")
        assert INSTANCE_ID in guest.check("gandi-vm status")

    # after the owner's changes and a reboot

    def test_after_a_reboot_the_owners_password_stays(self, rebooted: Guest, first_boot: str):
        assert rebooted.boot_id() != first_boot
        assert shadow_hash(rebooted, USER) == OWNER_HASH

    def test_after_a_reboot_the_owners_keys_stay(self, rebooted: Guest):
        assert rebooted.check(f"cat /home/{USER}/.ssh/authorized_keys").splitlines() == [OWNER_KEY]

    def test_after_a_reboot_init_and_postboot_did_not_run_again(self, rebooted: Guest):
        # start() returned once every boot job ended, gandi-postboot.service's included.
        assert len(lines(rebooted, "/var/lib/marker-init")) == 1
        assert len(lines(rebooted, "/var/lib/marker-postboot")) == 1
        assert INSTANCE_ID in rebooted.check("cat /var/lib/gandi-vm/instance.json")

    def test_after_a_reboot_the_swap_is_active_again(self, rebooted: Guest):
        name = rebooted.kernel_name("boot0")
        assert swaps(rebooted).get(f"/dev/{name}1") == "partition", rebooted.check("cat /proc/swaps")
        assert failed_units(rebooted) == ""


# -- an OpenStack config drive, then swap disks plugged into the running guest -----------------

class TestConfigDrive:
    @staticmethod
    def boot_disks(tmp: Path) -> List[Path]:
        return [config_drive(tmp / "config2.img",
                             {"uuid": STACK_UUID, "hostname": STACK_HOSTNAME, "name": STACK_HOSTNAME,
                              "public_keys": {"owner": STACK_KEY}}, USER_DATA)]

    def test_the_guest_boots_with_no_failed_unit(self, guest: Guest):
        assert failed_units(guest) == ""
        assert guest.check("systemctl show -p Result --value gandi-config.service").strip() == "success"

    def test_the_hostname_comes_from_meta_data(self, guest: Guest):
        network_up(guest)
        assert guest.check("hostname").strip() == STACK_HOSTNAME
        assert guest.check("cat /etc/hostname").strip() == STACK_HOSTNAME

    def test_the_public_key_is_roots(self, guest: Guest):
        # CONFIG_PROVISION_USER is empty in the shipped configuration: the keys go to root.
        assert guest.check("cat /root/.ssh/authorized_keys").splitlines().count(STACK_KEY) == 1

    def test_user_data_ran_once(self, guest: Guest):
        assert lines(guest, "/var/lib/marker-userdata") == [f"user_data boot={guest.boot_id()}"]

    def test_the_drive_is_left_unmounted(self, guest: Guest):
        name = guest.kernel_name("boot0")
        assert not [s for s in mounted_sources(guest) if s.startswith(f"/dev/{name}")]
        assert guest.run("test -e /srv/config-2").returncode != 0

    def test_the_instance_is_recorded(self, guest: Guest):
        assert STACK_UUID in guest.check("cat /var/lib/gandi-vm/instance.json")

    def test_a_hot_added_gandiswap_disk_becomes_swap_and_its_unplug_is_clean(
            self, guest: Guest, tmp_path: Path):
        guest.add_disk(gandiswap_disk(tmp_path / "hot-swap.img"), "hotswap")
        name = guest.kernel_name("hotswap")
        guest.wait_until(f"grep -q '^/dev/{name}1 ' /proc/swaps", WAIT)
        assert blkid(guest, f"/dev/{name}1").get("LABEL") == "swap"

        guest.remove_disk("hotswap")

        for unit in (f"gandi-disk@{name}.service", f"gandi-disk@{name}1.service"):
            guest.wait_until(f'test "$(systemctl show -p ActiveState --value {unit})" = inactive',
                             WAIT)
            shown = guest.check(f"systemctl show -p Result --value {unit}").strip()
            assert shown == "success", f"{unit}: {shown}"
        assert failed_units(guest) == ""

    def test_the_unplugged_swap_area_is_switched_off_or_said_loudly(self, guest: Guest):
        """Runs after the test above. The unit's stop swapoffs the dead area ("/dev/vdc1\\040
        (deleted)" in /proc/swaps); where the kernel cannot (Linux 6.1: swapoff(2) cannot open a
        deleted disk by any path, ENXIO), an error line says so and the unit still ends well."""
        if guest.run("grep -q 'deleted)' /proc/swaps").returncode != 0:
            return
        journal = guest.check("journalctl -b -o cat --no-pager -p err -t gandi")
        assert "unplugged under an active swap and swapoff of the dead area failed" in journal

    def test_a_hot_added_blank_disk_that_is_no_swap_candidate_is_not_formatted(
            self, guest: Guest, tmp_path: Path):
        image = blank_disk(tmp_path / "blank.img")
        guest.add_disk(image, "blank")
        name = guest.kernel_name("blank")
        guest.unit_outcome(f"gandi-disk@{name}.service", WAIT)  # its verdict, whichever
        try:
            assert blkid(guest, f"/dev/{name}") == {}
            assert f"/dev/{name}" not in swaps(guest)
            assert read_at(image, 0, ARCHIVE_OFFSET) == bytes(ARCHIVE_OFFSET)
            assert failed_units(guest) == ""
        finally:
            guest.remove_disk("blank")
