"""Random draws for the fast engine: the functions of :mod:`sim.streams`, compiled.

:mod:`sim.streams` defines every draw once, in plain Python, for both engines. Here numba compiles
those same functions (``register_jitable``: a call to one from compiled code compiles its Python
source); only the 64-bit hashing and ``pow2`` get twins written with machine words, which
tests/test_engines_agree.py checks equal to the Python ones. So the kernel draws, bit for bit, the
numbers the readable engine draws.

``fill`` is the kernel's own: a block of draws of one stream at a time, lognormal draws in passes
the processor runs several at a time. The values are those of ``draw``, one at a time.
"""

from __future__ import annotations

import inspect

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload, register_jitable

from sim import streams
from sim.streams import LOGNORMAL, QUANTILE_TAIL

_GOLDEN = np.uint64(streams.GOLDEN)
_M1 = np.uint64(streams.M1)
_M2 = np.uint64(streams.M2)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TWO_M53 = streams.TWO_M53


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


# -- twins of sim.streams' hashing, in 64-bit words ------------------------------------------------

_OPTIONS = {"cache": True, "_nrt": False}


def _twin_of(python_fn):
    """Compiled code calling ``python_fn`` (of sim.streams) runs the decorated twin instead."""

    def register(twin):
        def typer(*args):
            return twin.py_func

        # numba asks the typing function's signature to be the implementation's.
        typer.__signature__ = inspect.signature(twin.py_func)
        overload(python_fn, inline="always", jit_options={"_nrt": False})(typer)
        return twin

    return register


@_twin_of(streams.mix)
@nb.njit(inline="always", **_OPTIONS)
def mix(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@_twin_of(streams.replication_key)
@nb.njit(**_OPTIONS)
def replication_key(base, index):
    return mix(np.uint64(base) ^ mix(np.uint64(index) * _GOLDEN + _GOLDEN))


@_twin_of(streams.stream_state)
@nb.njit(**_OPTIONS)
def stream_state(key, role):
    return mix(np.uint64(key) + np.uint64(role + 1) * _M2)


@_twin_of(streams.substream)
@nb.njit(inline="always", **_OPTIONS)
def substream(state, k):
    return mix(np.uint64(state) + np.uint64(k + 1) * _GOLDEN)


@_twin_of(streams.unit)
@nb.njit(inline="always", **_OPTIONS)
def unit(state, k):
    return (float(substream(state, k) >> _S11) + 0.5) * _TWO_M53


@_twin_of(streams.pow2)
@nb.njit(inline="always", **_OPTIONS)
def pow2(n):
    return as_float((np.int64(n) + 1023) << 52)


# Called from compiled code, these compile their own Python source.
for _fn in (streams.exp, streams.central):
    register_jitable(inline="always", _nrt=False)(_fn)
for _fn in (
    streams.acklam_tail,
    streams.ndtri,
    streams.inverse_cdf,
    streams.gamma_draw,
    streams.draw,
    streams.tilted,
):
    register_jitable(_nrt=False)(_fn)

exp = nb.njit(inline="always", **_OPTIONS)(streams.exp)
central = nb.njit(inline="always", **_OPTIONS)(streams.central)
ndtri = nb.njit(**_OPTIONS)(streams.ndtri)
inverse_cdf = nb.njit(**_OPTIONS)(streams.inverse_cdf)
gamma_draw = nb.njit(**_OPTIONS)(streams.gamma_draw)
draw = nb.njit(**_OPTIONS)(streams.draw)
tilted = nb.njit(**_OPTIONS)(streams.tilted)


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
            y[j] = central(u) if QUANTILE_TAIL <= u <= 1.0 - QUANTILE_TAIL else 0.0
        for j in range(count):
            u = us[j]
            if u < QUANTILE_TAIL or u > 1.0 - QUANTILE_TAIL:
                y[j] = ndtri(u)
        for j in range(count):
            y[j] = a * exp(b * y[j])
        return
    for j in range(count):
        x[out + j] = draw(kind, a, b, x, lo, hi, state, k + j)


def pack(dists: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distributions (as :func:`sim.streams.params` gives them) as arrays: kind, two parameters,
    and empirical values with offsets."""
    kinds = np.zeros(len(dists), np.int64)
    params = np.zeros((len(dists), 2))
    offsets = np.zeros((len(dists), 2), np.int64)
    values: list[float] = []
    for i, spec in enumerate(dists):
        kind, a, b, xs = spec if isinstance(spec, tuple) else streams.params(spec)
        if kind == streams.IN_ORDER:
            raise TypeError("the fast engine draws no values in a given order (InOrder)")
        kinds[i], params[i] = kind, (a, b)
        offsets[i] = (len(values), len(values) + len(xs))
        values += xs
    return kinds, params, offsets, np.asarray(values or [0.0])
