"""Integration tests: the real `gandi-vm` program against real loop devices, mount and e2fsck,
and against real network interfaces, DHCP clients and dnsmasq in network namespaces.

Needs root. Each disk test's `env` fixture (gandi_integration.Env) makes its own loop devices and
disk root; each network test's `make_lab` fixture (gandi_netns.Lab) makes its own namespaces,
veth pairs, dnsmasq and fake root. Both clean up in teardown, whether the test passed or not.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

import gandi_netns
from gandi_integration import BASE_TOOLS, MiB, PACKAGES, Env, sh, which
from gandi_netns import Lab


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
        pytest.skip("not root: integration tests attach loop devices, mount them and make "
                    "network namespaces")
    if not sys.platform.startswith("linux"):
        pytest.skip(f"not Linux ({sys.platform})")


@pytest.fixture(scope="session")
def loop_devices() -> None:
    """Skip the disk tests, with a precise reason, where loop devices or mount do not work."""
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


@pytest.fixture(scope="session")
def network_namespaces() -> None:
    """Skip the network tests, with a precise reason, where namespaces or veth do not work."""
    reason = gandi_netns.missing() or gandi_netns.unusable()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def env(tmp_path: Path, loop_devices: None) -> Iterator[Env]:
    environment = Env(tmp_path)
    try:
        yield environment
    finally:
        problems = environment.cleanup()
    if problems:
        pytest.fail("teardown left state behind: " + "; ".join(problems))


@pytest.fixture
def make_lab(tmp_path: Path, network_namespaces: None) -> Iterator[Callable[..., Lab]]:
    """`make_lab(**options)`: a started gandi_netns.Lab (see Lab for the options). A lab whose
    client is not installed skips the test; without a client, the tests expect dhclient (the
    client gandi-vm prefers) and skip where it is missing."""
    labs: List[Lab] = []

    def make(**options) -> Lab:
        reason = gandi_netns.missing(options.get("client") or "dhclient")
        if reason:
            pytest.skip(reason)
        lab = Lab(tmp_path / f"lab{len(labs)}", **options)
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        problems = [problem for lab in labs for problem in lab.cleanup()]
    if problems:
        pytest.fail("teardown left state behind: " + "; ".join(problems))
