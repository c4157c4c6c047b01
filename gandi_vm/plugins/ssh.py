"""SSH: generate missing host keys, harden sshd (checked by sshd -T), manage the platform's root key.

Three independent concerns, run in this order (CONFIG_SSHD, CONFIG_SSHMGMT, CONFIG_SSHMGMT_KEY):

- host keys: rsa, ecdsa and ed25519 keys are generated when missing (`ssh-keygen -A` semantics) and
  never regenerated when present, whatever else changed (a recurring cloud-init complaint);
- hardening: PermitRootLogin prohibit-password and PermitEmptyPasswords no, through a drop-in when
  sshd_config includes sshd_config.d, else by editing only those two keys in place. `sshd -T` must
  accept the result AND report those values as the ones it will use, or the previous files are
  put back byte for byte and the plugin fails. sshd keeps the first value it reads, so a line
  above the Include, or an owner's drop-in sorting before ours, wins over our drop-in: that is
  the owner's explicit choice and is not edited away, but it is reported as a failure every boot
  (set the value there, or CONFIG_SSHD=0), never as hardened;
- management key: with CONFIG_SSHMGMT=1 the key in CONFIG_SSHMGMT_KEY is in root's authorized_keys
  exactly once (0600, in a 0700 /root/.ssh, owned by root); with 0 that key, and only it, is removed.

Every file is split into lines the way sshd reads it: on "\n" only, words on " \t" (and "\r\n",
and "=" in sshd_config), so a U+2028 or a "\r" inside a comment cannot hide a directive from us.

sshd is never restarted here: gandi-config.service runs before sshd at boot, so sshd starts with
what we leave.
"""

from __future__ import annotations

import binascii
import fnmatch
import os
import posixpath
import re
import shlex
import struct

from gandi_vm import log
from gandi_vm.host import lines, lines_keepends
from gandi_vm.plugins import Context, Outcome

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Tuple

    Key = Tuple[str, str]  # (type, base64 blob): a key's identity, whatever its options and comment

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
# What sshd skips between the words of an authorized_keys line, and how its key types begin
# (ssh-rsa, ecdsa-sha2-*, sk-*, and certificates of each).
_KEY_SPACE = " \t"
_KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-")
# sshd_config accepts both `Keyword value` and `Keyword=value`.
# What sshd_config's tokenizer (OpenSSH's strdelim) takes for whitespace, and what ends a word.
_SSHD_SPACE = " \t\r\n"
_DELIMITER = re.compile('[ \t\r\n"=]')
# How `sshd -T` may print a wanted value: OpenSSH names prohibit-password by its older synonym.
_REPORTED_AS: Dict[str, Tuple[str, ...]] = {"prohibit-password": ("prohibit-password", "without-password")}


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
    if "\0" in main:
        # sshd reads a line only up to a NUL and drops its newline, gluing the next line to it: no
        # line-based edit of such a file means what it says.
        return [f"{SSHD_CONFIG} holds a NUL byte: hardening left to its owner"]
    if _includes_drop_in(main):
        if ctx.host.exists(DROP_IN) and not ctx.host.is_file(DROP_IN):
            return [f"{DROP_IN} is not a regular file: hardening left to its owner"]
        previous = {DROP_IN: _read(ctx, DROP_IN)}
        text = ("# Written by gandi-vm at boot (CONFIG_SSHD in /etc/default/gandi); edits here are lost.\n"
                "# sshd keeps the first value it reads: a drop-in that sorts before this one, or a line\n"
                "# above the Include in sshd_config, takes precedence over these (and gandi-vm then\n"
                "# reports the hardening as failed).\n"
                + "".join(f"{key} {value}\n" for key, value in WANTED.items()))
        log.info("ssh: %s includes %s, hardening through the drop-in", SSHD_CONFIG, DROP_IN)
        changed = ctx.write(DROP_IN, text, mode=0o644)
    else:
        if re.search("[\udc80-\udcff]", main):
            # Not UTF-8: a dry run could not show the diff (and the owner's editor may not either).
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
    message = f"{problem}; rolled back"
    log.error("ssh: %s", message)
    return [message]


def _includes_drop_in(main: str) -> bool:
    """Whether an active, global Include of sshd_config covers our drop-in's name."""
    for line in lines(main):
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
    every other byte, comments included, is kept. The text holds no NUL byte (see _harden)."""
    lines = lines_keepends(text)
    directives = [_directive(line) for line in lines]
    match_at = next((number for number, directive in enumerate(directives)
                     if directive and directive[0] == "match"), len(lines))
    missing = []
    for key, value in wanted.items():
        for number in range(match_at):
            directive = directives[number]
            if directive is None or directive[0] != key.lower():
                continue
            # sshd takes the first line it reads; an equal value is left exactly as written.
            if not _sets(directive[1], value):
                line = lines[number]
                indent = line[:len(line) - len(line.lstrip(" \t"))]
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
    while at > 0 and lines[at - 1].lstrip(" \t").startswith("#"):
        at -= 1
    return "".join(lines[:at] + missing + lines[at:])


def _sets(argument: str, value: str) -> bool:
    """Whether a directive's argument text is exactly `value` (any case), a comment aside."""
    words = re.split("[ \t\r\n]+", argument)
    return words[0].lower() == value.lower() and (len(words) == 1 or words[1].startswith("#"))


def _directive(line: str) -> Optional[Tuple[str, str]]:
    """(lowercased keyword, argument text) of a line as sshd reads it; None for comments and blanks.

    sshd's tokenizer (strdelim): words end at " \\t\\r\\n", at one '=', or are "quoted"; an empty
    first word (leading '=' or whitespace) is skipped. Nothing else is whitespace to it, so a
    keyword glued to a U+2028 or a form feed is not that keyword (and sshd -t rejects it)."""
    line = line.rstrip(_SSHD_SPACE + "\f")
    keyword, rest = _strdelim(line)
    if keyword == "":
        keyword, rest = _strdelim(rest)
    if not keyword or keyword.startswith("#"):
        return None
    return keyword.lower(), rest or ""


def _strdelim(text: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """OpenSSH's strdelim(): (first word, the rest after its delimiter and whitespace); a word
    with an unmatched quote is no word at all (None)."""
    if text is None:
        return None, None
    found = _DELIMITER.search(text)
    if found is None:
        return text, None
    at = found.start()
    if text[at] == '"':
        end = text.find('"', at + 1)
        if end == -1:
            return None, None
        return text[:at] + text[at + 1:end], text[end + 1:].lstrip(_SSHD_SPACE)
    rest = text[at + 1:].lstrip(_SSHD_SPACE)
    if text[at] != "=" and rest.startswith("="):  # one '=' may stand between the words
        rest = rest[1:].lstrip(_SSHD_SPACE)
    return text[:at], rest


def _validate(ctx: Context) -> Optional[str]:
    """None when sshd accepts the configuration and will use the hardened values (or cannot be
    asked); else why not, in one line."""
    if ctx.host.dry_run:
        return None  # nothing was written: sshd -T would only judge the old files
    if not ctx.host.exists(SSHD_BINARY):
        log.warning("ssh: %s not found, the hardened configuration is not validated", SSHD_BINARY)
        return None
    # -T checks the syntax as -t does, and prints the values sshd will use for a connection that
    # no conditional Match block selects (`Match all` applies): what a global setting promises.
    argv = ["sshd", "-T", "-f", ctx.host.path(SSHD_CONFIG)]
    result = ctx.run(argv, timeout=SSHD_TIMEOUT, changes=False)
    privsep = re.search(r"Missing privilege separation directory: (/\S+)", result.stderr + result.stdout)
    if not result.ok and privsep and privsep.group(1).startswith(("/run/", "/var/run/")):
        # Debian's sshd.service creates /run/sshd (RuntimeDirectory=) only when it starts, and we
        # run before it at boot; sshd -T checks that directory before it says the config is fine.
        try:
            ctx.host.mkdir(privsep.group(1), 0o755)
        except OSError as e:
            log.warning("ssh: cannot create %s: %s", privsep.group(1), e.strerror)
        result = ctx.run(argv, timeout=SSHD_TIMEOUT, changes=False)
    if result.returncode == 127:
        log.warning("ssh: sshd could not be run (%s), the hardened configuration is not validated",
                    result.why())
        return None
    if not result.ok:
        return f"sshd -T rejected the hardened configuration: {result.why()}"
    return _ineffective(result.stdout)


def _ineffective(dump: str) -> Optional[str]:
    """Why the values `sshd -T` printed are not the wanted ones, or None when they are."""
    effective: Dict[str, str] = {}
    for line in lines(dump):
        keyword, _, value = line.partition(" ")
        effective.setdefault(keyword, value)
    wrong = []
    for key, value in WANTED.items():
        reported = effective.get(key.lower())
        if reported is None or reported.lower() not in _REPORTED_AS.get(value, (value,)):
            wrong.append(f"{key.lower()} {reported or '(not reported)'}")
    if not wrong:
        return None
    return (f"sshd -T reports {', '.join(wrong)} after the hardening (sshd keeps the first value "
            f"it reads: an earlier line, Include or `Match all` sets it)")


# -- management key ----------------------------------------------------------------------------
def _read_mgmt_key(ctx: Context) -> Tuple[Optional[Key], str, str]:
    """The platform key named by CONFIG_SSHMGMT_KEY and the line to authorize it with, or None,
    "" and a one-line reason."""
    path = ctx.settings.sshmgmt_key
    text = _read(ctx, path) if ctx.host.is_file(path) else None
    if text is None:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: no such file"
    found = [line.strip(_KEY_SPACE) for line in lines(text) if line.strip(_KEY_SPACE)]
    if not found:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: the file is empty"
    if len(found) > 1:
        return None, "", f"CONFIG_SSHMGMT_KEY={path}: expected one public key line, found {len(found)}"
    parts = re.split("[ \t]+", found[0], maxsplit=2)
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
    # The platform's comment is kept (if it is plain text); without one, the owner still sees
    # whose key this is.
    comment = parts[2] if len(parts) > 2 and parts[2].isprintable() else "gandi-vm management key"
    return (kind, blob), f"{kind} {blob} {comment}\n", ""


def _authorize(ctx: Context, key: Key, line: str) -> List[str]:
    problem = _root_ssh_dir(ctx)
    if problem:
        return [problem]
    if ctx.host.exists(AUTHORIZED_KEYS) and not ctx.host.is_file(AUTHORIZED_KEYS):
        return [f"{AUTHORIZED_KEYS} is not a regular file: left alone"]
    text = _read(ctx, AUTHORIZED_KEYS) or ""
    count = sum(authorized_key(entry) == key for entry in lines(text))
    if count == 0:
        log.info("ssh: adding the management key to %s", AUTHORIZED_KEYS)
    elif count > 1:
        log.info("ssh: the management key is in %s %d times, keeping the first", AUTHORIZED_KEYS, count)
    ctx.write(AUTHORIZED_KEYS, with_key(text, key, line), mode=0o600)
    failures = [_ensure_mode(ctx, AUTHORIZED_KEYS, 0o600), _ensure_root_owner(ctx, AUTHORIZED_KEYS)]
    return [failure for failure in failures if failure]


def with_key(text: str, key: Key, line: str) -> str:
    """authorized_keys text that authorizes `key` on exactly one line: the first one that already
    did is kept as it is (with its options), later ones are dropped, else `line` is appended.
    Every other line is kept byte for byte."""
    entries = lines_keepends(text)
    ours = [number for number, entry in enumerate(entries) if authorized_key(entry) == key]
    if not ours:
        if entries and not entries[-1].endswith("\n"):
            entries[-1] += "\n"
        return "".join(entries) + line
    return "".join(entry for number, entry in enumerate(entries) if number not in ours[1:])


def without_key(text: str, key: Key) -> str:
    """authorized_keys text without the lines that authorize `key`; every other line as it was."""
    return "".join(entry for entry in lines_keepends(text) if authorized_key(entry) != key)


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
    if ctx.write(AUTHORIZED_KEYS, without_key(ctx.host.read_text(AUTHORIZED_KEYS), key), mode=0o600):
        log.info("ssh: CONFIG_SSHMGMT=0, management key removed from %s", AUTHORIZED_KEYS)
    return []


def authorized_key(line: str) -> Optional[Key]:
    """(type, base64) of the key an authorized_keys line authorizes, as sshd reads the line; None
    for comments, blanks and lines sshd finds no key in.

    sshd stops at a NUL, splits words on " \\t" only, and first tries the line as a bare key; when
    that fails, it skips the options (up to the first space or tab outside double quotes, where
    \\" does not end a quote) and tries again."""
    text = line.split("\0", 1)[0].lstrip(_KEY_SPACE)
    if not text or text[0] in "\r\n#":
        return None
    key = _bare_key(text)
    if key is not None:
        return key
    at, quoted = 0, False
    while at < len(text) and (quoted or text[at] not in _KEY_SPACE):
        if text.startswith('\\"', at):
            at += 1
        elif text[at] == '"':
            quoted = not quoted
        at += 1
    if quoted:
        return None  # sshd: "invalid key option string"
    return _bare_key(text[at:].lstrip(_KEY_SPACE))


def _bare_key(text: str) -> Optional[Key]:
    """(type, base64) when text starts with a key type name and a base64 blob."""
    parts = re.split("[ \t]+", text, maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith(_KEY_TYPE_PREFIXES):
        return None
    # sshd's base64 decoder skips the whitespace it finds inside the blob (the "\r\n" at its end).
    blob = re.sub(r"[\n\r\v\f]", "", parts[1])
    return (parts[0], blob) if _BASE64.fullmatch(blob) else None


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
