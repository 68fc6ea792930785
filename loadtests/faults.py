"""Path faults for the connector emulator: which client connections the path fails, and how soon.

The model's rule (docs/model.md, "Path faults"), acted out in real time: a connection accepted at
``t`` seconds after the emulator started, with ``from_s ≤ t < until_s``, is faulted with
probability ``p_fault`` (one uniform of the emulator's own generator); a ``closed`` or ``reset``
one is failed after a ``fail_after_s`` draw, a ``hung`` one never answers. The emulator
(:mod:`loadtests.emulator`) does the socket work; this object only decides, with no I/O.
"""

from __future__ import annotations

import math
import time

import numpy as np

from sim.scenario import PathFaults


class PathFaultInjector:
    """Decides, for each accepted client connection, whether and when the path fails it."""

    def __init__(self, path: PathFaults, rng: np.random.Generator, t0: float | None = None):
        self.path, self.rng = path, rng
        self.t0 = time.monotonic() if t0 is None else t0
        self.until_s = math.inf if path.until_s is None else path.until_s

    def fault(self, now: float | None = None) -> str | None:
        """The fault of a connection accepted ``now`` (monotonic seconds): ``closed``, ``reset``,
        ``hung``, or None. No draw outside the window or with ``fault = "none"``."""
        path = self.path
        t = (time.monotonic() if now is None else now) - self.t0
        if path.fault == "none" or not path.from_s <= t < self.until_s:
            return None
        return path.fault if self.rng.random() < path.p_fault else None

    def fail_after_s(self) -> float:
        """How long after accepting it the path fails a ``closed`` or ``reset`` connection."""
        return float(self.path.fail_after_s.sample(self.rng, 1)[0])
