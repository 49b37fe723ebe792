"""Thresholds with optional severity tiers, shared by every rule type that compares a number.

A threshold is one direction (``above`` or ``below``; spikes say
``ratio_above`` / ``ratio_below``) and one or more limits:

- ``{above: 50}``: one limit; a breach has the rule's ``severity``;
- ``{above: {warning: 50, critical: 200}}``: tiers; a breach has the
  severity of the most severe tier it passes, so one rule warns at 50 and
  pages at 200 (a move between tiers is a severity change, notified as such).

Pure: parsing raises OptionsError with the key path; classifying never raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from watchdog.rule import Severity
from watchdog.ruletypes.base import OptionsError, Path

TIER_ORDER = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)


@dataclass(frozen=True)
class Level:
    """One limit; ``severity`` None means the rule's own severity (an untiered threshold)."""

    limit: float
    severity: Severity | None = None


def _fmt(number: float) -> str:
    return f"{number:g}"


@dataclass(frozen=True)
class Threshold:
    """A direction and its limits, mildest first (``levels[0]`` is the first to be passed).

    ``key`` is the rule-file key (``above``, ``below``, ``ratio_above``,
    ``ratio_below``); ``above`` is derived from it.
    """

    key: str
    levels: tuple[Level, ...]

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError("a threshold needs at least one limit")
        if not all(math.isfinite(level.limit) for level in self.levels):
            raise ValueError("threshold limits must be finite numbers")
        limits = [level.limit for level in self.levels]
        ordered = sorted(limits) if self.is_above else sorted(limits, reverse=True)
        if limits != ordered or len(set(limits)) != len(limits):
            raise ValueError("tiers must be ordered: each more severe tier further past the mildest")

    # --- what the rest of the code asks -------------------------------------------------

    @property
    def is_above(self) -> bool:
        return self.key.endswith("above")

    @property
    def above(self) -> float | None:
        """The mildest limit of an ``above`` threshold (None for ``below``)."""
        return self.levels[0].limit if self.is_above else None

    @property
    def below(self) -> float | None:
        """The mildest limit of a ``below`` threshold (None for ``above``)."""
        return None if self.is_above else self.levels[0].limit

    @property
    def limit(self) -> float:
        """The mildest limit: where alerting starts."""
        return self.levels[0].limit

    @property
    def tiered(self) -> bool:
        return self.levels[0].severity is not None

    def passes(self, value: float, limit: float) -> bool:
        """Whether ``value`` is strictly past ``limit`` in this threshold's direction."""
        return value > limit if self.is_above else value < limit

    def classify(self, value: float) -> Level | None:
        """The most severe level ``value`` passes, or None when it passes none (NaN passes none)."""
        hit: Level | None = None
        for level in self.levels:
            if self.passes(value, level.limit):
                hit = level
        return hit

    def breached(self, value: float) -> bool:
        return self.classify(value) is not None

    def severity(self, value: float) -> Severity | None:
        """The severity of a breach by ``value`` (None: the rule's own, or no breach)."""
        level = self.classify(value)
        return None if level is None else level.severity

    def describe(self) -> str:
        """``above 50`` or ``above 50 (warning), 200 (critical)``."""
        words = self.key.replace("_", " ")
        if not self.tiered:
            return f"{words} {_fmt(self.limit)}"
        parts = ", ".join(f"{_fmt(level.limit)} ({level.severity.value})" for level in self.levels if level.severity)
        return f"{words} {parts}"

    # --- parsing ----------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], path: Path = ("threshold",),
                     keys: tuple[str, str] = ("above", "below")) -> Threshold:
        """Build from ``{above: 50}`` or ``{above: {warning: 50, critical: 200}}`` (the schema checked the shape).

        Raises OptionsError naming the key when tiers are out of order.
        """
        present = [k for k in keys if k in data]
        if len(present) != 1:
            raise OptionsError(path, f"give exactly one of {' or '.join(keys)}")
        key = present[0]
        raw = data[key]
        if isinstance(raw, Mapping):
            levels = tuple(Level(float(raw[s.value]), s) for s in TIER_ORDER if s.value in raw)
            if not levels:
                raise OptionsError(path + (key,), "give at least one tier: info, warning or critical")
        else:
            levels = (Level(float(raw)),)
        if not all(math.isfinite(level.limit) for level in levels):
            raise OptionsError(path + (key,), "limits must be finite numbers (not .inf or .nan)")
        try:
            return cls(key=key, levels=levels)
        except ValueError:
            direction = "higher" if key.endswith("above") else "lower"
            order = " < ".join(level.severity.value for level in levels if level.severity)
            raise OptionsError(path + (key,), f"each tier must be {direction} than the one before ({order}): "
                               + ", ".join(f"{level.severity.value if level.severity else ''}: {_fmt(level.limit)}"
                                           for level in levels)) from None
