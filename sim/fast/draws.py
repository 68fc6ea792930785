"""Random draws for the fast engine: counter-based streams and inverse-CDF distributions.

Draw ``k`` of role ``r`` in replication ``i`` is a pure function of ``(seed, i, r, k)``: SplitMix64
(Steele, Lea & Flood 2014) started from a hash of the replication's key and the role. So the same
seed gives the same numbers on any number of cores or threads, and a scenario that differs in one
parameter sees the same draws everywhere else (common random numbers), as in the readable engine;
the streams themselves differ from numpy's, so the two engines agree in distribution, and draw for
draw only when every distribution is constant.

Every continuous draw but gamma is an inverse CDF of one uniform, so importance sampling can tilt
the uniform (``tilt`` > 0 pushes draws towards the distribution's upper tail) and carry the
likelihood ratio; see :mod:`sim.rare`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from sim.distributions import Constant, Empirical, Exponential, Gamma, LogNormal, Uniform, Weibull

# Distribution kinds, as the kernel sees them.
CONSTANT, UNIFORM, EXPONENTIAL, LOGNORMAL, GAMMA, EMPIRICAL, WEIBULL = range(7)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = 1.0 / 9007199254740992.0


@nb.njit(cache=True, _nrt=False, inline="always")
def mix(z):
    """SplitMix64's finaliser: a bijection of 64-bit words that scatters every input bit."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@nb.njit(cache=True, _nrt=False)
def replication_key(base, index):
    return mix(base ^ mix(np.uint64(index) * _GOLDEN + _GOLDEN))


@nb.njit(cache=True, _nrt=False)
def stream_state(key, role):
    return mix(key + np.uint64(role + 1) * _M2)


@nb.njit(cache=True, _nrt=False, inline="always")
def unit(state, k):
    """Draw ``k`` of a stream: a uniform in (0, 1), never exactly 0 or 1."""
    x = mix(state + np.uint64(k + 1) * _GOLDEN)
    return (float(x >> _S11) + 0.5) * _TWO_M53


@intrinsic
def as_float(typingctx, bits):
    """The float64 whose bits are the int64 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def as_bits(typingctx, value):
    """The int64 whose bits are the float64 ``value`` (the kernel keeps some times among ints)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2, in two parts
_EXP_MAX, _EXP_MIN = 709.782712893384, -745.2  # beyond them e**y is inf, and 0
_TAYLOR = tuple(1.0 / math.factorial(i) for i in range(13, 1, -1))


@nb.njit(cache=True, _nrt=False, inline="always")
def exp(y):
    """e**y to within one unit in the last place of the library's (tests/test_fast_engine.py), in
    plain arithmetic (no library call), so that a loop of them runs several at a time:
    y = n ln 2 + r with |r| ≤ ln 2 / 2, e**r by its Taylor series to r¹³ (the next term is below
    2⁻⁵³ of it), times 2**n built from its bits."""
    z = min(max(y, _EXP_MIN), _EXP_MAX)
    n = math.floor(z * _LOG2E + 0.5)
    r = (z - n * _LN2_HI) - n * _LN2_LO
    c = _TAYLOR  # 1/13!, 1/12!, …, 1/2!
    p = ((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]
    p = ((((((p * r + c[6]) * r + c[7]) * r + c[8]) * r + c[9]) * r + c[10]) * r + c[11]) * r
    p = (p + 1.0) * r + 1.0
    half = np.int64(n) >> 1  # 2**n in two factors: each stays a normal float
    e = p * as_float((half + 1023) << 52) * as_float((np.int64(n) - half + 1023) << 52)
    return math.inf if y > _EXP_MAX else (0.0 if y < _EXP_MIN else e)


@nb.njit(cache=True, _nrt=False, inline="always")
def _central(p):
    """Acklam's rational function for the middle of the normal quantile (0.02425 ≤ p ≤ 0.97575)."""
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


_TAIL = 0.02425  # below it (and above 1 − it) the normal quantile takes Acklam's tail function


@nb.njit(cache=True, _nrt=False)
def _acklam_tail(q):
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


@nb.njit(cache=True, _nrt=False)
def ndtri(p):
    """The standard normal quantile by Acklam's rational approximation: relative error below
    1.2e-9, far below what any scenario's parameters are known to (a refining step with erfc
    would cost three times as much)."""
    if p < _TAIL:
        return _acklam_tail(math.sqrt(-2.0 * math.log(p)))
    if p > 1.0 - _TAIL:
        return -_acklam_tail(math.sqrt(-2.0 * math.log1p(-p)))
    return _central(p)


@nb.njit(cache=True, _nrt=False)
def inverse_cdf(kind, a, b, x, lo, hi, u):
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


@nb.njit(cache=True, _nrt=False)
def gamma_draw(shape, scale, state, k):
    """Marsaglia & Tsang (2000), with its uniforms from a sub-stream of draw ``k``."""
    sub = mix(state + np.uint64(k + 1) * _GOLDEN)
    boost = 1.0
    if shape < 1.0:
        boost = unit(sub, 0) ** (1.0 / shape)
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    j = 1
    while True:
        x = ndtri(unit(sub, j))
        v = (1.0 + c * x) ** 3
        u = unit(sub, j + 1)
        j += 2
        if v > 0 and math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            return d * v * scale * boost


@nb.njit(cache=True, _nrt=False)
def draw(kind, a, b, x, lo, hi, state, k):
    """Draw ``k`` of a stream (empirical values in ``x[lo:hi]``)."""
    if kind == GAMMA:
        return gamma_draw(a, b, state, k)
    return inverse_cdf(kind, a, b, x, lo, hi, unit(state, k))


@nb.njit(cache=True, _nrt=False, error_model="numpy")
def fill(kind, a, b, x, lo, hi, state, k, out, count):
    """Draws ``k`` … ``k + count − 1`` of a stream into ``x[out:out + count]``; the next
    ``count`` slots are scratch.

    Lognormal draws, the usual kind, in passes over the block that the processor runs several
    draws at a time (no branch, no library call in them): the uniforms, the normal quantile's
    middle, then its tails (one draw in 20, one at a time), then the exponential."""
    if kind == LOGNORMAL:
        y, us = x[out : out + count], x[out + count : out + 2 * count]  # views: plain indices
        for j in range(count):
            us[j] = unit(state, k + j)
        for j in range(count):
            u = us[j]
            y[j] = _central(u) if _TAIL <= u <= 1.0 - _TAIL else 0.0
        for j in range(count):
            u = us[j]
            if u < _TAIL or u > 1.0 - _TAIL:
                y[j] = ndtri(u)
        for j in range(count):
            y[j] = a * exp(b * y[j])
        return
    for j in range(count):
        x[out + j] = draw(kind, a, b, x, lo, hi, state, k + j)


@nb.njit(cache=True, _nrt=False)
def tilted(u, theta):
    """A uniform pushed towards 1: the quantile at ``u`` of the density θ e^(θv) / (e^θ − 1) on
    (0, 1). Importance sampling draws from it; :mod:`sim.rare` weighs by the ratio."""
    v = math.log1p(u * math.expm1(theta)) / theta
    return min(max(v, 1e-300), 1.0 - 1.1e-16)


def pack(dists: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distributions as arrays: kind, two parameters, and empirical values with offsets."""
    kinds = np.zeros(len(dists), np.int64)
    params = np.zeros((len(dists), 2))
    offsets = np.zeros((len(dists), 2), np.int64)
    values: list[float] = []
    for i, d in enumerate(dists):
        if isinstance(d, Constant):
            kinds[i], params[i] = CONSTANT, (d.value, 0.0)
        elif isinstance(d, Uniform):
            kinds[i], params[i] = UNIFORM, (d.low, d.high)
        elif isinstance(d, Exponential):
            kinds[i], params[i] = EXPONENTIAL, (d.mean_s, 0.0)
        elif isinstance(d, LogNormal):
            kinds[i], params[i] = LOGNORMAL, (d.median, d.sigma)
        elif isinstance(d, Gamma):
            kinds[i], params[i] = GAMMA, (d.shape, d.scale)
        elif isinstance(d, Weibull):
            kinds[i], params[i] = WEIBULL, (d.shape, d.scale)
        elif isinstance(d, Empirical):
            kinds[i] = EMPIRICAL
            offsets[i] = (len(values), len(values) + len(d.values))
            values += d.values
        else:  # pragma: no cover - every Distribution is one of the above
            raise TypeError(f"no fast draw for {d!r}")
    return kinds, params, offsets, np.asarray(values or [0.0])


def invertible(dist) -> bool:
    """Whether a distribution is drawn by one inverse CDF (so it can be tilted)."""
    return not isinstance(dist, Gamma | Constant)
