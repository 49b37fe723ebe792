"""Wall-clock steps, told apart from the passing of time by the monotonic clock.

Schedules are planned in wall-clock time (cron needs it, and ``status`` shows
it), but the time that passes between two loop turns is measured on the
monotonic clock, which NTP, an operator or a VM migration never steps. When the
two disagree by more than STEP_THRESHOLD the wall clock was stepped; the
engine then moves interval schedules with it so that an hour set back never
means an hour without evaluations. Pure: every method takes both readings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# NTP slews (at most 0.5 ms per second) stay far below this; a real step is at least this big.
STEP_THRESHOLD = timedelta(seconds=2)


@dataclass
class StepDetector:
    """Compares successive (wall, monotonic) readings; ``step`` returns how far the wall clock jumped."""

    wall: datetime | None = None
    mono: float = 0.0

    def step(self, wall: datetime, mono: float) -> timedelta | None:
        """The wall clock's jump since the previous reading (negative: set back), or None when it kept time."""
        previous, previous_mono = self.wall, self.mono
        self.wall, self.mono = wall, mono
        if previous is None:
            return None
        jump = (wall - previous) - timedelta(seconds=mono - previous_mono)
        return jump if abs(jump) >= STEP_THRESHOLD else None
