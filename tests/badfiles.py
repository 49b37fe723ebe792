"""Every kind of bad rule file found so far (issue 13), each with the line it must be reported at.

Used by the validate tests (one file at a time) and by the daemon test that
drops each of them into the rules directory of a running daemon. Every case
is a variation of GOOD, the rule the fixed file becomes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Seven lines; a case adds its bad line as line 8 unless it replaces one.
GOOD = """\
name: {name}
type: freshness
source: warehouse
schedule: {{every: 1s}}
checks:
  - {{name: ga, sql: "select max(finished_at) from runs"}}
warn_after: 1h
"""

REMEDIATE = """\
name: {name}
type: dms_remediate
source: aws
tasks: [prod-to-warehouse]
restart: {{type: resume-processing, max_attempts: 3, within: {within}, wait_running: 10m}}
refresh: {{source: warehouse, {refresh}, timeout: {timeout}}}
dry_run: true
"""

THRESHOLD = """\
name: {name}
type: threshold
source: logs
index: app-logs-*
window: 5m
threshold: {{above: {above}}}
schedule: {{every: 1m}}
"""


@dataclass(frozen=True)
class BadFile:
    """How to put one bad rule file at a path, where its problem is reported, and what the report says."""

    key: str
    make: Callable[[Path, str], None]  # (path, rule name)
    line: int
    says: str  # a fragment of the message

    needs_permissions: bool = False  # only bad where file permissions apply (not to root with CAP_DAC_OVERRIDE)

    def fix(self, path: Path, name: str) -> None:
        """Replace whatever ``make`` put at ``path`` with the good rule ``name``."""
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text(GOOD.format(name=name))


def good(name: str) -> str:
    return GOOD.format(name=name)


def _text(build: Callable[[str], str | bytes]) -> Callable[[Path, str], None]:
    def make(path: Path, name: str) -> None:
        data = build(name)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return make


def _extra(line: str | bytes) -> Callable[[Path, str], None]:
    return _text(lambda name: good(name).encode() + (line if isinstance(line, bytes) else line.encode()) + b"\n")


def _replace(old: str, new: str) -> Callable[[Path, str], None]:
    return _text(lambda name: good(name).replace(old, new))


def _fifo(path: Path, name: str) -> None:
    os.mkfifo(path)


def _symlink(target: str) -> Callable[[Path, str], None]:
    def make(path: Path, name: str) -> None:
        os.symlink(target, path)
    return make


def _unreadable(path: Path, name: str) -> None:
    path.write_text(good(name))
    path.chmod(0)


def _huge(path: Path, name: str) -> None:
    with open(path, "w") as fh:
        fh.write(good(name))
        fh.write(("# padding " + "x" * 1013 + "\n") * 50 * 1024)  # 50 MiB of valid YAML comments


def _sql_file(target: str) -> Callable[[Path, str], None]:
    def make(path: Path, name: str) -> None:
        if target == "fifo":
            fifo = path.with_suffix(".sql")
            if not fifo.exists():
                os.mkfifo(fifo)
            sql = str(fifo)
        else:
            sql = target
        path.write_text(REMEDIATE.format(name=name, within="6h", refresh=f"sql_file: {sql}", timeout="30m"))
    return make


_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8))

BAD_FILES: tuple[BadFile, ...] = (
    BadFile("not-utf8", _extra(b"description: caf\xe9"), 8, "not UTF-8 text: byte 0xe9 at line 8"),
    BadFile("python-tag", _extra("description: !!python/object/apply:os.system ['true']"), 8, "YAML tags"),
    BadFile("custom-tag", _extra("description: !foo x"), 8, "YAML tags such as '!foo'"),
    BadFile("complex-key", _extra("? [a, b]\n: 1"), 8, "a key must be plain text"),
    BadFile("merge-scalar", _extra("<<: 5"), 8, "'<<' merges mappings"),
    BadFile("self-alias", _extra("labels: &a [*a]"), 8, "refers to a value that contains it"),
    BadFile("deep-nesting", _extra("labels: " + "[" * 998 + "]" * 998), 8, "nested too deeply"),
    BadFile("type-list", _replace("type: freshness", "type: [x]"), 2, "is not one of"),
    BadFile("source-list", _replace("source: warehouse", "source: [x]"), 3, "must be a string"),
    BadFile("huge-duration", _replace("warn_after: 1h", "warn_after: 999999999999d"), 7, "at most 400d"),
    BadFile("huge-every", _replace("every: 1s", "every: 100000000d"), 4, "at most 400d"),
    BadFile("huge-int", _extra("labels: {n: " + "9" * 5000 + "}"), 8, "number too long"),
    BadFile("cron-never", _replace("every: 1s", "cron: '0 0 31 2 *'"), 4, "never fires"),
    BadFile("cron-7-fields", _replace("every: 1s", "cron: '0 0 0 * * * 2030'"), 4, "five fields"),
    BadFile("alias-bomb", _extra("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + _BOMB.rstrip("\n")), 12, "too many values"),
    BadFile("alias-text-bomb", _extra('s: &s "' + "$$" * 100_000 + '"\nlabels: [' + ", ".join(["*s"] * 4000) + "]"),
            9, "too much text"),
    BadFile("fifo", _fifo, 1, "not a regular file: it is a FIFO"),
    BadFile("dev-zero", _symlink("/dev/zero"), 1, "a symbolic link to a file outside"),  # never opened at all
    BadFile("link-to-passwd", _symlink("/etc/passwd"), 1, "a symbolic link to a file outside"),
    BadFile("fifty-megabytes", _huge, 1, "file too large"),
    BadFile("unreadable", _unreadable, 1, "Permission denied", needs_permissions=True),
    BadFile("sql-file-dev-zero", _sql_file("/dev/zero"), 6, "a rule may read files only under"),
    BadFile("sql-file-fifo", _sql_file("fifo"), 6, "FIFO"),
    BadFile("template-width", _extra("message: '{value:>999999999}'"), 8, "widths and precisions of at most 2 digits"),
    BadFile("template-attribute", _extra("message: '{description.__class__.__base__.__subclasses__}'"), 8,
            "is not a plain name"),
    BadFile("repeat-every-zero", _extra("repeat_every: 0s"), 8, "at least 1m"),
    BadFile("within-zero", _text(lambda name: REMEDIATE.format(name=name, within="0s", refresh="sql: select 1",
                                                               timeout="30m")), 5, "at least 1m"),
    BadFile("timeout-zero", _text(lambda name: REMEDIATE.format(name=name, within="6h", refresh="sql: select 1",
                                                                timeout="0s")), 6, "at least 1s"),
    BadFile("threshold-nan", _text(lambda name: THRESHOLD.format(name=name, above=".nan")), 6, "not a finite number"),
    BadFile("threshold-inf", _text(lambda name: THRESHOLD.format(name=name, above="-.inf")), 6, "not a finite number"),
    BadFile("two-documents", _extra("---\nname: other"), 8, "one YAML document"),
    BadFile("control-character", _extra("description: a\x07b"), 8, "control character U+0007"),
)
