"""The engine's side of the pooler, compiled: ``sim/engine.py``'s ``_pooler_do``, ``_granted``,
``_refused``, ``_launch``, ``_server_login``, ``_server_failed``, ``_expire``, ``_pooler_tick``
and ``_pooler_leave``, handler for handler (docs/model.md, "A pooler in front of the database").

:func:`pooler_do` is the engine's ``_pooler_do`` without its recursion: it takes the stack's top
(sim.fast.pooler) until the stack is empty, an action of PgBouncer's or the rest of a handler
that asked it something; the kernel calls it after each event. A handler that asks PgBouncer and
still has work to do after the answer (an exit's restart, the rest of a failed pool start...)
pushes that rest first, then the answer's actions: the answer is done before the rest, as in the
engine, and neither function calls the other.
"""

from __future__ import annotations

import numba as nb

from sim.fast.draws import as_float
from sim.fast.handlers import (
    begin_work,
    conn_timeout_rest,
    db_init_done_rest,
    drop,
    exit_rest,
    free_conn,
    init_done,
    next_phase,
    next_try,
    open_background,
    phase_at,
    phase_done_rest,
    phase_failed,
    pool_conn_ready,
    pool_failed,
    pool_failed_rest,
    rnd,
    settle_rest,
)
from sim.fast.layout import (
    A_HELD,
    A_IN_INIT,
    A_POOL,
    ACCEPT_S,
    C_AWAITED,
    C_GEN,
    C_INST,
    C_POOL,
    C_STATE,
    E_EXPIRE,
    E_POOLER_LEAVE,
    E_POOLER_TICK,
    E_SERVER_FAILED,
    E_SERVER_LOGIN,
    GONE,
    HELD,
    I_FREE_SLOTS,
    L_CONN,
    L_PHASES,
    L_POOLER,
    L_POOLER_X,
    LOGIN,
    M_INST,
    NC,
    NI,
    PH_POOL,
    POOLER_JANITOR,
    R_53300,
    R_CONNECT_TIMEOUT,
    S_DB_FREE,
    S_OVERFLOW,
    S_PEAK,
    S_REFUSED,
    T_NOW,
)
from sim.fast.pooler import (
    ACT_EXPIRE,
    ACT_GRANT,
    ACT_LAUNCH,
    ACT_REFUSE,
    ACT_WAKE,
    K_BACKGROUND,
    K_CONN_TIMEOUT,
    K_DB_INIT_DONE,
    K_EXIT,
    K_NEXT_PHASE,
    K_NEXT_TRY,
    K_PHASE_DONE,
    K_POOL_FAILED,
    K_RESET_DONE,
    K_SETTLE,
    PB_STACK,
    PB_TOP,
    PBX_CONNECT_TIMEOUT,
    PBX_JANITOR,
    PBX_QUERY_WAIT,
    PS_WORK,
    PS_WORK_POOL,
    PS_WORK_RESET,
    all_left,
    expire,
    leaving,
    push,
    reset_state,
    server_failed,
    server_up,
    slot_at,
    tick,
    work_done,
)
from sim.fast.queue import at
from sim.pooler import JANITOR_S


@nb.njit(cache=True, _nrt=False)
def reset_pooler(m, x):
    """A replication's PgBouncer, as the engine makes it: empty, its janitor's phase drawn only
    when its runs matter (query_wait_timeout > 0)."""
    reset_state(m, x)
    px = m[L_POOLER_X]
    if x[px + PBX_QUERY_WAIT] > 0:
        x[px + PBX_JANITOR] = JANITOR_S * rnd(m, x, POOLER_JANITOR)


@nb.njit(cache=True, _nrt=False)
def pooler_do(m, x):
    """Do what PgBouncer's rules said and what the handlers that asked still had to do, top of
    the stack first, until nothing is left (or a buffer is full: the replication runs again)."""
    p = m[L_POOLER]
    while m[p + PB_TOP] and not m[S_OVERFLOW]:
        top = m[p + PB_TOP] - 1
        m[p + PB_TOP] = top
        e = m[p + PB_STACK] + 4 * top
        kind, a, b, c = m[e], m[e + 1], m[e + 2], m[e + 3]
        if kind == ACT_GRANT:
            if m[m[L_CONN] + a * NC + C_GEN] == b:  # else gone since: nothing to do
                granted(m, x, a)
        elif kind == ACT_REFUSE:
            if m[m[L_CONN] + a * NC + C_GEN] == b:
                refused(m, x, a, c)
        elif kind == ACT_LAUNCH:
            launch(m, x)
        elif kind == ACT_EXPIRE:
            at(m, x, as_float(c), E_EXPIRE, a, b)
        elif kind == ACT_WAKE:
            at(m, x, as_float(a), E_POOLER_TICK, 0, 0)
        else:
            rest(m, x, kind, a, b, c)


@nb.njit(cache=True, _nrt=False)
def rest(m, x, kind, a, b, c):
    """What a handler still had to do once PgBouncer's answer was done (instance ``a``)."""
    if kind == K_EXIT:
        exit_rest(m, x, a)
    elif kind == K_POOL_FAILED:
        pool_failed_rest(m, x, a, b)
    elif kind == K_NEXT_PHASE:
        next_phase(m, x, a)
    elif kind == K_PHASE_DONE:
        phase_done_rest(m, x, a)
    elif kind == K_SETTLE:
        settle_rest(m, x, a, b, c)
    elif kind == K_BACKGROUND:
        open_background(m, x, a)
    elif kind == K_DB_INIT_DONE:
        db_init_done_rest(m, x, a, b)
    elif kind == K_RESET_DONE:  # _granted's: the reset had its server, init is done
        ii = M_INST + a * NI
        if b == m[ii + A_POOL] and m[ii + A_IN_INIT]:
            init_done(m, x, a)
    elif kind == K_CONN_TIMEOUT:
        conn_timeout_rest(m, x, a, -1, b, c >> 4, c & 15)
    elif kind == K_NEXT_TRY:
        next_try(m, x, a)


@nb.njit(cache=True, _nrt=False)
def granted(m, x, conn):
    ci = m[L_CONN] + conn * NC
    inst = m[ci + C_INST]
    ii, s = M_INST + inst * NI, slot_at(m, conn)
    if m[ci + C_STATE] == LOGIN:  # logged in to PgBouncer: established, no slot of its own
        m[ci + C_STATE] = HELD
        m[ii + A_HELD] += 1
        pool_conn_ready(m, x, inst, conn)
    elif m[ci + C_STATE] == HELD and m[s + PS_WORK]:  # it has a server
        m[s + PS_WORK] = 0
        pool, reset = m[s + PS_WORK_POOL], m[s + PS_WORK_RESET]
        if pool != m[ii + A_POOL] or not m[ii + A_IN_INIT] or reset:
            # The reset takes no time; or nobody waits for that work any more: the server
            # goes back at once (transaction mode), and then init is done if it was the reset.
            if reset:
                push(m, K_RESET_DONE, inst, pool, 0)
            work_done(m, x, conn, x[T_NOW])
        else:
            begin_work(m, x, inst, conn)  # the work begins


@nb.njit(cache=True, _nrt=False)
def refused(m, x, conn, reason):
    """PgBouncer disconnected the client: its login fails, or the work waiting on it."""
    ci, s = m[L_CONN] + conn * NC, slot_at(m, conn)
    inst = m[ci + C_INST]
    ii = M_INST + inst * NI
    logging_in = m[ci + C_STATE] == LOGIN
    work = m[s + PS_WORK_POOL] if m[s + PS_WORK] else -1
    m[s + PS_WORK] = 0
    awaited, pool = m[ci + C_AWAITED], m[ci + C_POOL]
    if m[ci + C_STATE] != GONE:  # an exited instance's, waiting to leave, is off its list already
        drop(m, conn)
    if logging_in:
        if awaited and pool == m[ii + A_POOL] and m[ii + A_IN_INIT]:
            pool_failed(m, x, inst, reason)
    elif work == m[ii + A_POOL] and m[ii + A_IN_INIT]:
        if m[L_PHASES] and not m[phase_at(m, ii) + PH_POOL]:
            phase_failed(m, x, inst, reason)  # the phase's work failed: no connection retry
        else:
            pool_failed(m, x, inst, reason)


@nb.njit(cache=True, _nrt=False)
def launch(m, x):
    """PgBouncer opens a server connection: accept_s, then a database slot or 53300; given up
    at server_connect_timeout."""
    accept = rnd(m, x, ACCEPT_S)
    timeout = x[m[L_POOLER_X] + PBX_CONNECT_TIMEOUT]
    if accept >= timeout:
        at(m, x, x[T_NOW] + timeout, E_SERVER_FAILED, R_CONNECT_TIMEOUT, 0)
    else:
        at(m, x, x[T_NOW] + accept, E_SERVER_LOGIN, 0, 0)


@nb.njit(cache=True, _nrt=False)
def pooler_event(m, x, typ, a, b):
    """The pooler's events: the engine's _server_login, _server_failed, _expire, _pooler_tick and
    _pooler_leave (their actions are done by pooler_do, after)."""
    now = x[T_NOW]
    if typ == E_SERVER_LOGIN:
        if m[S_DB_FREE] == 0:
            m[S_REFUSED] += 1
            server_failed(m, x, now, R_53300, 1)
            return
        m[S_DB_FREE] -= 1
        held = m[I_FREE_SLOTS] - m[S_DB_FREE]
        if held > m[S_PEAK]:
            m[S_PEAK] = held
        server_up(m, x, now)
    elif typ == E_SERVER_FAILED:
        server_failed(m, x, now, a, b)
    elif typ == E_EXPIRE:
        expire(m, x, a, b, now)
    elif typ == E_POOLER_TICK:
        tick(m, x, now)
    elif typ == E_POOLER_LEAVE:  # an exited instance's client: its connection's slot is free now
        leaving(m, a)
        all_left(m, x, now)
        free_conn(m, a)
