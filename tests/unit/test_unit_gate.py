"""systemd/unit-gate, the shell script gandi-disk@ and gandi-iface@ run as ExecStart=/ExecStop=:
each decision it takes from files alone, and each case it hands to gandi-vm (a stand-in here
that records its arguments), under every POSIX shell of this machine (dash is Debian's /bin/sh).

The gate runs for real, in a temporary directory standing for / (GANDI_ROOT), with the fake
system trees of fakesys written there (no pyfakefs: the shell sees the real file system), and a
PATH holding only flock and mkfifo: a gate that spawned anything else would fail here. Without
the agent's FIFO under that root, every hand-over is an exec of the stand-in; the agent's path is
tested in test_agent.py.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from fakesys import add_disk, add_nic, set_attr

GATE = Path(__file__).resolve().parents[2] / "systemd" / "unit-gate"
SHELLS = [argv for argv in (["sh"], ["dash"], ["bash", "--posix"], ["busybox", "sh"])
          if shutil.which(argv[0])]
# What the stand-in gandi-vm writes: its arguments, and whether it still holds the burst lock.
FAKE_GANDI_VM = """#!/bin/sh
if flock -n 7 7>>"$GANDI_ROOT/run/gandi/lock/disk-burst.lock"; then lock=free; else lock=held; fi
printf '%s\\n' "$* lock=$lock" >>"$GANDI_ROOT/exec.log"
"""


def gate_tools(directory: Path) -> str:
    """A PATH of the only programs the gate may run: flock (the disk burst's lock) and mkfifo
    (the agent's reply FIFO)."""
    directory.mkdir()
    for tool in GATE_TOOLS:
        (directory / tool).symlink_to(shutil.which(tool))
    return str(directory)


def shell_argv(shell: List[str]) -> List[str]:
    """The shell by its full path: the gate's own PATH cannot find it."""
    return [shutil.which(shell[0]), *shell[1:]]


GATE_TOOLS = ("flock", "mkfifo")


@pytest.fixture(params=SHELLS, ids=lambda argv: " ".join(argv))
def gate(request, tmp_path: Path):
    """Run the gate under one shell in tmp_path; returns a function(args) -> Run."""
    for directory in ("run/gandi/lock", "run/gandi/disk", "run/gandi/swap", "run/gandi/iface",
                      "proc/net", "sys/class/block", "sys/class/net"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "proc/net/route").write_text(ROUTE_HEADER)
    program = tmp_path / "gandi-vm"
    program.write_text(FAKE_GANDI_VM)
    program.chmod(0o755)
    env = {"PATH": gate_tools(tmp_path / "bin"), "GANDI_ROOT": str(tmp_path),
           "GANDI_VM": str(program)}

    def run(*args: str, wait: bool = True):
        process = subprocess.Popen([*shell_argv(request.param), str(GATE), *args], env=env,
                                   text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return Run(process, tmp_path) if not wait else Run(process, tmp_path).finish()

    return run


class Run:
    def __init__(self, process: subprocess.Popen, root: Path):
        self.process, self.root = process, root
        self.returncode: Optional[int] = None
        self.stdout = self.stderr = ""

    def finish(self) -> "Run":
        self.stdout, self.stderr = self.process.communicate(timeout=30)
        self.returncode = self.process.returncode
        return self

    @property
    def execs(self) -> List[str]:
        log = self.root / "exec.log"
        return log.read_text().splitlines() if log.exists() else []


ROUTE_HEADER = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow"
                "\tIRTT\n")


def files(root: Path, directory: str) -> Dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / directory).iterdir())}


def disk(root: Path, name: str = "vdb", diskseq: Optional[int] = 7, partitions=()) -> None:
    add_disk(None, name, "253:16", 2097152, partitions=partitions, root=str(root))
    if diskseq is not None:
        set_attr(name, "diskseq", diskseq, root=str(root))


def write(root: Path, path: str, text: str) -> None:
    (root / path).write_text(text)


# -- disk attach ---------------------------------------------------------------------------------
def test_a_disk_mount_all_attached_at_this_boot_needs_no_gandi_vm(gate, tmp_path):
    disk(tmp_path, diskseq=7)
    write(tmp_path, "run/gandi/disk/vdb.handled", "7\n")
    run = gate("disk", "attach", "vdb")
    assert (run.returncode, run.execs, run.stderr) == (0, [], "")
    assert "disk vdb: attached at this boot" in run.stdout
    assert files(tmp_path, "run/gandi/disk") == {"vdb.handled": ""}  # used up


def test_a_marker_for_the_disk_that_had_the_name_before_is_stale(gate, tmp_path):
    disk(tmp_path, diskseq=8)  # replugged: a new diskseq
    write(tmp_path, "run/gandi/disk/vdb.handled", "7\n")
    run = gate("disk", "attach", "vdb")
    assert (run.returncode, run.execs) == (0, ["disk attach --batch vdb lock=held"])
    assert files(tmp_path, "run/gandi/disk") == {"vdb.handled": ""}


def test_a_disk_without_marker_goes_to_gandi_vm_with_the_burst_lock_held(gate, tmp_path):
    disk(tmp_path)
    run = gate("disk", "attach", "vdb")
    assert (run.returncode, run.execs) == (0, ["disk attach --batch vdb lock=held"])


def test_a_partition_is_known_by_its_disks_diskseq(gate, tmp_path):
    disk(tmp_path, diskseq=9, partitions=[("vdb1", "253:17", 2000000)])
    write(tmp_path, "run/gandi/disk/vdb1.handled", "9\n")
    assert gate("disk", "attach", "vdb1").execs == []
    assert gate("disk", "attach", "vdb").execs == ["disk attach --batch vdb lock=held"]


def test_without_diskseq_every_attach_goes_to_gandi_vm_unbatched(gate, tmp_path):
    # Before Linux 5.15 nothing tells a replugged disk from the old one: no marker is trusted.
    disk(tmp_path, diskseq=None)
    write(tmp_path, "run/gandi/disk/vdb.handled", "\n")
    run = gate("disk", "attach", "vdb")
    assert run.execs == ["disk attach vdb lock=free"]


def test_a_burst_waits_for_the_lock_and_ends_at_the_marker_left_meanwhile(gate, tmp_path):
    disk(tmp_path, diskseq=7)
    with open(tmp_path / "run/gandi/lock/disk-burst.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another disk's gandi-vm is at work
        waiting = gate("disk", "attach", "vdb", wait=False)
        time.sleep(0.5)
        assert waiting.process.poll() is None  # blocked on the lock
        write(tmp_path, "run/gandi/disk/vdb.handled", "7\n")  # that gandi-vm took vdb too
    run = waiting.finish()
    assert (run.returncode, run.execs) == (0, [])
    assert "attached at this boot" in run.stdout


@pytest.mark.parametrize("name", ["VDB", "vd-b", "../vdb", "vdb/x", "", "v db"])
def test_a_name_that_is_not_a_kernel_name_goes_to_gandi_vm_untouched(gate, tmp_path, name):
    run = gate("disk", "attach", name)
    assert run.execs == [f"disk attach {name} lock=free"]
    assert files(tmp_path, "run/gandi/disk") == {}


@pytest.mark.parametrize("args", [("disk", "attach"), ("disk", "resize", "vdb"),
                                  ("iface", "attach", "ens3", "x"), (), ("mount-all", "vdb"),
                                  ("config",), ("config", "list"), ("config", "apply", "--only"),
                                  ("mount",), ("disk", "mount-all")])
def test_anything_but_the_units_commands_is_a_usage_error(gate, args):
    run = gate(*args)
    assert (run.returncode, run.execs) == (2, [])
    assert run.stderr == ("usage: unit-gate disk|iface attach|detach NAME | mount-all | "
                          "config apply\n")


@pytest.mark.parametrize("args", [("mount-all",), ("config", "apply")])
def test_the_boot_services_commands_go_to_gandi_vm_as_they_are(gate, args):
    # gandi-mount and gandi-config: nothing to decide from files, only the agent to use.
    run = gate(*args)
    assert (run.returncode, run.execs, run.stdout) == (0, [" ".join(args) + " lock=free"], "")


# -- disk detach ---------------------------------------------------------------------------------
def gate_files(root: Path, name: str = "vdb", diskseq: str = "7") -> None:
    write(root, f"run/gandi/disk/{name}.json", '{"ours": false}\n')
    write(root, f"run/gandi/disk/{name}.untouched", f"{diskseq}\n")
    write(root, f"run/gandi/disk/{name}.handled", "")


@pytest.mark.parametrize("present", [True, False], ids=["shutdown", "unplugged"])
def test_a_stop_with_nothing_of_ours_on_the_disk_forgets_it_without_gandi_vm(gate, tmp_path,
                                                                            present):
    if present:
        disk(tmp_path, diskseq=7)
    gate_files(tmp_path)
    run = gate("disk", "detach", "vdb")
    assert (run.returncode, run.execs) == (0, [])
    assert "disk vdb: unchanged: nothing mounted by gandi" in run.stdout
    assert files(tmp_path, "run/gandi/disk") == {"vdb.json": "", "vdb.untouched": "",
                                                 "vdb.handled": ""}


def test_a_stop_of_a_disk_we_mounted_goes_to_gandi_vm(gate, tmp_path):
    disk(tmp_path)
    write(tmp_path, "run/gandi/disk/vdb.json", '{"ours": true}\n')  # no untouched marker
    assert gate("disk", "detach", "vdb").execs == ["disk detach vdb lock=free"]


def test_a_stop_of_a_platform_swap_goes_to_gandi_vm(gate, tmp_path):
    gate_files(tmp_path)
    write(tmp_path, "run/gandi/swap/vdb.json", "{}\n")
    assert gate("disk", "detach", "vdb").execs == ["disk detach vdb lock=free"]


def test_a_new_disk_that_took_the_name_during_the_stop_goes_to_gandi_vm(gate, tmp_path):
    # gandi-vm's detach starts the new disk's unit, whose start systemd dropped.
    disk(tmp_path, diskseq=8)
    gate_files(tmp_path, diskseq="7")
    assert gate("disk", "detach", "vdb").execs == ["disk detach vdb lock=free"]


def test_a_stop_with_no_record_at_all_goes_to_gandi_vm(gate, tmp_path):
    disk(tmp_path)
    assert gate("disk", "detach", "vdb").execs == ["disk detach vdb lock=free"]


# -- iface attach --------------------------------------------------------------------------------
def nic(root: Path, name: str = "ens3", ifindex: int = 2) -> None:
    add_nic(None, name, ifindex, "52:54:00:12:34:56", root=str(root))


def networkd_link(root: Path, ifindex: int, admin_state: str) -> None:
    links = root / "run/systemd/netif/links"
    links.mkdir(parents=True, exist_ok=True)
    (links / str(ifindex)).write_text(
        f"# This is private data. Do not parse.\nADMIN_STATE={admin_state}\nOPER_STATE=routable\n")


def test_the_interface_holding_the_default_route_is_left_without_gandi_vm(gate, tmp_path):
    nic(tmp_path)
    write(tmp_path, "proc/net/route", ROUTE_HEADER
          + "ens3\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
          + "ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
    run = gate("iface", "attach", "ens3")
    assert (run.returncode, run.execs) == (0, [])
    assert "iface ens3: left: holds the default route" in run.stdout
    assert files(tmp_path, "run/gandi/iface") == {"ens3.untouched": (
        "left: holds the default route: configured by someone else "
        "(decided by the unit, no attach ran)\n")}


def test_a_route_of_another_interface_or_not_default_is_not_ours_to_read(gate, tmp_path):
    nic(tmp_path)
    write(tmp_path, "proc/net/route", ROUTE_HEADER
          + "ens3\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n"
          + "ens30\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n")
    assert gate("iface", "attach", "ens3").execs == ["iface attach ens3 lock=free"]


@pytest.mark.parametrize("admin_state", ["configured", "configuring", "failed", "linger"])
def test_an_interface_systemd_networkd_manages_is_left_without_gandi_vm(gate, tmp_path,
                                                                      admin_state):
    nic(tmp_path, ifindex=2)
    networkd_link(tmp_path, 2, admin_state)
    run = gate("iface", "attach", "ens3")
    assert (run.returncode, run.execs) == (0, [])
    assert files(tmp_path, "run/gandi/iface") == {"ens3.untouched": (
        f"left: systemd-networkd already manages it ({admin_state}) "
        "(decided by the unit, no attach ran)\n")}


@pytest.mark.parametrize("admin_state", ["unmanaged", "pending", "initialized", "", "$(reboot)"])
def test_an_interface_networkd_has_not_taken_goes_to_gandi_vm(gate, tmp_path, admin_state):
    # pending/initialized: gandi-vm waits for networkd's verdict; anything odd is its to judge.
    nic(tmp_path, ifindex=2)
    networkd_link(tmp_path, 2, admin_state)
    assert gate("iface", "attach", "ens3").execs == ["iface attach ens3 lock=free"]
    assert files(tmp_path, "run/gandi/iface") == {}


@pytest.mark.parametrize("situation", ["networkmanager", "our network file", "a record of ours",
                                       "no link file"])
def test_what_only_gandi_vm_can_weigh_goes_to_it(gate, tmp_path, situation):
    nic(tmp_path, ifindex=2)
    networkd_link(tmp_path, 2 if situation != "no link file" else 3, "configured")
    if situation == "networkmanager":
        (tmp_path / "run/NetworkManager").mkdir()
    elif situation == "our network file":
        (tmp_path / "run/systemd/network").mkdir(parents=True)
        write(tmp_path, "run/systemd/network/90-gandi-ens3.network", "[Match]\nName=ens3\n")
    elif situation == "a record of ours":
        write(tmp_path, "run/gandi/iface/ens3.yaml", "state: configured\n")
    assert gate("iface", "attach", "ens3").execs == ["iface attach ens3 lock=free"]


# -- iface detach --------------------------------------------------------------------------------
def test_a_stop_of_an_interface_left_alone_needs_no_gandi_vm(gate, tmp_path):
    write(tmp_path, "run/gandi/iface/ens3.untouched", "left: holds the default route\n")
    write(tmp_path, "run/gandi/iface/ens3.yaml", "state: left\n")  # attach's own decision
    run = gate("iface", "detach", "ens3")
    assert (run.returncode, run.execs) == (0, [])
    assert files(tmp_path, "run/gandi/iface") == {"ens3.untouched": "", "ens3.yaml": ""}


def test_a_stop_of_an_interface_we_configured_goes_to_gandi_vm(gate, tmp_path):
    write(tmp_path, "run/gandi/iface/ens3.yaml", "state: configured\n")
    assert gate("iface", "detach", "ens3").execs == ["iface detach ens3 lock=free"]


def test_a_stop_with_no_record_has_nothing_to_undo(gate, tmp_path):
    run = gate("iface", "detach", "ens3")
    assert (run.returncode, run.execs) == (0, [])


def test_the_gate_is_posix_sh_and_names_no_other_program():
    # That it runs no other program is what every test here checks (PATH: GATE_TOOLS only).
    text = GATE.read_text()
    assert text.startswith("#!/bin/sh\n")
    code = [line.split("#")[0] for line in text.splitlines()]
    for command in ("cat ", "rm ", "grep ", "sed ", "awk ", "mkdir ", "$(", "`"):
        assert not any(command in line for line in code), command
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "-s", "sh", str(GATE)], capture_output=True,
                              text=True, check=False)
        assert done.returncode == 0, done.stdout
