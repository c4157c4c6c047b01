"""The shipped udev rules and units, checked by systemd's own parsers (no udevd or systemd needed).

They can only run for real in a booted guest; here `udevadm test` evaluates the rule against a
real device of this machine and `systemd-analyze verify` loads the units in a scratch root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from gandi_integration import require

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = Path("/run/udev/rules.d")  # read by `udevadm test`, and gone at the next boot
UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")


@pytest.fixture
def installed_rule() -> Iterator[Path]:
    require("udevadm")
    target = RULES_DIR / "86-gandi.rules"
    if target.exists():
        pytest.skip(f"{target} already exists: not overwriting an installed rule")
    RULES_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "udev" / "86-gandi.rules", target)
    try:
        yield target
    finally:
        target.unlink()


def udevadm_test(action: str, name: str, klass: str = "block") -> str:
    done = subprocess.run(["udevadm", "test", f"--action={action}", f"/sys/class/{klass}/{name}"],
                          capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


def test_rule_parses_cleanly_and_skips_loop_devices(installed_rule):
    output = udevadm_test("add", "loop0")
    assert f"Reading rules file: {installed_rule}" in output
    complaints = [line for line in output.splitlines()
                  if f"{installed_rule}:" in line]  # udevd prefixes parse errors with file:line
    assert complaints == []
    assert "gandi-disk@" not in output


def test_rule_delegates_add_and_change_of_a_disk_but_not_bind(installed_rule):
    disks = sorted(os.path.basename(p) for pattern in ("vd*", "sd*", "xvd*", "nvme*")
                   for p in glob.glob(f"/sys/class/block/{pattern}"))
    if not disks:
        pytest.skip("no virtio, SCSI, Xen or NVMe disk on this machine to evaluate the rule on")
    disk = disks[0]
    for action in ("add", "change"):
        assert f"SYSTEMD_WANTS=gandi-disk@{disk}.service" in udevadm_test(action, disk), action
    assert "gandi-disk@" not in udevadm_test("bind", disk)


def test_rule_delegates_a_device_backed_interface_on_add_and_move(installed_rule):
    backed = sorted(os.path.basename(p) for p in glob.glob("/sys/class/net/*")
                    if os.path.exists(f"{p}/device") and "-" not in os.path.basename(p))
    if not backed:
        pytest.skip("no interface backed by a device on this machine to evaluate the rule on")
    nic = backed[0]
    output = udevadm_test("add", nic, "net")
    unopenable = [line for line in output.splitlines() if line.startswith("Failed to open device")]
    if unopenable:  # seen in containers whose /sys belongs to another network namespace
        pytest.skip(f"udevadm cannot evaluate rules on {nic} here: {unopenable[0]}")
    assert f"SYSTEMD_WANTS=gandi-iface@{nic}.service" in output
    for action in ("change", "bind"):
        assert "gandi-iface@" not in udevadm_test(action, nic, "net"), action
    assert "gandi-iface@" not in udevadm_test("add", "lo", "net"), "loopback is virtual"


ONLINE_VARIANTS = [
    dict(), dict(memory_zone="online_movable"), dict(memory_zone="online_kernel"),
    dict(cpu_hotplug=False), dict(memory_hotplug=False), dict(auto_onlined=True),
]


@pytest.mark.parametrize("variant", ONLINE_VARIANTS, ids=lambda v: ",".join(f"{k}={w}" for k, w in v.items())
                         or "defaults")
def test_every_onlining_rule_the_generator_writes_parses_cleanly(variant):
    """udevd ignores a rule line it cannot parse, with only a log line: parse each variant."""
    from dataclasses import replace

    from gandi_vm import config, online

    require("udevadm")
    target = RULES_DIR / online.RULE_NAME
    if target.exists():
        pytest.skip(f"{target} already exists: not overwriting an installed rule")
    variant = dict(variant)
    auto = variant.pop("auto_onlined", False)
    RULES_DIR.mkdir(parents=True, exist_ok=True)
    target.write_text(online.render_rules(replace(config.Settings(), **variant), auto))
    try:
        cpus = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*"))
        done = subprocess.run(["udevadm", "test", "--action=add", cpus[-1]], capture_output=True,
                              text=True, timeout=60, check=False)
    finally:
        target.unlink()
    output = done.stdout + done.stderr
    assert f"Reading rules file: {target}" in output, output[-2000:]
    assert [line for line in output.splitlines() if f"{target}:" in line] == []


def test_units_pass_systemd_analyze_verify(tmp_path):
    require("systemd-analyze")
    system_units = next((d for d in UNIT_DIRS if os.path.isdir(d)), None)
    if system_units is None:
        pytest.skip("no systemd unit directory on this machine to verify against")
    # A scratch root: the distro's units (targets our units depend on), ours, and a stand-in
    # /usr/bin/gandi-vm, so that nothing of this machine is touched.
    units = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(system_units, units, symlinks=True)
    for unit in (REPO / "systemd").glob("*.service"):
        shutil.copy(unit, units)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/gandi-vm").write_text("#!/bin/sh\n")
    (tmp_path / "usr/bin/gandi-vm").chmod(0o755)

    done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}",
                           "gandi-mount.service", "gandi-disk@vdb.service",
                           "gandi-iface@ens4.service", "gandi-retune.service",
                           "gandi-online-rules.service", "gandi-config.service"],
                          capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on some problems (an ignored bad line): any output at all is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
