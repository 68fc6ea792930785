"""The fast engine's PgBouncer: ``sim/pooler.py``'s :class:`~sim.pooler.PoolerState`, compiled.

Only with ``[pooler] kind = "pgbouncer"`` (docs/model.md, "A pooler in front of the database").
Like the readable object it keeps no clock and makes no draw: told that a client arrived, asks
for a server, finished its work or left, that a server connection logged in or failed, or that a
janitor run or a reserve or retry moment came, it answers what follows. Its answer is a list of
actions (grant, refuse, launch, expire, wake), which it pushes on a stack of pending actions in
the pooler's region; :mod:`sim.fast.pooler_engine` does them, in the engine's order.

Why a stack and not calls: the engine's actions call each other back (a grant lets an instance's
work begin, its end gives the server back, which grants the next client...), and numba's on-disk
cache crashes loading recursive functions. Each list is pushed reversed (its first action on
top), above whatever the handler that asked still has to do (its continuation, pushed first):
taking the top until the stack is empty does every action, and every nested list before the
rest of the list that caused it, as the engine's recursion does.

The pooler's region (``m[L_POOLER]``): PB_* ints, then NPS ints per connection slot (a client is
its connection's slot, named with its serial so that a stale janitor run spares the slot's next
client), then NPI per instance, then the stack, four ints per entry. Floats at ``x[L_POOLER_X]``.
Waiting clients are a first-in first-out list through their slots.
"""

from __future__ import annotations

import math

import numba as nb

from sim.fast.draws import as_bits, as_float
from sim.fast.layout import (
    C_GEN,
    FULL_CONNS,
    L_CONN,
    L_POOLER,
    L_POOLER_X,
    NC,
    R_MAX_CLIENT_CONN,
    R_QUERY_WAIT_TIMEOUT,
    R_SERVER_LOGIN_RETRY,
    S_OVERFLOW,
)
from sim.pooler import JANITOR_S

# Ints: settings, state, and where the per-slot, per-instance and stack parts start.
(
    PB_SERVER_BACK,  # transaction or statement mode: the server goes back when the work ends
    PB_MAX_CLIENT,
    PB_POOL_SIZE,
    PB_RESERVE,  # reserve_pool_size, 0 unless reserve_pool_timeout > 0 too
    PB_MAX_DB,
    PB_CLIENTS,
    PB_SERVERS,  # open or opening
    PB_IDLE,
    PB_OPENING,
    PB_WELCOME,
    PB_LOGIN_FAILED,
    PB_WHEAD,  # the waiting clients' list: first and last slot, −1 when empty
    PB_WTAIL,
    PB_TOP,  # the stack's entries
    PB_SLOTS,  # where the per-slot ints start (absolute)
    PB_INSTS,
    PB_STACK,
    PB_STACK_CAP,
) = range(18)
NPB = 18
PB_STATE = PB_CLIENTS  # from here to PB_SLOTS: reset at each replication
# Per connection slot: a client (its serial), what it waits for since when, whether it holds a
# server; and the engine's _work entry: the pool generation whose work waits for a server on it,
# and whether that is the reset of a transaction-mode pool.
(
    PS_CLIENT,
    PS_SERIAL,
    PS_WAIT,  # 0: not waiting; WAITS_TO_LOG_IN or WAITS_FOR_SERVER
    PS_SINCE,  # the float's bits
    PS_PREV,
    PS_NEXT,
    PS_LINKED,
    PS_WORK,  # 1 while the engine's _work holds it
    PS_WORK_POOL,
    PS_WORK_RESET,
) = range(10)
NPS = 10
WAITS_TO_LOG_IN, WAITS_FOR_SERVER = 1, 2
# Per instance: the engine's _busy, the connection its work runs on (−1: none) and its generation.
PI_BUSY, PI_BUSY_GEN = range(2)
NPI = 2
# Floats.
(
    PBX_RESERVE_TIMEOUT,
    PBX_CONNECT_TIMEOUT,
    PBX_LOGIN_RETRY,
    PBX_QUERY_WAIT,
    PBX_JANITOR,  # the janitor's phase, drawn per replication
    PBX_LAST_LAUNCH,
    PBX_RETRY_WAKE,
) = range(7)
NPBX = 7
# Stack entries: what, and up to three ints. Actions first (sim.pooler's), then what the engine's
# handlers still had to do when they asked (sim.fast.pooler_engine does both).
(
    ACT_GRANT,  # client slot, its generation
    ACT_REFUSE,  # client slot, its generation, reason
    ACT_LAUNCH,
    ACT_EXPIRE,  # client slot, serial, the time's bits
    ACT_WAKE,  # the time's bits
    K_EXIT,  # instance: exit's restart, after its connections left
    K_POOL_FAILED,  # instance, reason: the rest of pool_failed
    K_NEXT_PHASE,  # instance
    K_PHASE_DONE,  # instance: phase_done's rest, once its server went back
    K_SETTLE,  # instance, connections to open, the settled pool: settle_ready_pool's rest
    K_BACKGROUND,  # instance: a background start's other connections, after run_queries
    K_DB_INIT_DONE,  # instance, connection: db_init_done's rest, once its server went back
    K_RESET_DONE,  # instance, pool, reset: _granted's init_done after the reset's server
    K_CONN_TIMEOUT,  # instance, pool, awaited × 16 + reason: conn_timeout's rest
    K_NEXT_TRY,  # instance: a stay-up exit's next try, after its connections left
) = range(15)


@nb.njit(cache=True, _nrt=False, inline="always")
def slot_at(m, conn):
    p = m[L_POOLER]
    return m[p + PB_SLOTS] + conn * NPS


@nb.njit(cache=True, _nrt=False, inline="always")
def busy_at(m, inst):
    return m[m[L_POOLER] + PB_INSTS] + inst * NPI


@nb.njit(cache=True, _nrt=False)
def push(m, kind, a, b, c):
    """One entry on the stack; when it is full the replication stops (the room grows with the
    connection slots')."""
    p = m[L_POOLER]
    top = m[p + PB_TOP]
    if top == m[p + PB_STACK_CAP]:
        m[S_OVERFLOW] = FULL_CONNS
        return
    e = m[p + PB_STACK] + 4 * top
    m[e], m[e + 1], m[e + 2], m[e + 3] = kind, a, b, c
    m[p + PB_TOP] = top + 1


@nb.njit(cache=True, _nrt=False)
def reverse_from(m, start):
    """The entries pushed since ``start`` (one list of actions), reversed: its first on top."""
    p = m[L_POOLER]
    st = m[p + PB_STACK]
    i, j = start, m[p + PB_TOP] - 1
    while i < j:
        for f in range(4):
            m[st + 4 * i + f], m[st + 4 * j + f] = m[st + 4 * j + f], m[st + 4 * i + f]
        i += 1
        j -= 1


@nb.njit(cache=True, _nrt=False, inline="always")
def grant(m, conn):
    push(m, ACT_GRANT, conn, m[m[L_CONN] + conn * NC + C_GEN], 0)


@nb.njit(cache=True, _nrt=False, inline="always")
def refuse(m, conn, reason):
    push(m, ACT_REFUSE, conn, m[m[L_CONN] + conn * NC + C_GEN], reason)


@nb.njit(cache=True, _nrt=False)
def reset_state(m, x):
    """A replication's start: no client, no server, nothing pending."""
    p, px = m[L_POOLER], m[L_POOLER_X]
    m[p + PB_STATE : p + PB_SLOTS] = 0
    m[p + PB_WHEAD] = m[p + PB_WTAIL] = -1
    slots = m[p + PB_SLOTS]
    m[slots : m[p + PB_INSTS]] = 0
    insts = m[p + PB_INSTS]
    m[insts : m[p + PB_STACK] : NPI] = -1  # PI_BUSY
    x[px + PBX_LAST_LAUNCH] = -math.inf
    x[px + PBX_RETRY_WAKE] = -math.inf
    x[px + PBX_JANITOR] = 0.0


# -- the waiting clients --------------------------------------------------------------------------


@nb.njit(cache=True, _nrt=False)
def unlist(m, conn):
    """Off the waiting list."""
    p, s = m[L_POOLER], slot_at(m, conn)
    prev, nxt = m[s + PS_PREV], m[s + PS_NEXT]
    if prev >= 0:
        m[slot_at(m, prev) + PS_NEXT] = nxt
    else:
        m[p + PB_WHEAD] = nxt
    if nxt >= 0:
        m[slot_at(m, nxt) + PS_PREV] = prev
    else:
        m[p + PB_WTAIL] = prev
    m[s + PS_WAIT] = 0


@nb.njit(cache=True, _nrt=False)
def forget(m, conn):
    """No longer a client."""
    m[slot_at(m, conn) + PS_CLIENT] = 0
    m[m[L_POOLER] + PB_CLIENTS] -= 1


@nb.njit(cache=True, _nrt=False)
def janitor_at(m, x, t):
    """PoolerState.janitor_after: the janitor's first run strictly after ``t``."""
    phase = x[m[L_POOLER_X] + PBX_JANITOR]
    return phase + (math.floor((t - phase) / JANITOR_S) + 1) * JANITOR_S


@nb.njit(cache=True, _nrt=False)
def wait(m, x, conn, kind, now):
    p, px, s = m[L_POOLER], m[L_POOLER_X], slot_at(m, conn)
    m[s + PS_WAIT], m[s + PS_SINCE] = kind, as_bits(now)
    tail = m[p + PB_WTAIL]
    m[s + PS_PREV], m[s + PS_NEXT] = tail, -1
    if tail >= 0:
        m[slot_at(m, tail) + PS_NEXT] = conn
    else:
        m[p + PB_WHEAD] = conn
    m[p + PB_WTAIL] = conn
    qwt = x[px + PBX_QUERY_WAIT]
    if qwt > 0:
        push(m, ACT_EXPIRE, conn, m[s + PS_SERIAL], as_bits(janitor_at(m, x, now + qwt)))
    if m[p + PB_RESERVE]:
        push(m, ACT_WAKE, as_bits(now + x[px + PBX_RESERVE_TIMEOUT]), 0, 0)
    activate(m, x, now)


@nb.njit(cache=True, _nrt=False)
def link(m, conn):
    m[m[L_POOLER] + PB_IDLE] -= 1
    m[slot_at(m, conn) + PS_LINKED] = 1
    grant(m, conn)


@nb.njit(cache=True, _nrt=False)
def serve(m, x, now):
    """Idle servers to the clients waiting for one, first in first out; then maybe a launch."""
    p = m[L_POOLER]
    while m[p + PB_IDLE]:
        first = m[p + PB_WHEAD]
        while first >= 0 and m[slot_at(m, first) + PS_WAIT] != WAITS_FOR_SERVER:
            first = m[slot_at(m, first) + PS_NEXT]
        if first < 0:
            break
        unlist(m, first)
        link(m, first)
    activate(m, x, now)


@nb.njit(cache=True, _nrt=False)
def activate(m, x, now):
    """launch_new_connection: one at a time, not within server_login_retry of a failed launch,
    up to default_pool_size (plus the reserve once the first waiter waited reserve_pool_timeout)
    and max_db_connections."""
    p, px = m[L_POOLER], m[L_POOLER_X]
    if m[p + PB_WHEAD] < 0 or m[p + PB_OPENING] or m[p + PB_IDLE]:
        return
    retry_at = x[px + PBX_LAST_LAUNCH] + x[px + PBX_LOGIN_RETRY]
    if m[p + PB_LOGIN_FAILED] and now < retry_at:
        if retry_at == x[px + PBX_RETRY_WAKE]:
            return
        x[px + PBX_RETRY_WAKE] = retry_at
        push(m, ACT_WAKE, as_bits(retry_at), 0, 0)
        return
    servers = m[p + PB_SERVERS]
    limit = m[p + PB_POOL_SIZE]
    if servers >= limit and m[p + PB_RESERVE]:
        since = as_float(m[slot_at(m, m[p + PB_WHEAD]) + PS_SINCE])
        if now - since >= x[px + PBX_RESERVE_TIMEOUT]:
            limit += m[p + PB_RESERVE]
    if servers >= limit:
        return
    if m[p + PB_MAX_DB] and servers >= m[p + PB_MAX_DB]:
        return
    m[p + PB_OPENING] = 1
    m[p + PB_SERVERS] = servers + 1
    x[px + PBX_LAST_LAUNCH] = now
    push(m, ACT_LAUNCH, 0, 0, 0)


# -- what the engine reports (each pushes one list of actions) ------------------------------------


@nb.njit(cache=True, _nrt=False)
def arrive(m, x, conn, now):
    """A client connection reaches PgBouncer."""
    p, s = m[L_POOLER], slot_at(m, conn)
    start = m[p + PB_TOP]
    if m[p + PB_CLIENTS] >= m[p + PB_MAX_CLIENT]:
        refuse(m, conn, R_MAX_CLIENT_CONN)
    else:
        m[s + PS_CLIENT] = 1
        m[s + PS_SERIAL] += 1
        m[s + PS_WAIT] = m[s + PS_LINKED] = m[s + PS_WORK] = 0
        m[p + PB_CLIENTS] += 1
        if m[p + PB_WELCOME]:
            grant(m, conn)
        else:
            wait(m, x, conn, WAITS_TO_LOG_IN, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def need_server(m, x, conn, now):
    """A logged-in client sends its work's first query: it needs a server connection."""
    p, s = m[L_POOLER], slot_at(m, conn)
    start = m[p + PB_TOP]
    if m[s + PS_LINKED]:
        grant(m, conn)
    elif m[p + PB_IDLE]:
        link(m, conn)
    elif m[p + PB_LOGIN_FAILED] and m[p + PB_SERVERS] == m[p + PB_OPENING]:
        forget(m, conn)  # check_fast_fail
        refuse(m, conn, R_SERVER_LOGIN_RETRY)
        activate(m, x, now)
    else:
        wait(m, x, conn, WAITS_FOR_SERVER, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def work_done(m, x, conn, now):
    """The client's work ended: outside session mode its server goes back to the pool."""
    p, s = m[L_POOLER], slot_at(m, conn)
    if not m[p + PB_SERVER_BACK] or not m[s + PS_LINKED]:
        return
    start = m[p + PB_TOP]
    m[s + PS_LINKED] = 0
    m[p + PB_IDLE] += 1
    serve(m, x, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def leaving(m, conn):
    """PoolerState.leave, for one of the clients leaving at once (one no longer a client is
    ignored): its slot, its place in the waiting list, its server. :func:`all_left` ends it."""
    s = slot_at(m, conn)
    if not m[s + PS_CLIENT]:
        return
    forget(m, conn)
    if m[s + PS_WAIT]:
        unlist(m, conn)
    if m[s + PS_LINKED]:
        m[s + PS_LINKED] = 0
        m[m[L_POOLER] + PB_IDLE] += 1


@nb.njit(cache=True, _nrt=False)
def all_left(m, x, now):
    """PoolerState.leave's end, once every client leaving now has: the waiters are served."""
    start = m[m[L_POOLER] + PB_TOP]
    serve(m, x, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def server_up(m, x, now):
    """The server connection being opened logged in: every client waiting to log in is logged
    in, and the new server goes to the first client waiting for one."""
    p = m[L_POOLER]
    start = m[p + PB_TOP]
    m[p + PB_OPENING] = 0
    m[p + PB_IDLE] += 1
    m[p + PB_WELCOME] = 1
    m[p + PB_LOGIN_FAILED] = 0
    conn = m[p + PB_WHEAD]
    while conn >= 0:
        nxt = m[slot_at(m, conn) + PS_NEXT]
        if m[slot_at(m, conn) + PS_WAIT] == WAITS_TO_LOG_IN:
            unlist(m, conn)
            grant(m, conn)
        conn = nxt
    serve(m, x, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def server_failed(m, x, now, reason, kill):
    """The server connection being opened failed; with the server's own error (``kill``) and no
    server open, every waiting client is refused with it (kill_pool_logins)."""
    p = m[L_POOLER]
    start = m[p + PB_TOP]
    m[p + PB_OPENING] = 0
    m[p + PB_SERVERS] -= 1
    m[p + PB_LOGIN_FAILED] = 1
    if kill and (m[p + PB_SERVERS] == 0 or not m[p + PB_WELCOME]):
        conn = m[p + PB_WHEAD]
        while conn >= 0:
            nxt = m[slot_at(m, conn) + PS_NEXT]
            refuse(m, conn, reason)
            forget(m, conn)
            unlist(m, conn)
            conn = nxt
    activate(m, x, now)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def expire(m, x, conn, serial, now):
    """The janitor's run: the client is refused if it still waits and has waited longer than
    query_wait_timeout (``serial``: the client it was set for, not a later one in its slot)."""
    s = slot_at(m, conn)
    if m[s + PS_SERIAL] != serial or not m[s + PS_CLIENT] or not m[s + PS_WAIT]:
        return
    if now - as_float(m[s + PS_SINCE]) <= x[m[L_POOLER_X] + PBX_QUERY_WAIT]:
        return
    start = m[m[L_POOLER] + PB_TOP]
    unlist(m, conn)
    forget(m, conn)
    refuse(m, conn, R_QUERY_WAIT_TIMEOUT)
    reverse_from(m, start)


@nb.njit(cache=True, _nrt=False)
def tick(m, x, now):
    """A moment at which a server connection may be opened (reserve pool, login retry)."""
    start = m[m[L_POOLER] + PB_TOP]
    activate(m, x, now)
    reverse_from(m, start)
