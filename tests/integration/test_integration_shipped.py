"""The shipped udev rules and units, checked by systemd's own parsers (no udevd or systemd needed).

The rules only act in a booted guest: tests/vm/test_rules.py evaluates them there on the guest's
disks and NICs. Here `udevadm test` never sees a device of this machine, because on systemd 252
it is no dry run: it applies the interface rename of the .link files (it renamed a live `eth0` to
`enp0s3`), writes sysfs attributes and the udev database, and sets up /dev for the device it
evaluates. It runs in a scratch instead: a new network and mount namespace with its own sysfs and
a tmpfs on /run, evaluating the rules on devices that namespace holds (its own `lo`, a veth pair
made there), all gone when the command exits. Every rules file is parsed whatever the device, so
that is enough to catch what udevd would drop. `systemd-analyze verify` loads the units in a
scratch root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest

from gandi_integration import TOOL_PATH, require

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = "/run/udev/rules.d"  # read by `udevadm test`; a tmpfs of the scratch namespace
UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
VETH = "gveth0"  # no '-': only the rule's /devices/virtual branch may be what skips it
READY = "gandi-scratch-ready"

# In the new namespaces: a sysfs showing only their interfaces, a /run the host never sees, the
# rules under test, and a veth pair; then `udevadm test` once per (action, interface) argument pair.
SCRATCH = f"""set -e
mount -t sysfs sysfs /sys
mount -t tmpfs gandi-scratch /run
mkdir -p {RULES_DIR}
cp "$RULES"/* {RULES_DIR}/
ip link add {VETH} type veth peer name {VETH}p
echo {READY}
while [ $# -gt 1 ]; do
  echo "== udevadm test --action=$1 $2"
  udevadm test --action="$1" "/sys/class/net/$2" 2>&1 || true
  shift 2
done
"""


def udevadm_in_scratch(rules: Dict[str, str], tmp_path: Path,
                       runs: Sequence[Tuple[str, str]] = (("add", "lo"),)) -> Dict[str, str]:
    """Install `rules` (file name -> text) in a scratch namespace and run `udevadm test` there for
    each (action, interface) pair of `runs`; returns each run's output, keyed "action interface".
    Skips, with the reason, where the namespaces cannot be made."""
    require("udevadm", "unshare")
    source = tmp_path / "rules.d"
    source.mkdir()
    for name, text in rules.items():
        (source / name).write_text(text)
    done = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                           "sh", "-c", SCRATCH, "sh", *(word for run in runs for word in run)],
                          env=dict(os.environ, PATH=TOOL_PATH, RULES=str(source), LC_ALL="C"),
                          capture_output=True, text=True, timeout=120, check=False)
    setup, ready, evaluated = done.stdout.partition(READY + "\n")
    if not ready:
        pytest.skip(f"no scratch namespace for udevadm here (exit {done.returncode}): "
                    f"{(done.stderr or setup).strip()}")
    outputs = evaluated.split("== udevadm test --action=")[1:]
    return {run.split("\n", 1)[0]: run for run in outputs}


def complaints(output: str, name: str) -> List[str]:
    """udevd reports a line it cannot parse, then ignores it, as `path:line ...` at load time."""
    return [line for line in output.splitlines() if line.startswith(f"{RULES_DIR}/{name}:")]


def shipped_rule() -> Dict[str, str]:
    return {"86-gandi.rules": (REPO / "udev" / "86-gandi.rules").read_text()}


def test_rule_parses_cleanly(tmp_path):
    output = udevadm_in_scratch(shipped_rule(), tmp_path)["add lo"]
    assert f"Reading rules file: {RULES_DIR}/86-gandi.rules" in output, output[-2000:]
    assert complaints(output, "86-gandi.rules") == []


def test_rule_leaves_virtual_interfaces_alone(tmp_path):
    """Loopback and software interfaces (veth here) live under /devices/virtual: never ours.
    Disks and device-backed NICs are evaluated in the guest (tests/vm/test_rules.py)."""
    outputs = udevadm_in_scratch(shipped_rule(), tmp_path,
                                 (("add", "lo"), ("add", VETH), ("move", VETH)))
    assert sorted(outputs) == sorted(["add lo", f"add {VETH}", f"move {VETH}"])
    for run, output in outputs.items():
        assert "DEVPATH=/devices/virtual/net/" in output, (run, output[-2000:])
        assert "gandi-iface@" not in output, run


def test_the_onlining_rule_parses_cleanly(tmp_path):
    """udevd ignores a rule line it cannot parse, with only a log line: its IMPORT{file}, the
    glob matches of the configured values, the $env substitution and the continued line of
    properties it drops must all load. (What it decides is evaluated in tests/unit/test_online.py,
    and on hot-added vCPUs and memory in the guest, tests/vm/test_vcpu_memory.py.)"""
    name = "87-gandi-online.rules"
    output = udevadm_in_scratch({name: (REPO / "udev" / name).read_text()}, tmp_path)["add lo"]
    assert f"Reading rules file: {RULES_DIR}/{name}" in output, output[-2000:]
    assert complaints(output, name) == []


def test_units_pass_systemd_analyze_verify(tmp_path):
    require("systemd-analyze")
    system_units = next((d for d in UNIT_DIRS if os.path.isdir(d)), None)
    if system_units is None:
        pytest.skip("no systemd unit directory on this machine to verify against")
    # A scratch root: the distro's units (targets our units depend on), ours, and a stand-in
    # /usr/bin/gandi-vm and gate, so that nothing of this machine is touched.
    units = tmp_path / "usr/lib/systemd/system"
    shutil.copytree(system_units, units, symlinks=True)
    for pattern in ("*.service", "*.socket"):
        for unit in (REPO / "systemd").glob(pattern):
            shutil.copy(unit, units)
    for program in ("usr/bin/gandi-vm", "usr/libexec/gandi-vm/unit-gate"):  # the units' commands
        (tmp_path / program).parent.mkdir(parents=True)
        (tmp_path / program).write_text("#!/bin/sh\n")
        (tmp_path / program).chmod(0o755)

    done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}",
                           "gandi-mount.service", "gandi-disk@vdb.service",
                           "gandi-iface@ens4.service", "gandi-retune.service",
                           "gandi-config.service", "gandi-agent.socket", "gandi-agent.service",
                           # The real instance is vda:SECTORS; systemd 252's verify cannot load
                           # an instance with ':' (systemd-backlight@backlight:x neither).
                           "gandi-resize@vda.service"],
                          capture_output=True, text=True, timeout=60, check=False)
    # verify exits 0 on some problems (an ignored bad line): any output at all is a finding.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
