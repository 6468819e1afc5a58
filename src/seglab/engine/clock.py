"""The clock of every duration the trainer measures and of time budgets; tests replace `now` with a
simulated clock to check budgets without timing anything."""
from __future__ import annotations

import time
from typing import Callable

now: Callable[[], float] = time.perf_counter
