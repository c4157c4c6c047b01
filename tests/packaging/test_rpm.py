"""The .rpm, built here with rpmbuild (Debian's rpm package will do): its metadata, file list,
dependencies and scriptlets, and its payload's launcher run with this machine's /usr/bin/python3."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Set

import pytest

from conftest import REPO

import gandi_vm

LAUNCHER = "/usr/bin/gandi-vm"
CODE_DIR = "/usr/share/gandi-vm"
UNIT_DIR = "/usr/lib/systemd/system"
RULES_DIR = "/usr/lib/udev/rules.d"
PRESET_DIR = "/usr/lib/systemd/system-preset"
CONFFILE = "/etc/sysconfig/gandi"
HOOK_DIR = "/etc/gandi/hooks"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def query(rpm: Path, *options: str) -> str:
    return subprocess.run(["rpm", "-qp", *options, str(rpm)], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def lines(text: str) -> List[str]:
    return [line for line in text.splitlines() if line.strip()]


def file_flags(rpm: Path) -> Dict[str, str]:
    """Path -> 'FLAGS MODE' (rpm's fflags: c config, n noreplace, d doc, l license)."""
    out = query(rpm, "--qf", "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\n]")
    return {path: f"{flags} {mode}" for path, flags, mode in (line.split("\t") for line in lines(out))}


def tree_modules() -> Set[str]:
    modules = {f"{CODE_DIR}/{module.relative_to(REPO)}" for module in (REPO / "gandi_vm").glob("*.py")}
    modules |= {f"{CODE_DIR}/{m.relative_to(REPO)}" for m in (REPO / "gandi_vm/plugins").glob("*.py")}
    return modules | {f"{CODE_DIR}/gandi_vm/plugins"}


def test_name_arch_version_license(built_rpm: Path):
    out = query(built_rpm, "--qf", "%{NAME}|%{ARCH}|%{VERSION}|%{RELEASE}|%{LICENSE}|%{URL}")
    name, arch, version, release, license_, url = out.split("|")
    assert (name, arch, version) == ("gandi-vm", "noarch", gandi_vm.__version__)
    assert release.split(".")[0] == "1"
    assert (license_, url) == ("GPL-2.0-or-later", "https://github.com/gandi/gandi-vm")
    assert built_rpm.name == f"gandi-vm-{version}-{release}.noarch.rpm"


def test_spec_takes_the_version_from_the_package_only():
    assert gandi_vm.__version__ not in (REPO / "rpm" / "gandi-vm.spec").read_text()


def test_file_list_matches_the_source_tree(built_rpm: Path):
    listed = set(lines(query(built_rpm, "-l")))
    expected = {LAUNCHER, RULES_DIR + "/86-gandi.rules", PRESET_DIR + "/85-gandi-vm.preset", CONFFILE,
                "/etc/gandi", HOOK_DIR}
    expected |= {f"{UNIT_DIR}/{unit.name}" for pattern in ("*.service", "*.socket")
                 for unit in (REPO / "systemd").glob(pattern)}
    assert {f"{UNIT_DIR}/gandi-agent.socket", f"{UNIT_DIR}/gandi-agent.service"} <= expected
    expected |= {f"{HOOK_DIR}/{hook.name}" for hook in (REPO / "etc/gandi/hooks").glob("*.example")}
    assert expected - listed == set()
    # Exactly the tree's modules: a new module is shipped, a removed one is not left behind.
    shipped_code = {path for path in listed if path.startswith(CODE_DIR + "/gandi_vm/")}
    assert shipped_code == tree_modules()
    assert tree_modules() >= {f"{CODE_DIR}/gandi_vm/cli.py", f"{CODE_DIR}/gandi_vm/__init__.py"}
    # Version-independent layout, and no byte code from the build host's Python.
    assert not [path for path in listed if "site-packages" in path or "dist-packages" in path
                or path.endswith(".pyc") or "__pycache__" in path]


def test_config_files_are_noreplace_and_modes_are_right(built_rpm: Path):
    flags = file_flags(built_rpm)
    hooks = {f"{HOOK_DIR}/{hook.name}" for hook in (REPO / "etc/gandi/hooks").glob("*.example")}
    configs = {CONFFILE, "/etc/gandi/sysctl.conf"}
    assert set(lines(query(built_rpm, "-c"))) == configs | hooks
    for path in configs | hooks:
        assert flags[path] == "cn -rw-r--r--", path
    assert flags[LAUNCHER] == " -rwxr-xr-x"
    for path in tree_modules():
        wanted = " drwxr-xr-x" if path.endswith("/plugins") else " -rw-r--r--"
        assert flags[path] == wanted, path
    assert flags["/usr/share/licenses/gandi-vm/LICENSE"].startswith("l ")
    assert flags["/usr/share/doc/gandi-vm/README.md"].startswith("d ")


def test_dependencies_provides_obsoletes_conflicts(built_rpm: Path):
    requires = set(lines(query(built_rpm, "--requires")))
    assert {"python3 >= 3.9", "python3-pyudev", "python3-psutil", "python3-pyyaml", "systemd",
            "systemd-udev", "e2fsprogs", "iproute", "util-linux", "cloud-utils-growpart"} <= requires
    recommends = set(lines(query(built_rpm, "--recommends")))
    assert {"xfsprogs", "(dhcp-client or dhcpcd or busybox)", "ethtool", "openssh-server"} <= recommends
    assert "cloud-utils-growpart" not in recommends
    provides = {line.split()[0] for line in lines(query(built_rpm, "--provides"))}
    assert {"gandi-vm", "gandi-hosting-vm", "gandi-hosting-vm2"} <= provides
    # Unversioned: whatever version of the old agent is installed, an upgrade replaces it.
    assert set(lines(query(built_rpm, "--obsoletes"))) == {"gandi-hosting-vm", "gandi-hosting-vm2"}
    assert set(lines(query(built_rpm, "--conflicts"))) == {"gandi-hosting-vm", "gandi-hosting-vm2"}


BOOT_UNITS = "gandi-mount.service gandi-config.service gandi-postboot.service"
AGENT_UNITS = "gandi-agent.socket gandi-agent.service"
# Boot units of earlier builds, gone since (their work needs no process before sysinit.target).
OLD_UNITS = ("gandi-online-rules.service", "gandi-early.service")
RENDERED_RULE = "/run/udev/rules.d/87-gandi-online.rules"


def test_scripts_enable_by_preset_and_reload(built_rpm: Path):
    scripts = query(built_rpm, "--scripts")
    assert f"systemctl --no-reload preset {BOOT_UNITS} gandi-agent.socket" in scripts
    assert f"systemctl --no-reload disable --now {BOOT_UNITS}" in scripts
    assert f"systemctl --no-reload disable --now {AGENT_UNITS}" in scripts
    assert "systemctl try-restart gandi-agent.service" in scripts
    assert "udevadm control --reload" in scripts
    assert "systemctl daemon-reload" in scripts
    # Nothing stops a disk's or an interface's unit: its ExecStop would unmount customer disks
    # (the boot services stopped on erase have no ExecStop), and nothing starts or restarts one.
    assert "gandi-disk@" not in scripts and "gandi-iface@" not in scripts
    assert " stop " not in scripts and " start " not in scripts and " restart " not in scripts
    for line in lines(scripts):
        command = line.strip()
        if command.startswith(("systemctl", "udevadm", "rm ")) or "; then systemctl" in command:
            assert command.endswith("|| :; fi") or command.endswith("|| :"), command


SCRIPTLETS = {"post": "%{POSTIN}", "preun": "%{PREUN}", "postun": "%{POSTUN}"}


@pytest.mark.parametrize("scriptlet, arg, calls", [
    ("post", 1, [f"systemctl --no-reload preset {BOOT_UNITS} gandi-agent.socket",
                 "systemctl daemon-reload",
                 "udevadm control --reload"]),
    # An upgrade asks whether the old boot units were enabled (here: no), drops their rule.
    ("post", 2, [*(f"systemctl --quiet is-enabled {unit}" for unit in OLD_UNITS),
                 f"rm -f {RENDERED_RULE}", "systemctl daemon-reload", "udevadm control --reload"]),
    ("preun", 0, [f"systemctl --no-reload disable --now {BOOT_UNITS}",
                  f"systemctl --no-reload disable --now {AGENT_UNITS}",
                  f"rm -rf {CODE_DIR}/gandi_vm/__pycache__ {CODE_DIR}/gandi_vm/plugins/__pycache__"]),
    ("preun", 1, []),
    ("postun", 0, ["systemctl daemon-reload", "udevadm control --reload",
                   "rm -rf /run/gandi /var/lib/gandi-vm"]),
    # An upgrade try-restarts a running agent on the new code, and no other unit.
    ("postun", 1, ["systemctl daemon-reload", "systemctl try-restart gandi-agent.service",
                   "udevadm control --reload"]),
])
def test_scriptlets_succeed_without_systemd(built_rpm: Path, tmp_path: Path, scriptlet: str,
                                            arg: int, calls: List[str]):
    """Each scriptlet, with $1 as rpm passes it, against systemctl/udevadm/rm stubs that record
    their arguments and fail (as in a chroot or image build): it runs what it should and exits 0."""
    body = query(built_rpm, "--qf", SCRIPTLETS[scriptlet])
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    for tool in ("systemctl", "udevadm", "rm"):
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{log}"\necho "{tool}: failing" >&2\nexit 1\n')
        stub.chmod(0o755)
    done = subprocess.run(["/bin/sh", "-e", "-c", body, scriptlet, str(arg)], capture_output=True,
                          text=True, timeout=60, env={"PATH": f"{stubs}:{SYSTEM_PATH}"}, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert (log.read_text().splitlines() if log.exists() else []) == calls


@pytest.mark.parametrize("old_unit", OLD_UNITS)
def test_upgrade_from_an_early_boot_unit_disables_it_while_its_file_is_there(
        built_rpm: Path, tmp_path: Path, old_unit: str):
    """gandi-online-rules.service, then gandi-early.service, ran before sysinit.target; their work
    is gone. An upgrade from a build where one was enabled disables it in %post, while its unit
    file is still installed (its links would dangle after), and removes the rule it rendered;
    gandi-mount.service, enabled since the first install, is left as the owner has it."""
    body = query(built_rpm, "--qf", SCRIPTLETS["post"])
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "calls"
    (stubs / "systemctl").write_text(
        f'#!/bin/sh\necho "systemctl $*" >>"{log}"\n'
        f'case "$*" in "--quiet is-enabled {old_unit}") exit 0;; *is-enabled*) exit 1;; esac\n')
    for tool in ("udevadm", "rm"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >>"{log}"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    done = subprocess.run(["/bin/sh", "-e", "-c", body, "post", "2"], capture_output=True,
                          text=True, timeout=60, env={"PATH": f"{stubs}:{SYSTEM_PATH}"}, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    calls = log.read_text().splitlines()
    assert [c for c in calls if "disable" in c or "enable " in c] == [
        f"systemctl --no-reload disable {old_unit}"]
    assert f"rm -f {RENDERED_RULE}" in calls
    assert calls[-2:] == ["systemctl daemon-reload", "udevadm control --reload"]


@pytest.fixture(scope="module")
def payload(built_rpm: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rpm's files, extracted as rpm would install them, plus the bits of a guest root that
    `gandi-vm --root` reads: an empty /sys/class/block and a one-line mount table."""
    for tool in ("rpm2cpio", "cpio"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian packages rpm2cpio: rpm, cpio: cpio)")
    top = tmp_path_factory.mktemp("rpm-payload")
    archive = subprocess.run(["rpm2cpio", str(built_rpm)], capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=archive, cwd=top,
                   capture_output=True, check=True, timeout=60)
    (top / "sys/class/block").mkdir(parents=True)
    (top / "proc/self").mkdir(parents=True)
    (top / "proc/self/mountinfo").write_text("22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n")
    return top


def run_launcher(payload: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the shipped launcher through its own #! line, its code directory pointed at the
    payload's copy (the only change), with no PYTHONPATH and from a neutral directory."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("/usr/bin/python3 not installed (Debian package python3)")
    text = (payload / LAUNCHER.lstrip("/")).read_text()
    anchor = f'sys.path.insert(0, "{CODE_DIR}")'
    assert text.count(anchor) == 1
    relocated = payload / "launcher-under-test"
    relocated.write_text(text.replace(anchor, f'sys.path.insert(0, "{payload}{CODE_DIR}")'))
    relocated.chmod(0o755)
    return subprocess.run([str(relocated), *args], capture_output=True, text=True, timeout=60,
                          cwd=payload, env={"PATH": SYSTEM_PATH, "LC_ALL": "C"}, check=False)


def test_launcher_is_a_python3_script_using_the_shared_code_dir(payload: Path):
    launcher = payload / LAUNCHER.lstrip("/")
    first, *rest = launcher.read_text().splitlines()
    assert first.startswith("#!/usr/bin/python3")
    assert f'sys.path.insert(0, "{CODE_DIR}")' in rest
    assert any(line.startswith("from gandi_vm.cli import main") for line in rest)
    assert os.access(launcher, os.X_OK)


def test_launcher_prints_the_version(payload: Path):
    done = run_launcher(payload, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"gandi-vm {gandi_vm.__version__}"), done.stderr
    # The modules came from the payload: Python wrote their byte code there.
    assert list((payload / CODE_DIR.lstrip("/") / "gandi_vm/__pycache__").glob("cli.*.pyc"))


def test_launcher_runs_status_on_a_minimal_root(payload: Path):
    done = run_launcher(payload, "--root", str(payload), "--dry-run", "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["DEVICE", "SIZE"]
    # The shipped /etc/sysconfig/gandi (the config read under --root) parsed without a warning.
    assert "warning" not in done.stderr and "error" not in done.stderr, done.stderr


def test_rpmlint_finds_nothing_unexplained(built_rpm: Path):
    if shutil.which("rpmlint") is None:
        pytest.skip("rpmlint not installed (Debian package rpmlint)")
    done = subprocess.run(["rpmlint", "-r", str(REPO / "rpm" / "gandi-vm.rpmlintrc"), str(built_rpm),
                           str(REPO / "rpm" / "gandi-vm.spec")], capture_output=True, text=True,
                          timeout=300, check=False)
    findings = [line for line in done.stdout.splitlines() if ": E: " in line or ": W: " in line]
    assert (done.returncode, findings) == (0, [])
