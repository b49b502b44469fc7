"""A worker process's side of ``triosip run --workers N``: what its supervisor passed it.

The supervisor starts each worker as ``python -m triosip run ... --worker-of SPEC``, where
SPEC is a JSON object naming the file descriptors it passed (``pass_fds``): the worker's
hand-off inbox and every worker's outbox (unix datagram socket pairs), a pipe on which
the worker reports that it is ready (its PID, MI address and listeners, as one JSON
object, then end of file), and a lifeline pipe, whose end of file means the supervisor is
gone: the worker then stops. SPEC may also name the listeners with their real ports, for
the workers started once the first one has bound port 0.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from triosip.mi import MIConfig
from triosip.transport import Address, WorkerSockets, parse_listen_spec

if TYPE_CHECKING:
    from triosip.app import Running
    from triosip.config import Config

__all__ = ["WorkerLink"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerLink:
    """The pipes and sockets a worker got from its supervisor (module doc).

    Attributes:
        sockets: its hand-off sockets, for the transport.
        ready: the write end of the readiness pipe.
        lifeline: the read end of the lifeline pipe.
        listen: the listeners with their real ports, or None to bind the config's.
    """

    sockets: WorkerSockets
    ready: int
    lifeline: int
    listen: tuple[Address, ...] | None

    @classmethod
    def from_spec(cls, spec: str) -> WorkerLink:
        """The link a ``--worker-of`` SPEC names.

        Raises:
            ValueError: SPEC is not what a supervisor writes.
        """
        try:
            fields: dict[str, Any] = json.loads(spec)
            inbox = socket.socket(fileno=int(fields["inbox"]))
            outboxes = tuple(socket.socket(fileno=int(fd)) for fd in fields["outboxes"])
            listen = fields.get("listen")
            return cls(
                sockets=WorkerSockets(index=int(fields["index"]), inbox=inbox, outboxes=outboxes),
                ready=int(fields["ready"]),
                lifeline=int(fields["lifeline"]),
                listen=None if listen is None else tuple(map(parse_listen_spec, listen)),
            )
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ValueError(f"--worker-of is for the supervisor's use: {exc}") from None

    def configure(self, config: Config) -> Config:
        """`config` as this worker runs it: its listeners, and its own MI on loopback (the
        supervisor serves the public one, merging the workers')."""
        public = config.mi or MIConfig()
        mi = MIConfig(host="127.0.0.1", port=0, token=public.token, limits=public.limits)
        return replace(config, listen=self.listen or config.listen, mi=mi)

    def label_logs(self) -> None:
        """Start each log line of this process with ``worker N:``: the workers and their
        supervisor share one standard error."""
        prefix = f"worker {self.sockets.index}: "

        def label(record: logging.LogRecord) -> bool:
            if not getattr(record, "worker_labelled", False):
                record.msg = prefix + str(record.msg)
                record.worker_labelled = True
            return True

        for handler in logging.getLogger().handlers:
            handler.addFilter(label)

    def report_ready(self, running: Running) -> None:
        """Tell the supervisor this worker serves: its PID, MI and listeners."""
        report = {
            "pid": os.getpid(),
            "mi": list(running.mi) if running.mi is not None else None,
            "listeners": [str(address) for address in running.listeners],
        }
        with os.fdopen(self.ready, "w") as pipe:
            pipe.write(json.dumps(report) + "\n")

    async def wait_orphaned(self) -> None:
        """Return when the supervisor is gone (the lifeline pipe's end of file)."""
        async with trio.lowlevel.FdStream(self.lifeline) as lifeline:
            while await lifeline.receive_some():
                pass
        logger.warning("worker %d: the supervisor is gone; stopping", self.sockets.index)
