"""Properties of first-boot provisioning on hostile documents (gandi/config, OpenStack
meta_data.json): on any JSON-ish document, and on any bytes, the parser gives a request and
one-line problems with JSON paths, or one line naming the file, and never another exception; no
password hash (valid or not) ever reaches a problem, a plan line, a log line, the record or a
command line; every user name in the plan matches useradd's rule; every key is one line."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from typing import Any, List

from fakesys import FakeHost
from hypothesis import given
from hypothesis import strategies as st

from gandi_vm import provision
from gandi_vm.config import Settings
from gandi_vm.host import Result

VALID_HASHES = ["$6$saltsalt$" + "a" * 86, "$y$j9T$salt$" + "b" * 43, "$1$abc$" + "c" * 22,
                "$2b$12$" + "e" * 53]
KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB")
TRICKY = ["\n", "\r", "\0", "\u2028", "\udcff", " ", "..", "/", "$", ":", "root", "x" * 300]

# A secret: never to be seen anywhere but chpasswd's standard input. A distinct prefix, so that
# finding it in a message is not a coincidence of short strings.
secrets = st.one_of(st.sampled_from(VALID_HASHES),
                    st.text(min_size=4, max_size=40).map(lambda t: "SeCrEt" + t))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(TRICKY), st.text(max_size=12))
names = st.one_of(st.sampled_from(["alice", "bob", "root", "daemon", "nobody", "owner", "Bad!",
                                   "_x", "a" * 33, "-x", "", "x\n"]), st.text(max_size=10))
keys = st.one_of(st.just(KEY), st.just(KEY + " me@host"), st.just(KEY + "\n" + KEY),
                 st.just('command="x" ' + KEY), scalars)


def maybe(strategy):
    return st.one_of(strategy, scalars, st.lists(scalars, max_size=3))


users = st.fixed_dictionaries({}, optional={
    "name": maybe(names), "password_hash": maybe(secrets), "sudo": maybe(st.booleans()),
    "ssh_authorized_keys": st.one_of(st.lists(keys, max_size=4), keys),
    "groups": st.one_of(st.lists(st.sampled_from(["adm", "sudo", "nosuch", "", "a,b"]), max_size=3),
                        scalars),
    "shell": st.one_of(st.sampled_from(["/bin/bash", "/bin/zsh", "bash", "/bin/sh\n"]), scalars),
    "extra": scalars})
documents = st.fixed_dictionaries({}, optional={
    "instance_id": st.one_of(st.sampled_from(["i-1", "83679162-1378"]), scalars),
    "uuid": st.one_of(st.just("u-1"), scalars),
    "hostname": st.one_of(st.sampled_from(["web1", "web1.example.com", "10.0.0.5", "a b"]), scalars),
    "timezone": st.one_of(st.sampled_from(["Europe/Paris", "../etc/passwd", "Mars/Base"]), scalars),
    "root": st.one_of(st.fixed_dictionaries({}, optional={
        "password_hash": maybe(secrets), "ssh_authorized_keys": st.lists(keys, max_size=3),
        "shell": scalars}), scalars),
    "users": st.one_of(st.lists(st.one_of(users, scalars), max_size=5), scalars, users),
    "public_keys": st.one_of(st.dictionaries(st.text(max_size=6), keys, max_size=3), scalars),
})


def facts() -> provision.Facts:
    return provision.Facts(accounts={"root": provision.Account(0, 0, "/root"),
                                     "daemon": provision.Account(1, 1, "/usr/sbin"),
                                     "nobody": provision.Account(65534, 65534, "/nonexistent"),
                                     "owner": provision.Account(1000, 1000, "/home/owner")},
                           groups={"sudo", "adm"}, shells={"/bin/sh", "/bin/bash"},
                           zone_problem=lambda z: None if z == "Europe/Paris" else "no such zone")


def found_secrets(document: Any) -> List[str]:
    """Every password_hash value a document holds, wherever it is."""
    if isinstance(document, dict):
        found = [v for k, v in document.items() if k == "password_hash" and isinstance(v, str)]
        return found + [s for v in document.values() for s in found_secrets(v)]
    if isinstance(document, list):
        return [s for v in document for s in found_secrets(v)]
    return []


def check(document: Any, data: bytes) -> None:
    hidden = [s for s in found_secrets(document) if len(s) >= 8]
    for parse in (provision.parse_gandi, provision.parse_openstack):
        try:
            request = parse(data, facts())
        except provision.ProvisionError as e:
            message = str(e)
            assert "\n" not in message and message.split(": ")[0] in (
                "/gandi/config", "openstack/latest/meta_data.json")
            assert not any(secret in message for secret in hidden)
            continue
        shown = request.problems + provision.plan(request, facts())
        for line in shown:
            assert "\n" not in line and "\r" not in line, line
            assert not any(secret in line for secret in hidden), line
        for problem in request.problems:
            head = problem.split(":")[0]
            assert head.split("[")[0].split(".")[0] in (
                "instance_id", "uuid", "hostname", "timezone", "root", "users", "public_keys"), problem
        for user in request.users:
            assert provision.USER_NAME.fullmatch(user.name)
            assert user.name == "root" or user.name not in ("daemon", "nobody")
            assert user.password_hash is None or provision.CRYPT_HASH.fullmatch(user.password_hash)
            for key in user.keys:
                assert "\n" not in key and "\r" not in key and "\0" not in key
                assert provision.public_key(key) == key
            assert len({tuple(k.split(" ")[:2]) for k in user.keys}) == len(user.keys)


@given(documents)
def test_any_document_gives_a_request_and_one_line_problems(document):
    check(document, json.dumps(document).encode())


@given(st.binary(max_size=300))
def test_any_bytes_give_a_request_or_one_line(data):
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    check(document, data)


class QuietHost(FakeHost):
    """Commands answered without running anything; what each got on its standard input kept
    apart (the only place a hash may go)."""

    def __init__(self, root: str, dry_run: bool, plan):
        super().__init__(root, dry_run=dry_run, plan=plan)
        self.inputs: List[str] = []
        for name in ("useradd", "usermod", "chpasswd", "chown", "hostname", "visudo"):
            self.handlers[name] = lambda argv: Result(argv, 0)

    def run(self, argv, timeout, changes=True, input=None):
        if input is not None:
            self.inputs.append(input)
        return super().run(argv, timeout, changes)


@given(documents, st.booleans())
def test_applying_any_document_never_shows_a_hash(document, dry_run):
    hidden = [s for s in found_secrets(document) if len(s) >= 8]
    with tempfile.TemporaryDirectory() as top:
        for path, text in (("etc/passwd", "root:x:0:0::/root:/bin/sh\n"
                                          "owner:x:1000:1000::/home/owner:/bin/sh\n"),
                           ("etc/group", "sudo:x:27:\nadm:x:4:\n"),
                           ("etc/shells", "/bin/sh\n/bin/bash\n"),
                           ("etc/hostname", "x\n"), ("usr/share/zoneinfo/Europe/Paris", "TZif2"),
                           ("var/lib/gandi-vm/drive.abcd1234/config", json.dumps(document))):
            os.makedirs(os.path.dirname(os.path.join(top, path)), exist_ok=True)
            with open(os.path.join(top, path), "w", encoding="utf-8") as f:
                f.write(text)
        os.symlink("var/lib/gandi-vm/drive.abcd1234", os.path.join(top, "gandi"))  # configdrive's
        os.makedirs(os.path.join(top, "root"))
        os.makedirs(os.path.join(top, "home/owner"))
        plan = io.StringIO()
        host = QuietHost(top, dry_run, plan)
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        logger = logging.getLogger("gandi")
        logger.addHandler(handler)
        try:
            outcome = provision.run(host, Settings())
        finally:
            logger.removeHandler(handler)
        try:
            with open(os.path.join(top, provision.RECORD.lstrip("/")), encoding="utf-8") as f:
                record = f.read()
        except FileNotFoundError:
            record = ""
        seen = logs.getvalue() + plan.getvalue() + record + repr(host.commands) + outcome.detail
        assert not any(secret in seen for secret in hidden)
        if not dry_run and isinstance(document, dict) and "instance_id" in document:
            assert os.path.exists(os.path.join(top, provision.RECORD.lstrip("/"))) or \
                provision.parse_gandi(json.dumps(document).encode(), facts()).instance_id is None
