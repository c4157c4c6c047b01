"""Properties of the boot plugins' parsers of outside data (issue 11, hostile input): on any text,
each gives its own answer (a value, a refusal, a skip with one line) and never another exception,
and what it writes keeps the owner's lines byte for byte and means to the reader (sshd, glibc,
cron, init, pam) what we meant. The default profile runs each 60 times; `--hypothesis-profile=fuzz`
runs 4000 with a deadline."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tempfile
from typing import Dict, List, Optional

import fakesshd
from hypothesis import given
from hypothesis import strategies as st

from gandi_vm.config import Settings
from gandi_vm.host import Host, lines, lines_keepends
from gandi_vm.plugins import Context, console, cron, motd, nameserver, nosegneg, ssh, sysctl

# Pieces that make the readers' corner cases likely: separators they do and do not split on,
# quotes, comments, NUL, surrogates (undecodable bytes), very long words.
TRICKY = ["\n", "\r", "\r\n", "\t", " ", "=", '"', "#", "\0", "\x0b", "\x0c", "\x1c", "\x85",
          "\u2028", "\u2029", "\udcff", "-", ".", "/", "..", ";", "x" * 300]
SSHD_WORDS = ["PermitRootLogin", "permitrootlogin", "PermitEmptyPasswords", "Match", "all", "User",
              "yes", "no", "prohibit-password", "without-password", "Port", "22", "# c"]


def texts(words: List[str]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(TRICKY + words), st.text(max_size=8)),
                    max_size=40).map("".join)


# -- sshd_config -------------------------------------------------------------------------------
WANTED = {"permitrootlogin": ("prohibit-password", "without-password"), "permitemptypasswords": ("no",)}


def first_global_values(text: str) -> Dict[str, Optional[str]]:
    """The first value of each wanted keyword before the first Match, in the lines sshd parses."""
    found: Dict[str, Optional[str]] = {}
    for line in fakesshd.buffer_lines(text):
        keyword, rest = fakesshd.strdelim(line.rstrip(fakesshd.SPACE + "\f"))
        if keyword == "":
            keyword, rest = fakesshd.strdelim(rest)
        if not keyword or keyword.startswith("#"):
            continue
        if keyword.lower() == "match":
            break
        if keyword.lower() in WANTED and keyword.lower() not in found:
            words = fakesshd._split(rest or "")
            found[keyword.lower()] = words[0].lower() if words else None
    return found


OUR_LINE = re.compile(r"[ \t]*(PermitRootLogin prohibit-password|PermitEmptyPasswords no)[\r\n]*")


@given(texts(SSHD_WORDS))
def test_harden_in_place_makes_the_first_global_values_ours_and_keeps_every_other_line(text):
    if "\0" in text:
        return  # _harden refuses such a file before editing (sshd glues lines at a NUL)
    edited = ssh.harden_in_place(text, ssh.WANTED)

    values = first_global_values(edited)
    assert all(values.get(key) in accepted for key, accepted in WANTED.items()), (values, edited)
    before = lines_keepends(text)
    if before and not before[-1].endswith("\n") and not edited.endswith(before[-1]):
        before[-1] += "\n"  # the only byte added to an owner's line: the newline before ours
    after = lines_keepends(edited)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes():
        assert tag != "delete", (before[i1:i2], edited)
        if tag != "equal":
            assert all(OUR_LINE.fullmatch(line) for line in after[j1:j2]), (tag, before[i1:i2], after[j1:j2])
    assert ssh.harden_in_place(edited, ssh.WANTED) == edited


@given(texts(SSHD_WORDS + ["Include", "sshd_config.d/*.conf"]))
def test_sshd_config_readers_never_raise(text):
    ssh._includes_drop_in(text)
    for line in lines(text):
        ssh._directive(line)
    ssh._ineffective(text)


# -- authorized_keys ---------------------------------------------------------------------------
KEY = ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB")
KEY_LINE = f"{KEY[0]} {KEY[1]} gandi-mgmt\n"
KEY_WORDS = [KEY[0], KEY[1], "ssh-rsa", "AAAA", 'from="a b"', "command=\"x\\\" y\"", "restrict", "#"]


def not_ours(text: str) -> List[str]:
    return [line.rstrip("\n") for line in lines_keepends(text) if ssh.authorized_key(line) != KEY]


@given(texts(KEY_WORDS))
def test_the_management_key_is_there_exactly_once_and_other_lines_are_kept(text):
    added = ssh.with_key(text, KEY, KEY_LINE)
    assert sum(ssh.authorized_key(line) == KEY for line in lines(added)) == 1
    assert not_ours(added) == not_ours(text)
    assert ssh.with_key(added, KEY, KEY_LINE) == added


@given(texts(KEY_WORDS))
def test_removing_the_management_key_keeps_every_other_line_exactly(text):
    removed = ssh.without_key(text, KEY)
    assert all(ssh.authorized_key(line) != KEY for line in lines(removed))
    assert [line for line in lines_keepends(text) if ssh.authorized_key(line) != KEY] == \
        lines_keepends(removed)


# -- resolv.conf -------------------------------------------------------------------------------
class LeaseContext:
    """What nameserver.servers/domains ask of a Context: the lease values."""

    def __init__(self, dns: List[object], search: List[object]):
        self.values = {"dns": dns, "search": search, "domain": []}

    def lease_values(self, key: str) -> List[object]:
        return self.values[key]


ADDRESS_WORDS = ["192.0.2.1", "2001:db8::1", "fe80::1%eth0", "fe80::1%", "%", "::ffff:1.2.3.4",
                 "example.com", "a.b"]


@given(texts(["nameserver 10.0.0.1", "search x", "options ndots:2", "# Generated by gandi-vm"]),
       st.lists(st.one_of(texts(ADDRESS_WORDS), st.lists(texts(ADDRESS_WORDS), max_size=3)), max_size=4),
       st.lists(texts(ADDRESS_WORDS), max_size=4))
def test_resolv_conf_holds_only_valid_servers_and_the_owners_lines(text, dns, search):
    context = LeaseContext(dns, search)
    servers, domains = nameserver.servers(context), nameserver.domains(context)
    written = nameserver.resolv_conf(text, servers, domains)

    ours = lines(written)[:1 + bool(domains) + len(servers)]
    for line in ours[1:]:
        assert line.isprintable(), line
        if line.startswith("nameserver "):
            ipaddress.ip_address(line.split(" ", 1)[1])
    assert lines(written)[len(ours):] == [line for line in lines(text) if line in lines(written)[len(ours):]]
    nameserver.foreign_tool(text)


# -- sysctl ------------------------------------------------------------------------------------
@given(texts(["kernel.panic", "net.ipv4.ip_forward", "-", "=", " = ", "1", "../"]))
def test_sysctl_parse_refuses_in_one_line_and_keeps_keys_inside_proc_sys(text):
    values, problems = sysctl.parse(text)
    assert all("\n" not in problem and problem.isprintable() for problem in problems)
    for key in values:
        path = sysctl.proc_path(key)
        assert os.path.normpath(path).startswith("/proc/sys/") and "\0" not in path


# -- cron, console, nosegneg, motd -------------------------------------------------------------
@given(texts(["17", "6", "*", "root", "run-parts", "/etc/cron.daily", "/etc/cron.hourly", "@daily"]))
def test_cron_changes_only_the_time_fields_of_run_parts_lines(text):
    for line in lines_keepends(text):
        spread = cron._spread(line, "4f0a3c1e")
        if spread is not None and spread != line:
            assert spread.split(None, 2)[2:] == line.split(None, 2)[2:]
            assert lines_keepends(spread) == [spread]


@given(texts(["g0:2345:respawn:/sbin/getty", "ttyS0", "hvc0", ":", "tty1"]),
       st.lists(st.sampled_from(["ttyS0", "hvc0", "tty1"]), unique=True))
def test_console_edits_only_append_lines(text, names):
    for edited in (console._inittab(text, names), console._securetty(text, names)):
        assert edited.startswith(text)
        assert all(line.isprintable() for line in lines(edited[len(text):]))


@given(texts(["hwcap", "1", "nosegneg", nosegneg.LINE, "/opt/lib"]))
def test_nosegneg_removes_only_its_own_line(text):
    rest = nosegneg._without_ours(text)
    assert not nosegneg._ours("".join(rest))
    assert all(line in lines_keepends(text) for line in rest)


def motd_round_trip(data: bytes) -> bytes:
    """/etc/motd as motd.apply leaves a file that held `data` (checked to be idempotent)."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(f"{root}/etc")
        with open(f"{root}/etc/motd", "wb") as f:
            f.write(data)
        context = Context(Host(root), Settings(), name="motd")
        motd.apply(context)
        with open(f"{root}/etc/motd", "rb") as f:
            written = f.read()
        assert motd.apply(Context(Host(root), Settings(), name="motd")).state == "unchanged"
    return written


@given(st.binary(max_size=400))
def test_motd_adds_its_line_once_to_any_file(data):
    written = motd_round_trip(data)
    assert written.startswith(data)
    assert written.split(b"\n").count(motd.LINE.encode()) >= 1


def test_a_carriage_return_in_an_owners_file_is_kept():
    """Python's default universal newlines turned this \\r into a line break (Host.read_text)."""
    assert motd_round_trip(b"owner\r").startswith(b"owner\r")
