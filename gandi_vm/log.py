"""Log lines, without the `logging` package on a handler's start-up.

`import logging` costs about 11 ms on a fast machine (threading, weakref, string.Template...), more
than a bare `python3 -c pass`, and under QEMU/TCG every millisecond of start-up is a hundred at
each boot and hotplug event. A handler needs none of its machinery: one line per decision to
stderr, which journald captures. Same call style as a logger (`log.info("disk %s: ...", name)`).

Where the lines go:
- the command line (`configure()`): stderr, as `<N>message` with the journal's priority N when
  stderr is the journal (systemd sets JOURNAL_STREAM), else `gandi: message` and
  `gandi: warning: message`; debug lines only with -v; and, for the DHCP client's event script
  (whose stderr the client discards), also syslog through /dev/log (`to_syslog()`);
- anything else that imports gandi_vm (the tests, an embedding program) and never called
  `configure()`: the stdlib logger "gandi", as before this module existed, so its handlers,
  levels and pytest's caplog see every record.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Tuple

# The stdlib logging levels' values, so a level is the same number whichever way it is read.
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_PRIORITY = {DEBUG: 7, INFO: 6, WARNING: 4, ERROR: 3}  # syslog severities
_NAMES = {WARNING: "warning", ERROR: "error"}
_SYSLOG_USER = 1  # the facility logging.handlers.SysLogHandler uses by default

# Set by configure(): (threshold, sinks(level, message, exc_info)). None: forward to the stdlib
# logger "gandi".
_setup: Optional[Tuple[int, List[Callable[[int, str, bool], None]]]] = None


def configure(verbose: bool, journal: bool) -> None:
    """The command line's output: stderr, debug lines only if verbose."""
    global _setup
    _setup = (DEBUG if verbose else INFO, [_journal_line if journal else _terminal_line])


def to_syslog(path: str = "/dev/log") -> None:
    """Also send each line to syslog, tagged `gandi: ` (as SysLogHandler with ident "gandi: "
    did); nothing if there is no syslog socket. Call after configure()."""
    if _setup is not None and os.path.exists(path):
        _setup[1].append(lambda level, message, exc: _syslog_line(path, level, message))


def reset() -> None:
    """Back to forwarding to the stdlib logger (tests: undo a configure() done by cli.main)."""
    global _setup
    _setup = None


def log(level: int, msg: str, *args: object, exc_info: bool = False) -> None:
    if _setup is None:
        _forward(level, msg, args, exc_info)
        return
    threshold, sinks = _setup
    if level < threshold:
        return
    message = msg % args if args else msg
    for sink in sinks:
        sink(level, message, exc_info)


def debug(msg: str, *args: object, exc_info: bool = False) -> None:
    log(DEBUG, msg, *args, exc_info=exc_info)


def info(msg: str, *args: object, exc_info: bool = False) -> None:
    log(INFO, msg, *args, exc_info=exc_info)


def warning(msg: str, *args: object, exc_info: bool = False) -> None:
    log(WARNING, msg, *args, exc_info=exc_info)


def error(msg: str, *args: object, exc_info: bool = False) -> None:
    log(ERROR, msg, *args, exc_info=exc_info)


def _terminal_line(level: int, message: str, exc_info: bool) -> None:
    name = _NAMES.get(level) if level >= WARNING else None
    _write(f"gandi: {name}: {message}" if name else f"gandi: {message}", exc_info)


def _journal_line(level: int, message: str, exc_info: bool) -> None:
    _write(f"<{_PRIORITY.get(level, 6)}>{message}", exc_info)


def _write(line: str, exc_info: bool) -> None:
    # A DHCP client may give its event script a dead stderr (dhcpcd: a socket that is not
    # connected) or none: the line is lost there, as the logging package would lose it, but not
    # its syslog copy, nor the event's exit status (a stderr that still holds it at exit makes
    # Python exit 120).
    if sys.stderr is None:
        return
    try:
        sys.stderr.write(line + "\n")
        if exc_info and sys.exc_info()[0] is not None:
            import traceback  # only a -v run that hit an exception pays for it

            traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    except OSError:
        sys.stderr = None


def _syslog_line(path: str, level: int, message: str) -> None:
    """One datagram as SysLogHandler writes it: `<PRI>ident message` and a NUL."""
    import socket  # only the DHCP client's event script logs to syslog

    datagram = f"<{_SYSLOG_USER * 8 + _PRIORITY.get(level, 6)}>gandi: {message}\0"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(path)
            sock.send(datagram.encode("utf-8"))
    except OSError:
        pass  # syslog is a copy of stderr's lines: a full or absent socket loses nothing else


def _forward(level: int, msg: str, args: tuple, exc_info: bool) -> None:
    import logging  # not the command line: an embedding program or the tests, which use it

    logger = logging.getLogger("gandi")
    if logger.isEnabledFor(level):
        logger.log(level, msg % args if args else msg, exc_info=exc_info)
