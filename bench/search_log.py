"""When each search went out and which rules it covered: splits a burst's latency into schedule wait and processing.

A burst's latency (events indexed -> alert posted) is the sum of two parts:

- ``wait_for_schedule``: from the burst being indexed to the first search the
  tool sent afterwards that covers the burst's rule. The schedule decides it:
  on average half the interval, whatever the tool.
- ``processing``: from that search going out to the alert arriving: the search
  itself, the evaluation, recording and posting. This part is the tool's.

The log keeps, per search request, only its arrival time at the proxy and the
rule names its body mentions (a regex over the body; bodies are not kept). In
the benchmark every rule searches its own service, named like the rule, so the
names in a body are the rules it covers: ElastAlert2 sends one ``_search`` or
``_count`` per rule, watchdog one ``_msearch`` for up to 100 rules.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

SEARCHES = ("_search", "_msearch", "_count")


@dataclass
class SearchLog:
    """Search requests on the log indices: (time.time() on arrival, rule names in the body), in arrival order."""

    names: re.Pattern[str]
    index: str = "logs-"  # only searches of the log indices (not ElastAlert2's writeback index)
    times: list[float] = field(default_factory=list)
    rules: list[frozenset[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, at: float, method: str, path: str, body: bytes) -> None:
        """The counting proxy's ``on_request`` hook."""
        if not any(kind in path for kind in SEARCHES):
            return
        text = body.decode("utf-8", "replace")
        if self.index not in path and self.index not in text:  # _msearch names its indices in the body
            return
        found = frozenset(self.names.findall(text))
        if found:
            with self.lock:
                self.times.append(at)
                self.rules.append(found)

    def first_covering(self, rule: str, after: float) -> float | None:
        """When the first search that covers ``rule`` was sent at or after ``after`` (None: none was)."""
        with self.lock:  # (a scan, not a bisection: two handler threads may append slightly out of order)
            return min((at for at, names in zip(self.times, self.rules, strict=True) if at >= after and rule in names),
                       default=None)


@dataclass(frozen=True)
class Split:
    """One alert's latency in two parts (seconds)."""

    rule: str
    total: float
    wait_for_schedule: float | None  # None: no search covering the rule was seen after the burst
    processing: float | None


def split(log: SearchLog, injected: dict[str, float], alerts: list[tuple[str, float]]) -> list[Split]:
    """For each alert of a burst rule (name, arrival): its latency, and the two parts around the first covering search.

    An alert that arrives before the first covering search found after the
    injection (it cannot happen unless the tool alerted from older data) gets
    no split.
    """
    out = []
    for name, arrived in alerts:
        if name not in injected:
            continue
        sent = log.first_covering(name, injected[name])
        if sent is None or sent > arrived:
            out.append(Split(name, arrived - injected[name], None, None))
        else:
            out.append(Split(name, arrived - injected[name], sent - injected[name], arrived - sent))
    return out
