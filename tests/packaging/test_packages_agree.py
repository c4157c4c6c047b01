"""The deb, the rpm and the source tree ship the same files.

Paths differ by distro (/lib vs /usr/lib, /etc/default vs /etc/sysconfig, dist-packages vs a
private directory), so each shipped path is reduced to its role; a path no rule knows fails the
test, so that a new kind of file is classified here on purpose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterable, Optional, Set

import pytest

from conftest import REPO, deb_files, rpm_files

# (pattern, role template). Distro-specific bookkeeping maps to None: Debian's changelog.gz,
# copyright and lintian overrides, the rpm's %license copy, the wheel's dist-info.
ROLES = [
    (r"/usr/lib/python3/dist-packages/gandi_vm/(\w+\.py)", "module {}"),
    (r"/usr/share/gandi-vm/gandi_vm/(\w+\.py)", "module {}"),
    (r"/usr/lib/python3/dist-packages/gandi_vm/plugins/(\w+\.py)", "plugin {}"),
    (r"/usr/share/gandi-vm/gandi_vm/plugins/(\w+\.py)", "plugin {}"),
    (r"/usr/lib/python3/dist-packages/gandi_vm-[^/]+\.dist-info/.*", None),
    (r"/usr/bin/(gandi-vm)", "command {}"),
    (r"(?:/usr)?/lib/systemd/system/([^/]+\.(?:service|socket))", "unit {}"),
    (r"/usr/libexec/gandi-vm/(unit-gate)", "unit helper {}"),
    (r"(?:/usr)?/lib/systemd/system-preset/([^/]+\.preset)", "preset {}"),
    (r"(?:/usr)?/lib/udev/rules\.d/([^/]+\.rules)", "udev rule {}"),
    (r"/etc/(?:default|sysconfig)/(gandi)", "config {}"),
    (r"/etc/gandi/hooks/([^/]+)", "hook {}"),
    (r"/etc/gandi/(sysctl\.conf)", "config {}"),
    (r"/usr/share/man/man8/([^/]+\.8)(?:\.gz)?", "man page {}"),
    (r"/usr/share/doc/gandi-vm/(README\.md)(?:\.gz)?", "doc {}"),
    (r"/usr/share/doc/gandi-vm/(?:changelog\.gz|copyright)", None),
    (r"/usr/share/licenses/gandi-vm/LICENSE", None),
    (r"/usr/share/lintian/overrides/gandi-vm", None),
]


def role(path: str) -> Optional[str]:
    for pattern, template in ROLES:
        match = re.fullmatch(pattern, path)
        if match:
            return template.format(*match.groups()) if template else None
    return f"UNCLASSIFIED {path}"


def roles(paths: Iterable[str]) -> Set[str]:
    return {r for r in map(role, paths) if r is not None}


def tree_roles() -> Set[str]:
    """What the source tree says must ship."""
    def names(pattern: str) -> Set[str]:
        return {p.name for p in REPO.glob(pattern)}

    return ({f"module {n}" for n in names("gandi_vm/*.py")}
            | {f"plugin {n}" for n in names("gandi_vm/plugins/*.py")}
            | {"command gandi-vm", "config gandi", "doc README.md"}
            | {f"unit {n}" for n in names("systemd/*.service") | names("systemd/*.socket")}
            | {"unit helper unit-gate"}
            | {f"preset {n}" for n in names("packaging/*.preset")}
            | {f"udev rule {n}" for n in names("udev/*.rules")}
            | {f"hook {n}" for n in names("etc/gandi/hooks/*")}
            | {f"config {n}" for n in names("etc/gandi/*.conf")}
            | {f"man page {n}" for n in names("doc/*.8")})


def test_deb_rpm_and_tree_ship_the_same_files(built_deb: Path, built_rpm: Path):
    expected = tree_roles()
    assert roles(deb_files(built_deb)) == expected
    assert roles(rpm_files(built_rpm)) == expected


# What systemd and udev run, shipped as the tree has it by both packages: (role, tree file).
SHIPPED_AS_IS = {f"unit {path.name}": path for pattern in ("*.service", "*.socket")
                 for path in (REPO / "systemd").glob(pattern)}
SHIPPED_AS_IS.update({f"udev rule {path.name}": path for path in (REPO / "udev").glob("*.rules")})
SHIPPED_AS_IS.update({"unit helper unit-gate": REPO / "systemd/unit-gate",
                      "preset 85-gandi-vm.preset": REPO / "packaging/85-gandi-vm.preset"})


def extracted(top: Path) -> Dict[str, bytes]:
    """Role -> content of each file under an extracted payload that SHIPPED_AS_IS names."""
    found = {}
    for path in top.rglob("*"):
        name = role("/" + str(path.relative_to(top)))
        if name in SHIPPED_AS_IS and path.is_file():
            found[name] = path.read_bytes()
    return found


def test_deb_and_rpm_ship_units_gate_rules_and_preset_as_the_tree_has_them(
        built_deb: Path, built_rpm: Path, tmp_path: Path):
    """The agent's socket and service among them: one unit file for both distros, unchanged."""
    for tool in ("rpm2cpio", "cpio"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian packages rpm2cpio: rpm, cpio: cpio)")
    deb, rpm = tmp_path / "deb", tmp_path / "rpm"
    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(deb)], check=True, timeout=60)
    rpm.mkdir()
    archive = subprocess.run(["rpm2cpio", str(built_rpm)], capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=archive, cwd=rpm,
                   capture_output=True, check=True, timeout=60)
    tree = {name: path.read_bytes() for name, path in SHIPPED_AS_IS.items()}
    assert {"unit gandi-agent.socket", "unit gandi-agent.service"} <= set(tree)
    assert extracted(deb) == tree
    assert extracted(rpm) == tree
