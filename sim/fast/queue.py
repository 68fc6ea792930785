"""The fast engine's pending events: a calendar, a heap, two rings, and the first starts.

Where events wait: a first start is read off the arrival times in instance order; a deadline or a
connect timeout, due a constant time after it is scheduled, joins a first-in first-out ring (they
come due in the order they are scheduled); every other event due soon goes into a calendar
(Brown 1988): a ring of buckets, each a fixed slice of time, with a bit per bucket to find the
first non-empty one, sized to about four buckets per instance, so that pushing and taking an event
costs about the same at 10 or 100,000 instances, where a binary heap goes one level deeper each
time the fleet doubles. The rare events due later (restarts, scale-outs) go on a binary heap.
Each step takes the earliest of them all, by time, then by the order of scheduling, exactly as
one heap would (:func:`earliest`, then :func:`remove`).

Every function here is inlined where it is called (``inline="always"``): scheduling and taking an
event are a few loads and stores, and a call would cost as much.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from sim.fast.draws import as_bits, as_float
from sim.fast.layout import (
    E_SPAN,
    E_START,
    F_END,
    F_INV_W,
    FULL_HEAP,
    FULL_RING,
    I_INSTANCES,
    L_ARRIVALS,
    L_BITS,
    L_BUCKETS,
    L_CAL,
    L_HEAP_CAP,
    L_HEAP_I,
    L_HEAP_T,
    L_NB,
    L_RING_CAP,
    L_RING_I,
    L_RING_T,
    N_A,
    N_B,
    N_KEY,
    N_NEXT,
    N_TIME,
    NN,
    S_ARRIVED,
    S_CAL_FREE,
    S_CAL_HW,
    S_CAL_N,
    S_HEAP_N,
    S_OVERFLOW,
    S_RING_HEAD,
    S_RING_N,
    S_SEQ,
    T_NOW,
)

# -- scheduling: calendar and heap -----------------------------------------------------------------


@nb.njit(cache=True, _nrt=False, inline="always")
def at(m, x, t, typ, a, b):
    """Schedule an event; the sequence number keeps simultaneous events in scheduling order.

    An event due within the calendar's reach (``L_NB`` buckets of width 1 / ``F_INV_W`` from
    now's) joins the calendar, the rest (restarts, scale-outs: rare) a binary heap; the loop takes
    the earlier first event of the two. An event due after the end would never run: it is not
    kept."""
    if t > x[F_END]:
        return
    key = m[S_SEQ] * E_SPAN + typ
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
    return t, key & (E_SPAN - 1), a, b


# -- two rings: the timers due a constant time after they are set ---------------------------------


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
    m[e], m[e + 1], m[e + 2] = m[S_SEQ] * E_SPAN + typ, a, b
    m[S_SEQ] += 1
    m[S_RING_N + ring] = n + 1


@nb.njit(cache=True, _nrt=False, inline="always")
def take(m, ring):
    """The ring's first entry, removed."""
    cap, head = m[L_RING_CAP], m[S_RING_HEAD + ring]
    e = m[L_RING_I] + 3 * (ring * cap + head)
    m[S_RING_HEAD + ring] = head + 1 if head + 1 < cap else 0
    m[S_RING_N + ring] -= 1
    return m[e] & (E_SPAN - 1), m[e + 1], m[e + 2]


# -- the next event, wherever it waits -------------------------------------------------------------


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
        src, t, key = 3, x[m[L_ARRIVALS] + k], k * E_SPAN + E_START
    return src, t, key, bucket


@nb.njit(cache=True, _nrt=False, inline="always")
def remove(m, x, src, bucket):
    """Take the first event of ``src`` (not the first starts): its type and two arguments."""
    if src == 4:
        e = m[L_CAL] + NN * cal_pop(m, bucket)
        return m[e + N_KEY] & (E_SPAN - 1), m[e + N_A], m[e + N_B]
    if src == 5:
        _, typ, a, b = pop(m, x)
        return typ, a, b
    return take(m, src)
