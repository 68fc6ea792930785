"""The connector emulator: an asyncio TCP proxy with the model's connector semantics.

Each new client connection is a set-up. The connector carries ``setups_per_instance × instances``
set-ups at once; the rest wait in a FIFO queue. While set-ups wait, one scale-out at a time starts
and adds an instance after a ``scale_up_delay_s`` draw, up to ``max_instances``; it never scales in
(facts: Serverless VPC Access doc). A set-up holds its place for a ``setup_s`` draw, then the proxy
dials the upstream and relays bytes untouched. Every change of the instance count is logged as a
JSON line, so a campaign's connector can be compared with the simulated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from pathlib import Path
from typing import IO

import numpy as np

from sim.scenario import Connector

RELAY_CHUNK = 256 * 1024


class ConnectorModel:
    """Capacity, FIFO queue and scale-outs; ``await setup()`` is one set-up from queue to done."""

    def __init__(self, cx: Connector, rng: np.random.Generator, log: IO[str] | None = None):
        self.cx, self.rng, self.log = cx, rng, log
        self.instances = cx.min_instances
        self.busy = 0
        self.queue: deque[asyncio.Future] = deque()
        self.scaling = False
        self.t0 = time.monotonic()
        self.setups = 0
        self._note("start")

    @property
    def capacity(self) -> int:
        return self.cx.setups_per_instance * self.instances

    def _draw(self, dist) -> float:
        return float(dist.sample(self.rng, 1)[0])

    def _note(self, event: str) -> None:
        if self.log is None:
            return
        line = {
            "t_s": round(time.monotonic() - self.t0, 3),
            "t_unix_s": round(time.time(), 3),
            "event": event,
            "instances": self.instances,
            "busy": self.busy,
            "queued": len(self.queue),
            "setups": self.setups,
        }
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()

    async def setup(self) -> None:
        """Wait for a place (FIFO), hold it for a ``setup_s`` draw, give it back."""
        if self.busy < self.capacity and not self.queue:
            self.busy += 1
        else:
            fut = asyncio.get_running_loop().create_future()
            self.queue.append(fut)
            self._maybe_scale()
            try:
                await fut  # the place is handed over already counted in ``busy``
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._give_back()
                else:
                    self.queue.remove(fut)
                raise
        try:
            await asyncio.sleep(self._draw(self.cx.setup_s))
        finally:
            self.setups += 1
            self._give_back()

    def _give_back(self) -> None:
        self.busy -= 1
        self._serve()

    def _serve(self) -> None:
        while self.queue and self.busy < self.capacity:
            fut = self.queue.popleft()
            if not fut.done():
                self.busy += 1
                fut.set_result(None)

    def _maybe_scale(self) -> None:
        if self.queue and not self.scaling and self.instances < self.cx.max_instances:
            self.scaling = True
            asyncio.get_running_loop().create_task(self._scale_out())

    async def _scale_out(self) -> None:
        await asyncio.sleep(self._draw(self.cx.scale_up_delay_s))
        self.instances += 1
        self.scaling = False
        self._note("scale_out")
        self._serve()
        self._maybe_scale()


class Emulator:
    """The proxy: ``await serve()`` listens until cancelled."""

    def __init__(
        self,
        cx: Connector,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        seed: int = 0,
        log_path: Path | None = None,
    ) -> None:
        self.listen, self.upstream = listen, upstream
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
        self.model = ConnectorModel(cx, rng, self._log)
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, *self.listen, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve(self) -> None:
        if self._server is None:
            await self.start()
        try:
            await self._server.serve_forever()
        finally:
            await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._log is not None:
            self.model._note("stop")
            self._log.close()
            self._log = self.model.log = None

    async def _client(self, c_reader, c_writer) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._setup_and_relay(c_reader, c_writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            c_writer.close()

    async def _setup_and_relay(self, c_reader, c_writer) -> None:
        # Keep reading while the set-up waits: what the client sends (PostgreSQL clients speak
        # first) is kept for the upstream, and a client that gives up leaves the queue at once.
        early = bytearray()

        async def collect() -> None:
            while data := await c_reader.read(RELAY_CHUNK):
                early.extend(data)

        collector = asyncio.ensure_future(collect())
        setup = asyncio.ensure_future(self.model.setup())
        try:
            done, _ = await asyncio.wait({setup, collector}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (setup, collector):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(setup, collector, return_exceptions=True)
        if setup not in done or setup.cancelled() or setup.exception() is not None:
            return  # the client went away during set-up
        u_reader, u_writer = await asyncio.open_connection(*self.upstream)
        try:
            if early:
                u_writer.write(bytes(early))
            await asyncio.gather(_pump(c_reader, u_writer), _pump(u_reader, c_writer))
        finally:
            u_writer.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


async def run(emulator: Emulator, ready=None) -> None:
    """Serve until cancelled; ``ready(port)`` is called once the socket listens."""
    await emulator.start()
    if ready is not None:
        ready(emulator.port)
    await emulator.serve()
