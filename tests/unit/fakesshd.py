"""A model of how sshd (OpenSSH 9.2, Debian 12) reads sshd_config, standing in for `sshd -T` in the
ssh plugin's tests: which PermitRootLogin and PermitEmptyPasswords it will use.

Written from OpenSSH's load_server_config (each line is kept up to its first NUL, which also
drops its newline and glues the next line on), strdelim (words end at " \\t\\r\\n", one '=', or
are "quoted"), the first-value-wins rule (in the global section, and separately among the Match
blocks that apply, whose values then override the global ones), and checked against the real
sshd -T; it is kept apart from gandi_vm.plugins.ssh on purpose, so that a test compares the
plugin with sshd, not with itself. Match blocks are inactive (no connection given with -C) except `Match all`.
"""

from __future__ import annotations

import glob
import posixpath
from typing import Dict, List, Optional, Tuple

from gandi_vm.host import Result

WANTED = ("permitrootlogin", "permitemptypasswords")
DEFAULTS = {"permitrootlogin": "without-password", "permitemptypasswords": "no"}
ALLOWED = {"permitrootlogin": {"yes", "no", "without-password", "prohibit-password",
                               "forced-commands-only"},
           "permitemptypasswords": {"yes", "no"}}
SPACE = " \t\r\n"


class Rejected(Exception):
    """sshd -T would exit 255 with this message."""


def buffer_lines(data: str) -> List[str]:
    """The lines sshd parses from a file's text (NUL truncation and gluing included)."""
    buffer = ""
    for physical in data.split("\n")[:-1]:
        buffer += physical.split("\0")[0] if "\0" in physical else physical + "\n"
    last = data.split("\n")[-1]
    buffer += last.split("\0")[0]
    return buffer.split("\n")


def strdelim(text: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """misc.c strdelim_internal(s, split_equals=1), a character at a time as in C."""
    if text is None:
        return None, None
    for at, char in enumerate(text):
        if char == '"':
            closing = text.find('"', at + 1)
            if closing == -1:
                return None, None
            rest = text[closing + 1:]
            return text[:at] + text[at + 1:closing], rest.lstrip(SPACE)
        if char in SPACE or char == "=":
            rest = text[at + 1:].lstrip(SPACE)
            if char != "=" and rest[:1] == "=":
                rest = rest[1:].lstrip(SPACE)
            return text[:at], rest
    return text, None


class State:
    """The values read so far, globally and in the Match blocks that apply; where we are."""

    def __init__(self) -> None:
        self.globals: Dict[str, str] = {}
        self.matched: Dict[str, str] = {}
        self.in_match = False
        self.active = True


def parse_file(path: str, state: State) -> None:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        data = f.read()
    for number, line in enumerate(buffer_lines(data), 1):
        line = line.rstrip(SPACE + "\f")
        keyword, rest = strdelim(line)
        if keyword == "":
            keyword, rest = strdelim(rest)
        if not keyword or keyword.startswith("#"):
            continue
        if not rest:
            raise Rejected(f'{path} line {number}: no argument after keyword "{keyword}"')
        if not keyword.isalnum() or not keyword.isascii():
            raise Rejected(f"{path}: line {number}: Bad configuration option: {keyword}")
        keyword = keyword.lower()
        words = _split(rest)
        if keyword == "match":
            state.in_match = True
            state.active = [word.lower() for word in words] == ["all"]
        elif keyword == "include":
            for pattern in words:
                for included in sorted(glob.glob(posixpath.join("/etc/ssh", pattern))):
                    parse_file(included, state)
        elif keyword in WANTED:
            if len(words) > 1 and not words[1].startswith("#"):
                raise Rejected(f"{path} line {number}: keyword {keyword} extra arguments at end of line")
            value = words[0].lower()
            if value not in ALLOWED[keyword]:
                raise Rejected(f'{path} line {number}: unsupported option "{words[0]}".')
            if not state.in_match:
                state.globals.setdefault(keyword, value)
            elif state.active:
                state.matched.setdefault(keyword, value)


def _split(rest: str) -> List[str]:
    """misc.c argv_split: words on whitespace, "double" or 'single' quotes group (and go)."""
    words: List[str] = []
    word, quote, started = "", "", False
    for char in rest:
        if quote:
            if char == quote:
                quote = ""
            else:
                word += char
        elif char in "\"'":
            quote, started = char, True
        elif char in SPACE:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    return words + [word] if started else words


def effective(config: str) -> Dict[str, str]:
    """What `sshd -T -f config` prints for the wanted keywords; raises Rejected."""
    state = State()
    parse_file(config, state)
    shown = {**DEFAULTS, **state.globals, **state.matched}
    if shown["permitrootlogin"] == "prohibit-password":
        shown["permitrootlogin"] = "without-password"  # how sshd -T names it
    return shown


def sshd(argv: List[str]) -> Result:
    """A FakeHost handler for `sshd -T -f CONFIG`."""
    assert argv[1:3] == ["-T", "-f"], argv
    try:
        shown = effective(argv[3])
    except Rejected as e:
        return Result(argv, 255, stderr=f"{e}\n")
    return Result(argv, 0, stdout="".join(f"{key} {value}\n" for key, value in shown.items()))
