"""Where the fast engine keeps a replication: two flat arrays and the codes written in them.

Why two flat arrays: numba passes every array of a call's arguments field by field, so handlers
that took a tuple of forty arrays spent more time calling than simulating. Here the whole state of
a replication, and the scenario, live in one int64 array ``m`` and one float64 array ``x``; a
record of several fields is a run of slots at a base offset (``ii = M_INST + inst * NI`` for an
instance, ``ci = m[L_CONN] + conn * NC`` for a connection), and the header says where each region
starts. :mod:`sim.fast` lays them out. Buffers have fixed sizes; when one is full the replication
stops with an overflow code, the caller grows that buffer and runs the same replication again (its
draws depend only on the seed and its index, so the rerun is identical).

The codes (outcomes, pool starts, arrival patterns, restart policies) are places in the
vocabularies they encode (:mod:`sim.records`, the scenario's Literals), so they cannot drift.
Plain Python: numba reads these names as constants when it compiles the functions that use them.
"""

from __future__ import annotations

from typing import get_args

from sim.records import (
    FLEET_COLUMNS,
    OUTCOMES,
    TRAFFIC_FLEET_COLUMNS,
    Outcome,
    Reason,
    RequestOutcome,
)
from sim.rollout import Rollout
from sim.scenario import Fleet, PathFaults, Pool, Restart
from sim.streams import ROLES


def _places(vocabulary: tuple, names: tuple) -> tuple[int, ...]:
    """Each name's code: its place in the vocabulary (a name not in it fails at import)."""
    return tuple(vocabulary.index(n) for n in names)


# Outcomes, as codes: their places in sim.records' vocabulary; the reasons the model gives.
READY, TIMEOUT, REJECTED, ERROR = _places(
    OUTCOMES, (Outcome.READY, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.ERROR)
)
MODEL_REASONS = (
    "",
    Reason.DEADLINE,
    Reason.TOO_MANY_CLIENTS,
    Reason.CONNECT_TIMEOUT,
    Reason.CLOSED,
    Reason.RESET,
    Reason.HUNG,
    Reason.PHASE_DEADLINE,
    Reason.POOL_TIMEOUT,
)
(
    R_NONE,
    R_DEADLINE,
    R_53300,
    R_CONNECT_TIMEOUT,
    R_CLOSED,
    R_RESET,
    R_HUNG,
    R_PHASE_DEADLINE,
    R_POOL_TIMEOUT,
) = range(len(MODEL_REASONS))
# A request's outcome (traffic after ready), as codes: places in RequestOutcome. A request still
# waiting is UNFINISHED, which it stays if the run ends so.
REQUEST_OUTCOMES = tuple(RequestOutcome)
SERVED, FAILED, UNROUTED, WARM, UNFINISHED = _places(
    REQUEST_OUTCOMES,
    (
        RequestOutcome.SERVED,
        RequestOutcome.FAILED,
        RequestOutcome.UNROUTED,
        RequestOutcome.WARM,
        RequestOutcome.UNFINISHED,
    ),
)
# Connection states, as in sim.engine; EGRESS: the engine's QUEUED under Direct VPC egress (the
# connection waits for its attempt's egress, in no connector's queue).
QUEUED, SETUP, ACCEPT, HELD, GONE, FAULTED, EGRESS = range(7)
# Roles of the random streams (MIX: which importance-sampling component a replication runs).
(
    ARRIVAL,
    BEFORE,
    SETUP_S,
    ACCEPT_S,
    QUERIES,
    AFTER,
    SCALE,
    RESTART_U,
    RETRY_U,
    API,
    MIX,
    PATH_FAULT,
    PATH_DELAY,
    PHASE,
    TRAFFIC_ARRIVAL,  # traffic after ready (docs/model.md): the gaps between requests,
    TRAFFIC_PICK,  # which ready instance a request goes to,
    TRAFFIC_QUERY,  # how long it holds its connection
    POOLER_JANITOR,  # a pooler in front of the database: the phase of PgBouncer's janitor
    EGRESS_READY,  # Direct VPC egress: when an attempt's egress is usable
    BREAKER_JITTER,  # circuit breakers: the jitter of a wait for an open breaker
) = range(20)
N_ROLES = len(ROLES)
if N_ROLES != BREAKER_JITTER + 1:  # pragma: no cover - a role added to sim.streams fails at import
    raise ValueError(f"sim.streams has {N_ROLES} roles, the fast engine's layout names 20")
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
FAULTS = get_args(PathFaults.model_fields["fault"].annotation)
FAULT_NONE, FAULT_CLOSED, FAULT_RESET, FAULT_HUNG = _places(
    FAULTS, ("none", "closed", "reset", "hung")
)
GROWTHS = get_args(Pool.model_fields["growth"].annotation)
PER_WAITER, GROWTH_BACKGROUND = _places(GROWTHS, ("per_waiter", "background"))
# Traffic after ready: off, or where the requests come from.
TRAFFIC_OFF, TRAFFIC_FLEET, TRAFFIC_INSTANCE, TRAFFIC_TRACE = range(4)
# A connection of a ready instance's pool (traffic on) has this in C_AWAITED: database init never
# waits for it (the instance is out of init for good, so every test of "awaited" fails as for 0).
IN_READY_POOL = 2
# Whom a connection of a ready pool opens for (its owner; a request's own is the request's record).
OWNER_NONE, OWNER_FILLER = -1, -2
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
    E_PATH_FAILED,
    E_PHASES,  # start-up phases (docs/model.md): after before_db_s, the first phase
    E_PHASE_DEADLINE,
    E_PHASE_DONE,
    E_PHASE_RETRY,
    # Traffic after ready (docs/model.md): only with [traffic] on.
    E_READY,  # the engine's became_ready (without traffic the ready time is only noted)
    E_FLEET_ARRIVAL,  # a request of the fleet's Poisson stream
    E_INSTANCE_ARRIVAL,  # a request of one ready instance's own stream
    E_TRACE,  # a request of the recorded trace (the engine's route)
    E_QUERY_DONE,  # a request gives its connection back
    E_CHECKOUT_TIMEOUT,  # a queued request's pool.timeout_s
    E_FILLER_RESUME,  # the background filler's pause is over
    E_EGRESS,  # Direct VPC egress (docs/model.md): the engine's direct_egress, when it is usable
    E_OLD_GONE,  # a roll-out (docs/model.md): old instances' slots free, old_linger_s after
) = range(26)
# An event's key is its sequence number × E_SPAN + its type: room for E_SPAN types (16 were too
# few once path faults and start-up phases both came).
E_SPAN = 32
E_LAST = E_OLD_GONE
if E_LAST >= E_SPAN:  # pragma: no cover - a new event type past the room fails at import
    raise ValueError(f"{E_LAST + 1} event types do not fit in keys of span {E_SPAN}")
# The two rings of events due a constant time after they are scheduled.
DEADLINES, CONN_TIMEOUTS = range(2)
# Overflow codes: which buffer to grow.
OK, FULL_HEAP, FULL_CONNS, FULL_QUEUE, FULL_RECORDS, FULL_RING, FULL_REQUESTS = range(7)

# -- the int64 array m -----------------------------------------------------------------------------
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
    I_PATH_FAULT,  # path.fault, as a place in its Literal (FAULT_NONE: off)
    I_WARM_HELD,  # slots held from t = 0: the warm instances', or a roll-out's old ones'
    I_TRAFFIC,  # traffic after ready: TRAFFIC_OFF, or where the requests come from
    I_GROWTH,  # pool.growth, as a place in its Literal
    I_MAX_SIZE,  # pool.max_size
    I_WARM,  # fleet.warm_instances (the first candidates of a request's routing)
    I_TRACE_N,  # the trace's requests before the horizon
    I_DIRECT,  # Direct VPC egress (docs/model.md): no connector
    I_ADDRESSED,  # the instances that start: those the subnet's addresses allow (all without it)
) = range(32)
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
    S_READY_N,  # traffic: instances in the routing's ready order so far
    S_REQ_N,  # traffic: request records so far (they accumulate over a block's replications)
    S_TRAFFIC_CONNS,  # traffic: connections traffic opened
    S_RING_HEAD,  # where each ring's first entry is (two slots)
) = range(32, 55)
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
    L_PHASES,  # how many start-up phases (0: none)
    L_PHASE_I,  # phase ints: NPH per phase
    L_PHASE_X,  # phase floats: NPX per phase
    L_TRAFFIC,  # traffic: each instance's pool after ready, NT ints per instance
    L_READY_ORDER,  # traffic: the instances in the order they became ready
    L_OWNER,  # traffic: per connection slot, whom a ready pool's connection opens for
    L_REQ_I,  # traffic: request records, NQ ints each
    L_REQ_F,  # traffic: request records, NQF floats each
    L_REQ_CAP,
    L_TRACE,  # traffic: the trace's times before the horizon (in x)
    L_ROLLOUT,  # a roll-out (docs/model.md): its controller, NRO ints
) = range(M_KB + N_ROLES, M_KB + N_ROLES + 31)
M_INST = L_ROLLOUT + 1  # instance ints: NI per instance
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
    A_PHASE_I,  # the current start-up phase's place
    A_PHASE_RUN,  # runs of phases so far (stale phase events compare against it)
    A_BEFORE_INIT,  # in the phases before database init
) = range(14)
NI = 14
# Phase ints and floats: NPH and NPX per phase (docs/model.md, "Start-up phases").
(
    PH_DB_INIT,
    PH_CONNS,
    PH_CONCURRENT,
    PH_POOL,
    PH_KEEP,
    PH_CONTINUE,
    PH_JITTER,
    PH_KIND,
    PH_VLO,
    PH_VHI,
    PH_HAS_DEADLINE,
) = range(11)
NPH = 11
PX_DEADLINE, PX_A, PX_B, PX_RETRY, PX_JITTER = range(5)
NPX = 5
# A roll-out's controller (sim.rollout's RolloutState; docs/model.md, "A roll-out"): its kind (a
# place in rollout.kind's Literal), R, the old instances at t = 0 (O), the surge and unavailable
# in pods, the slots each old instance holds, Cloud Run's steps (how many, and where in x: the
# old_linger_s, then the steps); then its state: old instances left, new ones created and ready.
ROLLOUT_KINDS = get_args(Rollout.model_fields["kind"].annotation)
RO_NONE, RO_KUBERNETES, RO_CLOUD_RUN = _places(ROLLOUT_KINDS, ("none", "kubernetes", "cloud_run"))
(
    RO_KIND,
    RO_REPLICAS,
    RO_INITIAL,
    RO_SURGE,
    RO_UNAVAILABLE,
    RO_SLOTS,
    RO_STEPS_N,
    RO_X,
    RO_OLD,
    RO_CREATED,
    RO_READY,
) = range(11)
NRO = 11
# Calendar nodes: the event's time (its float's bits, so that the whole event is read at once
# from one place), key, arguments, and the next node of its bucket.
N_TIME, N_KEY, N_A, N_B, N_NEXT = range(5)
NN = 5
# Connection ints: NC per connection slot.
C_INST, C_POOL, C_STATE, C_AWAITED, C_GEN, C_NEXT, C_PREV, C_RUN = range(8)
NC = 8
# Attempt records: ints and floats.
(
    R_REP,
    R_INSTANCE,
    R_ATTEMPT,
    R_OUTCOME,
    R_REASON,
    R_HELD,
    R_CONN_ATTEMPTS,
    R_POOL_STARTS,
    R_PHASE,  # 0: none ("" in the records), else 1 + the phase's place in startup.phases
) = range(9)
NR = 9
R_START, R_INIT_START, R_INIT_S, R_READY, R_PHASE_START = range(5)
NRF = 5
# A ready instance's pool after ready (sim.checkout's PoolState): connections idle, checked out
# and opening; requests queued (a first-in first-out list through Q_NEXT; one that timed out
# stays in it, skipped when it comes first); the filler, and its next pause (a float's bits).
(
    T_IDLE,
    T_BUSY,
    T_OPENING,
    T_QUEUED,
    T_QHEAD,
    T_QTAIL,
    T_FILLING,
    T_BACKOFF,
) = range(8)
NT = 8
# Request records: ints and floats (wait_s is checkout_s − arrive_s, computed when read).
Q_REP, Q_INST, Q_OUTCOME, Q_REASON, Q_NEXT, Q_OWN = range(6)
NQ = 6
Q_ARRIVE, Q_READY, Q_CHECKOUT = range(3)
NQF = 3

# -- the float64 array x ---------------------------------------------------------------------------
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
    F_P_FAULT,  # path.p_fault
    F_PATH_FROM,  # path.from_s
    F_PATH_UNTIL,  # path.until_s, inf for no end
    F_POOL_TIMEOUT,  # pool.timeout_s (traffic after ready)
) = range(18)
T_NOW, T_VSUM = 18, 19  # T_VSUM: the sum of the tilted draws' uniforms
F_THETA, F_MIX = 20, 21  # the tilt θ, and the share of replications that run tilted
F_INV_W = 22  # 1 / the calendar's bucket width
X_DIST = 23  # per role: two parameters
DRAW_BLOCK = 32  # draws made at a time per role (not the tilted ones)
X_BLOCKS = X_DIST + 3 * N_ROLES  # per role: a block of draws made ahead, and a block of scratch
X_INST = X_BLOCKS + N_ROLES * 2 * DRAW_BLOCK  # instance floats: NF per instance
# B_EGRESS: Direct VPC egress, when the current attempt's egress is usable.
B_READY, B_ATTEMPT_START, B_INIT_START, B_DEADLINE, B_PHASE_START, B_BOUND, B_EGRESS = range(7)
NF = 7

# The replication row: the records' fleet columns (less the replication number), then the counts
# that summarise a run without records, then the importance sampler's, then traffic's (and its
# requests, counted for the benchmarks).
FLEET = (
    *FLEET_COLUMNS[1:],
    "failed_attempts",
    "first_attempts",
    "first_ready",
    "tilted",
    "tilt_draws",
    "tilt_sum",
    *TRAFFIC_FLEET_COLUMNS,
    "requests",
)
