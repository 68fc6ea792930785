"""The connector emulator: an asyncio TCP proxy with the model's connector semantics.

Each new client connection is a set-up. The rules (capacity, FIFO queue, one scale-out at a time,
never a scale-in) are not written here: they are ``sim.connector.ConnectorState``, the object the
readable engine drives too; this module drives it from asyncio, with its own timers and draws
(``setup_s``, ``scale_up_delay_s``). A set-up holds its place for a ``setup_s`` draw, then
the proxy dials the upstream and relays bytes untouched. Every change of the instance count is
logged as a JSON line, so a campaign's connector can be compared with the simulated one.

Each relayed connection is logged too (event ``connection``): how long it queued, its set-up, and
the server's accept: from the upstream dial to the first ReadyForQuery (or the ErrorResponse that
refused it), read from the first few PostgreSQL messages the server sends. After that verdict the
proxy stops looking at the bytes.

With a scenario's ``[path]`` fault on (docs/model.md, "Path faults"), the proxy fails a share of
the connections it accepts instead (:mod:`loadtests.faults` decides which): ``closed`` closes the
client's socket gracefully after a ``fail_after_s`` draw, ``reset`` aborts it with SO_LINGER 0 (an
RST), ``hung`` never answers. A faulted connection never takes a set-up place nor dials the server,
and its ``connection`` line carries the fault as its stage.

With a scenario's ``[egress] kind = "direct"`` (docs/model.md, "Direct VPC egress") there is no
connector: no place, no queue, no scale-out. Each client instance's egress becomes usable one
``egress.ready_s`` draw after that instance's start; a connection opened before then is held (its
bytes kept) until then, and dialled straight after. The emulator tells instances apart by the
``application_name`` of their start-up message (one name per start attempt, e.g.
``startsim-loadtest/3/1``) and takes the start from a ``@<unix seconds>`` suffix of that name
(``startsim-loadtest/3/1@1795960923.86``), else from the instance's first connection it sees.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, get_args

import numpy as np

from loadtests.faults import PathFaultInjector
from sim.connector import ConnectorState
from sim.egress import Egress
from sim.scenario import Connector, PathFaults


class ConnectorModel:
    """The connector's rules (:class:`sim.connector.ConnectorState`, the engine's too) driven by
    asyncio: ``await setup()`` is one set-up from queue to done, with the emulator's own timers
    and draws for the set-up times and scale-up delays, and its log."""

    def __init__(self, cx: Connector, rng: np.random.Generator, log: IO[str] | None = None):
        self.cx, self.rng, self.log = cx, rng, log
        self.state = ConnectorState(cx)
        self.t0 = time.monotonic()
        self.setups = 0
        self._scale_out: asyncio.Task | None = None  # kept: the loop holds tasks weakly

    def _draw(self, dist) -> float:
        return float(dist.sample(self.rng, 1)[0])

    def note(self, event: str) -> None:
        if self.log is None:
            return
        line = {
            "t_s": round(time.monotonic() - self.t0, 3),
            "t_unix_s": round(time.time(), 3),
            "event": event,
            "instances": self.state.instances,
            "busy": self.state.in_setup,
            "queued": self.state.queued,
            "setups": self.setups,
        }
        self._write(line)

    def note_connection(self, conn: Connection) -> None:
        if self.log is not None:
            now = time.monotonic()
            head = {"t_s": round(now - self.t0, 3), "t_unix_s": round(time.time(), 3)}
            self._write({**head, "event": "connection", **conn.fields(now)})

    def _write(self, line: dict) -> None:
        self.log.write(json.dumps(line) + "\n")
        self.log.flush()

    async def setup(self, conn: Connection | None = None) -> None:
        """Wait for a place (FIFO), hold it for a ``setup_s`` draw, give it back; ``conn`` (if
        given) gets the times its place was held and its set-up ended. Cancelled, it gives up
        its place or leaves the queue."""
        place = asyncio.get_running_loop().create_future()  # this set-up, to the connector
        if not self.state.request(place):
            self._maybe_scale()
            try:
                await place  # done when the connector lets it through
            except asyncio.CancelledError:
                self._start(self.state.give_up((place,)))
                raise
        if conn is not None:
            conn.placed = time.monotonic()
        try:
            await asyncio.sleep(self._draw(self.cx.setup_s))
        except asyncio.CancelledError:
            self.setups += 1
            self._start(self.state.give_up((place,)))
            raise
        self.setups += 1
        self._start(self.state.setup_done(place))
        if conn is not None:
            conn.set_up = time.monotonic()

    def _start(self, places: list[asyncio.Future]) -> None:
        """Wake the set-ups the connector let through. One whose client hung up in this loop step
        (its future cancelled, its handler not run yet) gives its place back at once."""
        places = list(places)
        while places:
            place = places.pop(0)
            if place.done():
                places += self.state.give_up((place,))
            else:
                place.set_result(None)

    def _maybe_scale(self) -> None:
        if self.state.begin_scale_out():
            delay_s = self._draw(self.cx.scale_up_delay_s)
            self._scale_out = asyncio.get_running_loop().create_task(self._join_after(delay_s))

    async def _join_after(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._start(self.state.instance_joined())
        self.note("scale_out")  # after the join served the queue: "queued" are still waiting
        self._maybe_scale()


class DirectEgress:
    """Direct VPC egress's rule for the emulator: when each client instance's egress is usable
    (``time.monotonic()``), one ``ready_s`` draw per instance, from its start."""

    def __init__(self, egress: Egress, rng: np.random.Generator) -> None:
        self.egress, self.rng = egress, rng
        self.ready_at: dict[str, float] = {}

    def usable_at(self, name: str, now: float) -> float:
        """When instance ``name``'s egress is usable: its start (``name``'s ``@`` suffix, unix
        seconds, else ``now``, its first connection) plus its draw, made once."""
        key, _, stamp = name.rpartition("@") if "@" in name else (name, "", "")
        if key not in self.ready_at:
            start = now
            try:
                start = now - max(0.0, time.time() - float(stamp)) if stamp else now
            except ValueError:
                key = name  # not a time: the whole name is the instance's
            delay_s = float(self.egress.ready_s.sample(self.rng, 1)[0])
            self.ready_at[key] = start + delay_s
        return self.ready_at[key]


def application_name(first: bytes) -> str | None:
    """The ``application_name`` of a complete StartupMessage (``""`` without one), or None while
    it is incomplete; ``""`` for any other first message (an SSL or GSS request, a cancel): then
    the name cannot be seen."""
    if len(first) < 8:
        return None
    length, code = int.from_bytes(first[:4], "big"), int.from_bytes(first[4:8], "big")
    if code != STARTUP_V3:
        return ""
    if len(first) < length:
        return None
    parts = bytes(first[8:length]).split(b"\0")
    for key, value in zip(parts[::2], parts[1::2], strict=False):
        if key == b"application_name":
            return value.decode("utf-8", "replace")
    return ""


# The client's first message: int32 length, int32 code (PostgreSQL protocol, "Message Formats").
STARTUP_V3, SSL_REQUEST, GSSENC_REQUEST = 196608, 80877103, 80877104
WATCH_LIMIT = 65536  # bytes of the server's start-up looked at, at most: then we stop looking
# A faulted connection's stage: the fault injected (the scenario's choices but "none").
PATH_FAULTS = tuple(f for f in get_args(PathFaults.model_fields["fault"].annotation) if f != "none")


@dataclass
class Connection:
    """One client connection's times (``time.monotonic()``) and the last stage it reached:
    ``queued``, ``setup``, ``accept`` (waiting for the server's verdict), ``ready``
    (ReadyForQuery), ``rejected`` (an ErrorResponse, with its SQLSTATE), ``encrypted`` (TLS or
    GSS: the verdict cannot be seen), ``other`` (a cancel request, or bytes that are not the
    protocol), ``refused`` (the upstream dial failed), or the path fault injected: ``closed``,
    ``reset``, ``hung``. Durations of a stage left unfinished run to the moment it ended: "at
    least"."""

    opened: float
    placed: float | None = None
    set_up: float | None = None
    ended: float | None = None  # the server's verdict
    verdict: str = ""  # ready, rejected, encrypted, other or refused; "" until there is one
    sqlstate: str = ""
    logged: bool = False

    @property
    def stage(self) -> str:
        if self.verdict:
            return self.verdict
        return "queued" if self.placed is None else "setup" if self.set_up is None else "accept"

    def fields(self, now: float) -> dict:
        if self.verdict in PATH_FAULTS:  # no place, no set-up, no server: only how long it took
            failed_s = round((self.ended or now) - self.opened, 4)
            none = {"queued_s": None, "setup_s": None, "accept_s": None}
            return {"stage": self.verdict, **none, "fault_s": failed_s}
        marks = [m for m in (self.opened, self.placed, self.set_up, self.ended) if m is not None]
        spans = [round(b - a, 4) for a, b in itertools.pairwise([*marks, now])]
        queued, setup, accept = [*spans, None, None, None][:3]
        if self.stage not in ("accept", "ready", "rejected"):
            accept = None
        out = {"stage": self.stage, "queued_s": queued, "setup_s": setup, "accept_s": accept}
        return {**out, "sqlstate": self.sqlstate} if self.sqlstate else out


class StartupWatch:
    """Finds the server's verdict in the first bytes it sends: walks message headers (a type byte
    and an int32 length that counts itself) to the first ReadyForQuery ``Z`` or ErrorResponse
    ``E``. The client's first message says whether a one-byte answer (SSL/GSS request) comes
    first."""

    def __init__(self) -> None:
        self.client_head = bytearray()
        self.buf = bytearray()
        self.answer_pending: bool | None = None  # unknown until the client's first 8 bytes

    def client_sent(self, data: bytes) -> str | None:
        """Feed the client's bytes until its first message is known; a stage if it ends the
        watch (``other``: not a start-up; ``encrypted``: TLS sent at once)."""
        if self.answer_pending is not None:
            return None
        self.client_head += data[: 8 - len(self.client_head)]
        if self.client_head[:1] == b"\x16":
            return "encrypted"  # a TLS ClientHello at once (direct SSL negotiation)
        if len(self.client_head) < 8:
            return None
        code = int.from_bytes(self.client_head[4:8], "big")
        self.answer_pending = code in (SSL_REQUEST, GSSENC_REQUEST)
        return None if code in (STARTUP_V3, SSL_REQUEST, GSSENC_REQUEST) else "other"

    def server_sent(self, data: bytes) -> tuple[str, str] | None:
        """Feed the server's bytes; ``(stage, sqlstate)`` once the verdict is in them."""
        self.buf += data
        while True:
            if self.answer_pending:
                if not self.buf:
                    return None
                answer = self.buf[0]
                del self.buf[:1]
                if answer != ord("N"):
                    return "encrypted", ""
                self.answer_pending = False
                continue
            if len(self.buf) < 5:
                return None
            kind, length = self.buf[0], int.from_bytes(self.buf[1:5], "big")
            if kind == ord("Z"):
                return "ready", ""
            if len(self.buf) > WATCH_LIMIT or length < 4:
                return "other", ""
            if len(self.buf) < 1 + length:
                return None
            if kind == ord("E"):
                return "rejected", _sqlstate(bytes(self.buf[5 : 1 + length]))
            del self.buf[: 1 + length]


def _sqlstate(body: bytes) -> str:
    """The ``C`` field of an ErrorResponse body (code byte, C string, …, a final 0)."""
    for part in body.split(b"\0"):
        if part[:1] == b"C":
            return part[1:].decode("ascii", "replace")
    return ""


class Emulator:
    """The proxy: ``await serve()`` listens until cancelled.

    Relaying uses asyncio protocols, not streams: each chunk received is written straight to the
    other side's transport, with reading paused while that side's buffer is full. That keeps the
    proxy out of the way of the bytes (``benchmarks/loadtest_bench.py`` measures what it adds).
    """

    def __init__(
        self,
        cx: Connector,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        seed: int = 0,
        log_path: Path | None = None,
        log_stream: IO[str] | None = None,
        path: PathFaults | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.listen, self.upstream = listen, upstream
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
        self._owns_log = self._log is not None
        self._log = self._log or log_stream
        seeds = np.random.SeedSequence(seed)
        rng = np.random.Generator(np.random.PCG64(seeds))
        self.model = ConnectorModel(cx, rng, self._log)
        # The path's faults draw from a generator of their own (the campaign seed's child), so
        # switching them on leaves the connector's draws where they were.
        fault_rng = np.random.Generator(np.random.PCG64(seeds.spawn(1)[0]))
        self.faults = PathFaultInjector(path or PathFaults(), fault_rng, self.model.t0)
        # Direct VPC egress: its draws from a generator of their own too (the seed's next child).
        direct = egress is not None and egress.direct
        egress_rng = np.random.Generator(np.random.PCG64(seeds.spawn(1)[0]))
        self.direct = DirectEgress(egress, egress_rng) if direct else None
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self.clients: set[_Client] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self), *self.listen, backlog=4096)
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
        for client in list(self.clients):
            client.abort()
            client.log_once()  # before the log closes; its close comes a loop step later
        if self._log is not None:
            self.model.note("stop")
            if self._owns_log:
                self._log.close()
            self._log = self.model.log = None


class _Relay(asyncio.Protocol):
    """Bytes from one transport to its peer, with back-pressure both ways."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True  # keep our own sending side open until the peer closes it

    def connection_lost(self, exc) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()


class _Upstream(_Relay):
    """The server's side: bytes go to the client; the first ones also to the client's watch."""

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)
        if self.client.watch is not None:
            self.client.server_sent(data)


class _Client(_Relay):
    """A client connection: queued for a set-up, then relayed to a fresh upstream connection.

    Until the upstream is there, what the client sends (PostgreSQL clients speak first) is kept;
    a client that hangs up during its set-up leaves the queue at once. Its times are logged once:
    at the server's verdict, or when it closes before one.
    """

    def __init__(self, emulator: Emulator) -> None:
        super().__init__()
        self.emulator = emulator
        self.early = bytearray()
        self.task: asyncio.Task | None = None
        self.conn = Connection(time.monotonic())
        self.watch: StartupWatch | None = StartupWatch()
        self.hello = asyncio.Event()  # Direct VPC egress: the client's first message is in

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.emulator.clients.add(self)
        self.task = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.watch is not None and self.watch.answer_pending is None:
            stage = self.watch.client_sent(data)
            if stage is not None:  # nothing to watch: logged when it closes
                self.watch, self.conn.verdict = None, stage
        if self.peer is None:
            self.early.extend(data)
            if application_name(self.early) is not None:
                self.hello.set()
        else:
            self.peer.transport.write(data)

    def server_sent(self, data: bytes) -> None:
        verdict = self.watch.server_sent(data)
        if verdict is not None:
            self._verdict(*verdict)

    def _verdict(self, stage: str, sqlstate: str = "") -> None:
        self.watch = None  # from here on the bytes are only relayed
        self.conn.ended = time.monotonic()
        self.conn.verdict, self.conn.sqlstate = stage, sqlstate
        if stage != "encrypted":  # an encrypted one is logged when it closes
            self.log_once()

    def log_once(self) -> None:
        if not self.conn.logged:
            self.conn.logged = True
            self.emulator.model.note_connection(self.conn)

    def eof_received(self) -> bool:
        if self.peer is None:
            self.abort()  # gone during set-up: the set-up is cancelled
            return False
        return super().eof_received()

    def connection_lost(self, exc) -> None:
        self.emulator.clients.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.log_once()
        super().connection_lost(exc)

    def abort(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.transport.close()

    async def _connect(self) -> None:
        conn = self.conn
        fault = self.emulator.faults.fault(conn.opened)
        if fault is not None:
            await self._fail(fault)
            return
        try:
            if self.emulator.direct is not None:
                await self._egress_ready()
            else:
                await self.emulator.model.setup(conn)
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(
                lambda: _Upstream(self), *self.emulator.upstream
            )
        except OSError:
            conn.verdict, conn.ended = "refused", time.monotonic()
            self.transport.close()
            return
        if self.transport.is_closing():
            upstream.transport.close()
            return
        upstream.peer, self.peer = self, upstream
        if self.early:
            upstream.transport.write(bytes(self.early))
            self.early.clear()

    async def _egress_ready(self) -> None:
        """Direct VPC egress: hold the connection until its instance's egress is usable (its
        ``queued_s``; no set-up)."""
        await self.hello.wait()
        name = application_name(self.early) or ""
        now = time.monotonic()
        await asyncio.sleep(max(0.0, self.emulator.direct.usable_at(name, now) - now))
        self.conn.placed = self.conn.set_up = time.monotonic()

    async def _fail(self, fault: str) -> None:
        """The path fails this connection: no set-up place, no server. ``hung`` waits until the
        client gives up (its close cancels this task)."""
        self.conn.verdict = fault
        if fault == "hung":
            await asyncio.Event().wait()
        await asyncio.sleep(self.emulator.faults.fail_after_s())
        self.conn.ended = time.monotonic()
        if fault == "reset":  # SO_LINGER 0: the close sends an RST instead of a FIN
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()


async def run(emulator: Emulator, ready=None) -> None:
    """Serve until cancelled; ``ready(port)`` is called once the socket listens."""
    await emulator.start()
    if ready is not None:
        ready(emulator.port)
    emulator.model.note("start")
    await emulator.serve()


def serve(
    sc_connector: Connector,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    seed: int,
    log_path: Path | None = None,
    ready=None,
    path: PathFaults | None = None,
    egress: Egress | None = None,
) -> None:
    """Run an emulator until SIGTERM or SIGINT (the checked addresses are the caller's job);
    ``ready(host, port)`` once it listens. Its log goes to ``log_path``, or stdout without one."""
    import signal
    import sys

    emulator = Emulator(
        sc_connector,
        listen,
        upstream,
        seed,
        log_path=log_path,
        log_stream=sys.stdout if log_path is None else None,
        path=path,
        egress=egress,
    )

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await run(emulator, None if ready is None else lambda port: ready(listen[0], port))
        except asyncio.CancelledError:
            await emulator.close()

    asyncio.run(main())


def _main(argv: list[str]) -> None:
    """``python -m loadtests.emulator CONFIG.json READY_FD``: the emulator of a campaign. The
    campaign checked every address before writing CONFIG; readiness is one JSON object
    (``{"host": …, "port": …}``) written to the inherited file descriptor READY_FD, then closed, so
    the parent never parses log text and sees EOF at once if the emulator dies first."""
    import os

    from sim import scenario as scenarios

    config = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    ready_fd = int(argv[1])
    sc = scenarios.load(Path(config["scenario"]))

    def ready(host: str, port: int) -> None:
        with os.fdopen(ready_fd, "w") as f:
            f.write(json.dumps({"host": host, "port": port}))

    serve(
        sc.connector,
        (config["listen"][0], config["listen"][1]),
        (config["upstream"][0], config["upstream"][1]),
        config["seed"],
        Path(config["log"]),
        ready,
        sc.path,
        sc.egress,
    )


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
