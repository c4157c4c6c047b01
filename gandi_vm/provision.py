"""First-boot provisioning, once per instance (CONFIG_PROVISION): the platform's config drive at
/gandi (gandi/config, gandi/init) or an OpenStack config-2 drive (gandi_vm/openstack.py).

Both carry a JSON document written by someone else, read here as hostile: bounded in size, every
value checked, and every invalid one reported on one line with its JSON path
(`users[1].name: not a valid user name`) and skipped while the rest still applies. What it may
set, declaratively (no platform code needed):

    instance_id   the instance's identity: nothing is applied without one (config-2: "uuid")
    hostname      RFC 1123 (plugins/hostname.valid)
    timezone      a zone under /usr/share/zoneinfo (plugins/timezone.zone_file)
    root          {password_hash, ssh_authorized_keys}
    users         [{name, password_hash, ssh_authorized_keys, sudo, groups, shell}]

Only crypt(3) hashes are taken, never a plain password, and neither is ever logged, planned or
recorded: a hash reaches `chpasswd -e` on its standard input only. Users are made with the
distro's tools (useradd, usermod, chpasswd); keys go to ~/.ssh/authorized_keys (0600 in a 0700
directory, owned by the user), each key once.

Once per instance: /var/lib/gandi-vm/instance.json records the source, the instance id, when it
was applied, what was skipped and why, and the hostname and timezone it set. The same id on a
later boot applies nothing again, so the owner's own changes stay (a new password, a removed key,
a renamed host); a new id (the image cloned to another VM) applies again. The hostname and
timezone plugins leave alone a value the instance's configuration set.

/gandi/init runs by its own #! line (executed directly, never through an interpreter we pick),
with CONFIG_INIT_TIMEOUT, its output logged line by line, once per instance, before the plugins
(so before sshd and the gettys). When it ran for a new instance, the marker
/var/lib/gandi-vm/postboot-pending makes systemd start gandi-postboot.service, which runs
`/gandi/init --postboot` itself after network-online.target: no interpreter starts for it.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from gandi_vm import log
from gandi_vm.host import Host, lines, printable
from gandi_vm.record import Record
from gandi_vm.sysfs import quoted


DRIVE_DIR = "/gandi"  # configdrive.DRIVE_DIR: the platform's drive, extracted root-only
CONFIG = "/gandi/config"
INIT = "/gandi/init"
STATE_DIR = "/var/lib/gandi-vm"
RECORD = "/var/lib/gandi-vm/instance.json"
# Held while a request is applied and recorded, and by a plugin run alone (interface attach's
# lease plugins): the lease's hostname plugin runs in parallel with config apply at boot, and
# must see the name provisioning set (instance_set) or set its own before it, never in between.
INSTANCE_LOCK = "instance"
POSTBOOT_MARKER = "/var/lib/gandi-vm/postboot-pending"

MAX_DOCUMENT = 1 << 20  # a configuration document is a few KiB; more is not one
MAX_USERS = 64
MAX_KEYS = 64
MAX_KEY_LENGTH = 16384  # an RSA 16384-bit key line is about 2.8 KiB
MAX_OUTPUT_LINES = 500
COMMAND_TIMEOUT = 60

# useradd's default NAME_REGEX on Debian (config._USER), which other distros' rules also accept.
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Accounts the distro and packages own: never changed from a configuration document (root has
# its own key). Debian: 0-999 system, 60000-64999 reserved, 65534 nobody.
FIRST_UID, LAST_UID = 1000, 59999
# crypt(3) hashes, by prefix: md5, sha256, sha512 (optional rounds), yescrypt, gost-yescrypt,
# bcrypt, scrypt. The last field's length is the hash's own, so a short string that merely
# starts with "$6$" (a plain password) is not taken for one.
_B64 = "[./0-9A-Za-z]"
CRYPT_HASH = re.compile("|".join((
    rf"\$1\${_B64}{{0,8}}\${_B64}{{22}}",
    rf"\$5\$(rounds=[0-9]{{1,9}}\$)?{_B64}{{0,16}}\${_B64}{{43}}",
    rf"\$6\$(rounds=[0-9]{{1,9}}\$)?{_B64}{{0,16}}\${_B64}{{86}}",
    rf"\$g?y\${_B64}+\${_B64}{{0,86}}\${_B64}{{43}}",
    rf"\$2b\$[0-9]{{2}}\${_B64}{{53}}",
    rf"\$7\${_B64}{{11,}}\${_B64}{{43}}",
)))
_INSTANCE_ID = re.compile(r"[\x21-\x7e]{1,128}")
_ROOT_KEYS = ("password_hash", "ssh_authorized_keys")
_USER_KEYS = ("name", "password_hash", "ssh_authorized_keys", "sudo", "groups", "shell")


class ProvisionError(Exception):
    """A document that cannot be read at all (one line, naming the file)."""


# -- facts of the system the document is checked against -----------------------------------------
class Account(Record):
    uid: int
    gid: int
    home: str


class Facts(Record, mutable=True):
    accounts: Dict[str, Account] = {}
    groups: Set[str] = set()
    shells: Set[str] = set()
    # why a zone cannot be used (no tzdata, no such zone), or None when it can
    zone_problem: Callable[[str], Optional[str]] = lambda zone: None


def gather(host: Host, settings: Any) -> Facts:
    """The accounts, groups and shells of the guest, from its files (NSS is the host's under
    --root, and the document only ever names local accounts)."""
    from gandi_vm.plugins import Context, timezone

    facts = Facts()
    for line in _read_lines(host, "/etc/passwd"):
        fields = line.split(":")
        if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
            facts.accounts.setdefault(fields[0], Account(int(fields[2]), int(fields[3]), fields[5]))
    facts.groups = {line.split(":")[0] for line in _read_lines(host, "/etc/group") if ":" in line}
    facts.shells = {line.strip() for line in _read_lines(host, "/etc/shells")
                    if line.strip().startswith("/")}
    context = Context(host=host, settings=settings, name="provision")

    def zone_problem(zone: str) -> Optional[str]:
        if not host.is_dir(timezone.ZONEINFO):
            return f"tzdata not installed (no {timezone.ZONEINFO})"
        if timezone.zone_file(context, zone) is None:
            return f"no such zone under {timezone.ZONEINFO}"
        return None

    facts.zone_problem = zone_problem
    return facts


def _read_lines(host: Host, path: str) -> List[str]:
    try:
        return lines(host.read_text(path))
    except OSError:
        return []


# -- what a document asks for --------------------------------------------------------------------
class User(Record, mutable=True):
    path: str  # its JSON path ("root", "users[1]"), for messages
    name: str
    password_hash: Optional[str] = None  # never shown (see __repr__)
    keys: List[str] = []  # normalized one-line keys, each once
    sudo: bool = False
    # CONFIG_PROVISION_USER on config-2: the only way in is its key, and root gets none, so it
    # gets what cloud images give their default user, sudo without a password.
    passwordless_sudo: bool = False
    groups: List[str] = []
    shell: Optional[str] = None
    create: bool = False  # not an account yet

    def __repr__(self) -> str:
        # A hash is never logged: a repr ends up in tracebacks and debug lines.
        hidden = "'<hidden>'" if self.password_hash is not None else "None"
        return super().__repr__().replace(f"password_hash={self.password_hash!r}",
                                          f"password_hash={hidden}", 1)


class Request(Record, mutable=True):
    source: str  # "gandi" or "config-2"
    origin: str  # the file it came from, for messages
    instance_id: Optional[str] = None
    hostname: Optional[str] = None
    timezone: Optional[str] = None
    users: List[User] = []
    problems: List[str] = []


def load(data: bytes, origin: str) -> Dict[str, Any]:
    """The document's top-level object; ProvisionError (one line naming `origin`) otherwise."""
    if len(data) > MAX_DOCUMENT:
        raise ProvisionError(f"{origin}: larger than {MAX_DOCUMENT} bytes, not read")
    if not data.strip():
        raise ProvisionError(f"{origin}: empty, nothing to apply")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProvisionError(f"{origin}: not UTF-8 (byte {e.start})") from None
    except RecursionError:
        raise ProvisionError(f"{origin}: nested too deeply, not read") from None
    except ValueError as e:  # json.JSONDecodeError, and numbers too long to convert
        raise ProvisionError(f"{origin}: not JSON: {quoted(str(e), 120)}") from None
    if not isinstance(document, dict):
        raise ProvisionError(f"{origin}: not a JSON object")
    return document


def parse_gandi(data: bytes, facts: Facts, origin: str = CONFIG) -> Request:
    """gandi/config: instance_id, hostname, timezone, root, users (other keys belong to the
    platform's own /gandi/init and are left to it)."""
    document = load(data, origin)
    request = Request("gandi", origin)
    request.instance_id = _instance_id(document.get("instance_id"), "instance_id", request)
    if "hostname" in document:
        request.hostname = _hostname(document["hostname"], "hostname", request)
    if "timezone" in document:
        request.timezone = _timezone(document["timezone"], "timezone", request, facts)
    seen: Set[str] = set()
    if "root" in document:
        root = _root(document["root"], request)
        if root is not None:
            request.users.append(root)
            seen.add("root")
    if "users" in document:
        entries = document["users"]
        if not isinstance(entries, list):
            request.problems.append("users: not a list")
        else:
            if len(entries) > MAX_USERS:
                request.problems.append(f"users: more than {MAX_USERS}, users[{MAX_USERS}] and "
                                        "later skipped")
            for index, entry in enumerate(entries[:MAX_USERS]):
                user = _user(entry, f"users[{index}]", request, facts, seen)
                if user is not None:
                    request.users.append(user)
                    seen.add(user.name)
    return request


def parse_openstack(data: bytes, facts: Facts, provision_user: str = "",
                    origin: str = "openstack/latest/meta_data.json") -> Request:
    """OpenStack meta_data.json: uuid (the instance id), hostname, and public_keys (name -> key)
    for root, or for CONFIG_PROVISION_USER (created if missing)."""
    document = load(data, origin)
    request = Request("config-2", origin)
    request.instance_id = _instance_id(document.get("uuid"), "uuid", request)
    if "hostname" in document:
        request.hostname = _hostname(document["hostname"], "hostname", request)
    if "public_keys" in document:
        found = document["public_keys"]
        if not isinstance(found, dict):
            request.problems.append("public_keys: not an object")
        else:
            name = provision_user or "root"
            user = User("public_keys", name)
            existing = facts.accounts.get(name)
            if name != "root" and existing is not None and not _ordinary(existing):
                request.problems.append(f"public_keys: CONFIG_PROVISION_USER={name} is a system "
                                        f"account (uid {existing.uid}), keys not installed")
                return request
            user.create = existing is None and name != "root"
            user.passwordless_sudo = name != "root"
            paths = [f"public_keys[{json.dumps(key)[:40]}]" for key in found]
            user.keys = _keys(list(found.values()), paths, request)
            if user.keys or user.create:
                request.users.append(user)
    return request


def _instance_id(value: Any, path: str, request: Request) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _INSTANCE_ID.fullmatch(value):
        request.problems.append(f"{path}: not a valid instance id (1 to 128 printable ASCII "
                                "characters, no space)")
        return None
    return value


def _hostname(value: Any, path: str, request: Request) -> Optional[str]:
    from gandi_vm.plugins import hostname

    name = hostname.valid(value) if isinstance(value, str) else None
    if name is None:
        request.problems.append(f"{path}: not a valid RFC 1123 host name")
    elif hostname.valid(name.split(".")[0]) is None:
        request.problems.append(f"{path}: its first label is all digits, not a host name")
        return None
    return name


def _timezone(value: Any, path: str, request: Request, facts: Facts) -> Optional[str]:
    if not isinstance(value, str) or not value or len(value) > 128:
        request.problems.append(f"{path}: not a zone name")
        return None
    problem = facts.zone_problem(value)
    if problem:
        request.problems.append(f"{path}: {quoted(value, 64)}: {problem}")
        return None
    return value


def _root(value: Any, request: Request) -> Optional[User]:
    if not isinstance(value, dict):
        request.problems.append("root: not an object")
        return None
    _unknown(value, _ROOT_KEYS, "root", request)
    user = User("root", "root")
    user.password_hash = _password(value.get("password_hash"), "root.password_hash", request)
    user.keys = _key_list(value.get("ssh_authorized_keys"), "root.ssh_authorized_keys", request)
    return user if user.password_hash or user.keys else None


def _user(value: Any, path: str, request: Request, facts: Facts, seen: Set[str]) -> Optional[User]:
    if not isinstance(value, dict):
        request.problems.append(f"{path}: not an object")
        return None
    name = value.get("name")
    if not isinstance(name, str) or not USER_NAME.fullmatch(name):
        request.problems.append(f"{path}.name: not a valid user name")
        return None
    existing = facts.accounts.get(name)
    if name == "root":
        request.problems.append(f"{path}.name: root is set with the root key, not in users")
        return None
    if existing is not None and not _ordinary(existing):
        request.problems.append(f"{path}.name: {name} is a system account (uid {existing.uid}), "
                                "not changed")
        return None
    if name in seen:
        request.problems.append(f"{path}.name: {name} is listed twice, skipped here")
        return None
    _unknown(value, _USER_KEYS, path, request)
    user = User(path, name, create=existing is None)
    user.password_hash = _password(value.get("password_hash"), f"{path}.password_hash", request)
    user.keys = _key_list(value.get("ssh_authorized_keys"), f"{path}.ssh_authorized_keys", request)
    sudo = value.get("sudo", False)
    if isinstance(sudo, bool):
        user.sudo = sudo
    else:
        request.problems.append(f"{path}.sudo: not true or false")
    user.groups = _groups(value.get("groups"), f"{path}.groups", request, facts)
    shell = value.get("shell")
    if shell is not None:
        if isinstance(shell, str) and shell.startswith("/") and shell in facts.shells:
            user.shell = shell
        else:
            request.problems.append(f"{path}.shell: not an absolute path listed in /etc/shells")
    return user


def _ordinary(account: Account) -> bool:
    return FIRST_UID <= account.uid <= LAST_UID


def _unknown(value: Dict[str, Any], known: Tuple[str, ...], path: str, request: Request) -> None:
    for key in value:
        if key not in known:
            request.problems.append(f"{path}.{quoted(key, 32)}: unknown key, ignored")


def _password(value: Any, path: str, request: Request) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str) and CRYPT_HASH.fullmatch(value):
        return value
    # The value itself is never quoted: it may be a plain password.
    request.problems.append(f"{path}: not a crypt(3) hash ($1$, $5$, $6$, $y$, $gy$, $2b$, $7$); "
                            "a plain password is never taken")
    return None


def _key_list(value: Any, path: str, request: Request) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        request.problems.append(f"{path}: not a list of public keys")
        return []
    return _keys(value, [f"{path}[{index}]" for index in range(len(value))], request)


def _keys(values: List[Any], paths: List[str], request: Request) -> List[str]:
    keys: List[str] = []
    identities: Set[Tuple[str, str]] = set()
    for value, path in zip(values, paths):
        key = public_key(value)
        if key is None:
            request.problems.append(f"{path}: not a public key line (type base64 [comment])")
            continue
        identity = tuple(key.split(" ")[:2])
        if identity in identities:
            continue  # each key once
        if len(keys) == MAX_KEYS:
            request.problems.append(f"{path}: more than {MAX_KEYS} keys, the rest skipped")
            break
        identities.add(identity)  # type: ignore[arg-type]
        keys.append(key)
    return keys


def public_key(value: Any) -> Optional[str]:
    """`type base64 [comment]` on one line, as written to authorized_keys, or None: a known key
    type (plugins/ssh.MGMT_KEY_TYPES), a blob that decodes and names that type, a printable
    comment; no options (command=, from=: not a platform's to set)."""
    import base64
    import binascii
    import struct

    from gandi_vm.plugins.ssh import MGMT_KEY_TYPES

    if not isinstance(value, str) or len(value) > MAX_KEY_LENGTH:
        return None
    text = value.strip(" \t\r\n")
    if not text or not text.isprintable():
        return None
    parts = re.split("[ \t]+", text, maxsplit=2)
    if len(parts) < 2 or parts[0] not in MGMT_KEY_TYPES:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
    except (binascii.Error, ValueError, struct.error):
        return None
    if blob[4:4 + length] != parts[0].encode():
        return None
    return " ".join(parts)


def _groups(value: Any, path: str, request: Request, facts: Facts) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):  # "adm,users", as useradd -G takes them
        value = [group for group in value.split(",") if group]
    if not isinstance(value, list):
        request.problems.append(f"{path}: not a list of group names")
        return []
    groups: List[str] = []
    for index, group in enumerate(value):
        if not isinstance(group, str) or not USER_NAME.fullmatch(group):
            request.problems.append(f"{path}[{index}]: not a valid group name")
        elif group not in facts.groups:
            request.problems.append(f"{path}[{index}]: no group {group} on this system, skipped")
        elif group not in groups:
            groups.append(group)
    return groups


# -- the plan ------------------------------------------------------------------------------------
def plan(request: Request, facts: Facts) -> List[str]:
    """What applying the request does, one line each: no hash, and keys by type and comment."""
    steps = [f"instance {request.instance_id} from {request.origin}"]
    if request.hostname:
        steps.append(f"hostname: set to {request.hostname}")
    if request.timezone:
        steps.append(f"timezone: set to {request.timezone}")
    sudo_group = _sudo_group(facts)
    for user in request.users:
        who = "root" if user.name == "root" else f"user {user.name}"
        if user.name != "root":
            details = [f"shell {user.shell}"] if user.shell else []
            groups = user.groups + ([sudo_group] if user.sudo and sudo_group else [])
            if groups:
                details.append("groups " + ",".join(groups))
            if user.passwordless_sudo:
                details.append("sudo without a password through /etc/sudoers.d")
            elif user.sudo and not sudo_group:
                details.append("sudo through /etc/sudoers.d")
            shown = f" ({', '.join(details)})" if details else ""
            if user.create:
                steps.append(f"{who}: create{shown}")
            elif details:
                steps.append(f"{who}: update{shown}")
        if user.password_hash:
            steps.append(f"{who}: set the password (crypt hash, not shown)")
        for key in user.keys:
            words = key.split(" ", 2)
            comment = f" {quoted(words[2], 40)}" if len(words) > 2 else ""
            steps.append(f"{who}: authorize {words[0]} key ...{words[1][-12:]}{comment}")
    return steps


def _sudo_group(facts: Facts) -> Optional[str]:
    """Debian and Ubuntu give sudo to group sudo, RHEL and Fedora to wheel."""
    return next((group for group in ("sudo", "wheel") if group in facts.groups), None)


# -- the record ----------------------------------------------------------------------------------
def record(host: Host) -> Dict[str, Any]:
    """instance.json, or {} (absent, unreadable, or not a record we wrote)."""
    try:
        data = json.loads(host.read_text(RECORD))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def instance_set(host: Host, what: str) -> Optional[str]:
    """The value ("hostname", "timezone") the instance's configuration set, if it did: the boot
    plugins then leave it as it is, on every later boot."""
    done = record(host).get("set")
    value = done.get(what) if isinstance(done, dict) else None
    return value if isinstance(value, str) else None


def status(host: Host) -> Dict[str, Any]:
    """For `gandi-vm status`: where the instance's configuration came from, when it was applied,
    what was skipped and why, what it set, and the init script's outcome."""
    data = record(host)
    keys = ("source", "origin", "instance_id", "applied_at", "skipped", "set", "script")
    return {key: data[key] for key in keys if key in data}


def _save(host: Host, data: Dict[str, Any]) -> None:
    host.mkdir(STATE_DIR, 0o755)
    host.write_text(RECORD, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- applying ------------------------------------------------------------------------------------
class Applied(Record, mutable=True):
    """What a run did: problems (skipped, with why) and failures (a command that failed)."""

    skipped: List[str] = []
    failed: List[str] = []
    changes: List[str] = []


def run(host: Host, settings: Any):
    """The first step of `config apply`: the drive at /gandi if there is one, else a config-2
    drive. Returns a plugins.Outcome for the runner to report."""
    from gandi_vm.plugins import CHANGED, FAILED, SKIPPED, UNCHANGED, Outcome

    if not settings.provision:
        return Outcome(SKIPPED, "CONFIG_PROVISION=0")
    drive = platform_drive(host)
    if drive is not None:
        applied = _from_gandi(host, settings)
    else:
        from gandi_vm import openstack

        applied = openstack.provision(host, settings)
        if applied is None:
            return Outcome(SKIPPED, f"no config drive ({DRIVE_DIR} or a config-2 filesystem)")
    if applied.failed:
        return Outcome(FAILED, "; ".join(applied.failed))
    detail = f"{len(applied.skipped)} item(s) skipped, see above" if applied.skipped else ""
    return Outcome(CHANGED if applied.changes else UNCHANGED,
                   ", ".join(applied.changes + ([detail] if detail else [])))


def platform_drive(host: Host) -> Optional[str]:
    """The directory /gandi presents when it is the platform's drive, extracted by gandi-vm
    (configdrive); a /gandi of anyone else's (the historic package's leftover, a stale copy) is
    not this instance's configuration, and is said so once."""
    from gandi_vm import configdrive

    drive = configdrive.ours(host)
    if drive is not None and host.is_dir(drive):
        return drive
    if host.exists(DRIVE_DIR):
        log.warning("provision: %s was not made by gandi-vm from the platform's drive (a "
                    "leftover?): not used", DRIVE_DIR)
    return None


def _from_gandi(host: Host, settings: Any) -> Applied:
    applied = Applied()
    data = b""
    request: Optional[Request] = None
    if host.is_file(CONFIG):
        try:
            data = read_bounded(host, CONFIG, MAX_DOCUMENT)
            request = parse_gandi(data, gather(host, settings))
        except ProvisionError as e:
            _skip(applied, str(e))
        except OSError as e:
            _skip(applied, f"{CONFIG}: {e.strerror or e}")
    elif host.exists(CONFIG):
        _skip(applied, f"{CONFIG} is not a regular file, not read")
    else:
        log.info("provision: no %s, no declarative provisioning", CONFIG)
    if request is not None:
        declare(host, settings, request, applied)
    # /gandi/init is the platform's own first-boot code: it runs once per instance, keyed by the
    # instance id, or (a historic document has none) by the drive's content, so that a VM whose
    # drive does not change runs it once, and a clone whose drive differs runs it again.
    key = request.instance_id if request is not None and request.instance_id else None
    if key is None and host.exists(INIT):
        import hashlib

        digest = hashlib.sha256(data)
        try:
            digest.update(read_bounded(host, INIT, MAX_DOCUMENT * 16))
        except (OSError, ProvisionError):
            pass
        key = "sha256:" + digest.hexdigest()
    if key is not None and host.exists(INIT):
        run_script(host, settings, INIT, key, applied, postboot=True)
    return applied


def declare(host: Host, settings: Any, request: Request, applied: Applied) -> None:
    """Apply a request once per instance, and record it."""
    for problem in request.problems:
        _skip(applied, f"{request.origin}: {problem}")
    if request.instance_id is None:
        _skip(applied, f"{request.origin}: no instance id, nothing applied (it is what makes "
                       "provisioning happen once per instance)")
        return
    with host.lock(INSTANCE_LOCK):
        previous = record(host)
        if previous.get("instance_id") == request.instance_id and previous.get("applied_at"):
            log.info("provision: instance %s was provisioned at %s, nothing applied again",
                     quoted(request.instance_id, 64), previous.get("applied_at"))
            return
        facts = gather(host, settings)
        prefix = "(dry run) " if host.dry_run else ""
        for step in plan(request, facts):
            log.info("%sprovision: %s", prefix, step)
        done = _apply(host, settings, request, facts, applied)
        data = {key: value for key, value in previous.items() if key == "script"}
        data.update({"source": request.source, "origin": request.origin,
                     "instance_id": request.instance_id, "applied_at": _now(),
                     "skipped": applied.skipped + applied.failed, "set": done})
        _save(host, data)


def _apply(host: Host, settings: Any, request: Request, facts: Facts,
           applied: Applied) -> Dict[str, str]:
    from gandi_vm.plugins import Context, hostname, timezone

    ctx = Context(host=host, settings=settings, name="provision")
    done: Dict[str, str] = {}
    if request.hostname:
        outcome = hostname.set_name(ctx, request.hostname, "the instance's configuration")
        if outcome.failed:
            applied.failed.append(outcome.detail)
        else:
            done["hostname"] = request.hostname
    if request.timezone:
        outcome = timezone.set_zone(ctx, request.timezone)
        if outcome.failed:
            applied.failed.append(outcome.detail)
        else:
            done["timezone"] = request.timezone
    for user in request.users:
        _account(ctx, user, facts, applied)
    applied.changes += ctx.changes
    return done


def _account(ctx: Any, user: User, facts: Facts, applied: Applied) -> None:
    host = ctx.host
    chroot = ["-R", host.root] if host.root != "/" else []
    who = "root" if user.name == "root" else f"user {user.name}"
    if user.name != "root":
        sudo_group = _sudo_group(facts)
        groups = user.groups + ([sudo_group] if user.sudo and sudo_group else [])
        if user.create:
            argv = ["useradd", *chroot, "-m"]
            argv += ["-s", user.shell] if user.shell else []
            argv += ["-G", ",".join(groups)] if groups else []
            result = ctx.run(argv + ["--", user.name], timeout=COMMAND_TIMEOUT)
            if not result.ok:
                applied.failed.append(f"{user.path}: useradd {user.name} failed: {result.why()}")
                return
        else:
            if user.shell and not _run(ctx, applied, user.path, ["usermod", *chroot, "-s",
                                       user.shell, "--", user.name]):
                return
            if groups and not _run(ctx, applied, user.path, ["usermod", *chroot, "-a", "-G",
                                   ",".join(groups), "--", user.name]):
                return
        if user.passwordless_sudo:
            _sudoers(ctx, user, applied, "ALL=(ALL:ALL) NOPASSWD:ALL", "CONFIG_PROVISION_USER")
        elif user.sudo and not sudo_group:
            _sudoers(ctx, user, applied, "ALL=(ALL:ALL) ALL", f"{user.path}.sudo")
        if user.sudo and not user.password_hash:
            log.warning("provision: %s has sudo but no password_hash: sudo will ask for a "
                        "password it does not have", user.path)
    if user.password_hash:
        # The hash goes to chpasswd's standard input: never on a command line (ps), in a log, or
        # in a plan line.
        result = ctx.host.run(["chpasswd", *chroot, "-e"], timeout=COMMAND_TIMEOUT,
                              input=f"{user.name}:{user.password_hash}\n")
        if result.ok:
            ctx.changes.append(f"{who}: password set")
        else:
            applied.failed.append(f"{user.path}.password_hash: chpasswd failed: {result.why()}")
    if user.keys:
        problem = authorize(ctx, user.name, user.keys)
        if problem:
            applied.failed.append(f"{user.path}.ssh_authorized_keys: {problem}")


def _run(ctx: Any, applied: Applied, path: str, argv: List[str]) -> bool:
    result = ctx.run(argv, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        applied.failed.append(f"{path}: {argv[0]} failed: {result.why()}")
    return result.ok


def _sudoers(ctx: Any, user: User, applied: Applied, rule: str, why: str) -> None:
    """A sudoers drop-in (no sudo or wheel group, or sudo without a password), checked by visudo
    before it counts."""
    host = ctx.host
    if not host.is_dir("/etc/sudoers.d"):
        _skip(applied, f"{why}: no /etc/sudoers.d (is sudo installed?), sudo not granted to "
                       f"{user.name}")
        return
    path = f"/etc/sudoers.d/90-gandi-{user.name}"
    text = (f"# Written by gandi-vm from the instance's configuration ({why}).\n"
            f"{user.name} {rule}\n")
    if not ctx.write(path, text, mode=0o440):
        return
    if host.dry_run or not any(host.exists(f"{d}/visudo") for d in ("/usr/sbin", "/usr/bin", "/sbin")):
        return
    result = host.run(["visudo", "-c", "-f", host.path(path)], timeout=COMMAND_TIMEOUT,
                      changes=False)
    if not result.ok:
        host.remove(path)
        applied.failed.append(f"{why}: visudo rejects {path}: {result.why()}; removed")


def authorize(ctx: Any, name: str, keys: List[str]) -> Optional[str]:
    """Each key once in the user's ~/.ssh/authorized_keys (0600, in a 0700 ~/.ssh, both owned by
    the user); the lines already there are kept. None, or why not, in one line."""
    from gandi_vm.plugins.ssh import authorized_key, with_key

    host = ctx.host
    account = gather_account(host, name)
    if account is None:
        if host.dry_run:  # a user the plan creates: its home is useradd's default
            account = Account(-1, -1, "/root" if name == "root" else f"/home/{name}")
        else:
            return f"no account {name} in /etc/passwd"
    home = account.home
    if not home.startswith("/") or not host.is_dir(home) and not host.dry_run:
        return f"home directory {quoted(home, 64)} of {name} is not a directory"
    ssh_dir, path = f"{home.rstrip('/')}/.ssh", f"{home.rstrip('/')}/.ssh/authorized_keys"
    # Written as root in a directory the user owns: a link there could point anywhere.
    if host.exists(ssh_dir) and not host.is_dir(ssh_dir):
        return f"{ssh_dir} is not a directory (a link?), keys not installed"
    if host.exists(path) and not host.is_file(path):
        return f"{path} is not a regular file (a link?), keys not installed"
    if host.mkdir(ssh_dir, 0o700):
        ctx.changes.append(f"{ssh_dir} created")
    try:
        text = host.read_text(path)
    except FileNotFoundError:
        text = ""
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    for key in keys:
        identity = authorized_key(key)
        if identity is not None:
            text = with_key(text, identity, key + "\n")
    ctx.write(path, text, mode=0o600)
    if account.uid >= 0 and os.geteuid() == 0 and not host.dry_run:
        for target in (ssh_dir, path):
            status = os.lstat(host.path(target))
            if (status.st_uid, status.st_gid) != (account.uid, account.gid):
                result = ctx.run(["chown", f"{account.uid}:{account.gid}", host.path(target)],
                                 timeout=COMMAND_TIMEOUT)
                if not result.ok:
                    return f"cannot chown {target}: {result.why()}"
            if status.st_mode & 0o777 != (0o700 if target == ssh_dir else 0o600):
                os.chmod(host.path(target), 0o700 if target == ssh_dir else 0o600)
    return None


def gather_account(host: Host, name: str) -> Optional[Account]:
    for line in _read_lines(host, "/etc/passwd"):
        fields = line.split(":")
        if len(fields) >= 7 and fields[0] == name and fields[2].isdigit() and fields[3].isdigit():
            return Account(int(fields[2]), int(fields[3]), fields[5])
    return None


# -- scripts -------------------------------------------------------------------------------------
def runnable(host: Host, path: str) -> Optional[str]:
    """Why a script cannot run by its own #! line (None when it can)."""
    if not host.is_file(path):
        return f"{path} is not a regular file"
    if not os.access(host.path(path), os.X_OK):
        return f"{path} is not executable"
    try:
        head = read_bounded(host, path, 2, strict=False)
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if head != b"#!":
        return f"{path} does not start with #! (run by its own interpreter line, or not at all)"
    return None


def run_script(host: Host, settings: Any, path: str, key: str, applied: Applied,
               postboot: bool = False) -> None:
    """Run a script once per instance (`key`), directly (its own #!), with the timeout; its
    output logged line by line. The record says it started before it runs: a script that hangs
    the boot or crashes the machine is not run again at every boot."""
    previous = record(host)
    script = previous.get("script")
    if isinstance(script, dict) and script.get("instance") == key and script.get("path") == path:
        log.info("provision: %s already ran for this instance (%s), not run again", path,
                 script.get("ran_at"))
        return
    why = runnable(host, path)
    if why is not None:
        _skip(applied, f"{why}: not run")
        return
    if postboot:
        # systemd starts gandi-postboot.service (`init --postboot`) only when this marker exists,
        # and its ExecStopPost removes it: once per instance, with no process otherwise.
        host.mkdir(STATE_DIR, 0o755)
        host.write_text(POSTBOOT_MARKER, f"{key}\n", mode=0o600)
    entry = {"instance": key, "path": path, "ran_at": _now(), "result": "started"}
    previous["script"] = entry
    _save(host, previous)
    timeout = settings.init_timeout
    log.info("%sprovision: running %s (timeout %ds)", "(dry run) " if host.dry_run else "",
             path, timeout)
    result = host.run([host.path(path)], timeout=timeout, lingering=True)
    for stream in (result.stdout, result.stderr):
        shown = lines(stream)
        for line in shown[:MAX_OUTPUT_LINES]:
            log.info("%s: %s", path, escaped(line))
        if len(shown) > MAX_OUTPUT_LINES:
            log.info("%s: (%d more lines not logged)", path, len(shown) - MAX_OUTPUT_LINES)
    entry["result"] = "exit 0" if result.ok else result.why() if result.returncode in (124, 127) \
        else f"exit status {result.returncode}"
    _save(host, {**record(host), "script": entry})
    if result.ok:
        applied.changes.append(f"{path} ran")
    else:
        applied.failed.append(f"{path}: {entry['result']}")


def escaped(text: str, limit: int = 1000) -> str:
    """A line of a script's output for the journal: control characters shown escaped, never
    acted on by a terminal, and a very long line cut."""
    return printable(text if len(text) <= limit else text[:limit] + "...")


def read_bounded(host: Host, path: str, limit: int, strict: bool = True) -> bytes:
    """A file's bytes, refusing (ProvisionError) one larger than `limit` when strict, else only
    its first `limit` bytes. A symlink is not followed: the drive's files are hostile."""
    fd = os.open(host.path(path), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        if strict:
            raise ProvisionError(f"{path}: larger than {limit} bytes, not read")
        data = data[:limit]
    return data


def _skip(applied: Applied, why: str) -> None:
    log.warning("provision: %s", why)
    applied.skipped.append(why)
