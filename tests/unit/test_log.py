"""gandi_vm.log: the command line's lines (terminal, journal, syslog) as the logging package wrote
them before it, and the stdlib logger "gandi" for everything else (the tests' caplog included)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket

import pytest

from gandi_vm import log


def emit_all():
    log.debug("d %s", 1)
    log.info("i %s", 2)
    log.warning("w %s", 3)
    log.error("e %s", 4)
    log.log(log.ERROR, "x %d%%", 5)


def test_a_terminal_gets_the_program_name_and_the_level_of_a_problem(capsys):
    log.configure(verbose=False, journal=False)
    emit_all()
    assert capsys.readouterr().err.splitlines() == [
        "gandi: i 2", "gandi: warning: w 3", "gandi: error: e 4", "gandi: error: x 5%"]


def test_verbose_adds_the_debug_lines_and_the_traceback_they_carry(capsys):
    log.configure(verbose=True, journal=False)
    try:
        {}["key"]
    except KeyError:
        log.debug("details", exc_info=True)
    err = capsys.readouterr().err
    assert err.startswith("gandi: details\nTraceback (most recent call last):")
    assert "KeyError: 'key'" in err


def test_the_journal_gets_its_priorities(capsys):
    log.configure(verbose=True, journal=True)
    emit_all()
    assert capsys.readouterr().err.splitlines() == ["<7>d 1", "<6>i 2", "<4>w 3", "<3>e 4", "<3>x 5%"]


def test_a_message_without_arguments_is_not_formatted(capsys):
    log.configure(verbose=False, journal=False)
    log.info("100% done")
    assert capsys.readouterr().err == "gandi: 100% done\n"


def test_without_the_command_line_the_records_go_to_the_stdlib_logger(caplog, capsys):
    with caplog.at_level(logging.DEBUG, logger="gandi"):
        emit_all()
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("gandi", logging.DEBUG, "d 1"), ("gandi", logging.INFO, "i 2"),
        ("gandi", logging.WARNING, "w 3"), ("gandi", logging.ERROR, "e 4"),
        ("gandi", logging.ERROR, "x 5%")]
    assert capsys.readouterr().err == ""


def test_the_levels_are_the_logging_packages():
    assert (log.DEBUG, log.INFO, log.WARNING, log.ERROR) == (
        logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)


@pytest.fixture
def syslog_socket(tmp_path):
    path = str(tmp_path / "log")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    yield path, server
    server.close()


def test_syslog_gets_the_datagrams_sysloghandler_sent(syslog_socket, capsys):
    path, server = syslog_socket
    handler = logging.handlers.SysLogHandler(path)  # what cli configured before gandi_vm.log
    handler.ident = "gandi: "
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        handler.emit(logging.LogRecord("gandi", level, __file__, 1, "lease %s", ("x\u00e9",), None))
    handler.close()
    expected = [server.recv(4096) for _ in range(3)]

    log.configure(verbose=False, journal=False)
    log.to_syslog(path)
    log.info("lease %s", "x\u00e9")
    log.warning("lease %s", "x\u00e9")
    log.error("lease %s", "x\u00e9")
    assert [server.recv(4096) for _ in range(3)] == expected
    assert len(capsys.readouterr().err.splitlines()) == 3  # stderr keeps its lines too


def test_no_syslog_socket_no_syslog(tmp_path, capsys):
    log.configure(verbose=False, journal=False)
    log.to_syslog(str(tmp_path / "absent"))
    log.info("still on stderr")
    assert capsys.readouterr().err == "gandi: still on stderr\n"
    assert not os.path.exists(tmp_path / "absent")
