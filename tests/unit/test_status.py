"""status.render: what reaches the terminal is printable, whatever a label or a lease holds."""

from __future__ import annotations

import pytest
import yaml

from gandi_vm import status

CYRILLIC = "\u0414\u0430\u043d\u043d\u044b\u0435"
HOSTILE = ["\x1b[2J", "\x07", "\x7f", "\x9b31m", "a\u2028b", "a\u2029b", "\u202eexe", "x\ny",
           "bad\udcff"]


def disk_row(**values):
    row = {"device": "vdb", "size": 1024, "fstype": "ext4", "label": "", "mountpoint": None,
           "state": "mounted", "reason": ""}
    row.update(values)
    return row


def iface_row(**values):
    row = {"interface": "eth1", "mac": "52:54:00:00:00:01", "driver": "virtio_net",
           "operstate": "up", "addresses": [], "stack": "dhcp", "table": None, "state": "up",
           "reason": "", "lease": None}
    row.update(values)
    return row


def assert_printable(text: str) -> None:
    for line in text.split("\n"):
        assert line.isprintable(), repr(line)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_list_cells_are_escaped_like_scalars(hostile):
    # Name servers and search domains from a lease went out raw: an escape sequence reached
    # the terminal.
    def render(value: str) -> str:
        lease = {"dns": ["192.0.2.53", value], "search": [value]}
        return status.render([disk_row(label=value)],
                             [iface_row(addresses=[value], lease=lease, interface=value)], "text")

    text = render(hostile)
    assert_printable(text)
    assert text.count("\n") == render("x").count("\n")  # no line break of its own either


@pytest.mark.parametrize("hostile", HOSTILE)
def test_yaml_is_printable_and_reads_back(hostile):
    disks = [disk_row(label=hostile, reason=[hostile])]
    text = status.render(disks, [iface_row(addresses=[hostile])], "yaml")
    assert_printable(text)
    assert yaml.safe_load(text)["disks"] == disks


def test_non_ascii_labels_stay_readable_in_the_table():
    text = status.render([disk_row(label=CYRILLIC, mountpoint=f"/srv/{CYRILLIC}")], [], "text")
    assert f"/srv/{CYRILLIC}" in text


def test_the_instance_says_where_its_configuration_came_from_and_what_was_skipped():
    record = {"source": "config-2", "origin": "openstack/latest/meta_data.json",
              "instance_id": "i-\x1b[31m", "applied_at": "2026-11-30T23:30:00Z",
              "skipped": ["users[1].name: not a valid user name"], "set": {"hostname": "web1"}}
    text = status.render([], [], "text", instance=record)
    assert "INSTANCE  i-\\x1b[31m from openstack/latest/meta_data.json (config-2), applied " \
           "2026-11-30T23:30:00Z, set hostname web1\n" in text
    assert "  skipped: users[1].name: not a valid user name\n" in text
    assert "no configuration applied" in status.render([], [], "text", instance={})
    assert "instance_id: \"i-\\e[31m\"" in status.render([], [], "yaml", instance=record)


def grow_row(**values):
    row = {"mountpoint": "/", "device": "vda1", "disk": "vda", "disk_size": 20 << 30,
           "partition_end": 10 << 30, "filesystem_size": 10 << 30, "left": 10 << 30,
           "state": "can grow", "reason": "growpart /dev/vda 1, resize2fs /dev/vda1"}
    row.update(values)
    return row


def test_the_grow_table_comes_last_with_human_sizes():
    text = status.render([disk_row()], [], "text", growth=[
        grow_row(), {"mountpoint": "/var", "state": "not mounted", "reason": ""}])
    *_, table = text.rstrip("\n").split("\n\n")
    assert [line.split() for line in table.splitlines()] == [
        ["GROW", "DISK", "DISK_SIZE", "PARTITION_END", "FILESYSTEM_SIZE", "LEFT", "STATE", "REASON"],
        ["/", "vda", "20.0GiB", "10.0GiB", "10.0GiB", "10.0GiB", "can", "grow", "growpart",
         "/dev/vda", "1,", "resize2fs", "/dev/vda1"],
        ["/var", "-", "-", "-", "-", "-", "not", "mounted", "-"]]
    assert "GROW" not in status.render([disk_row()], [], "text", growth=[])
    assert "GROW" not in status.render([disk_row()], [], "text")


@pytest.mark.parametrize("hostile", HOSTILE)
def test_grow_rows_are_printable(hostile):
    growth = [grow_row(mountpoint=f"/srv/{hostile}", reason=f"{hostile} cannot be grown online")]
    text = status.render([], [], "text", growth=growth)
    assert_printable(text)
    assert text.count("\n") == status.render([], [], "text", growth=[grow_row()]).count("\n")
    data = status.render([], [], "yaml", growth=growth)
    assert_printable(data)
    assert yaml.safe_load(data)["growth"] == growth
