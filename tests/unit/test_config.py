"""config.parse reads the historic KEY=VALUE file without executing it; config.load finds it."""

from __future__ import annotations

import logging
import os

import pytest
from gandi_vm.record import replace

from gandi_vm import config
from gandi_vm.config import Settings
from gandi_vm.host import Host

SRC = "/etc/default/gandi"


def errors(settings):
    return [m for level, m in settings.problems if level == logging.ERROR]


def warnings(settings):
    return [m for level, m in settings.problems if level == logging.WARNING]


def test_defaults():
    settings = config.parse("# nothing set\n", SRC)
    assert settings == replace(Settings(), source=SRC)
    assert settings.allow_mount is True
    assert settings.disk_root == "/srv"
    assert settings.mount_params == "rw,nosuid,nodev,noatime"
    assert settings.fsck_timeout == 600
    assert settings.source == SRC
    assert settings.problems == ()


def test_quotes_comments_and_export():
    text = (
        "# gandi configuration\n"
        "\n"
        'CONFIG_MOUNT_PARAMS="rw,noatime" # c\n'
        "export CONFIG_ALLOW_MOUNT=no\n"
        "CONFIG_DISK_ROOT='/mnt/disks'\n"
        "CONFIG_DISK_DEVICES='vd* sd*'\n"
        "   CONFIG_FSCK_TIMEOUT=30   \n"
        "GANDI_HOOK_DIR=/etc/gandi/hooks.d/\n"
    )
    settings = config.parse(text, SRC)
    assert settings.problems == ()
    assert settings.mount_params == "rw,noatime"
    assert settings.allow_mount is False
    assert settings.disk_root == "/mnt/disks"
    assert settings.disk_devices == ("vd*", "sd*")
    assert settings.fsck_timeout == 30
    assert settings.hook_dir == "/etc/gandi/hooks.d"


def test_unknown_key_is_a_warning_naming_the_line():
    settings = config.parse("CONFIG_ALLOW_MOUNT=1\nCONFIG_NICE=yes\n", SRC)
    assert warnings(settings) == [f"{SRC}:2: unknown key CONFIG_NICE; ignored"]
    assert errors(settings) == []


@pytest.mark.parametrize("line, name", [
    ("CONFIG_ALLOW_MOUNT=maybe", "allow_mount"),
    ("CONFIG_DISK_ROOT=relative", "disk_root"),
    ("CONFIG_DISK_ROOT=/srv/../etc", "disk_root"),
    ("CONFIG_DISK_ROOT=/", "disk_root"),
    ("CONFIG_DISK_ROOT=//", "disk_root"),
    ("CONFIG_DISK_ROOT=/srv/a\tb", "disk_root"),
    ("CONFIG_MOUNT_PARAMS='rw nosuid'", "mount_params"),
    ("CONFIG_MOUNT_PARAMS='rw,$(reboot)'", "mount_params"),
    ("CONFIG_MOUNT_PARAMS=", "mount_params"),
    ("CONFIG_MOUNT_PARAMS=rw,,nodev", "mount_params"),
    ("CONFIG_FSCK_TIMEOUT=abc", "fsck_timeout"),
    ("CONFIG_FSCK_TIMEOUT=0", "fsck_timeout"),
    ("CONFIG_FSCK_TIMEOUT=-5", "fsck_timeout"),
    ("CONFIG_DISK_DEVICES='vd* ../x'", "disk_devices"),
    # not printable: nothing we log, print or mount may hold these
    ("CONFIG_DISK_ROOT=/srv/a\x7fb", "disk_root"),
    ("CONFIG_DISK_ROOT=/srv/a\u2028b", "disk_root"),
    ("CONFIG_DISK_ROOT=/srv/\udcff", "disk_root"),
    ("CONFIG_SSHMGMT_KEY=/etc/\x85key", "sshmgmt_key"),
    ("GANDI_PLUGIN_DIR=/etc/\x00x", "plugin_dir"),
    ("CONFIG_GROW_ROOT=maybe", "grow_root"),
    ("CONFIG_GROW_ROOT_LV=2", "grow_root_lv"),
    ("CONFIG_GROW_MOUNTPOINTS='/ var'", "grow_mountpoints"),
    ("CONFIG_GROW_MOUNTPOINTS=/srv/../etc", "grow_mountpoints"),
    ("CONFIG_GROW_MOUNTPOINTS=/srv/\x1b[2J", "grow_mountpoints"),
    ("CONFIG_GROW_MOUNTPOINTS='/ /srv/\udcff'", "grow_mountpoints"),
])
def test_invalid_value_is_an_error_and_keeps_the_default(line, name):
    settings = config.parse(f"# first line\n{line}\n", SRC)
    [message] = errors(settings)
    assert message.startswith(f"{SRC}:2: ")
    assert line.split("=", 1)[0] in message
    assert getattr(settings, name) == getattr(Settings(), name)


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "1_0", "+5", "9" * 4000])
def test_numbers_are_ascii_digits_with_a_clear_message(value):
    settings = config.parse(f"CONFIG_FSCK_TIMEOUT={value}\nCONFIG_DHCP_RETRIES={value}\n", SRC)
    assert settings.fsck_timeout == 600 and settings.dhcp_retries == 4
    assert [m.split(": ", 2)[2] for m in errors(settings)] == [
        "expected a number of seconds between 1 and 86400; using the default 600",
        "expected a number between 1 and 100; using the default 4"]


@pytest.mark.parametrize("separator", ["\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_lines_end_at_newline_only_as_the_shell_reads_them(separator):
    # splitlines() would take the hidden assignment as a line of its own, and number the
    # following lines wrong.
    text = f"CONFIG_SSHMGMT=0{separator}CONFIG_SSHMGMT=1\nCONFIG_ALLOW_MOUNT=maybe\n"
    settings = config.parse(text, SRC)
    assert settings.sshmgmt is False
    assert [m.split(": ", 1)[0] for m in errors(settings)] == [f"{SRC}:1", f"{SRC}:2"]


def test_a_huge_line_is_one_short_error():
    settings = config.parse("CONFIG_ALLOW_MOUNT=0\n" + "x" * 10 ** 6 + "\nCONFIG_FSCK_TIMEOUT=60\n", SRC)
    assert errors(settings) == [f"{SRC}:2: line longer than {config.MAX_LINE} characters; ignored"]
    assert (settings.allow_mount, settings.fsck_timeout) == (False, 60)


def test_a_long_bad_value_is_quoted_short():
    [message] = errors(config.parse("CONFIG_DISK_ROOT=relative" + "/x" * 1000 + "\n", SRC))
    assert len(message) < 200


def test_growth_settings():
    assert (Settings().grow_root, Settings().grow_root_lv, Settings().grow_mountpoints) == (
        True, False, ("/",))
    settings = config.parse("CONFIG_GROW_ROOT=no\nCONFIG_GROW_ROOT_LV=1\n"
                            "CONFIG_GROW_MOUNTPOINTS='/ /var//lib/ //srv/./data /var/lib'\n", SRC)
    assert settings.problems == ()
    assert (settings.grow_root, settings.grow_root_lv) == (False, True)
    # As mountinfo shows them (normalized, no leading //), each once, in the order given.
    assert settings.grow_mountpoints == ("/", "/var/lib", "/srv/data")
    assert config.parse("CONFIG_GROW_MOUNTPOINTS=\n", SRC).grow_mountpoints == ()
    assert config.parse("CONFIG_GROW_MOUNTPOINTS=//\n", SRC).grow_mountpoints == ("/",)


def test_disk_root_is_normalized():
    assert config.parse("CONFIG_DISK_ROOT=/srv/disks/\n", SRC).disk_root == "/srv/disks"
    # POSIX normpath keeps a leading '//'; mountpoints must still compare equal to mountinfo's.
    assert config.parse("CONFIG_DISK_ROOT=//srv\n", SRC).disk_root == "/srv"


def test_unbalanced_quote_is_reported_and_other_lines_still_parsed():
    text = "CONFIG_ALLOW_MOUNT=0\nCONFIG_DISK_ROOT='/mnt\nCONFIG_FSCK_TIMEOUT=60\n"
    settings = config.parse(text, SRC)
    [message] = errors(settings)
    assert message.startswith(f"{SRC}:2: cannot parse line")
    assert settings.allow_mount is False
    assert settings.disk_root == "/srv"
    assert settings.fsck_timeout == 60


def test_not_key_value_lines_are_reported():
    settings = config.parse("CONFIG_ALLOW_MOUNT 1\necho hello\nCONFIG_ALLOW_MOUNT=1 2\n", SRC)
    assert [m.split(": ", 1)[0] for m in errors(settings)] == [f"{SRC}:1", f"{SRC}:2", f"{SRC}:3"]


@pytest.mark.parametrize("line, value", [
    ("GANDI_HOOK_DIR=/h#x", "/h#x"),  # shlex's comments=True gave "/h"
    ("GANDI_HOOK_DIR=/h #x", "/h"),
    ("GANDI_HOOK_DIR='/h #x' # c", "/h #x"),
    ('GANDI_HOOK_DIR="/h\\"#" #c', '/h"#'),
    ("GANDI_HOOK_DIR=/h\\ #x", "/h "),
])
def test_a_comment_starts_where_the_shell_starts_one(line, value):
    """Only a `#` that begins a word outside quotes starts a comment, as in sh."""
    settings = config.parse(line + "\n", SRC)
    assert (settings.problems, settings.hook_dir) == ((), value)


def test_an_explicit_file_is_read_as_the_default_ones(tmp_path):
    """No newline translation: a \\r is part of a line for the shell, not a line break."""
    path = tmp_path / "gandi"
    path.write_bytes(b"CONFIG_MOUNT_PARAMS=rw\rCONFIG_ALLOW_MOUNT=0\n")
    settings = config.load(Host(str(tmp_path)), str(path))
    assert settings.allow_mount is True
    assert len(settings.problems) == 1


def test_shell_syntax_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = (
        f"CONFIG_DISK_ROOT=$(touch {marker})\n"
        f"CONFIG_MOUNT_PARAMS=`touch {marker}`\n"
        f'CONFIG_DISK_ROOT="/srv/$(touch {marker})"\n'
        f"$(touch {marker})\n"
        f"CONFIG_ALLOW_MOUNT=1; touch {marker}\n"
    )
    settings = config.parse(text, SRC)
    assert not marker.exists()
    assert settings.mount_params == Settings().mount_params
    # A value is taken literally: no expansion happened, so nothing ran to produce it.
    assert settings.disk_root == f"/srv/$(touch {marker})"
    assert len(settings.problems) == 4


# -- load ------------------------------------------------------------------------------------
def test_load_prefers_etc_default(fs):
    fs.create_file("/etc/default/gandi", contents="CONFIG_DISK_ROOT=/mnt/default\n")
    fs.create_file("/etc/sysconfig/gandi", contents="CONFIG_DISK_ROOT=/mnt/sysconfig\n")
    settings = config.load(Host(root="/"))
    assert settings.disk_root == "/mnt/default"
    assert settings.source == "/etc/default/gandi"


def test_load_falls_back_to_sysconfig(fs):
    fs.create_file("/etc/sysconfig/gandi", contents="CONFIG_DISK_ROOT=/mnt/sysconfig\n")
    settings = config.load(Host(root="/"))
    assert settings.disk_root == "/mnt/sysconfig"
    assert settings.source == "/etc/sysconfig/gandi"


def test_load_without_any_file_gives_defaults(fs):
    settings = config.load(Host(root="/"))
    assert settings == Settings()
    assert settings.problems == ()


def test_load_under_a_root(fs):
    fs.create_file("/vm/etc/default/gandi", contents="CONFIG_DISK_ROOT=/mnt/vm\n")
    fs.create_file("/etc/default/gandi", contents="CONFIG_DISK_ROOT=/mnt/host\n")
    assert config.load(Host(root="/vm")).disk_root == "/mnt/vm"


def test_load_explicit_path(fs):
    fs.create_file("/etc/default/gandi", contents="CONFIG_DISK_ROOT=/mnt/default\n")
    fs.create_file("/tmp/test.conf", contents="CONFIG_DISK_ROOT=/mnt/explicit\nBAD=1\n")
    settings = config.load(Host(root="/"), "/tmp/test.conf")
    assert settings.disk_root == "/mnt/explicit"
    assert settings.source == "/tmp/test.conf"
    assert warnings(settings) == ["/tmp/test.conf:2: unknown key BAD; ignored"]


def test_load_missing_explicit_path_gives_defaults_and_an_error(fs):
    fs.create_file("/etc/default/gandi", contents="CONFIG_DISK_ROOT=/mnt/default\n")
    settings = config.load(Host(root="/"), "/nonexistent.conf")
    assert settings == Settings()
    [message] = errors(settings)
    assert message.startswith("/nonexistent.conf: ")
    assert "using defaults" in message


def test_load_unreadable_explicit_path_gives_defaults_and_an_error(fs):
    os.makedirs("/etc/gandi.conf")  # a directory: open() fails with an OSError
    settings = config.load(Host(root="/"), "/etc/gandi.conf")
    assert settings == Settings()
    [message] = errors(settings)
    assert message.startswith("/etc/gandi.conf: ")


@pytest.mark.parametrize("raw", [b"CONFIG_DISK_ROOT=/srv/\xff\xfe", b"CONFIG_DISK_ROOT=/srv/a\0b",
                                 b"CONFIG_DISK_ROOT='/srv/\xff", b"\xff\xfe=1"])
def test_load_undecodable_bytes_and_nul_are_errors_naming_the_line(fs, raw):
    fs.create_file("/etc/default/gandi", contents=b"CONFIG_ALLOW_MOUNT=0\n" + raw + b"\n")
    settings = config.load(Host(root="/"))
    assert settings.allow_mount is False and settings.disk_root == "/srv"
    [message] = errors(settings)
    assert message.startswith("/etc/default/gandi:2: ")


def test_load_logs_each_problem(fs, caplog):
    fs.create_file("/etc/default/gandi", contents="NOPE=1\nCONFIG_ALLOW_MOUNT=maybe\n")
    with caplog.at_level(logging.INFO, logger="gandi"):
        config.load(Host(root="/"))
    assert [(r.levelno, r.getMessage().split(": ", 1)[0]) for r in caplog.records] == [
        (logging.WARNING, "/etc/default/gandi:1"), (logging.ERROR, "/etc/default/gandi:2")]
