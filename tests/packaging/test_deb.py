"""The .deb: lintian-clean, and installable, upgradable and purgeable in a Debian 12 root with apt
resolving its dependencies from the distro, as when a guest image is built."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from conftest import REPO, deb_files
from debian_root import SBIN_PATH, Chroot, debian_root

import gandi_vm


def test_lintian_reports_no_errors_nor_warnings(built_deb: Path):
    """Deliberate findings are overridden, with their reason, in debian/gandi-vm.lintian-overrides
    (a maintainer script calling systemctl directly, for one, bypasses policy-rc.d: a warning)."""
    if shutil.which("lintian") is None:
        pytest.skip("lintian not installed (Debian package lintian)")
    done = subprocess.run(["lintian", "--fail-on", "error,warning", str(built_deb)],
                          capture_output=True, text=True, timeout=600, check=False)
    findings = [line for line in done.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert (done.returncode, findings) == (0, [])


@pytest.fixture(scope="module")
def root(built_deb: Path) -> Iterator[Chroot]:
    if os.geteuid() != 0:
        pytest.skip("not root: installing into a debootstrapped root needs chroot")
    for tool in ("debootstrap", "chroot"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"{tool} not installed (Debian package debootstrap / coreutils)")
    with debian_root() as chroot:
        shutil.copy(built_deb, chroot.path("/tmp/gandi-vm.deb"))
        chroot.check("apt-get", "update", "-q")
        chroot.check("apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/gandi-vm.deb")
        yield chroot


def test_runs_with_the_distro_python_and_libraries(root: Chroot):
    assert root.check("gandi-vm", "--version").strip() == f"gandi-vm {gandi_vm.__version__}"
    assert root.path("/usr/bin/gandi-vm").read_text().splitlines()[0] == "#!/usr/bin/python3"
    where = root.check("python3", "-c", "import gandi_vm, pyudev, psutil, yaml\n"
                       "for m in (gandi_vm, pyudev, psutil, yaml): print(m.__file__)")
    assert all(path.startswith("/usr/lib/python3/dist-packages/") for path in where.split()), where


def test_dry_run_mount_all_plans_without_changing_anything(root: Chroot):
    assert root.run("gandi-vm", "--dry-run", "mount-all").returncode == 0
    shutil.copy(REPO / "scripts" / "sample-root", root.path("/tmp/sample-root"))
    root.check("bash", "/tmp/sample-root", "/sample", "/etc/default/gandi")

    done = root.run("gandi-vm", "--root", "/sample", "--dry-run", "mount-all")

    assert done.returncode == 0, done.stderr
    assert "would run mount -t ext4 -o rw,nosuid,nodev,noatime /sample/dev/vdb /sample/srv/data" \
        in done.stdout.splitlines()
    assert "disk vda: skipped: on the system disk vda (holds /)" in done.stderr
    assert not root.path("/sample/srv").exists() and not root.path("/sample/run").exists()


def test_boot_services_and_agent_socket_enabled_and_units_verify(root: Chroot):
    for unit in ("gandi-mount.service", "gandi-config.service", "gandi-postboot.service",
                 "gandi-agent.socket"):
        enabled = subprocess.run(["systemctl", f"--root={root.top}", "is-enabled", unit],
                                 capture_output=True, text=True, check=False)
        assert enabled.stdout.strip() == "enabled", unit
    # dh_installsystemd enabled the socket as its [Install] says; its service is socket-activated.
    assert root.path("/etc/systemd/system/sockets.target.wants/gandi-agent.socket").is_symlink()
    static = subprocess.run(["systemctl", f"--root={root.top}", "is-enabled", "gandi-agent.service"],
                            capture_output=True, text=True, check=False)
    assert static.stdout.strip() == "static"
    done = root.run("systemd-analyze", "verify", "--man=no", "gandi-mount.service",
                    "gandi-config.service", "gandi-disk@vdb.service",
                    "gandi-iface@ens4.service", "gandi-retune.service", "gandi-resize@vda.service",
                    "gandi-agent.socket", "gandi-agent.service")
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    # gandi-postboot.service is left out: verify wants its ExecStart, /gandi/init, to exist, and
    # only the platform's drive brings it (its conditions keep systemd from starting it without).
    for rules in (REPO / "udev").glob("*.rules"):
        assert root.path(f"/lib/udev/rules.d/{rules.name}").read_bytes() == rules.read_bytes()


def upgrade_package(built_deb: Path, workdir: Path, version: str) -> Path:
    """The same package under a higher version: what an upgrade looks like to dpkg."""
    tree = workdir / "tree"
    subprocess.run(["dpkg-deb", "-R", str(built_deb), str(tree)], check=True)
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(
        f"Version: {version}\n" if line.startswith("Version:") else line
        for line in control.read_text().splitlines(keepends=True)))
    target = workdir / "gandi-vm-upgrade.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)],
                   check=True, capture_output=True)
    return target


def test_edits_survive_reinstall_and_upgrade_and_purge_leaves_nothing(
        root: Chroot, built_deb: Path, tmp_path: Path):
    conffile = root.path("/etc/default/gandi")
    edited = conffile.read_text() + "CONFIG_DISK_ROOT=/data\n"
    conffile.write_text(edited)

    root.check("apt-get", "install", "-y", "-q", "--reinstall", "/tmp/gandi-vm.deb")
    assert conffile.read_text() == edited

    upgraded = f"{gandi_vm.__version__}+upgrade1"
    shutil.copy(upgrade_package(built_deb, tmp_path, upgraded), root.path("/tmp/upgrade.deb"))
    root.check("apt-get", "install", "-y", "-q", "/tmp/upgrade.deb")
    assert root.check("dpkg-query", "-W", "-f=${Version}", "gandi-vm") == upgraded
    assert conffile.read_text() == edited

    root.check("apt-get", "remove", "-y", "-q", "gandi-vm")
    assert conffile.read_text() == edited  # remove keeps the owner's configuration
    assert not root.path("/lib/systemd/system/gandi-mount.service").exists()

    # What the handlers leave at run time: the DHCP client's event script.
    root.path("/var/lib/gandi-vm").mkdir(exist_ok=True)
    root.path("/var/lib/gandi-vm/lease-script").write_text("#!/usr/bin/python3\n")
    root.check("apt-get", "purge", "-y", "-q", "gandi-vm")
    ours = deb_files(built_deb) + [
        "/var/lib/gandi-vm",
        "/etc/gandi",
        "/etc/systemd/system/multi-user.target.wants/gandi-mount.service",
        "/etc/systemd/system/multi-user.target.wants/gandi-config.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/gandi-mount.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/gandi-config.service.dsh-also",
        "/etc/systemd/system/multi-user.target.wants/gandi-postboot.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/gandi-postboot.service.dsh-also",
        "/etc/systemd/system/sockets.target.wants/gandi-agent.socket",
        "/var/lib/systemd/deb-systemd-helper-enabled/gandi-agent.socket.dsh-also",
        "/usr/lib/python3/dist-packages/gandi_vm",
        "/run/gandi",
    ]
    left = [path for path in ours if os.path.lexists(root.path(path))]
    assert left == []
    assert root.run("dpkg-query", "-W", "gandi-vm").returncode != 0


# Boot units of earlier builds, run before sysinit.target; gone since (the onlining rule reads the
# configuration itself, gandi-mount grows the root).
OLD_UNITS = ("gandi-online-rules.service", "gandi-early.service")
OLD_UNIT_FILE = """[Unit]
Description=gandi-vm: an early boot unit of an earlier build
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/gandi-vm --version

[Install]
WantedBy=sysinit.target
"""


def old_package(built_deb: Path, workdir: Path, old_unit: str) -> Path:
    """The package as a build that shipped `old_unit` was, at a lower version: the unit file, the
    block debhelper writes into the postinst to enable it (the one of gandi-mount.service, renamed)
    and its name in the postrm's purge, and no migration of its own to run."""
    tree = workdir / "old"
    subprocess.run(["dpkg-deb", "-R", str(built_deb), str(tree)], check=True)
    (tree / "lib/systemd/system" / old_unit).write_text(OLD_UNIT_FILE)
    postinst = tree / "DEBIAN" / "postinst"
    blocks = re.findall(r"# Automatically added by dh_installsystemd.*?# End automatically added section\n",
                        postinst.read_text(), flags=re.S)
    [mount_block] = [block for block in blocks if "enable 'gandi-mount.service'" in block]
    text, count = re.subn(r"\n# An upgrade from a build that shipped .*?\nfi\n", "\n",
                          postinst.read_text().replace(
                              mount_block, mount_block + mount_block.replace("gandi-mount.service",
                                                                             old_unit)),
                          flags=re.S)
    assert count == 1, "the postinst's migration block moved: update this test"
    postinst.write_text(text)
    postrm = tree / "DEBIAN" / "postrm"
    postrm.write_text(postrm.read_text().replace("'gandi-mount.service'",
                                                 f"'gandi-mount.service' '{old_unit}'"))
    control = tree / "DEBIAN" / "control"
    control.write_text("".join(
        "Version: 0.0.1\n" if line.startswith("Version:") else line
        for line in control.read_text().splitlines(keepends=True)))
    target = workdir / "gandi-vm-old.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)],
                   check=True, capture_output=True)
    return target


@pytest.mark.parametrize("old_unit", OLD_UNITS)
def test_upgrade_from_an_early_boot_unit_leaves_no_dangling_link(
        root: Chroot, built_deb: Path, tmp_path: Path, old_unit: str):
    """After an upgrade from a build with an early boot unit, nothing of that unit's enablement is
    left (its unit file is gone), nor the onlining rule it rendered into /run (it would override
    the shipped one), and gandi-mount.service, which now grows the root, is enabled."""
    root.check("dpkg", "--purge", "gandi-vm")  # order-independent: start clean (a no-op if gone)
    shutil.copy(old_package(built_deb, tmp_path, old_unit), root.path("/tmp/old.deb"))
    root.check("apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/old.deb")
    old_link = root.path(f"/etc/systemd/system/sysinit.target.wants/{old_unit}")
    old_state = root.path(f"/var/lib/systemd/deb-systemd-helper-enabled/{old_unit}.dsh-also")
    assert old_link.is_symlink() and old_state.exists(), "the old build enabled its unit"
    rendered = root.path("/run/udev/rules.d/87-gandi-online.rules")
    rendered.parent.mkdir(parents=True, exist_ok=True)
    rendered.write_text('ACTION!="add", GOTO="gandi_online_end"\nLABEL="gandi_online_end"\n')

    root.check("apt-get", "install", "-y", "-q", "--no-install-recommends", "/tmp/gandi-vm.deb")

    assert not os.path.lexists(old_link) and not os.path.lexists(old_state)
    assert not root.path(f"/lib/systemd/system/{old_unit}").exists()
    assert not os.path.lexists(rendered)
    enabled = subprocess.run(["systemctl", f"--root={root.top}", "is-enabled", "gandi-mount.service"],
                             capture_output=True, text=True, check=False)
    assert enabled.stdout.strip() == "enabled"

    def target(link: Path) -> Path:
        pointed = os.readlink(link)
        return root.path(pointed) if pointed.startswith("/") else link.parent / pointed

    dangling = [str(link) for link in root.path("/etc/systemd/system").rglob("*")
                if link.is_symlink() and "gandi" in link.name and not target(link).exists()]
    assert dangling == []


APT_LOCAL_PATH = ("apt-get", "-o", f"DPkg::Path={SBIN_PATH}")


@contextlib.contextmanager
def systemd_seen_running(root: Chroot) -> Iterator[Dict[str, Path]]:
    """The maintainer scripts see a running systemd (/run/systemd/system): deb-systemd-invoke asks
    policy-rc.d, which records "UNIT ACTION" and refuses (101, so nothing runs), and every direct
    systemctl call is recorded before the real one runs (offline: `--root=/ preset` works,
    daemon-reload fails as without systemd): apt-get must run dpkg with /usr/local/sbin in its
    PATH (APT_LOCAL_PATH; apt's DPkg::Path leaves it out). Yields the two logs, in the root."""
    logs = {"invoked": root.path("/tmp/policy-rc.d.log"), "systemctl": root.path("/tmp/systemctl.log")}
    policy = root.path("/usr/sbin/policy-rc.d")
    kept = policy.read_text()
    stub = root.path("/usr/local/sbin/systemctl")
    running = root.path("/run/systemd/system")
    try:
        policy.write_text('#!/bin/sh\necho "$1 $2" >>/tmp/policy-rc.d.log\nexit 101\n')
        stub.write_text('#!/bin/sh\necho "$*" >>/tmp/systemctl.log\nexec /usr/bin/systemctl "$@"\n')
        stub.chmod(0o755)
        running.mkdir(parents=True)
        yield logs
    finally:
        policy.write_text(kept)
        stub.unlink()
        running.rmdir()
        for log in logs.values():
            log.unlink(missing_ok=True)


def take(log: Path) -> List[str]:
    """The lines logged since the last take."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def test_maintainer_scripts_act_on_the_agent_only(root: Chroot, built_deb: Path, tmp_path: Path):
    """With systemd running: install starts the agent's socket (a FIFO, no process) and no boot
    unit (--no-start: they run at the next boot); an upgrade starts the socket again (a no-op when
    it listens; deb-systemd-invoke skips it where the owner disabled it) and try-restarts a running
    agent on the new code, and stops nothing (the preinst would stop a running mount-all);
    removal stops the socket (and so the agent, which Requires= it) and no boot unit. Nothing
    calls systemctl past policy-rc.d but the manager's reload and the enabling presets."""
    root.check("dpkg", "--purge", "gandi-vm")  # order-independent: start clean (a no-op if gone)
    upgraded = f"{gandi_vm.__version__}+upgrade1"
    shutil.copy(upgrade_package(built_deb, tmp_path, upgraded), root.path("/tmp/upgrade.deb"))
    boot_units = ("gandi-mount.service", "gandi-config.service", "gandi-postboot.service")
    with systemd_seen_running(root) as logs:
        root.check(*APT_LOCAL_PATH, "install", "-y", "-q", "--no-install-recommends", "/tmp/gandi-vm.deb")
        assert take(logs["invoked"]) == ["gandi-agent.socket start"]
        calls = take(logs["systemctl"])
        presets = [call.split()[-1] for call in calls if " preset " in call]
        assert sorted(presets) == sorted([*boot_units, "gandi-agent.socket"])
        assert {call for call in calls if " preset " not in call} == {"--system daemon-reload"}

        root.check(*APT_LOCAL_PATH, "install", "-y", "-q", "/tmp/upgrade.deb")
        assert take(logs["invoked"]) == ["gandi-agent.socket start", "gandi-agent.service try-restart"]
        assert set(take(logs["systemctl"])) == {"--system daemon-reload"}

        root.check(*APT_LOCAL_PATH, "remove", "-y", "-q", "gandi-vm")
        assert take(logs["invoked"]) == ["gandi-agent.socket stop"]
        assert set(take(logs["systemctl"])) == {"--system daemon-reload"}

        root.check(*APT_LOCAL_PATH, "purge", "-y", "-q", "gandi-vm")
        assert take(logs["invoked"]) == []
