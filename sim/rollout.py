"""``[rollout]``: a deploy that replaces the old revision's instances while the new ones start.

The rule is docs/model.md, "Rollout". The old revision's ``old_instances`` are ready and hold
``pool.held_when_ready`` database slots each at t = 0; the new revision's ``fleet.instances``
start as the roll-out lets them, and old instances let go of their slots as new ones become
ready:

- ``kubernetes``: a Deployment's RollingUpdate. At most ``replicas + max_surge`` pods at once (old
  ones and every new one created, ready or not), and at least ``replicas − max_unavailable`` ready
  (old ones and ready new ones); percentages of ``replicas`` round up for the surge and down for
  the unavailable, as Kubernetes does (apps/v1, 25 % each by default). Both given as 0 is refused
  (Kubernetes' validation); both rounded to 0 pods gives 1 unavailable (its controller's
  ``ResolveFenceposts``).
- ``cloud_run``: a revision roll-out. Every new instance starts as ``[fleet]`` says; traffic moves
  in ``steps`` (percent of it on the new revision; ``[100]``: all at once), each when enough new
  instances are ready to carry it, and the old revision keeps instances for the traffic it has
  left.

An old instance let go frees its slots ``old_linger_s`` later (its shutdown; 0: at once).

:class:`RolloutState` is the controller as a sans-I/O object (no clock, no I/O, no random draw):
the readable engine and the fast engine's twin call it at t = 0 and whenever a new instance
becomes ready, and act on what it returns.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, field_validator

from sim.distributions import Seconds
from sim.errors import FieldProblem

# Kubernetes' defaults for a Deployment's RollingUpdate (apps/v1): 25 % and 25 %.
DEFAULT_SURGE = DEFAULT_UNAVAILABLE = "25%"
_PERCENT = re.compile(r"^(\d{1,3})%$")

# An absolute number of pods, or a percentage of replicas written as Kubernetes writes it ("25%").
Amount = int | str
Share = Annotated[float, Field(gt=0.0, le=100.0)]


def amount(value: Amount) -> Amount:
    """``value`` if it is a number of pods or a percentage from '0%' to '100%'."""
    if isinstance(value, bool):
        raise ValueError("must be a number of pods or a percentage such as '25%'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be at least 0")
        return value
    m = _PERCENT.match(value)
    if m is None or int(m.group(1)) > 100:
        raise ValueError("must be a number of pods or a percentage from '0%' to '100%'")
    return value


def given_zero(value: Amount) -> bool:
    """0 or "0%": what Kubernetes' validation reads as zero, before any rounding."""
    return value == 0 if isinstance(value, int) else int(value[:-1]) == 0


def pods(value: Amount, replicas: int, round_up: bool) -> int:
    """``value`` as a number of pods: a percentage of ``replicas``, rounded up (the surge) or
    down (the unavailable), as Kubernetes' intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, int):
        return value
    share = int(value[:-1]) * replicas
    return -(-share // 100) if round_up else share // 100


class Rollout(BaseModel):
    """``[rollout]``: none, a Kubernetes rolling update, or a Cloud Run revision roll-out."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    kind: Literal["none", "kubernetes", "cloud_run"] = "none"
    old_instances: NonNegativeInt | None = None  # the old revision's; None: fleet.instances
    max_surge: Amount = DEFAULT_SURGE  # kubernetes
    max_unavailable: Amount = DEFAULT_UNAVAILABLE  # kubernetes
    steps: list[Share] = Field(default_factory=lambda: [100.0])  # cloud_run: percent of traffic
    old_linger_s: Seconds = 0.0  # from being let go to its slots being free

    _amounts = field_validator("max_surge", "max_unavailable")(amount)

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        if not steps or steps[-1] != 100.0 or any(a >= b for a, b in itertools.pairwise(steps)):
            raise ValueError("must rise strictly and end at 100 (percent of traffic)")
        return steps

    @property
    def on(self) -> bool:
        return self.kind != "none"

    def old(self, replicas: int) -> int:
        """The old revision's instances at t = 0."""
        return replicas if self.old_instances is None else self.old_instances

    def plan(self, replicas: int) -> tuple[int, int]:
        """Kubernetes' (surge, unavailable) in pods for ``replicas``: both rounded to 0 gives 1
        unavailable, as the deployment controller's ``ResolveFenceposts`` does ("on the theory
        that surge might not work due to quota")."""
        surge = pods(self.max_surge, replicas, round_up=True)
        unavailable = pods(self.max_unavailable, replicas, round_up=False)
        return (surge, 1) if surge == unavailable == 0 else (surge, unavailable)

    def check(self, replicas: int) -> None:
        """What Kubernetes' validation refuses: max_surge and max_unavailable both given as 0
        (or "0%"), for any ``replicas``: the roll-out could never make progress."""
        if (
            self.kind == "kubernetes"
            and given_zero(self.max_surge)
            and given_zero(self.max_unavailable)
        ):
            raise FieldProblem(
                "rollout.max_surge",
                self.max_surge,
                "max_surge and max_unavailable cannot both be 0 (Kubernetes refuses it: the "
                "roll-out could never make progress)",
            )

    def state(self, replicas: int) -> RolloutState:
        surge, unavailable = self.plan(replicas) if self.kind == "kubernetes" else (0, 0)
        return RolloutState(self.kind, replicas, self.old(replicas), surge, unavailable, self.steps)


@dataclass(slots=True)
class Moves:
    """What the controller does now: start ``start`` more new instances (the next ones in index
    order), and let go of ``release`` old ones."""

    start: int
    release: int


class RolloutState:
    """The roll-out's controller: how many old instances remain, new ones created and ready."""

    __slots__ = (
        "created",
        "initial",
        "kind",
        "old",
        "ready",
        "replicas",
        "steps",
        "surge",
        "unavailable",
    )

    def __init__(
        self,
        kind: str,
        replicas: int,
        old: int,
        surge: int = 0,
        unavailable: int = 0,
        steps: list[float] | tuple[float, ...] = (100.0,),
    ) -> None:
        self.kind = kind
        self.replicas = replicas
        self.old = old
        self.initial = old  # O: Cloud Run's shares are of the old revision's first count
        self.created = 0
        self.ready = 0
        self.surge = surge
        self.unavailable = unavailable
        self.steps = tuple(steps)

    def became_ready(self) -> Moves:
        """A new instance became ready (its first time)."""
        self.ready += 1
        return self.moves()

    def moves(self) -> Moves:
        """Bring the roll-out to what its rule allows now (at t = 0, and after each ready)."""
        if self.kind == "kubernetes":
            # Old pods go down to what keeps replicas − unavailable ready; new ones up to what
            # keeps every pod within replicas + surge (the deployment controller's two sums).
            keep = min(self.old, max(0, self.replicas - self.unavailable - self.ready))
            cap = min(self.replicas, self.replicas + self.surge - keep)
        else:  # cloud_run: all new at once; the old keep what traffic they have left
            share = 0.0
            for step in self.steps:
                if self.ready >= math.ceil(step / 100.0 * self.replicas - 1e-9):
                    share = step
            keep = min(self.old, math.ceil(self.initial * (1.0 - share / 100.0) - 1e-9))
            cap = self.replicas
        release, self.old = self.old - keep, keep
        start = max(0, cap - self.created)
        self.created += start
        return Moves(start, release)
