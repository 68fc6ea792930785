"""Start-up phases for real (docs/model.md, "Start-up phases"): what a container's start attempt
does when its scenario lists ``startup.phases``.

Each phase opens its connections with ``asyncpg.connect`` (one after another, or gathered), or is
the ``[pool]`` section's pool start; then its work, a sleep of a ``duration_s`` draw. Its bound
is an ``asyncio.timeout_at`` at the earlier of its own ``deadline_s`` and the database-init
deadline; a failed phase ends the attempt (exit) or is ignored (``on_failure = "continue"``:
its connections are closed and the next phase starts). A failed connection is opened again after
the phase's ``retry_backoff_s`` (jittered) when the pause ends before the bound. ``keep = false``
closes the phase's connections when it ends.

:class:`PhasedStart` is a part of :class:`loadtests.container.Instance`: it uses the instance's
connections, gauge, pool start and exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from sim.phases import Phase
from sim.records import Outcome, Reason
from sim.scenario import jittered_s

# Outcome of an attempt that ends in a failed phase, by the failure's reason (docs/model.md).
PHASE_OUTCOMES = {Reason.TOO_MANY_CLIENTS: Outcome.REJECTED, Reason.PHASE_DEADLINE: Outcome.TIMEOUT}


class PhaseFailed(Exception):
    """A phase failed with ``reason`` (``fatal``: the target's fault, no retry can help)."""

    def __init__(self, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.fatal = reason, fatal


class PhasedStart:
    """The phases of one start attempt; mixed into :class:`loadtests.container.Instance`."""

    async def _phased_attempt(self, res) -> None:
        """Run the phases after ``before_db_s``; sets the outcome, reason, phase and times."""
        loop = asyncio.get_running_loop()
        startup = self.sc.startup
        deadline = math.inf  # loop time of the database-init deadline, once it has begun
        init_start = None
        self.in_init = True
        try:
            for ph in startup.phases:
                if ph.db_init and init_start is None:
                    init_start = time.time()
                    deadline = loop.time() + startup.db_init_timeout_s
                res.phase, res.phase_start_s = ph.name, time.time() - res.start_unix_s
                own = loop.time() + ph.deadline_s if ph.deadline_s is not None else math.inf
                bound = min(own, deadline)
                failure = await self._bounded_phase(res, ph, bound, own < deadline)
                if failure is None:
                    continue
                if failure.reason == Reason.DEADLINE or ph.on_failure == "exit" or failure.fatal:
                    res.reason = failure.reason
                    res.outcome = (
                        Outcome.ERROR
                        if failure.fatal
                        else PHASE_OUTCOMES.get(failure.reason, Outcome.ERROR)
                    )
                    if failure.reason == Reason.DEADLINE:
                        res.outcome = Outcome.TIMEOUT
                    break
            else:
                res.outcome, res.reason, res.phase = Outcome.READY, "", ""
        finally:
            self.in_init = False
        now = time.time()
        init_start = now if init_start is None else init_start  # it never began: db_init_s 0
        res.before_db_s = init_start - res.start_unix_s
        res.db_init_s = now - init_start
        if res.outcome == Outcome.READY:
            res.phase_start_s = res.before_db_s

    async def _bounded_phase(self, res, ph: Phase, bound: float, own_first: bool):
        """One phase within its bound: None when it ended, else its failure. A failed phase's
        connections, and a finished ``keep = false`` one's, are closed."""
        mine: list = []
        failure = None
        try:
            async with asyncio.timeout_at(None if math.isinf(bound) else bound):
                await self._phase_work(res, ph, bound, mine)
        except TimeoutError:
            failure = PhaseFailed(Reason.PHASE_DEADLINE if own_first else Reason.DEADLINE)
        except PhaseFailed as exc:
            failure = exc
        if failure is not None and ph.pool and self.pool is not None:
            mine += [c for c in self.conns if c.pooled]  # held ones too ("hold"): all go
            self.pool.terminate()
            self.pool = None
        if failure is not None or not ph.keep:
            for con in mine:
                if con in self.conns:
                    await con.close_for_real()
        return failure

    async def _phase_work(self, res, ph: Phase, bound: float, mine: list) -> None:
        if ph.pool:
            await self._pool_phase(res, bound)
        elif ph.order == "concurrent" and ph.connections > 1:
            tasks = [
                asyncio.ensure_future(self._phase_connect(res, ph, bound, mine))
                for _ in range(ph.connections)
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # the first failure fails the phase
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        else:
            for _ in range(ph.connections):
                await self._phase_connect(res, ph, bound, mine)
        await asyncio.sleep(self.draw(ph.duration_s))

    async def _phase_connect(self, res, ph: Phase, bound: float, mine: list):
        """One connection of the phase, opened again after a failure while a retry fits."""
        loop = asyncio.get_running_loop()
        while True:
            res.connection_attempts += 1
            try:
                con = await self._dial()
            except Exception as exc:  # a refusal (53300), a connect timeout, the target's fault
                reason, fatal = self._note_failure(res, exc)
                pause = ph.retry_backoff_s
                if fatal or pause <= 0:
                    raise PhaseFailed(reason, fatal) from None
                if ph.retry_jitter:
                    pause = jittered_s(pause, ph.retry_jitter, float(self.rng.random()))
                if loop.time() + pause >= bound:
                    await asyncio.sleep(3600.0)  # no retry fits: the bound ends the phase
                await asyncio.sleep(pause)
                continue
            self._adopt(con, res)
            mine.append(con)
            return con

    async def _pool_phase(self, res, bound: float) -> None:
        """The pool start as a phase: the pool's retries, against the phase's bound."""
        pool_cfg = self.sc.pool
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._start_pool(res)
                return
            except Exception as exc:
                fatal = self._pool_failed(res, exc)
            backoff = pool_cfg.retry_backoff_s
            if fatal or backoff <= 0:
                raise PhaseFailed(res.reason, fatal)
            if pool_cfg.retry_jitter:
                backoff = jittered_s(backoff, pool_cfg.retry_jitter, float(self.rng.random()))
            await asyncio.sleep(backoff if loop.time() + backoff < bound else 3600.0)

    async def _settle_phased(self) -> None:
        """A ready instance keeps ``held_when_ready`` of what its phases kept: the plain phases'
        connections first, in the order they were opened, then the pool's; the missing ones
        open in the background."""
        want = self.sc.pool.held_when_ready
        plain = [c for c in self.conns if not c.pooled]
        plain.sort(key=lambda c: c.opened_at)
        for con in plain[want:]:
            await con.close_for_real()
        left = want - min(want, len(plain))
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await self._settle_ready(left)
            return
        for _ in range(left):
            task = asyncio.get_running_loop().create_task(self._open_later())
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _open_later(self) -> None:
        with contextlib.suppress(Exception):  # as the model's: not retried, not init's work
            self._adopt(await self._dial(), self.result)
