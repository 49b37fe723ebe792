"""The ``watchdog`` command line: argument parsing and output, nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from watchdog import __version__
from watchdog.config import CONFIG_ENV, Config, default_config_path, load_config
from watchdog.problems import InvalidFileError, Problem

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

_EPILOG = f"""\
CONFIG defaults to ${CONFIG_ENV}, then /etc/watchdog/watchdog.yaml.
Durations: 30s, 5m, 2h, 1d, 1h30m. Times: ISO 8601 (2026-11-28T02:00:00Z) or relative (-2h).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", metavar="CONFIG", help=f"config file (default: ${CONFIG_ENV}, then /etc/watchdog/watchdog.yaml)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="watchdog", description="Alerting for log search, warehouse freshness and AWS DMS, with Slack notifications.",
                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"watchdog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, help_: str, example: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        return p

    p = command("run", "run the daemon: evaluate each rule on its schedule, notify, remediate",
                "watchdog run -c /etc/watchdog/watchdog.yaml --once")
    _add_config(p)
    p.add_argument("--once", action="store_true", help="evaluate every rule once, deliver notifications, and exit")
    p.set_defaults(handler=_cmd_run)

    p = command("validate", "validate the config and rule files without contacting any source",
                "watchdog validate -c watchdog.yaml rules/app-errors.yaml")
    _add_config(p)
    p.add_argument("paths", nargs="*", metavar="PATH", help="rule files or directories (default: the config's rules directory)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=_cmd_validate)

    p = command("status", "show every rule's state per group, last and next run, errors and silences",
                "watchdog status --format json")
    _add_config(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=_cmd_status)

    p = command("silence", "mute a rule's notifications (state is still tracked)",
                "watchdog silence app-error-rate:team-a --for 2h --reason 'deploy in progress'")
    _add_config(p)
    p.add_argument("target", metavar="RULE[:GROUP]")
    p.add_argument("--for", dest="duration", required=True, metavar="DURATION")
    p.add_argument("--reason", default="")
    p.set_defaults(handler=_cmd_silence)

    p = command("unsilence", "remove a silence", "watchdog unsilence 3")
    _add_config(p)
    p.add_argument("id", metavar="ID")
    p.set_defaults(handler=_cmd_unsilence)
    return parser


def _config_path(args: argparse.Namespace) -> tuple[str, bool]:
    """The config path, and whether the user named it (explicitly or by environment)."""
    if args.config:
        return args.config, True
    return default_config_path(), bool(os.environ.get(CONFIG_ENV))


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def load_config_or_exit(args: argparse.Namespace) -> Config:
    path, _ = _config_path(args)
    try:
        return load_config(path)
    except InvalidFileError as exc:
        _print_problems(exc.problems)
        raise SystemExit(EXIT_USAGE) from None


def _cmd_validate(args: argparse.Namespace) -> int:
    from watchdog.loader import load_rules

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
    result = load_rules(paths, config) if paths else None
    if result is not None:
        problems += result.problems
    valid = not problems
    if args.format == "json":
        out: dict[str, Any] = {"valid": valid, "errors": [p.to_dict() for p in problems],
                               "files": len(result.files) if result else 0, "rules": len(result.rules) if result else 0}
        print(json.dumps(out, indent=2))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        for problem in problems:
            print(problem)
        files = len(result.files) if result else 0
        bad = len({p.file for p in problems})
        if valid:
            print(f"ok: {files} rule file{'s' if files != 1 else ''} valid" + (f", config {config.path}" if config else ""))
        else:
            print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in {bad} file{'s' if bad != 1 else ''}")
    return EXIT_OK if valid else EXIT_INVALID


def _cmd_run(args: argparse.Namespace) -> int:
    from watchdog.daemon import run

    return run(load_config_or_exit(args), once=args.once)


def _cmd_status(args: argparse.Namespace) -> int:
    from watchdog.status import show_status

    return show_status(load_config_or_exit(args), fmt=args.format)


def _cmd_silence(args: argparse.Namespace) -> int:
    from watchdog.status import add_silence

    return add_silence(load_config_or_exit(args), args.target, args.duration, args.reason)


def _cmd_unsilence(args: argparse.Namespace) -> int:
    from watchdog.status import remove_silence

    return remove_silence(load_config_or_exit(args), args.id)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return result
