"""Verdicts that do not flip with the seed: a three-way verdict of an interval against a threshold,
and the sequential rule that adds replications until the verdict is settled or a cap is reached.

A verdict read off one interval at one replication count flips with the seed whenever the interval
straddles the threshold: which side it lands on is chance. So an interval that straddles gives
**too close to call**, never met or missed, and replications are added in looks of ``n``, ``2n``,
``4n`` … ``2^(K−1) n`` (the cap) until the interval clears the threshold. Looking again after
each addition would let chance settle a verdict that one look cannot, so the error rate is spent
across the looks by the linear spending function ``α(t) = α t`` of Lan & DeMets (1983) at the
information fraction ``t = n_k / n_K`` (the power family of Kim & DeMets (1987) with ρ = 1): look
``k`` judges on an interval at confidence ``1 − α_k`` with ``α_k = α(t_k) − α(t_{k−1})``. By the
Bonferroni inequality the chance that any look's interval misses the true value is at most
``Σ α_k = α``, whatever the dependence between looks, so a settled verdict is wrong with
probability at most ``α = 1 − confidence`` (and a verdict the truth lies exactly on stays too
close to call). docs/recommend.md and docs/sources.md (group-sequential alpha spending) say more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

MET = "met"
NOT_MET = "not met"
TOO_CLOSE = "too close to call"
LOOKS = 4  # n, 2n, 4n, 8n: the cap is eight times the first look's replications


def look_sizes(first: int, looks: int = LOOKS) -> tuple[int, ...]:
    """Replications at each look: the first, doubled at each look up to the cap."""
    return tuple(first * 2**k for k in range(looks))


def spent_alpha(alpha: float, looks: int = LOOKS) -> tuple[float, ...]:
    """The error rate each look may spend: increments of ``α t`` at ``t_k = n_k / n_K``."""
    sizes = look_sizes(1, looks)
    spent = [alpha * n / sizes[-1] for n in sizes]
    return tuple(b - a for a, b in zip([0.0, *spent[:-1]], spent, strict=True))


def at_least(low: float, high: float, threshold: float) -> str:
    """A share that should reach ``threshold`` (a success rate against a criterion)."""
    if low >= threshold:
        return MET
    return NOT_MET if high < threshold else TOO_CLOSE


def at_most(low: float, high: float, threshold: float) -> str:
    """A share that should stay at or below ``threshold`` (a failure rate against 1 − target)."""
    if high <= threshold:
        return MET
    return NOT_MET if low > threshold else TOO_CLOSE


@dataclass(frozen=True)
class Settled:
    """Where the sequential rule stopped: the verdict, at which look, on how many replications and
    at which confidence that look's interval was taken."""

    verdict: str
    look: int  # 1-based
    looks: int  # the most the rule may take
    replications: int  # spent on this verdict (the last look's count: looks are nested)
    confidence: float  # of the interval the verdict was read from

    @property
    def settled(self) -> bool:
        return self.verdict != TOO_CLOSE

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "settled": self.settled,
            "look": self.look,
            "looks": self.looks,
            "replications": self.replications,
            "confidence": self.confidence,
        }


def settle(
    judge: Callable[[int, float], str], first: int, confidence: float, looks: int = LOOKS
) -> Settled:
    """Run the rule: ``judge(replications, confidence)`` gives a verdict (``MET``, ``NOT_MET``
    or ``TOO_CLOSE``) from an interval at that confidence over that many replications. Stops at
    the first settled verdict, or at the cap still too close to call."""
    alphas = spent_alpha(1 - confidence, looks)
    for k, (n, a) in enumerate(zip(look_sizes(first, looks), alphas, strict=True), 1):
        verdict = judge(n, 1 - a)
        if verdict != TOO_CLOSE or k == looks:
            return Settled(verdict, k, looks, n, 1 - a)
    raise AssertionError("unreachable: the last look always returns")


@dataclass(frozen=True)
class Rule:
    """summary.json's statement of the rule: the looks, the error each spends, the cap."""

    name: str
    confidence: float
    alpha: float  # 1 − confidence: the chance, over all looks, that a settled verdict is wrong
    looks: tuple[int, ...]  # replications at each look of a decision point
    alpha_spent: tuple[float, ...]
    cap_replications: int

    @classmethod
    def of(cls, confidence: float, first: int, looks: int = LOOKS) -> Rule:
        sizes = look_sizes(first, looks)
        return cls(
            "group-sequential, linear alpha spending (Lan & DeMets 1983), Bonferroni over looks",
            confidence,
            1 - confidence,
            sizes,
            spent_alpha(1 - confidence, looks),
            sizes[-1],
        )

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "confidence": self.confidence,
            "alpha": self.alpha,
            "looks": list(self.looks),
            "alpha_spent": list(self.alpha_spent),
            "cap_replications": self.cap_replications,
        }
