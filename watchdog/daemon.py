"""``watchdog run``: the loop around the engine, the delivery thread, signals, reload.

The loop sleeps until the next rule is due (no polling while idle), wakes on
finished evaluations, and reloads rules on SIGHUP or when rule files change.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from watchdog import logfmt, rolecheck, systemd
from watchdog.config import Config
from watchdog.durations import format_duration
from watchdog.engine import SELF_RULE, Engine, self_rule
from watchdog.lease import Change, Fence, LeaseKeeper
from watchdog.lifecycle import Kind, Notice
from watchdog.loader import LoadResult, find_rule_files, load_rules
from watchdog.logfmt import log
from watchdog.notify import build_notifier, build_receivers, build_router
from watchdog.notify.base import Notification
from watchdog.notify.console import ConsoleNotifier
from watchdog.notify.delivery import OutboxThread, Receivers
from watchdog.notify.outbox import REFUSED_RETRY, Outbox
from watchdog.notify.render import render
from watchdog.problems import Problem
from watchdog.rule import Rule, Severity
from watchdog.sources import Sources
from watchdog.state import StateStore
from watchdog.state_db import StoreError
from watchdog.storage import Opened, open_configured, open_store, storage_fault, write_marker
from watchdog.storage import describe as describe_storage_error
from watchdog.times import to_text, utcnow

if TYPE_CHECKING:
    from watchdog.notify.socket_mode import SocketHealth

logger = logging.getLogger("watchdog.daemon")

RELOAD_CHECK_SECONDS = 10.0
# A stop takes at most STOP_SECONDS: searches in flight are abandoned at once (they only read; their results
# are discarded and the rules run again after the next start), the other evaluations (a remediation writes its
# journal from its thread; SQL and AWS calls end by their own timeouts) get STOP_GRACE_SECONDS to finish (their
# results are recorded), then what is due is delivered until the budget is spent; the rest stays in the outbox.
STOP_SECONDS = 4.0
STOP_GRACE_SECONDS = 3.0
FLUSH_SECONDS = 30.0  # ``run --once``: nothing else to do, so wait longer for Slack
STABLE_SECONDS = 1.0  # a changed rule file is read once it has not changed for this long
PRUNE_EVERY = timedelta(hours=1)
STATUS_EVERY_SECONDS = 30.0
STORAGE_RETRY_SECONDS = 10.0  # how often a state database that cannot be opened is tried again
STORAGE_GROUP = "state database"
SOCKET_ALERT_AFTER = timedelta(minutes=5)  # a Socket Mode outage this long is alerted (reconnects are routine)
SOCKET_GROUP = "Slack Socket Mode"
LEASE_GROUP = "leader lease"  # watchdog's own alert when the lease flaps (several instances)
LOOP_STALLED_SECONDS = 120.0  # a loop that has not turned for this long is stalled


def _log_problems(result: LoadResult, before: set[Problem]) -> None:
    """Log each problem once: those already logged by the previous load are not repeated."""
    for problem in result.problems:
        if problem not in before:
            log(logger, logging.ERROR, "invalid rule file", file=problem.file, line=problem.line,
                path=problem.path or None, problem=problem.message)


Stamp = tuple[tuple[str, int, int, int], ...]  # (path, mtime_ns, size, inode) per rule file


class RuleFiles:
    """Loads rules, keeping the previous version of any file that became invalid.

    A changed file is read only once it has been stable for STABLE_SECONDS
    (same size, modification time and inode on the monotonic clock), or when
    its modification time is already that old (a file renamed into place
    after being written elsewhere): a half-written file is never loaded.
    """

    def __init__(self, config: Config, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self.monotonic = monotonic
        self.stamp: Stamp = ()
        self.pending: tuple[Stamp, float] | None = None  # a change seen, and since when (monotonic) it has held
        self.rules: list[Rule] = []
        self.problems: dict[str, str] = {}  # file -> first problem, for the self-monitoring alert
        self.logged: set[Problem] = set()

    def _fingerprint(self) -> Stamp:
        found = find_rule_files([self.config.rules_dir])
        out = [(directory, -1, -1, -1) for directory, _ in found.unreadable]  # fixing its permissions is a change
        out += [(path, -2, -2, -2) for path, _ in found.refused]  # so is removing a link that leads out
        for path in found.files:
            try:
                st = os.stat(path)
            except OSError:
                continue
            out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def changed(self) -> bool:
        """Whether any rule file was added, removed or modified, and every change has settled (stat only: cheap)."""
        current = self._fingerprint()
        if current == self.stamp:
            self.pending = None
            return False
        mono = self.monotonic()
        if self.pending is None or self.pending[0] != current:
            self.pending = (current, mono)
            # Written long enough ago (renamed into place, or a removal only): nothing to wait for.
            old_enough = time.time_ns() - int(STABLE_SECONDS * 1e9)
            return all(entry[1] <= old_enough for entry in set(current) - set(self.stamp))
        return mono - self.pending[1] >= STABLE_SECONDS

    def seconds_until_stable(self) -> float | None:
        """When to look again at a change that has not settled yet (None: no change pending)."""
        if self.pending is None:
            return None
        return max(0.05, self.pending[1] + STABLE_SECONDS - self.monotonic())

    def load(self) -> list[Rule]:
        self.stamp = self._fingerprint()
        self.pending = None
        # A rule whose file fails to load keeps running in its previous version, so others may still depend on it.
        result = load_rules([self.config.rules_dir], self.config, known=[r.name for r in self.rules])
        _log_problems(result, self.logged)
        self.logged = set(result.problems)
        self.problems = {}
        for problem in result.problems:
            self.problems.setdefault(problem.file, f"{problem.line}:{problem.column}: {problem.path + ': ' if problem.path else ''}"
                                                   f"{problem.message}")
        failed = {os.path.abspath(p) for p in result.failed}

        def held_by_failed(path: str) -> bool:  # the file failed, or a directory above it could not be read
            return path in failed or any(path.startswith(f + os.sep) for f in failed)

        kept = [r for r in self.rules if held_by_failed(r.path) and all(n.name != r.name for n in result.rules)]
        for rule in kept:
            log(logger, logging.WARNING, "keeping previous version of invalid rule", rule=rule.name, file=rule.path)
        self.rules = result.rules + kept
        return self.rules


def storage_notice(config: Config, error: str | None, since: datetime | None, now: datetime) -> Notification:
    """The alert (``error``) or its resolution (None) saying the state database cannot be written, sent directly:
    it cannot go through the outbox the database holds."""
    if error is not None:
        kind, severity = Kind.FIRING, Severity.CRITICAL
        text = (f"the state database {config.state.where} cannot be written: {error}. watchdog keeps "
                "evaluating, holds the latest result of each rule in memory and retries at every loop turn; "
                "notifications wait until it can write again")
    else:
        kind, severity = Kind.RESOLVED, Severity.CRITICAL
        text = (f"the state database {config.state.where} can be written again (it could not since "
                f"{to_text(since)}); the held results are written and waiting notifications go out")
    episode = f"storage-{to_text(since)}"
    payload = render(self_rule(config.self_monitoring.channel),
                     Notice(kind=kind, group=STORAGE_GROUP, at=now, severity=severity, value=None, summary=text,
                            episode=episode, since=since))
    payload["actions"] = False  # (not in the state: nothing a button could acknowledge or silence)
    return Notification(id=0, rule=SELF_RULE, group=STORAGE_GROUP, kind=kind.value, episode=episode, payload=payload)


def no_leader_notice(config: Config, instance: str, error: str | None, since: datetime, now: datetime) -> Notification:
    """The alert (``error``) or its resolution (None) saying ``instance`` has seen no leader since ``since``: it cannot
    reach the shared state, so it can neither lead nor know who does (sent directly: no outbox without the state)."""
    firing = None if error is None else (
        f"instance {instance} has seen no leader since {to_text(since)}: it cannot reach the state database "
        f"{config.state.where} ({error}). If no other instance can either, nothing is evaluated or delivered")
    return _self_notice(config, LEASE_GROUP, f"no-leader-{instance}-{to_text(since)}", firing,
                        f"instance {instance} reaches the state database again and sees a leader", since, now)


def _self_notice(config: Config, group: str, episode: str, firing: str | None, resolved: str, since: datetime,
                 now: datetime, *, actions: bool = True) -> Notification:
    """watchdog's own critical alert for ``group``: firing with text ``firing``, or resolved (``firing`` None),
    rendered for the self-monitoring channel and sent directly (not through the outbox)."""
    kind = Kind.RESOLVED if firing is None else Kind.FIRING
    payload = render(self_rule(config.self_monitoring.channel),
                     Notice(kind=kind, group=group, at=now, severity=Severity.CRITICAL, value=None,
                            summary=resolved if firing is None else firing, episode=episode,
                            since=since if firing is None else None))
    if not actions:
        payload["actions"] = False
    return Notification(id=0, rule=SELF_RULE, group=group, kind=kind.value, episode=episode, payload=payload)


def refusal_notice(config: Config, name: str, error: str | None, since: datetime, now: datetime) -> Notification:
    """The alert (``error``) or its resolution (None) saying receiver ``name`` refuses watchdog's credentials."""
    return _self_notice(config, f"notifier {name}", f"refused-{name}-{to_text(since)}",
                        None if error is None else refusal_text(name, error),
                        f"{name} accepts watchdog's credentials again; the kept notifications go out", since, now,
                        actions=False)


def refusal_text(name: str, error: str) -> str:
    """What watchdog's own alert says about a receiver refusing its credentials."""
    return (f"{error}. No notification can reach {name}: every one is kept in the outbox and goes out once {name} "
            f"accepts the credentials again (tried every {REFUSED_RETRY.total_seconds() / 60:.0f} minutes); fix them "
            "in the config and restart watchdog")


class Delivery(OutboxThread):
    """Sends from the outbox to the main notifier in its own thread (and its own database connection)."""

    def __init__(self, config: Config, stop: threading.Event, socket: SocketHealth | None = None,
                 fence: Fence | None = None):
        super().__init__("delivery", stop, fence)
        self.config = config
        self.socket = socket
        # Messages about the state database itself, which cannot go through the outbox it holds.
        self.direct: queue.Queue[Notification] = queue.Queue(maxsize=100)
        # The receiver's refusal of watchdog's credentials while it lasts (read by the loop for the self-alert),
        # and a callback telling the loop it changed.
        self.refusal: tuple[str, str] | None = None  # (receiver, error)
        self.refused_since = utcnow()
        self.on_refused: Callable[[], None] = lambda: None
        self.console = ConsoleNotifier()  # where a refusal is said when the refusing receiver cannot say it

    def storage(self, error: str | None, since: datetime | None) -> None:
        """Tell the ops channel, directly, that the state database cannot be written (or can be again)."""
        with contextlib.suppress(queue.Full):
            self.direct.put_nowait(storage_notice(self.config, error, since, utcnow()))
        self.wake.set()

    def no_leader(self, instance: str, error: str | None, since: datetime) -> None:
        """Tell the ops channel, directly, that this instance sees no leader (or, ``error`` None, that it does again)."""
        with contextlib.suppress(queue.Full):
            self.direct.put_nowait(no_leader_notice(self.config, instance, error, since, utcnow()))
        self.wake.set()

    def _between(self) -> None:
        """Send the notices about the state itself (they need no state: they say it cannot be reached)."""
        while not self.direct.empty():
            note = self.direct.get_nowait()
            result = self.notifier.send(note, None)
            log(logger, logging.INFO if result.ok else logging.WARNING, "storage notice sent" if result.ok
                else "storage notice not sent", kind=note.kind, error=result.error)

    def _passed(self, outbox: Outbox) -> None:
        """Say on the console when the receiver starts or stops refusing the credentials; tell the loop."""
        refused, notifier = outbox.refused, self.notifier
        if refused == (self.refusal[1] if self.refusal else None):
            return
        now = utcnow()
        if self.refusal is None:
            self.refused_since = now
        self.refusal = (notifier.name, refused) if refused is not None else None
        if notifier.name != self.console.name:  # (the console itself never refuses)
            self.console.send(refusal_notice(self.config, notifier.name, refused, self.refused_since, now), None)
        self.on_refused()

    def _standby_seconds(self) -> float:
        return max(0.5, self.config.ha.lease.total_seconds() / 3)

    def _retry_seconds(self) -> float:
        # A shared state is retried within the lease (a lost session is opened again at once); a full disk slower.
        return self.config.ha.lease.total_seconds() / 3 if self.config.state.shared else STORAGE_RETRY_SECONDS

    def _open_store(self) -> StateStore:
        return open_store(self.config.state, self.fence, timeout=_statement_timeout(self.config))

    def run(self) -> None:
        self.notifier = build_notifier(self.config, self.socket)
        super().run()


def _statement_timeout(config: Config) -> float:
    """How long a statement on a PostgreSQL state may take: a third of the lease, so a database that stops
    answering is noticed while the lease still holds."""
    return max(1.0, config.ha.lease.total_seconds() / 3)


def _lead_once(config: Config, fence: Fence) -> LeaseKeeper | str:
    """``run --once`` on a shared state: take the lease and keep renewing it for the round (the keeper, running;
    stop it to hand the lease back), or why not (another instance leads, the state cannot be reached)."""
    try:
        keeper = LeaseKeeper(open_store(config.state, timeout=_statement_timeout(config)), fence,
                             config.ha.lease.total_seconds())
    except (StoreError, OSError) as exc:
        return f"cannot reach the state: {exc}"
    try:
        change = keeper.attempt()
    except StoreError as exc:
        keeper.store.close()
        return f"cannot take the leader lease: {exc}"
    if not change.leading:
        keeper.store.close()
        return f"{change.leader} leads (epoch {change.epoch}); run --once would speak for it"
    keeper.start()
    return keeper


ROLE_CHECK_SECONDS = 15.0  # how long `run --once` waits for the role check before it goes on


def run(config: Config, *, once: bool = False) -> int:
    """Run the daemon (or one round with ``once``); returns the exit code."""
    logfmt.setup(config.log_level)
    for warning in config.warnings:
        log(logger, logging.WARNING, "config warning", warning=warning)
    if not os.path.isdir(config.rules_dir):
        log(logger, logging.ERROR, "rules directory not found", rules_dir=config.rules_dir)
        return 2
    # Several instances share a PostgreSQL state: a lease says which one acts (see ``lease``).
    fence = Fence(config.ha.instance) if config.state.shared else None
    opened = open_state_until_it_opens(config, once=once, fence=fence)
    if opened is None:
        return 2
    store = opened.store
    once_keeper = None
    if once and fence is not None:
        leading = _lead_once(config, fence)
        if isinstance(leading, str):
            log(logger, logging.ERROR, "not running once", instance=fence.instance, reason=leading)
            store.close()
            return 2
        once_keeper = leading
    files = RuleFiles(config)
    rules = files.load()
    # What the warehouse role may do: logged as a warning with the fix, never delaying the daemon's start.
    checking_roles = rolecheck.log_in_background(config, rules)
    if once:
        checking_roles.join(ROLE_CHECK_SECONDS)
    sources = Sources(config.sources)
    slack_actions = None
    if not once and config.slack is not None and config.slack.app_token and config.slack.token:
        from watchdog.notify.socket_mode import SlackActions, SocketHealth

        slack_actions = SlackActions(config.slack, config.state, SocketHealth())
        slack_actions.pagers = frozenset(name for name, r in config.receivers.items() if r.type == "pagerduty")
    delivery = Delivery(config, threading.Event(),  # halted after the last evaluations are recorded
                        slack_actions.health if slack_actions is not None else None, fence)
    receivers = Receivers(build_receivers(config), config.state, fence=fence)

    def wake() -> None:
        delivery.wake.set()
        receivers.wake()

    engine = Engine(rules, store, sources, workers=config.workers, timeout=config.rule_timeout,
                    on_notify=wake, ops_channel=config.self_monitoring.channel, on_storage=delivery.storage)
    engine.router = build_router(config)
    delivery.quiet_until = engine.quiet_until
    delivery.on_refused = engine.wake.set
    for thread in receivers.threads:
        thread.quiet_until = engine.quiet_until
    engine.report_invalid_files(files.problems)
    for note in opened.notes:  # a state file moved aside, or history lost: said once, in the ops channel
        engine.report_problem(STORAGE_GROUP, note)
    log(logger, logging.INFO, "started", rules=len(engine.rules), state=config.state.where, once=once or None,
        instance=fence.instance if fence is not None else None)
    try:
        if once:
            engine.run_all_once(config.rule_timeout.total_seconds() + 5)
            deadline = time.monotonic() + FLUSH_SECONDS
            receivers.stop(deadline)  # each receiver sends in its own thread, beside the main notifier
            receivers.start()
            outbox = Outbox(store, build_notifier(config), quiet_until=engine.quiet_until,
                            may_act=fence.leading if fence is not None else lambda: True)
            outbox.flush(deadline)
            receivers.join(deadline + 0.5)
            if store.outbox_depth():
                log(logger, logging.WARNING, "notifications left in the outbox", pending=store.outbox_depth())
            if once_keeper is not None:  # hand the lease back (a running instance takes it at its next attempt)
                once_keeper.stop.set()
                once_keeper.join(5.0)
                once_keeper.store.close()
            return 0
        if slack_actions is not None:
            engine.socket = slack_actions.health
            slack_actions.start()
        keeper = None
        if fence is not None:

            def woken(change: Change) -> None:
                engine.wake.set()
                wake()

            keeper = LeaseKeeper(open_store(config.state, timeout=_statement_timeout(config)), fence,
                                 config.ha.lease.total_seconds(), on_change=woken)
        loop = Loop(config, engine, files, store, delivery, keeper)
        loop.receivers = receivers
        return loop.run()
    finally:
        if slack_actions is not None:
            slack_actions.close()
        sources.close()
        store.close()


def open_state_until_it_opens(config: Config, *, once: bool = False, fence: Fence | None = None) -> Opened | None:
    """The state store, checked (see ``storage.open_state``).

    When the storage itself fails (a full disk keeps SQLite from creating its
    WAL, an I/O error), the daemon says so and tries again every
    STORAGE_RETRY_SECONDS instead of exiting: systemd would only restart it
    into the same failure; so does a PostgreSQL state that does not answer
    (the other instance may lead meanwhile). ``run --once`` and a file that
    cannot be opened at all for another reason (a directory, no permission)
    exit with None.
    """
    said = ""
    notifier = systemd.Notifier()
    since: datetime | None = None  # when it first failed
    while True:
        try:
            opened = open_configured(config.state, utcnow(), fence, timeout=_statement_timeout(config))
        except (StoreError, OSError) as exc:
            error = describe_storage_error(exc) if isinstance(exc, StoreError) else str(exc)
            full = storage_fault(exc) or (config.state.shared and isinstance(exc, StoreError))
            if once or not full:
                log(logger, logging.ERROR, "cannot open the state database", path=config.state.where, error=error)
                return None
            if error != said:
                said = error
                log(logger, logging.ERROR, "cannot open the state database; retrying", path=config.state.where,
                    error=error, every=STORAGE_RETRY_SECONDS)
                notifier.status(f"cannot open the state database: {error}; retrying")
                if since is None:  # said where alerts go, directly: there is no outbox without the database
                    since = utcnow()
                    _tell(config, storage_notice(config, error, since, since))
            time.sleep(STORAGE_RETRY_SECONDS)
            continue
        if since is not None:
            _tell(config, storage_notice(config, None, since, utcnow()))
        return opened


def _tell(config: Config, note: Notification) -> None:
    """Send one of watchdog's own notices straight to the receiver, once (it cannot wait in an outbox)."""
    try:
        result = build_notifier(config).send(note, None)
    except Exception as exc:  # the notice is a courtesy: the daemon goes on without it
        log(logger, logging.WARNING, "storage notice not sent", kind=note.kind, error=f"{type(exc).__name__}: {exc}")
        return
    log(logger, logging.INFO if result.ok else logging.WARNING, "storage notice sent" if result.ok
        else "storage notice not sent", kind=note.kind, error=result.error)


class Loop:
    """The scheduler loop of ``watchdog run``: sleeps until something is due, never polls while idle."""

    def __init__(self, config: Config, engine: Engine, files: RuleFiles, store: StateStore, delivery: Delivery,
                 keeper: LeaseKeeper | None = None):
        self.config = config
        self.keeper = keeper  # several instances: the lease, and whether this one leads
        self.was_leading = keeper is None
        self.alone_since: datetime | None = None  # told the ops channel: this instance sees no leader
        self.unreadable = ""  # the last error reading the state, logged once
        self.engine = engine
        self.files = files
        self.store = store
        self.delivery = delivery
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.systemd = systemd.Notifier()
        self.last_turn = time.monotonic()
        self.unhealthy = ""  # the reason last logged, so it is logged once
        self.receivers = Receivers({}, config.state_path)  # PagerDuty, webhooks, email: a thread each
        self.heartbeat = None
        if config.self_monitoring.heartbeat_url:
            from watchdog.metrics import Heartbeat

            self.heartbeat = Heartbeat(config.self_monitoring.heartbeat_url, config.self_monitoring.heartbeat_every.total_seconds())

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        self.engine.wake.set()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()
        self.engine.wake.set()

    def health(self) -> tuple[bool, str]:
        """Healthy while the loop turns and evaluations complete when expected (monotonic clock); and why."""
        age = time.monotonic() - self.last_turn
        if age >= LOOP_STALLED_SECONDS:
            return False, f"scheduler loop turned {age:.0f}s ago"
        return self.engine.health()

    def ping(self) -> None:
        """Ping systemd's watchdog (and the heartbeat URL) only while healthy: a loop that turns but evaluates nothing
        gets restarted, and the dead man's switch fires."""
        healthy, why = self.health()
        if healthy:
            self.systemd.ping()
            if self.heartbeat is not None:
                self.heartbeat.beat()
        elif self.unhealthy != why.split(" (")[0]:
            self.unhealthy = why.split(" (")[0]
            log(logger, logging.ERROR, "unhealthy; not pinging systemd's watchdog", reason=why)
        if healthy:
            self.unhealthy = ""

    def leading(self) -> bool:
        return self.keeper is None or self.keeper.fence.leading()

    def follow_lease(self) -> None:
        """Start or stop acting as the lease says; report a flapping lease (as the leader)."""
        leading = self.leading()
        if leading != self.was_leading:
            self.was_leading = leading
            if leading:
                self.engine.load_from_store()
                self.delivery.wake.set()
            else:
                self.engine.stand_by()
            self.systemd.status(self.status_text())
        if self.keeper is not None:
            alone = not leading and self.keeper.without_leader() > 2 * self.config.ha.lease.total_seconds()
            if alone and self.alone_since is None:
                self.alone_since = utcnow() - timedelta(seconds=self.keeper.without_leader())
                log(logger, logging.ERROR, "no leader seen", instance=self.keeper.fence.instance, error=self.keeper.error)
                self.delivery.no_leader(self.keeper.fence.instance, self.keeper.error or "no answer", self.alone_since)
            elif not alone and self.alone_since is not None and self.keeper.error is None:
                self.delivery.no_leader(self.keeper.fence.instance, None, self.alone_since)
                self.alone_since = None
        if leading and self.keeper is not None:
            flapping = self.keeper.flapping()
            if flapping != (LEASE_GROUP in self.engine.own_problems):
                self.engine.report_problem(LEASE_GROUP, (
                    f"the leader changed {len(self.keeper.takeovers)} times within "
                    f"{format_duration(self.config.ha.lease * 20)}: instances lose the lease (the database slow or "
                    "unreachable, a process freezing, two instances with one name); alerts may be late meanwhile")
                    if flapping else None)

    def write_marker(self) -> None:
        """Leave the lost-history marker beside the database (see ``storage``); a failure is the engine's to report."""
        if self.config.state.type != "sqlite":
            return
        try:
            write_marker(self.config.state_path, self.store, utcnow())
        except (OSError, StoreError) as exc:
            log(logger, logging.DEBUG, "marker not written", error=str(exc))

    def status_text(self) -> str:
        if not self.leading():
            assert self.keeper is not None
            leader = self.keeper.view.holder if self.keeper.view is not None else "none seen yet"
            return f"{len(self.engine.rules)} rules; standing by (leader: {leader})"
        if self.engine.storage_error is not None:
            return f"{len(self.engine.rules)} rules; state database cannot be written: {self.engine.storage_error}"
        try:
            firing = self.store.firing_count()
            return f"{len(self.engine.rules)} rules, {firing} firing, {self.store.outbox_depth()} waiting to be sent"
        except StoreError as exc:
            return f"{len(self.engine.rules)} rules; state database cannot be read: {exc}"

    def check_notifiers(self) -> None:
        """A receiver refusing watchdog's credentials is one of watchdog's own alerts (see ``Outbox.refused``)."""
        wanted = {}
        if self.delivery.refusal is not None:
            name, error = self.delivery.refusal
            wanted[f"notifier {name}"] = refusal_text(name, error)
        for group in [g for g in self.engine.own_problems if g.startswith("notifier ") and g not in wanted]:
            self.engine.report_problem(group, None)
        for group, text in wanted.items():
            if self.engine.own_problems.get(group) != text:
                self.engine.report_problem(group, text)

    def check_socket(self) -> None:
        """A Slack Socket Mode connection down for long is one of watchdog's own alerts (buttons do nothing meanwhile)."""
        health = self.engine.socket
        if health is None:
            return
        down = not health.connected and health.since is not None and utcnow() - health.since >= SOCKET_ALERT_AFTER
        problem = (f"Slack Socket Mode disconnected since {health.since:%Y-%m-%d %H:%M} UTC ({health.error or 'no answer'}):"
                   " buttons in alerts do nothing until it reconnects") if down else None
        if (problem is None) != (SOCKET_GROUP not in self.engine.own_problems):
            self.engine.report_problem(SOCKET_GROUP, problem)

    def check_receivers(self) -> None:
        """A receiver that refused notifications for good is one of watchdog's own alerts until they are acknowledged."""
        for group, problem in self.receivers.problems().items():
            if problem != self.engine.own_problems.get(group):
                self.engine.report_problem(group, problem)

    def do_reload(self) -> None:
        self.systemd.reloading()
        removed = self.engine.set_rules(self.files.load())
        self.engine.report_invalid_files(self.files.problems)
        log(logger, logging.INFO, "rules reloaded", rules=len(self.engine.rules), removed=len(removed),
            invalid_files=len(self.files.problems) or None)
        self.delivery.wake.set()
        self.systemd.ready(self.status_text())

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        metrics = None
        if self.config.metrics_listen:
            from watchdog.metrics import MetricsServer

            try:
                metrics = MetricsServer(self.config.metrics_listen, self.engine, self.store.outbox_depth,
                                        self.health, notifiers=self.store.notifier_status, leader=self.leading)
            except (OSError, ValueError) as exc:  # alerting matters more than its metrics: run without them
                log(logger, logging.ERROR, "cannot serve metrics", listen=self.config.metrics_listen, error=str(exc))
        self.delivery.start()
        self.receivers.start()
        if self.keeper is not None:
            self.keeper.start()
        self.systemd.ready(self.status_text())
        last_check = last_status = time.monotonic()
        last_prune = utcnow() - PRUNE_EVERY
        self.write_marker()  # (what this start found, before anything else can be lost)
        while not self.stop.is_set():
            try:
                self.follow_lease()
                if self.leading():
                    applied = self.engine.run_pending()
                    if (any("firing" in (t.from_, t.to) for a in applied for t in a.transitions)
                            and self.engine.storage_error is None):
                        self.write_marker()  # at once: history lost before the next periodic write is still noticed
                else:  # a standby evaluates nothing; evaluations of a lost lease finish and are dropped (Deposed)
                    self.engine.collect()
                self.unreadable = ""
            except StoreError as exc:  # the state cannot be read (a database restarting): the next turn tries again
                if self.unreadable != str(exc):
                    self.unreadable = str(exc)
                    log(logger, logging.ERROR, "state database cannot be read; retrying", error=str(exc))
                self.was_leading = False if self.keeper is not None else self.was_leading  # reload once it reads
                self.engine.wake.wait(1.0)
            self.last_turn = time.monotonic()
            self.ping()
            settling = self.files.seconds_until_stable()
            if (self.reload.is_set() or self.last_turn - last_check >= RELOAD_CHECK_SECONDS
                    or (settling is not None and settling <= 0.05)):
                last_check = self.last_turn
                if self.reload.is_set() or self.files.changed():
                    self.reload.clear()
                    self.do_reload()
            self.check_socket()
            self.check_notifiers()
            self.check_receivers()
            if self.last_turn - last_status >= STATUS_EVERY_SECONDS:
                last_status = self.last_turn
                self.systemd.status(self.status_text())
                if self.engine.storage_error is None:
                    self.write_marker()
            if utcnow() - last_prune >= PRUNE_EVERY and self.leading():
                last_prune = utcnow()
                with contextlib.suppress(StoreError):  # a full disk: pruned next hour (the engine alerts)
                    self.store.prune(last_prune)
            waits = [self.engine.seconds_until_next() if self.leading() else RELOAD_CHECK_SECONDS, RELOAD_CHECK_SECONDS]
            if self.keeper is not None and self.leading():  # stop acting the moment the lease runs out locally
                waits.append(max(0.0, self.keeper.fence.until - time.monotonic()))
            settling = self.files.seconds_until_stable()
            if settling is not None:  # a rule file is being written: look again once it may have settled
                waits.append(settling)
            ping = self.systemd.seconds_until_ping()
            if ping is not None:
                waits.append(ping)
            self.engine.wake.wait(min(waits))
            self.engine.wake.clear()
        return self.shutdown(metrics)

    def shutdown(self, metrics: Any) -> int:
        self.systemd.stopping()
        if self.engine.storage_error is None:
            self.write_marker()
        log(logger, logging.INFO, "stopping", running=len(self.engine.runner.active))
        started = time.monotonic()
        grace = started + STOP_GRACE_SECONDS
        self.engine.runner.stop()  # queued evaluations are not started: they run after the restart
        while self.engine.runner.writing() and time.monotonic() < grace:
            self.engine.wake.wait(0.1)
            self.engine.wake.clear()
            self.engine.collect()
        self.engine.collect()  # (evaluations still running are abandoned: they run again after the restart)
        self.delivery.deadline = started + STOP_SECONDS
        self.delivery.stop.set()
        self.delivery.wake.set()
        self.receivers.stop(started + STOP_SECONDS)
        # A Slack call in flight when the budget ends is left behind: its notification stays unsent in the
        # outbox and goes out after the restart.
        self.delivery.join(max(0.0, started + STOP_SECONDS + 0.5 - time.monotonic()))
        self.receivers.join(started + STOP_SECONDS + 0.5)
        if self.keeper is not None:  # hand the lease over now: the standby takes it at its next attempt
            self.keeper.stop.set()
            self.keeper.join(2.0)
            self.keeper.store.close()
        if metrics is not None:
            metrics.close()
        log(logger, logging.INFO, "stopped", pending=self.store.outbox_depth())
        self.systemd.close()
        return 0
