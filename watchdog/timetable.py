"""When each rule runs next, with the soonest found without looking at every rule.

The engine's loop wakes once for every dispatch; with schedules spread over the
minute that is as many wakes as rules, so anything it does per wake over all
rules makes the idle cost grow with the square of the rule set. A heap beside
the mapping answers "what is due" and "when is the next one" in time
logarithmic in the rules.
"""

from __future__ import annotations

import heapq
from datetime import datetime

# The heap is rebuilt when stale entries outnumber live ones by this factor (bounded memory).
_COMPACT_FACTOR = 2


class Timetable(dict[str, datetime]):
    """Rule name -> planned next run, a dict whose soonest entries come out of a heap.

    Every assignment pushes (time, name); entries whose time is no longer the
    rule's are stale and dropped lazily. ``take_due`` removes the rules it
    returns from the heap (they are being run; assigning their next run puts
    them back), so an in-flight rule is never looked at again until then.
    """

    def __init__(self) -> None:
        super().__init__()
        self._heap: list[tuple[datetime, str]] = []

    def __setitem__(self, name: str, when: datetime) -> None:
        super().__setitem__(name, when)
        heapq.heappush(self._heap, (when, name))
        if len(self._heap) > _COMPACT_FACTOR * len(self) + 64:
            self._heap = list({entry for entry in self._heap if self._live(entry)})  # taken rules stay out
            heapq.heapify(self._heap)

    def _live(self, entry: tuple[datetime, str]) -> bool:
        when, name = entry
        return self.get(name) == when

    def soonest(self) -> datetime | None:
        """The earliest planned run still in the heap (None: none), dropping stale entries on the way."""
        heap = self._heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def take_due(self, now: datetime) -> list[str]:
        """The rules planned at or before ``now``, earliest first, taken out of the heap (not out of the mapping)."""
        heap = self._heap
        taken: dict[str, None] = {}
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._live(entry):
                taken[entry[1]] = None  # a time assigned twice is pushed twice: one rule, once
        return list(taken)
