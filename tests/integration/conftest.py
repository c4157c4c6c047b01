"""Integration tests: the real `gandi-vm` program against real loop devices, mount and e2fsck.

Needs root. Each test's `env` fixture (gandi_integration.Env) makes its own loop devices and disk
root and cleans them up in teardown, whether the test passed or not.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from gandi_integration import BASE_TOOLS, MiB, PACKAGES, Env, sh, which


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


# -- session checks ------------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def integration_host() -> None:
    """Skip the whole directory, with a precise reason, where it cannot run."""
    if os.geteuid() != 0:
        pytest.skip("not root: integration tests attach loop devices and mount them")
    if not sys.platform.startswith("linux"):
        pytest.skip(f"not Linux ({sys.platform})")
    for tool in BASE_TOOLS:
        if which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package {PACKAGES[tool]})")
    with tempfile.TemporaryDirectory(prefix="gandi-it-probe-") as tmp:
        image = os.path.join(tmp, "probe.img")
        with open(image, "wb") as f:
            f.truncate(MiB)
        done = sh("losetup", "-f", "--show", image, check=False)
        if done.returncode != 0:
            pytest.skip("losetup cannot attach a loop device: "
                        + (done.stderr.decode(errors="replace").strip() or
                           f"exit {done.returncode}"))
        sh("losetup", "-d", done.stdout.decode().strip(), check=False)
        target = os.path.join(tmp, "mnt")
        os.mkdir(target)
        done = sh("mount", "-t", "tmpfs", "gandi-probe", target, check=False)
        if done.returncode != 0:
            pytest.skip("mount does not work here: " + done.stderr.decode(errors="replace").strip())
        sh("umount", target, check=False)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = Env(tmp_path)
    try:
        yield environment
    finally:
        problems = environment.cleanup()
    if problems:
        pytest.fail("teardown left state behind: " + "; ".join(problems))
