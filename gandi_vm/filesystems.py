"""What each filesystem type needs before it is mounted: a check (grow.py grows them online)."""

from __future__ import annotations

from gandi_vm.host import Host
from gandi_vm.record import Record

EXT = ("ext2", "ext3", "ext4")

# e2fsck(8) EXIT CODE: a bit mask. 1 and 2 mean errors were found and corrected.
_E2FSCK_BITS = {
    4: "errors left uncorrected",
    8: "operational error",
    16: "usage or syntax error",
    32: "cancelled by user request",
    128: "shared-library error",
}


class Check(Record):
    ok: bool
    message: str


def check(host: Host, fstype: str, device: str, timeout: int) -> Check:
    """Check (and let the tool safely repair) a filesystem before it is mounted.

    Only ext2/3/4 are checked: `e2fsck -p` repairs what is safe without a human. XFS replays its
    log at mount time and `xfs_repair -n` would add nothing; other types mount as they are."""
    if fstype not in EXT:
        return Check(True, f"no pre-mount check for {fstype}")
    result = host.run(["e2fsck", "-p", host.path(device)], timeout=timeout)
    if host.dry_run:
        return Check(True, "e2fsck -p planned")
    code = result.returncode
    if code == 124:
        return Check(False, f"e2fsck timed out after {timeout}s")
    if code == 127:
        return Check(False, f"e2fsck could not run: {result.why()}")
    failures = [text for bit, text in _E2FSCK_BITS.items() if code & bit]
    if failures:
        return Check(False, f"e2fsck exit {code} ({', '.join(failures)}): {result.why()}")
    if code:
        return Check(True, f"e2fsck corrected errors (exit {code})")
    return Check(True, "e2fsck: clean")
