"""What a database server's own log says, as calibrated values: the accept time and the free slots.

A run read from a PostgreSQL server log (:mod:`sim.calibrate.pglog`) carries its measurements in
``run.server``. Two of them calibrate the scenario where no emulator timed the connections:

- ``database.accept_s``: PostgreSQL 18's ``connection ready: setup total=… ms`` runs from the
  postmaster's ``accept()`` to the backend's first ready-for-query — the server's part of a
  connection, what the emulator's ``accept_s`` (dial to verdict) measures less the network —
  fitted as exact durations like the emulator's sample;
- ``database.max_connections`` (the free slots): when a refusal (53300) was logged, the most
  connections authorised and not yet disconnected at a refusal, as the campaign's estimate takes
  the most connections held when 53300 came.
"""

from __future__ import annotations

from sim.calibrate.connector import Estimate
from sim.calibrate.inputs import Run
from sim.fitting import Sample

SERVER_SETUP = "PostgreSQL log 'connection ready: setup total' (accept() to ready for query)"


def server_accept(runs: list[Run]) -> Sample | None:
    """Every per-connection set-up time of the runs' server logs (s); None without any."""
    values = [s for r in runs if r.server is not None for s in r.server.setup_s]
    return Sample.exact(values) if values else None


def server_slots(runs: list[Run], other: int = 0) -> Estimate | None:
    """The free slots from the server logs; None when no run has one. The log counts every
    client's sessions: ``other`` (the scenario's ``other_connections``) is taken off."""
    logs = [r.server for r in runs if r.server is not None]
    if not logs:
        return None
    field = "database.max_connections"
    refusals = sum(s.refusals for s in logs)
    peak = max(s.peak_held for s in logs)
    if refusals == 0:
        why = (
            f"not identifiable from the server log: no refusal (53300), so only at least {peak} "
            "free slots"
        )
        return Estimate(field, None, float(peak), None, "PostgreSQL log", 0, why, False)
    held = max(s.held_at_refusal or 0 for s in logs) - other
    before = sum(s.before_log for s in logs)
    if held < 1:
        why = (
            f"not identifiable: the log saw at most {held + other} sessions at a refusal, no more "
            f"than the scenario's other_connections ({other}); give a --base whose "
            "other_connections fits this server"
        )
        return Estimate(field, None, None, None, "PostgreSQL log", refusals, why, False)
    quality = (
        f"{refusals} refusals (53300) while at most {held + other} sessions were authorised and "
        f"not yet disconnected ({other} of them other clients'): the threshold is at least "
        f"{held}, and {held} when no other connection was being set up at the refusals"
        + (f"; {before} sessions opened before the log began were not counted" if before else "")
    )
    source = "PostgreSQL log: connection authorized / disconnection / refusals"
    return Estimate(field, held, float(held), None, source, refusals, quality)
