"""The fast engine's event loop: replications of ``sim/engine.py``'s model, compiled with numba.

The kernel is four modules, one job each: :mod:`sim.fast.layout` (where the state lives in two
flat arrays, and the codes), :mod:`sim.fast.queue` (where pending events wait, and which is next),
:mod:`sim.fast.handlers` (what each event does, handler for handler the readable engine's), and
this one: resetting a replication, its first starts, the loop that takes the next event and runs
its handler, and :func:`run_block`, which runs replications one after another and sums them up.

Why ``_nrt=False``: with numba's runtime on, every call that passes ``m`` and ``x`` counts their
references up and down with atomic instructions; profiled on a burst, those counts took more than
half the time. Nothing in the event loop allocates, so it runs without the runtime; only
``arrivals`` (which sorts) and ``run_block`` (called from Python) keep it.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from sim.fast.draws import replication_key, stream_state, unit
from sim.fast.handlers import (
    deadline_live,
    dispatch,
    rnd,
    rollout_begin,
    start_attempt,
    start_traffic,
    timeout_live,
)
from sim.fast.layout import (
    A_HEAD,
    A_HELD,
    A_TAIL,
    ARRIVAL,
    B_READY,
    DEADLINES,
    DRAW_BLOCK,
    F_END,
    F_HORIZON,
    F_MIX,
    I_ADDRESSED,
    I_ARRIVAL,
    I_CX_MIN,
    I_CX_PER,
    I_FREE_SLOTS,
    I_INSTANCES,
    I_KEEP,
    I_TILT_ROLE,
    I_TRACE_N,
    I_TRAFFIC,
    I_WARM_HELD,
    L_ARRIVALS,
    L_BITS,
    L_CONN_CAP,
    L_FREE,
    L_NB,
    L_REC_I,
    L_REQ_I,
    L_RING_CAP,
    L_RING_I,
    L_ROLLOUT,
    L_WAVES,
    M_INST,
    M_KB,
    M_KC,
    M_KS,
    MIX,
    N_ROLES,
    NF,
    NI,
    NQ,
    NR,
    OK,
    POISSON,
    Q_REP,
    R_ATTEMPT,
    R_OUTCOME,
    R_REP,
    READY,
    REJECTED,
    RO_KIND,
    RO_NONE,
    S_API_WINDOW,
    S_ARRIVED,
    S_CAL_FREE,
    S_CONN_ATTEMPTS,
    S_CX_CAP,
    S_CX_INST,
    S_DB_FREE,
    S_FREE_TOP,
    S_OVERFLOW,
    S_PEAK,
    S_REC_N,
    S_REQ_N,
    S_RING_HEAD,
    S_RING_N,
    S_SEQ,
    S_TILT_K,
    S_TILTED,
    S_TRAFFIC_CONNS,
    T_NOW,
    T_VSUM,
    TIMEOUT,
    UNIFORM_ARRIVAL,
    WAVES,
    X_INST,
)
from sim.fast.queue import earliest, remove, take

# -- a replication: reset, first starts, the loop --------------------------------------------------


@nb.njit(cache=True, _nrt=False, inline="always")
def skip_stale(m, ring):
    """Drop the ring's first entries while they are stale: a deadline of an attempt that is over
    or out of its database init, a connect timeout of a connection gone or held. Such an event
    would do nothing when it came due (its handler asks the same question), and once stale it
    stays so; after a burst nearly every deadline and connect timeout is stale by the time it
    comes due."""
    cap = m[L_RING_CAP]
    while m[S_RING_N + ring]:
        e = m[L_RING_I] + 3 * (ring * cap + m[S_RING_HEAD + ring])
        a, b = m[e + 1], m[e + 2]
        live = deadline_live(m, a, b) if ring == DEADLINES else timeout_live(m, a, b)
        if live:
            return
        take(m, ring)


@nb.njit(cache=True, _nrt=False)
def reset(m, x, base, index):
    n = m[I_INSTANCES]
    rec_n, req_n = m[S_REC_N], m[S_REQ_N]  # records accumulate over the replications of a block
    m[S_CX_INST:M_KC] = 0
    m[S_REC_N], m[S_REQ_N] = rec_n, req_n
    m[S_CX_INST] = m[I_CX_MIN]
    m[S_CX_CAP] = m[I_CX_PER] * m[I_CX_MIN]
    m[S_DB_FREE] = m[I_FREE_SLOTS] - m[I_WARM_HELD]  # the warm instances' slots, from t = 0
    m[S_PEAK] = m[I_WARM_HELD]
    m[S_API_WINDOW] = -1
    # Keys below n * E_SPAN are the first starts', in instance order; a trace's requests come
    # next, as if scheduled when the run starts (handlers.start_traffic).
    m[S_SEQ] = n + m[I_TRACE_N]
    m[S_CAL_FREE] = -1
    bits = m[L_BITS]
    m[bits : bits + (m[L_NB] >> 6) + (m[L_NB] >> 12)] = 0
    x[T_NOW] = x[T_VSUM] = 0.0
    key = replication_key(base, index)
    for role in range(N_ROLES):
        m[M_KC + role] = 0
        m[M_KB + role] = -DRAW_BLOCK  # no block made yet
        m[M_KS + role] = np.int64(stream_state(key, role))
    if m[I_TILT_ROLE] >= 0:
        m[S_TILTED] = unit(stream_state(key, MIX), 0) < x[F_MIX]
    m[M_INST : M_INST + n * NI] = 0
    for inst in range(n):
        m[M_INST + inst * NI + A_HEAD] = -1
        m[M_INST + inst * NI + A_TAIL] = -1
        x[X_INST + inst * NF + B_READY] = np.inf
    conns = m[L_CONN_CAP]
    for j in range(conns):
        m[m[L_FREE] + j] = conns - 1 - j  # slot 0 on top
    m[S_FREE_TOP] = conns


@nb.njit(cache=True)  # sorting needs numba's runtime
def arrivals(m, x):
    """Every instance's first start time, in instance order (uniform arrivals sorted). They are a
    stream of their own beside heap and rings: instance ``i``'s start has key ``i * E_SPAN``, before
    every event scheduled later, as if scheduled first."""
    n, kind, out = m[I_INSTANCES], m[I_ARRIVAL], m[L_ARRIVALS]
    if kind == UNIFORM_ARRIVAL:
        for j in range(n):
            x[out + j] = rnd(m, x, ARRIVAL)
        x[out : out + n].sort()
        return
    t, waves = 0.0, m[L_WAVES]
    for inst in range(n):
        if kind == WAVES:
            t = x[waves + inst]
        elif kind == POISSON:
            t += rnd(m, x, ARRIVAL)
        x[out + inst] = t


@nb.njit(cache=True, _nrt=False)
def run_one(m, x):
    """One replication; returns an overflow code (OK when it ran to the end)."""
    end = x[F_END]
    while True:
        src, t, _, bucket = earliest(m, x)
        if t > end:
            return OK
        x[T_NOW] = t
        if src == 3:
            k = m[S_ARRIVED]
            m[S_ARRIVED] = k + 1
            if k < m[I_ADDRESSED]:  # else no subnet address (Direct VPC egress): it never starts
                start_attempt(m, x, k)
        else:
            typ, a, b = remove(m, x, src, bucket)
            dispatch(m, x, typ, a, b)
            if src < 2:
                skip_stale(m, src)
        if m[S_OVERFLOW]:
            return m[S_OVERFLOW]


@nb.njit(cache=True, nogil=True)  # arrays only: threads of a Dask worker run at once
def run_block(m, x, base, first, stop, fleet, row0):
    """Replications ``first`` … ``stop − 1``, their fleet figures in ``fleet[:, row0 + …]``.
    Returns the replication it stopped at and a code: OK, or the buffer to grow first."""
    horizon, n = x[F_HORIZON], m[I_INSTANCES]
    for index in range(first, stop):
        rec0, req0 = m[S_REC_N], m[S_REQ_N]
        reset(m, x, base, index)
        arrivals(m, x)
        if m[m[L_ROLLOUT] + RO_KIND] != RO_NONE:
            rollout_begin(m, x)
        if m[I_TRAFFIC]:
            start_traffic(m, x)
        code = run_one(m, x)
        if code != OK:
            m[S_REC_N], m[S_REQ_N] = rec0, req0  # it runs again, from scratch, once grown
            return index, code
        rec_n = m[S_REC_N]
        rejected, timed_out, failed, firsts, first_ready = 0, 0, 0, 0, 0
        for r in range(rec0, rec_n):
            ri = m[L_REC_I] + r * NR
            m[ri + R_REP] = index
            outcome = m[ri + R_OUTCOME]
            rejected += outcome == REJECTED
            timed_out += outcome == TIMEOUT
            failed += outcome != READY
            if m[ri + R_ATTEMPT] == 1:
                firsts += 1
                first_ready += outcome == READY
        ready, last, held = 0, 0.0, 0
        for inst in range(n):
            t = x[X_INST + inst * NF + B_READY]
            ready += t <= horizon
            last = max(last, t)
        if m[I_TRAFFIC] or m[I_KEEP]:  # connections held at the end: traffic's figure
            for inst in range(n):
                held += m[M_INST + inst * NI + A_HELD]
        col = row0 + index - first
        fleet[0, col] = last if ready == n else np.inf
        fleet[1, col], fleet[2, col] = m[S_PEAK], m[S_CX_INST]
        fleet[3, col], fleet[4, col] = m[S_CONN_ATTEMPTS], ready
        fleet[5, col], fleet[6, col], fleet[7, col] = rejected, timed_out, rec_n - rec0
        fleet[8, col], fleet[9, col], fleet[10, col] = failed, firsts, first_ready
        fleet[11, col], fleet[12, col], fleet[13, col] = m[S_TILTED], m[S_TILT_K], x[T_VSUM]
        fleet[14, col], fleet[15, col] = m[S_TRAFFIC_CONNS], held
        fleet[16, col] = m[S_REQ_N] - req0
        if m[I_TRAFFIC]:
            for r in range(req0, m[S_REQ_N]):
                m[m[L_REQ_I] + r * NQ + Q_REP] = index
        if not m[I_KEEP]:
            m[S_REC_N] = rec0  # counted: the records' room serves the next replication
            m[S_REQ_N] = req0
    return stop, OK
