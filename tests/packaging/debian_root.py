"""A throwaway Debian 12 root to install the built .deb into, as a guest image build would.

The minbase debootstrap is cached as a tarball keyed by what shapes it (suite, variant, mirror,
debootstrap's version); each test module extracts a fresh copy. Only /proc is mounted inside, and
the copy is deleted only once nothing is mounted under it any more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

SUITE = "bookworm"
MIRROR = os.environ.get("GANDI_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("GANDI_TEST_CACHE", "/var/cache/gandi-vm-tests"))
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={"PATH": SBIN_PATH, "LC_ALL": "C"})


def base_tarball() -> Path:
    """The cached minbase root, built on first use (about 30 s and 200 MB)."""
    debootstrap = _run("dpkg-query", "-W", "-f=${Version}", "debootstrap").stdout
    key = hashlib.sha256(f"{SUITE} minbase {MIRROR} {debootstrap}".encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{SUITE}-minbase-{key}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gandi-debootstrap-", dir="/var/tmp") as work:
        target = Path(work) / "root"
        done = _run("debootstrap", "--variant=minbase", SUITE, str(target), MIRROR)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        partial = tarball.with_suffix(".partial")
        done = _run("tar", "-C", str(target), "-cf", str(partial), ".")
        if done.returncode != 0:
            raise RuntimeError(f"tar failed: {done.stderr}")
        partial.rename(tarball)
    return tarball


class Chroot:
    def __init__(self, top: Path):
        self.top = top

    def path(self, guest_path: str) -> Path:
        return self.top / guest_path.lstrip("/")

    def run(self, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {"PATH": SBIN_PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive",
               "HOME": "/root"}
        return subprocess.run(["chroot", str(self.top), *argv], capture_output=True, text=True,
                              timeout=timeout, check=False, env=env, stdin=subprocess.DEVNULL)

    def check(self, *argv: str, timeout: float = 900) -> str:
        done = self.run(*argv, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout


def _mounted_under(top: Path) -> list:
    prefix = str(top) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]


@contextlib.contextmanager
def debian_root() -> Iterator[Chroot]:
    tarball = base_tarball()
    top = Path(tempfile.mkdtemp(prefix="gandi-deb-root-", dir="/var/tmp"))
    try:
        done = _run("tar", "-C", str(top), "-xf", str(tarball))
        if done.returncode != 0:
            raise RuntimeError(f"tar -x failed: {done.stderr}")
        shutil.copy("/etc/resolv.conf", top / "etc/resolv.conf")
        # No service starts from maintainer scripts: there is no init in here.
        policy = top / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        done = _run("mount", "-t", "proc", "proc", str(top / "proc"))
        if done.returncode != 0:
            raise RuntimeError(f"mount proc failed: {done.stderr}")
        yield Chroot(top)
    finally:
        if _mounted_under(top):
            _run("umount", "-R", str(top / "proc"))
        left = _mounted_under(top)
        if left:  # never delete through a mount: it would reach the host
            raise RuntimeError(f"still mounted under {top}: {left}; not removing it")
        shutil.rmtree(top)
