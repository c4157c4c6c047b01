"""Integration tests: the real `gandi-vm` program against real loop devices, mount and e2fsck,
and against real network interfaces, DHCP clients and dnsmasq in network namespaces.

Needs root. Each disk test's `env` fixture (gandi_integration.Env) makes its own loop devices and
disk root; each network test's `make_lab` fixture (gandi_netns.Lab) makes its own namespaces,
veth pairs, dnsmasq and fake root. Both clean up in teardown, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Iterator, List, Tuple

import pytest

import gandi_netns
from gandi_integration import BASE_TOOLS, MiB, PACKAGES, Env, mount_table, sh, which
from gandi_netns import Lab


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


# -- the host stays as it was --------------------------------------------------------------------
# What tests may create and remove: temporary roots and loop mounts under temporary directories,
# and network namespaces (`ip netns add` bind-mounts /run/netns once and keeps it).
CREATED_BY_TESTS = (tempfile.gettempdir(), "/var/tmp", "/run/netns")
HostState = Tuple[Dict[str, FrozenSet[str]], Tuple[str, ...]]


def host_state() -> HostState:
    """The host's interfaces (name -> addresses, read in the host's namespace) and its mountpoints
    outside what tests create. Temporary (privacy) IPv6 addresses come and go by themselves."""
    links = json.loads(sh("ip", "-j", "addr", "show").stdout or b"[]")
    interfaces = {link["ifname"]: frozenset(f"{a['local']}/{a['prefixlen']}"
                                            for a in link.get("addr_info", [])
                                            if "local" in a and not a.get("temporary"))
                  for link in links}
    mountpoints = tuple(sorted(m.target for m in mount_table()
                               if not any(m.target == d or m.target.startswith(d + "/")
                                          for d in CREATED_BY_TESTS)))
    return interfaces, mountpoints


@pytest.fixture(scope="module", autouse=True)
def host_unchanged(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the module that changed the host's interfaces or mounts (a test may only change what
    it created: loop devices, namespaces, temporary roots). Per module, so the report names it."""
    if which("ip") is None or which("findmnt") is None:
        yield  # nothing to compare with; the tests themselves skip for the same tools
        return
    before = host_state()
    yield
    after = host_state()
    if after == before:
        return
    (links_before, mounts_before), (links_after, mounts_after) = before, after

    def addresses(links: Dict[str, FrozenSet[str]], name: str) -> str:
        return " ".join(sorted(links[name])) or "no address" if name in links else "absent"

    changes = [f"interface {name}: {addresses(links_before, name)} -> {addresses(links_after, name)}"
               for name in sorted(set(links_before) | set(links_after))
               if links_before.get(name) != links_after.get(name)]
    changes += [f"mount {target} appeared" for target in sorted(set(mounts_after) - set(mounts_before))]
    changes += [f"mount {target} gone" for target in sorted(set(mounts_before) - set(mounts_after))]
    pytest.fail(f"{request.module.__name__} changed the host: " + "; ".join(
        changes or ["the same mountpoints, mounted a different number of times"]))


@pytest.fixture(scope="session", autouse=True)
def run_gandi_restored() -> Iterator[None]:
    """The disk tests run the real program on this machine's loop devices, so it keeps its state
    records and locks in the host's /run/gandi: take away, at the end, every file and directory
    there that the session created (whatever existed before is the machine's own)."""
    top = Path("/run/gandi")
    before = set(top.rglob("*")) if top.exists() else None
    yield
    if before is None:
        shutil.rmtree(top, ignore_errors=True)
        return
    for path in sorted(set(top.rglob("*")) - before, reverse=True):  # children before parents
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()


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
