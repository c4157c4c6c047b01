"""Helpers for the plugin tests: a small fake root in the pyfakefs `fs`, lease records as
interface attach writes them, a Context, and a snapshot of every file (content, link target,
inode, mtime) to show that an apply changed no byte."""

from __future__ import annotations

import io
import os
from gandi_vm.record import replace
from typing import Dict, Tuple

import yaml  # loaded now: pyfakefs unloads modules first imported during a test
from fakesys import FakeHost

from gandi_vm.config import Settings
from gandi_vm.plugins import Context

Entry = Tuple[str, object, int, int, int, int]


def put(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def link(target: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def lease(name: str = "eth0", role: str = "primary", **data: object) -> None:
    """The record interface attach leaves in /run/gandi/iface (only the lease part matters)."""
    record = {"iface": name, "role": role, "lease": {"address": "10.0.0.5", "prefixlen": 24, **data}}
    put(f"/run/gandi/iface/{name}.yaml", yaml.safe_dump(record, sort_keys=False))


def context(host: FakeHost, **settings: object) -> Context:
    return Context(host=host, settings=replace(Settings(), **settings))


def dry_host() -> Tuple[FakeHost, io.StringIO]:
    plan = io.StringIO()
    host = FakeHost(dry_run=True, plan=plan)
    host.show_diffs = True
    return host, plan


def snapshot(top: str = "/") -> Dict[str, Entry]:
    """Every file, link and directory under top: (kind, content or target, inode, mtime_ns, mode,
    uid), so that a rewrite with the same text, or a chmod or chown, still shows."""
    tree: Dict[str, Entry] = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if os.path.islink(path):
                kind, content = "link", os.readlink(path)
            elif os.path.isdir(path):
                kind, content = "dir", None
            else:
                with open(path, "rb") as f:
                    kind, content = "file", f.read()
            tree[path] = (kind, content, st.st_ino, st.st_mtime_ns, st.st_mode, st.st_uid)
    return tree
