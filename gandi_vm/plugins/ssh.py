"""SSH: generate missing host keys, harden sshd (validated by sshd -t), manage the platform's root key.

Three independent concerns, run in this order (CONFIG_SSHD, CONFIG_SSHMGMT, CONFIG_SSHMGMT_KEY):

- host keys: rsa, ecdsa and ed25519 keys are generated when missing (`ssh-keygen -A` semantics) and
  never regenerated when present, whatever else changed (a recurring cloud-init complaint);
- hardening: PermitRootLogin prohibit-password and PermitEmptyPasswords no, through a drop-in when
  sshd_config includes sshd_config.d, else by editing only those two keys in place; `sshd -t` must
  accept the result or the previous files are put back byte for byte;
- management key: with CONFIG_SSHMGMT=1 the key in CONFIG_SSHMGMT_KEY is in root's authorized_keys
  exactly once (0600, in a 0700 /root/.ssh, owned by root); with 0 that key, and only it, is removed.

sshd is never restarted here: gandi-config.service runs before sshd at boot, so sshd starts with
what we leave.
"""

from __future__ import annotations

import binascii
import fnmatch
import logging
import os
import posixpath
import re
import shlex
import struct
from typing import Dict, List, Optional, Tuple

from gandi_vm.plugins import Context, Outcome

log = logging.getLogger("gandi")

ORDER = 50
FLAG = "CONFIG_SSHD"

SSH_DIR = "/etc/ssh"
SSHD_BINARY = "/usr/sbin/sshd"
SSHD_CONFIG = "/etc/ssh/sshd_config"
# A high number on purpose: sshd keeps the FIRST value it reads for a keyword, and Include expands
# its files in lexical order, so the owner's own drop-ins (00-*.conf .. 98-*.conf) win over ours.
DROP_IN = "/etc/ssh/sshd_config.d/99-gandi.conf"
WANTED: Dict[str, str] = {"PermitRootLogin": "prohibit-password", "PermitEmptyPasswords": "no"}

KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEYGEN_TIMEOUT = 60
SSHD_TIMEOUT = 30
SMALL_TIMEOUT = 10

ROOT_SSH_DIR = "/root/.ssh"
AUTHORIZED_KEYS = "/root/.ssh/authorized_keys"
# The public key algorithms OpenSSH accepts in authorized_keys for the platform's key (no DSA:
# OpenSSH 7.0+ disables it, and no certificates: the platform has no CA on the guest).
MGMT_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                  "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
                  "sk-ecdsa-sha2-nistp256@openssh.com")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
# sshd_config accepts both `Keyword value` and `Keyword=value`.
_DIRECTIVE = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+|$)(.*)", re.DOTALL)

Key = Tuple[str, str]  # (type, base64 blob): a key's identity, whatever its options and comment


def apply(ctx: Context) -> Outcome:
    if not ctx.host.exists(SSHD_BINARY) and not ctx.host.exists(SSHD_CONFIG):
        return ctx.skip("openssh-server not installed")
    # The settings are checked before anything is done: an invalid value changes nothing.
    mgmt_key: Optional[Key] = None
    mgmt_line = ""
    if ctx.settings.sshmgmt:
        mgmt_key, mgmt_line, problem = _read_mgmt_key(ctx)
        if mgmt_key is None:
            return ctx.refuse(problem)

    failures = _host_keys(ctx)
    failures += _harden(ctx)
    if ctx.settings.sshmgmt:
        assert mgmt_key is not None
        failures += _authorize(ctx, mgmt_key, mgmt_line)
    else:
        failures += _unauthorize(ctx)
    if failures:
        # Settings were checked above; what is left is a command that failed (or sshd -t saying
        # no, after which the files were put back).
        return ctx.fail("; ".join(failures))
    return ctx.done()


# -- host keys ---------------------------------------------------------------------------------
def _host_keys(ctx: Context) -> List[str]:
    failures = []
    for kind in KEY_TYPES:
        key = f"{SSH_DIR}/ssh_host_{kind}_key"
        problem = _host_key(ctx, kind, key)
        if problem:
            log.error("ssh: %s", problem)
            failures.append(problem)
    return failures


def _host_key(ctx: Context, kind: str, key: str) -> Optional[str]:
    pub = key + ".pub"
    # exists(), not is_file(): a key that is a symlink (to a config-managed store) is still a key,
    # and regenerating it would change the machine's identity for every client that knows it.
    if ctx.host.exists(key):
        if not ctx.host.exists(pub):
            problem = _derive_public(ctx, key, pub)
            if problem:
                return problem
    else:
        argv = ["ssh-keygen", "-q", "-t", kind]
        if kind == "rsa":
            argv += ["-b", "3072"]  # OpenSSH's own default since 8.8; older ones default to 2048
        argv += ["-N", "", "-C", "", "-f", ctx.host.path(key)]
        log.info("ssh: %s missing, generating it", key)
        result = ctx.run(argv, timeout=KEYGEN_TIMEOUT)
        if result.returncode == 127:
            return f"cannot generate {key}: ssh-keygen not found ({result.why()})"
        if not result.ok:
            return f"cannot generate {key}: ssh-keygen failed: {result.why()}"
    # sshd refuses a private host key that others can read ("UNPROTECTED PRIVATE KEY FILE").
    return _ensure_mode(ctx, key, 0o600)


def _derive_public(ctx: Context, key: str, pub: str) -> Optional[str]:
    """Write a lost .pub from the private key; the key itself is never touched."""
    log.info("ssh: %s missing, deriving it from %s", pub, key)
    result = ctx.run(["ssh-keygen", "-y", "-f", ctx.host.path(key)], timeout=KEYGEN_TIMEOUT)
    if ctx.host.dry_run:
        return None  # only planned: there is no output to write
    if result.returncode == 127:
        return f"cannot derive {pub}: ssh-keygen not found ({result.why()})"
    if not result.ok or not result.stdout.strip():
        return f"cannot derive {pub} from {key}: {result.why()}"
    ctx.write(pub, result.stdout if result.stdout.endswith("\n") else result.stdout + "\n", mode=0o644)
    return None


# -- hardening ---------------------------------------------------------------------------------
def _harden(ctx: Context) -> List[str]:
    if not ctx.host.exists(SSHD_CONFIG):
        # sshd cannot start without its main file; writing a two-line one would replace the
        # distribution's defaults (Subsystem sftp, UsePAM...), so that is left to the package.
        log.warning("ssh: %s missing, hardening skipped", SSHD_CONFIG)
        return []
    if not ctx.host.is_file(SSHD_CONFIG):
        # A symlink points at a file some tool manages (and ctx.write would replace the link).
        return [f"{SSHD_CONFIG} is not a regular file: hardening left to its owner"]
    main = ctx.host.read_text(SSHD_CONFIG)
    if _includes_drop_in(main):
        if ctx.host.exists(DROP_IN) and not ctx.host.is_file(DROP_IN):
            return [f"{DROP_IN} is not a regular file: hardening left to its owner"]
        previous = {DROP_IN: _read(ctx, DROP_IN)}
        text = ("# Written by gandi-vm at boot (CONFIG_SSHD in /etc/default/gandi); edits here are lost.\n"
                "# sshd keeps the first value it reads: a drop-in that sorts before this one, or a line\n"
                "# above the Include in sshd_config, takes precedence over these.\n"
                + "".join(f"{key} {value}\n" for key, value in WANTED.items()))
        log.info("ssh: %s includes %s, hardening through the drop-in", SSHD_CONFIG, DROP_IN)
        changed = ctx.write(DROP_IN, text, mode=0o644)
    else:
        if re.search("[\udc80-\udcff]", main):
            # Not UTF-8: rewriting it through text would not give the same bytes back.
            return [f"{SSHD_CONFIG} is not valid UTF-8: hardening left to its owner"]
        previous = {SSHD_CONFIG: main}
        log.info("ssh: %s does not include sshd_config.d, editing it in place", SSHD_CONFIG)
        changed = ctx.write(SSHD_CONFIG, harden_in_place(main, WANTED), mode=0o644)
    if not changed:
        log.info("ssh: sshd hardening already in place")
        return []
    problem = _validate(ctx)
    if problem is None:
        return []
    for path, text in previous.items():
        if text is None:
            ctx.remove(path)
        else:
            ctx.write(path, text)
    message = f"sshd -t rejected the hardened configuration, rolled back: {problem}"
    log.error("ssh: %s", message)
    return [message]


def _includes_drop_in(main: str) -> bool:
    """Whether an active, global Include of sshd_config covers our drop-in's name."""
    for line in main.splitlines():
        directive = _directive(line)
        if directive is None:
            continue
        keyword, argument = directive
        if keyword == "match":
            return False  # an Include inside a Match block applies only to that block
        if keyword != "include":
            continue
        try:
            patterns = shlex.split(argument)
        except ValueError:
            patterns = argument.split()
        for pattern in patterns:
            # sshd resolves a relative Include against its own directory, not the working one.
            if _glob_matches(posixpath.join(SSH_DIR, pattern), DROP_IN):
                return True
    return False


def _glob_matches(pattern: str, path: str) -> bool:
    """glob(3) semantics: a wildcard matches inside one path component, never across a '/'."""
    pattern_parts = posixpath.normpath(pattern).split("/")
    path_parts = path.split("/")
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(part, wildcard) for part, wildcard in zip(path_parts, pattern_parts))


def harden_in_place(text: str, wanted: Dict[str, str]) -> str:
    """sshd_config text with each wanted keyword set: the first global line that sets it is
    replaced (indentation and line ending kept), or a line is added before the first Match block;
    every other byte, comments included, is kept."""
    lines = text.splitlines(keepends=True)
    match_at = len(lines)
    for number, line in enumerate(lines):
        directive = _directive(line)
        if directive and directive[0] == "match":
            match_at = number
            break
    missing = []
    for key, value in wanted.items():
        for number in range(match_at):
            directive = _directive(lines[number])
            if directive is None or directive[0] != key.lower():
                continue
            current = directive[1].split()
            # sshd takes the first line it reads; an equal value is left exactly as written.
            if not current or current[0].lower() != value.lower():
                line = lines[number]
                indent = line[:len(line) - len(line.lstrip())]
                ending = line[len(line.rstrip("\r\n")):]
                lines[number] = f"{indent}{key} {value}{ending}"  # no ending: the last line stays so
            break
        else:
            missing.append(f"{key} {value}\n")
    if not missing:
        return "".join(lines)
    if match_at == len(lines):
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        return "".join(lines + missing)
    # A line after `Match` belongs to that block (until the next Match), so ours go above it,
    # and above the comment lines directly describing it.
    at = match_at
    while at > 0 and lines[at - 1].lstrip().startswith("#"):
        at -= 1
    return "".join(lines[:at] + missing + lines[at:])


def _directive(line: str) -> Optional[Tuple[str, str]]:
    """(lowercased keyword, argument text) of an active sshd_config line; None for comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    found = _DIRECTIVE.match(stripped)
    return (found.group(1).lower(), found.group(2).strip()) if found else None


def _validate(ctx: Context) -> Optional[str]:
    """None when sshd accepts the configuration (or cannot be asked); else why not."""
    if ctx.host.dry_run:
        return None  # nothing was written: sshd -t would only judge the old files
    if not ctx.host.exists(SSHD_BINARY):
        log.warning("ssh: %s not found, the hardened configuration is not validated", SSHD_BINARY)
        return None
    argv = ["sshd", "-t", "-f", ctx.host.path(SSHD_CONFIG)]
    result = ctx.run(argv, timeout=SSHD_TIMEOUT, changes=False)
    privsep = re.search(r"Missing privilege separation directory: (/\S+)", result.stderr + result.stdout)
    if not result.ok and privsep and privsep.group(1).startswith(("/run/", "/var/run/")):
        # Debian's sshd.service creates /run/sshd (RuntimeDirectory=) only when it starts, and we
        # run before it at boot; sshd -t checks that directory before it says the config is fine.
        try:
            ctx.host.mkdir(privsep.group(1), 0o755)
        except OSError as e:
            log.warning("ssh: cannot create %s: %s", privsep.group(1), e.strerror)
        result = ctx.run(argv, timeout=SSHD_TIMEOUT, changes=False)
    if result.returncode == 127:
        log.warning("ssh: sshd could not be run (%s), the hardened configuration is not validated",
                    result.why())
        return None
    return None if result.ok else result.why()


# -- management key ----------------------------------------------------------------------------
def _read_mgmt_key(ctx: Context) -> Tuple[Optional[Key], str, str]:
    """The platform key named by CONFIG_SSHMGMT_KEY and the line to authorize it with, or None,
    "" and a one-line reason."""
    path = ctx.settings.sshmgmt_key
    text = _read(ctx, path) if ctx.host.is_file(path) else None
    if text is None:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: no such file"
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: the file is empty"
    if len(lines) > 1:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: expected one public key line, found {len(lines)}"
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or parts[0] not in MGMT_KEY_TYPES:
        return None, "", (f"CONFIG_SSHMGMT_KEY={path}: expected 'TYPE BASE64 [comment]' with TYPE one of "
                      + ", ".join(MGMT_KEY_TYPES))
    kind, blob = parts[0], parts[1]
    if not _BASE64.fullmatch(blob) or len(blob) % 4:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: the key is not valid base64"
    try:
        raw = binascii.a2b_base64(blob)
    except binascii.Error:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: the key is not valid base64"
    # The blob starts with its own algorithm name (an RFC 4251 string), then the key material; a
    # mismatch or nothing after the name is a paste error.
    name = kind.encode()
    if raw[:4 + len(name)] != struct.pack(">I", len(name)) + name or len(raw) <= 4 + len(name):
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: the key data is not a {kind} key"
    # The platform's comment is kept; without one, the owner still sees whose key this is.
    comment = parts[2].strip() if len(parts) > 2 else "gandi-vm management key"
    return (kind, blob), f"{kind} {blob} {comment}\n", ""


def _authorize(ctx: Context, key: Key, line: str) -> List[str]:
    problem = _root_ssh_dir(ctx)
    if problem:
        return [problem]
    if ctx.host.exists(AUTHORIZED_KEYS) and not ctx.host.is_file(AUTHORIZED_KEYS):
        return [f"{AUTHORIZED_KEYS} is not a regular file: left alone"]
    text = _read(ctx, AUTHORIZED_KEYS) or ""
    lines = text.splitlines(keepends=True)
    ours = [number for number, line in enumerate(lines) if authorized_key(line) == key]
    if not ours:
        log.info("ssh: adding the management key to %s", AUTHORIZED_KEYS)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(line)
    elif len(ours) > 1:
        log.info("ssh: the management key is in %s %d times, keeping the first", AUTHORIZED_KEYS,
                 len(ours))
        lines = [line for number, line in enumerate(lines) if number not in ours[1:]]
    ctx.write(AUTHORIZED_KEYS, "".join(lines), mode=0o600)
    failures = [_ensure_mode(ctx, AUTHORIZED_KEYS, 0o600), _ensure_root_owner(ctx, AUTHORIZED_KEYS)]
    return [failure for failure in failures if failure]


def _root_ssh_dir(ctx: Context) -> Optional[str]:
    if not ctx.host.exists(ROOT_SSH_DIR):
        if ctx.host.mkdir(ROOT_SSH_DIR, 0o700):  # Context has no mkdir: record it ourselves
            ctx.changes.append(f"{ROOT_SSH_DIR} created")
        return None
    if not ctx.host.is_dir(ROOT_SSH_DIR):
        # A symlink may point anywhere (and out of --root); sshd's StrictModes judges it, not us.
        return f"{ROOT_SSH_DIR} is not a directory: the management key is not installed"
    return _ensure_mode(ctx, ROOT_SSH_DIR, 0o700) or _ensure_root_owner(ctx, ROOT_SSH_DIR)


def _unauthorize(ctx: Context) -> List[str]:
    """CONFIG_SSHMGMT=0: take the platform key out again, and nothing else."""
    path = ctx.settings.sshmgmt_key
    if not ctx.host.is_file(path) or not ctx.host.is_file(AUTHORIZED_KEYS):
        return []
    key, _, problem = _read_mgmt_key(ctx)
    if key is None:
        # The feature is off: an unreadable key only means there is nothing we can recognize.
        log.warning("ssh: %s, no management key to remove", problem)
        return []
    text = ctx.host.read_text(AUTHORIZED_KEYS)
    kept = [line for line in text.splitlines(keepends=True) if authorized_key(line) != key]
    if ctx.write(AUTHORIZED_KEYS, "".join(kept), mode=0o600):
        log.info("ssh: CONFIG_SSHMGMT=0, management key removed from %s", AUTHORIZED_KEYS)
    return []


def authorized_key(line: str) -> Optional[Key]:
    """(type, base64) of an authorized_keys line, past its options; None for comments."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split(None, 2)
    if parts[0] not in MGMT_KEY_TYPES and not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        # Options come first (`from="a b",command="..." ssh-ed25519 AAAA...`); a quoted option
        # may hold spaces, so skip to the first whitespace outside quotes.
        at, quoted = 0, False
        while at < len(text) and (quoted or not text[at].isspace()):
            if text[at] == "\\" and quoted:
                at += 1
            elif text[at] == '"':
                quoted = not quoted
            at += 1
        parts = text[at:].split(None, 2)
    return (parts[0], parts[1]) if len(parts) >= 2 else None


# -- small helpers -----------------------------------------------------------------------------
def _read(ctx: Context, path: str) -> Optional[str]:
    try:
        return ctx.host.read_text(path)
    except OSError:
        return None


def _ensure_mode(ctx: Context, path: str, mode: int) -> Optional[str]:
    try:  # stat, not lstat: chmod acts on what a link points at
        current = os.stat(ctx.host.path(path)).st_mode & 0o7777
    except OSError:
        return None  # planned only (dry run), or a dangling link: nothing to fix here
    if current == mode:
        return None
    log.info("ssh: %s has mode %04o, setting %04o", path, current, mode)
    result = ctx.run(["chmod", f"{mode:o}", ctx.host.path(path)], timeout=SMALL_TIMEOUT)
    return None if result.ok else f"cannot chmod {mode:o} {path}: {result.why()}"


def _ensure_root_owner(ctx: Context, path: str) -> Optional[str]:
    """sshd's StrictModes rejects an authorized_keys (or its directory) owned by someone else."""
    if os.geteuid() != 0:
        return None  # only root can chown (an unprivileged --root or test run)
    try:
        status = os.lstat(ctx.host.path(path))
    except OSError:
        return None  # planned only (dry run)
    if (status.st_uid, status.st_gid) == (0, 0):
        return None
    log.info("ssh: %s is owned by %d:%d, giving it to root", path, status.st_uid, status.st_gid)
    result = ctx.run(["chown", "root:root", ctx.host.path(path)], timeout=SMALL_TIMEOUT)
    return None if result.ok else f"cannot chown root:root {path}: {result.why()}"
