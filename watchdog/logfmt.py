"""Logs in the key=value form our users log in: one event per line, never a secret."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

from watchdog.escape import logfmt_key, logfmt_value
from watchdog.redact import redact


def _value(value: Any) -> str:
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    return logfmt_value(redact(text))


def logfmt(**fields: Any) -> str:
    """``logfmt(rule="a", count=3)`` gives ``rule=a count=3``; None values are left out.

    Always one line: every value passes through ``escape.logfmt_value``.
    """
    return " ".join(f"{logfmt_key(key)}={_value(value)}" for key, value in fields.items() if value is not None)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"ts": datetime.fromtimestamp(record.created, UTC), "level": record.levelname.lower(),
                                  "msg": record.getMessage()}
        fields.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return logfmt(**fields)


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("elastic_transport", "opensearch", "urllib3", "botocore", "boto3", "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log ``msg`` with key=value ``fields``."""
    logger.log(level, msg, extra={"fields": fields})
