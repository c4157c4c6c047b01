"""A filesystem label, written by whoever made the disk image, -> one safe path component.

A label can be `../../etc`, `a b`, `$(reboot)`, 255 bytes or invalid UTF-8. We keep letters, digits,
combining marks (the vowel signs of Indic scripts, a decomposed accent, an emoji's variation
selector), other symbols (emoji), `.`, `_` and `-`; fold every other run of characters into one
`_`, strip leading and trailing punctuation (so no hidden or `..` names), bound the length, and
fall back to the kernel name when nothing usable is left. None of the kept characters is a
separator, a control or an invisible format character. The caller still checks that the final
path resolves inside the disk root.
"""

from __future__ import annotations

import unicodedata

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Callable, Optional

MAX_BYTES = 64
_PUNCTUATION = "._-"
_KEPT_CATEGORIES = ("Mn", "Mc", "Me", "So")


def component(label: Optional[bytes], fallback: str) -> str:
    """The directory name for a disk: its sanitized label, else the kernel name."""
    if label is None:
        return fallback
    try:
        text = label.decode("utf-8")
    except UnicodeDecodeError:
        return fallback
    out = []
    for char in text:
        if char.isalnum() or char in _PUNCTUATION or unicodedata.category(char) in _KEPT_CATEGORIES:
            out.append(char)
        elif not out or out[-1] != "_":
            out.append("_")
    name = "".join(out).strip(_PUNCTUATION)
    while len(name.encode("utf-8")) > MAX_BYTES:
        name = name[:-1].rstrip(_PUNCTUATION)
    return name or fallback


def choose(disk_root: str, name: str, unusable: Callable[[str], Optional[str]],
           limit: int = 100) -> Optional[str]:
    """The first of `root/name`, `root/name_2`, `root/name_3`... that `unusable` accepts.

    `unusable(path)` returns None for a free path, or the reason it cannot be used (mounted by
    another device, a non-empty directory, a file...). None when every candidate is taken."""
    for index in range(1, limit + 1):
        candidate = f"{disk_root}/{name}" if index == 1 else f"{disk_root}/{name}_{index}"
        if unusable(candidate) is None:
            return candidate
    return None
