"""Network interfaces: attach (DHCP, own routing table for a secondary interface), detach,
attach-all, the DHCP client's lease events, status.

The primary interface is the one holding the main table's default route when an interface is
attached; it is never touched. Each decision is a pure function of facts (`skip_reason`,
`choose`), each action a short list of routing/netstack/dhcp calls, and what was done is recorded
in /run/gandi/iface/IFACE.yaml for detach, status and the boot-time plugins.
"""

from __future__ import annotations

import time

from gandi_vm import lease, log, netdev, netstack, routing, sysfs
from gandi_vm.config import Settings
from gandi_vm.host import Host, lines
from gandi_vm.lease import Lease, LeaseError
from gandi_vm.netdev import NetDevice
from gandi_vm.record import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up cost)
if TYPE_CHECKING:
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple


CONFIGURED, SKIPPED, LEFT, FAILED, UNCHANGED, DETACHED = (
    "configured", "skipped", "left", "failed", "unchanged", "detached")
MAX_BACKOFF = 30
ETHTOOL_TIMEOUT = 10


class Outcome(Record):
    interface: str
    state: str
    reason: str
    address: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.state == FAILED

    def report(self, host: Host) -> "Outcome":
        prefix = "(dry run) " if host.dry_run else ""
        log.log(log.ERROR if self.failed else log.INFO, "%siface %s: %s: %s",
                prefix, self.interface, self.state, self.reason)
        return self


# -- decisions (pure) --------------------------------------------------------------------------
def skip_reason(dev: NetDevice, settings: Settings) -> Optional[str]:
    """Why an interface is not ours to configure, from sysfs facts and the configuration."""
    import fnmatch  # start-up cost (see gandi_vm.cli)

    if not settings.network:
        return "CONFIG_NETWORK=0"
    if dev.loopback:
        return "loopback"
    if not dev.backed:
        return f"virtual interface ({dev.kind or 'no backing device'})"
    if any(fnmatch.fnmatchcase(dev.name, pattern) for pattern in settings.nodhcp):
        return "listed in CONFIG_NODHCP"
    return None


def choose(running: Sequence[str], nm_state: str) -> str:
    """The stack that will configure an unclaimed interface."""
    if netstack.NM in running and nm_state != "unmanaged":
        return netstack.NM
    if netstack.NETWORKD in running:
        return netstack.NETWORKD
    return netstack.OWN


def channels(online_cpus: int, ethtool_l: str) -> Optional[Tuple[int, int]]:
    """(wanted, current) combined channels from `ethtool -l` output; None if not multiqueue."""
    maximum = current = None
    section = None
    for line in lines(ethtool_l):
        if line.startswith("Pre-set maximums"):
            section = "max"
        elif line.startswith("Current hardware settings"):
            section = "current"
        elif line.strip().startswith("Combined:"):
            try:
                value = sysfs.number(line.split(":", 1)[1].strip(), limit=2 ** 16)
            except sysfs.Garbage:
                continue
            if section == "max":
                maximum = value
            elif section == "current":
                current = value
    if not maximum or maximum < 2 or current is None:
        return None
    return min(online_cpus, maximum), current


def backoff(attempt: int) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based): 2, 4, 8... up to 30."""
    return min(MAX_BACKOFF, 2 ** attempt)


# -- attach --------------------------------------------------------------------------------------
def attach(host: Host, settings: Settings, name: str, config: Optional[str] = None) -> Outcome:
    name = netdev.checked_name(name)
    with host.lock(f"iface-{name}"):
        outcome = _attach(host, settings, name, config).report(host)
    if outcome.state == CONFIGURED and not host.dry_run:
        from gandi_vm.hooks import run_hook  # start-up cost (see gandi_vm.cli)

        _apply_lease_plugins(host, settings, name)
        run_hook(host, settings.hook_dir, "post-iface-attach", [name])
    return outcome


# The boot-time plugins that use what a DHCP server said. gandi-config.service runs at boot with
# whatever lease data exists then; a primary interface's lease often comes later (or with a NIC
# plugged afterwards), so those plugins run again when it arrives.
LEASE_PLUGINS = ("hostname", "nameserver")


def _apply_lease_plugins(host: Host, settings: Settings, name: str) -> None:
    record = lease.load(host, name) or {}
    if record.get("role") != "primary":
        return
    from gandi_vm import runner

    for plugin in LEASE_PLUGINS:
        runner.apply(host, settings, only=plugin, respect_flag=True)


def _attach(host: Host, settings: Settings, name: str, config: Optional[str]) -> Outcome:
    dev = netdev.read(host, name)
    record: Dict[str, object] = {"interface": name, "mac": dev.mac, "ifindex": dev.ifindex,
                                 "driver": dev.driver}

    def done(status: str, reason: str, address: Optional[str] = None) -> Outcome:
        if status in (SKIPPED, LEFT):
            record.update(state=status, reason=reason)
            lease.save(host, name, record)
            host.write_text(untouched_marker(name), f"{status}: {reason}\n")
        return Outcome(name, status, reason, address)

    why = skip_reason(dev, settings)
    if why:
        return done(SKIPPED, why)
    previous = lease.load(host, name)
    present = routing.addresses(host, name)
    if previous and previous.get("state") == CONFIGURED and previous.get("address") in present:
        return Outcome(name, UNCHANGED, f"already configured ({previous.get('stack')}, "
                                        f"{previous.get('address')})", str(previous["address"]))
    primary = routing.default_route_interface(host)
    if primary == name:
        return done(LEFT, "holds the default route: configured by someone else")
    if present:
        return done(LEFT, f"already has {present[0]}: configured by someone else")
    stack, owner = _owner(host, dev)
    if owner:
        return done(LEFT, owner)

    host.remove(untouched_marker(name))  # from now on, detach has something to undo
    table = routing.table_for(dev.ifindex) if primary else None
    record.update(role="secondary" if primary else "primary", primary=primary, stack=stack,
                  table=table, state="configuring", reason="waiting for a DHCP lease")
    if stack == netstack.OWN:
        from gandi_vm import dhcp  # start-up cost (see gandi_vm.cli)

        record["client"] = dhcp.installed(host)
        if not record["client"]:
            record.update(state=FAILED, reason="no DHCP client installed (dhclient, dhcpcd, udhcpc)")
            lease.save(host, name, record)
            return Outcome(name, FAILED, str(record["reason"]))
    lease.save(host, name, record)
    _prepare(host, dev, record)

    address = _obtain(host, settings, dev, record, config)
    if address is None:
        _unprepare(host, name, record)
        why = (f"no DHCP lease after {settings.dhcp_retries} attempts of "
               f"{settings.dhcp_timeout}s; nothing changed")
        record.update(state=FAILED, reason=why)
        lease.save(host, name, record)
        return Outcome(name, FAILED, why)
    record.update(lease.load(host, name) or {})  # the lease script added what the server said
    record.update(state=CONFIGURED, address=address,
                  reason=f"{address} via {stack}" + (f", table {table}" if table else ""))
    lease.save(host, name, record)
    # The queues wait for the address (their `ethtool` runs would delay it), and for the record
    # to say CONFIGURED: a vCPU hot-added meanwhile is then seen by this tuning or by retune_all,
    # which tunes configured interfaces only. A failed attach never tuned anything.
    if settings.multiqueue:
        tune_channels(host, dev)
    return Outcome(name, CONFIGURED, str(record["reason"]), address)


def _owner(host: Host, dev: NetDevice) -> Tuple[str, Optional[str]]:
    """The stack that will configure the interface, and why it is someone else's, if it is: the
    owner's files in /etc, a NetworkManager profile in /etc, a .network file networkd applies."""
    claimed = netstack.configured_in_files(host, dev)
    if claimed:
        return netstack.OWN, f"configured in {claimed}"
    running = netstack.running(host)
    nm_state, nm_active = netstack.nm_verdict(host, dev) if netstack.NM in running else ("", "")
    stack = choose(running, nm_state)
    if stack == netstack.NM and nm_active and nm_active != netstack.nm_profile(dev.name):
        owner_file = netstack.nm_profile_file(host, nm_active)
        if owner_file.startswith("/etc/"):
            return stack, f"NetworkManager profile {nm_active!r} ({owner_file})"
    if stack == netstack.NETWORKD and not host.exists(netstack.networkd_file(dev.name)):
        verdict = netstack.networkd_verdict(host, dev)
        if verdict != "unmanaged":
            return stack, f"systemd-networkd already manages it ({verdict})"
    return stack, None


def _prepare(host: Host, dev: NetDevice, record: Dict[str, object]) -> None:
    """Before DHCP: the link up (our own client) and the sysctls (the queues are tuned once the
    address is there). Recorded, so that a failure or a detach puts things back as they were."""
    if record["stack"] == netstack.OWN:
        record["link_was_up"] = dev.operstate == "up"
        routing.link_up(host, dev.name)
    sysctls = dict(routing.RA_SYSCTLS)
    if record["table"] is not None:
        sysctls.update(routing.SECONDARY_SYSCTLS)
        sysctls.update(routing.SECONDARY_RA_SYSCTLS)
    record["sysctl"] = routing.set_sysctls(host, dev.name, sysctls)
    lease.save(host, dev.name, record)


def _unprepare(host: Host, name: str, record: Dict[str, object]) -> None:
    if record.get("link_was_up") is False and host.exists(f"/sys/class/net/{name}"):
        routing.link_down(host, name)
    sysctl = record.pop("sysctl", None)
    routing.restore_sysctls(host, sysctl if isinstance(sysctl, dict) else {})
    host.remove(multiqueue_marker(name))


def _obtain(host: Host, settings: Settings, dev: NetDevice, record: Dict[str, object],
            config: Optional[str]) -> Optional[str]:
    """Get a lease through the chosen stack, with a bounded backoff between attempts; the
    address (cidr) on success. A failed attempt leaves nothing behind."""
    for attempt in range(1, settings.dhcp_retries + 1):
        address = _attempt(host, settings, dev, record, config)
        if address or host.dry_run:
            return address or "(planned)"
        if attempt < settings.dhcp_retries:
            wait = backoff(attempt)
            log.warning("iface %s: no DHCP lease within %ss (attempt %d of %d); retrying in %ss",
                        dev.name, settings.dhcp_timeout, attempt, settings.dhcp_retries, wait)
            time.sleep(wait)
        else:
            log.warning("iface %s: no DHCP lease within %ss (attempt %d of %d); giving up",
                        dev.name, settings.dhcp_timeout, attempt, settings.dhcp_retries)
    return None


def _attempt(host: Host, settings: Settings, dev: NetDevice, record: Dict[str, object],
             config: Optional[str]) -> Optional[str]:
    """One DHCP attempt through the chosen stack; what a failed one started is undone."""
    table = _table(record)
    if record["stack"] == netstack.OWN:
        return _attempt_own(host, settings, dev, str(record["client"]), table, config)
    attempt = _attempt_networkd if record["stack"] == netstack.NETWORKD else _attempt_nm
    address, found = attempt(host, dev, table, settings.dhcp_timeout)
    if address:
        if found:
            record["lease"] = found.as_dict()
        return address
    if not host.dry_run:
        _unconfigure_stack(host, dev.name, record)
    return None


def _attempt_own(host: Host, settings: Settings, dev: NetDevice, client: str,
                 table: Optional[int], config: Optional[str]) -> Optional[str]:
    """Our client: its first lease is handed over by the event script and applied here, as
    lease_event would (one interpreter start fewer); later events go to `iface lease`."""
    from gandi_vm import dhcp  # start-up cost (see gandi_vm.cli)

    script = dhcp.write_script(host, config)
    argv = dhcp.start_argv(host, client, dev.name, script, settings.dhcp_timeout, table is not None)
    with dhcp.handing_over(host, dev.name, lambda event, env: lease_event(host, event, env)):
        result = host.run(argv, timeout=settings.dhcp_timeout + 15)
    if host.dry_run:
        after = (f"default route via its gateway in table {table} and `ip rule from "
                 f"<address> lookup {table}`" if table is not None else
                 "default route via its gateway in the main table")
        log.info("iface %s: on each lease, the event script adds the address and the %s",
                 dev.name, after)
        return None  # nothing started, nothing to stop; _obtain reports the plan
    current = lease.load(host, dev.name) or {}
    if result.ok and current.get("lease"):
        return str(current["address"])
    dhcp.stop(host, client, dev.name, script)  # a client that timed out must not linger
    return None


def _attempt_networkd(host: Host, dev: NetDevice, table: Optional[int],
                      timeout: int) -> Tuple[Optional[str], Optional[Lease]]:
    """A runtime .network file; the source rule needs the address, so a second pass adds it."""
    path = netstack.networkd_file(dev.name)
    host.write_text(path, netstack.networkd_text(dev, table, None))
    netstack.networkd_reload(host)
    address = netstack.wait_address(host, dev.name, timeout)
    if address and table is not None:
        host.write_text(path, netstack.networkd_text(dev, table, address.split("/")[0]))
        netstack.networkd_reload(host)
    return address, netstack.networkd_lease(host, dev)


def _attempt_nm(host: Host, dev: NetDevice, table: Optional[int],
                timeout: int) -> Tuple[Optional[str], Optional[Lease]]:
    """An unsaved profile; as with networkd, the source rule follows the address."""
    profile = netstack.nm_profile(dev.name)
    host.run(["nmcli", "connection", "delete", profile], timeout=netstack.QUERY_TIMEOUT)
    host.run(netstack.nm_add_argv(dev, table, timeout), timeout=netstack.QUERY_TIMEOUT)
    host.run(["nmcli", "--wait", str(timeout), "connection", "up", profile], timeout=timeout + 15)
    address = netstack.wait_address(host, dev.name, 1)
    if address and table is not None:
        host.run(netstack.nm_rule_argv(dev, table, address.split("/")[0]),
                 timeout=netstack.QUERY_TIMEOUT)
        host.run(["nmcli", "device", "reapply", dev.name], timeout=netstack.QUERY_TIMEOUT)
    return address, netstack.nm_lease(host, dev)


def tune_channels(host: Host, dev: NetDevice) -> None:
    """CONFIG_MULTIQUEUE: one virtio-net queue pair per online vCPU, up to the device's maximum."""
    if dev.driver != "virtio_net":
        return
    from gandi_vm import cpu  # start-up cost (see gandi_vm.cli)

    shown = host.run(["ethtool", "-l", dev.name], timeout=ETHTOOL_TIMEOUT, changes=False)
    if shown.returncode == 127:
        log.info("iface %s: ethtool not installed, queues left as they are", dev.name)
        return
    wanted = channels(cpu.online_count(host), shown.stdout) if shown.ok else None
    if wanted is None:
        return
    # The marker lets gandi-retune.service (wanted by every vCPU hot-add) run only when there is
    # something to re-tune: systemd checks it as a condition, without starting a process.
    host.write_text(multiqueue_marker(dev.name), "")
    if wanted[0] == wanted[1]:
        return
    result = host.run(["ethtool", "-L", dev.name, "combined", str(wanted[0])],
                      timeout=ETHTOOL_TIMEOUT)
    if result.ok:
        log.info("iface %s: %d combined queues (was %d)", dev.name, *wanted)
    else:
        log.warning("iface %s: ethtool -L combined %d: %s", dev.name, wanted[0], result.why())


def multiqueue_marker(name: str) -> str:
    return f"{lease.STATE_DIR}/{name}.multiqueue"


def untouched_marker(name: str) -> str:
    """Nothing of ours on the interface, and why: the units' gate (systemd/unit-gate) writes it
    when it leaves an interface without gandi-vm, attach when it skips or leaves one; a stop
    finding it needs no gandi-vm. One line: the state and the reason, which status shows."""
    return f"{lease.STATE_DIR}/{name}.untouched"


def retune_all(host: Host, settings: Settings) -> None:
    """After vCPUs changed: re-tune the queues of every interface we configured."""
    if not settings.multiqueue:
        return
    for name in lease.recorded(host):
        if (lease.load(host, name) or {}).get("state") != CONFIGURED:
            continue
        try:
            tune_channels(host, netdev.read(host, name))
        except netdev.NoSuchInterface:
            continue


# -- lease events (the DHCP client's script) ------------------------------------------------------
def lease_event(host: Host, event: Optional[str], env: Mapping[str, str]) -> int:
    """Apply one event of our DHCP client to the interface's record: `iface lease` (the event
    script's call) and, for the first lease, the attach the script hands it to. The exit status
    matters to dhclient for TIMEOUT only (0 would make it trust an old lease without a server).
    PREINIT never comes here: the script answers it (attach brought the link up)."""
    from gandi_vm import dhcp  # start-up cost (see gandi_vm.cli)

    name = netdev.checked_name(env.get("interface", ""))
    reason = event or env.get("reason", "")
    record = lease.load(host, name)
    if record is None:
        log.warning("iface %s: lease event %r for an interface we did not attach; ignored",
                    name, reason[:32])
        return 0
    table = _table(record)
    previous = lease.of_record(record)
    if reason in dhcp.BIND_EVENTS:
        try:
            new = lease.from_udhcpc_env(env) if event else lease.from_env(env)
        except LeaseError as e:
            log.error("iface %s: lease rejected: %s", name, e)
            return 1
        ok = routing.apply_lease(host, name, new, table, previous)
        record.update(lease=new.as_dict(), address=new.cidr)
        lease.save(host, name, record)
        log.info("iface %s: %s %s, gateway %s%s", name, reason.lower(), new.cidr,
                 new.gateway or "none", f", table {table}" if table else "")
        return 0 if ok else 1
    if reason in dhcp.UNBIND_EVENTS:
        if previous is not None:
            routing.clear_lease(host, name, previous, table)
            record.pop("lease", None)
            record.pop("address", None)
            lease.save(host, name, record)
            log.info("iface %s: %s, %s removed", name, reason.lower(), previous.cidr)
        return 0
    if reason == dhcp.TIMEOUT_EVENT:
        return 1
    return 0


def _table(record: Mapping[str, object]) -> Optional[int]:
    """The routing table a record says is ours (a secondary interface's), or None."""
    table = record.get("table")
    return table if isinstance(table, int) else None


# -- detach --------------------------------------------------------------------------------------
def detach(host: Host, settings: Settings, name: str) -> Outcome:
    name = netdev.checked_name(name)
    record = lease.load(host, name)
    if record is None or record.get("state") in (SKIPPED, LEFT):
        if record is not None:
            lease.forget(host, name)
        host.remove(untouched_marker(name))
        return Outcome(name, UNCHANGED, "nothing of ours to remove").report(host)
    if not host.dry_run:
        from gandi_vm.hooks import run_hook  # start-up cost (see gandi_vm.cli)

        run_hook(host, settings.hook_dir, "pre-iface-detach", [name])
    with host.lock(f"iface-{name}"):
        record = lease.load(host, name) or record
        _unconfigure_stack(host, name, record)
        previous, table = lease.of_record(record), _table(record)
        if previous is not None:
            routing.clear_lease(host, name, previous, table)
        elif table is not None:
            routing.remove_table(host, table)
        _unprepare(host, name, record)
        lease.forget(host, name)
    return Outcome(name, DETACHED, "lease released, routing table, rule and runtime files "
                                   "removed").report(host)


def _gate_record(host: Host, name: str) -> Dict[str, object]:
    """What the units' gate decided for an interface no attach ran for (its untouched marker:
    `left: <reason> (decided by the unit, no attach ran)`), as a record's state and reason."""
    try:
        line = host.read_text(untouched_marker(name)).strip()
    except OSError:
        return {}
    status, sep, reason = line.partition(": ")
    return {"state": status, "reason": reason} if sep and status in (SKIPPED, LEFT) else {}


def _unconfigure_stack(host: Host, name: str, record: Mapping[str, object]) -> None:
    stack = record.get("stack")
    if stack == netstack.OWN and record.get("client"):
        # The script attach wrote: the release runs it (RELEASE), under the same root and config.
        from gandi_vm import dhcp  # start-up cost (see gandi_vm.cli)

        dhcp.stop(host, str(record["client"]), name, host.path(dhcp.SCRIPT))
        # left by an attach killed while it waited for the first lease (its unit stopped then)
        host.remove(dhcp.waiting_marker(name))
    elif stack == netstack.NETWORKD:
        if host.remove(netstack.networkd_file(name)):
            netstack.networkd_reload(host)
    elif stack == netstack.NM:
        host.run(["nmcli", "connection", "delete", netstack.nm_profile(name)],
                 timeout=netstack.QUERY_TIMEOUT)


# -- boot and status ------------------------------------------------------------------------------
def attach_all(host: Host, settings: Settings, config: Optional[str] = None) -> List[Outcome]:
    """Every interface present. Under systemd, each goes to its gandi-iface@ unit, which owns the
    DHCP client for as long as the interface lives; elsewhere (or in a dry run), here."""
    outcomes = []
    delegate = host.exists("/run/systemd/system") and not host.dry_run and host.root == "/"
    for name in netdev.names(host):
        try:
            dev = netdev.read(host, name)
        except netdev.NoSuchInterface:
            continue  # unplugged while we were going through the list
        why = skip_reason(dev, settings)
        if why:
            outcomes.append(Outcome(name, SKIPPED, why).report(host))
        elif delegate:
            result = host.run(["systemctl", "--no-block", "start", f"gandi-iface@{name}.service"],
                              timeout=15)
            state, reason = (CONFIGURED, "handed to gandi-iface@ unit") if result.ok else \
                (FAILED, f"systemctl start gandi-iface@{name}: {result.why()}")
            outcomes.append(Outcome(name, state, reason).report(host))
        else:
            outcomes.append(attach(host, settings, name, config))
    return outcomes


def status(host: Host) -> List[Dict[str, object]]:
    rows = []
    for name in sorted(set(netdev.names(host)) | set(lease.recorded(host))):
        record = lease.load(host, name) or _gate_record(host, name)
        try:
            dev: Optional[NetDevice] = netdev.read(host, name)
        except netdev.NoSuchInterface:
            dev = None
        if dev is None and not record:
            continue  # forgotten: the units' gate empties the record of an interface it detached
        if dev is not None and dev.loopback:
            continue
        table = _table(record)
        data = record.get("lease") if isinstance(record.get("lease"), dict) else {}
        rows.append({
            "interface": name,
            "mac": dev.mac if dev else record.get("mac"),
            "driver": (dev.driver if dev else record.get("driver")) or "-",
            "operstate": dev.operstate if dev else "gone",
            "addresses": routing.addresses(host, name, family="") if dev else [],
            "stack": record.get("stack"),
            "table": table,
            "rules": routing.rules(host, table) if table is not None and dev else [],
            "state": record.get("state", "-"),
            "reason": record.get("reason", "not seen by gandi-vm"),
            "lease": {k: data.get(k) for k in ("gateway", "dns", "search", "domain", "hostname")
                      } if data else None,
        })
    return rows
