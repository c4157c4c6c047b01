"""Command line: argument parsing and dispatch only.

Exit status: 0 done (including a deliberate skip), 1 what was asked failed, 2 bad usage or an
unknown device. Handlers never end in a traceback on user data: expected errors become one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from gandi_vm import __version__

log = logging.getLogger("gandi")

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class _Formatter(logging.Formatter):
    """`warning: ...` on a terminal; `<4>...` when stderr is the journal, so priorities survive."""

    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self.journal:
            return f"<{_PRIORITY.get(record.levelno, 6)}>{message}"
        if record.levelno >= logging.WARNING:
            return f"gandi: {record.levelname.lower()}: {message}"
        return f"gandi: {message}"


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def _log_to_syslog() -> None:
    import logging.handlers

    if os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
        handler.ident = "gandi: "
        log.addHandler(handler)


def _parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the command (`gandi-vm disk attach X --dry-run`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", metavar="DIR", default=argparse.SUPPRESS,
                        help="act on a system rooted at DIR (all paths, /sys and /proc included)")
    common.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS,
                        help="print the plan, change nothing")
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="configuration file (default: /etc/default/gandi, /etc/sysconfig/gandi)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)

    parser = argparse.ArgumentParser(prog="gandi-vm", parents=[common],
                                     description="Make hot-plugged resources of a VM usable.")
    parser.add_argument("--version", action="version", version=f"gandi-vm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    disk = commands.add_parser("disk", parents=[common], help="one disk: attach, detach, resize")
    actions = disk.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("attach", "check and mount under the disk root"),
                         ("detach", "unmount what attach mounted (the unit's stop action)"),
                         ("resize", "grow what is on the disk after its capacity changed")):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("device", metavar="DEV", help="kernel name (vdb) or /dev path")

    commands.add_parser("mount-all", parents=[common],
                        help="boot: online vCPUs and memory, attach every disk present, grow")
    commands.add_parser("grow", parents=[common],
                        help="grow CONFIG_GROW_MOUNTPOINTS into the space their disk gained")

    iface = commands.add_parser("iface", parents=[common], help="network interfaces: DHCP, routing")
    actions = iface.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("attach", "configure (DHCP, own routing table if secondary)"),
                         ("detach", "release and remove what attach configured (the unit's stop)")):
        sub = actions.add_parser(action, parents=[common], help=text)
        sub.add_argument("interface", metavar="IFACE", help="interface name (ens4)")
    actions.add_parser("attach-all", parents=[common], help="every interface present (boot)")
    actions.add_parser("retune", parents=[common],
                       help="virtio-net queues of our interfaces to the vCPU count (CONFIG_MULTIQUEUE)")
    # The DHCP client's event script (dhcp.write_script); udhcpc passes the event as an argument.
    lease_event = actions.add_parser("lease", parents=[common])
    lease_event.add_argument("event", nargs="?")

    for kind, what in (("cpu", "vCPUs"), ("memory", "memory blocks")):
        resource = commands.add_parser(kind, parents=[common], help=f"{what}: online-all")
        resource_actions = resource.add_subparsers(dest="action", metavar="ACTION", required=True)
        resource_actions.add_parser("online-all", parents=[common],
                                    help=f"online every {what[:-1]} present and offline (boot)")
    commands.add_parser("hotplug-rules", parents=[common],
                        help="write the udev rule that onlines vCPUs and memory, for this configuration")
    commands.add_parser("early-boot", parents=[common],
                        help="boot, before local-fs.target: hotplug-rules, then grow")

    configure = commands.add_parser("config", parents=[common],
                                    help="boot-time configuration from /etc/default/gandi")
    config_actions = configure.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_actions.add_parser("list", parents=[common], help="each plugin, its flag, enabled or not")
    apply = config_actions.add_parser("apply", parents=[common],
                                      help="run the enabled plugins (--dry-run: diffs, no change)")
    apply.add_argument("--only", metavar="NAME", help="run this plugin only, even if disabled")

    status = commands.add_parser("status", parents=[common],
                                 help="disks, interfaces, swaps, vCPUs and memory: what gandi did and why")
    status.add_argument("--format", choices=("text", "yaml"), default="text")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    _setup_logging(verbose)

    from gandi_vm import config
    from gandi_vm.blockdev import NoSuchDevice
    from gandi_vm.host import Host
    from gandi_vm.netdev import NoSuchInterface

    if args.command == "iface" and args.action == "lease":
        _log_to_syslog()  # the DHCP client sends its script's stderr to /dev/null

    try:
        host = Host(getattr(args, "root", "/"), dry_run=getattr(args, "dry_run", False))
        settings = config.load(host, getattr(args, "config", None))
        return _dispatch(args, host, settings)
    except (NoSuchDevice, NoSuchInterface) as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("%s: %s", e.filename or args.command, e.strerror or e)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # A bug, not the user's data: the unit's journal gets one line that says which command
        # and what broke, not a traceback of which only the last line counts; -v keeps it all.
        from gandi_vm import sysfs

        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        log.error("%s: internal error: %s: %s", command, type(e).__name__, sysfs.quoted(str(e), 200))
        if verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace, host, settings) -> int:
    # Each command imports what it uses: an interpreter start is paid at every boot and event.
    if args.command == "disk":
        from gandi_vm import disk

        if args.action == "resize":
            return 1 if any(o.failed for o in disk.resize(host, settings, args.device)) else 0
        handler = {"attach": disk.attach, "detach": disk.detach}
        outcome = handler[args.action](host, settings, args.device)
        return 1 if outcome.failed else 0
    if args.command == "iface":
        from gandi_vm import net

        explicit = getattr(args, "config", None)
        if args.action == "lease":
            return net.lease_event(host, args.event, os.environ)
        if args.action == "retune":
            net.retune_all(host, settings)
            return 0
        if args.action == "attach-all":
            return 1 if any(o.failed for o in net.attach_all(host, settings, explicit)) else 0
        if args.action == "attach":
            return 1 if net.attach(host, settings, args.interface, explicit).failed else 0
        return 1 if net.detach(host, settings, args.interface).failed else 0
    if args.command in ("cpu", "memory"):
        from gandi_vm import cpu, memory

        module = cpu if args.command == "cpu" else memory
        return 1 if any(o.failed for o in module.online_all(host, settings)) else 0
    if args.command == "config":
        from gandi_vm import runner

        if args.action == "list":
            for row in runner.listing(settings):
                print(f"{row['plugin']:<11} {row['order']:>3}  {row['flag']:<18} "
                      f"{'enabled' if row['enabled'] else 'disabled':<8}  {row['does']}")
            return 0
        try:
            ran = runner.apply(host, settings, args.only)
        except runner.UnknownPlugin as e:
            log.error("%s", e)
            return 2
        return 1 if any(r.outcome.failed for r in ran) else 0
    if args.command in ("hotplug-rules", "early-boot"):
        from gandi_vm import online

        online.write_rules(host, settings)
        if args.command == "hotplug-rules":
            return 0
    if args.command in ("early-boot", "grow"):
        # early-boot: one process does both early jobs (no interpreter start of its own).
        from gandi_vm import grow

        return 1 if any(o.failed for o in grow.configured(host, settings)) else 0
    if args.command == "mount-all":
        from gandi_vm import cpu, disk, grow, memory

        # gandi-mount's whole boot job in one process (an interpreter start costs seconds under
        # emulation): online what is offline (a block that cannot be onlined is reported and
        # must not keep the disks from being mounted, nor decide the unit's result), mount.
        for module in (cpu, memory):
            try:
                module.online_all(host, settings)
            except Exception as e:  # whatever onlining does, the disks are still mounted
                log.error("%s online-all: failed: %s: %s", module.__name__.rsplit(".", 1)[-1],
                          type(e).__name__, e)
        outcomes = disk.mount_all(host, settings)
        # The root grew in early-boot; what local-fs.target mounted since then grows here.
        grown = grow.configured(host, settings, skip=("/",))
        return 1 if any(o.failed for o in [*outcomes, *grown]) else 0
    if args.command == "status":
        from gandi_vm import cpu, disk, grow, memory, net, provision, status, swap

        print(status.render(disk.status(host, settings), net.status(host), args.format,
                            cpu.status(host), memory.status(host), swap.status(host),
                            provision.status(host), grow.status(host, settings)), end="")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
