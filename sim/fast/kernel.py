"""The fast engine's event loop: ``sim/engine.py`` handler for handler, compiled with numba.

The readable engine is the truth; this is a port of it. Each handler below has the name, the order
of scheduling and the guards of the engine's method of the same name, so simultaneous events run in
the same order and, with constant distributions, both engines write the same records
(tests/test_fast_engine.py).

Why two flat arrays: numba passes every array of a call's arguments field by field, so handlers
that took a tuple of forty arrays spent more time calling than simulating. Here the whole state of
a replication, and the scenario, live in one int64 array ``m`` and one float64 array ``x``; a
record of several fields is a run of slots at a base offset (``ii = M_INST + inst * NI`` for an
instance, ``conn_base(m, conn)`` for a connection), and the header says where each region starts.
:mod:`sim.fast` lays them out. Buffers have fixed sizes; when one is full the replication stops
with an overflow code, the caller grows that buffer and runs the same replication again (its draws
depend only on the seed and its index, so the rerun is identical).

Why ``_nrt=False``: with numba's runtime on, every call that passes ``m`` and ``x`` counts their
references up and down with atomic instructions; profiled on a burst, those counts took more than
half the time. Nothing in the event loop allocates, so it runs without the runtime; only
``arrivals`` (which sorts) and ``run_block`` (called from Python) keep it.

Where events wait: a first start is read off the arrival times in instance order; a deadline or a
connect timeout, due a constant time after it is scheduled, joins a first-in first-out ring (they
come due in the order they are scheduled); every other event due soon goes into a calendar
(Brown 1988): a ring of buckets, each a fixed slice of time, with a bit per bucket to find the
first non-empty one, sized to about four buckets per instance, so that pushing and taking an event
costs about the same at 10 or 100,000 instances, where a binary heap goes one level deeper each
time the fleet doubles. The rare events due later (restarts, scale-outs) go on a binary heap.
Each step takes the earliest of them all, by time, then by the order of scheduling, exactly as
one heap would.

Draws are made a block at a time per role (``DRAW_BLOCK``), in one tight loop: made one by one
inside the handlers, each draw's logarithm, exponential and rational function waited in line;
made together, the processor overlaps them. The values are the same (a draw is a function of its
number), so the records are too.
"""

from __future__ import annotations

import math
from typing import get_args

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from sim.fast.draws import (
    as_bits,
    as_float,
    fill,
    inverse_cdf,
    replication_key,
    stream_state,
    tilted,
    unit,
)
from sim.records import FLEET_COLUMNS, OUTCOMES, Outcome, Reason
from sim.scenario import Fleet, Pool, Restart


def _places(vocabulary: tuple, names: tuple) -> tuple[int, ...]:
    """Each name's code: its place in the vocabulary (a name not in it fails at import)."""
    return tuple(vocabulary.index(n) for n in names)


# Outcomes, as codes: their places in sim.records' vocabulary; the reasons the model gives.
READY, TIMEOUT, REJECTED, ERROR = _places(
    OUTCOMES, (Outcome.READY, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.ERROR)
)
MODEL_REASONS = ("", Reason.DEADLINE, Reason.TOO_MANY_CLIENTS, Reason.CONNECT_TIMEOUT)
R_NONE, R_DEADLINE, R_53300, R_CONNECT_TIMEOUT = range(len(MODEL_REASONS))
# Connection states, as in sim.engine.
QUEUED, SETUP, ACCEPT, HELD, GONE = range(5)
# Roles of the random streams (MIX: which importance-sampling component a replication runs).
ARRIVAL, BEFORE, SETUP_S, ACCEPT_S, QUERIES, AFTER, SCALE, RESTART_U, RETRY_U, API, MIX = range(11)
N_ROLES = 11
# Pool-start strategies, arrival patterns, restart policies: places in the scenario's Literals.
STARTS = get_args(Pool.model_fields["start"].annotation)
ASYNCPG, CONCURRENT, BACKGROUND, WORKERS = _places(
    STARTS, ("asyncpg", "concurrent", "background", "workers")
)
ARRIVALS = get_args(Fleet.model_fields["arrival"].annotation)
BURST, UNIFORM_ARRIVAL, POISSON, WAVES = _places(ARRIVALS, ("burst", "uniform", "poisson", "waves"))
POLICIES = get_args(Restart.model_fields["policy"].annotation)
P_NONE, P_FIXED, P_EXPONENTIAL = _places(POLICIES, ("none", "fixed", "exponential"))
J_NONE, J_FRACTION, J_FULL = range(3)  # jitter: none, a fraction, "full"
# Event types.
(
    E_START,
    E_BEGIN,
    E_DEADLINE,
    E_REFRESH,
    E_REFRESH_DONE,
    E_RETRY,
    E_INIT_DONE,
    E_SCALED,
    E_SETUP_DONE,
    E_ACCEPT_DONE,
    E_CONN_TIMEOUT,
    E_FREE_SLOT,
) = range(12)
# The two rings of events due a constant time after they are scheduled.
DEADLINES, CONN_TIMEOUTS = range(2)
# Overflow codes: which buffer to grow.
OK, FULL_HEAP, FULL_CONNS, FULL_QUEUE, FULL_RECORDS, FULL_RING = range(6)

# -- the int64 array m ------------------------------------------------------------------------
# Scenario integers.
(
    I_INSTANCES,
    I_MIN_SIZE,
    I_HELD_WHEN_READY,
    I_HOLD,
    I_START,
    I_WORKERS,
    I_CX_MIN,
    I_CX_MAX,
    I_CX_PER,
    I_FREE_SLOTS,
    I_POLICY,
    I_RESTARTS,
    I_RETRY_JITTER,
    I_RESTART_JITTER,
    I_CLOUDSQL,
    I_CS_CALLS,
    I_CS_QUOTA,
    I_CS_BURST,
    I_ARRIVAL,
    I_STRAGGLERS,
    I_KEEP,  # keep every attempt record (1), or only count them per replication (0)
    I_TILT_ROLE,  # the role whose first I_TILT_DRAWS draws importance sampling tilts; -1: none
    I_TILT_DRAWS,
) = range(23)
# Scalar state of a replication.
(
    S_CX_INST,
    S_CX_CAP,
    S_CX_BUSY,
    S_CX_WAIT,
    S_CX_SCALING,
    S_DB_FREE,
    S_PEAK,
    S_CONN_ATTEMPTS,
    S_SEQ,
    S_Q_HEAD,
    S_Q_TAIL,
    S_FREE_TOP,
    S_REC_N,
    S_API_WINDOW,
    S_API_USED,
    S_OVERFLOW,
    S_TILTED,  # this replication runs the tilted component of the mixture
    S_TILT_K,  # draws of the tilted role made so far that the tilt applies to
    S_ARRIVED,  # instances whose first start has run
    S_RING_HEAD,  # where each ring's first entry is (two slots)
) = range(23, 43)
S_RING_N = S_RING_HEAD + 2  # how many entries each ring holds (two slots)
S_HEAP_N = S_RING_N + 2  # how many entries the heap holds
S_CAL_N = S_HEAP_N + 1  # how many events the calendar holds
S_CAL_FREE = S_HEAP_N + 2  # the calendar's first free node (a list through N_NEXT), or -1
S_CAL_HW = S_HEAP_N + 3  # nodes below this have been used
M_KC = S_HEAP_N + 4  # draws made, per role
M_KS = M_KC + N_ROLES  # stream states, per role (uint64 bits)
M_KIND = M_KS + N_ROLES  # distribution kinds, per role
M_VOFF = M_KIND + N_ROLES  # empirical values in x: start and stop, per role
M_KB = M_VOFF + 2 * N_ROLES  # per role: the draw number of the first value in its block
# Where the regions start and how big they are.
(
    L_CONN,
    L_CONN_CAP,
    L_FREE,
    L_HEAP_I,
    L_HEAP_T,
    L_HEAP_CAP,
    L_QUEUE,
    L_Q_CAP,
    L_REC_I,
    L_REC_F,
    L_REC_CAP,
    L_WAVES,
    L_RING_T,
    L_RING_I,
    L_RING_CAP,
    L_ARRIVALS,
    L_CAL,  # calendar nodes: NN ints each
    L_BUCKETS,  # per bucket: first and last node (valid while the bucket's bit is set)
    L_BITS,  # a bit per bucket (L_NB / 64 words), then a bit per word of those (the summary)
    L_NB,  # how many buckets: a power of two, at least 4,096
) = range(M_KB + N_ROLES, M_KB + N_ROLES + 20)
M_INST = L_NB + 1  # instance ints: NI per instance
(
    A_ATTEMPT,
    A_POOL,
    A_IN_INIT,
    A_HELD,
    A_PENDING,
    A_TO_OPEN,
    A_REFRESHES,
    A_CONN_ATTEMPTS,
    A_POOL_STARTS,
    A_HEAD,
    A_TAIL,
) = range(11)
NI = 11
# Calendar nodes: the event's time (its float's bits, so that the whole event is read at once
# from one place), key, arguments, and the next node of its bucket.
N_TIME, N_KEY, N_A, N_B, N_NEXT = range(5)
NN = 5
# Connection ints: NC per connection slot.
C_INST, C_POOL, C_STATE, C_AWAITED, C_GEN, C_NEXT, C_PREV = range(7)
NC = 7
# Attempt records: ints and floats.
(R_REP, R_INSTANCE, R_ATTEMPT, R_OUTCOME, R_REASON, R_HELD, R_CONN_ATTEMPTS, R_POOL_STARTS) = range(
    8
)
NR = 8
R_START, R_INIT_START, R_INIT_S = range(3)
NRF = 3

# -- the float64 array x ------------------------------------------------------------------------
(
    F_HORIZON,
    F_TIMEOUT,
    F_END,
    F_CONNECT,
    F_RETRY,
    F_RETRY_JITTER,
    F_RESTART_INITIAL,
    F_RESTART_MAX,
    F_RESTART_MULT,
    F_RESTART_JITTER,
    F_RELEASE,
    F_CS_INTERVAL,
    F_WINDOW,
    F_RATE,
) = range(14)
T_NOW, T_VSUM = 14, 15  # T_VSUM: the sum of the tilted draws' uniforms
F_THETA, F_MIX = 16, 17  # the tilt θ, and the share of replications that run tilted
F_INV_W = 18  # 1 / the calendar's bucket width
X_DIST = 19  # per role: two parameters
DRAW_BLOCK = 32  # draws made at a time per role (not the tilted ones)
X_BLOCKS = X_DIST + 3 * N_ROLES  # per role: a block of draws made ahead, and a block of scratch
X_INST = X_BLOCKS + N_ROLES * 2 * DRAW_BLOCK  # instance floats: NF per instance
B_READY, B_ATTEMPT_START, B_INIT_START, B_DEADLINE = range(4)
NF = 4

# The replication row: the records' fleet columns (less the replication number), then the counts
# that summarise a run without records, then the importance sampler's.
FLEET = (
    *FLEET_COLUMNS[1:],
    "failed_attempts",
    "first_attempts",
    "first_ready",
    "tilted",
    "tilt_draws",
    "tilt_sum",
)


# -- kernel: heap, draws ---------------------------------------------------------------------------


@nb.njit(cache=True, _nrt=False, inline="always")
def at(m, x, t, typ, a, b):
    """Schedule an event; the sequence number keeps simultaneous events in scheduling order.

    An event due within the calendar's reach (``L_NB`` buckets of width 1 / ``F_INV_W`` from
    now's) joins the calendar, the rest (restarts, scale-outs: rare) a binary heap; the loop takes
    the earlier first event of the two. An event due after the end would never run: it is not
    kept."""
    if t > x[F_END]:
        return
    key = m[S_SEQ] * 16 + typ
    k = np.int64(t * x[F_INV_W])
    if k - np.int64(x[T_NOW] * x[F_INV_W]) < m[L_NB]:
        cal_add(m, x, t, k & (m[L_NB] - 1), key, a, b)
    else:
        heap_add(m, x, t, key, a, b)
    m[S_SEQ] += 1


@nb.njit(cache=True, _nrt=False, inline="always")
def cal_add(m, x, t, bucket, key, a, b):
    """Into the bucket's list, after every event due no later: those were scheduled earlier (a
    smaller key), so the list stays in the loop's order, by time and then by key. Buckets hold
    an event or two at a time, so the list is short; most events join at its end."""
    cn = m[L_CAL]
    node = m[S_CAL_FREE]
    if node >= 0:
        m[S_CAL_FREE] = m[cn + NN * node + N_NEXT]
    else:
        node = m[S_CAL_HW]
        if node == m[L_HEAP_CAP]:
            m[S_OVERFLOW] = FULL_HEAP
            return
        m[S_CAL_HW] = node + 1
    e = cn + NN * node
    m[e + N_TIME], m[e + N_KEY], m[e + N_A], m[e + N_B] = as_bits(t), key, a, b
    m[S_CAL_N] += 1
    word, bit = m[L_BITS] + (bucket >> 6), np.int64(1) << (bucket & 63)
    ends = m[L_BUCKETS] + 2 * bucket
    if not m[word] & bit:
        if not m[word]:
            w = bucket >> 6
            m[m[L_BITS] + (m[L_NB] >> 6) + (w >> 6)] |= np.int64(1) << (w & 63)
        m[word] |= bit
        m[ends], m[ends + 1], m[e + N_NEXT] = node, node, -1
        return
    last = m[ends + 1]
    if as_float(m[cn + NN * last + N_TIME]) <= t:
        m[cn + NN * last + N_NEXT], m[ends + 1], m[e + N_NEXT] = node, node, -1
        return
    prev, cur = -1, m[ends]
    while as_float(m[cn + NN * cur + N_TIME]) <= t:  # stops before the last, which is due later
        prev, cur = cur, m[cn + NN * cur + N_NEXT]
    m[e + N_NEXT] = cur
    if prev < 0:
        m[ends] = node
    else:
        m[cn + NN * prev + N_NEXT] = node


@nb.njit(cache=True, _nrt=False, inline="always")
def first_set(m, base, words, start):
    """The first set bit at or after ``start`` in ``words`` words from ``base``, or −1."""
    w = start >> 6
    if w >= words:
        return -1
    bits = m[base + w] & (np.int64(-1) << (start & 63))
    while not bits:
        w += 1
        if w == words:
            return -1
        bits = m[base + w]
    return (w << 6) + trailing_zeros(bits)


@nb.njit(cache=True, _nrt=False, inline="always")
def cal_first(m, x):
    """The bucket of the calendar's earliest event (the calendar holds one). Buckets go round:
    the one of now's time comes first, and every event is due before now's bucket comes round
    again, so the first non-empty bucket from now's holds the earliest event."""
    nb_, bits = m[L_NB], m[L_BITS]
    words, here = nb_ >> 6, np.int64(x[T_NOW] * x[F_INV_W]) & (nb_ - 1)
    w = here >> 6
    found = m[bits + w] & (np.int64(-1) << (here & 63))
    if found:
        return (w << 6) + trailing_zeros(found)
    summary = bits + words
    w = first_set(m, summary, words >> 6, w + 1)
    if w < 0:
        w = first_set(m, summary, words >> 6, 0)
    return (w << 6) + trailing_zeros(m[bits + w])


@nb.njit(cache=True, _nrt=False, inline="always")
def cal_pop(m, bucket):
    """The bucket's first event, removed: its node (whose fields stay readable until the next
    event is scheduled) goes back on the free list."""
    ends, cn = m[L_BUCKETS] + 2 * bucket, m[L_CAL]
    node = m[ends]
    nxt = m[cn + NN * node + N_NEXT]
    if nxt >= 0:
        m[ends] = nxt
    else:
        w = bucket >> 6
        word = m[L_BITS] + w
        m[word] &= ~(np.int64(1) << (bucket & 63))
        if not m[word]:
            m[m[L_BITS] + (m[L_NB] >> 6) + (w >> 6)] &= ~(np.int64(1) << (w & 63))
    m[cn + NN * node + N_NEXT] = m[S_CAL_FREE]
    m[S_CAL_FREE] = node
    m[S_CAL_N] -= 1
    return node


@nb.njit(cache=True, _nrt=False, inline="always")
def heap_add(m, x, t, key, a, b):
    n, cap = m[S_HEAP_N], m[L_HEAP_CAP]
    if n == cap:
        m[S_OVERFLOW] = FULL_HEAP
        return
    ht, hi = m[L_HEAP_T], m[L_HEAP_I]
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if x[ht + p] < t or (x[ht + p] == t and m[hi + 3 * p] < key):
            break
        x[ht + i] = x[ht + p]
        m[hi + 3 * i], m[hi + 3 * i + 1], m[hi + 3 * i + 2] = (
            m[hi + 3 * p],
            m[hi + 3 * p + 1],
            m[hi + 3 * p + 2],
        )
        i = p
    x[ht + i] = t
    m[hi + 3 * i], m[hi + 3 * i + 1], m[hi + 3 * i + 2] = key, a, b
    m[S_HEAP_N] = n + 1


@nb.njit(cache=True, _nrt=False, inline="always")
def pop(m, x):
    """Take the heap's first event. The heap has a slot past its end, set to +inf here, so that
    the earlier child is picked without a branch (the branch mispredicts half the time)."""
    ht, hi = m[L_HEAP_T], m[L_HEAP_I]
    t, key, a, b = x[ht], m[hi], m[hi + 1], m[hi + 2]
    n = m[S_HEAP_N] - 1
    m[S_HEAP_N] = n
    lt, lk, la, lb = x[ht + n], m[hi + 3 * n], m[hi + 3 * n + 1], m[hi + 3 * n + 2]
    x[ht + n] = np.inf
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        t0, t1 = x[ht + c], x[ht + c + 1]
        c += (t1 < t0) | ((t1 == t0) & (m[hi + 3 * c + 3] < m[hi + 3 * c]))
        if lt < x[ht + c] or (lt == x[ht + c] and lk < m[hi + 3 * c]):
            break
        x[ht + i] = x[ht + c]
        m[hi + 3 * i], m[hi + 3 * i + 1], m[hi + 3 * i + 2] = (
            m[hi + 3 * c],
            m[hi + 3 * c + 1],
            m[hi + 3 * c + 2],
        )
        i = c
    x[ht + i] = lt
    m[hi + 3 * i], m[hi + 3 * i + 1], m[hi + 3 * i + 2] = lk, la, lb
    return t, key & 15, a, b


@nb.njit(cache=True, _nrt=False, inline="always")
def later(m, x, ring, t, typ, a, b):
    """Schedule an event due a constant time after now (a deadline, a connect timeout) on its
    ring. Such events come due in the order they are scheduled, so a first-in first-out ring keeps
    them sorted at no cost; the loop takes whichever of heap and rings is earliest."""
    if t > x[F_END]:
        return
    n, cap = m[S_RING_N + ring], m[L_RING_CAP]
    if n == cap:
        m[S_OVERFLOW] = FULL_RING
        return
    j = m[S_RING_HEAD + ring] + n
    j = ring * cap + (j - cap if j >= cap else j)
    x[m[L_RING_T] + j] = t
    e = m[L_RING_I] + 3 * j
    m[e], m[e + 1], m[e + 2] = m[S_SEQ] * 16 + typ, a, b
    m[S_SEQ] += 1
    m[S_RING_N + ring] = n + 1


@nb.njit(cache=True, _nrt=False, inline="always")
def take(m, ring):
    """The ring's first entry, removed."""
    cap, head = m[L_RING_CAP], m[S_RING_HEAD + ring]
    e = m[L_RING_I] + 3 * (ring * cap + head)
    m[S_RING_HEAD + ring] = head + 1 if head + 1 < cap else 0
    m[S_RING_N + ring] -= 1
    return m[e] & 15, m[e + 1], m[e + 2]


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


# -- a container's life ------------------------------------------------------------------------


@nb.njit(cache=True, _nrt=False)
def start_attempt(m, x, inst):
    now = x[T_NOW]
    if now >= x[F_HORIZON]:
        return
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    m[ii + A_ATTEMPT] += 1
    x[fi + B_ATTEMPT_START] = now
    m[ii + A_CONN_ATTEMPTS] = 0
    m[ii + A_POOL_STARTS] = 0
    at(m, x, now + rnd(m, x, BEFORE), E_BEGIN, inst, 0)


@nb.njit(cache=True, _nrt=False)
def begin_db_init(m, x, inst):
    now = x[T_NOW]
    if now > x[F_HORIZON]:
        return
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    m[ii + A_IN_INIT] = 1
    x[fi + B_INIT_START] = now
    x[fi + B_DEADLINE] = now + x[F_TIMEOUT]
    later(m, x, DEADLINES, x[fi + B_DEADLINE], E_DEADLINE, inst, m[ii + A_ATTEMPT])
    if m[I_CLOUDSQL]:
        m[ii + A_REFRESHES] = 0
        refresh(m, x, inst, m[ii + A_ATTEMPT])
    else:
        start_pool(m, x, inst)


@nb.njit(cache=True, _nrt=False)
def refresh(m, x, inst, attempt):
    """One Cloud SQL refresh: its calls count against the per-minute quota; any over it 429."""
    ii = M_INST + inst * NI
    if m[ii + A_ATTEMPT] != attempt or not m[ii + A_IN_INIT]:
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
    if m[ii + A_ATTEMPT] != attempt or not m[ii + A_IN_INIT]:
        return
    if ok:
        start_pool(m, x, inst)
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
    at(m, x, x[T_NOW] + rnd(m, x, QUERIES), E_INIT_DONE, inst, m[M_INST + inst * NI + A_POOL])


@nb.njit(cache=True, _nrt=False)
def db_init_done(m, x, inst, pool):
    ii = M_INST + inst * NI
    if pool != m[ii + A_POOL] or not m[ii + A_IN_INIT]:
        return
    m[ii + A_IN_INIT] = 0
    record(m, x, inst, READY, R_NONE)
    settle_ready_pool(m, x, inst)
    # became_ready would only note its time: note it now, if the run lasts until then.
    ready = x[T_NOW] + rnd(m, x, AFTER)
    if ready <= x[F_END]:
        x[X_INST + inst * NF + B_READY] = ready


@nb.njit(cache=True, _nrt=False)
def settle_ready_pool(m, x, inst):
    """Keep the pool's first ``held_when_ready`` connections, give up the rest, open the missing."""
    ii = M_INST + inst * NI
    want, pool = m[I_HELD_WHEN_READY], m[ii + A_POOL]
    kept = 0
    conn = m[ii + A_HEAD]
    while conn >= 0:
        ci = m[L_CONN] + conn * NC
        nxt = m[ci + C_NEXT]
        if m[ci + C_POOL] == pool:
            kept += 1
            if kept > want:
                cancel(m, x, conn, True)
        conn = nxt
    m[ii + A_POOL] += 1
    for _ in range(want - min(kept, want)):
        open_conn(m, x, inst, m[ii + A_POOL], False, False)


@nb.njit(cache=True, _nrt=False)
def pool_failed(m, x, inst, reason):
    ii = M_INST + inst * NI
    m[ii + A_POOL] += 1
    if not m[I_HOLD]:
        cancel_all(m, x, inst)
    backoff = x[F_RETRY]
    if backoff > 0:
        if m[I_RETRY_JITTER] != J_NONE:
            backoff = jittered(backoff, m[I_RETRY_JITTER], x[F_RETRY_JITTER], rnd(m, x, RETRY_U))
        if x[T_NOW] + backoff < x[X_INST + inst * NF + B_DEADLINE]:
            at(m, x, x[T_NOW] + backoff, E_RETRY, inst, m[ii + A_ATTEMPT])
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
    record(m, x, inst, outcome, reason)
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
def record(m, x, inst, outcome, reason):
    n = m[S_REC_N]
    if n == m[L_REC_CAP]:
        m[S_OVERFLOW] = FULL_RECORDS
        return
    ii, fi = M_INST + inst * NI, X_INST + inst * NF
    r, f = m[L_REC_I] + n * NR, m[L_REC_F] + n * NRF
    m[r + R_INSTANCE], m[r + R_ATTEMPT] = inst, m[ii + A_ATTEMPT]
    m[r + R_OUTCOME], m[r + R_REASON], m[r + R_HELD] = outcome, reason, m[ii + A_HELD]
    m[r + R_CONN_ATTEMPTS], m[r + R_POOL_STARTS] = m[ii + A_CONN_ATTEMPTS], m[ii + A_POOL_STARTS]
    x[f + R_START], x[f + R_INIT_START] = x[fi + B_ATTEMPT_START], x[fi + B_INIT_START]
    x[f + R_INIT_S] = x[T_NOW] - x[fi + B_INIT_START]
    m[S_CONN_ATTEMPTS] += m[ii + A_CONN_ATTEMPTS]
    m[S_REC_N] = n + 1


# -- one connection: connector, then database --------------------------------------------------


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
    cancel(m, x, conn, True)
    ii = M_INST + inst * NI
    if awaited and pool == m[ii + A_POOL] and m[ii + A_IN_INIT]:
        pool_failed(m, x, inst, R_CONNECT_TIMEOUT)


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


# -- replications ------------------------------------------------------------------------------


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
        if m[ii + A_ATTEMPT] == b and m[ii + A_IN_INIT]:
            start_pool(m, x, a)
    elif typ == E_REFRESH:
        refresh(m, x, a, b)
    elif typ == E_REFRESH_DONE:
        refresh_done(m, x, a, b >> 1, b & 1)
    elif typ == E_FREE_SLOT:  # the engine's free_slot
        m[S_DB_FREE] += 1


@nb.njit(cache=True, _nrt=False)
def reset(m, x, base, index):
    n = m[I_INSTANCES]
    rec_n = m[S_REC_N]  # records accumulate over the replications of a block
    m[S_CX_INST:M_KC] = 0
    m[S_REC_N] = rec_n
    m[S_CX_INST] = m[I_CX_MIN]
    m[S_CX_CAP] = m[I_CX_PER] * m[I_CX_MIN]
    m[S_DB_FREE] = m[I_FREE_SLOTS]
    m[S_API_WINDOW] = -1
    m[S_SEQ] = n  # keys below n * 16 are the first starts', in instance order
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
    stream of their own beside heap and rings: instance ``i``'s start has key ``i * 16``, before
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


@nb.njit(cache=True, _nrt=False, inline="always")
def earliest(m, x):
    """Where the next event waits, its time and key, and (for the calendar) its bucket: the
    earliest, by time then key, of the calendar's first event, the heap's, the two rings' and the
    next first start. Sources: a ring (DEADLINES, CONN_TIMEOUTS), 3 the first starts, 4 the
    calendar, 5 the heap; −1 when nothing waits (time +inf)."""
    src, t, key, bucket = -1, np.inf, 0, 0
    if m[S_CAL_N]:
        bucket = cal_first(m, x)
        e = m[L_CAL] + NN * m[m[L_BUCKETS] + 2 * bucket]
        src, t, key = 4, as_float(m[e + N_TIME]), m[e + N_KEY]
    ht, hi = m[L_HEAP_T], m[L_HEAP_I]
    if m[S_HEAP_N] and (x[ht] < t or (x[ht] == t and m[hi] < key)):
        src, t, key = 5, x[ht], m[hi]
    cap, rt, ri = m[L_RING_CAP], m[L_RING_T], m[L_RING_I]
    for ring in range(2):
        if m[S_RING_N + ring]:
            j = ring * cap + m[S_RING_HEAD + ring]
            if x[rt + j] < t or (x[rt + j] == t and m[ri + 3 * j] < key):
                src, t, key = ring, x[rt + j], m[ri + 3 * j]
    k = m[S_ARRIVED]
    if k < m[I_INSTANCES] and x[m[L_ARRIVALS] + k] <= t:  # a first start's key is below all
        src, t, key = 3, x[m[L_ARRIVALS] + k], k * 16 + E_START
    return src, t, key, bucket


@nb.njit(cache=True, _nrt=False, inline="always")
def remove(m, x, src, bucket):
    """Take the first event of ``src`` (not the first starts): its type and two arguments."""
    if src == 4:
        e = m[L_CAL] + NN * cal_pop(m, bucket)
        return m[e + N_KEY] & 15, m[e + N_A], m[e + N_B]
    if src == 5:
        _, typ, a, b = pop(m, x)
        return typ, a, b
    return take(m, src)


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
        rec0 = m[S_REC_N]
        reset(m, x, base, index)
        arrivals(m, x)
        code = run_one(m, x)
        if code != OK:
            m[S_REC_N] = rec0  # the replication runs again, from scratch, once grown
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
        ready, last = 0, 0.0
        for inst in range(n):
            t = x[X_INST + inst * NF + B_READY]
            ready += t <= horizon
            last = max(last, t)
        col = row0 + index - first
        fleet[0, col] = last if ready == n else np.inf
        fleet[1, col], fleet[2, col] = m[S_PEAK], m[S_CX_INST]
        fleet[3, col], fleet[4, col] = m[S_CONN_ATTEMPTS], ready
        fleet[5, col], fleet[6, col], fleet[7, col] = rejected, timed_out, rec_n - rec0
        fleet[8, col], fleet[9, col], fleet[10, col] = failed, firsts, first_ready
        fleet[11, col], fleet[12, col], fleet[13, col] = m[S_TILTED], m[S_TILT_K], x[T_VSUM]
        if not m[I_KEEP]:
            m[S_REC_N] = rec0  # counted: the records' room serves the next replication
    return stop, OK
