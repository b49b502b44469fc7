"""The supervisor of ``triosip run --workers N``: starts the workers, keeps them running,
passes signals on, and serves one management interface for them all.

Theory of operation
-------------------

Each worker is a process of its own (``python -m triosip run <same options>
--worker-of SPEC``), never a fork of a process that runs a trio loop. The supervisor makes
one unix datagram socket pair per worker (its hand-off inbox, ``triosip.transport``'s
``_handoff.py``) before any starts, so a worker started again gets the same one. Worker 0
starts first and binds the configured listeners; the others then bind the ports it got
(port 0 in the options picks one port for all of them).

* A worker that dies is started again with the same index (logged, counted in
  ``/stats`` and ``/metrics``); one that dies before serving, or within `QUICK_DEATH`
  seconds of it, waits first, twice as long each time in a row (up to `MAX_BACKOFF`).
* SIGTERM or SIGINT: every worker gets SIGTERM and shuts down gracefully (``--grace``);
  the supervisor waits for them (``grace`` + `STOP_MARGIN`, then kills) and exits 0.
  SIGHUP: every worker reloads its routes.
* A worker whose supervisor is gone (killed) sees its lifeline pipe close, and stops.
* The MI (``--mi``) merges what each worker's own MI (loopback, a port of its own)
  says (``_merge.py``), and ``POST /reload`` reloads every worker.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from triosip import __version__
from triosip.mi import (
    PROMETHEUS_CONTENT_TYPE,
    HttpRequest,
    HttpResponse,
    MIClient,
    MIError,
    MIRefused,
    MIUnavailable,
    QueryError,
    TaskQuery,
    mi_url,
    prometheus_text,
    serve_http,
    token_refusal,
)
from triosip.transport import parse_listen_spec

from ._merge import merge_statistics, merge_tasks, worker_metrics

if TYPE_CHECKING:
    from collections.abc import Sequence

    from triosip.config import Config
    from triosip.mi import MIConfig
    from triosip.transport import Address

__all__ = ["Supervisor"]

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
"""Seconds a worker may take from its start to serving."""
QUICK_DEATH = 2.0
"""A worker that dies before serving, or sooner than this after, is started again only after
a pause (twice as long each time in a row)."""
MAX_BACKOFF = 8.0
STOP_MARGIN = 5.0
"""Seconds the supervisor waits for its workers beyond ``--grace``, before killing them."""
MI_TIMEOUT = 5.0


class WorkerFailed(Exception):
    """The first start of a worker failed (it said why on standard error): its exit code."""

    def __init__(self, index: int, returncode: int) -> None:
        super().__init__(f"worker {index} exited with {returncode} before serving")
        self.returncode = returncode


@dataclass(slots=True)
class _Worker:
    index: int
    process: trio.Process | None = None
    lifeline: int | None = None  # the write end of its lifeline pipe
    mi: tuple[str, int] | None = None
    started: float = 0.0  # when its process was started
    startup: float = 0.0  # how long it took to serve
    starts: int = 0
    quick_deaths: int = 0

    def describe(self) -> dict[str, Any]:
        running = self.process is not None and self.process.returncode is None
        return {
            "index": self.index,
            "pid": self.process.pid if running and self.process is not None else None,
            "mi": mi_url(*self.mi) if self.mi is not None and running else None,
            "starts": self.starts,
        }


@dataclass(slots=True)
class Supervisor:
    """Runs `count` worker processes of ``triosip run`` (module doc).

    Args:
        config: the settings, checked already (the supervisor reads ``grace`` and ``mi``).
        argv: the ``triosip`` arguments the workers get, followed by their ``--worker-of``.
        count: how many workers (>= 2).
    """

    config: Config
    argv: Sequence[str]
    count: int
    restarts: int = 0
    reloads: int = 0
    stopping: bool = False
    listen: tuple[Address, ...] | None = None
    _workers: list[_Worker] = field(default_factory=list)
    _pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    _started_wall: float = field(default_factory=time.time)

    async def serve(self) -> None:
        """Start the workers, keep them running, and stop them all on SIGTERM or SIGINT.

        Owns, in one nursery, a task per worker that waits for its process (and starts
        it again), the MI, and the signal handling.

        Raises:
            WorkerFailed: a worker's first start failed (an address in use, say).
            MIError: the MI cannot listen where asked.
        """
        self._pairs = [self._handoff_pair() for _ in range(self.count)]
        self._workers = [_Worker(index) for index in range(self.count)]
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as nursery:
                    # Worker 0 binds first: the others bind the ports it got.
                    await nursery.start(self._keep, self._workers[0], name="worker 0")
                    async with trio.open_nursery() as starting:
                        for worker in self._workers[1:]:
                            name = f"worker {worker.index}"
                            starting.start_soon(
                                functools.partial(nursery.start, self._keep, worker, name=name),
                                name=f"start {name}",
                            )
                    logger.info(
                        "%d workers serve %s (pids %s)",
                        self.count,
                        ", ".join(str(address) for address in self.listen or ()),
                        ", ".join(str(w.describe()["pid"]) for w in self._workers),
                    )
                    if self.config.mi is not None:
                        await nursery.start(self._serve_mi, self.config.mi, name="MI")
                    async for received in signals:
                        if received == signal.SIGHUP:
                            nursery.start_soon(self._reload_all, name="reload workers")
                            continue
                        await self._stop_all(signal.Signals(received).name)
                        nursery.cancel_scope.cancel()
                        break
        finally:
            for worker in self._workers:
                self._close_lifeline(worker)
            for pair in self._pairs:
                for end in pair:
                    end.close()
        logger.info("stopped")

    def _handoff_pair(self) -> tuple[socket.socket, socket.socket]:
        """A worker's hand-off socket pair: (the end every worker writes, its inbox)."""
        outbox, inbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        # Between the two ends of a pair, only the writer's send buffer bounds the queue
        # (net.unix.max_dgram_qlen does not apply): the default 208 KiB holds ~160
        # datagrams, less than a burst that one receive batch can hand over. As large
        # as a UDP listener's buffer, then.
        outbox.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.transport.udp_buffer_bytes
        )
        return outbox, inbox

    async def _stop_all(self, why: str) -> None:
        self.stopping = True
        live = [w.process for w in self._workers if w.process and w.process.returncode is None]
        logger.info("%s: stopping %d workers (grace %.1f s)", why, len(live), self.config.grace)
        for process in live:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.grace + STOP_MARGIN) as waited:
            for process in live:
                await process.wait()
        if waited.cancelled_caught:
            for process in live:
                if process.returncode is None:
                    logger.warning("worker pid %d did not stop in time: killed", process.pid)
                    process.kill()
            for process in live:
                await process.wait()

    # -- the workers --------------------------------------------------------------------

    async def _keep(
        self, worker: _Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run `worker`, and start it again whenever it dies, until the supervisor stops."""
        first = True
        while True:
            ready = await self._start(worker)
            if ready is None and first:
                assert worker.process is not None
                raise WorkerFailed(worker.index, await worker.process.wait())
            if first:
                first = False
                task_status.started()
            assert worker.process is not None
            returncode = await worker.process.wait()
            self._close_lifeline(worker)
            if self.stopping:
                return
            self.restarts += 1
            # Served for less than QUICK_DEATH, or never: it may die again at once.
            lived = trio.current_time() - worker.started
            served = lived - worker.startup if ready is not None else 0.0
            worker.quick_deaths = worker.quick_deaths + 1 if served < QUICK_DEATH else 0
            pause = min(MAX_BACKOFF, 0.25 * 2**worker.quick_deaths) if worker.quick_deaths else 0
            logger.warning(
                "worker %d (pid %d) exited with %s after %.1f s: starting it again%s (restart %d)",
                worker.index,
                worker.process.pid,
                returncode,
                lived,
                f" in {pause:.2f} s" if pause else "",
                self.restarts,
            )
            await trio.sleep(pause)

    async def _start(self, worker: _Worker) -> dict[str, Any] | None:
        """Start `worker`'s process and wait until it serves.

        Returns:
            Its readiness report, or None if it exited (or hung) before serving.
        """
        inbox = self._pairs[worker.index][1]
        outboxes = [pair[0] for pair in self._pairs]
        ready_read, ready_write = os.pipe()
        lifeline_read, lifeline_write = os.pipe()
        spec: dict[str, Any] = {
            "index": worker.index,
            "inbox": inbox.fileno(),
            "outboxes": [outbox.fileno() for outbox in outboxes],
            "ready": ready_write,
            "lifeline": lifeline_read,
            "listen": None if self.listen is None else [str(a) for a in self.listen],
        }
        passed = (ready_write, lifeline_read, inbox.fileno(), *spec["outboxes"])
        # The dead predecessor's MI is gone: name none until this process reports ready.
        worker.mi = None
        try:
            worker.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "triosip", *self.argv, "--worker-of", json.dumps(spec)],
                pass_fds=passed,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(ready_write)
            os.close(lifeline_read)
        worker.lifeline = lifeline_write
        worker.started = trio.current_time()
        worker.starts += 1
        report = b""
        with trio.move_on_after(READY_TIMEOUT):
            async with trio.lowlevel.FdStream(ready_read) as ready:
                while chunk := await ready.receive_some():
                    report += chunk
        if not report:
            # The pipe closed: the worker exited (or is exiting); else it hangs.
            with trio.move_on_after(STOP_MARGIN):
                await worker.process.wait()
            if worker.process.returncode is None:
                logger.warning("worker %d did not report ready in time: killed", worker.index)
                worker.process.kill()
            return None
        worker.startup = trio.current_time() - worker.started
        fields: dict[str, Any] = json.loads(report)
        mi = fields.get("mi")
        worker.mi = (str(mi[0]), int(mi[1])) if mi else None
        if self.listen is None:
            self.listen = tuple(parse_listen_spec(spec) for spec in fields["listeners"])
        logger.info("worker %d started (pid %d)", worker.index, worker.process.pid)
        return fields

    def _close_lifeline(self, worker: _Worker) -> None:
        if worker.lifeline is not None:
            os.close(worker.lifeline)
            worker.lifeline = None

    # -- the management interface -----------------------------------------------------

    async def _serve_mi(
        self, config: MIConfig, *, task_status: trio.TaskStatus[tuple[str, int]]
    ) -> None:
        try:
            listeners = await trio.open_tcp_listeners(config.port, host=config.host)
        except OSError as exc:
            where = mi_url(config.host, config.port).removeprefix("http://")
            raise MIError(
                f"--mi {where}: the management interface cannot listen there: "
                f"{exc.strerror or exc} (give another --mi HOST:PORT, or --mi off)"
            ) from None
        sockname = listeners[0].socket.getsockname()
        bound = (str(sockname[0]), int(sockname[1]))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_http, listeners, config, nursery, name="MI server")
            logger.info("management interface on %s (all workers)", mi_url(*bound))
            task_status.started(bound)

    async def _serve_http(
        self, listeners: list[trio.SocketListener], config: MIConfig, nursery: trio.Nursery
    ) -> None:
        refusal = functools.partial(token_refusal, config)

        async def handle(request: HttpRequest) -> HttpResponse:
            return refusal(request) or await self.handle(request)

        await serve_http(listeners, handle, limits=config.limits, nursery=nursery, gate=refusal)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one MI request by asking every worker and merging (``_merge.py``)."""
        path = request.path.rstrip("/") or "/"
        method = "POST" if path == "/reload" else "GET"
        if path not in _PATHS:
            return HttpResponse.error(
                404, f"no endpoint {request.path}; try one of {', '.join(_PATHS)}"
            )
        if request.method != method:
            return HttpResponse.error(
                405,
                f"{request.path} takes {method}, not {request.method}",
                headers=(("allow", method),),
            )
        if path == "/":
            return HttpResponse.json(200, {"endpoints": list(_PATHS[1:])})
        if path == "/reload":
            return await self._reload_response()
        if path == "/version":
            return HttpResponse.json(200, self._version())
        # The parameters are checked here, as each worker would: a bad one is one 400.
        listing = path in ("/tasks", "/transactions")
        try:
            query = TaskQuery.from_params(request.query)
        except QueryError as exc:
            return HttpResponse.error(400, str(exc))
        if request.query and not listing:
            return HttpResponse.error(400, f"{request.path} takes no parameters")
        params = {name: values[-1] for name, values in request.query.items()}
        answers = await self._ask_all("/stats" if path == "/metrics" else path, params)
        documents = {index: doc for index, doc in answers.items() if not isinstance(doc, Exception)}
        if listing:
            merged = merge_tasks(documents, query.limit)
            return HttpResponse.json(200, merged)
        statistics = self._statistics([documents.get(w.index) for w in self._workers])
        if path == "/metrics":
            text = prometheus_text(statistics) + worker_metrics(
                [{**w.describe(), "stats": documents.get(w.index)} for w in self._workers],
                self.restarts,
            )
            return HttpResponse(
                status=200, body=text.encode(), content_type=PROMETHEUS_CONTENT_TYPE
            )
        return HttpResponse.json(200, statistics)

    def _statistics(self, documents: list[dict[str, Any] | None]) -> dict[str, Any]:
        merged = merge_statistics([d for d in documents if d is not None])
        merged["workers"] = [w.describe() for w in self._workers]
        merged["workers_restarted"] = self.restarts
        return merged

    def _version(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "started": datetime.datetime.fromtimestamp(self._started_wall, datetime.UTC).isoformat(
                timespec="seconds"
            ),
            "listeners": [str(address) for address in self.listen or ()],
            "workers": [w.describe() for w in self._workers],
            "workers_restarted": self.restarts,
        }

    async def _ask_all(
        self, path: str, params: dict[str, str], *, post: bool = False
    ) -> dict[int, Any]:
        """Each worker's answer to ``GET path`` (or ``POST``): its JSON, or the error."""
        answers: dict[int, Any] = {}

        def ask(address: tuple[str, int]) -> Any:
            with MIClient(*address, timeout=MI_TIMEOUT) as client:
                if post:
                    return client.post_json(path)
                return client.get_json(path, params)

        async def one(worker: _Worker) -> None:
            if worker.mi is None or worker.process is None or worker.process.returncode is not None:
                answers[worker.index] = MIUnavailable(f"worker {worker.index} is not running")
                return
            try:
                answers[worker.index] = await trio.to_thread.run_sync(ask, worker.mi)
            except (MIUnavailable, MIRefused, ValueError) as exc:
                answers[worker.index] = exc

        async with trio.open_nursery() as nursery:
            for worker in self._workers:
                nursery.start_soon(one, worker, name=f"MI ask worker {worker.index}")
        return answers

    async def _reload_all(self) -> dict[int, Any]:
        answers = await self._ask_all("/reload", {}, post=True)
        for index, answer in sorted(answers.items()):
            if isinstance(answer, Exception):
                logger.warning("worker %d did not reload: %s", index, answer)
            else:
                logger.info("worker %d reloaded its routes", index)
        return answers

    async def _reload_response(self) -> HttpResponse:
        """``POST /reload`` of one proxy's MI, for all workers: ``reloads`` counts the
        reloads every worker took; 422 with the first worker's reason if one did not."""
        answers = await self._reload_all()
        failed = {index: str(a) for index, a in answers.items() if isinstance(a, Exception)}
        if failed:
            document = {
                "reloaded": False,
                "error": next(iter(failed.values())),
                "errors": failed,
                "status": 422,
            }
            return HttpResponse.json(422, document)
        self.reloads += 1
        routes = next(iter(answers.values()))["routes"]
        return HttpResponse.json(
            200,
            {"reloaded": True, "routes": routes, "reloads": self.reloads, "workers": len(answers)},
        )


_PATHS = ("/", "/tasks", "/transactions", "/stats", "/metrics", "/version", "/reload")
