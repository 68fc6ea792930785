"""The random numbers of a replication, the same for both engines: counter-based streams.

Draw ``k`` of role ``r`` in replication ``i`` of seed ``s`` is a pure function of ``(s, i, r, k)``:
SplitMix64's finaliser (Steele, Lea & Flood 2014) of a hash of the replication's key, the role and
``k``. So the same seed gives the same numbers on any number of processes; a scenario that differs
in one parameter sees the same draws in every other role (common random numbers); and the readable
engine (``sim.engine``) and the fast one (``sim.fast``) draw exactly the same numbers, so they
write the same records (tests/test_engines_agree.py).

Every function below is plain Python, run as it is by the readable engine. ``sim.fast.draws``
compiles the same functions with numba (``register_jitable``), so there is one source: only the
64-bit integer hashing (``mix`` and the keys, states and uniforms made with it) and ``pow2`` have
a numba twin there, written with machine words, tested equal to these. The floating-point steps
(the exponential, the normal quantile, every inverse CDF, gamma's rejection sampler) use only
+ − × ÷, sqrt and the C library's log, log1p, expm1 and pow, which Python and numba both call:
the same doubles (numba's optional Intel SVML, which would vectorise those calls with code of its
own, is not installed with startsim; tests/test_engines_agree.py would notice it).

Every continuous draw but gamma is an inverse CDF of one uniform, so importance sampling can tilt
the uniform (``tilted``) and carry the likelihood ratio; see :mod:`sim.rare`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from sim.distributions import Constant, Empirical, Exponential, Gamma, LogNormal, Uniform, Weibull

# The roles, each a stream of its own, in this order. New roles go at the end. "mixture" picks
# which component of importance sampling's proposal a replication runs (sim.rare).
ROLES = (
    "arrival",
    "before_db",
    "setup",
    "accept",
    "queries",
    "after_db",
    "scale_up",
    "restart_jitter",
    "retry_jitter",
    "cloudsql",
    "mixture",
    # The path-fault rule's (docs/model.md, "Path faults"): whether a connection is faulted, and
    # when the path fails it; then the start-up-phase rule's, reserved (nothing draws it yet).
    "path_fault",
    "path_delay",
    "phase",
    # Traffic after ready (docs/model.md, "Traffic after ready"): the gaps between requests, which
    # ready instance a request goes to, and how long it holds its connection.
    "traffic_arrival",
    "traffic_pick",
    "traffic_query",
    # A pooler in front of the database (docs/model.md): the phase of PgBouncer's janitor against
    # the run's start, one draw per replication when query_wait_timeout is on.
    "pooler_janitor",
    # Direct VPC egress (docs/model.md, "Direct VPC egress"): when an attempt's egress is usable.
    "egress_ready",
    # Circuit breakers (docs/model.md, "Circuit breakers"): the jitter of a wait for an open
    # breaker, one uniform draw per wait when breaker.open_jitter > 0.
    "breaker_jitter",
)

# Distribution kinds, as both engines see them; IN_ORDER (given values in order) is the readable
# engine's alone.
CONSTANT, UNIFORM, EXPONENTIAL, LOGNORMAL, GAMMA, EMPIRICAL, WEIBULL, IN_ORDER = range(8)

GOLDEN = 0x9E3779B97F4A7C15
M1 = 0xBF58476D1CE4E5B9
M2 = 0x94D049BB133111EB
MASK = (1 << 64) - 1
TWO_M53 = 1.0 / 9007199254740992.0


# -- 64-bit hashing (numba twins in sim.fast.draws) ------------------------------------------------


def mix(z: int) -> int:
    """SplitMix64's finaliser: a bijection of 64-bit words that scatters every input bit."""
    z = ((z ^ (z >> 30)) * M1) & MASK
    z = ((z ^ (z >> 27)) * M2) & MASK
    return z ^ (z >> 31)


def seed_base(seed: int) -> int:
    """The word every replication's key of ``seed`` is derived from."""
    return int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0])


def replication_key(base: int, index: int) -> int:
    return mix(base ^ mix((index * GOLDEN + GOLDEN) & MASK))


def stream_state(key: int, role: int) -> int:
    return mix((key + (role + 1) * M2) & MASK)


def substream(state: int, k: int) -> int:
    """The state of a stream of its own for draw ``k`` (gamma's rejection sampler draws several
    uniforms for one value)."""
    return mix((state + (k + 1) * GOLDEN) & MASK)


def unit(state: int, k: int) -> float:
    """Draw ``k`` of a stream: a uniform in (0, 1), never exactly 0 or 1."""
    return ((substream(state, k) >> 11) + 0.5) * TWO_M53


def pow2(n: int) -> float:
    """2 ** n for a normal power of two (−1022 ≤ n ≤ 1023), exactly."""
    return math.ldexp(1.0, n)


# -- floating point: one source for both engines ---------------------------------------------------

_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2, in two parts
_EXP_MAX, _EXP_MIN = 709.782712893384, -745.2  # beyond them e**y is inf, and 0
# 1/13!, 1/12!, …, 1/2!
(_C13, _C12, _C11, _C10, _C9, _C8, _C7, _C6, _C5, _C4, _C3, _C2) = (
    1.0 / math.factorial(i) for i in range(13, 1, -1)
)


def exp(y: float) -> float:
    """e**y to within one unit in the last place of the library's (tests/test_fast_engine.py), in
    plain arithmetic (no library call, so that the fast engine runs a loop of them several at a
    time): y = n ln 2 + r with |r| ≤ ln 2 / 2, e**r by its Taylor series to r¹³ (the next term is
    below 2⁻⁵³ of it), times 2**n in two normal factors."""
    z = min(max(y, _EXP_MIN), _EXP_MAX)
    n = math.floor(z * _LOG2E + 0.5)
    r = (z - n * _LN2_HI) - n * _LN2_LO
    p = ((((_C13 * r + _C12) * r + _C11) * r + _C10) * r + _C9) * r + _C8
    p = ((((((p * r + _C7) * r + _C6) * r + _C5) * r + _C4) * r + _C3) * r + _C2) * r
    p = (p + 1.0) * r + 1.0
    half = n >> 1
    e = p * pow2(half) * pow2(n - half)
    return math.inf if y > _EXP_MAX else (0.0 if y < _EXP_MIN else e)


QUANTILE_TAIL = (
    0.02425  # below it (and above 1 − it) the normal quantile takes Acklam's tail function
)


def central(p: float) -> float:
    """Acklam's rational function for the middle of the normal quantile
    (QUANTILE_TAIL ≤ p ≤ 1 − QUANTILE_TAIL)."""
    q = p - 0.5
    r = q * q
    num = (
        (
            (((-3.969683028665376e01 * r + 2.209460984245205e02) * r - 2.759285104469687e02) * r)
            + 1.383577518672690e02
        )
        * r
        - 3.066479806614716e01
    ) * r + 2.506628277459239
    den = (
        (
            (((-5.447609879822406e01 * r + 1.615858368580409e02) * r - 1.556989798598866e02) * r)
            + 6.680131188771972e01
        )
        * r
        - 1.328068155288572e01
    ) * r + 1.0
    return num * q / den


def acklam_tail(q: float) -> float:
    """Acklam's rational function for the lower tail, at q = sqrt(−2 ln p)."""
    num = (
        (
            (((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q - 2.400758277161838) * q)
            - 2.549732539343734
        )
        * q
        + 4.374664141464968
    ) * q + 2.938163982698783
    den = (
        ((7.784695709041462e-03 * q + 3.224671290700398e-01) * q + 2.445134137142996) * q
        + 3.754408661907416
    ) * q + 1.0
    return num / den


def ndtri(p: float) -> float:
    """The standard normal quantile by Acklam's rational approximation: relative error below
    1.2e-9, far below what any scenario's parameters are known to (a refining step with erfc
    would cost three times as much)."""
    if p < QUANTILE_TAIL:
        return acklam_tail(math.sqrt(-2.0 * math.log(p)))
    if p > 1.0 - QUANTILE_TAIL:
        return -acklam_tail(math.sqrt(-2.0 * math.log1p(-p)))
    return central(p)


def inverse_cdf(kind: int, a: float, b: float, x, lo: int, hi: int, u: float) -> float:
    """The distribution's quantile at ``u`` (not for gamma); empirical values are ``x[lo:hi]``."""
    if kind == CONSTANT:
        return a
    if kind == UNIFORM:
        return a + u * (b - a)
    if kind == EXPONENTIAL:
        return -a * math.log1p(-u)
    if kind == LOGNORMAL:
        return a * exp(b * ndtri(u))
    if kind == WEIBULL:  # shape a, scale b
        return b * (-math.log1p(-u)) ** (1.0 / a)
    return x[lo + min(int(u * (hi - lo)), hi - lo - 1)]


def gamma_draw(shape: float, scale: float, state: int, k: int) -> float:
    """Marsaglia & Tsang (2000), exact for every shape (below 1 by their boost, U^(1/shape) times
    a draw of shape + 1), with its uniforms from a sub-stream of draw ``k``."""
    sub = substream(state, k)
    boost = 1.0
    if shape < 1.0:
        boost = unit(sub, 0) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    j = 1
    while True:
        x = ndtri(unit(sub, j))
        t = 1.0 + c * x
        v = t * t * t  # products, not ** 3: numba would square, C's pow rounds once
        u = unit(sub, j + 1)
        j += 2
        if v > 0 and math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * scale * boost


def draw(kind: int, a: float, b: float, x, lo: int, hi: int, state: int, k: int) -> float:
    """Draw ``k`` of a stream (empirical values in ``x[lo:hi]``)."""
    if kind == GAMMA:
        return gamma_draw(a, b, state, k)
    return inverse_cdf(kind, a, b, x, lo, hi, unit(state, k))


def tilted(u: float, theta: float) -> float:
    """A uniform pushed towards 1: the quantile at ``u`` of the density θ e^(θv) / (e^θ − 1) on
    (0, 1). Importance sampling draws from it; :mod:`sim.rare` weighs by the ratio."""
    v = math.log1p(u * math.expm1(theta)) / theta
    return min(max(v, 1e-300), 1.0 - 1.1e-16)


# -- distributions and roles -----------------------------------------------------------------------


class InOrder:
    """Not a distribution: draw ``k`` is ``values[k]``, then ``after`` for ever. A scenario whose
    scale-outs take a run's observed delays in order (:func:`sim.calibrate.connector.conditional`);
    only the readable engine draws it."""

    def __init__(self, values: list[float], after: float) -> None:
        self.values, self.after = [float(v) for v in values], float(after)


def params(dist) -> tuple[int, float, float, tuple[float, ...]]:
    """A distribution as the engines draw it: kind, two parameters, empirical values."""
    if isinstance(dist, Constant):
        return CONSTANT, dist.value, 0.0, ()
    if isinstance(dist, Uniform):
        return UNIFORM, dist.low, dist.high, ()
    if isinstance(dist, Exponential):
        return EXPONENTIAL, dist.mean_s, 0.0, ()
    if isinstance(dist, LogNormal):
        return LOGNORMAL, dist.median, dist.sigma, ()
    if isinstance(dist, Gamma):
        return GAMMA, dist.shape, dist.scale, ()
    if isinstance(dist, Weibull):
        return WEIBULL, dist.shape, dist.scale, ()
    if isinstance(dist, Empirical):
        return EMPIRICAL, 0.0, 0.0, tuple(dist.values)
    if isinstance(dist, InOrder):
        return IN_ORDER, dist.after, 0.0, tuple(dist.values)
    raise TypeError(f"no draw for {dist!r}")  # pragma: no cover - every Distribution is above


_UNIT = (UNIFORM, 0.0, 1.0, ())  # the draw a jitter scales, and the mixture's


def role_params(sc) -> list[tuple[int, float, float, tuple[float, ...]]]:
    """What each role of :data:`ROLES` draws in scenario ``sc``, as :func:`params`. Arrivals are
    uniform over the window, or exponential gaps of mean 1 / rate (Poisson); bursts and waves draw
    nothing."""
    fleet = sc.fleet
    arrival = (
        (UNIFORM, 0.0, fleet.window_s, ())
        if fleet.arrival == "uniform"
        else (EXPONENTIAL, 1.0 / fleet.rate_per_s, 0.0, ())
    )
    return [
        arrival,
        params(sc.startup.before_db_s),
        params(sc.connector.setup_s),
        params(sc.database.accept_s),
        params(sc.startup.init_queries_s),
        params(sc.startup.after_db_s),
        params(sc.connector.scale_up_delay_s),
        _UNIT,
        _UNIT,
        params(sc.cloudsql.call_s),
        _UNIT,
        _UNIT,
        params(sc.path.fail_after_s),
        _UNIT,
        _traffic_gaps(sc.traffic),
        _UNIT,
        params(sc.traffic.query_s),
        _UNIT,
        params(sc.egress.ready_s),
        _UNIT,
    ]


def _traffic_gaps(traffic) -> tuple[int, float, float, tuple[float, ...]]:
    """Exponential gaps of the traffic's Poisson stream (the fleet's or each instance's); a trace,
    or no traffic, draws nothing (the mean is then a placeholder)."""
    rate = traffic.rate_per_s or traffic.rate_per_instance_per_s
    return (EXPONENTIAL, 1.0 / rate if rate > 0 else 1.0, 0.0, ())


def invertible(dist) -> bool:
    """Whether a distribution is drawn by one inverse CDF (so it can be tilted)."""
    return not isinstance(dist, Gamma | Constant)


class Tilt(NamedTuple):
    """Importance sampling's proposal (see :mod:`sim.rare`): a share ``mix`` of replications draws
    the first ``draws`` values of ``role`` from uniforms tilted by ``theta``; the others draw as
    usual (a defensive mixture, so no weight exceeds 1 / (1 − mix))."""

    role: str
    theta: float
    draws: int = 1
    mix: float = 1.0


UNIT_BLOCK = 64  # uniforms the readable engine hashes at a time, as numpy words


class Stream:
    """One role's draws in one replication, one at a time: draw 0, 1, 2 …

    The uniforms come ``UNIT_BLOCK`` at a time from :func:`unit` over an array of draw numbers
    (the same function: numpy's 64-bit words wrap as the masked Python integers do), which spares
    the readable engine three Python calls per draw; each value is then the same scalar function
    of its uniform as in the fast engine. ``tilt`` (θ, draws, on): importance sampling's proposal
    for this role. Its first ``draws`` uniforms are noted (``tilted_draws``, ``uniform_sum``), and
    pushed towards 1 when ``on``."""

    __slots__ = (
        "a",
        "b",
        "first",
        "hi",
        "k",
        "kind",
        "state",
        "tilt",
        "tilted_draws",
        "uniform_sum",
        "us",
        "x",
    )

    def __init__(self, spec: tuple, state: int, tilt: tuple | None = None) -> None:
        self.kind, self.a, self.b, self.x = spec
        self.hi, self.state, self.k, self.tilt = len(self.x), state, 0, tilt
        self.tilted_draws, self.uniform_sum = 0, 0.0
        self.first, self.us = -UNIT_BLOCK, []  # draw number of us[0], and the block of uniforms

    def __call__(self) -> float:
        k = self.k
        self.k = k + 1
        kind = self.kind
        if self.tilt is not None and k < self.tilt[1]:
            theta, _, on = self.tilt
            v = unit(self.state, k)
            if on:
                v = tilted(v, theta)
            self.tilted_draws += 1
            self.uniform_sum += v
            return inverse_cdf(kind, self.a, self.b, self.x, 0, self.hi, v)
        if kind == CONSTANT:
            return self.a
        if kind == IN_ORDER:
            return self.x[k] if k < self.hi else self.a
        if kind == GAMMA:
            return gamma_draw(self.a, self.b, self.state, k)
        j = k - self.first
        if j >= UNIT_BLOCK:
            self.first, j = k, 0
            self.us = unit(self.state, np.arange(k, k + UNIT_BLOCK, dtype=np.uint64)).tolist()
        return inverse_cdf(kind, self.a, self.b, self.x, 0, self.hi, self.us[j])
