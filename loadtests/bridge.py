"""asyncio inside a gevent process: one event loop in a real OS thread, greenlets wait on a watcher.

Locust monkey-patches threads, sockets and selectors for gevent; asyncpg needs asyncio. The loop
runs in a native thread (the original ``start_new_thread``) over an unpatched epoll selector, so it
never enters gevent's hub. A greenlet submits a coroutine with ``call_soon_threadsafe`` and waits
on a gevent ``async_`` watcher, which the loop thread may signal safely
(docs/sources.md#asyncpg-inside-locust: locust issue 1251, "one asyncio loop in a real OS thread
... waits on a gevent async watcher"). Other greenlets keep
running while one waits: no user blocks the worker.

The loop's executor work (``getaddrinfo`` for a host name, above all) runs in native threads too,
with the unpatched ``socket.getaddrinfo``: asyncio's default executor would start patched threads,
greenlets of a hub that the loop thread never runs, so a DSN naming ``localhost`` hung every
connection and then the process's exit (the campaign ran on for the watchdog's 60 s).
"""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _original(module: str, name: str, fallback: Any) -> Any:
    try:
        from gevent import monkey
    except ImportError:
        return fallback
    return monkey.get_original(module, name)


class NativeThreadLoop(asyncio.SelectorEventLoop):
    """An event loop whose executor calls run in native threads, never in gevent's."""

    def __init__(self, selector, start_thread) -> None:
        super().__init__(selector)
        self._start_thread = start_thread
        self._getaddrinfo = _original("socket", "getaddrinfo", socket.getaddrinfo)
        self._getnameinfo = _original("socket", "getnameinfo", socket.getnameinfo)

    def run_in_executor(self, executor, func, *args):
        if executor is not None:
            return super().run_in_executor(executor, func, *args)
        future = self.create_future()

        def settle(result, error) -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def work() -> None:
            try:
                result, error = func(*args), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            self.call_soon_threadsafe(settle, result, error)

        self._start_thread(work, ())
        return future

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        return await self.run_in_executor(
            None, self._getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, self._getnameinfo, sockaddr, flags)


class AsyncioBridge:
    """Runs coroutines on a private asyncio loop in a native thread; ``run`` waits gevent-safely."""

    def __init__(self) -> None:
        start_thread = _original("_thread", "start_new_thread", None)
        if start_thread is None:
            import _thread

            start_thread = _thread.start_new_thread
        epoll = _original("selectors", "EpollSelector", getattr(selectors, "EpollSelector", None))
        selector = epoll() if epoll is not None else selectors.SelectSelector()
        self.loop = NativeThreadLoop(selector, start_thread)
        start_thread(self._serve, ())

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; block this greenlet (not the process) until it finishes.

        If the greenlet is killed while waiting (Locust stopping a user), the task is cancelled.
        """
        import gevent
        from gevent.hub import Waiter

        hub = gevent.get_hub()
        watcher = hub.loop.async_()
        waiter = Waiter(hub)
        # Start the watcher before submitting: a send() that comes first would be lost.
        watcher.start(waiter.switch, None)
        box: dict[str, asyncio.Future] = {}

        def submit() -> None:
            task = self.loop.create_task(coro)
            box["task"] = task
            task.add_done_callback(lambda _t: watcher.send())

        try:
            self.loop.call_soon_threadsafe(submit)
            waiter.get()
        except BaseException:
            self.loop.call_soon_threadsafe(lambda: box["task"].cancel() if box else None)
            raise
        finally:
            watcher.close()
        return box["task"].result()
