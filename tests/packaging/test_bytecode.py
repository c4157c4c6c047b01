"""Compiled bytecode and the launcher's own imports in the packages (issue 14: a handler's start is
paid at every boot and hotplug event; compiling gandi_vm's modules, or importing what the command
does not use, at each start costs more than the interpreter itself)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path



def control_file(deb: Path, name: str, workdir: Path) -> str:
    subprocess.run(["dpkg-deb", "-e", str(deb), str(workdir / "DEBIAN")], check=True, timeout=60)
    return (workdir / "DEBIAN" / name).read_text()


def payload_file(deb: Path, path: str, workdir: Path) -> str:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(workdir / "root")], check=True, timeout=60)
    return (workdir / "root" / path.lstrip("/")).read_text()


def test_the_deb_byte_compiles_gandi_vm_at_install_and_removes_it_before_removal(built_deb, tmp_path):
    # dh_python3: py3compile with the guest's own python3 (the build host's is not the guest's),
    # and py3clean before the files go.
    assert re.search(r"^\s*py3compile -p gandi-vm\b", control_file(built_deb, "postinst", tmp_path),
                     re.M)
    assert re.search(r"^\s*py3clean -p gandi-vm\b", control_file(built_deb, "prerm", tmp_path), re.M)


def test_the_deb_launcher_imports_nothing_gandi_vm_does_not(built_deb, tmp_path):
    # Not the console script setuptools writes for [project.scripts]: it imports re (about 4 ms,
    # a third of the 1.3x budget) before gandi_vm. The rpm's launcher imports sys only too.
    launcher = payload_file(built_deb, "/usr/bin/gandi-vm", tmp_path)
    imports = re.findall(r"^(?:import|from) (\S+)", launcher, re.M)
    assert set(imports) <= {"sys", "gandi_vm.cli"}, imports


def test_the_rpm_byte_compiles_gandi_vm_at_install_with_the_guests_python(built_rpm):
    scripts = subprocess.run(["rpm", "-qp", "--scripts", str(built_rpm)], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    post, _, rest = scripts.partition("preuninstall scriptlet")
    assert re.search(r"^/usr/bin/python3 -m compileall -q /usr/share/gandi-vm/gandi_vm\b", post, re.M)
    assert "rm -rf /usr/share/gandi-vm/gandi_vm/__pycache__" in rest
