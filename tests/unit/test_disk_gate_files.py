"""The files disk.py leaves for the units' gate (systemd/unit-gate) and the burst attach:
NAME.handled (mount-all and a burst attached it at this boot), NAME.untouched (nothing of ours on
it), both holding the disk's identity (diskseq; a partition's is its disk's); and net.py's
untouched marker, which status shows for an interface the gate left alone."""

from __future__ import annotations

import os

import pytest
from fakesys import add_disk, add_nic, blkid_udev, set_attr

from gandi_vm import disk, net, state
from gandi_vm.config import Settings

SETTINGS = Settings()
RUN = "/run/gandi/disk"


def gate_files(name):
    found = {}
    for kind in ("handled", "untouched"):
        path = f"{RUN}/{name}.{kind}"
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                found[kind] = f.read()
    return found


@pytest.fixture
def guest(host, fs):
    """The plain guest (vda, vda1 holding /) with diskseq, plus vdb (ext4 'data') and vdc (no
    filesystem), each with its own diskseq."""
    set_attr("vda", "diskseq", 1)
    for name, devno, seq in (("vdb", "253:16", 5), ("vdc", "253:32", 6)):
        add_disk(fs, name, devno, 2097152)
        set_attr(name, "diskseq", seq)
    host.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))
    return host


def test_identity_is_the_diskseq_and_a_partitions_is_its_disks(guest):
    assert disk.identity(guest, "vdb") == "5"
    assert disk.identity(guest, "vda1") == "1"
    assert disk.identity(guest, "vdz") == ""  # gone, or a kernel before 5.15


def test_mount_all_marks_each_disk_it_handled_for_its_units_gate(guest):
    disk.mount_all(guest, SETTINGS)
    assert gate_files("vda") == {"handled": "1\n", "untouched": "1\n"}  # system disk: skipped
    assert gate_files("vda1") == {"handled": "1\n", "untouched": "1\n"}
    assert gate_files("vdb") == {"handled": "5\n"}  # mounted: its stop has something to undo
    assert gate_files("vdc") == {"handled": "6\n", "untouched": "6\n"}  # no filesystem


def test_a_disk_that_failed_at_boot_is_left_to_its_own_unit(guest):
    guest.fsck_rc = 4  # errors left uncorrected
    outcomes = {o.device: o for o in disk.mount_all(guest, SETTINGS)}
    assert outcomes["vdb"].failed
    assert "handled" not in gate_files("vdb")  # its unit runs gandi-vm again, and fails visibly


def test_without_diskseq_nothing_is_marked_handled(host, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    disk.mount_all(host, SETTINGS)
    assert gate_files("vdb") == {"untouched": "\n"}
    assert disk.unhandled(host, SETTINGS) == []


def test_a_mount_of_ours_takes_the_untouched_marker_away(guest):
    guest.signatures["vdb"] = (0, "")  # blank at first: nothing mounted
    disk.attach(guest, SETTINGS, "vdb")
    assert gate_files("vdb") == {"untouched": "5\n"}
    disk.detach(guest, SETTINGS, "vdb")
    assert gate_files("vdb") == {}
    guest.signatures["vdb"] = (0, blkid_udev("ext4", label="data"))  # formatted meanwhile
    disk.attach(guest, SETTINGS, "vdb")
    assert gate_files("vdb") == {}


def test_detach_forgets_the_gate_files(guest):
    disk.mount_all(guest, SETTINGS)
    for name in ("vdb", "vdc"):
        disk.detach(guest, SETTINGS, name)
        assert gate_files(name) == {}
        assert not os.path.exists(f"{RUN}/{name}.json")


def test_a_burst_attach_takes_every_disk_nothing_handled_yet(guest, fs):
    disk.mount_all(guest, SETTINGS)  # boot: vda, vda1, vdb, vdc recorded
    for name, devno, seq in (("vdd", "253:48", 7), ("vde", "253:64", 8), ("vdf", "253:80", 9)):
        add_disk(fs, name, devno, 2097152)
        set_attr(name, "diskseq", seq)
        guest.signatures[name] = (0, blkid_udev("xfs", label=name.upper()))
    guest.commands.clear()
    outcome = disk.attach(guest, SETTINGS, "vde", batch=True)
    assert (outcome.device, outcome.mountpoint) == ("vde", "/srv/VDE")
    mounted = [argv[-1] for argv in guest.commands if argv[0] == "mount"]
    assert mounted == ["/srv/VDE", "/srv/VDD", "/srv/VDF"]  # the unit's own disk first
    assert gate_files("vde") == {}  # its unit is the one running: no marker to consume
    assert gate_files("vdd") == {"handled": "7\n"}
    assert gate_files("vdf") == {"handled": "9\n"}
    assert disk.unhandled(guest, SETTINGS) == []


def test_a_disk_replugged_under_a_recorded_name_is_unhandled(guest):
    disk.mount_all(guest, SETTINGS)
    set_attr("vdc", "diskseq", 12)  # another disk took vdc, whose detach never ran
    assert disk.unhandled(guest, SETTINGS) == ["vdc"]


def test_a_plain_attach_takes_no_other_disk(guest):
    disk.attach(guest, SETTINGS, "vdb")
    assert [argv[-1] for argv in guest.commands if argv[0] == "mount"] == ["/srv/data"]
    assert "handled" not in gate_files("vdb")


def test_detach_starts_the_unit_of_a_new_disk_under_a_partitions_name(guest, fs):
    # The identity of a partition is its disk's: a replugged disk's partition is told apart.
    add_disk(fs, "vdd", "253:48", 2097152, partitions=[("vdd1", "253:49", 2000000)])
    set_attr("vdd", "diskseq", 7)
    guest.signatures["vdd1"] = (0, blkid_udev("ext4", label="part"))
    disk.attach(guest, SETTINGS, "vdd1")
    set_attr("vdd", "diskseq", 8)
    guest.commands.clear()
    disk.detach(guest, SETTINGS, "vdd1")
    assert ["systemctl", "--no-block", "start", "gandi-disk@vdd1.service"] in guest.commands


def test_status_shows_no_row_for_a_gone_disk_the_gate_forgot(guest):
    disk.mount_all(guest, SETTINGS)
    for suffix in ("json", "untouched", "handled"):  # what the gate does at an unplug
        open(f"{RUN}/vdc.{suffix}", "w").close()
    os.unlink("/sys/class/block/vdc")
    assert "vdc" not in [row["device"] for row in disk.status(guest, SETTINGS)]
    assert sorted(state.recorded(guest)) == ["vda", "vda1", "vdb"]


# -- interfaces ----------------------------------------------------------------------------------
MARKER = "/run/gandi/iface/ens3.untouched"


def test_status_shows_what_the_gate_decided_for_an_interface_no_attach_ran_for(host, fs):
    add_nic(fs, "ens3", 2, "52:54:00:12:34:56")
    fs.create_file(MARKER, contents="left: systemd-networkd already manages it (configured) "
                                    "(decided by the unit, no attach ran)\n")
    row = next(r for r in net.status(host) if r["interface"] == "ens3")
    assert (row["state"], row["reason"]) == (
        "left", "systemd-networkd already manages it (configured) (decided by the unit, "
                "no attach ran)")


def test_status_ignores_a_marker_that_is_not_a_decision(host, fs):
    add_nic(fs, "ens3", 2, "52:54:00:12:34:56")
    fs.create_file(MARKER, contents="configured: $(reboot)\n")
    row = next(r for r in net.status(host) if r["interface"] == "ens3")
    assert (row["state"], row["reason"]) == ("-", "not seen by gandi-vm")


def test_an_interface_attach_leaves_alone_gets_the_marker_and_detach_removes_it(host, fs):
    add_nic(fs, "ens3", 2, "52:54:00:12:34:56")
    outcome = net.attach(host, Settings(network=False), "ens3")
    assert outcome.state == net.SKIPPED
    with open(MARKER, encoding="utf-8") as f:
        assert f.read() == "skipped: CONFIG_NETWORK=0\n"
    net.detach(host, SETTINGS, "ens3")
    assert not os.path.exists(MARKER)
