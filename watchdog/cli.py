"""The ``watchdog`` command line: argument parsing and output, nothing else."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from watchdog import __version__
from watchdog.config import CONFIG_ENV, Config, default_config_path, load_config
from watchdog.escape import terminal
from watchdog.problems import InvalidFileError, Problem
from watchdog.redact import RedactingStream
from watchdog.silences import MAX_SILENCE_TEXT
from watchdog.times import to_text

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 141

_EPILOG = f"""\
CONFIG defaults to ${CONFIG_ENV}, then /etc/watchdog/watchdog.yaml.
Durations: 30s, 5m, 2h, 1d, 1h30m. Times: ISO 8601 (2026-11-28T02:00:00Z) or relative (-2h).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


_CONFIG_HELP = f"config file (default: ${CONFIG_ENV}, then /etc/watchdog/watchdog.yaml); before or after the command"
_FORMAT_HELP = "output format: text for people, json for scripts (default: text)"


def _add_config(parser: argparse.ArgumentParser, *, global_: bool = False) -> None:
    # Given both before and after the command: the subcommand's copy must not reset the global one, so its
    # default is SUPPRESS (argparse copies sub-namespace values over the parent's).
    parser.add_argument("-c", "--config", metavar="CONFIG", help=_CONFIG_HELP,
                        default=None if global_ else argparse.SUPPRESS)


COMMANDS: tuple[tuple[str, str], ...] = (
    ("run", "run the daemon: evaluate each rule on its schedule, notify, remediate"),
    ("validate", "validate the config and rule files without contacting any source"),
    ("test-rule", "replay a rule against the real sources over a time range, with no side effects"),
    ("status", "show every rule's state per group, last and next run, errors and silences"),
    ("silence", "mute a rule's notifications, or one group's (state is still tracked)"),
    ("unsilence", "remove a silence (its ID is shown by `watchdog status`)"),
    ("routes", "show which receivers an alert would reach, and why (the config's routes)"),
    ("state", "state migrate --from PATH: copy a SQLite state into the configured PostgreSQL state"),
)

EXAMPLES: dict[str, tuple[str, ...]] = {
    "run": ("watchdog run -c /etc/watchdog/watchdog.yaml", "watchdog -c watchdog.yaml run --once"),
    "validate": ("watchdog validate -c watchdog.yaml", "watchdog validate -c watchdog.yaml rules/app-error-rate.yaml --format json"),
    "test-rule": ("watchdog test-rule rules/app-error-rate.yaml -c watchdog.yaml --last 24h",
                  "watchdog test-rule rules/app-error-rate.yaml --start 2026-11-27T00:00:00Z --end -6h --format json",
                  "watchdog test-rule rules/app-logs-flatline.yaml --start -3d --last 1h   # error: give --end or --last"),
    "status": ("watchdog status -c /etc/watchdog/watchdog.yaml", "watchdog status --format json | jq '.silences'"),
    "silence": ("watchdog silence app-error-rate --for 2h --reason 'deploy in progress'",
                "watchdog silence app-error-rate:team-a --for 30m",
                "watchdog silence warehouse-freshness:etl-sources/google-analytics --for 1d --reason 'vendor outage'"),
    "unsilence": ("watchdog status            # silences are listed with their IDs: [3] app-error-rate:team-a ...",
                  "watchdog unsilence 3"),
    "routes": ("watchdog routes -c watchdog.yaml --rule app-error-rate --severity critical",
               "watchdog routes --rule warehouse-freshness --label team=data --at 2026-11-28T03:00:00Z --format json"),
    "state": ("watchdog state migrate --from /var/lib/watchdog/state.db   # the daemon stopped; the new state empty",),
}


def short_usage() -> str:
    """What a bare ``watchdog`` prints: the usage line and the commands."""
    width = max(len(name) for name, _ in COMMANDS)
    lines = ["usage: watchdog [-c CONFIG] COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in COMMANDS]
    lines += ["", "`watchdog COMMAND --help` shows a command's options and examples; `watchdog --help` shows more."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="watchdog", description="Alerting for log search, warehouse freshness and AWS DMS, with Slack notifications.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"watchdog {__version__}")
    _add_config(parser, global_=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    helps = dict(COMMANDS)

    def command(name: str) -> argparse.ArgumentParser:
        examples = "\n".join(f"  {e}" for e in EXAMPLES[name])
        p = sub.add_parser(name, help=helps[name], description=helps[name], epilog=f"examples:\n{examples}\n\n{_EPILOG}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_config(p)
        return p

    p = command("run")
    p.add_argument("--once", action="store_true", help="evaluate every rule once, deliver notifications, and exit")
    p.set_defaults(handler=_cmd_run)

    p = command("validate")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="rule files or directories to check (default: the config's rules_dir), e.g. rules/new.yaml")
    p.add_argument("--format", choices=("text", "json"), default="text", help=_FORMAT_HELP)
    p.set_defaults(handler=_cmd_validate)

    p = command("test-rule")
    p.add_argument("rule_file", metavar="RULE_FILE", help="the rule file to replay, e.g. rules/app-error-rate.yaml")
    p.add_argument("--start", metavar="T",
                   help="start of the range: ISO 8601 (2026-11-27T00:00:00Z) or relative (-6h); "
                        "default: --last before --end. Give --start with --end, not with --last")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--end", metavar="T", help="end of the range: ISO 8601 or relative (-1h); default: now")
    group.add_argument("--last", metavar="DURATION", help="replay this long up to now, e.g. 2h, 7d (default: 24h)")
    p.add_argument("--format", choices=("text", "json"), default="text", help=_FORMAT_HELP)
    p.add_argument("--per-tick", action="store_true", help="one search per tick even where one aggregation would do")
    p.add_argument("--send", action="store_true", help="post the first rendered notification to Slack as a preview")
    p.set_defaults(handler=_cmd_test_rule)

    p = command("status")
    p.add_argument("--format", choices=("text", "json"), default="text", help=_FORMAT_HELP)
    p.add_argument("--ack-failed", action="store_true",
                   help="acknowledge the notifications that failed for good (Slack refused them), so status stops listing them")
    p.set_defaults(handler=_cmd_status)

    p = command("silence")
    p.add_argument("target", metavar="RULE[:GROUP]",
                   help="a rule name (every group), or RULE:GROUP for one group, e.g. app-error-rate:team-a")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                   help=f"how long, more than 0 and at most {MAX_SILENCE_TEXT}: 30m, 2h, 1d, 1h30m")
    p.add_argument("--reason", default="", help="why, shown in `watchdog status`, e.g. 'deploy in progress'")
    p.set_defaults(handler=_cmd_silence)

    p = command("unsilence")
    p.add_argument("id", metavar="ID", help="the silence's ID, as `watchdog status` lists it ([3] means ID 3)")
    p.set_defaults(handler=_cmd_unsilence)

    p = command("routes")
    p.add_argument("--rule", required=True, metavar="NAME",
                   help="the rule's name; a rule of that name in rules_dir lends its type and labels")
    p.add_argument("--severity", default=None, choices=("info", "warning", "critical"),
                   help="the alert's severity (default: the rule's, else warning)")
    p.add_argument("--type", dest="rule_type", metavar="TYPE", help="the rule's type, e.g. threshold (default: the rule's)")
    p.add_argument("--label", action="append", default=[], metavar="NAME=VALUE",
                   help="a label (repeatable; overrides the rule's), e.g. --label team=data")
    p.add_argument("--at", metavar="T", help="the moment, for time intervals: ISO 8601 or relative (-2h); default: now")
    p.add_argument("--format", choices=("text", "json"), default="text", help=_FORMAT_HELP)
    p.set_defaults(handler=_cmd_routes)

    p = command("state")
    p.add_argument("action", choices=("migrate",), help="migrate: copy a SQLite state into the configured state")
    p.add_argument("--from", dest="source", required=True, metavar="PATH",
                   help="the SQLite state to copy, e.g. /var/lib/watchdog/state.db (stop the daemon first)")
    p.set_defaults(handler=_cmd_state)
    return parser


def _config_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The config path, and whether the user named it (explicitly or by environment)."""
    if args.config:
        return args.config, True
    return default_config_path(), bool(os.environ.get(CONFIG_ENV))


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(terminal(str(problem)), file=sys.stderr)


def load_config_or_exit(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    """The config named by ``args``; exits (code 2) printing its problems. ``secrets=False``: see ``load_config``."""
    path, _ = _config_path(args)
    try:
        return load_config(path, secrets=secrets)
    except InvalidFileError as exc:
        _print_problems(exc.problems)
        raise SystemExit(EXIT_USAGE) from None


def _cmd_validate(args: argparse.Namespace) -> int:
    from watchdog.loader import load_rules, rule_warnings

    path, named = _config_path(args)
    problems: list[Problem] = []
    config: Config | None = None
    notes: list[str] = []
    if named or os.path.exists(path) or not args.paths:
        try:
            config = load_config(path)
        except InvalidFileError as exc:
            problems += exc.problems
    else:
        notes.append(f"no config file at {path}: source names are not checked")
    paths = args.paths or ([config.rules_dir] if config else [])
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"watchdog validate: no such file or directory: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    # Rules named on the command line may depend on the other rules of the rules directory.
    directory = load_rules([config.rules_dir], config).rules \
        if args.paths and config is not None and os.path.isdir(config.rules_dir) else []
    taken = {r.name: r.path for r in directory}  # (a name used there is refused by the daemon)
    result = load_rules(paths, config, known=list(taken), taken=taken, check_queries=True) if paths else None
    if result is not None:
        problems += result.problems
    warnings = list(config.warnings) if config else []
    warnings += rule_warnings(result.rules, config) if result is not None else []
    if config is not None and result is not None:  # the one contact with a source: what its role may do
        from watchdog.rolecheck import check_sources

        warnings += check_sources(config, result.rules)
    valid = not problems
    if args.format == "json":
        out: dict[str, Any] = {"valid": valid, "errors": [p.to_dict() for p in problems],
                               "warnings": warnings,
                               "files": len(result.files) if result else 0, "rules": len(result.rules) if result else 0}
        print(json.dumps(out, indent=2))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for warning in warnings:
            print(terminal(f"warning: {warning}"), file=sys.stderr)
        for problem in problems:
            print(terminal(str(problem)))
        files = len(result.files) if result else 0
        bad = len({p.file for p in problems})
        if valid:
            print(f"ok: {files} rule file{'s' if files != 1 else ''} valid" + (f", config {config.path}" if config else ""))
        else:
            print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {bad} file{'s' if bad != 1 else ''}")
    return EXIT_OK if valid else EXIT_INVALID


def parse_time(text: str, now: datetime) -> datetime:
    """ISO 8601 (``2026-11-28T02:00:00Z``, UTC when no offset is given) or relative to ``now`` (``-2h``).

    Raises ValueError naming the text and both forms when it is neither, or
    when it lies outside the years a datetime can hold.
    """
    from watchdog.durations import parse_duration

    hint = "use ISO 8601 (2026-11-28T02:00:00Z) or a time relative to now (-2h, -1d12h)"
    try:
        if text.startswith("-"):
            return now - parse_duration(text[1:])
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a time: {hint}") from None


def _cmd_test_rule(args: argparse.Namespace) -> int:
    from watchdog.durations import parse_duration
    from watchdog.loader import load_rules
    from watchdog.sources import Sources
    from watchdog.testrule import format_text, present_only, replay, window_problem

    config = load_config_or_exit(args)
    if not os.path.isfile(args.rule_file):
        print(f"watchdog test-rule: no such file: {args.rule_file}", file=sys.stderr)
        return EXIT_USAGE
    # The rules it may depend on (depends_on): replayed with it, so an explained notification shows as such.
    directory = load_rules([config.rules_dir], config).rules if os.path.isdir(config.rules_dir) else []
    loaded = load_rules([args.rule_file], config, known=[r.name for r in directory])
    if loaded.problems:
        _print_problems(loaded.problems)
        return EXIT_INVALID
    (rule,) = loaded.rules
    if args.start and args.last:
        print(f"watchdog test-rule: --start {args.start} and --last {args.last} disagree about where the range starts: "
              "give --start with --end (or alone, up to now), or --last alone", file=sys.stderr)
        return EXIT_USAGE
    now = datetime.now(UTC)
    try:
        end = parse_time(args.end, now) if args.end else now
        start = parse_time(args.start, now) if args.start else end - parse_duration(args.last or "24h")
    except (ValueError, OverflowError) as exc:
        print(f"watchdog test-rule: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = window_problem(rule, end if args.end else None, now)
    if problem:
        print(f"watchdog test-rule: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if start >= end and not present_only(rule):
        print(f"watchdog test-rule: the range {to_text(start)} .. {to_text(end)} is empty: --start must be before --end "
              "(and --last longer than 0s)", file=sys.stderr)
        return EXIT_USAGE
    others = [r for r in directory if r.name != rule.name]
    sources = Sources(config.sources)
    try:
        from watchdog.notify import build_router

        # with routes, each notification says where it would go (without, everything goes to Slack or the console)
        router = build_router(config) if config.routes or config.receivers else None
        result = replay(rule, sources, start, end, force_per_tick=args.per_tick, others=others, router=router)
    except Exception as exc:
        print(f"watchdog test-rule: {rule.source}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        sources.close()
    if args.format == "json":
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        print(format_text(result, rule))
    if args.send:
        return _send_preview(config, result.payloads)
    return EXIT_OK if not result.errors or rule.type not in ("threshold", "metric") else EXIT_USAGE


def _send_preview(config: Config, payloads: list[dict[str, Any]]) -> int:
    from watchdog.notify.base import Notification
    from watchdog.notify.slack import SlackNotifier
    from watchdog.notify.slack_blocks import fallback_text

    if config.slack is None:
        print("watchdog test-rule: --send needs a slack block in the config", file=sys.stderr)
        return EXIT_USAGE
    if not payloads:
        print("watchdog test-rule: nothing to send: the replay produced no notification", file=sys.stderr)
        return EXIT_OK
    first = payloads[0]
    payload = {**first, "title": f"PREVIEW {first.get('title', '')}", "text": f"(preview) {first.get('text', '')}",
               "text_mrkdwn": f"(preview) {fallback_text(first)}"}
    delivery = SlackNotifier(config.slack).send(
        Notification(id=0, rule=str(payload["rule"]), group=str(payload["group"]), kind=str(payload["kind"]),
                     episode="preview", payload=payload), None)
    if not delivery.ok:
        print(f"watchdog test-rule: the preview was not sent: {delivery.error}", file=sys.stderr)
        return EXIT_USAGE
    print("preview sent to Slack", file=sys.stderr)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from watchdog.daemon import run

    return run(load_config_or_exit(args), once=args.once)


def _cmd_status(args: argparse.Namespace) -> int:
    from watchdog.status import show_status

    return show_status(load_config_or_exit(args, secrets=False), fmt=args.format, ack_failed=args.ack_failed)


def _cmd_silence(args: argparse.Namespace) -> int:
    from watchdog.status import add_silence

    return add_silence(load_config_or_exit(args, secrets=False), args.target, args.duration, args.reason)


def _cmd_unsilence(args: argparse.Namespace) -> int:
    from watchdog.status import remove_silence

    return remove_silence(load_config_or_exit(args, secrets=False), args.id)


def _cmd_routes(args: argparse.Namespace) -> int:
    from watchdog.loader import load_rules
    from watchdog.notify import build_router
    from watchdog.notify.routing import AlertFacts

    config = load_config_or_exit(args, secrets=False)
    labels: dict[str, str] = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name:
            print(f"watchdog routes: --label {item!r} is not NAME=VALUE (e.g. --label team=data)", file=sys.stderr)
            return EXIT_USAGE
        labels[name] = value
    try:
        at = parse_time(args.at, datetime.now(UTC)) if args.at else datetime.now(UTC)
    except ValueError as exc:
        print(f"watchdog routes: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rule = None
    if os.path.isdir(config.rules_dir):
        rule = next((r for r in load_rules([config.rules_dir], config).rules if r.name == args.rule), None)
    if rule is None:
        print(terminal(f"note: no valid rule named {args.rule!r} in {config.rules_dir}: routing the attributes given"),
              file=sys.stderr)
    facts = AlertFacts(rule=args.rule, type=args.rule_type or (rule.type if rule else ""),
                       severity=args.severity or (rule.severity.value if rule else "warning"),
                       labels={**(dict(rule.labels) if rule else {}), **labels})
    routing = build_router(config).route(facts, at)
    if args.format == "json":
        print(json.dumps({"at": to_text(at), "rule": facts.rule, "type": facts.type, "severity": facts.severity,
                          "labels": dict(facts.labels), "receivers": list(routing.receivers),
                          "held": [t.receiver for t in routing.held], "trace": list(routing.trace)}, indent=2))
        return EXIT_OK
    print(terminal(", ".join(routing.receivers) or "(none)"))
    if routing.held:
        print(terminal(f"held back at {to_text(at)}: {', '.join(t.receiver for t in routing.held)}"))
    for line in routing.trace:
        print(terminal(f"  {line}"))
    return EXIT_OK

def _cmd_state(args: argparse.Namespace) -> int:
    from watchdog.migrate import migrate

    return migrate(load_config_or_exit(args, secrets=False), args.source)


def _attach_relative_times(argv: Sequence[str]) -> list[str]:
    """``--start -2h`` as ``--start=-2h``: argparse would take ``-2h`` for an option."""
    out: list[str] = []
    for token in argv:
        if out and out[-1] in ("--start", "--end", "--at") and re.fullmatch(r"-([0-9]+(ms|s|m|h|d|w))+", token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def _quiet_closed_pipe() -> int:
    """``watchdog status | head``: the reader left; stop without a traceback, as ``cat`` would.

    Python would try to flush stdout again at exit and fail once more, so
    stdout is pointed at /dev/null first. 141 is 128 + SIGPIPE, what a shell
    reports for a command stopped by a closed pipe.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_relative_times(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        print(short_usage(), file=sys.stderr)
        return EXIT_USAGE
    # Everything the process writes (outputs, logs, a traceback) passes through redaction: no secret leaves.
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(stdout), RedactingStream(stderr)
    try:
        result: int = args.handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _quiet_closed_pipe()
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    return result
