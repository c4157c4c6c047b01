"""Properties of the system boundary: line splitting as the kernel and sshd do it, and paths from
hostile files (NUL bytes, `..`) that must stay errors of their own or inside the root."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from gandi_vm.host import Host, InvalidPath, lines, lines_keepends

# Text as a file read with surrogateescape gives it: any code point, undecodable bytes as lone
# surrogates, and the separators str.splitlines() would wrongly honour.
TRICKY = st.sampled_from(["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                          "\u2029", "\x00", "\udce9", "/", ".."])
FILE_TEXT = st.lists(st.one_of(st.text(max_size=8), TRICKY), max_size=30).map("".join)


@given(FILE_TEXT)
def test_lines_split_on_newline_only(text):
    got = lines(text)
    assert all("\n" not in line for line in got)
    assert "\n".join(got) + ("\n" if text.endswith("\n") else "") == text
    assert len(got) == text.count("\n") + (0 if text.endswith("\n") or not text else 1)


@given(FILE_TEXT)
def test_lines_keepends_give_back_every_byte(text):
    got = lines_keepends(text)
    assert "".join(got) == text
    assert [line.rstrip("\n") if line.endswith("\n") else line for line in got] == lines(text)


@given(st.text(max_size=40))
def test_guest_paths_stay_inside_the_root_or_fail_as_oserror(name):
    with tempfile.TemporaryDirectory() as root:
        host = Host(root)
        path = "/" + name
        try:
            real = host.path(path)
        except InvalidPath:
            assert "\0" in name
        else:
            assert real == root or real.startswith(root + os.sep)
        # queries answer "absent" for what cannot exist; reads raise OSError, nothing else
        assert host.exists(path) in (True, False)
        resolved = host.realpath(path)
        assert resolved is None or resolved.startswith("/")
        assert isinstance(host.listdir(path), list)
        assert host.read_attr(path) is None or isinstance(host.read_attr(path), str)
        try:
            host.read_text(path)
        except OSError:
            pass


@given(st.binary(max_size=200))
def test_a_file_read_and_rewritten_keeps_every_byte(data):
    """No newline translation (a lone \\r stays), undecodable bytes survive as surrogates."""
    with tempfile.TemporaryDirectory() as root:
        host = Host(root)
        with open(os.path.join(root, "in"), "wb") as f:
            f.write(data)
        host.write_text("/out", host.read_text("/in"))
        with open(os.path.join(root, "out"), "rb") as f:
            assert f.read() == data
