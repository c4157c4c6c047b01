"""First-boot provisioning: gandi/config and config-2 documents read as hostile, applied once per
instance through the Host, /gandi/init by its own #!, the postboot marker, the record."""

from __future__ import annotations

import base64
import json
import logging
import os
import struct
from gandi_vm.record import replace
from typing import List, Optional

import pytest
from fakeroot import context, put, read
from fakesys import FakeHost

from gandi_vm import openstack, provision, record, runner
from gandi_vm.config import Settings
from gandi_vm.host import Host, Result
from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, hostname, timezone


def key(kind: str = "ssh-ed25519", seed: int = 1, comment: str = "") -> str:
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes([seed]) * 32
    line = f"{kind} {base64.b64encode(blob).decode()}"
    return f"{line} {comment}" if comment else line


SHA512 = "$6$saltsalt$" + "a" * 86
YESCRYPT = "$y$j9T$salt$" + "b" * 43
TZIF = "TZif2\0\0\0 zone\n"
SETTINGS = Settings()
DRIVE = "/var/lib/gandi-vm/drive.abcd1234"


class ProvisionHost(FakeHost):
    """FakeHost with useradd/usermod/chpasswd/chown simulated on the fake /etc files, and the
    standard input of each command kept (it must never be anywhere else)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs: List[Optional[str]] = []
        self.handlers.update(useradd=self._useradd, usermod=self._ok, chpasswd=self._ok,
                             chown=self._ok, visudo=self._ok, hostname=self._ok)

    def run(self, argv, timeout, changes=True, input=None, lingering=False):
        if not (changes and self.dry_run):
            self.inputs.append(input)
        return super().run(argv, timeout, changes, lingering=lingering)

    def _ok(self, argv):
        return Result(argv, 0)

    def _useradd(self, argv):
        name = argv[-1]
        uid = 1000 + sum(1 for line in read("/etc/passwd").splitlines()
                         if int(line.split(":")[2]) >= 1000)
        with open("/etc/passwd", "a", encoding="utf-8") as f:
            f.write(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n")
        os.makedirs(f"/home/{name}", exist_ok=True)
        return Result(argv, 0)


@pytest.fixture
def guest(fs):
    put("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
        "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nowner:x:1000:1000::/home/owner:/bin/sh\n")
    put("/etc/group", "root:x:0:\nsudo:x:27:\nadm:x:4:\nusers:x:100:\n")
    put("/etc/shells", "# /etc/shells\n/bin/sh\n/bin/bash\n")
    put("/etc/hostname", "debian\n")
    put("/etc/hosts", "127.0.0.1\tlocalhost\n")
    put("/usr/share/zoneinfo/Europe/Paris", TZIF)
    put("/usr/share/zoneinfo/Asia/Tokyo", TZIF)
    put("/proc/cmdline", "root=/dev/vda1\n")
    put("/proc/sys/kernel/hostname", "debian\n")
    os.makedirs("/run", exist_ok=True)
    os.makedirs("/root", exist_ok=True)
    os.makedirs("/home/owner", exist_ok=True)
    return fs


def drive(document, init: Optional[str] = None, init_mode: int = 0o755) -> None:
    """A platform drive as configdrive leaves it: /gandi -> var/lib/gandi-vm/drive.XXXX."""
    data = document if isinstance(document, str) else json.dumps(document)
    put(f"{DRIVE}/config", data, mode=0o600)
    if init is not None:
        put(f"{DRIVE}/init", init, mode=init_mode)
    if not os.path.lexists("/gandi"):
        os.symlink(DRIVE.lstrip("/"), "/gandi")


def facts(**kwargs) -> provision.Facts:
    base = provision.Facts(accounts={"root": provision.Account(0, 0, "/root"),
                                     "daemon": provision.Account(1, 1, "/usr/sbin"),
                                     "owner": provision.Account(1000, 1000, "/home/owner")},
                           groups={"sudo", "adm", "users"}, shells={"/bin/sh", "/bin/bash"},
                           zone_problem=lambda z: None if z == "Europe/Paris" else "no such zone")
    return replace(base, **kwargs)


DOCUMENT = {
    "instance_id": "i-1",
    "hostname": "web1.example.com",
    "timezone": "Europe/Paris",
    "root": {"password_hash": SHA512, "ssh_authorized_keys": [key(seed=1, comment="root@x")]},
    "users": [{"name": "alice", "password_hash": YESCRYPT, "sudo": True, "groups": ["adm"],
               "shell": "/bin/bash", "ssh_authorized_keys": [key(seed=2), key(seed=2), key(seed=3)]}],
    "vif": [{"pna": []}], "vm_conf": {"password": "x"},  # the platform's own keys: left to init
}


# -- parsing ---------------------------------------------------------------------------------------
def test_a_valid_document_is_taken_whole_and_the_platforms_own_keys_are_left_alone():
    request = provision.parse_gandi(json.dumps(DOCUMENT).encode(), facts())
    assert request.problems == []
    assert (request.instance_id, request.hostname, request.timezone) == \
        ("i-1", "web1.example.com", "Europe/Paris")
    root, alice = request.users
    assert (root.name, root.password_hash, root.keys) == ("root", SHA512, [key(seed=1, comment="root@x")])
    assert (alice.name, alice.sudo, alice.groups, alice.shell, alice.create) == \
        ("alice", True, ["adm"], "/bin/bash", True)
    assert alice.keys == [key(seed=2), key(seed=3)]  # each key once


def test_invalid_values_are_reported_with_their_path_and_the_rest_applies():
    document = {"instance_id": "i-2", "hostname": "not a name", "timezone": "Mars/Base",
                "users": [{"name": "bob"}, {"name": "Bad!"}, {"name": "daemon"}, "x",
                          {"name": "carol", "password_hash": "hunter2", "shell": "/bin/zsh",
                           "groups": ["adm", "nosuch", 5], "sudo": "yes",
                           "ssh_authorized_keys": ["ssh-rsa AAAA", key(seed=4) + "\nssh-rsa x",
                                                   'command="x" ' + key(seed=5), key(seed=6)],
                           "colour": 1},
                          {"name": "bob"}, {"name": "root"}]}
    request = provision.parse_gandi(json.dumps(document).encode(), facts())
    assert request.problems == [
        "hostname: not a valid RFC 1123 host name",
        "timezone: 'Mars/Base': no such zone",
        "users[1].name: not a valid user name",
        "users[2].name: daemon is a system account (uid 1), not changed",
        "users[3]: not an object",
        "users[4].'colour': unknown key, ignored",
        "users[4].password_hash: not a crypt(3) hash ($1$, $5$, $6$, $y$, $gy$, $2b$, $7$); a plain "
        "password is never taken",
        "users[4].ssh_authorized_keys[0]: not a public key line (type base64 [comment])",
        "users[4].ssh_authorized_keys[1]: not a public key line (type base64 [comment])",
        "users[4].ssh_authorized_keys[2]: not a public key line (type base64 [comment])",
        "users[4].sudo: not true or false",
        "users[4].groups[1]: no group nosuch on this system, skipped",
        "users[4].groups[2]: not a valid group name",
        "users[4].shell: not an absolute path listed in /etc/shells",
        "users[5].name: bob is listed twice, skipped here",
        "users[6].name: root is set with the root key, not in users",
    ]
    assert [u.name for u in request.users] == ["bob", "carol"]
    carol = request.users[1]
    assert (carol.password_hash, carol.keys, carol.groups, carol.shell, carol.sudo) == \
        (None, [key(seed=6)], ["adm"], None, False)
    assert request.hostname is None and request.timezone is None


@pytest.mark.parametrize("data, problem", [
    (b"", "empty, nothing to apply"),
    (b"  \n", "empty, nothing to apply"),
    (b"\xff{}", "not UTF-8 (byte 0)"),
    (b"[1]", "not a JSON object"),
    (b"{", "not JSON: 'Expecting property name enclosed in double quotes: line 1 column 2 (char 1)'"),
    (b"[" * 100000, None),
    (b" " * (provision.MAX_DOCUMENT + 1), f"larger than {provision.MAX_DOCUMENT} bytes, not read"),
])
def test_an_unreadable_document_is_one_line_naming_the_file(data, problem):
    with pytest.raises(provision.ProvisionError) as raised:
        provision.parse_gandi(data, facts())
    message = str(raised.value)
    assert message.startswith("/gandi/config: ") and "\n" not in message
    if problem:
        assert message == f"/gandi/config: {problem}"


@pytest.mark.parametrize("value", [SHA512, YESCRYPT, "$1$abc$" + "c" * 22, "$5$rounds=5000$s$" + "d" * 43,
                                   "$2b$12$" + "e" * 53, "$gy$j9T$s$" + "f" * 43])
def test_crypt_hashes_are_taken(value):
    request = provision.parse_gandi(json.dumps({"root": {"password_hash": value}}).encode(), facts())
    assert request.users[0].password_hash == value and request.problems == []


@pytest.mark.parametrize("value", ["hunter2", "$6$hunter2", "$6$salt$short", "$9$x$" + "a" * 86,
                                   SHA512 + "\n", SHA512 + ":0:", "!", "*", "", 6, ["x"]])
def test_anything_else_is_refused_and_never_quoted(value):
    request = provision.parse_gandi(json.dumps({"root": {"password_hash": value}}).encode(), facts())
    assert request.users == []
    assert request.problems == ["root.password_hash: not a crypt(3) hash ($1$, $5$, $6$, $y$, $gy$, "
                                "$2b$, $7$); a plain password is never taken"]


def test_instance_ids():
    def instance(value):
        return provision.parse_gandi(json.dumps({"instance_id": value}).encode(), facts())

    assert instance(42).instance_id == "42"
    assert instance("3f2a-b").instance_id == "3f2a-b"
    for bad in (True, "", "a b", "x" * 129, ["i"], "é"):
        assert instance(bad).instance_id is None
        assert instance(bad).problems == ["instance_id: not a valid instance id (1 to 128 printable "
                                          "ASCII characters, no space)"]


def test_the_plan_shows_no_hash_and_one_line_per_key():
    request = provision.parse_gandi(json.dumps(DOCUMENT).encode(), facts())
    steps = provision.plan(request, facts())
    assert steps[:3] == ["instance i-1 from /gandi/config", "hostname: set to web1.example.com",
                         "timezone: set to Europe/Paris"]
    assert "user alice: create (shell /bin/bash, groups adm,sudo)" in steps
    assert "user alice: set the password (crypt hash, not shown)" in steps
    assert sum("authorize ssh-ed25519" in step for step in steps) == 3
    assert not any(SHA512 in s or YESCRYPT in s or "\n" in s for s in steps)
    # A repr lands in tracebacks and debug lines: it hides the hash too.
    shown = repr(request)
    assert SHA512 not in shown and YESCRYPT not in shown and "password_hash='<hidden>'" in shown
    assert "password_hash=None" in repr(provision.User("users[0]", "bob"))


def test_openstack_meta_data():
    meta = {"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "vm1.novalocal",
            "public_keys": {"mykey": key(seed=7, comment="me"), "bad": "nope"}, "name": "vm1"}
    request = provision.parse_openstack(json.dumps(meta).encode(), facts())
    assert request.instance_id == "83679162-1378-4288-a2d4-70e13ec132aa"
    assert request.hostname == "vm1.novalocal"
    assert [(u.name, u.keys, u.create) for u in request.users] == \
        [("root", [key(seed=7, comment="me")], False)]
    assert request.problems == ['public_keys["bad"]: not a public key line (type base64 [comment])']
    to_user = provision.parse_openstack(json.dumps(meta).encode(), facts(), provision_user="admin")
    assert [(u.name, u.create) for u in to_user.users] == [("admin", True)]
    system = provision.parse_openstack(json.dumps(meta).encode(), facts(), provision_user="daemon")
    assert system.users == [] and "system account" in system.problems[-1]


# -- applying ----------------------------------------------------------------------------------
def test_first_boot_applies_everything_once_and_records_it(guest, caplog):
    drive(DOCUMENT)
    host = ProvisionHost()
    with caplog.at_level(logging.DEBUG, logger="gandi"):
        outcome = provision.run(host, SETTINGS)
    assert outcome.state == CHANGED, outcome.detail
    assert [c for c in host.commands if c[0] == "useradd"] == \
        [["useradd", "-m", "-s", "/bin/bash", "-G", "adm,sudo", "--", "alice"]]
    chpasswd = [i for c, i in zip(host.commands, host.inputs) if c[0] == "chpasswd"]
    assert chpasswd == [f"root:{SHA512}\n", f"alice:{YESCRYPT}\n"]
    assert read("/etc/hostname") == "web1\n"
    assert "127.0.1.1\tweb1.example.com web1" in read("/etc/hosts")
    assert os.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert read("/root/.ssh/authorized_keys") == key(seed=1, comment="root@x") + "\n"
    assert read("/home/alice/.ssh/authorized_keys") == f"{key(seed=2)}\n{key(seed=3)}\n"
    assert os.stat("/home/alice/.ssh").st_mode & 0o777 == 0o700
    assert os.stat("/home/alice/.ssh/authorized_keys").st_mode & 0o777 == 0o600
    record = json.loads(read(provision.RECORD))
    assert (record["source"], record["instance_id"], record["set"], record["skipped"]) == \
        ("gandi", "i-1", {"hostname": "web1.example.com", "timezone": "Europe/Paris"}, [])
    assert os.stat(provision.RECORD).st_mode & 0o777 == 0o600
    assert provision.status(host)["instance_id"] == "i-1"
    everything = caplog.text + read(provision.RECORD) + repr(host.commands)
    assert SHA512 not in everything and YESCRYPT not in everything

    # The owner's own changes stay: the same instance applies nothing again.
    put("/root/.ssh/authorized_keys", "")
    put("/etc/hostname", "renamed\n")
    again = ProvisionHost()
    assert provision.run(again, SETTINGS).state == UNCHANGED
    assert again.commands == [] and read("/root/.ssh/authorized_keys") == ""
    assert read("/etc/hostname") == "renamed\n"


def test_a_new_instance_id_applies_again(guest):
    drive(DOCUMENT)
    provision.run(ProvisionHost(), SETTINGS)
    put("/root/.ssh/authorized_keys", "")
    put(f"{DRIVE}/config", json.dumps({**DOCUMENT, "instance_id": "i-clone"}))
    host = ProvisionHost()
    assert provision.run(host, SETTINGS).state == CHANGED
    assert read("/root/.ssh/authorized_keys") == key(seed=1, comment="root@x") + "\n"
    # alice exists now: updated, not created again
    assert ["usermod", "-s", "/bin/bash", "--", "alice"] in host.commands
    assert ["usermod", "-a", "-G", "adm,sudo", "--", "alice"] in host.commands
    assert not any(c[0] == "useradd" for c in host.commands)


def test_without_an_instance_id_nothing_is_applied(guest, caplog):
    drive({"hostname": "web1", "users": [{"name": "alice"}]})
    host = ProvisionHost()
    with caplog.at_level(logging.INFO, logger="gandi"):
        outcome = provision.run(host, SETTINGS)
    assert host.commands == [] and read("/etc/hostname") == "debian\n"
    assert outcome.state == UNCHANGED
    assert "/gandi/config: no instance id, nothing applied" in caplog.text


def test_an_empty_config_is_said_and_changes_nothing(guest, caplog):
    drive("")
    with caplog.at_level(logging.INFO, logger="gandi"):
        provision.run(ProvisionHost(), SETTINGS)
    assert "provision: /gandi/config: empty, nothing to apply" in caplog.text
    assert not os.path.exists(provision.RECORD)


def test_a_gandi_directory_not_made_by_gandi_vm_is_not_used(guest, caplog):
    put("/gandi/config", json.dumps(DOCUMENT))
    host = ProvisionHost()
    with caplog.at_level(logging.INFO, logger="gandi"):
        outcome = provision.run(host, SETTINGS)
    assert outcome.state == SKIPPED and host.commands[0][0] == "blkid"
    assert "was not made by gandi-vm" in caplog.text


def test_provisioning_off(guest):
    drive(DOCUMENT)
    host = ProvisionHost()
    assert provision.run(host, record.replace(SETTINGS, provision=False)).state == SKIPPED
    assert host.commands == []


def test_a_failing_command_is_reported_recorded_and_the_rest_still_applies(guest):
    drive(DOCUMENT)
    host = ProvisionHost()
    host.handlers["useradd"] = lambda argv: Result(argv, 9, stderr="useradd: group 'x' does not exist")
    outcome = provision.run(host, SETTINGS)
    assert outcome.state == FAILED
    assert "users[0]: useradd alice failed: useradd: group 'x' does not exist" in outcome.detail
    assert read("/root/.ssh/authorized_keys")  # root was still done
    assert json.loads(read(provision.RECORD))["skipped"] == [
        "users[0]: useradd alice failed: useradd: group 'x' does not exist"]


def test_keys_are_not_written_through_a_link(guest):
    drive({"instance_id": "i-1", "users": [{"name": "owner", "ssh_authorized_keys": [key()]}]})
    os.symlink("/etc", "/home/owner/.ssh")
    outcome = provision.run(ProvisionHost(), SETTINGS)
    assert outcome.state == FAILED and "not a directory (a link?)" in outcome.detail
    assert not os.path.exists("/etc/authorized_keys")


def test_sudo_without_a_group_uses_a_checked_drop_in(guest):
    put("/etc/group", "root:x:0:\nadm:x:4:\n")
    os.makedirs("/etc/sudoers.d")
    put("/usr/sbin/visudo", "", mode=0o755)
    drive({"instance_id": "i-1", "users": [{"name": "alice", "sudo": True}]})
    host = ProvisionHost()
    provision.run(host, SETTINGS)
    assert read("/etc/sudoers.d/90-gandi-alice").endswith("alice ALL=(ALL:ALL) ALL\n")
    assert os.stat("/etc/sudoers.d/90-gandi-alice").st_mode & 0o777 == 0o440
    assert host.commands[-1][:3] == ["visudo", "-c", "-f"]


def test_a_dry_run_plans_and_changes_nothing(guest, capsys, caplog):
    drive(DOCUMENT)
    host = ProvisionHost(dry_run=True)
    with caplog.at_level(logging.INFO, logger="gandi"):
        provision.run(host, SETTINGS)
    out = capsys.readouterr().out
    assert "would run useradd -m -s /bin/bash -G adm,sudo -- alice" in out
    assert "would run chpasswd -e" in out
    assert "(dry run) provision: user alice: set the password (crypt hash, not shown)" in caplog.text
    assert not os.path.exists(provision.RECORD) and read("/etc/hostname") == "debian\n"
    assert SHA512 not in out + caplog.text and YESCRYPT not in out + caplog.text


def test_boot_plugins_leave_what_the_instance_set(guest):
    drive(DOCUMENT)
    provision.run(ProvisionHost(), SETTINGS)
    put("/proc/cmdline", "hostname=other\n")
    outcome = hostname.apply(context(FakeHost()))
    assert outcome.state == SKIPPED and "set by the instance's configuration" in outcome.detail
    outcome = timezone.apply(context(FakeHost(), timezone_name="Asia/Tokyo"))
    assert outcome.state == SKIPPED
    assert os.readlink("/etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"


# -- /gandi/init -------------------------------------------------------------------------------
def test_init_runs_by_its_own_interpreter_once_per_instance_and_asks_for_postboot(guest, caplog):
    drive(DOCUMENT, init="#!/bin/sh\necho hi\n")
    host = ProvisionHost()
    host.handlers[f"{DRIVE}/init"] = host.handlers["/gandi/init"] = \
        lambda argv: Result(argv, 0, stdout="configured\x1b[31m\nline two\n")
    with caplog.at_level(logging.INFO, logger="gandi"):
        provision.run(host, SETTINGS)
    assert ["/gandi/init"] in host.lingering  # the file itself: its #! decides, not us; a daemon
    # it starts may keep its output open: the wait ends when it exits
    assert "/gandi/init: configured\\x1b[31m" in caplog.text and "/gandi/init: line two" in caplog.text
    assert read(provision.POSTBOOT_MARKER) == "i-1\n"
    script = json.loads(read(provision.RECORD))["script"]
    assert (script["instance"], script["result"]) == ("i-1", "exit 0")
    os.unlink(provision.POSTBOOT_MARKER)  # gandi-postboot.service's ExecStopPost
    again = ProvisionHost()
    provision.run(again, SETTINGS)
    assert again.commands == [] and not os.path.exists(provision.POSTBOOT_MARKER)


@pytest.mark.parametrize("init, mode, why", [
    ("echo no interpreter line\n", 0o755, "does not start with #!"),
    ("#!/bin/sh\n", 0o644, "is not executable"),
])
def test_an_init_that_cannot_run_by_itself_is_not_run(guest, caplog, init, mode, why):
    drive(DOCUMENT, init=init, init_mode=mode)
    host = ProvisionHost()
    with caplog.at_level(logging.INFO, logger="gandi"):
        provision.run(host, SETTINGS)
    assert ["/gandi/init"] not in host.commands and why in caplog.text
    assert not os.path.exists(provision.POSTBOOT_MARKER)


def test_init_timeout_and_failure_are_recorded_and_not_retried(guest):
    drive({"vif": []}, init="#!/bin/sh\nsleep 1000\n")  # a historic document: no instance id
    host = ProvisionHost()
    host.handlers["/gandi/init"] = lambda argv: Result(argv, 124, stderr="init: timed out after 600s")
    outcome = provision.run(host, SETTINGS)
    assert outcome.state == FAILED and "timed out" in outcome.detail
    script = json.loads(read(provision.RECORD))["script"]
    assert script["instance"].startswith("sha256:") and "timed out" in script["result"]
    again = ProvisionHost()
    provision.run(again, SETTINGS)
    assert again.commands == []  # same drive, same instance: not run at every boot


# -- config-2 ----------------------------------------------------------------------------------
class Config2Host(ProvisionHost):
    """A config-2 drive: mount copies `files` into the mountpoint, umount empties it."""

    def __init__(self, files, **kwargs):
        super().__init__(**kwargs)
        self.files = files
        self.handlers.update(mount=self._mount2, umount=self._umount2)

    def _mount2(self, argv):
        for name, data in self.files.items():
            put(f"{argv[-1]}/{name}", data)
        return Result(argv, 0)

    def _umount2(self, argv):
        import shutil

        for entry in os.listdir(argv[-1]):
            shutil.rmtree(os.path.join(argv[-1], entry))
        return Result(argv, 0)


META = {"uuid": "u-1", "hostname": "vm1", "public_keys": {"k": key(seed=9, comment="me")}}


def test_config2_is_mounted_privately_read_only_applied_and_unmounted(guest):
    put("/dev/sr0", "")
    os.makedirs("/dev/disk/by-label")
    os.symlink("../../sr0", "/dev/disk/by-label/config-2")
    host = Config2Host({openstack.META_DATA: json.dumps(META),
                        openstack.USER_DATA: "#!/bin/sh\necho user data\n"})
    host.handlers[openstack.USER_SCRIPT] = lambda argv: Result(argv, 0, stdout="ran\n")
    outcome = provision.run(host, SETTINGS)
    assert outcome.state == CHANGED, outcome.detail
    mount = next(c for c in host.commands if c[0] == "mount")
    assert mount == ["mount", "-t", "iso9660,vfat", "-o", "ro,nosuid,nodev,noexec", "/dev/sr0",
                     "/run/gandi/config-2"]
    assert ["umount", "/run/gandi/config-2"] in host.commands
    assert not os.path.exists("/run/gandi/config-2")
    assert read("/root/.ssh/authorized_keys") == key(seed=9, comment="me") + "\n"
    assert read("/etc/hostname") == "vm1\n"
    assert [openstack.USER_SCRIPT] in host.commands
    # (its mode, 0700, is checked by the integration test: pyfakefs's os.open with O_NOFOLLOW,
    # which read_bounded uses, resets a fake file's mode to 0755)
    record = json.loads(read(provision.RECORD))
    assert (record["source"], record["instance_id"], record["script"]["result"]) == \
        ("config-2", "u-1", "exit 0")
    assert not os.path.exists(provision.POSTBOOT_MARKER)  # user_data has no postboot
    again = Config2Host({openstack.META_DATA: json.dumps(META),
                         openstack.USER_DATA: "#!/bin/sh\necho user data\n"})
    provision.run(again, SETTINGS)
    assert [openstack.USER_SCRIPT] not in again.commands


def test_config2_found_by_blkid_public_keys_to_the_provision_user(guest, caplog):
    host = Config2Host({openstack.META_DATA: json.dumps(META), openstack.USER_DATA: "#cloud-config\n"})
    host.handlers["blkid"] = lambda argv: Result(argv, 0, "/dev/vdc\n") if "LABEL=config-2" in argv \
        else Result(argv, 2)
    os.makedirs("/etc/sudoers.d")
    with caplog.at_level(logging.INFO, logger="gandi"):
        provision.run(host, record.replace(SETTINGS, provision_user="admin"))
    assert ["useradd", "-m", "--", "admin"] in host.commands
    assert read("/home/admin/.ssh/authorized_keys") == key(seed=9, comment="me") + "\n"
    # root got no key: the provision user's key is the only way in, so it may become root
    assert read("/etc/sudoers.d/90-gandi-admin").endswith("admin ALL=(ALL:ALL) NOPASSWD:ALL\n")
    assert "user_data ignored (cloud-config)" in caplog.text


def test_config2_is_unmounted_even_when_reading_fails(guest, monkeypatch):
    put("/dev/sr0", "")
    os.makedirs("/dev/disk/by-label")
    os.symlink("../../sr0", "/dev/disk/by-label/config-2")
    host = Config2Host({openstack.META_DATA: "{}"})

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(openstack, "read_drive", broken)
    with pytest.raises(RuntimeError):
        provision.run(host, SETTINGS)
    assert ["umount", "/run/gandi/config-2"] in host.commands


def test_config2_links_on_the_drive_are_not_followed(guest):
    put("/secret", "{}")
    os.makedirs("/run/gandi/x/openstack/latest")
    os.symlink("/secret", "/run/gandi/x/openstack/latest/meta_data.json")
    meta, user, problems = openstack.read_drive(FakeHost(), "/run/gandi/x")
    assert meta is None and problems == ["config-2 openstack/latest/meta_data.json: not a regular "
                                         "file (a link?), not read"]


# -- where it runs -------------------------------------------------------------------------------
def test_config_apply_provisions_before_the_plugins(guest, monkeypatch):
    drive(DOCUMENT)
    order = []
    monkeypatch.setattr(runner, "modules", lambda: [])
    monkeypatch.setattr(runner, "_run_local", lambda host, settings: [])
    real = provision.run
    monkeypatch.setattr(provision, "run",
                        lambda host, settings: order.append("provision") or real(host, settings))
    ran = runner.apply(ProvisionHost(), SETTINGS)
    assert [r.name for r in ran] == ["swap", "provision"] and order == ["provision"]
    assert ran[1].outcome.state == CHANGED


def test_config_apply_only_one_plugin_does_no_first_boot_work(guest, monkeypatch):
    drive(DOCUMENT)
    host = ProvisionHost()
    ran = runner.apply(host, SETTINGS, only="motd")
    assert [r.name for r in ran] == ["motd"] and not os.path.exists(provision.RECORD)


class HeldLocks:
    """Host.lock's stand-in: which locks are held, to look at from inside what runs under them."""

    def __init__(self):
        self.held: List[str] = []

    def __call__(self, name: str) -> "HeldLocks":
        self.held.append(name)
        return self

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc_info: object) -> None:
        self.held.pop()


def test_the_instance_is_applied_and_recorded_under_the_instance_lock(guest, monkeypatch):
    """The lease's hostname plugin (interface attach, in parallel at boot) takes the same lock:
    it sees the hostname provisioning set, or sets its own before, never in between."""
    drive(DOCUMENT)
    host, locks, seen = ProvisionHost(), HeldLocks(), []
    monkeypatch.setattr(host, "lock", locks)
    real_save, real_apply = provision._save, provision._apply
    monkeypatch.setattr(provision, "_apply", lambda *a: seen.append(list(locks.held)) or real_apply(*a))
    monkeypatch.setattr(provision, "_save", lambda *a: seen.append(list(locks.held)) or real_save(*a))
    assert provision.run(host, SETTINGS).state == CHANGED
    assert seen == [[provision.INSTANCE_LOCK], [provision.INSTANCE_LOCK]]


def test_a_plugin_run_alone_waits_for_the_instance_lock(guest, monkeypatch):
    from gandi_vm.plugins import hostname

    host, locks, seen = ProvisionHost(), HeldLocks(), []
    monkeypatch.setattr(host, "lock", locks)
    real = hostname.apply
    monkeypatch.setattr(hostname, "apply", lambda ctx: seen.append(list(locks.held)) or real(ctx))
    runner.apply(host, SETTINGS, only="hostname", respect_flag=True)
    assert seen == [[provision.INSTANCE_LOCK]]


def test_host_run_passes_input_on_standard_input_only():
    host = Host()
    done = host.run(["cat"], timeout=10, changes=False, input="secret\n")
    assert done.stdout == "secret\n"
    assert host.run(["cat"], timeout=10, changes=False).stdout == ""  # /dev/null otherwise
