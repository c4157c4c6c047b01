"""swap: which device is the platform's swap, what is done with it (format, reuse, refuse), its
hand-off from disk attach/detach, the dead area after an unplug, and status."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from gandi_vm.record import replace

import pytest
from fakesys import add_disk, blkid_udev, escape, write_swaps

from gandi_vm import cli, configdrive, disk, mounts, status, swap  # noqa: F401 (loaded first)
from gandi_vm.blockdev import Signature
from gandi_vm.config import Settings
from gandi_vm.host import Host, Result

SETTINGS = Settings()
KiB = 1024


def swap_props(label="swap"):
    return blkid_udev("swap", label=label, uuid="aaaa-bbbb", usage="other")


def fill(name, data=b"", size=1024 * KiB, at=0):
    """The fake /dev node's bytes: zeros, with `data` at offset `at`."""
    content = bytearray(size)
    content[at:at + len(data)] = data
    with open(f"/dev/{name}", "wb") as f:
        f.write(bytes(content))


def simulate(host):
    """mkswap, swapon and swapoff acting on the fake /proc/swaps."""
    def areas():
        return [a.path for a in mounts.swap_areas(host)]

    def mkswap(argv):
        return Result(argv, 0, "Setting up swapspace version 1")

    def swapon(argv):
        write_swaps(None, areas() + [host.guest(argv[-1])])
        return Result(argv, 0)

    def swapoff(argv):
        path = host.guest(argv[-1])
        if path not in areas():
            return Result(argv, 255, stderr=f"swapoff: {path}: swapoff failed: No such file")
        write_swaps(None, [a for a in areas() if a != path])
        return Result(argv, 0)

    host.handlers.update(mkswap=mkswap, swapon=swapon, swapoff=swapoff)
    return host


@pytest.fixture
def guest(host, fs):
    return simulate(host)


def record(name):
    with open(f"/run/gandi/swap/{name}.json", encoding="utf-8") as f:
        return json.load(f)


# -- the decision, a pure function of facts -----------------------------------------------------
FACTS = swap.Facts(kind=swap.CONFIGURED, size=1 << 30)


@pytest.mark.parametrize("facts, action, words", [
    (replace(FACTS, active=True), swap.ACTIVE, "already"),
    (replace(FACTS, blank=True), swap.FORMAT, "blank"),
    (replace(FACTS, kind=swap.GANDISWAP), swap.FORMAT, "gandiswap"),
    (replace(FACTS, kind=swap.GANDISWAP, fstype="swap"), swap.REUSE, "reused"),
    (replace(FACTS, fstype="swap"), swap.REUSE, "reused"),
    (replace(FACTS, fstype="ext4"), swap.REFUSE, "holds ext4"),
    (replace(FACTS, kind=swap.GANDISWAP, fstype="xfs"), swap.REFUSE, "holds xfs"),
    (replace(FACTS, fstype="swsuspend"), swap.REFUSE, "holds swsuspend"),
    (replace(FACTS, partition_table="gpt", blank=False), swap.REFUSE, "gpt partition table"),
    (replace(FACTS, blank=False), swap.REFUSE, "not blank"),
    (replace(FACTS, blank_error="Permission denied"), swap.REFUSE, "cannot read"),
    (replace(FACTS, size=0, blank=True), swap.REFUSE, "zero size"),
    (replace(FACTS, read_only=True, blank=True), swap.REFUSE, "read-only"),
    (replace(FACTS, mounted=("/srv/x",), fstype="swap"), swap.REFUSE, "mounted at /srv/x"),
    (replace(FACTS, holders=("dm-0",), blank=True), swap.REFUSE, "dm-0"),
    (replace(FACTS, partitions=("vdb1",)), swap.REFUSE, "partitioned"),
    (replace(FACTS, probe_error="I/O error"), swap.REFUSE, "blkid failed"),
    (replace(FACTS, ambivalent=True), swap.REFUSE, "ambivalent"),
    (replace(FACTS, fstab_line=3, blank=True), swap.REFUSE, "fstab line 3"),
    (replace(FACTS, fstab_line=3, fstype="swap"), swap.REUSE, "reused"),
    (replace(FACTS, kind=swap.FIXED, blank=True), swap.FORMAT, "blank"),
    (replace(FACTS, kind=swap.FIXED, fstype="swap"), swap.REUSE, "reused"),
    (replace(FACTS, kind=swap.FIXED, fstype="ext4"), swap.NOT_OURS, "holds ext4"),
    (replace(FACTS, kind=swap.FIXED, blank=False), swap.NOT_OURS, "not blank"),
])
def test_decision(facts, action, words):
    decision = swap.decide(facts)
    assert decision.action == action
    assert words in decision.reason
    assert "\n" not in decision.reason


SWAP_SIG = Signature({"ID_FS_TYPE": "swap", "ID_FS_LABEL_ENC": "swap"})


@pytest.mark.parametrize("name, configured, partname, sig, gandiswap, kind", [
    ("vdc", "vdc", "", None, False, swap.CONFIGURED),
    ("vdb", "vdc", "gandiswap", SWAP_SIG, False, None),  # only the configured one, then
    ("vdc", None, "", None, False, None),  # configured, but no such device present
    ("vdb1", "", "gandiswap", None, True, swap.GANDISWAP),
    ("vdb1", "", "gandiswapX", None, False, None),
    ("vdb", "", "", SWAP_SIG, False, swap.LABELLED),
    ("vdb", "", "", Signature({"ID_FS_TYPE": "swap", "ID_FS_LABEL_ENC": "other"}), False, None),
    ("vdb", "", "", Signature({"ID_FS_TYPE": "ext4", "ID_FS_LABEL_ENC": "swap"}), False, None),
    ("sdb", "", "", None, False, swap.FIXED),
    ("xvdz1", "", "", None, False, swap.FIXED),
    ("sdb", "", "", None, True, None),  # a gandiswap partition is present: names yield
    ("sdc", "", "", None, False, None),
])
def test_kind_of(name, configured, partname, sig, gandiswap, kind):
    assert swap.kind_of(name, configured, partname, sig, gandiswap) == kind


# -- attach through disk attach ----------------------------------------------------------------
def test_a_blank_configured_device_is_formatted_and_enabled(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb")
    settings = replace(SETTINGS, swap_device="vdb", swap_priority=5)

    outcome = disk.attach(guest, settings, "vdb")

    assert outcome.state == "active" and not outcome.failed
    assert "formatted" in outcome.reason and "priority 5" in outcome.reason
    assert [c for c in guest.commands if c[0] != "blkid"] == [
        ["mkswap", "-L", "swap", "/dev/vdb"], ["swapon", "-p", "5", "/dev/vdb"]]
    assert mounts.active_swaps(guest) == ["/dev/vdb"]
    assert record("vdb")["ours"] is True and record("vdb")["formatted"] is True
    assert not os.listdir("/srv")  # never mounted under the disk root


def test_a_second_attach_changes_nothing(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb")
    settings = replace(SETTINGS, swap_device="vdb")
    disk.attach(guest, settings, "vdb")
    before = (guest.commands[:], open("/run/gandi/swap/vdb.json").read())

    outcome = disk.attach(guest, settings, "vdb")

    assert outcome.state == "active" and "already active (swapon by gandi)" in outcome.reason
    assert guest.commands == before[0]  # no process at all
    assert open("/run/gandi/swap/vdb.json").read() == before[1]


def test_a_used_configured_device_is_never_formatted(guest, fs, caplog):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb", b"customer data", at=4096)
    caplog.set_level(logging.INFO, "gandi")

    outcome = disk.attach(guest, replace(SETTINGS, swap_device="vdb"), "vdb")

    assert outcome.state == "skipped" and "never formatted" in outcome.reason
    assert guest.programs() == ["blkid"]
    assert mounts.active_swaps(guest) == []
    assert [r.message for r in caplog.records if "vdb" in r.message] == [
        "disk vdb: skipped: platform swap, CONFIG_SWAP_DEVICE: not blank and no known signature "
        "(it may hold data): never formatted"]


def test_a_gandiswap_partition_is_formatted(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152, partitions=[("vdb1", "253:17", 1048576)])
    with open("/sys/class/block/vdb1/uevent", "w") as f:
        f.write("MAJOR=253\nMINOR=17\nDEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=gandiswap\n")
    fill("vdb1", b"garbage")
    fill("vdb")

    outcome = disk.attach(guest, SETTINGS, "vdb1")

    assert outcome.state == "active" and "gandiswap" in outcome.reason
    assert ["mkswap", "-L", "swap", "/dev/vdb1"] in guest.commands
    assert record("vdb1")["whole_disk"] == "vdb"


def gandiswap_partition(fs, start_sectors):
    add_disk(fs, "vdb", "253:16", 2097152, partitions=[("vdb1", "253:17", 1048576)])
    with open("/sys/class/block/vdb1/uevent", "w") as f:
        f.write("MAJOR=253\nMINOR=17\nDEVNAME=vdb1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=gandiswap\n")
    with open("/sys/class/block/vdb1/start", "w") as f:
        f.write(f"{start_sectors}\n")
    fill("vdb1")


def test_the_drive_before_a_gandiswap_partition_is_read(guest, fs):
    gandiswap_partition(fs, 2048)  # 1 MiB: the archive lies in the gap before it
    fill("vdb", tar_bytes({"gandi/config": b"{}"}), size=2048 * KiB, at=512 * KiB)
    assert disk.attach(guest, SETTINGS, "vdb1").state == "active"
    assert os.path.isfile("/gandi/config")


def test_a_drive_running_into_the_swap_partition_is_refused(guest, fs, caplog):
    gandiswap_partition(fs, 1025)  # the partition starts 512 bytes after the archive does
    fill("vdb", tar_bytes({"gandi/config": b"{}"}), size=2048 * KiB, at=512 * KiB)
    assert disk.attach(guest, SETTINGS, "vdb1").state == "active"
    assert not os.path.exists("/gandi") and "overlaps the swap area" in caplog.text


def test_a_used_swap_disk_is_not_read_for_a_drive(guest, fs, caplog):
    """Past its header, a swap area used in an earlier boot holds memory pages of that boot: a
    local user could have planted an archive there, with an init that would run as root."""
    add_disk(fs, "vdc", "253:32", 2097152)
    guest.signatures["vdc"] = (0, swap_props("swap"))
    fill("vdc", tar_bytes({"gandi/init": b"#!/bin/sh\n"}), size=2048 * KiB, at=512 * KiB)
    with caplog.at_level(logging.INFO, logger="gandi"):
        assert disk.attach(guest, SETTINGS, "vdc").state == "active"
    assert not os.path.exists("/gandi") and "config drive not read" in caplog.text


def test_a_swap_labelled_swap_is_reused_as_is(guest, fs):
    add_disk(fs, "vdc", "253:32", 2097152)
    guest.signatures["vdc"] = (0, swap_props("swap"))

    outcome = disk.attach(guest, SETTINGS, "vdc")

    assert outcome.state == "active" and "reused" in outcome.reason
    assert "mkswap" not in guest.programs()
    assert mounts.active_swaps(guest) == ["/dev/vdc"]


def test_another_swap_is_still_skipped(guest, fs):
    add_disk(fs, "vdc", "253:32", 2097152)
    guest.signatures["vdc"] = (0, swap_props("other"))

    outcome = disk.attach(guest, SETTINGS, "vdc")

    assert (outcome.state, outcome.reason) == ("skipped", "swap signature")
    assert mounts.active_swaps(guest) == []


def test_a_fixed_name_holding_a_filesystem_is_an_ordinary_disk(guest, fs):
    add_disk(fs, "sdb", "8:16", 2097152)
    guest.signatures["sdb"] = (0, blkid_udev("ext4", label="data"))

    outcome = disk.attach(guest, SETTINGS, "sdb")

    assert outcome.state == "mounted" and outcome.mountpoint == "/srv/data"
    assert "mkswap" not in guest.programs() and "swapon" not in guest.programs()


def test_a_blank_fixed_name_is_formatted_unless_a_gandiswap_partition_exists(guest, fs):
    add_disk(fs, "sdb", "8:16", 2097152)
    fill("sdb")
    assert disk.attach(guest, SETTINGS, "sdb").state == "active"

    guest.commands.clear()
    os.unlink("/run/gandi/swap/sdb.json")
    write_swaps(fs, [])
    add_disk(fs, "vdb", "253:16", 2097152, partitions=[("vdb1", "253:17", 1048576)])
    with open("/sys/class/block/vdb1/uevent", "w") as f:
        f.write("PARTNAME=gandiswap\n")
    outcome = disk.attach(guest, SETTINGS, "sdb")
    assert outcome.state == "skipped" and outcome.reason == "no filesystem"
    assert "mkswap" not in guest.programs()


def test_swap_off_leaves_the_device_alone(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb")
    settings = replace(SETTINGS, swap_device="vdb", swap=False, provision=False)
    outcome = disk.attach(guest, settings, "vdb")
    assert outcome.reason == "no filesystem"
    assert "mkswap" not in guest.programs()


def test_swap_off_with_provision_reads_the_drive_but_enables_nothing(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb", tar_bytes({"gandi/config": b"{}"}), size=2048 * KiB, at=512 * KiB)
    settings = replace(SETTINGS, swap_device="vdb", swap=False, provision=True)
    outcome = disk.attach(guest, settings, "vdb")
    assert outcome.state == "skipped" and "CONFIG_SWAP=0" in outcome.reason
    assert os.path.isfile("/gandi/config")
    assert "mkswap" not in guest.programs() and "swapon" not in guest.programs()


def test_dry_run_plans_and_changes_nothing(fs, capsys):
    from fakesys import FakeHost, system

    system(fs)
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb", tar_bytes({"gandi/config": b"{}"}), size=2048 * KiB, at=512 * KiB)
    host = simulate(FakeHost(dry_run=True))

    outcome = disk.attach(host, replace(SETTINGS, swap_device="vdb"), "vdb")

    out = capsys.readouterr().out
    assert outcome.state == "active"
    assert "would run mkswap -L swap /dev/vdb" in out and "would run swapon /dev/vdb" in out
    assert mounts.active_swaps(host) == []
    assert not os.path.exists("/gandi") and not os.path.exists("/run/gandi/swap/vdb.json")


def test_a_failed_swapon_fails_the_attach(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    guest.signatures["vdb"] = (0, swap_props())
    guest.handlers["swapon"] = lambda argv: Result(argv, 255, stderr="swapon: /dev/vdb: Invalid argument")
    outcome = disk.attach(guest, SETTINGS, "vdb")
    assert outcome.failed and "swapon failed: swapon: /dev/vdb: Invalid argument" in outcome.reason


def test_the_owners_active_swap_is_not_ours(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    guest.signatures["vdb"] = (0, swap_props())
    write_swaps(fs, ["/dev/vdb"])
    outcome = disk.attach(guest, SETTINGS, "vdb")
    assert outcome.state == "skipped" and "system disk" in outcome.reason  # holds active swap
    guest.commands.clear()
    outcome = disk.attach(guest, replace(SETTINGS, swap_device="vdb"), "vdb")
    assert outcome.state == "active" and "not by gandi" in outcome.reason
    assert guest.commands == []
    assert disk.detach(guest, SETTINGS, "vdb").reason.endswith("left as it is")
    assert mounts.active_swaps(guest) == ["/dev/vdb"]


# -- config-2 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["config-2", "CONFIG-2"])
def test_an_openstack_config_drive_is_never_mounted(host, fs, label):
    add_disk(fs, "vdd", "253:48", 2048)
    host.signatures["vdd"] = (0, blkid_udev("iso9660", label=label))
    outcome = disk.attach(host, SETTINGS, "vdd")
    assert outcome.state == "skipped" and "config-2" in outcome.reason
    assert "mount" not in host.programs()


# -- detach --------------------------------------------------------------------------------------
def enabled(guest, fs, name="vdb"):
    add_disk(fs, name, "253:16", 2097152)
    fill(name)
    settings = replace(SETTINGS, swap_device=name)
    assert disk.attach(guest, settings, name).state == "active"
    guest.commands.clear()
    return settings


def test_detach_swaps_off_and_forgets(guest, fs):
    settings = enabled(guest, fs)
    outcome = disk.detach(guest, settings, "vdb")
    assert (outcome.state, outcome.failed) == ("off", False)
    assert guest.commands == [["swapoff", "/dev/vdb"]]
    assert mounts.active_swaps(guest) == []
    assert not os.path.exists("/run/gandi/swap/vdb.json")
    assert not os.path.exists("/run/gandi/disk/vdb.json")


def unplug(name="vdb"):
    """The kernel's view after a hot-unplug under an active swap: the node and sysfs are gone and
    /proc/swaps still lists the area, as `/dev/vdb (deleted)`."""
    os.unlink(f"/sys/class/block/{name}")
    os.unlink(f"/dev/{name}")
    with open("/proc/swaps", "w") as f:
        f.write("Filename\tType\tSize\tUsed\tPriority\n"
                f"{escape(f'/dev/{name} (deleted)')}\tpartition\t1048572\t1024\t-2\n")


def test_detach_of_an_unplugged_swap_logs_loudly_and_exits_0(guest, fs, caplog, capsys):
    settings = enabled(guest, fs)
    unplug()
    guest.handlers["mknod"] = lambda argv: Result(argv, 0)
    guest.handlers["swapoff"] = lambda argv: Result(argv, 255, stderr=f"swapoff: {argv[-1]}: "
                                                    "swapoff failed: No such device or address")

    outcome = disk.detach(guest, settings, "vdb")

    assert not outcome.failed and "dead swap area /dev/vdb still listed" in outcome.reason
    assert guest.programs() == ["swapoff", "mknod", "swapoff"]
    assert guest.commands[1] == ["mknod", "-m", "0600", "/dev/.gandi-swapoff-vdb", "b", "253",
                                 "16"]
    errors = [r.message for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "until reboot" in errors[0] and "\n" not in errors[0]
    assert not os.path.exists("/run/gandi/swap/vdb.json")
    assert not os.path.exists("/dev/.gandi-swapoff-vdb")


def test_the_cli_detach_of_a_dead_swap_exits_0(guest, fs, monkeypatch, capsys):

    enabled(guest, fs)
    unplug()
    _acting_on(guest, monkeypatch, "disk", "detach")
    assert cli.main(["disk", "detach", "vdb"]) == 0


def _acting_on(guest, monkeypatch, *words):
    """The command's action run on this guest, with vdb as the swap device."""
    real = cli.COMMANDS[words]

    def load():
        action = real.load()
        return lambda args, host, settings: action(args, guest, replace(settings, swap_device="vdb"))
    monkeypatch.setitem(cli.COMMANDS, words, cli.Command(load, real.positionals, real.optional,
                                                         real.options, real.syslog))


def test_detach_when_the_kernel_no_longer_lists_it(guest, fs):
    settings = enabled(guest, fs)
    write_swaps(fs, [])
    outcome = disk.detach(guest, settings, "vdb")
    assert outcome.state == "unchanged" and "no longer" in outcome.reason
    assert guest.commands == []


# -- status --------------------------------------------------------------------------------------
def test_status_lists_every_swap_ours_or_not_active_or_dead(guest, fs):
    enabled(guest, fs)
    with open("/proc/swaps", "a") as f:
        f.write("/swapfile\tfile\t2048\t0\t-3\n")
        f.write(f"{escape('/dev/vdx (deleted)')}\tpartition\t4096\t100\t-4\n")
    add_disk(fs, "vdc", "253:32", 2097152)
    fill("vdc", b"data")
    disk.attach(guest, replace(SETTINGS, swap_device="vdc"), "vdc")

    rows = swap.status(guest)

    by = {row["device"]: row for row in rows}
    assert by["/dev/vdb"]["ours"] is True and by["/dev/vdb"]["state"] == "active"
    assert by["/dev/vdb"]["size"] == 2097148 * 1024
    assert by["/swapfile"]["ours"] is False and by["/swapfile"]["priority"] == -3
    assert by["/dev/vdx"]["state"] == "dead"
    assert by["/dev/vdc"]["state"] == "skipped" and "never formatted" in by["/dev/vdc"]["reason"]
    text = status.render([], [], "text", swaps=rows)
    assert text.splitlines()[-5].split()[:2] == ["SWAP", "SIZE"] or "SWAP" in text
    assert "/dev/vdx" in text and "dead" in text


def test_status_text_escapes_a_hostile_swap_path():
    rows = [{"device": "/dev/x\x1b[2J\u2028y", "size": 1, "used": None, "priority": -2,
             "ours": False, "state": "active", "reason": "r\n"}]
    text = status.render([], [], "text", swaps=rows)
    assert all(line.isprintable() for line in text.split("\n"))


def test_cli_status_shows_swaps(guest, fs, monkeypatch, capsys):
    enabled(guest, fs)
    _acting_on(guest, monkeypatch, "status")
    assert cli.main(["status", "--format", "yaml"]) == 0
    import yaml

    data = yaml.safe_load(capsys.readouterr().out)
    assert [row["device"] for row in data["swaps"]] == ["/dev/vdb"]
    assert data["swaps"][0]["ours"] is True


# -- setup (the first step of config apply) -----------------------------------------------------
def test_setup_enables_the_platform_swap_and_is_idempotent(guest, fs):
    add_disk(fs, "vdb", "253:16", 2097152)
    fill("vdb")
    add_disk(fs, "vdc", "253:32", 2097152)
    guest.signatures["vdc"] = (0, swap_props("swap"))

    first = swap.setup(guest, SETTINGS)
    again = swap.setup(guest, SETTINGS)

    assert first == ["swap vdc: active: swap labelled 'swap': swap signature reused as is; swapon"]
    assert again == ["swap vdc: active: swap labelled 'swap': already active (swapon by gandi)"]
    assert "mkswap" not in guest.programs()  # vdb is blank but has no platform mark


def test_setup_with_everything_off_looks_for_nothing(guest):
    lines = swap.setup(guest, replace(SETTINGS, swap=False, provision=False))
    assert len(lines) == 1 and "not looked for" in lines[0]
    assert guest.commands == []


def test_setup_names_a_missing_configured_device(guest):
    assert swap.setup(guest, replace(SETTINGS, swap_device="vdq")) == [
        "swap: CONFIG_SWAP_DEVICE=vdq: no such block device"]


def test_setup_reports_no_device(guest):
    assert swap.setup(guest, SETTINGS) == ["swap: no platform swap device present"]


# -- /proc/swaps ---------------------------------------------------------------------------------
def test_swap_areas_parse_sizes_priorities_and_deleted(fs):
    os.makedirs("/proc", exist_ok=True)
    with open("/proc/swaps", "w") as f:
        f.write("Filename\tType\tSize\tUsed\tPriority\n/dev/vdb\tpartition\t100\t5\t-2\n"
                "/dev/vdc\\040(deleted)\tpartition\tx\t\n")
    areas = mounts.swap_areas(Host())
    assert areas[0] == mounts.SwapArea("/dev/vdb", "partition", 102400, 5120, -2, False)
    assert areas[1].path == "/dev/vdc" and areas[1].deleted and areas[1].size is None


def tar_bytes(files, extra=()):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"\0" * info.size) if info.size else None)
    return buffer.getvalue()
