"""The platform's swap disk on real loop devices: `disk attach` hands it to swap.py, which formats
a blank device or a `gandiswap` GPT partition, reuses a swap signature, never formats a used disk,
and `disk detach` turns it off again. (No archive on these disks: the config drive, which would be
presented at this machine's /gandi, is tested rooted in test_integration_configdrive.py.)"""

from __future__ import annotations

import os

from gandi_integration import MiB, SWAP_STATE_DIR, require, sh, sh_input, swaps, wait_for


def blkid(dev: str, tag: str) -> str:
    return sh("blkid", "-p", "-s", tag, "-o", "value", dev, check=False).stdout.decode().strip()


def test_a_blank_device_is_formatted_enabled_and_turned_off_at_detach(env):
    require("mkswap", "swapon", "swapoff")
    disk = env.disk(None)
    env.settings.update(CONFIG_SWAP_DEVICE=disk.name, CONFIG_SWAP_PRIORITY="7")

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert disk.dev in swaps(), str(run)
    assert blkid(disk.dev, "TYPE") == "swap" and blkid(disk.dev, "LABEL") == "swap"
    with open("/proc/swaps") as f:
        row = [line.split() for line in f if line.startswith(disk.dev + " ")
               or line.split()[0] == disk.dev][0]
    assert row[-1] == "7"
    assert env.mounts(disk.name) == [] and (not env.root.exists() or not os.listdir(env.root))
    assert (SWAP_STATE_DIR / f"{disk.name}.json").is_file()
    status = env.gandi("status", "--format", "yaml")
    assert disk.dev in status.stdout and "ours: true" in status.stdout, str(status)

    again = env.gandi("disk", "attach", disk.name)
    assert again.returncode == 0 and "already active (swapon by gandi)" in again.stderr, str(again)

    detach = env.gandi("disk", "detach", disk.name)
    assert detach.returncode == 0, str(detach)
    assert disk.dev not in swaps()
    assert not (SWAP_STATE_DIR / f"{disk.name}.json").exists()


def test_a_gandiswap_partition_is_formatted(env):
    require("mkswap", "swapon", "sfdisk", "partx")
    image = env.image(64)
    sh_input(["sfdisk", "-q", str(image)], 'label: gpt\nstart=2048, type=S, name="gandiswap"\n')
    with open(image, "r+b") as f:  # garbage in the partition: gandiswap is formatted anyway
        f.seek(2048 * 512)
        f.write(os.urandom(4096))
    loop = env.attach_loop(image, partscan=True)
    part = f"{loop}p1"
    if not wait_for(lambda: os.path.exists(f"/sys/class/block/{part}"), 1.0):
        sh("partx", "-a", f"/dev/{loop}")
    assert wait_for(lambda: os.path.exists(f"/dev/{part}"), 5.0)
    env.names += [loop, part]

    run = env.gandi("disk", "attach", part)

    assert run.returncode == 0, str(run)
    assert "gandiswap" in run.stderr and f"/dev/{part}" in swaps(), str(run)
    assert blkid(f"/dev/{part}", "LABEL") == "swap"
    whole = env.gandi("disk", "attach", loop)  # the disk itself: holds an active swap now
    assert whole.returncode == 0 and "skipped" in whole.stderr, str(whole)


def test_a_used_disk_is_never_formatted(env):
    require("mkswap", "swapon")
    disk = env.disk("ext4", label="data")
    env.settings.update(CONFIG_SWAP_DEVICE=disk.name, CONFIG_ALLOW_MOUNT="0")
    before = disk.image.read_bytes()[:1 * MiB]

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0, str(run)
    assert "holds ext4: never formatted" in run.stderr, str(run)
    assert disk.dev not in swaps()
    assert disk.image.read_bytes()[:1 * MiB] == before


def test_data_without_a_signature_is_never_formatted(env):
    require("mkswap", "swapon")
    disk = env.disk(None, prepare=lambda image: image.write_bytes(b"precious" * 1024
                                                                  + bytes(31 * MiB)))
    env.settings.update(CONFIG_SWAP_DEVICE=disk.name)

    run = env.gandi("disk", "attach", disk.name)

    assert run.returncode == 0 and "never formatted" in run.stderr, str(run)
    assert disk.dev not in swaps()
    assert disk.image.read_bytes()[:8] == b"precious"


def test_a_swap_labelled_swap_is_reused_without_mkswap(env):
    require("mkswap", "swapon")
    disk = env.disk("swap", label="swap")
    uuid = blkid(disk.dev, "UUID")

    run = env.gandi("mount-all")

    assert run.returncode == 0, str(run)
    assert disk.dev in swaps() and "reused" in run.stderr, str(run)
    assert blkid(disk.dev, "UUID") == uuid  # not formatted again
