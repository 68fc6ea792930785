"""The fast engine: the model of ``docs/model.md`` compiled with numba, for large runs.

``run_chunk(sc, seed, indices)`` returns the same columns as :func:`sim.runner.run_chunk` with the
readable engine (one row per attempt, one per replication; with ``records=False`` only the
replication rows, whose counts are all the statistics need), from a compiled port of
``sim/engine.py``'s event loop (:mod:`sim.fast.kernel`, with :mod:`sim.fast.layout`,
:mod:`sim.fast.queue` and :mod:`sim.fast.handlers`; with a pooler :mod:`sim.fast.pooler` and
:mod:`sim.fast.pooler_engine`). Replication ``i`` draws from the
counter-based streams of :mod:`sim.streams`, keyed by ``(seed, i)``, compiled
(:mod:`sim.fast.draws`):
the readable engine's numbers, so both engines write the same records for every scenario
(tests/test_engines_agree.py).

The first call compiles the kernel (about two minutes on two cores) and caches it in
``~/.cache/startsim/``; later processes load it in well under a second.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import get_args

import numba
import numpy as np

from sim.distributions import Constant
from sim.phases import connections_of
from sim.records import (
    OUTCOMES,
    REQUEST_COLUMNS,
    TILT_COLUMNS,
    TRAFFIC_FLEET_COLUMNS,
    Outcome,
    Reason,
    RequestOutcome,
)
from sim.rollout import Rollout
from sim.scenario import Fleet, PathFaults, Pool, Restart, Scenario


def _vocabularies() -> bytes:
    """The words whose places the kernel's codes are (sim.records, the scenario's Literals)."""
    literals = (
        (Pool, "start"),
        (Pool, "growth"),
        (Fleet, "arrival"),
        (Restart, "policy"),
        (PathFaults, "fault"),
        (Rollout, "kind"),
    )
    words = (
        tuple(Outcome),
        tuple(Reason),
        tuple(RequestOutcome),
        *(get_args(m.model_fields[f].annotation) for m, f in literals),
    )
    return repr(words).encode()


def kernel_sources() -> list[Path]:
    """The files the compiled kernel is made from: every module of this package but this one
    (a module added to the kernel counts without being listed), and the draws of sim.streams."""
    here = Path(__file__).parent
    return [
        *sorted(p for p in here.glob("*.py") if p.name != "__init__.py"),
        here.parent / "streams.py",
    ]


def _cache_dir() -> str:
    # numba's cache notices a change of the file a function is in, not of the functions it calls
    # from another module, nor of the constants it took from one (the kernel's codes): a folder
    # per version of the sources and vocabularies keeps a stale kernel from loading.
    sources = [path.read_bytes() for path in kernel_sources()]
    digest = hashlib.sha256(b"".join([*sources, _vocabularies()])).hexdigest()[:16]
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return str(Path(root) / "startsim" / f"numba-{digest}")


if not os.environ.get("NUMBA_CACHE_DIR"):
    numba.config.CACHE_DIR = _cache_dir()

from sim.fast import layout as L  # noqa: E402  (after the cache folder is set)
from sim.fast import pooler as P  # noqa: E402
from sim.fast.draws import pack  # noqa: E402
from sim.fast.kernel import run_block  # noqa: E402
from sim.streams import ROLES, Tilt, role_params, seed_base  # noqa: E402 (Tilt: for callers)

# The kernel's codes are places in the vocabularies (sim.records, the scenario's Literals).
OUTCOME_NAMES = np.array([str(o) for o in OUTCOMES])
REASON_NAMES = np.array([str(r) for r in L.MODEL_REASONS])
REQUEST_OUTCOME_NAMES = np.array([str(o) for o in L.REQUEST_OUTCOMES])
POOL_STARTS = L.STARTS
_STARTS = {name: code for code, name in enumerate(L.STARTS)}
_ARRIVALS = {name: code for code, name in enumerate(L.ARRIVALS)}
_POLICIES = {name: code for code, name in enumerate(L.POLICIES)}
_FAULTS = {name: code for code, name in enumerate(L.FAULTS)}
_GROWTHS = {name: code for code, name in enumerate(L.GROWTHS)}


def _jitter(value) -> tuple[int, float]:
    if value == "full":
        return L.J_FULL, 0.0
    return (L.J_FRACTION, float(value)) if value else (L.J_NONE, 0.0)


def _base(seed: int) -> np.uint64:
    """The key every replication's streams are derived from."""
    return np.uint64(seed_base(seed))


class Buffers:
    """The kernel's two arrays for one scenario, and the sizes of their growable regions."""

    def __init__(
        self,
        sc: Scenario,
        seed: int,
        tilt: Tilt | None,
        sizes: dict,
        keep: bool = True,
    ) -> None:
        self.sc, self.seed, self.tilt, self.sizes, self.keep = sc, seed, tilt, sizes, keep
        self.m, self.x = _layout(sc, tilt, sizes, keep)
        self.base = _base(seed)

    def reseeded(self, seed: int) -> Buffers:
        """These buffers, for a run of ``seed`` (each replication resets the state it uses)."""
        self.seed, self.base = seed, _base(seed)
        self.m[L.S_REC_N] = self.m[L.S_REQ_N] = 0
        return self

    def grown(self, code: int) -> Buffers:
        """Twice the room in the region that overflowed, with the records made so far."""
        name = {
            L.FULL_HEAP: "heap",
            L.FULL_CONNS: "conns",
            L.FULL_QUEUE: "queue",
            L.FULL_RING: "rings",
            L.FULL_REQUESTS: "requests",
        }.get(code, "records")
        sizes = {**self.sizes, name: 2 * self.sizes[name]}
        new = Buffers(self.sc, self.seed, self.tilt, sizes, self.keep)
        for count, regions in (
            (L.S_REC_N, ((L.L_REC_I, L.NR, "m"), (L.L_REC_F, L.NRF, "x"))),
            (L.S_REQ_N, ((L.L_REQ_I, L.NQ, "m"), (L.L_REQ_F, L.NQF, "x"))),
        ):
            kept = self.m[count]
            for region, width, arr in regions:
                old, fresh = getattr(self, arr), getattr(new, arr)
                old_at, new_at = self.m[region], new.m[region]
                fresh[new_at : new_at + kept * width] = old[old_at : old_at + kept * width]
            new.m[count] = kept
        return new

    def records(self) -> tuple[np.ndarray, np.ndarray]:
        """The attempt records so far: ints (n × NR) and floats (n × NRF)."""
        n, m, x = self.m[L.S_REC_N], self.m, self.x
        ri = m[m[L.L_REC_I] : m[L.L_REC_I] + n * L.NR].reshape(n, L.NR)
        rf = x[m[L.L_REC_F] : m[L.L_REC_F] + n * L.NRF].reshape(n, L.NRF)
        return ri, rf

    def requests(self) -> tuple[np.ndarray, np.ndarray]:
        """The request records so far (traffic after ready): ints (n × NQ), floats (n × NQF)."""
        n, m, x = self.m[L.S_REQ_N], self.m, self.x
        qi = m[m[L.L_REQ_I] : m[L.L_REQ_I] + n * L.NQ].reshape(n, L.NQ)
        qf = x[m[L.L_REQ_F] : m[L.L_REQ_F] + n * L.NQF].reshape(n, L.NQF)
        return qi, qf


def _layout(sc: Scenario, tilt: Tilt | None, sizes: dict, keep: bool) -> tuple[np.ndarray, ...]:
    pool, cx, db, rs, fleet = sc.pool, sc.connector, sc.database, sc.restart, sc.fleet
    cs = sc.cloudsql
    retry_mode, retry_f = _jitter(pool.retry_jitter)
    restart_mode, restart_f = _jitter(rs.jitter)
    start = pool.start
    n = fleet.instances
    kinds, dist, offsets, values = pack(role_params(sc))
    waves = [w.at_s for w in fleet.waves for _ in range(w.count)] or [0.0]
    phases = sc.startup.phases
    ph_kinds, ph_dist, ph_offsets, ph_values = pack([ph.duration_s for ph in phases] or [_ZERO])
    # Floats: scenario, state, distributions, instances, heap times, ring times, first starts,
    # records, values, waves.
    heap_t = L.X_INST + n * L.NF
    ring_t = heap_t + sizes["heap"] + 1
    arrivals_at = ring_t + 2 * sizes["rings"]
    rec_f = arrivals_at + n
    values_at = rec_f + sizes["records"] * L.NRF
    waves_at = values_at + values.size
    phase_x = waves_at + len(waves)
    phase_values = phase_x + len(phases) * L.NPX
    # Traffic after ready: the request records' floats and the trace's times before the horizon
    # (none without traffic).
    req_f = phase_values + ph_values.size
    trace_at = req_f + sizes["requests"] * L.NQF
    trace = [t for t in sc.traffic.trace_s if t < sc.horizon_s]
    # Circuit breakers (docs/model.md): their settings, and one breaker per instance or the
    # fleet's one (none for none and in_process: their records are no breaker's).
    brk = sc.breaker
    mode = (L.BREAKER_SHARED if brk.shared else L.BREAKER_OWN) if brk.stays_up else L.BREAKER_OFF
    breakers = {L.BREAKER_OFF: 0, L.BREAKER_OWN: n, L.BREAKER_SHARED: 1}[mode]
    rollout_x = trace_at + len(trace)  # a roll-out's old_linger_s and Cloud Run's steps
    breaker_x = rollout_x + 1 + len(sc.rollout.steps)
    pooler_x = breaker_x + L.BX_FIRST + breakers  # a pooler's floats (none without one)
    pb = sc.pooler
    x = np.zeros(pooler_x + (P.NPBX if pb.on else 0))
    x[trace_at:rollout_x] = trace
    x[breaker_x + L.BX_RESET] = brk.reset_timeout_s
    x[breaker_x + L.BX_JITTER], x[breaker_x + L.BX_RETRY] = brk.open_jitter, brk.retry_s
    x[L.F_POOL_TIMEOUT] = pool.timeout_s
    x[L.F_HORIZON], x[L.F_TIMEOUT] = sc.horizon_s, sc.startup.db_init_timeout_s
    x[L.F_END] = sc.horizon_s + sc.startup.db_init_timeout_s
    x[L.F_CONNECT], x[L.F_RETRY] = pool.connect_timeout_s, pool.retry_backoff_s
    x[L.F_RETRY_JITTER], x[L.F_RESTART_JITTER] = retry_f, restart_f
    x[L.F_RESTART_INITIAL], x[L.F_RESTART_MAX] = rs.initial_backoff_s, rs.max_backoff_s
    x[L.F_RESTART_MULT] = rs.multiplier
    x[L.F_RELEASE] = rs.exit_release_s
    x[L.F_CS_INTERVAL] = cs.refresh_interval_s
    x[L.F_WINDOW], x[L.F_RATE] = fleet.window_s, fleet.rate_per_s
    x[L.F_P_FAULT], x[L.F_PATH_FROM] = sc.path.p_fault, sc.path.from_s
    x[L.F_PATH_UNTIL] = sc.path.window_end_s()
    # The calendar's reach: a few times the longest of a start-up's usual steps, in about four
    # buckets per instance (any reach and width give the same order; these keep buckets short).
    buckets = _buckets(n)
    x[L.F_INV_W] = buckets / _reach(sc)
    for role in range(L.N_ROLES):
        x[L.X_DIST + 2 * role : L.X_DIST + 2 * role + 2] = dist[role]
    if tilt is not None:
        x[L.F_THETA], x[L.F_MIX] = tilt.theta, tilt.mix
    x[values_at:waves_at] = values
    x[waves_at:phase_x] = waves
    x[phase_values:req_f] = ph_values
    # Ints: scenario, state, streams, layout, instances, connections, free list, heap, calendar
    # (nodes, buckets, bits), rings, queue, records.
    conn_at = L.M_INST + n * L.NI
    free_at = conn_at + sizes["conns"] * L.NC
    heap_i = free_at + sizes["conns"]
    cal_i = heap_i + 3 * (sizes["heap"] + 1)
    buckets_at = cal_i + L.NN * sizes["heap"]
    bits_at = buckets_at + 2 * buckets
    ring_i = bits_at + buckets // 64 + buckets // 4096
    queue_at = ring_i + 6 * sizes["rings"]
    phase_i = queue_at + 2 * sizes["queue"]
    rec_i = phase_i + len(phases) * L.NPH
    # Traffic after ready (none without it): each instance's pool, the ready order, each
    # connection slot's owner, the request records.
    traffic = sc.traffic.on
    traffic_at = rec_i + sizes["records"] * L.NR
    ready_order = traffic_at + (n * L.NT if traffic else 0)
    owner_at = ready_order + (n if traffic else 0)
    req_i = owner_at + (sizes["conns"] if traffic else 0)
    rollout_at = req_i + sizes["requests"] * L.NQ
    breaker_i = rollout_at + L.NRO
    # A pooler (none without one): its ints, per connection slot and instance, then its stack.
    pooler_at = breaker_i + L.BK_FIRST + breakers * L.NBK
    stack_cap = 8 * sizes["conns"] + 64
    pooler_end = pooler_at
    if pb.on:
        pooler_end += P.NPB + sizes["conns"] * P.NPS + n * P.NPI + 4 * stack_cap
    m = np.zeros(pooler_end, np.int64)
    _rollout(sc, m, x, rollout_at, rollout_x)
    if pb.on:
        _pooler_layout(m, x, pb, pooler_at, pooler_x, sizes["conns"], n, stack_cap)
    m[L.L_BREAKER_I], m[L.L_BREAKER_X] = breaker_i, breaker_x
    m[breaker_i + L.BK_MODE], m[breaker_i + L.BK_FAIL_MAX] = mode, brk.fail_max
    if traffic:
        m[L.I_TRAFFIC] = (
            L.TRAFFIC_FLEET
            if sc.traffic.rate_per_s > 0
            else L.TRAFFIC_INSTANCE
            if sc.traffic.rate_per_instance_per_s > 0
            else L.TRAFFIC_TRACE
        )
    m[L.I_GROWTH], m[L.I_MAX_SIZE] = _GROWTHS[pool.growth], pool.max_size
    m[L.I_WARM], m[L.I_TRACE_N] = fleet.warm_instances, len(trace)
    m[L.L_TRAFFIC], m[L.L_READY_ORDER], m[L.L_OWNER] = traffic_at, ready_order, owner_at
    m[L.L_REQ_I], m[L.L_REQ_F], m[L.L_REQ_CAP] = req_i, req_f, sizes["requests"]
    m[L.L_TRACE] = trace_at
    m[L.I_INSTANCES], m[L.I_MIN_SIZE] = n, pool.min_size
    m[L.I_HELD_WHEN_READY], m[L.I_HOLD] = pool.held_when_ready, pool.on_failure == "hold"
    m[L.I_START], m[L.I_WORKERS] = _STARTS[start], pool.workers
    m[L.I_CX_MIN], m[L.I_CX_MAX] = cx.min_instances, cx.max_instances
    # Direct VPC egress (docs/model.md): no connector (none counted at the end), and only the
    # instances the subnet's addresses allow start, warm ones first.
    egress = sc.egress
    m[L.I_DIRECT] = egress.direct
    m[L.I_ADDRESSED] = egress.instance_bound - fleet.warm_instances if egress.direct else n
    if egress.direct:
        m[L.I_CX_MIN] = 0
    m[L.I_CX_PER], m[L.I_FREE_SLOTS] = cx.setups_per_instance, db.free_slots
    m[L.I_POLICY], m[L.I_RESTARTS] = _POLICIES[rs.policy], rs.restarts_allowed
    m[L.I_RETRY_JITTER], m[L.I_RESTART_JITTER] = retry_mode, restart_mode
    if cs.enabled:
        m[L.I_CLOUDSQL], m[L.I_CS_CALLS] = 1, cs.calls_per_refresh
        m[L.I_CS_QUOTA], m[L.I_CS_BURST] = cs.quota_per_minute, cs.refresh_burst
    m[L.I_ARRIVAL] = _ARRIVALS[fleet.arrival]
    m[L.I_PATH_FAULT] = _FAULTS[sc.path.fault]
    m[L.I_WARM_HELD] = sc.warm_held + sc.rollout_held  # one or the other (sim.scenario)
    m[L.I_KEEP] = keep
    m[L.I_TILT_ROLE] = -1 if tilt is None else ROLES.index(tilt.role)
    m[L.I_TILT_DRAWS] = 0 if tilt is None else tilt.draws
    m[L.I_STRAGGLERS] = (pool.on_failure == "hold" and pool.retry_backoff_s > 0) or (
        _STARTS[start] == L.BACKGROUND
    )
    m[L.M_KIND : L.M_KIND + L.N_ROLES] = kinds
    m[L.M_VOFF : L.M_VOFF + 2 * L.N_ROLES] = (offsets + values_at).ravel()
    m[L.L_CONN], m[L.L_CONN_CAP], m[L.L_FREE] = conn_at, sizes["conns"], free_at
    m[L.L_HEAP_I], m[L.L_HEAP_T], m[L.L_HEAP_CAP] = heap_i, heap_t, sizes["heap"]
    m[L.L_CAL], m[L.L_BUCKETS] = cal_i, buckets_at
    m[L.L_BITS], m[L.L_NB] = bits_at, buckets
    m[L.L_QUEUE], m[L.L_Q_CAP] = queue_at, sizes["queue"]
    m[L.L_REC_I], m[L.L_REC_F], m[L.L_REC_CAP] = rec_i, rec_f, sizes["records"]
    m[L.L_WAVES] = waves_at
    m[L.L_RING_T], m[L.L_RING_I], m[L.L_RING_CAP] = ring_t, ring_i, sizes["rings"]
    m[L.L_ARRIVALS] = arrivals_at
    m[L.L_PHASES], m[L.L_PHASE_I], m[L.L_PHASE_X] = len(phases), phase_i, phase_x
    for j, ph in enumerate(phases):
        pi, px = phase_i + j * L.NPH, phase_x + j * L.NPX
        mode, fraction = _jitter(ph.retry_jitter)
        m[pi + L.PH_DB_INIT], m[pi + L.PH_CONNS] = ph.db_init, ph.connections
        m[pi + L.PH_CONCURRENT], m[pi + L.PH_POOL] = ph.order == "concurrent", ph.pool
        m[pi + L.PH_KEEP], m[pi + L.PH_CONTINUE] = ph.keep, ph.on_failure == "continue"
        m[pi + L.PH_JITTER], m[pi + L.PH_KIND] = mode, ph_kinds[j]
        m[pi + L.PH_VLO : pi + L.PH_VHI + 1] = ph_offsets[j] + phase_values
        m[pi + L.PH_HAS_DEADLINE] = ph.deadline_s is not None
        x[px + L.PX_DEADLINE] = ph.deadline_s or 0.0
        x[px + L.PX_A], x[px + L.PX_B] = ph_dist[j]
        x[px + L.PX_RETRY], x[px + L.PX_JITTER] = ph.retry_backoff_s, fraction
    return m, x


def _rollout(sc: Scenario, m: np.ndarray, x: np.ndarray, at: int, at_x: int) -> None:
    """A roll-out's controller (docs/model.md, "A roll-out"): what RolloutState starts from."""
    ro, n = sc.rollout, sc.fleet.instances
    state = ro.state(n)
    m[L.L_ROLLOUT] = at
    m[at + L.RO_KIND] = L.ROLLOUT_KINDS.index(ro.kind)
    m[at + L.RO_REPLICAS], m[at + L.RO_INITIAL] = n, state.old
    m[at + L.RO_SURGE], m[at + L.RO_UNAVAILABLE] = state.surge, state.unavailable
    m[at + L.RO_SLOTS] = sc.pool.held_when_ready
    m[at + L.RO_STEPS_N], m[at + L.RO_X] = len(ro.steps), at_x
    x[at_x] = ro.old_linger_s
    x[at_x + 1 : at_x + 1 + len(ro.steps)] = ro.steps


_ZERO = Constant(dist="constant", value=0.0)  # pack needs one distribution


def _pooler_layout(m, x, pb, at: int, at_x: int, conns: int, n: int, stack_cap: int) -> None:
    """PgBouncer's settings and the places of its region (sim.fast.pooler)."""
    m[L.L_POOLER], m[L.L_POOLER_X] = at, at_x
    m[at + P.PB_SERVER_BACK] = pb.pool_mode != "session"
    m[at + P.PB_MAX_CLIENT], m[at + P.PB_POOL_SIZE] = pb.max_client_conn, pb.default_pool_size
    reserve_on = pb.reserve_pool_size > 0 and pb.reserve_pool_timeout > 0
    m[at + P.PB_RESERVE] = pb.reserve_pool_size if reserve_on else 0
    m[at + P.PB_MAX_DB] = pb.max_db_connections
    m[at + P.PB_SLOTS] = at + P.NPB
    m[at + P.PB_INSTS] = at + P.NPB + conns * P.NPS
    m[at + P.PB_STACK] = m[at + P.PB_INSTS] + n * P.NPI
    m[at + P.PB_STACK_CAP] = stack_cap
    x[at_x + P.PBX_RESERVE_TIMEOUT] = pb.reserve_pool_timeout
    x[at_x + P.PBX_CONNECT_TIMEOUT] = pb.server_connect_timeout
    x[at_x + P.PBX_LOGIN_RETRY] = pb.server_login_retry
    x[at_x + P.PBX_QUERY_WAIT] = pb.query_wait_timeout


def _buckets(instances: int) -> int:
    """The calendar's buckets: a power of two near four times the fleet, from 4,096 to 262,144
    (on a 10,000-instance burst, four per instance ran 5 % faster than two, 10 % than one)."""
    return min(max(4096, 1 << (4 * instances - 1).bit_length()), 1 << 18)


def _reach(sc: Scenario) -> float:
    """How far ahead the calendar holds events: four times the longest mean of a start-up's steps
    (before the database, a connection's set-up and accept, the queries, a Cloud SQL call, a path
    failure), but at least 2⁻²⁰ of the run, so that bucket numbers stay far from overflowing, and
    at most the run (no event is kept beyond its end; a heavy-tailed step's huge mean would put
    every event in the first few buckets)."""
    steps = [
        sc.startup.before_db_s,
        sc.connector.setup_s,
        sc.database.accept_s,
        sc.startup.init_queries_s,
    ]
    if sc.cloudsql.enabled:
        steps.append(sc.cloudsql.call_s)
    if sc.path.fault in ("closed", "reset"):
        steps.append(sc.path.fail_after_s)
    if sc.egress.direct:
        steps.append(sc.egress.ready_s)
    end = sc.horizon_s + sc.startup.db_init_timeout_s
    return min(max(4.0 * max(d.mean() for d in steps), end / 2**20), end)


def first_sizes(sc: Scenario, replications: int, keep: bool = True) -> dict[str, int]:
    """Room for a typical replication; a larger one grows it (and runs again from scratch, which
    for 100,000 instances costs seconds). Without ``keep`` the records' room holds one
    replication's, reused by the next: every attempt it can make, so it never grows. The rings
    hold every attempt's deadline. Sizes a replication of this fleet size needed before in this
    process are the floor (:data:`_NEEDED`)."""
    n = sc.fleet.instances
    tries = sc.breaker.tries_bound(sc.horizon_s) if sc.breaker.stays_up else 0
    attempts = n * max(sc.restart.restarts_allowed + 1, tries)
    each = connections_of(sc.startup.phases, sc.pool.min_size)
    conns = 2 * n * max(sc.pool.min_size, sc.pool.held_when_ready, each, 1) + 16
    sizes = {
        "conns": conns,
        "heap": conns + n + 64,
        "rings": conns + attempts + 64,
        "queue": conns,
        "records": max(64, (3 * n * replications) if keep else attempts),
        "requests": _request_room(sc, replications if keep else 1),
    }
    needed = _NEEDED.get(n, {})
    return {k: max(v, needed.get(k, 0)) for k, v in sizes.items()}


def _request_room(sc: Scenario, replications: int) -> int:
    """Room for the requests of ``replications`` replications (traffic after ready): those
    expected, six standard deviations more (Poisson counts), and a little; none without
    traffic. A run that needs more grows it."""
    traffic = sc.traffic
    if not traffic.on:
        return 0
    if traffic.trace_s:
        each = sum(t < sc.horizon_s for t in traffic.trace_s)
    else:
        rate = traffic.rate_per_s or traffic.rate_per_instance_per_s * sc.fleet.instances
        each = rate * sc.horizon_s
    expected = each * replications
    return int(expected + 6 * expected**0.5) + 64


# Per fleet size, the room the largest replication run in this process needed (records aside,
# which depend on the replications asked for): the next run starts there instead of growing again.
_NEEDED: dict[int, dict[str, int]] = {}


def run_raw(
    sc: Scenario, seed: int, indices: range, tilt: Tilt | None = None, keep: bool = True
) -> tuple[Buffers, np.ndarray]:
    """Run replications ``indices``: the buffers (with the records if ``keep``) and the fleet
    figures, one row per name of ``layout.FLEET``. Without ``keep`` the buffers go back on the
    shelf: the next run in this process (any thread) may take them over."""
    _say_if_compiling()
    buf = _buffers(sc, seed, tilt, first_sizes(sc, len(indices), keep), keep)
    fleet = np.zeros((len(L.FLEET), len(indices)))
    first = indices.start
    while first < indices.stop:
        first, code = run_block(
            buf.m, buf.x, buf.base, first, indices.stop, fleet, first - indices.start
        )
        if code != L.OK:
            buf = buf.grown(code)
    _shelf.note_needed(sc.fleet.instances, buf.sizes)
    if not keep:
        _shelf.put(buf)
    return buf, fleet


class Shelf:
    """This process's buffers of its last run without records: a run of the same scenario takes
    them over instead of allocating its own. A worker runs a scenario's replications in chunks
    (some twenty for a 10,000-instance burst); fresh buffers for each cost 7 % of the run on a
    burst, in allocating them and in the memory's first touch.

    The threads of a Dask worker share it, and the kernel runs without the GIL: taking and
    putting back hold a lock, so two runs never share buffers (a run that finds the shelf empty
    allocates its own). The room each fleet size needed (:data:`_NEEDED`) is kept under the
    same lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spare: Buffers | None = None

    def take(self, sc: Scenario, tilt: Tilt | None, sizes: dict) -> Buffers | None:
        """The spare buffers if they fit this run, now off the shelf; else None."""
        with self._lock:
            spare = self.spare
            if (
                spare is None
                or spare.tilt != tilt
                or any(spare.sizes[k] < v for k, v in sizes.items())
                or spare.sc != sc
            ):
                return None
            self.spare = None
            return spare

    def put(self, buf: Buffers) -> None:
        with self._lock:
            self.spare = buf

    def note_needed(self, instances: int, sizes: dict) -> None:
        with self._lock:
            seen = _NEEDED.setdefault(instances, {})
            for region, size in sizes.items():
                if region not in ("records", "requests"):
                    seen[region] = max(size, seen.get(region, 0))


_shelf = Shelf()


def _buffers(sc: Scenario, seed: int, tilt: Tilt | None, sizes: dict, keep: bool) -> Buffers:
    spare = None if keep else _shelf.take(sc, tilt, sizes)
    if spare is None:
        return Buffers(sc, seed, tilt, sizes, keep)
    return spare.reseeded(seed)


_checked = False


def _say_if_compiling() -> None:
    """Before this process's first kernel call: when nothing is cached for this version yet, say
    on stderr why the first run waits (else a progress bar sits at 0 % for a couple of minutes)."""
    global _checked
    if _checked:
        return
    _checked = True
    folder = Path(numba.config.CACHE_DIR)
    if not (folder.is_dir() and any(folder.rglob("*.nbi"))):
        print(
            f"startsim: compiling the fast engine, once per version (about 2 minutes); "
            f"cached in {folder}",
            file=sys.stderr,
            flush=True,
        )


_warm = False


def warm() -> None:
    """Load the compiled kernel in this process now (from the cache: under a second), so that
    worker processes forked from it later start with it loaded instead of each loading it."""
    global _warm
    if not _warm:
        run_chunk(Scenario(), 0, range(1), records=False)
        _warm = True


def run_chunk(
    sc: Scenario,
    seed: int,
    indices: range,
    tilt: Tilt | None = None,
    records: bool = True,
    requests: bool = False,
) -> tuple:
    """Replications ``indices`` as columns, like :func:`sim.runner.run_chunk`: ``(attempts,
    fleet)``, attempts None without ``records``; with ``requests``, ``(attempts, fleet,
    requests)``, the requests' columns (None without records). With traffic on the fleet rows
    carry TRAFFIC_FLEET_COLUMNS."""
    buf, fleet = run_raw(sc, seed, indices, tilt, records)
    out = {"replication": np.arange(indices.start, indices.stop)}
    for row, name in enumerate(L.FLEET):
        if name in TILT_COLUMNS and tilt is None:
            continue
        if (name in TRAFFIC_FLEET_COLUMNS and not sc.traffic.on) or name == "requests":
            continue
        floats = name in ("fleet_ready_s", "tilt_sum")
        # Without records these rows are the run's whole memory: counts fit in 32 bits.
        out[name] = fleet[row] if floats else fleet[row].astype(np.int64 if records else np.int32)
    if not records:
        return (None, out, None) if requests else (None, out)
    attempts = _attempt_columns(sc, buf)
    if requests:
        return attempts, out, _request_columns(buf)
    return attempts, out


def _attempt_columns(sc: Scenario, buf: Buffers) -> dict[str, np.ndarray]:
    ri, rf = buf.records()
    phase_names = np.array(["", *(ph.name for ph in sc.startup.phases)])
    return {
        "replication": ri[:, L.R_REP].copy(),
        "instance": ri[:, L.R_INSTANCE].copy(),
        "attempt": ri[:, L.R_ATTEMPT].copy(),
        "start_s": rf[:, L.R_START].copy(),
        "db_init_start_s": rf[:, L.R_INIT_START].copy(),
        "db_init_s": rf[:, L.R_INIT_S].copy(),
        "outcome": OUTCOME_NAMES[ri[:, L.R_OUTCOME]],
        "reason": REASON_NAMES[ri[:, L.R_REASON]],
        "connections_held": ri[:, L.R_HELD].copy(),
        "connection_attempts": ri[:, L.R_CONN_ATTEMPTS].copy(),
        "pool_starts": ri[:, L.R_POOL_STARTS].copy(),
        "ready_s": rf[:, L.R_READY].copy(),
        "phase": phase_names[ri[:, L.R_PHASE]],
        "phase_start_s": rf[:, L.R_PHASE_START].copy(),
    }


def _request_columns(buf: Buffers) -> dict[str, np.ndarray]:
    """The requests' records (docs/model.md, "Traffic after ready"): ``replication`` and
    REQUEST_COLUMNS, in arrival order within each replication."""
    qi, qf = buf.requests()
    columns = {
        "replication": qi[:, L.Q_REP].copy(),
        "instance": qi[:, L.Q_INST].copy(),
        "arrive_s": qf[:, L.Q_ARRIVE].copy(),
        "ready_s": qf[:, L.Q_READY].copy(),
        "checkout_s": qf[:, L.Q_CHECKOUT].copy(),
        "wait_s": qf[:, L.Q_CHECKOUT] - qf[:, L.Q_ARRIVE],
        "outcome": REQUEST_OUTCOME_NAMES[qi[:, L.Q_OUTCOME]],
        "reason": REASON_NAMES[qi[:, L.Q_REASON]],
    }
    return {k: columns[k] for k in ("replication", *REQUEST_COLUMNS)}


def replication(sc: Scenario, seed: int, index: int, tilt: Tilt | None = None) -> tuple:
    """One replication, everything the kernel knows of it: its attempts' columns, every row of
    ``layout.FLEET`` (traffic's included, even off), its requests' columns."""
    buf, fleet = run_raw(sc, seed, range(index, index + 1), tilt, True)
    rows = {name: fleet[row][0] for row, name in enumerate(L.FLEET)}
    return _attempt_columns(sc, buf), rows, _request_columns(buf)
