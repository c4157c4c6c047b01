"""Command line: argument parsing and dispatch only.

Exit status: 0 done (including a deliberate skip), 1 what was asked failed, 2 bad usage or an
unknown device. Handlers never end in a traceback on user data: expected errors become one line.

Start-up is paid at every boot and hotplug event (seconds under emulation), so a command line
that udev, systemd or a DHCP client gives is read by a small parser of its own and a command
imports only the modules it uses (`load`). Everything else (--help, --version, a typo, an
abbreviated option) is read by argparse, imported then, so its help text and its usage errors
(exit 2) stay the reference. Throughout gandi_vm, an import inside a function is there for the
same start-up cost: the paths that do not need the module do not load it.
"""

from __future__ import annotations

import os
import sys

from gandi_vm import __version__, log

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

    from gandi_vm.config import Settings
    from gandi_vm.host import Host

    Action = Callable[["Arguments", Host, Settings], int]


class Arguments:
    """What the command line asked, the same attributes whichever parser read it."""

    def __init__(self, words: Tuple[str, ...], values: Dict[str, object]):
        self.words = words  # ("disk", "attach"), ("status",)
        self.root = "/"
        self.dry_run = False
        self.config: Optional[str] = None
        self.verbose = False
        self.device = self.interface = self.event = self.only = None
        self.format = "text"
        self.batch = False
        for name, value in values.items():
            setattr(self, name, value)


class Command:
    """One command of the table: its arguments, and what it imports and does."""

    __slots__ = ("positionals", "optional", "options", "flags", "load", "syslog", "settings")

    def __init__(self, load: Callable[[], Action], positionals: Tuple[str, ...] = (),
                 optional: Optional[str] = None,
                 options: Optional[Dict[str, Tuple[str, Optional[Tuple[str, ...]]]]] = None,
                 flags: Optional[Dict[str, str]] = None, syslog: bool = False,
                 settings: bool = True):
        self.load = load  # imports the command's modules, returns its action
        self.positionals = positionals  # required, in order
        self.optional = optional  # one optional positional after them
        self.options = options or {}  # the command's own valued options: --name -> (attribute, choices)
        self.flags = flags or {}  # the command's own flags: --name -> attribute
        self.syslog = syslog  # also log to syslog: the caller discards our stderr
        self.settings = settings  # reads /etc/default/gandi (each agent's worker reads its own)


def _status(outcomes: Sequence[Any]) -> int:
    """Exit status of a command that reports outcomes: 1 if any failed."""
    return 1 if any(o.failed for o in outcomes) else 0


# -- the commands (each loader imports what its action uses, and nothing before it is chosen) --
def _disk_attach() -> Action:
    from gandi_vm import disk

    return lambda args, host, settings: _status([disk.attach(host, settings, args.device,
                                                             batch=args.batch)])


def _disk_detach() -> Action:
    from gandi_vm import disk

    return lambda args, host, settings: _status([disk.detach(host, settings, args.device)])


def _disk_resize() -> Action:
    from gandi_vm import disk

    return lambda args, host, settings: _status(disk.resize(host, settings, args.device))


def _mount_all() -> Action:
    from gandi_vm import cpu, disk, memory

    def mount_all(args: Arguments, host: Host, settings: Settings) -> int:
        # gandi-mount's whole boot job in one process (an interpreter start costs seconds under
        # emulation): online what is offline (a block that cannot be onlined is reported and
        # must not keep the disks from being mounted, nor decide the unit's result), mount,
        # then grow what is configured to grow (the root included: no earlier process did).
        for module in (cpu, memory):
            try:
                module.online_all(host, settings)
            except Exception as e:  # whatever onlining does, the disks are still mounted
                log.error("%s online-all: failed: %s: %s", module.__name__.rsplit(".", 1)[-1],
                          type(e).__name__, e)
        outcomes = disk.mount_all(host, settings)
        from gandi_vm import grow  # loaded after the mounts, which do not wait for it

        return _status([*outcomes, *grow.configured(host, settings)])

    return mount_all


def _grow() -> Action:
    from gandi_vm import grow

    return lambda args, host, settings: _status(grow.configured(host, settings))


def _iface_attach() -> Action:
    from gandi_vm import net

    return lambda args, host, settings: _status([net.attach(host, settings, args.interface,
                                                            args.config)])


def _iface_detach() -> Action:
    from gandi_vm import net

    return lambda args, host, settings: _status([net.detach(host, settings, args.interface)])


def _iface_attach_all() -> Action:
    from gandi_vm import net

    return lambda args, host, settings: _status(net.attach_all(host, settings, args.config))


def _iface_retune() -> Action:
    from gandi_vm import net

    def retune(args: Arguments, host: Host, settings: Settings) -> int:
        net.retune_all(host, settings)
        return 0

    return retune


def _iface_lease() -> Action:
    from gandi_vm import net

    return lambda args, host, settings: net.lease_event(host, args.event, os.environ)


def _cpu_online_all() -> Action:
    from gandi_vm import cpu

    return lambda args, host, settings: _status(cpu.online_all(host, settings))


def _memory_online_all() -> Action:
    from gandi_vm import memory

    return lambda args, host, settings: _status(memory.online_all(host, settings))


def _config_list() -> Action:
    from gandi_vm import runner

    def listing(args: Arguments, host: Host, settings: Settings) -> int:
        for row in runner.listing(settings):
            print(f"{row['plugin']:<11} {row['order']:>3}  {row['flag']:<18} "
                  f"{'enabled' if row['enabled'] else 'disabled':<8}  {row['does']}")
        return 0

    return listing


def _config_apply() -> Action:
    from gandi_vm import runner

    return lambda args, host, settings: _status([r.outcome for r in runner.apply(host, settings,
                                                                                 args.only)])


def _agent() -> Action:
    from gandi_vm import agent

    return lambda args, host, settings: agent.main(args.root)


def _status_report() -> Action:
    from gandi_vm import cpu, disk, grow, memory, net, provision, status, swap

    def report(args: Arguments, host: Host, settings: Settings) -> int:
        print(status.render(disk.status(host, settings), net.status(host), args.format,
                            cpu.status(host), memory.status(host), swap.status(host),
                            provision.status(host), grow.status(host, settings)), end="")
        return 0

    return report


COMMANDS: Dict[Tuple[str, ...], Command] = {
    # --batch: the units' gate (systemd/unit-gate) holds the burst lock for this attach.
    ("disk", "attach"): Command(_disk_attach, ("device",), flags={"--batch": "batch"}),
    ("disk", "detach"): Command(_disk_detach, ("device",)),
    ("disk", "resize"): Command(_disk_resize, ("device",)),
    ("mount-all",): Command(_mount_all),
    ("grow",): Command(_grow),
    ("iface", "attach"): Command(_iface_attach, ("interface",)),
    ("iface", "detach"): Command(_iface_detach, ("interface",)),
    ("iface", "attach-all"): Command(_iface_attach_all),
    ("iface", "retune"): Command(_iface_retune),
    # The DHCP client's event script (dhcp.write_script); udhcpc passes the event as an argument.
    ("iface", "lease"): Command(_iface_lease, optional="event", syslog=True),
    ("cpu", "online-all"): Command(_cpu_online_all),
    ("memory", "online-all"): Command(_memory_online_all),
    ("config", "list"): Command(_config_list),
    ("config", "apply"): Command(_config_apply, options={"--only": ("only", None)}),
    # gandi-agent.service: the units' commands in one resident interpreter (systemd/unit-gate).
    ("agent",): Command(_agent, settings=False),
    ("status",): Command(_status_report, options={"--format": ("format", ("text", "yaml"))}),
}
_GROUPS = {words[0] for words in COMMANDS if len(words) > 1}
# Global options, accepted before or after the command's words.
_FLAGS = {"--dry-run": "dry_run", "-v": "verbose", "--verbose": "verbose"}
_VALUED = {"--root": "root", "--config": "config"}


# -- parsing -------------------------------------------------------------------------------------
def _fast_parse(argv: Sequence[str]) -> Optional[Arguments]:
    """The command line as argparse would read it, or None for anything this parser does not
    accept exactly as written (an abbreviation, -h, a missing or extra argument...)."""
    words: List[str] = []
    command: Optional[Command] = None
    values: Dict[str, object] = {}
    positionals: List[str] = []
    rest = list(argv)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("-"):
            name, equals, value = arg.partition("=")
            if name in _FLAGS and not equals:
                values[_FLAGS[name]] = True
            elif command is not None and name in command.flags and not equals:
                values[command.flags[name]] = True
            else:
                attribute, choices = ((_VALUED[name], None) if name in _VALUED
                                      else command.options.get(name, (None, None)) if command
                                      else (None, None))
                if attribute is None:
                    return None
                if not equals:
                    if not rest or rest[0].startswith("-"):
                        return None
                    value = rest.pop(0)
                if choices is not None and value not in choices:
                    return None
                values[attribute] = value
        elif command is None:
            words.append(arg)
            command = COMMANDS.get(tuple(words))
            if command is None and (len(words) > 1 or words[0] not in _GROUPS):
                return None
        else:
            positionals.append(arg)
    if command is None:
        return None
    required = len(command.positionals)
    if not required <= len(positionals) <= required + (command.optional is not None):
        return None
    names = command.positionals + ((command.optional,) if command.optional else ())
    values.update(zip(names, positionals))
    return Arguments(tuple(words), values)


def _parser() -> argparse.ArgumentParser:
    import argparse  # the full parser only for help, --version and what the fast one refuses

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
        if action == "attach":
            sub.add_argument("--batch", action="store_true", help="also attach the other disks "
                             "present that nothing attached at this boot (the units' gate)")

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
    lease_event = actions.add_parser("lease", parents=[common])
    lease_event.add_argument("event", nargs="?")

    for kind, what in (("cpu", "vCPUs"), ("memory", "memory blocks")):
        resource = commands.add_parser(kind, parents=[common], help=f"{what}: online-all")
        resource_actions = resource.add_subparsers(dest="action", metavar="ACTION", required=True)
        resource_actions.add_parser("online-all", parents=[common],
                                    help=f"online every {what[:-1]} present and offline (boot)")

    configure = commands.add_parser("config", parents=[common],
                                    help="boot-time configuration from /etc/default/gandi")
    config_actions = configure.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_actions.add_parser("list", parents=[common], help="each plugin, its flag, enabled or not")
    apply = config_actions.add_parser("apply", parents=[common],
                                      help="run the enabled plugins (--dry-run: diffs, no change)")
    apply.add_argument("--only", metavar="NAME", help="run this plugin only, even if disabled")

    commands.add_parser("agent", parents=[common],
                        help="serve the units' commands from one resident process (gandi-agent.service)")

    status = commands.add_parser("status", parents=[common],
                                 help="disks, interfaces, swaps, vCPUs and memory: what gandi did and why")
    status.add_argument("--format", choices=("text", "yaml"), default="text")
    return parser


def parse(argv: Sequence[str]) -> Arguments:
    """The arguments; exits (argparse's way: help, version, a usage error with status 2) for
    anything that is not a command to run."""
    fast = _fast_parse(argv)
    if fast is not None:
        return fast
    namespace = vars(_parser().parse_args(argv))
    words = tuple(namespace.pop(key) for key in ("command", "action") if key in namespace)
    return Arguments(words, namespace)


def load(argv: Optional[Sequence[str]] = None) -> Tuple[Action, Arguments]:
    """Parse and import what the command uses, without acting: a handler's start-up."""
    args = parse(sys.argv[1:] if argv is None else argv)
    return COMMANDS[args.words].load(), args


def main(argv: Optional[List[str]] = None) -> int:
    action, args = load(argv)
    log.configure(args.verbose, journal=bool(os.environ.get("JOURNAL_STREAM")))
    if COMMANDS[args.words].syslog:
        log.to_syslog()  # the DHCP client sends its script's stderr to /dev/null

    from gandi_vm import config
    from gandi_vm.host import Host, UnknownName

    try:
        host = Host(args.root, dry_run=args.dry_run)
        settings = (config.load(host, args.config) if COMMANDS[args.words].settings
                    else config.Settings())
        return action(args, host, settings)
    except UnknownName as e:
        log.error("%s", e)
        return 2
    except OSError as e:
        log.error("%s: %s", e.filename or args.words[0], e.strerror or e)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # A bug, not the user's data: the unit's journal gets one line that says which command
        # and what broke, not a traceback of which only the last line counts; -v keeps it all.
        from gandi_vm import sysfs

        log.error("%s: internal error: %s: %s", " ".join(args.words), type(e).__name__,
                  sysfs.quoted(str(e), 200))
        if args.verbose:
            import traceback

            traceback.print_exc(file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
