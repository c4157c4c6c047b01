"""The ssh plugin: host keys generated only when missing, sshd hardened (drop-in or in place) and
rolled back when `sshd -T` rejects it or reports other values, and the platform's key in root's
authorized_keys on request. `sshd -T` is answered by fakesshd's model of OpenSSH's reader."""

from __future__ import annotations

import base64
import io
import os
import struct
from typing import List, Tuple

import fakesshd
import pytest
from fakeroot import snapshot
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.host import Host, Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, Context, ssh


def blob(kind: str, body: bytes = b"\x01" * 32) -> str:
    """A public key blob as OpenSSH encodes it: the algorithm name, then key material."""
    raw = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", len(body)) + body
    return base64.b64encode(raw).decode()


MGMT = f"ssh-ed25519 {blob('ssh-ed25519')} gandi-mgmt@platform"
MGMT_KEY = ("ssh-ed25519", blob("ssh-ed25519"))
OWNER_KEY = f"ssh-ed25519 {blob('ssh-ed25519', b'o' * 32)} alice@laptop"
OWNER_RSA = f"ssh-rsa {blob('ssh-rsa', b'r' * 64)} bob@desk"

DEBIAN_CONFIG = """\
# This is the sshd server system-wide configuration file.

Include /etc/ssh/sshd_config.d/*.conf

#PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
"""

OLD_CONFIG = """\
# owner's notes: keep X11 on
Port 2222
#PermitRootLogin prohibit-password
PermitRootLogin yes
X11Forwarding yes

# Example of overriding settings on a per-user basis
Match User anoncvs
\tX11Forwarding no
\tPermitRootLogin yes
"""

KEYS = [f"/etc/ssh/ssh_host_{kind}_key" for kind in ("rsa", "ecdsa", "ed25519")]


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def keygen(argv: List[str]) -> Result:
    """ssh-keygen: -y prints a public key; otherwise a key pair appears, as the real one makes it."""
    if "-y" in argv:
        return Result(argv, 0, stdout=OWNER_KEY.replace("alice@laptop", "root@derived") + "\n")
    path = argv[argv.index("-f") + 1]
    _write(path, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n", 0o600)
    _write(path + ".pub", f"ssh-ed25519 {blob('ssh-ed25519', os.urandom(32))}\n", 0o644)
    return Result(argv, 0)


def chmod(argv: List[str]) -> Result:
    os.chmod(argv[-1], int(argv[1], 8))
    return Result(argv, 0)


def chown(argv: List[str]) -> Result:
    os.chown(argv[-1], 0, 0)
    return Result(argv, 0)


def sshd_rejects(argv: List[str]) -> Result:
    return Result(argv, 255, stderr="/etc/ssh/sshd_config line 4: Bad configuration option: Nope\n")


def make_host(dry_run: bool = False, plan=None) -> FakeHost:
    host = FakeHost(dry_run=dry_run, plan=plan)
    host.handlers.update({"ssh-keygen": keygen, "chmod": chmod, "chown": chown,
                          "sshd": fakesshd.sshd})
    return host


@pytest.fixture
def debian(fs):
    """An sshd whose config includes sshd_config.d (Debian 12, Ubuntu 22.04+), no host keys yet."""
    _write("/usr/sbin/sshd", "ELF", 0o755)
    _write("/etc/ssh/sshd_config", DEBIAN_CONFIG)
    os.makedirs("/etc/ssh/sshd_config.d")
    _write("/etc/gandi/mgmt.pub", MGMT + "\n")
    os.makedirs("/root", mode=0o700)
    return make_host()


@pytest.fixture
def old(fs):
    """An sshd whose config has no Include (Debian 11, RHEL 8) and a Match block at the end."""
    _write("/usr/sbin/sshd", "ELF", 0o755)
    _write("/etc/ssh/sshd_config", OLD_CONFIG)
    _write("/etc/gandi/mgmt.pub", MGMT + "\n")
    os.makedirs("/root", mode=0o700)
    return make_host()


def apply(host: FakeHost, **settings) -> Tuple[object, Context]:
    settings.setdefault("sshmgmt", True)
    ctx = Context(host, Settings(**settings), name="ssh")
    return ssh.apply(ctx), ctx



def mode(path: str) -> int:
    return os.stat(path).st_mode & 0o7777


# -- fresh systems ---------------------------------------------------------------------------------
def test_fresh_debian_gets_keys_drop_in_and_the_management_key(debian):
    outcome, _ = apply(debian)

    assert outcome.state == CHANGED, outcome.detail
    generated = [argv for argv in debian.commands if argv[0] == "ssh-keygen"]
    assert [argv[argv.index("-t") + 1] for argv in generated] == ["rsa", "ecdsa", "ed25519"]
    assert generated[0][4:6] == ["-b", "3072"]
    assert all(argv[-2:] == ["-f", key] and ["-N", ""] == argv[argv.index("-N"):argv.index("-N") + 2]
               for argv, key in zip(generated, KEYS))
    assert all(mode(key) == 0o600 for key in KEYS)
    drop_in = _read("/etc/ssh/sshd_config.d/99-gandi.conf")
    assert drop_in.startswith("# ")
    assert drop_in.endswith("PermitRootLogin prohibit-password\nPermitEmptyPasswords no\n")
    assert _read("/etc/ssh/sshd_config") == DEBIAN_CONFIG
    assert ["sshd", "-T", "-f", "/etc/ssh/sshd_config"] in debian.commands
    assert mode("/root/.ssh") == 0o700
    assert _read("/root/.ssh/authorized_keys") == MGMT + "\n"
    assert mode("/root/.ssh/authorized_keys") == 0o600


def test_fresh_system_without_include_is_edited_in_place_above_the_match_block(old):
    outcome, _ = apply(old)

    assert outcome.state == CHANGED, outcome.detail
    assert _read("/etc/ssh/sshd_config") == OLD_CONFIG.replace(
        "PermitRootLogin yes\nX11Forwarding yes\n\n",
        "PermitRootLogin prohibit-password\nX11Forwarding yes\n\nPermitEmptyPasswords no\n")
    assert not os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")
    # The original is kept once, byte for byte.
    assert _read("/var/lib/gandi-vm/backup/etc/ssh/sshd_config") == OLD_CONFIG


def test_second_apply_changes_nothing_and_runs_nothing(debian):
    apply(debian)
    before = snapshot()
    debian.commands.clear()

    outcome, ctx = apply(debian)

    assert outcome.state == UNCHANGED, outcome.detail
    assert debian.commands == []
    assert snapshot() == before


def test_second_apply_of_an_in_place_edit_changes_nothing(old):
    apply(old)
    before = snapshot()
    old.commands.clear()

    outcome, _ = apply(old)

    assert outcome.state == UNCHANGED, outcome.detail
    assert old.commands == []
    assert snapshot() == before


def test_sshd_not_installed_is_skipped(fs):
    host = make_host()
    outcome, _ = apply(host)
    assert (outcome.state, outcome.detail) == (SKIPPED, "openssh-server not installed")
    assert host.commands == []


# -- host keys -------------------------------------------------------------------------------------
def test_existing_keys_are_never_regenerated(debian):
    for key in KEYS:
        _write(key, f"original {key}\n", 0o600)
        _write(key + ".pub", f"public {key}\n")

    outcome, _ = apply(debian, sshmgmt=False)

    assert outcome.state == CHANGED  # the drop-in
    assert "ssh-keygen" not in debian.programs()
    assert all(_read(key) == f"original {key}\n" for key in KEYS)


def test_a_lost_public_key_is_derived_and_a_readable_private_key_is_closed(debian):
    for key in KEYS:
        _write(key, f"original {key}\n", 0o600)
        _write(key + ".pub", f"public {key}\n")
    os.remove(KEYS[2] + ".pub")
    os.chmod(KEYS[0], 0o644)

    outcome, _ = apply(debian, sshmgmt=False)

    assert outcome.state == CHANGED, outcome.detail
    keygens = [argv for argv in debian.commands if argv[0] == "ssh-keygen"]
    assert keygens == [["ssh-keygen", "-y", "-f", KEYS[2]]]
    assert _read(KEYS[2] + ".pub").endswith("root@derived\n")
    assert mode(KEYS[2] + ".pub") == 0o644
    assert ["chmod", "600", KEYS[0]] in debian.commands
    assert all(mode(key) == 0o600 for key in KEYS)
    assert all(_read(key) == f"original {key}\n" for key in KEYS)


def test_ssh_keygen_missing_is_one_clear_failure_per_missing_key(debian):
    del debian.handlers["ssh-keygen"]  # FakeHost answers an unknown program with 127
    _write(KEYS[0], "rsa\n", 0o640)
    _write(KEYS[0] + ".pub", "rsa pub\n")
    _write(KEYS[1], "ecdsa\n", 0o600)
    _write(KEYS[1] + ".pub", "ecdsa pub\n")

    outcome, _ = apply(debian)

    assert outcome.state == FAILED
    assert outcome.detail.startswith("cannot generate /etc/ssh/ssh_host_ed25519_key: ssh-keygen not found")
    assert "rsa" not in outcome.detail and "ecdsa" not in outcome.detail
    # The other keys were still checked, and the rest of the plugin still ran.
    assert mode(KEYS[0]) == 0o600
    assert os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")
    assert _read("/root/.ssh/authorized_keys") == MGMT + "\n"


# -- hardening -------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", [
    "Include /etc/ssh/sshd_config.d/*.conf",
    "include sshd_config.d/*.conf",
    "  INCLUDE=/etc/ssh/sshd_config.d/*",
    'Include /etc/ssh/extra.conf "/etc/ssh/sshd_config.d/[0-9]*.conf"',
])
def test_an_include_covering_the_drop_in_directory_is_recognized(debian, line):
    _write("/etc/ssh/sshd_config", f"# top\n{line}\nPermitRootLogin yes\n")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED
    assert os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")
    assert _read("/etc/ssh/sshd_config") == f"# top\n{line}\nPermitRootLogin yes\n"


@pytest.mark.parametrize("line", [
    "#Include /etc/ssh/sshd_config.d/*.conf",
    "Include /etc/ssh/other.d/*.conf",
    "Include /etc/ssh/*.conf",  # a glob never crosses a '/'
    "Include /etc/ssh/sshd_config.d/*.cfg",
])
def test_an_include_that_does_not_cover_it_means_an_in_place_edit(debian, line):
    _write("/etc/ssh/sshd_config", f"PermitRootLogin yes\n{line}\n")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED
    assert not os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")
    assert _read("/etc/ssh/sshd_config") == \
        f"PermitRootLogin prohibit-password\n{line}\nPermitEmptyPasswords no\n"


def test_an_include_inside_a_match_block_applies_only_to_it(debian):
    block = "Match User backup\n  Include /etc/ssh/sshd_config.d/*.conf\n"
    _write("/etc/ssh/sshd_config", "PermitRootLogin yes\n" + block)
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED
    assert not os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")
    assert _read("/etc/ssh/sshd_config") == \
        "PermitRootLogin prohibit-password\nPermitEmptyPasswords no\n" + block


@pytest.mark.parametrize("before, after", [
    # already as wanted, whatever the case and separator: untouched
    ("permitrootlogin Prohibit-Password\nPermitEmptyPasswords=no\n",
     "permitrootlogin Prohibit-Password\nPermitEmptyPasswords=no\n"),
    # first active line replaced, indentation and CRLF kept, later duplicates left to sshd
    ("  PermitRootLogin=yes\r\nPermitRootLogin no\nPermitEmptyPasswords yes",
     "  PermitRootLogin prohibit-password\r\nPermitRootLogin no\nPermitEmptyPasswords no"),
    # no final newline: one is added before ours
    ("Port 22", "Port 22\nPermitRootLogin prohibit-password\nPermitEmptyPasswords no\n"),
    ("", "PermitRootLogin prohibit-password\nPermitEmptyPasswords no\n"),
    # a line inside a Match block is conditional: the global setting goes above the block
    ("Port 22\nMatch Address 10.0.0.0/8\n PermitRootLogin yes\n",
     "Port 22\nPermitRootLogin prohibit-password\nPermitEmptyPasswords no\n"
     "Match Address 10.0.0.0/8\n PermitRootLogin yes\n"),
])
def test_harden_in_place(before, after):
    assert ssh.harden_in_place(before, ssh.WANTED) == after


def test_owner_customizations_are_kept(old):
    _write("/root/.ssh/authorized_keys", f"# my keys\n{OWNER_KEY}\nfrom=\"10.0.0.1\" {OWNER_RSA}\n", 0o600)
    os.chmod("/root/.ssh", 0o700)

    outcome, _ = apply(old)

    assert outcome.state == CHANGED, outcome.detail
    config = _read("/etc/ssh/sshd_config")
    assert config.startswith("# owner's notes: keep X11 on\nPort 2222\n#PermitRootLogin prohibit-password\n")
    assert config.endswith("# Example of overriding settings on a per-user basis\nMatch User anoncvs\n"
                           "\tX11Forwarding no\n\tPermitRootLogin yes\n")
    assert _read("/root/.ssh/authorized_keys") == \
        f"# my keys\n{OWNER_KEY}\nfrom=\"10.0.0.1\" {OWNER_RSA}\n{MGMT}\n"


def test_the_owners_drop_ins_are_left_alone(debian):
    _write("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n")
    apply(debian, sshmgmt=False)
    assert sorted(os.listdir("/etc/ssh/sshd_config.d")) == ["50-cloud-init.conf", "99-gandi.conf"]
    assert _read("/etc/ssh/sshd_config.d/50-cloud-init.conf") == "PasswordAuthentication yes\n"


def test_rejected_in_place_edit_is_rolled_back_byte_for_byte(old):
    old.handlers["sshd"] = sshd_rejects
    before = open("/etc/ssh/sshd_config", "rb").read()

    outcome, _ = apply(old)

    assert outcome.state == FAILED
    assert outcome.detail == ("sshd -T rejected the hardened configuration: "
                              "/etc/ssh/sshd_config line 4: Bad configuration option: Nope; rolled back")
    assert open("/etc/ssh/sshd_config", "rb").read() == before
    assert mode("/etc/ssh/sshd_config") == 0o644


def test_rejected_drop_in_is_removed(debian):
    debian.handlers["sshd"] = sshd_rejects
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == FAILED
    assert outcome.detail.startswith("sshd -T rejected the hardened configuration: ")
    assert outcome.detail.endswith("; rolled back")
    assert os.listdir("/etc/ssh/sshd_config.d") == []
    assert _read("/etc/ssh/sshd_config") == DEBIAN_CONFIG


def test_rejected_drop_in_update_restores_the_previous_one(debian):
    _write("/etc/ssh/sshd_config.d/99-gandi.conf", "PermitRootLogin no\n")
    debian.handlers["sshd"] = sshd_rejects
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == FAILED
    assert _read("/etc/ssh/sshd_config.d/99-gandi.conf") == "PermitRootLogin no\n"


def test_missing_privilege_separation_directory_is_created_for_the_check(debian):
    """At boot we run before sshd.service, whose RuntimeDirectory= makes /run/sshd."""
    def sshd(argv):
        if not os.path.isdir("/run/sshd"):
            return Result(argv, 255, stderr="Missing privilege separation directory: /run/sshd\n")
        return fakesshd.sshd(argv)

    debian.handlers["sshd"] = sshd
    os.makedirs("/run")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED, outcome.detail
    assert os.path.isdir("/run/sshd")
    assert os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")


def test_without_the_sshd_binary_the_edit_is_kept_unvalidated(debian, caplog):
    os.remove("/usr/sbin/sshd")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED
    assert "sshd" not in debian.programs()
    assert "not validated" in caplog.text
    assert os.path.exists("/etc/ssh/sshd_config.d/99-gandi.conf")


# -- management key --------------------------------------------------------------------------------
@pytest.mark.parametrize("content, why", [
    (None, "no such file"),
    ("", "the file is empty"),
    ("\n  \n", "the file is empty"),
    (f"{MGMT}\n{OWNER_KEY}\n", "expected one public key line, found 2"),
    (f"ssh-dss {blob('ssh-dss')}\n", "expected 'TYPE BASE64 [comment]'"),
    ("ssh-ed25519\n", "expected 'TYPE BASE64 [comment]'"),
    ("ssh-ed25519 AAAA!!!!\n", "not valid base64"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE\n", "not valid base64"),  # length not a multiple of 4
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n", "not a ssh-ed25519 key"),  # the name, no key material
    (f"ssh-ed25519 {blob('ssh-rsa')}\n", "not a ssh-ed25519 key"),
    ('command="x" ' + MGMT + "\n", "expected 'TYPE BASE64 [comment]'"),
])
def test_an_invalid_management_key_is_refused_and_nothing_is_written(debian, content, why):
    if content is None:
        os.remove("/etc/gandi/mgmt.pub")
    else:
        _write("/etc/gandi/mgmt.pub", content)
    before = snapshot()

    outcome, _ = apply(debian)

    assert outcome.state == FAILED
    assert outcome.detail.startswith("CONFIG_SSHMGMT_KEY=/etc/gandi/mgmt.pub: ")
    assert why in outcome.detail
    assert debian.commands == []
    assert snapshot() == before


@pytest.mark.parametrize("kind", ssh.MGMT_KEY_TYPES)
def test_every_supported_key_type_is_accepted(debian, kind):
    _write("/etc/gandi/mgmt.pub", f"{kind} {blob(kind)}\n")
    outcome, _ = apply(debian)
    assert outcome.state == CHANGED, outcome.detail
    assert _read("/root/.ssh/authorized_keys") == f"{kind} {blob(kind)} gandi-vm management key\n"


def test_the_management_key_is_present_exactly_once(debian):
    os.makedirs("/root/.ssh", mode=0o755)
    os.chmod("/root/.ssh", 0o755)
    # Already there twice, once with options and another comment: the first one is kept.
    keys = f'{OWNER_KEY}\nno-pty,from="a b" {MGMT_KEY[0]} {MGMT_KEY[1]} old\n{OWNER_RSA}\n{MGMT}'
    _write("/root/.ssh/authorized_keys", keys, 0o644)

    outcome, _ = apply(debian)

    assert outcome.state == CHANGED, outcome.detail
    assert _read("/root/.ssh/authorized_keys") == \
        f'{OWNER_KEY}\nno-pty,from="a b" {MGMT_KEY[0]} {MGMT_KEY[1]} old\n{OWNER_RSA}\n'
    assert mode("/root/.ssh") == 0o700
    assert mode("/root/.ssh/authorized_keys") == 0o600


def test_a_file_without_final_newline_gets_one_before_ours(debian):
    _write("/root/.ssh/authorized_keys", OWNER_KEY, 0o600)
    os.chmod("/root/.ssh", 0o700)
    apply(debian)
    assert _read("/root/.ssh/authorized_keys") == f"{OWNER_KEY}\n{MGMT}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_ownership_is_given_back_to_root(debian):
    _write("/root/.ssh/authorized_keys", OWNER_KEY + "\n", 0o600)
    os.chown("/root/.ssh", 1000, 1000)
    os.chown("/root/.ssh/authorized_keys", 1000, 1000)
    os.chmod("/root/.ssh", 0o700)

    outcome, _ = apply(debian)

    assert outcome.state == CHANGED, outcome.detail
    assert ["chown", "root:root", "/root/.ssh"] in debian.commands
    assert ["chown", "root:root", "/root/.ssh/authorized_keys"] in debian.commands
    assert (os.stat("/root/.ssh/authorized_keys").st_uid, os.stat("/root/.ssh").st_uid) == (0, 0)


def test_sshmgmt_off_removes_only_our_key(debian):
    os.makedirs("/root/.ssh", mode=0o700)
    keys = (f"# keys\n{OWNER_KEY}\nrestrict {MGMT_KEY[0]} {MGMT_KEY[1]} renamed\n{OWNER_RSA}\n"
            f"{MGMT}\n{OWNER_KEY}\n")
    _write("/root/.ssh/authorized_keys", keys, 0o600)

    outcome, _ = apply(debian, sshmgmt=False)

    assert outcome.state == CHANGED
    assert _read("/root/.ssh/authorized_keys") == f"# keys\n{OWNER_KEY}\n{OWNER_RSA}\n{OWNER_KEY}\n"
    assert mode("/root/.ssh/authorized_keys") == 0o600


def test_sshmgmt_off_without_authorized_keys_creates_nothing(debian):
    apply(debian, sshmgmt=False)
    assert not os.path.exists("/root/.ssh")


# -- dry run ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("system", ["debian", "old"])
def test_dry_run_prints_a_diff_and_changes_no_byte(request, system):
    request.getfixturevalue(system)
    plan = io.StringIO()
    host = make_host(dry_run=True, plan=plan)
    host.show_diffs = True
    os.makedirs("/root/.ssh", mode=0o700)
    _write("/root/.ssh/authorized_keys", OWNER_KEY + "\n", 0o600)
    before = snapshot()

    outcome, _ = apply(host)

    assert outcome.state == CHANGED, outcome.detail
    assert snapshot() == before
    printed = plan.getvalue()
    assert "would run ssh-keygen -q -t rsa -b 3072 -N '' -C '' -f /etc/ssh/ssh_host_rsa_key" in printed
    assert "+PermitRootLogin prohibit-password\n" in printed
    assert f"+{MGMT}\n" in printed
    assert "sshd" not in host.programs()  # nothing was written, so there is nothing to validate


def test_a_symlinked_sshd_config_is_left_to_its_owner(debian):
    _write("/etc/ssh/managed/sshd_config", OLD_CONFIG)
    os.remove("/etc/ssh/sshd_config")
    os.symlink("managed/sshd_config", "/etc/ssh/sshd_config")

    outcome, _ = apply(debian, sshmgmt=False)

    assert outcome.state == FAILED
    assert outcome.detail == "/etc/ssh/sshd_config is not a regular file: hardening left to its owner"
    assert os.readlink("/etc/ssh/sshd_config") == "managed/sshd_config"
    assert _read("/etc/ssh/managed/sshd_config") == OLD_CONFIG


def test_sshmgmt_off_with_an_unusable_key_file_touches_nothing(debian):
    os.makedirs("/root/.ssh", mode=0o700)
    _write("/root/.ssh/authorized_keys", f"{MGMT}\n", 0o600)
    _write("/etc/gandi/mgmt.pub", "not a key\n")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == CHANGED  # host keys and drop-in; the disabled feature is no failure
    assert _read("/root/.ssh/authorized_keys") == f"{MGMT}\n"


# -- hostile input (issue 11) ----------------------------------------------------------------------
def test_a_directive_hidden_in_a_comment_by_u2028_is_not_the_one_edited(old):
    """sshd splits on "\\n" only: the line after U+2028 is part of the comment, and the active
    `PermitRootLogin yes` below is the one sshd uses."""
    config = "# note\u2028PermitRootLogin no\nPermitRootLogin yes\n"
    _write("/etc/ssh/sshd_config", config)

    outcome, _ = apply(old, sshmgmt=False)

    assert outcome.state == CHANGED, outcome.detail
    assert _read("/etc/ssh/sshd_config") == \
        "# note\u2028PermitRootLogin no\nPermitRootLogin prohibit-password\nPermitEmptyPasswords no\n"
    assert fakesshd.effective("/etc/ssh/sshd_config") == \
        {"permitrootlogin": "without-password", "permitemptypasswords": "no"}


@pytest.mark.parametrize("config, reported", [
    # sshd keeps the first value: a line above the Include wins over our drop-in
    ("PermitRootLogin yes\nInclude /etc/ssh/sshd_config.d/*.conf\n", "permitrootlogin yes"),
    # a Match all block overrides the global values for every connection
    ("Include /etc/ssh/sshd_config.d/*.conf\nMatch all\n  PermitEmptyPasswords yes\n",
     "permitemptypasswords yes"),
])
def test_an_ineffective_drop_in_is_removed_and_the_plugin_fails(debian, config, reported):
    _write("/etc/ssh/sshd_config", config)

    outcome, _ = apply(debian, sshmgmt=False)

    assert outcome.state == FAILED
    assert outcome.detail.startswith(f"sshd -T reports {reported} after the hardening")
    assert outcome.detail.endswith("; rolled back")
    assert os.listdir("/etc/ssh/sshd_config.d") == []
    assert _read("/etc/ssh/sshd_config") == config


def test_an_owners_earlier_drop_in_wins_and_the_plugin_says_so(debian):
    _write("/etc/ssh/sshd_config.d/50-owner.conf", "PermitRootLogin yes\n")
    outcome, _ = apply(debian, sshmgmt=False)
    assert outcome.state == FAILED
    assert outcome.detail.startswith("sshd -T reports permitrootlogin yes after the hardening")
    assert sorted(os.listdir("/etc/ssh/sshd_config.d")) == ["50-owner.conf"]


def test_an_in_place_edit_overridden_by_an_include_is_rolled_back(old):
    _write("/etc/ssh/other.conf", "PermitRootLogin yes\n")
    config = "Include /etc/ssh/other.conf\nPermitRootLogin no\n"
    _write("/etc/ssh/sshd_config", config)

    outcome, _ = apply(old, sshmgmt=False)

    assert outcome.state == FAILED
    assert "sshd -T reports permitrootlogin yes" in outcome.detail
    assert _read("/etc/ssh/sshd_config") == config


def test_an_sshd_config_with_a_nul_byte_is_left_alone(old):
    # sshd drops the rest of a line from a NUL on, newline included: the next line is glued on.
    config = "#x\0\nPermitRootLogin yes\n"
    _write("/etc/ssh/sshd_config", config)
    outcome, _ = apply(old, sshmgmt=False)
    assert (outcome.state, outcome.detail) == \
        (FAILED, "/etc/ssh/sshd_config holds a NUL byte: hardening left to its owner")
    assert _read("/etc/ssh/sshd_config") == config


@pytest.mark.parametrize("line", [
    "PermitRootLogin yes",
    '"PermitRootLogin" yes',
    "=PermitRootLogin yes",
    "PermitRootLogin=\"yes\"",
    "\tPermitRootLogin\r=\tyes\f",
])
def test_the_keyword_is_found_as_sshd_tokenizes_it(line):
    edited = ssh.harden_in_place(line + "\n", ssh.WANTED)
    assert edited.startswith("PermitRootLogin prohibit-password\n") or \
        edited.startswith("\tPermitRootLogin prohibit-password\n")


@pytest.mark.parametrize("keys, expected", [
    # the line after U+2028 is part of a comment for sshd: the key is not there yet
    (f"# was: \u2028{MGMT}\n", f"# was: \u2028{MGMT}\n{MGMT}\n"),
    (f"{OWNER_KEY}\r\n{MGMT}\r\n", f"{OWNER_KEY}\r\n{MGMT}\r\n"),  # CRLF: sshd still reads it
    (f'command="echo \\"a b\\"",no-pty {MGMT}\n', f'command="echo \\"a b\\"",no-pty {MGMT}\n'),
    (f"{MGMT}\0junk\n", f"{MGMT}\0junk\n"),  # sshd reads the line up to the NUL
    (f"\0{MGMT}\n", f"\0{MGMT}\n{MGMT}\n"),  # ...which leaves nothing of this one
    ("x" * 100000 + "\n", "x" * 100000 + f"\n{MGMT}\n"),
    (f'from="a {MGMT}\n', f'from="a {MGMT}\n{MGMT}\n'),  # unterminated quote: sshd reads no key
])
def test_the_management_key_is_found_as_sshd_reads_the_line(keys, expected):
    assert ssh.with_key(keys, MGMT_KEY, MGMT + "\n") == expected


def test_sshmgmt_off_never_glues_an_owner_key_onto_a_comment(debian):
    """splitlines() split the comment at U+2028, removed its second half, and glued the owner's
    key line onto the first half: a comment, so the owner was locked out."""
    os.makedirs("/root/.ssh", mode=0o700)
    keys = f"# old platform key:\u2028{MGMT}\n{OWNER_KEY}\n"
    _write("/root/.ssh/authorized_keys", keys, 0o600)

    apply(debian, sshmgmt=False)

    assert _read("/root/.ssh/authorized_keys") == keys


def test_a_key_file_comment_that_is_not_plain_text_is_replaced(debian):
    _write("/etc/gandi/mgmt.pub", f"{MGMT_KEY[0]} {MGMT_KEY[1]} gandi\x1bnote\x85\n")
    outcome, _ = apply(debian)
    assert outcome.state == CHANGED, outcome.detail
    assert _read("/root/.ssh/authorized_keys") == f"{MGMT_KEY[0]} {MGMT_KEY[1]} gandi-vm management key\n"


# -- the real sshd, when this machine has one ------------------------------------------------------
# GANDI_TEST_SSHD names another sshd to run (a wrapper around an extracted package, say); sshd -T
# also needs its privilege separation user and directory, which an installed package provides.
REAL_SSHD = os.environ.get("GANDI_TEST_SSHD", "/usr/sbin/sshd")


class RealSshdHost(FakeHost):
    """A Host over a temporary root whose `sshd` is the real one; other programs are refused."""

    def __init__(self, root: str):
        super().__init__(root)
        self.handlers["sshd"] = lambda argv: Host.run(self, [REAL_SSHD, *argv[1:]], timeout=30,
                                                      changes=False)


def real_root(tmp_path, config: str) -> RealSshdHost:
    for directory in ("etc/ssh", "usr/sbin"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "usr/sbin/sshd").write_text("")
    host_key = tmp_path / "hostkey"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (tmp_path / "etc/ssh/sshd_config").write_bytes(f"HostKey {host_key}\n{config}".encode())
    host = RealSshdHost(str(tmp_path))
    probe = Host.run(host, [REAL_SSHD, "-T", "-f", host.path("/etc/ssh/sshd_config")], timeout=30,
                     changes=False)
    if not probe.ok:
        pytest.skip(f"{REAL_SSHD} -T cannot run here: {probe.why()}")
    return host


needs_sshd = pytest.mark.skipif(not os.access(REAL_SSHD, os.X_OK), reason=f"no {REAL_SSHD}")


@needs_sshd
def test_real_sshd_uses_the_hardened_value_after_a_u2028_comment(tmp_path):
    host = real_root(tmp_path, "# note\u2028PermitRootLogin no\nPermitRootLogin yes\n")

    outcome = ssh._harden(Context(host, Settings(sshmgmt=False), name="ssh"))

    assert outcome == []
    dump = Host.run(host, [REAL_SSHD, "-T", "-f", host.path("/etc/ssh/sshd_config")], timeout=30,
                    changes=False).stdout
    assert "permitrootlogin without-password" in dump.splitlines()
    assert "permitemptypasswords no" in dump.splitlines()


@needs_sshd
def test_real_sshd_match_all_makes_the_hardening_fail_and_roll_back(tmp_path):
    config = "PermitRootLogin no\nMatch all\n  PermitRootLogin yes\n"
    host = real_root(tmp_path, config)
    before = (tmp_path / "etc/ssh/sshd_config").read_bytes()

    failures = ssh._harden(Context(host, Settings(sshmgmt=False), name="ssh"))

    assert len(failures) == 1 and failures[0].startswith("sshd -T reports permitrootlogin yes")
    assert (tmp_path / "etc/ssh/sshd_config").read_bytes() == before
