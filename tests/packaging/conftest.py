"""Packaging tests: build the .deb (and the .rpm) from this tree, inspect them, install the .deb."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.packaging)


def build(script: str) -> Path:
    """Run a packaging/build-* script; skip when it says a build tool is missing."""
    done = subprocess.run([str(REPO / "packaging" / script)], capture_output=True, text=True,
                          timeout=900, check=False)
    if done.returncode != 0 and "missing build dependencies" in done.stderr:
        pytest.skip(done.stderr.strip())
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def built_deb() -> Path:
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage not installed (Debian package dpkg-dev)")
    return build("build-deb")


@pytest.fixture(scope="session")
def built_rpm() -> Path:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild not installed (Debian package rpm; Fedora/RHEL package rpm-build)")
    return build("build-rpm")


def deb_files(deb: Path) -> List[str]:
    """Files and links (not directories) a .deb ships, as absolute paths."""
    payload = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                             check=True).stdout
    listing = subprocess.run(["tar", "-t", "-v"], input=payload, capture_output=True,
                             check=True).stdout.decode().splitlines()
    return [line.split()[5].lstrip(".") for line in listing if not line.startswith("d")]


def rpm_files(rpm: Path) -> List[str]:
    """Files and links (not directories) an .rpm ships."""
    listing = subprocess.run(["rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]", str(rpm)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return [line.split(" ", 1)[1] for line in listing if not line.startswith("d")]
