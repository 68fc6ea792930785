"""The fast engine's handlers: ``sim/engine.py``'s, one for one, compiled with numba.

The readable engine is the truth; this is a port of it. Each handler here has the name, the order
of scheduling and the guards of the engine's method of the same name, so simultaneous events run
in the same order and both engines write the same records for every scenario
(tests/test_engines_agree.py; tests/test_footprint.py maps each engine method to its twin here).
:func:`dispatch` runs the handler of an event's type.

Draws are made a block at a time per role (``DRAW_BLOCK``, :func:`rnd`), in one tight loop: made
one by one inside the handlers, each draw's logarithm, exponential and rational function waited in
line; made together, the processor overlaps them. The values are the same (a draw is a function of
its number), so the records are too.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from sim.fast.draws import as_bits, as_float, draw, fill, inverse_cdf, tilted, unit
from sim.fast.layout import (
    A_ATTEMPT,
    A_BEFORE_INIT,
    A_CONN_ATTEMPTS,
    A_HEAD,
    A_HELD,
    A_IN_INIT,
    A_PENDING,
    A_PHASE_I,
    A_PHASE_RUN,
    A_POOL,
    A_POOL_STARTS,
    A_REFRESHES,
    A_TAIL,
    A_TO_OPEN,
    ACCEPT,
    ACCEPT_S,
    AFTER,
    API,
    ASYNCPG,
    B_ATTEMPT_START,
    B_BOUND,
    B_DEADLINE,
    B_EGRESS,
    B_INIT_START,
    B_PHASE_START,
    B_READY,
    BACKGROUND,
    BEFORE,
    C_AWAITED,
    C_GEN,
    C_INST,
    C_NEXT,
    C_POOL,
    C_PREV,
    C_RUN,
    C_STATE,
    CONCURRENT,
    CONN_TIMEOUTS,
    DEADLINES,
    DRAW_BLOCK,
    E_ACCEPT_DONE,
    E_BEGIN,
    E_CHECKOUT_TIMEOUT,
    E_CONN_TIMEOUT,
    E_DEADLINE,
    E_EGRESS,
    E_FILLER_RESUME,
    E_FLEET_ARRIVAL,
    E_FREE_SLOT,
    E_INIT_DONE,
    E_INSTANCE_ARRIVAL,
    E_OLD_GONE,
    E_PATH_FAILED,
    E_PHASE_DEADLINE,
    E_PHASE_DONE,
    E_PHASE_RETRY,
    E_PHASES,
    E_QUERY_DONE,
    E_READY,
    E_REFRESH,
    E_REFRESH_DONE,
    E_RETRY,
    E_SCALED,
    E_SETUP_DONE,
    E_SPAN,
    E_START,
    E_TRACE,
    EGRESS,
    EGRESS_READY,
    ERROR,
    F_CONNECT,
    F_CS_INTERVAL,
    F_END,
    F_HORIZON,
    F_P_FAULT,
    F_PATH_FROM,
    F_PATH_UNTIL,
    F_POOL_TIMEOUT,
    F_RELEASE,
    F_RESTART_INITIAL,
    F_RESTART_JITTER,
    F_RESTART_MAX,
    F_RESTART_MULT,
    F_RETRY,
    F_RETRY_JITTER,
    F_THETA,
    F_TIMEOUT,
    FAILED,
    FAULT_HUNG,
    FAULT_NONE,
    FAULT_RESET,
    FAULTED,
    FULL_CONNS,
    FULL_QUEUE,
    FULL_RECORDS,
    FULL_REQUESTS,
    GONE,
    HELD,
    I_ADDRESSED,
    I_CLOUDSQL,
    I_CS_BURST,
    I_CS_CALLS,
    I_CS_QUOTA,
    I_CX_MAX,
    I_CX_PER,
    I_DIRECT,
    I_FREE_SLOTS,
    I_GROWTH,
    I_HELD_WHEN_READY,
    I_HOLD,
    I_INSTANCES,
    I_MAX_SIZE,
    I_MIN_SIZE,
    I_PATH_FAULT,
    I_POLICY,
    I_RESTART_JITTER,
    I_RESTARTS,
    I_RETRY_JITTER,
    I_START,
    I_STRAGGLERS,
    I_TILT_DRAWS,
    I_TILT_ROLE,
    I_TRACE_N,
    I_TRAFFIC,
    I_WARM,
    I_WORKERS,
    IN_READY_POOL,
    J_FULL,
    J_NONE,
    L_ARRIVALS,
    L_CONN,
    L_FREE,
    L_OWNER,
    L_PHASE_I,
    L_PHASE_X,
    L_PHASES,
    L_Q_CAP,
    L_QUEUE,
    L_READY_ORDER,
    L_REC_CAP,
    L_REC_F,
    L_REC_I,
    L_REQ_CAP,
    L_REQ_F,
    L_REQ_I,
    L_ROLLOUT,
    L_TRACE,
    L_TRAFFIC,
    M_INST,
    M_KB,
    M_KC,
    M_KIND,
    M_KS,
    M_VOFF,
    NC,
    NF,
    NI,
    NPH,
    NPX,
    NQ,
    NQF,
    NR,
    NRF,
    NT,
    OWNER_FILLER,
    OWNER_NONE,
    P_FIXED,
    PATH_DELAY,
    PATH_FAULT,
    PER_WAITER,
    PH_CONCURRENT,
    PH_CONNS,
    PH_CONTINUE,
    PH_DB_INIT,
    PH_HAS_DEADLINE,
    PH_JITTER,
    PH_KEEP,
    PH_KIND,
    PH_POOL,
    PH_VHI,
    PH_VLO,
    PHASE,
    PX_A,
    PX_B,
    PX_DEADLINE,
    PX_JITTER,
    PX_RETRY,
    Q_ARRIVE,
    Q_CHECKOUT,
    Q_INST,
    Q_NEXT,
    Q_OUTCOME,
    Q_OWN,
    Q_READY,
    Q_REASON,
    QUERIES,
    QUEUED,
    R_53300,
    R_ATTEMPT,
    R_CLOSED,
    R_CONN_ATTEMPTS,
    R_CONNECT_TIMEOUT,
    R_DEADLINE,
    R_HELD,
    R_HUNG,
    R_INIT_S,
    R_INIT_START,
    R_INSTANCE,
    R_NONE,
    R_OUTCOME,
    R_PHASE,
    R_PHASE_DEADLINE,
    R_PHASE_START,
    R_POOL_STARTS,
    R_POOL_TIMEOUT,
    R_READY,
    R_REASON,
    R_RESET,
    R_START,
    READY,
    REJECTED,
    RESTART_U,
    RETRY_U,
    RO_CREATED,
    RO_INITIAL,
    RO_KIND,
    RO_KUBERNETES,
    RO_NONE,
    RO_OLD,
    RO_READY,
    RO_REPLICAS,
    RO_SLOTS,
    RO_STEPS_N,
    RO_SURGE,
    RO_UNAVAILABLE,
    RO_X,
    S_API_USED,
    S_API_WINDOW,
    S_CONN_ATTEMPTS,
    S_CX_BUSY,
    S_CX_CAP,
    S_CX_INST,
    S_CX_SCALING,
    S_CX_WAIT,
    S_DB_FREE,
    S_FREE_TOP,
    S_OVERFLOW,
    S_PEAK,
    S_Q_HEAD,
    S_Q_TAIL,
    S_READY_N,
    S_REC_N,
    S_REQ_N,
    S_TILT_K,
    S_TILTED,
    S_TRAFFIC_CONNS,
    SCALE,
    SERVED,
    SETUP,
    SETUP_S,
    T_BACKOFF,
    T_BUSY,
    T_FILLING,
    T_IDLE,
    T_NOW,
    T_OPENING,
    T_QHEAD,
    T_QTAIL,
    T_QUEUED,
    T_VSUM,
    TIMEOUT,
    TRAFFIC_ARRIVAL,
    TRAFFIC_FLEET,
    TRAFFIC_INSTANCE,
    TRAFFIC_PICK,
    TRAFFIC_QUERY,
    UNFINISHED,
    UNROUTED,
    WARM,
    WORKERS,
    X_BLOCKS,
    X_DIST,
    X_INST,
)
from sim.fast.queue import at, heap_add, later
from sim.traffic import ADDER_BACKOFF_FIRST_S, ADDER_BACKOFF_MAX_S

# -- draws, and whether a pending timer still matters ----------------------------------------------


@nb.njit(cache=True, _nrt=False, inline="always")
def deadline_live(m, inst, attempt):
    """Whether a deadline set for ``attempt`` would still end it: that attempt is in db init."""
    ii = M_INST + inst * NI
    return m[ii + A_ATTEMPT] == attempt and m[ii + A_IN_INIT] != 0


@nb.njit(cache=True, _nrt=False, inline="always")
def timeout_live(m, conn, gen):
    """Whether a connect timeout would still give the connection up: the same one, not yet held."""
    ci = m[L_CONN] + conn * NC
    return m[ci + C_GEN] == gen and m[ci + C_STATE] != HELD


@nb.njit(cache=True, _nrt=False, inline="always")
def rnd(m, x, role):
    """The next draw of a role's stream, from its block of draws made ahead (a block's draws are
    made in one tight loop, where the processor overlaps them). The first draws of the tilted
    role record their uniform (pushed towards 1 in a tilted replication), from which sim.rare
    computes the weight."""
    k = m[M_KC + role]
    m[M_KC + role] = k + 1
    j = k - m[M_KB + role]
    if j < DRAW_BLOCK:
        return x[X_BLOCKS + role * 2 * DRAW_BLOCK + j]
    lo, hi = m[M_VOFF + 2 * role], m[M_VOFF + 2 * role + 1]
    d = X_DIST + 2 * role
    state = np.uint64(m[M_KS + role])
    if role == m[I_TILT_ROLE] and k < m[I_TILT_DRAWS]:
        v = unit(state, k)
        if m[S_TILTED]:
            v = tilted(v, x[F_THETA])
        m[S_TILT_K] += 1
        x[T_VSUM] += v
        return inverse_cdf(m[M_KIND + role], x[d], x[d + 1], x, lo, hi, v)
    m[M_KB + role] = k
    fill(
        m[M_KIND + role],
        x[d],
        x[d + 1],
        x,
        lo,
        hi,
        state,
        k,
        X_BLOCKS + role * 2 * DRAW_BLOCK,
        DRAW_BLOCK,
    )
    return x[X_BLOCKS + role * 2 * DRAW_BLOCK]


@nb.njit(cache=True, _nrt=False)
def jittered(pause, mode, fraction, u):
    if mode == J_FULL:
        return pause * u
    return pause * (1.0 - fraction + 2.0 * fraction * u)


# -- a container's life ----------------------------------------------------------------------------


@nb.njit(cache=True, _nrt=False)
def start_attempt(m, x, inst):
    now = x[T_NOW]
    if now >= x[F_HORIZON]:
        return
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    m[ii + A_ATTEMPT] += 1
    x[fi + B_ATTEMPT_START] = now
    if m[I_DIRECT]:  # one draw per attempt, when it starts
        x[fi + B_EGRESS] = now + rnd(m, x, EGRESS_READY)
    m[ii + A_CONN_ATTEMPTS] = 0
    m[ii + A_POOL_STARTS] = 0
    after = E_PHASES if m[L_PHASES] else E_BEGIN
    at(m, x, now + rnd(m, x, BEFORE), after, inst, 0)


@nb.njit(cache=True, _nrt=False, inline="always")
def token(m, ii):
    """What a pending retry or refresh compares against: the attempt, or with phases the phase's
    run (never the same twice, so it names the attempt too), as the engine's (attempt, run)."""
    return m[ii + A_PHASE_RUN] if m[L_PHASES] else m[ii + A_ATTEMPT]


@nb.njit(cache=True, _nrt=False)
def begin_db_init(m, x, inst):
    now = x[T_NOW]
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    if now > x[F_HORIZON]:
        if m[L_PHASES]:  # what the phases before it opened is given up
            m[ii + A_IN_INIT] = 0
            m[ii + A_POOL] += 1
            cancel_all(m, x, inst)
        return
    m[ii + A_IN_INIT] = 1
    m[ii + A_BEFORE_INIT] = 0
    x[fi + B_INIT_START] = now
    x[fi + B_DEADLINE] = now + x[F_TIMEOUT]
    x[fi + B_BOUND] = x[fi + B_DEADLINE]
    later(m, x, DEADLINES, x[fi + B_DEADLINE], E_DEADLINE, inst, m[ii + A_ATTEMPT])
    if m[L_PHASES]:
        enter_phase(m, x, inst)
    if m[I_CLOUDSQL]:
        m[ii + A_REFRESHES] = 0
        refresh(m, x, inst, token(m, ii))
    else:
        begin_init_work(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def begin_init_work(m, x, inst):
    if m[L_PHASES]:
        phase_work(m, x, inst)
    else:
        start_pool(m, x, inst)


# -- start-up phases -------------------------------------------------------------------------------


@nb.njit(cache=True, _nrt=False, inline="always")
def phase_at(m, ii):
    """Where the current phase's ints are."""
    return m[L_PHASE_I] + m[ii + A_PHASE_I] * NPH


@nb.njit(cache=True, _nrt=False)
def begin_phases(m, x, inst):
    if x[T_NOW] > x[F_HORIZON]:
        return
    ii = M_INST + inst * NI
    m[ii + A_PHASE_I] = -1
    m[ii + A_BEFORE_INIT] = 1
    x[X_INST + inst * NF + B_DEADLINE] = np.inf
    next_phase(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def next_phase(m, x, inst):
    ii = M_INST + inst * NI
    m[ii + A_PHASE_I] += 1
    if m[ii + A_PHASE_I] == m[L_PHASES]:
        init_done(m, x, inst)
    elif m[phase_at(m, ii) + PH_DB_INIT] and m[ii + A_BEFORE_INIT]:
        begin_db_init(m, x, inst)
    else:
        m[ii + A_IN_INIT] = 1
        enter_phase(m, x, inst)
        phase_work(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def enter_phase(m, x, inst):
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    pi = phase_at(m, ii)
    px = m[L_PHASE_X] + m[ii + A_PHASE_I] * NPX
    m[ii + A_PHASE_RUN] += 1
    now = x[T_NOW]
    x[fi + B_PHASE_START] = now
    if m[pi + PH_HAS_DEADLINE] and now + x[px + PX_DEADLINE] < x[fi + B_DEADLINE]:
        x[fi + B_BOUND] = now + x[px + PX_DEADLINE]
        at(m, x, x[fi + B_BOUND], E_PHASE_DEADLINE, inst, m[ii + A_PHASE_RUN])
    else:
        x[fi + B_BOUND] = x[fi + B_DEADLINE]


@nb.njit(cache=True, _nrt=False)
def phase_work(m, x, inst):
    ii = M_INST + inst * NI
    pi = phase_at(m, ii)
    if m[pi + PH_POOL]:
        start_pool(m, x, inst)
        return
    m[ii + A_POOL] += 1
    conns = m[pi + PH_CONNS]
    m[ii + A_PENDING] = conns
    if conns == 0:
        run_queries(m, x, inst)
        return
    first = conns if m[pi + PH_CONCURRENT] else 1
    m[ii + A_TO_OPEN] = conns - first
    for _ in range(first):
        open_conn(m, x, inst, m[ii + A_POOL], True, True)


@nb.njit(cache=True, _nrt=False)
def phase_conn_ready(m, x, inst):
    ii = M_INST + inst * NI
    m[ii + A_PENDING] -= 1
    if m[ii + A_TO_OPEN]:
        m[ii + A_TO_OPEN] -= 1
        open_conn(m, x, inst, m[ii + A_POOL], True, True)
    if m[ii + A_PENDING] == 0:
        run_queries(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def phase_conn_failed(m, x, inst, reason):
    ii = M_INST + inst * NI
    pi = phase_at(m, ii)
    px = m[L_PHASE_X] + m[ii + A_PHASE_I] * NPX
    pause = x[px + PX_RETRY]
    if pause > 0:
        if m[pi + PH_JITTER] != J_NONE:
            pause = jittered(pause, m[pi + PH_JITTER], x[px + PX_JITTER], rnd(m, x, RETRY_U))
        if x[T_NOW] + pause < x[X_INST + inst * NF + B_BOUND]:
            at(m, x, x[T_NOW] + pause, E_PHASE_RETRY, inst, m[ii + A_POOL])
        return
    phase_failed(m, x, inst, reason)


@nb.njit(cache=True, _nrt=False)
def phase_failed(m, x, inst, reason):
    ii = M_INST + inst * NI
    if m[phase_at(m, ii) + PH_CONTINUE]:
        m[ii + A_POOL] += 1
        cancel_run(m, x, inst, m[ii + A_PHASE_RUN])
        next_phase(m, x, inst)
        return
    outcome = ERROR
    if reason == R_53300:
        outcome = REJECTED
    elif reason == R_PHASE_DEADLINE:
        outcome = TIMEOUT
    exit_attempt(m, x, inst, outcome, reason)


@nb.njit(cache=True, _nrt=False)
def phase_done(m, x, inst, pool):
    ii = M_INST + inst * NI
    if pool != m[ii + A_POOL] or not m[ii + A_IN_INIT]:
        return
    m[ii + A_POOL] += 1
    if not m[phase_at(m, ii) + PH_KEEP]:
        cancel_run(m, x, inst, m[ii + A_PHASE_RUN])
    next_phase(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def phase_duration(m, x, inst):
    """The current phase's work: the next draw of the phase stream, by its own distribution."""
    ii = M_INST + inst * NI
    pi = phase_at(m, ii)
    px = m[L_PHASE_X] + m[ii + A_PHASE_I] * NPX
    k = m[M_KC + PHASE]
    m[M_KC + PHASE] = k + 1
    state = np.uint64(m[M_KS + PHASE])
    lo, hi = m[pi + PH_VLO], m[pi + PH_VHI]
    return draw(m[pi + PH_KIND], x[px + PX_A], x[px + PX_B], x, lo, hi, state, k)


@nb.njit(cache=True, _nrt=False)
def refresh(m, x, inst, attempt):
    """One Cloud SQL refresh: its calls count against the per-minute quota; any over it 429."""
    ii = M_INST + inst * NI
    if token(m, ii) != attempt or not m[ii + A_IN_INIT]:
        return
    now = x[T_NOW]
    m[ii + A_REFRESHES] += 1
    window = math.floor(now / 60.0)
    if window != m[S_API_WINDOW]:  # time only moves forward: earlier windows are done with
        m[S_API_WINDOW] = window
        m[S_API_USED] = 0
    calls = m[I_CS_CALLS]
    accepted = min(calls, m[I_CS_QUOTA] - m[S_API_USED])
    m[S_API_USED] += accepted
    at(m, x, now + rnd(m, x, API), E_REFRESH_DONE, inst, attempt * 2 + (accepted == calls))


@nb.njit(cache=True, _nrt=False)
def refresh_done(m, x, inst, attempt, ok):
    ii = M_INST + inst * NI
    if token(m, ii) != attempt or not m[ii + A_IN_INIT]:
        return
    if ok:
        begin_init_work(m, x, inst)
        return
    start = x[X_INST + inst * NF + B_INIT_START]
    not_before = start + (m[ii + A_REFRESHES] + 1 - m[I_CS_BURST]) * x[F_CS_INTERVAL]
    at(m, x, max(x[T_NOW], not_before), E_REFRESH, inst, attempt)


@nb.njit(cache=True, _nrt=False)
def start_pool(m, x, inst):
    ii = M_INST + inst * NI
    m[ii + A_POOL] += 1
    m[ii + A_POOL_STARTS] += 1
    size = m[I_MIN_SIZE]
    if size == 0:
        run_queries(m, x, inst)
        return
    start = m[I_START]
    first = 1
    if start == CONCURRENT:
        first = size
    elif start == WORKERS:
        first = min(m[I_WORKERS], size)
    m[ii + A_PENDING] = 1 if start == BACKGROUND else size
    m[ii + A_TO_OPEN] = size - first if start == WORKERS else 0
    for _ in range(first):
        open_conn(m, x, inst, m[ii + A_POOL], True, True)


@nb.njit(cache=True, _nrt=False)
def pool_conn_ready(m, x, inst, conn):
    ii, ci = M_INST + inst * NI, m[L_CONN] + conn * NC
    if not m[ci + C_AWAITED] or m[ci + C_POOL] != m[ii + A_POOL] or not m[ii + A_IN_INIT]:
        if m[ci + C_AWAITED] == IN_READY_POOL:  # a ready pool's (never in init again)
            established(m, x, inst, m[m[L_OWNER] + conn])
        return
    if m[L_PHASES] and not m[phase_at(m, ii) + PH_POOL]:
        phase_conn_ready(m, x, inst)
        return
    m[ii + A_PENDING] -= 1
    start, size = m[I_START], m[I_MIN_SIZE]
    if start == ASYNCPG and m[ii + A_PENDING] == size - 1:
        for _ in range(m[ii + A_PENDING]):
            open_conn(m, x, inst, m[ii + A_POOL], True, True)
    elif start == WORKERS and m[ii + A_TO_OPEN]:
        m[ii + A_TO_OPEN] -= 1
        open_conn(m, x, inst, m[ii + A_POOL], True, True)
    if m[ii + A_PENDING] == 0:
        run_queries(m, x, inst)
        if start == BACKGROUND:
            for _ in range(size - 1):
                open_conn(m, x, inst, m[ii + A_POOL], True, False)


@nb.njit(cache=True, _nrt=False)
def run_queries(m, x, inst):
    pool = m[M_INST + inst * NI + A_POOL]
    if m[L_PHASES]:  # the phase's own work instead of init_queries_s
        at(m, x, x[T_NOW] + phase_duration(m, x, inst), E_PHASE_DONE, inst, pool)
        return
    at(m, x, x[T_NOW] + rnd(m, x, QUERIES), E_INIT_DONE, inst, pool)


@nb.njit(cache=True, _nrt=False)
def db_init_done(m, x, inst, pool):
    ii = M_INST + inst * NI
    if pool != m[ii + A_POOL] or not m[ii + A_IN_INIT]:
        return
    init_done(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def init_done(m, x, inst):
    ii = M_INST + inst * NI
    m[ii + A_IN_INIT] = 0
    # The after-db draw first, for the record's ready time (its own stream: same values).
    ready = x[T_NOW] + rnd(m, x, AFTER)
    record(m, x, inst, READY, R_NONE, ready)
    settle_ready_pool(m, x, inst)
    # Without traffic became_ready would only note its time: note it now, if the run lasts until
    # then. With traffic it also opens the instance to requests: the engine's event.
    if ready <= x[F_END]:
        x[X_INST + inst * NF + B_READY] = ready
    if m[I_TRAFFIC] or m[m[L_ROLLOUT] + RO_KIND] != RO_NONE:
        at(m, x, ready, E_READY, inst, 0)


@nb.njit(cache=True, _nrt=False)
def settle_ready_pool(m, x, inst):
    """Keep the pool's first ``held_when_ready`` connections, give up the rest at once (the
    connector serves its queue after all of them left, as in cancel_all), open the missing."""
    ii = M_INST + inst * NI
    want, pool = m[I_HELD_WHEN_READY], m[ii + A_POOL]
    kept = 0
    conn = m[ii + A_HEAD]
    while conn >= 0:
        ci = m[L_CONN] + conn * NC
        nxt = m[ci + C_NEXT]
        if m[L_PHASES] or m[ci + C_POOL] == pool:  # with phases: every one kept
            kept += 1
            if kept > want:
                cancel(m, x, conn, False)
        conn = nxt
    serve_queue(m, x)
    m[ii + A_POOL] += 1
    for _ in range(want - min(kept, want)):
        open_conn(m, x, inst, m[ii + A_POOL], False, False)
    if m[I_TRAFFIC]:
        ready_pool(m, x, inst, pool)


@nb.njit(cache=True, _nrt=False)
def pool_failed(m, x, inst, reason):
    ii = M_INST + inst * NI
    if m[L_PHASES] and not m[phase_at(m, ii) + PH_POOL]:
        phase_conn_failed(m, x, inst, reason)
        return
    m[ii + A_POOL] += 1
    if not m[I_HOLD]:  # this phase's connections (every one without phases)
        cancel_run(m, x, inst, m[ii + A_PHASE_RUN])
    backoff = x[F_RETRY]
    if backoff > 0:
        if m[I_RETRY_JITTER] != J_NONE:
            backoff = jittered(backoff, m[I_RETRY_JITTER], x[F_RETRY_JITTER], rnd(m, x, RETRY_U))
        if x[T_NOW] + backoff < x[X_INST + inst * NF + B_BOUND]:
            at(m, x, x[T_NOW] + backoff, E_RETRY, inst, token(m, ii))
        return
    if m[L_PHASES]:
        phase_failed(m, x, inst, reason)
        return
    exit_attempt(m, x, inst, REJECTED if reason == R_53300 else ERROR, reason)


@nb.njit(cache=True, _nrt=False)
def restart_backoff(m, x, restart):
    if m[I_POLICY] == P_FIXED:
        return x[F_RESTART_INITIAL]
    # A float power (C's pow, as Python's float ** int): numba's float ** int multiplies.
    growth = x[F_RESTART_MULT] ** float(min(restart - 1, 1000))
    return min(x[F_RESTART_INITIAL] * growth, x[F_RESTART_MAX])


@nb.njit(cache=True, _nrt=False)
def exit_attempt(m, x, inst, outcome, reason):
    """Exit code 3: record, drop every connection, and schedule the restart."""
    ii = M_INST + inst * NI
    m[ii + A_IN_INIT] = 0
    m[ii + A_POOL] += 1
    if not m[ii + A_BEFORE_INIT] or x[T_NOW] <= x[F_HORIZON]:
        record(m, x, inst, outcome, reason, np.nan)
    if x[F_RELEASE] > 0:  # the server notices the dead client late: its slots stay taken a while
        conn = m[ii + A_HEAD]
        while conn >= 0:
            ci = m[L_CONN] + conn * NC
            nxt = m[ci + C_NEXT]
            if m[ci + C_STATE] == HELD:
                drop(m, conn)
                at(m, x, x[T_NOW] + x[F_RELEASE], E_FREE_SLOT, 0, 0)
            conn = nxt
    cancel_all(m, x, inst)
    if m[ii + A_ATTEMPT] <= m[I_RESTARTS]:
        pause = restart_backoff(m, x, m[ii + A_ATTEMPT])
        if m[I_RESTART_JITTER] != J_NONE:
            u = rnd(m, x, RESTART_U)
            pause = jittered(pause, m[I_RESTART_JITTER], x[F_RESTART_JITTER], u)
        at(m, x, x[T_NOW] + pause, E_START, inst, 0)


@nb.njit(cache=True, _nrt=False)
def record(m, x, inst, outcome, reason, ready):
    n = m[S_REC_N]
    if n == m[L_REC_CAP]:
        m[S_OVERFLOW] = FULL_RECORDS
        return
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    r, f = m[L_REC_I] + n * NR, m[L_REC_F] + n * NRF
    m[r + R_INSTANCE], m[r + R_ATTEMPT] = inst, m[ii + A_ATTEMPT]
    m[r + R_OUTCOME], m[r + R_REASON], m[r + R_HELD] = outcome, reason, m[ii + A_HELD]
    m[r + R_CONN_ATTEMPTS], m[r + R_POOL_STARTS] = m[ii + A_CONN_ATTEMPTS], m[ii + A_POOL_STARTS]
    init_start = x[T_NOW] if m[ii + A_BEFORE_INIT] else x[fi + B_INIT_START]  # never began
    x[f + R_START], x[f + R_INIT_START] = x[fi + B_ATTEMPT_START], init_start
    x[f + R_INIT_S] = x[T_NOW] - init_start
    x[f + R_READY] = ready
    m[r + R_PHASE], x[f + R_PHASE_START] = 0, init_start
    if m[L_PHASES] and outcome != READY:
        m[r + R_PHASE], x[f + R_PHASE_START] = m[ii + A_PHASE_I] + 1, x[fi + B_PHASE_START]
    m[S_CONN_ATTEMPTS] += m[ii + A_CONN_ATTEMPTS]
    m[S_REC_N] = n + 1


# -- one connection: connector, then database ------------------------------------------------------


@nb.njit(cache=True, _nrt=False)
def open_conn(m, x, inst, pool, counted, awaited):
    top = m[S_FREE_TOP]
    if top == 0:
        m[S_OVERFLOW] = FULL_CONNS
        return
    conn = m[m[L_FREE] + top - 1]
    m[S_FREE_TOP] = top - 1
    ii, ci = M_INST + inst * NI, m[L_CONN] + conn * NC
    m[ci + C_INST], m[ci + C_POOL], m[ci + C_STATE] = inst, pool, QUEUED
    m[ci + C_AWAITED] = awaited
    m[ci + C_RUN] = m[ii + A_PHASE_RUN]
    tail = m[ii + A_TAIL]  # append to the instance's live connections, in opening order
    m[ci + C_PREV], m[ci + C_NEXT] = tail, -1
    if tail >= 0:
        m[m[L_CONN] + tail * NC + C_NEXT] = conn
    else:
        m[ii + A_HEAD] = conn
    m[ii + A_TAIL] = conn
    if counted:
        m[ii + A_CONN_ATTEMPTS] += 1
    timeout_at = x[T_NOW] + x[F_CONNECT]
    deadline = x[X_INST + inst * NF + B_DEADLINE]
    if not (counted and timeout_at >= deadline and not m[I_STRAGGLERS]):
        later(m, x, CONN_TIMEOUTS, timeout_at, E_CONN_TIMEOUT, conn, m[ci + C_GEN])
    if path_faults(m, x):  # the engine's _fault: it never reaches the connector nor the database
        m[ci + C_STATE] = FAULTED
        if m[I_PATH_FAULT] != FAULT_HUNG:
            at(m, x, x[T_NOW] + rnd(m, x, PATH_DELAY), E_PATH_FAILED, conn, m[ci + C_GEN])
        return
    if m[I_DIRECT]:
        m[ci + C_STATE] = EGRESS
        direct_egress(m, x, conn, m[ci + C_GEN])
        return
    if m[S_CX_BUSY] < m[S_CX_CAP]:
        begin_setup(m, x, conn)
        return
    tail = m[S_Q_TAIL]
    if tail == m[L_Q_CAP]:  # compact the queue before giving up
        head, q = m[S_Q_HEAD], m[L_QUEUE]
        if head == 0:
            m[S_OVERFLOW] = FULL_QUEUE
            return
        for j in range(2 * (tail - head)):  # forwards: the copy never overtakes its source
            m[q + j] = m[q + 2 * head + j]
        tail -= head
        m[S_Q_HEAD] = 0
    m[m[L_QUEUE] + 2 * tail], m[m[L_QUEUE] + 2 * tail + 1] = conn, m[ci + C_GEN]
    m[S_Q_TAIL] = tail + 1
    m[S_CX_WAIT] += 1
    maybe_scale(m, x)


@nb.njit(cache=True, _nrt=False)
def path_faults(m, x):
    """Whether the path fails the connection opened now: one draw, in the window only."""
    now = x[T_NOW]
    if m[I_PATH_FAULT] == FAULT_NONE or now < x[F_PATH_FROM] or now >= x[F_PATH_UNTIL]:
        return False
    return rnd(m, x, PATH_FAULT) < x[F_P_FAULT]


@nb.njit(cache=True, _nrt=False)
def path_failed(m, x, conn, gen):
    ci = m[L_CONN] + conn * NC
    if m[ci + C_GEN] != gen or m[ci + C_STATE] != FAULTED:
        return  # given up before the path failed it
    inst, awaited, pool = m[ci + C_INST], m[ci + C_AWAITED], m[ci + C_POOL]
    drop(m, conn)
    ii = M_INST + inst * NI
    reason = R_RESET if m[I_PATH_FAULT] == FAULT_RESET else R_CLOSED
    if awaited and pool == m[ii + A_POOL] and m[ii + A_IN_INIT]:
        pool_failed(m, x, inst, reason)
    elif awaited == IN_READY_POOL:  # a ready pool's: never in init again
        pool_conn_failed(m, x, inst, conn, reason)


@nb.njit(cache=True, _nrt=False)
def direct_egress(m, x, conn, gen):
    """Direct VPC egress: the connection waits (EGRESS) until its attempt's egress is usable,
    then goes straight to the database."""
    ci = m[L_CONN] + conn * NC
    if m[ci + C_GEN] != gen:
        return  # given up while it waited (the engine's GONE connection does nothing either)
    egress_at = x[X_INST + m[ci + C_INST] * NF + B_EGRESS]
    if x[T_NOW] < egress_at:
        at(m, x, egress_at, E_EGRESS, conn, gen)
    elif m[ci + C_STATE] == EGRESS:
        m[ci + C_STATE] = ACCEPT
        at(m, x, x[T_NOW] + rnd(m, x, ACCEPT_S), E_ACCEPT_DONE, conn, gen)


@nb.njit(cache=True, _nrt=False)
def begin_setup(m, x, conn):
    ci = m[L_CONN] + conn * NC
    m[ci + C_STATE] = SETUP
    m[S_CX_BUSY] += 1
    at(m, x, x[T_NOW] + rnd(m, x, SETUP_S), E_SETUP_DONE, conn, m[ci + C_GEN])


@nb.njit(cache=True, _nrt=False)
def serve_queue(m, x):
    while m[S_CX_WAIT] and m[S_CX_BUSY] < m[S_CX_CAP]:
        head = m[S_Q_HEAD]
        conn, gen = m[m[L_QUEUE] + 2 * head], m[m[L_QUEUE] + 2 * head + 1]
        m[S_Q_HEAD] = head + 1
        ci = m[L_CONN] + conn * NC
        if m[ci + C_GEN] == gen and m[ci + C_STATE] == QUEUED:
            m[S_CX_WAIT] -= 1
            begin_setup(m, x, conn)


@nb.njit(cache=True, _nrt=False)
def maybe_scale(m, x):
    if m[S_CX_WAIT] and not m[S_CX_SCALING] and m[S_CX_INST] < m[I_CX_MAX]:
        m[S_CX_SCALING] = 1
        at(m, x, x[T_NOW] + rnd(m, x, SCALE), E_SCALED, 0, 0)


@nb.njit(cache=True, _nrt=False)
def scaled_up(m, x):
    m[S_CX_INST] += 1
    m[S_CX_CAP] += m[I_CX_PER]
    m[S_CX_SCALING] = 0
    serve_queue(m, x)
    maybe_scale(m, x)


@nb.njit(cache=True, _nrt=False)
def setup_done(m, x, conn, gen):
    ci = m[L_CONN] + conn * NC
    if m[ci + C_GEN] != gen or m[ci + C_STATE] != SETUP:
        return  # cancelled during set-up; its capacity was returned then
    m[S_CX_BUSY] -= 1
    serve_queue(m, x)
    m[ci + C_STATE] = ACCEPT
    at(m, x, x[T_NOW] + rnd(m, x, ACCEPT_S), E_ACCEPT_DONE, conn, gen)


@nb.njit(cache=True, _nrt=False)
def accept_done(m, x, conn, gen):
    ci = m[L_CONN] + conn * NC
    if m[ci + C_GEN] != gen or m[ci + C_STATE] != ACCEPT:
        return
    inst = m[ci + C_INST]
    ii = M_INST + inst * NI
    if m[S_DB_FREE] == 0:
        awaited, pool = m[ci + C_AWAITED], m[ci + C_POOL]
        drop(m, conn)
        if awaited and pool == m[ii + A_POOL] and m[ii + A_IN_INIT]:
            pool_failed(m, x, inst, R_53300)  # SQLSTATE 53300: too many clients
        elif awaited == IN_READY_POOL:
            pool_conn_failed(m, x, inst, conn, R_53300)
        return
    m[S_DB_FREE] -= 1
    m[ci + C_STATE] = HELD
    m[ii + A_HELD] += 1
    held = m[I_FREE_SLOTS] - m[S_DB_FREE]
    if held > m[S_PEAK]:
        m[S_PEAK] = held
    pool_conn_ready(m, x, inst, conn)


@nb.njit(cache=True, _nrt=False)
def conn_timeout(m, x, conn, gen):
    if not timeout_live(m, conn, gen):
        return
    ci = m[L_CONN] + conn * NC
    inst, awaited, pool = m[ci + C_INST], m[ci + C_AWAITED], m[ci + C_POOL]
    # A faulted connection's timeout: nothing came back from the path before it.
    reason = R_HUNG if m[ci + C_STATE] == FAULTED else R_CONNECT_TIMEOUT
    cancel(m, x, conn, True)
    ii = M_INST + inst * NI
    if awaited and pool == m[ii + A_POOL] and m[ii + A_IN_INIT]:
        pool_failed(m, x, inst, reason)
    elif awaited == IN_READY_POOL:
        pool_conn_failed(m, x, inst, conn, reason)


@nb.njit(cache=True, _nrt=False)
def cancel(m, x, conn, serve):
    """The client gives the connection up, wherever it is."""
    state = m[m[L_CONN] + conn * NC + C_STATE]
    if state == QUEUED:
        m[S_CX_WAIT] -= 1
    elif state == SETUP:
        m[S_CX_BUSY] -= 1
    elif state == HELD:  # the engine's release: the slot is free at once
        drop(m, conn)
        m[S_DB_FREE] += 1
        return
    drop(m, conn)
    if serve:
        serve_queue(m, x)


@nb.njit(cache=True, _nrt=False)
def cancel_all(m, x, inst):
    conn = m[M_INST + inst * NI + A_HEAD]
    while conn >= 0:
        nxt = m[m[L_CONN] + conn * NC + C_NEXT]
        cancel(m, x, conn, False)
        conn = nxt
    serve_queue(m, x)


@nb.njit(cache=True, _nrt=False)
def cancel_run(m, x, inst, run):
    """cancel_all, for the connections one phase run opened."""
    conn = m[M_INST + inst * NI + A_HEAD]
    while conn >= 0:
        ci = m[L_CONN] + conn * NC
        nxt = m[ci + C_NEXT]
        if m[ci + C_RUN] == run:
            cancel(m, x, conn, False)
        conn = nxt
    serve_queue(m, x)


@nb.njit(cache=True, _nrt=False)
def drop(m, conn):
    """Forget the connection: off its instance's list, its slot free for reuse."""
    ci = m[L_CONN] + conn * NC
    ii = M_INST + m[ci + C_INST] * NI
    if m[ci + C_STATE] == HELD:
        m[ii + A_HELD] -= 1
    m[ci + C_STATE] = GONE
    m[ci + C_GEN] += 1  # its pending events are now stale
    prev, nxt = m[ci + C_PREV], m[ci + C_NEXT]
    if prev >= 0:
        m[m[L_CONN] + prev * NC + C_NEXT] = nxt
    else:
        m[ii + A_HEAD] = nxt
    if nxt >= 0:
        m[m[L_CONN] + nxt * NC + C_PREV] = prev
    else:
        m[ii + A_TAIL] = prev
    m[m[L_FREE] + m[S_FREE_TOP]] = conn
    m[S_FREE_TOP] += 1


# -- traffic after ready (docs/model.md, "Traffic after ready"; sim.checkout's PoolState) ---------
#
# Only with [traffic] on. A ready pool's connections are alike once held (none is ever closed), so
# its idle and checked-out ones are counts; a connection still opening knows its owner (L_OWNER:
# a request's record, OWNER_FILLER or OWNER_NONE). A request is its record (L_REQ_I, L_REQ_F), in
# arrival order; while it waits its outcome is UNFINISHED, which it stays if the run ends so.


@nb.njit(cache=True, _nrt=False, inline="always")
def pool_at(m, inst):
    """Where the instance's pool after ready is (NT ints)."""
    return m[L_TRAFFIC] + inst * NT


@nb.njit(cache=True, _nrt=False)
def ready_pool(m, x, inst, settled):
    """The engine's PoolState, made when database init is done: the connections the settled pool
    kept (of pool start ``settled``, every one with phases) and those opened to reach
    held_when_ready, idle if held, else opening for nobody."""
    ii, ti = M_INST + inst * NI, pool_at(m, inst)
    m[ti : ti + NT] = 0
    m[ti + T_QHEAD] = m[ti + T_QTAIL] = -1
    m[ti + T_BACKOFF] = as_bits(ADDER_BACKOFF_FIRST_S)
    now_pool = m[ii + A_POOL]
    conn = m[ii + A_HEAD]
    while conn >= 0:
        ci = m[L_CONN] + conn * NC
        if m[L_PHASES] or m[ci + C_POOL] == settled or m[ci + C_POOL] == now_pool:
            m[ci + C_AWAITED] = IN_READY_POOL
            m[m[L_OWNER] + conn] = OWNER_NONE
            if m[ci + C_STATE] == HELD:
                m[ti + T_IDLE] += 1
            else:
                m[ti + T_OPENING] += 1
        conn = m[ci + C_NEXT]


@nb.njit(cache=True, _nrt=False)
def start_traffic(m, x):
    """When the run starts, after the first starts: the fleet's first gap, or the trace's first
    request (each of the trace's requests keeps the key it would have had if all were scheduled
    now, in order: its place after the first starts)."""
    if m[I_TRAFFIC] == TRAFFIC_FLEET:
        next_arrival(m, x, E_FLEET_ARRIVAL, 0)
    elif m[I_TRACE_N]:
        trace_next(m, x, 0)


@nb.njit(cache=True, _nrt=False, inline="always")
def trace_next(m, x, j):
    heap_add(m, x, x[m[L_TRACE] + j], (m[I_INSTANCES] + j) * E_SPAN + E_TRACE, j, 0)


@nb.njit(cache=True, _nrt=False)
def next_arrival(m, x, typ, inst):
    """One gap drawn; the arrival scheduled if it falls before the horizon."""
    t = x[T_NOW] + rnd(m, x, TRAFFIC_ARRIVAL)
    if t < x[F_HORIZON]:
        at(m, x, t, typ, inst, 0)


@nb.njit(cache=True, _nrt=False)
def became_ready(m, x, inst):
    m[m[L_READY_ORDER] + m[S_READY_N]] = inst
    m[S_READY_N] += 1
    if m[I_TRAFFIC] == TRAFFIC_INSTANCE:
        next_arrival(m, x, E_INSTANCE_ARRIVAL, inst)


@nb.njit(cache=True, _nrt=False)
def route(m, x):
    """The warm instances first, then the ready ones in the order they became ready; one pick
    among them, none when there is no candidate."""
    warm = m[I_WARM]
    n = warm + m[S_READY_N]
    if n == 0:
        new_request(m, x, -1, np.nan, UNROUTED)
        return
    k = min(np.int64(rnd(m, x, TRAFFIC_PICK) * n), n - 1)
    if k < warm:
        new_request(m, x, -1, np.nan, WARM)  # its pool is settled
        return
    checkout(m, x, m[m[L_READY_ORDER] + k - warm])


@nb.njit(cache=True, _nrt=False)
def new_request(m, x, inst, ready, outcome):
    """A request's record, in arrival order; −1 when the room is full (the run stops)."""
    n = m[S_REQ_N]
    if n == m[L_REQ_CAP]:
        m[S_OVERFLOW] = FULL_REQUESTS
        return -1
    q, f = m[L_REQ_I] + n * NQ, m[L_REQ_F] + n * NQF
    m[q + Q_INST], m[q + Q_OUTCOME], m[q + Q_REASON] = inst, outcome, R_NONE
    m[q + Q_NEXT], m[q + Q_OWN] = -1, 0
    x[f + Q_ARRIVE], x[f + Q_READY], x[f + Q_CHECKOUT] = x[T_NOW], ready, np.nan
    m[S_REQ_N] = n + 1
    return n


@nb.njit(cache=True, _nrt=False)
def checkout(m, x, inst):
    """PoolState.checkout: the one idle longest, else by pool.growth; a request left queued
    waits at most pool.timeout_s."""
    req = new_request(m, x, inst, x[X_INST + inst * NF + B_READY], UNFINISHED)
    if req < 0:
        return
    ti = pool_at(m, inst)
    if m[ti + T_IDLE]:
        m[ti + T_IDLE] -= 1
        m[ti + T_BUSY] += 1
        served(m, x, inst, req)
        return
    if m[I_GROWTH] == PER_WAITER:
        if total(m, ti) < m[I_MAX_SIZE]:
            m[ti + T_OPENING] += 1
            m[m[L_REQ_I] + req * NQ + Q_OWN] = 1  # SQLAlchemy's overflow: its own connection
            open_for(m, x, inst, req)
            return
        enqueue(m, ti, req)
    else:
        enqueue(m, ti, req)
        fill_pool(m, x, inst)
    at(m, x, x[T_NOW] + x[F_POOL_TIMEOUT], E_CHECKOUT_TIMEOUT, inst, req)


@nb.njit(cache=True, _nrt=False, inline="always")
def total(m, ti):
    """Connections held (idle or checked out) or opening."""
    return m[ti + T_IDLE] + m[ti + T_BUSY] + m[ti + T_OPENING]


@nb.njit(cache=True, _nrt=False, inline="always")
def enqueue(m, ti, req):
    tail = m[ti + T_QTAIL]
    if tail >= 0:
        m[m[L_REQ_I] + tail * NQ + Q_NEXT] = req
    else:
        m[ti + T_QHEAD] = req
    m[ti + T_QTAIL] = req
    m[ti + T_QUEUED] += 1


@nb.njit(cache=True, _nrt=False)
def open_for(m, x, inst, owner):
    """One connection of the ready pool, opened for ``owner`` (a request, or the filler)."""
    m[S_TRAFFIC_CONNS] += 1
    top = m[S_FREE_TOP]
    conn = m[m[L_FREE] + top - 1] if top else -1  # the slot open_conn takes
    open_conn(m, x, inst, m[M_INST + inst * NI + A_POOL], False, False)
    if conn >= 0:
        m[m[L_CONN] + conn * NC + C_AWAITED] = IN_READY_POOL
        m[m[L_OWNER] + conn] = owner


@nb.njit(cache=True, _nrt=False)
def served(m, x, inst, req):
    """The request checks a connection out now; it gives it back one traffic.query_s later."""
    m[m[L_REQ_I] + req * NQ + Q_OUTCOME] = SERVED
    x[m[L_REQ_F] + req * NQF + Q_CHECKOUT] = x[T_NOW]
    at(m, x, x[T_NOW] + rnd(m, x, TRAFFIC_QUERY), E_QUERY_DONE, inst, 0)


@nb.njit(cache=True, _nrt=False)
def give(m, x, inst):
    """A connection free now: to the first queued request, else idle."""
    ti = pool_at(m, inst)
    if m[ti + T_QUEUED]:
        req = m[ti + T_QHEAD]
        while m[m[L_REQ_I] + req * NQ + Q_OUTCOME] != UNFINISHED:  # timed out: skip it
            req = m[m[L_REQ_I] + req * NQ + Q_NEXT]
        nxt = m[m[L_REQ_I] + req * NQ + Q_NEXT]
        m[ti + T_QHEAD] = nxt
        if nxt < 0:
            m[ti + T_QTAIL] = -1
        m[ti + T_QUEUED] -= 1
        m[ti + T_BUSY] += 1
        served(m, x, inst, req)
        return
    m[ti + T_IDLE] += 1


@nb.njit(cache=True, _nrt=False)
def fill_pool(m, x, inst):
    """HikariCP's shouldContinueCreating: one connection at a time while total < max_size and
    (a request is queued or fewer than held_when_ready are idle)."""
    ti = pool_at(m, inst)
    if m[ti + T_FILLING] or total(m, ti) >= m[I_MAX_SIZE]:
        return
    if not m[ti + T_QUEUED] and m[ti + T_IDLE] >= m[I_HELD_WHEN_READY]:
        return
    m[ti + T_FILLING] = 1
    m[ti + T_OPENING] += 1
    open_for(m, x, inst, OWNER_FILLER)


@nb.njit(cache=True, _nrt=False)
def established(m, x, inst, owner):
    """PoolState.established: its request takes it; else the first queued request, else idle;
    the filler then looks again, its pause reset."""
    ti = pool_at(m, inst)
    m[ti + T_OPENING] -= 1
    if owner >= 0:
        m[ti + T_BUSY] += 1
        served(m, x, inst, owner)
        return
    give(m, x, inst)
    if owner == OWNER_FILLER:
        m[ti + T_FILLING] = 0
        m[ti + T_BACKOFF] = as_bits(ADDER_BACKOFF_FIRST_S)
        fill_pool(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def pool_conn_failed(m, x, inst, conn, reason):
    """A connection of a ready pool failed while opening: the request that waited for it fails
    with its reason; the filler pauses, 10 ms doubling at each failure in a row to 5 s."""
    owner = m[m[L_OWNER] + conn]
    ti = pool_at(m, inst)
    if owner >= 0:
        q = m[L_REQ_I] + owner * NQ
        m[q + Q_OUTCOME], m[q + Q_REASON] = FAILED, reason
    m[ti + T_OPENING] -= 1
    if owner == OWNER_FILLER:
        pause = as_float(m[ti + T_BACKOFF])
        m[ti + T_BACKOFF] = as_bits(min(2 * pause, ADDER_BACKOFF_MAX_S))
        at(m, x, x[T_NOW] + pause, E_FILLER_RESUME, inst, 0)


@nb.njit(cache=True, _nrt=False)
def checkout_timeout(m, x, inst, req):
    """A queued request's pool.timeout_s: if it still waits in the queue, it fails."""
    q = m[L_REQ_I] + req * NQ
    if m[q + Q_OUTCOME] == UNFINISHED and not m[q + Q_OWN]:
        m[q + Q_OUTCOME], m[q + Q_REASON] = FAILED, R_POOL_TIMEOUT
        m[pool_at(m, inst) + T_QUEUED] -= 1


@nb.njit(cache=True, _nrt=False)
def traffic_event(m, x, typ, a, b):
    """The handlers of traffic's events (dispatch's last branch: none of them without traffic)."""
    if typ == E_QUERY_DONE:  # the engine's query_done: PoolState.release
        ti = pool_at(m, a)
        m[ti + T_BUSY] -= 1
        give(m, x, a)
    elif typ == E_FLEET_ARRIVAL:  # the engine's fleet_arrival
        next_arrival(m, x, E_FLEET_ARRIVAL, 0)
        route(m, x)
    elif typ == E_INSTANCE_ARRIVAL:  # the engine's instance_arrival
        next_arrival(m, x, E_INSTANCE_ARRIVAL, a)
        checkout(m, x, a)
    elif typ == E_TRACE:
        if a + 1 < m[I_TRACE_N]:
            trace_next(m, x, a + 1)
        route(m, x)
    elif typ == E_CHECKOUT_TIMEOUT:
        checkout_timeout(m, x, a, b)
    elif typ == E_READY:
        if m[I_TRAFFIC]:
            became_ready(m, x, a)
        if m[m[L_ROLLOUT] + RO_KIND] != RO_NONE:  # an instance becomes ready once: its first
            m[m[L_ROLLOUT] + RO_READY] += 1
            rollout_moves(m, x, True)
    elif typ == E_FILLER_RESUME:  # the engine's filler_resume: PoolState.resume
        m[pool_at(m, a) + T_FILLING] = 0
        fill_pool(m, x, a)


# -- a roll-out (docs/model.md, "A roll-out: old instances replaced by new ones") -----------------


@nb.njit(cache=True, _nrt=False)
def rollout_begin(m, x):
    """At t = 0, before any arrival: the controller's first moves. A Kubernetes roll-out starts
    only the new instances it creates (the others' first starts never come by themselves)."""
    r = m[L_ROLLOUT]
    m[r + RO_OLD], m[r + RO_CREATED], m[r + RO_READY] = m[r + RO_INITIAL], 0, 0
    start = rollout_moves(m, x, False)
    if m[r + RO_KIND] == RO_KUBERNETES:
        for inst in range(start, m[I_INSTANCES]):
            x[m[L_ARRIVALS] + inst] = np.inf


@nb.njit(cache=True, _nrt=False)
def rollout_moves(m, x, starts):
    """sim.rollout's RolloutState.moves, then the engine's _rollout_acts: old instances let go
    (their slots free old_linger_s later), and with ``starts`` a Kubernetes roll-out's new
    instances started in index order (at t = 0 rollout_begin lets their first starts come
    instead). Returns how many it created."""
    r = m[L_ROLLOUT]
    replicas, old, ready = m[r + RO_REPLICAS], m[r + RO_OLD], m[r + RO_READY]
    if m[r + RO_KIND] == RO_KUBERNETES:
        keep = min(old, max(0, replicas - m[r + RO_UNAVAILABLE] - ready))
        cap = min(replicas, replicas + m[r + RO_SURGE] - keep)
    else:  # cloud_run: the old revision keeps what traffic it has left
        share, xs = 0.0, m[r + RO_X] + 1
        for j in range(m[r + RO_STEPS_N]):
            step = x[xs + j]
            if ready >= int(np.ceil(step / 100.0 * replicas - 1e-9)):
                share = step
        keep = min(old, int(np.ceil(m[r + RO_INITIAL] * (1.0 - share / 100.0) - 1e-9)))
        cap = replicas
    m[r + RO_OLD] = keep
    created = m[r + RO_CREATED]
    start = max(0, cap - created)
    m[r + RO_CREATED] = created + start
    slots = (old - keep) * m[r + RO_SLOTS]  # the engine's _let_go
    if slots:
        linger = x[m[r + RO_X]]
        if linger > 0:
            at(m, x, x[T_NOW] + linger, E_OLD_GONE, slots, 0)
        else:
            m[S_DB_FREE] += slots
    if starts and m[r + RO_KIND] == RO_KUBERNETES:
        for inst in range(created, created + start):
            if inst < m[I_ADDRESSED]:
                start_attempt(m, x, inst)
    return start


# -- the handler of each event type ----------------------------------------------------------------


@nb.njit(cache=True, _nrt=False)
def dispatch(m, x, typ, a, b):
    if typ == E_SETUP_DONE:
        setup_done(m, x, a, b)
    elif typ == E_ACCEPT_DONE:
        accept_done(m, x, a, b)
    elif typ == E_CONN_TIMEOUT:
        conn_timeout(m, x, a, b)
    elif typ == E_START:
        start_attempt(m, x, a)
    elif typ == E_BEGIN:
        begin_db_init(m, x, a)
    elif typ == E_DEADLINE:  # the engine's deadline
        if deadline_live(m, a, b):
            exit_attempt(m, x, a, TIMEOUT, R_DEADLINE)
    elif typ == E_INIT_DONE:
        db_init_done(m, x, a, b)
    elif typ == E_SCALED:
        scaled_up(m, x)
    elif typ == E_RETRY:  # the engine's retry
        ii = M_INST + a * NI
        if token(m, ii) == b and m[ii + A_IN_INIT]:
            start_pool(m, x, a)
    elif typ == E_PHASES:
        begin_phases(m, x, a)
    elif typ == E_PHASE_DEADLINE:  # the engine's phase_deadline
        ii = M_INST + a * NI
        if m[ii + A_PHASE_RUN] == b and m[ii + A_IN_INIT]:
            phase_failed(m, x, a, R_PHASE_DEADLINE)
    elif typ == E_PHASE_DONE:
        phase_done(m, x, a, b)
    elif typ == E_PHASE_RETRY:  # the engine's phase_retry
        ii = M_INST + a * NI
        if m[ii + A_POOL] == b and m[ii + A_IN_INIT]:
            open_conn(m, x, a, b, True, True)
    elif typ == E_REFRESH:
        refresh(m, x, a, b)
    elif typ == E_REFRESH_DONE:
        refresh_done(m, x, a, b >> 1, b & 1)
    elif typ == E_FREE_SLOT:  # the engine's free_slot
        m[S_DB_FREE] += 1
    elif typ == E_PATH_FAILED:
        path_failed(m, x, a, b)
    elif typ == E_EGRESS:
        direct_egress(m, x, a, b)
    elif typ == E_OLD_GONE:  # the engine's _free_slots
        m[S_DB_FREE] += a
    else:
        traffic_event(m, x, typ, a, b)
