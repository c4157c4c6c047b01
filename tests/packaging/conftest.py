"""Packaging tests: build the .deb (and the .rpm) from this tree, inspect them, install the .deb."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
