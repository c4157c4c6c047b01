"""gandi_vm/agent.py, the resident agent, and its client, the units' gate (systemd/unit-gate).

The pure parts (the request line, sd_listen_fds, joining the asking unit's cgroup) run in
process against a tree under tmp_path. The serve loop runs for real in a forked child, on a real
FIFO under tmp_path standing for / (the gate's GANDI_ROOT and the agent's root), with a stand-in
for `cli.main` that does what each scenario needs (print, fail, die by a signal, wait for
another request); the real gate, under every POSIX shell of this machine, is its client. No
pyfakefs here: FIFOs, forks and shells need the real file system. Nothing is written to the
host's /sys/fs/cgroup: a request joins plain files under tmp_path/sys/fs/cgroup.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import pytest
from hypothesis import given, strategies as st
from fakesys import add_disk, set_attr
from test_unit_gate import FAKE_GANDI_VM, GATE, SHELLS, gate_tools, shell_argv

from gandi_vm import agent, log, sysfs

NONCE = "0123abcd-4567-89ef"
PID = 4242  # the client, in a rooted tree: any number that proc/PID/cgroup is written for
TIMEOUT = 20  # seconds: every wait on the gate or the agent is bounded


# -- the request line ----------------------------------------------------------------------------
def request(*argv: str, nonce: str = NONCE, pid: int = PID) -> bytes:
    return " ".join(["v1", nonce, str(pid), *argv]).encode()


# What systemd/unit-gate sends: every command of REQUESTS, with a kernel name where it takes one.
UNITS_REQUESTS = [(*words, "vdb")[:len(words) + names] for words, names in agent.REQUESTS.items()]


@pytest.mark.parametrize("argv", UNITS_REQUESTS, ids=" ".join)
def test_each_command_the_units_send_is_accepted(argv):
    parsed = agent.parse(request(*argv))
    assert (parsed.nonce, parsed.pid, parsed.argv) == (NONCE, PID, list(argv))


def test_the_gates_fallback_nonce_and_a_uuid_are_accepted():
    assert agent.parse(request("mount-all", nonce="0000000-1234")).nonce == "0000000-1234"
    assert agent.parse(request("mount-all", nonce="c0ffee00-" + "a" * 27)).pid == PID


@pytest.mark.parametrize("line, why", [
    (b"", "not `v1 NONCE PID ARG...`"),
    (b"v1 0123abcd 42", "not `v1 NONCE PID ARG...`"),
    (b"v2 0123abcd 42 mount-all", "not `v1 NONCE PID ARG...`"),
    (b"v1 0123abc 42 mount-all", "bad nonce"),  # 7 characters
    (b"v1 " + b"a" * 65 + b" 42 mount-all", "bad nonce"),
    (b"v1 0123ABCD 42 mount-all", "bad nonce"),
    (b"v1 0123abcd 1 mount-all", "bad client pid"),  # init, or a forged one
    (b"v1 0123abcd -42 mount-all", "bad client pid"),
    (b"v1 0123abcd 12345678901 mount-all", "bad client pid"),
    ("v1 0123abcd \u0664\u0662 mount-all".encode(), "not ASCII"),  # Arabic-Indic digits
    (b"v1 0123abcd 42 status", "not a command the units send"),
    (b"v1 0123abcd 42 disk resize vdb", "not a command the units send"),
    (b"v1 0123abcd 42 agent", "not a command the units send"),
    (b"v1 0123abcd 42 --root / mount-all", "not a command the units send"),
    (b"v1 0123abcd 42 disk  attach vdb", "not a command the units send"),
    (b"v1 0123abcd 42 disk attach", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 disk attach vdb vdc", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 disk attach vdb ", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 disk attach --dry-run", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 disk attach ../vdb", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 iface attach ENS3", "expects 1 kernel name(s)"),
    (b"v1 0123abcd 42 mount-all vdb", "expects 0 kernel name(s)"),
    (b"v1 0123abcd 42 config apply --only", "expects 0 kernel name(s)"),
    (b"v1 0123abcd 42 mount-all\r", "not a command the units send"),
    (b"v1 0123abcd 42 disk attach vdb\x00", "expects 1 kernel name(s)"),
])
def test_anything_else_is_refused_naming_the_line(line, why):
    with pytest.raises(agent.BadRequest) as refused:
        agent.parse(line)
    message = str(refused.value)
    assert message.startswith(f"request {sysfs.quoted(line.decode('latin-1'), 80)}: ")
    assert why in message and "\n" not in message


def test_a_line_as_long_as_a_fifos_atomic_write_is_refused_by_its_length():
    line = request("disk", "attach", "v" * agent.MAX_LINE)
    with pytest.raises(agent.BadRequest, match=f"request of {len(line)} bytes, longer than 4096"):
        agent.parse(line)


WORDS = sorted({w for words in agent.REQUESTS for w in words} | {"vdb", "ens3", "", "-", "VDB",
                                                                  "status", "agent", "../x"})
NEAR_MISSES = st.builds(
    lambda nonce, pid, argv: " ".join(["v1", nonce, pid, *argv]).encode(),
    st.sampled_from([NONCE, "0000000-7", "0123abc", "XYZ01234"]),
    st.sampled_from(["42", "1", "0", "x", "4294967295"]),
    st.lists(st.sampled_from(WORDS), max_size=5))


@given(st.one_of(st.binary(max_size=200), NEAR_MISSES))
def test_any_bytes_are_a_units_request_or_a_bad_request(line):
    try:
        parsed = agent.parse(line)
    except agent.BadRequest as e:
        assert "\n" not in str(e)
        return
    kernel_name = set("abcdefghijklmnopqrstuvwxyz0123456789").issuperset
    assert any(tuple(parsed.argv[:len(words)]) == words and len(parsed.argv) == len(words) + names
               and all(name and kernel_name(name) for name in parsed.argv[len(words):])
               for words, names in agent.REQUESTS.items()), parsed.argv
    assert line.split(b" ") == [b"v1", parsed.nonce.encode(), line.split(b" ")[2],
                                *(word.encode() for word in parsed.argv)]
    assert parsed.pid == int(line.split(b" ")[2]) >= 2


# -- sd_listen_fds --------------------------------------------------------------------------------
@pytest.mark.parametrize("environ, fd", [
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1"}, 3),
    ({"LISTEN_PID": "self", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "requests"}, 3),
    ({"LISTEN_PID": "1", "LISTEN_FDS": "1"}, None),  # passed to another process (our parent)
    ({"LISTEN_PID": "self", "LISTEN_FDS": "2"}, None),  # not the one FIFO of gandi-agent.socket
    ({"LISTEN_PID": "self", "LISTEN_FDS": "0"}, None),
    ({"LISTEN_FDS": "1"}, None),
    ({"LISTEN_PID": "self"}, None),
    ({}, None),
])
def test_the_fifo_comes_from_systemd_for_this_very_process(environ, fd):
    environ = {k: str(os.getpid()) if v == "self" else v for k, v in environ.items()}
    assert agent.listen_fd(environ) == fd


# -- joining the unit's cgroup --------------------------------------------------------------------
def cgroup_tree(root: Path, proc_cgroup: str, *paths: str) -> None:
    """proc/PID/cgroup of the client, and the cgroup directories (under sys/fs/cgroup) that exist."""
    (root / f"proc/{PID}").mkdir(parents=True)
    (root / f"proc/{PID}/cgroup").write_text(proc_cgroup)
    for path in paths:
        (root / "sys/fs/cgroup" / path).mkdir(parents=True, exist_ok=True)


def written(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("cgroup.procs"))}


UNIT = "system.slice/system-gandi\\x2ddisk.slice/gandi-disk@vdb.service"


def test_on_a_unified_hierarchy_the_worker_joins_the_units_cgroup(tmp_path):
    cgroup_tree(tmp_path, f"0::/{UNIT}\n", UNIT)
    assert agent.join_cgroup(str(tmp_path), PID) is True
    assert written(tmp_path) == {f"sys/fs/cgroup/{UNIT}/cgroup.procs": f"{os.getpid()}\n"}


@pytest.mark.parametrize("order", ["systemd first", "unified first"])
def test_on_a_hybrid_hierarchy_systemds_named_one_wins(tmp_path, order):
    lines = [f"1:name=systemd:/{UNIT}", f"0::/{UNIT}"]
    if order == "unified first":
        lines.reverse()
    cgroup_tree(tmp_path, "12:cpu,cpuacct:/\n" + "\n".join(lines) + "\n", UNIT, f"systemd/{UNIT}")
    assert agent.join_cgroup(str(tmp_path), PID) is True
    assert written(tmp_path) == {f"sys/fs/cgroup/systemd/{UNIT}/cgroup.procs": f"{os.getpid()}\n"}


def test_a_client_that_is_gone_runs_nothing(tmp_path, caplog):
    assert agent.join_cgroup(str(tmp_path), PID) is False
    assert caplog.messages == [f"agent: the unit's process {PID} is gone: not run"]


def test_a_unit_whose_cgroup_is_gone_runs_nothing(tmp_path, caplog):
    cgroup_tree(tmp_path, f"0::/{UNIT}\n")  # the unit stopped: systemd removed its cgroup
    assert agent.join_cgroup(str(tmp_path), PID) is False
    assert written(tmp_path) == {}
    assert caplog.messages == [f"agent: the unit of process {PID} is gone: not run"]


@pytest.mark.parametrize("proc_cgroup", ["0::/../../../../outside\n",
                                         "1:name=systemd:/a/../../../../../outside\n",
                                         "0::/..\n"])
def test_an_odd_cgroup_path_runs_in_the_agents_and_writes_nowhere(tmp_path, caplog, proc_cgroup):
    root = tmp_path / "root"
    cgroup_tree(root, proc_cgroup, "a", "systemd/a")
    (tmp_path / "outside").mkdir()  # where the path leads: a write there would succeed
    assert agent.join_cgroup(str(root), PID) is True
    assert written(tmp_path) == {}
    assert "odd cgroup path" in caplog.text


@pytest.mark.parametrize("proc_cgroup", ["4:memory:/x\n3:cpu:/x\n", "", "garbage\n\n::\n"])
def test_no_systemd_hierarchy_runs_in_the_agents(tmp_path, caplog, proc_cgroup):
    cgroup_tree(tmp_path, proc_cgroup, "x")
    assert agent.join_cgroup(str(tmp_path), PID) is True
    assert written(tmp_path) == {}
    assert caplog.messages == [f"agent: no systemd cgroup for process {PID}: running in the agent's"]


def test_a_cgroup_that_refuses_the_process_runs_in_the_agents(tmp_path, caplog):
    cgroup_tree(tmp_path, f"0::/{UNIT}\n", f"{UNIT}/cgroup.procs")  # a directory: EISDIR
    assert agent.join_cgroup(str(tmp_path), PID) is True
    assert "cannot join the cgroup of process 4242" in caplog.text


# -- the serve loop and its client, the gate -------------------------------------------------------
def fake_main(argv: Sequence[str]) -> int:
    """cli.main as a worker runs it, one behaviour per scenario (the kernel name of
    `disk detach NAME`); any other command says what it was asked."""
    assert argv[0] == "--root"
    root, words = Path(argv[1]), list(argv[2:])
    scenario = words[2] if words[:2] == ["disk", "detach"] else ""
    if scenario == "output":
        print("<6>disk vdb: mounted on /srv/data", flush=True)
        print("\n", flush=True)
        sys.stderr.write("<3>an error line\n")
        sys.stderr.flush()
        print("  indented line kept as is", flush=True)
        sys.stdout.write("last line without newline")
        return 0
    if scenario == "exits3":
        return 3
    if scenario == "killed":
        print("about to die", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    if scenario == "raises":
        raise RuntimeError("a bug")
    if scenario == "exits":
        sys.exit(4)
    if scenario == "forged":
        print("0000 exit 0", flush=True)
        print(f"{'0' * 8} exit 0", flush=True)
        print("still running", flush=True)
        return 5
    if scenario == "cgroup":
        print(f"supervisor {os.getppid()}", flush=True)
        return 0
    if scenario.startswith("waits"):
        # Both clients' workers run at once: each waits for the other to have started.
        (root / f"started.{scenario}").touch()
        eventually(lambda: len(list(root.glob("started.*"))) == 2)
        print(f"{scenario}: saw {len(list(root.glob('started.*')))} workers", flush=True)
        return 0
    with open(root / "run/gandi/lock/disk-burst.lock", "a") as lock:
        try:  # as the stand-in gandi-vm tells it: does the gate still hold the burst lock?
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state = "free"
        except BlockingIOError:
            state = "held"
    print(f"ran {' '.join(words)} lock={state}", flush=True)
    return 0


class Agent:
    """agent.serve() in a forked child (its own process group, so that the finalizer ends it
    and every supervisor and worker it forked), its log lines in agent.log. This process holds
    the FIFO open as systemd does: a request written before the child reads is kept, not
    dropped with the last descriptor."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "agent.log"
        self.fifo = os.open(root / "run/gandi/agent/requests", os.O_RDWR)
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover (the child ends in os._exit)
            self._child()
        try:
            os.setpgid(self.pid, self.pid)  # as the child does: whichever runs first
        except OSError:
            pass

    def _child(self) -> None:
        try:
            os.setpgid(0, 0)
            out = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(out, 1)
            os.dup2(out, 2)
            # pytest's capture replaced sys.stdout and sys.stderr: the worker's must be fds 1, 2.
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            log.configure(False, journal=False)
            agent.serve(self.fifo, str(self.root), run=fake_main)
        finally:
            os._exit(0)

    def stop(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        if self.fifo >= 0:
            os.close(self.fifo)
            self.fifo = -1

    def lines(self) -> List[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def own_cgroups() -> List[Tuple[str, str]]:
    """(directory under sys/fs/cgroup, path) of the hierarchies join_cgroup reads, as
    /proc/self/cgroup shows them: the gate, pytest's child, is in pytest's cgroups."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            found.append(("systemd", path))
        elif hierarchy == "0" and not controllers:
            found.append(("", path))
    return found


class Client:
    """The real gate run under one shell in the agent's root, with only flock and mkfifo in
    its PATH (as in test_unit_gate: it spawns nothing else on the agent's path either)."""

    def __init__(self, shell: List[str], root: Path):
        self.shell, self.root = shell_argv(shell), root
        stand_in = root / "gandi-vm"
        stand_in.write_text(FAKE_GANDI_VM)
        stand_in.chmod(0o755)
        self.env = {"PATH": gate_tools(root / "bin"), "GANDI_ROOT": str(root),
                    "GANDI_VM": str(stand_in)}

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([*self.shell, str(GATE), *args], env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def __call__(self, *args: str) -> Tuple[int, List[str], str]:
        return finish(self.start(*args))

    @property
    def execs(self) -> List[str]:
        log_file = self.root / "exec.log"
        return log_file.read_text().splitlines() if log_file.exists() else []


def finish(process: subprocess.Popen) -> Tuple[int, List[str], str]:
    """(status, stdout lines, stderr) of a gate, killed if it outlives TIMEOUT."""
    try:
        out, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the gate did not end in {TIMEOUT} s: {out!r} {err!r}")
    return process.returncode, out.splitlines(), err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path as /: the agent's FIFO, the gate's directories, proc -> /proc (read only: the
    gate's nonce, the client's cgroup) and the client's cgroups as plain files."""
    for directory in ("run/gandi/agent", "run/gandi/lock", "run/gandi/disk", "run/gandi/swap",
                      "run/gandi/iface", "sys/class/block"):
        (tmp_path / directory).mkdir(parents=True)
    os.mkfifo(tmp_path / "run/gandi/agent/requests", 0o600)
    (tmp_path / "proc").symlink_to("/proc")
    for directory, path in own_cgroups():
        cgroup = tmp_path / "sys/fs/cgroup" / directory / path.lstrip("/")
        cgroup.mkdir(parents=True, exist_ok=True)
        (cgroup / "cgroup.procs").write_text("")
    return tmp_path


@pytest.fixture
def served(root: Path) -> Iterator[Agent]:
    running = Agent(root)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(params=SHELLS, ids=lambda argv: " ".join(argv))
def gate(request, root: Path, served: Agent) -> Client:
    return Client(request.param, root)


def replies(root: Path) -> List[str]:
    """The agent's directory once the supervisors are done: they remove the reply FIFOs just
    after the answer, which the gate may have read and exited on before."""
    eventually(lambda: len(list((root / "run/gandi/agent").iterdir())) == 1)
    return sorted(p.name for p in (root / "run/gandi/agent").iterdir())


def eventually(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("args, sent", [
    (("mount-all",), "mount-all lock=free"),
    (("config", "apply"), "config apply lock=free"),
    (("disk", "attach", "vdb"), "disk attach vdb lock=free"),  # a worker each: no batch
    (("iface", "detach", "ens3"), "iface detach ens3 lock=free"),
])
def test_the_units_commands_run_in_the_agent_rooted_at_the_gates_root(gate, root, args, sent):
    add_disk(None, "vdb", "253:16", 2097152, root=str(root))
    set_attr("vdb", "diskseq", 7, root=str(root))
    (root / "run/gandi/iface/ens3.yaml").write_text("state: configured\n")
    assert gate(*args) == (0, [f"ran {sent}"], "")
    assert gate.execs == []  # no interpreter started for it
    assert replies(root) == ["requests"]  # the reply FIFO removed after the answer


def test_output_reaches_the_unit_as_written_but_for_empty_lines(gate):
    assert gate("disk", "detach", "output") == (0, [
        "<6>disk vdb: mounted on /srv/data", "<3>an error line", "  indented line kept as is",
        "last line without newline"], "")


@pytest.mark.parametrize("scenario, status", [("exits3", 3), ("raises", 1), ("exits", 4)])
def test_the_gate_exits_with_the_workers_status(gate, scenario, status):
    code, lines, _ = gate("disk", "detach", scenario)
    assert code == status
    if scenario == "raises":
        assert lines == [f"gandi: error: gandi-vm disk detach {scenario}: internal error: "
                         "RuntimeError: a bug"]


def test_a_worker_killed_by_a_signal_is_a_failure_saying_so(gate, root):
    assert gate("disk", "detach", "killed") == (1, [
        "about to die", "<3>gandi-vm disk detach killed: killed by signal 9"], "")
    assert replies(root) == ["requests"]


def test_output_that_looks_like_the_status_line_does_not_end_the_client(gate):
    assert gate("disk", "detach", "forged") == (5, ["0000 exit 0", "00000000 exit 0",
                                                    "still running"], "")


def test_the_requests_processes_join_the_clients_cgroup(gate, root):
    """The supervisor joins it before forking the worker (which is born there): a restart of the
    agent ends neither."""
    code, [line], _ = gate("disk", "detach", "cgroup")
    supervisor = line.split()[1]
    # Systemd's named hierarchy on a hybrid host (this machine, often), else the unified one.
    directory, path = min(own_cgroups(), key=lambda cgroup: cgroup[0] != "systemd")
    unit = os.path.join("sys/fs/cgroup", directory, path.lstrip("/"), "cgroup.procs")
    assert code == 0
    assert {k: v for k, v in written(root).items() if v} == {unit: f"{supervisor}\n"}


def test_two_clients_at_once_are_both_answered(gate):
    first = gate.start("disk", "detach", "waitsa")
    second = gate.start("disk", "detach", "waitsb")
    assert finish(first) == (0, ["waitsa: saw 2 workers"], "")
    assert finish(second) == (0, ["waitsb: saw 2 workers"], "")


def test_a_malformed_request_does_not_stop_the_agent(gate, served):
    fd = os.open(gate.root / "run/gandi/agent/requests", os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"v1 0123abcd 42 status\n\xff\xfe\n" + b"x" * 5000)
    finally:
        os.close(fd)
    # Read all before the gate writes: its line would otherwise end the 5000 bytes.
    eventually(lambda: len(served.lines()) >= 3)
    assert served.lines() == [
        "gandi: warning: agent: dropped 5000 bytes without a newline",
        "gandi: warning: agent: request 'v1 0123abcd 42 status': not a command the units send",
        "gandi: warning: agent: request '\xff\xfe': not ASCII"]  # read as latin-1
    assert gate("mount-all") == (0, ["ran mount-all lock=free"], "")


def test_without_the_agent_the_gate_runs_gandi_vm_itself(gate, root, served):
    served.stop()
    (root / "run/gandi/agent/requests").unlink()  # RemoveOnStop=yes
    assert gate("config", "apply") == (0, [], "")
    assert gate.execs == ["config apply lock=free"]


def test_if_mkfifo_fails_the_gate_runs_gandi_vm_itself(gate, root, served):
    mkfifo = root / "bin/mkfifo"
    mkfifo.unlink()
    mkfifo.write_text("#!/bin/sh\nexit 1\n")
    mkfifo.chmod(0o755)
    assert gate("mount-all") == (0, [], "")
    assert gate.execs == ["mount-all lock=free"]
    assert served.lines() == [] and replies(root) == ["requests"]


@pytest.mark.parametrize("kind", ["file", "symlink"])
def test_a_reply_path_that_is_no_fifo_gets_nothing_written(tmp_path, kind):
    """Only the client's own FIFO is answered: not a file, nor what a symlink points to."""
    (tmp_path / "run/gandi/agent").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("kept\n")
    path = Path(agent.reply_path(str(tmp_path), PID))
    if kind == "file":
        path.write_text("kept\n")
    else:
        path.symlink_to(target)
    request = agent.parse(f"v1 {'ab' * 8} {PID} mount-all".encode())
    assert agent._supervise(request, str(tmp_path), lambda argv: 0) == 1
    assert target.read_text() == "kept\n" and path.read_text() == "kept\n"


def test_preload_leaves_out_what_no_ordinary_boot_or_hotplug_needs():
    """The agent's start is on the boot's path to sshd: each millisecond of import here is tens
    under emulation. What only a first boot, `status` or a type checker uses stays out."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from gandi_vm import agent; "
            "agent.preload(); print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-S", "-c", code, str(Path(__file__).parents[2])],
                          capture_output=True, text=True, timeout=60, check=True)
    loaded = set(done.stdout.split())
    assert {"gandi_vm.disk", "gandi_vm.net", "gandi_vm.runner", "gandi_vm.plugins.ssh"} <= loaded
    assert not loaded & {"yaml", "typing", "hashlib", "dataclasses", "tarfile", "inspect",
                         "gandi_vm.provision", "gandi_vm.configdrive"}, loaded
