"""Drive real sipp processes from trio, for tests and benchmarks.

Theory of operation
-------------------

sipp (the Debian package ``sip-tester``) is the SIP peer of triosip's tests and benches.
This module starts it as a child process, never interactively, and reads what it did
from the files it writes, not from its screen:

* every sipp runs in a fresh temporary directory (its working directory), with
  ``-nostdin`` and no terminal: stdin and stdout are ``/dev/null``, stderr goes to a file;
* ``-trace_stat -stf stats.csv -fd 1`` makes it dump its counters every second and once
  more when it exits; the last row is the result;
* ``-trace_rtt -rtt_freq N`` makes it log the response time of each call (RTD 1: from the
  INVITE to the response the scenario marks ``rtd="true"``, the 200 for the built-in
  ``uac``) in ``<scenario>_<pid>_rtt.csv``, from which the p50 and p99 come. sipp's clock
  ticks in milliseconds and its scheduler adds a few more, so expect steps of ~1-4 ms;
* ``-trace_err`` keeps the unexpected messages in ``errors.log`` (its tail is in the result);
* everything binds 127.0.0.1 only (``-i``, ``-bind_local``, ``-ci``, ``-mi``), and the
  control port (``-cp``) is a free port rather than sipp's default 8888.

A UAC runs to its end (``-m`` calls, sipp's own ``-timeout``, or ``stop_after``) with
:func:`run_uac`. A UAS is a context manager, :func:`open_uas`: it returns once the UAS
owns its port, and on exit stops it (SIGUSR1 lets open calls finish, then SIGTERM, then
SIGKILL; sipp writes its statistics on the first two) and parses its results. Processes
are signalled by PID only, always reaped, and their directories removed, also when the
caller is cancelled: wrap every call in ``trio.fail_after``.

Example::

    async with open_uas() as uas:
        result = await run_uac(uas.address, rate=100, max_calls=50)
    assert result.calls_successful == 50 and uas.result.calls_failed == 0

Nothing in the rest of triosip imports this module.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

import trio

from triosip.errors import TriosipError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

__all__ = [
    "BUILTIN_SCENARIOS",
    "SCENARIOS",
    "UAC_CANCEL",
    "UAC_RRS",
    "UAS_BUSY",
    "UAS_RECORD_ROUTE",
    "UAS_RINGING",
    "UAS_SILENT",
    "HarnessError",
    "Scenario",
    "SippResult",
    "Transport",
    "Uas",
    "find_free_port",
    "is_listening",
    "open_uas",
    "run_uac",
    "stop_process",
    "wait_listening",
]

logger = logging.getLogger(__name__)

Transport = Literal["udp", "tcp"]
"""The two transports the harness drives: sipp's ``-t u1`` and ``-t t1``."""

Scenario = str | Path
"""A built-in sipp scenario by name (``-sn``, see BUILTIN_SCENARIOS) or an XML file (``-sf``)."""

BUILTIN_SCENARIOS = frozenset({"uac", "uas", "regexp", "branchc", "branchs"})

SCENARIOS = Path(__file__).parent / "scenarios"
UAC_RRS = SCENARIOS / "uac_rrs.xml"
"""The built-in uac, but the ACK and BYE follow the Record-Route of the 200 (``rrs="true"``)."""
UAC_CANCEL = SCENARIOS / "uac_cancel.xml"
"""INVITE, 180, CANCEL; expects 200 for the CANCEL and 487 for the INVITE, then ACKs it."""
UAS_RECORD_ROUTE = SCENARIOS / "uas_record_route.xml"
"""The built-in uas, but copying the INVITE's Record-Route into its 180 and 200 (§12.1.1)."""
UAS_RINGING = SCENARIOS / "uas_ringing.xml"
"""Answers 180 and never more, until a CANCEL comes: then 200 and 487, and waits for the ACK."""
UAS_BUSY = SCENARIOS / "uas_busy.xml"
"""Answers every INVITE with 486 Busy Here and waits for the ACK."""
UAS_SILENT = SCENARIOS / "uas_silent.xml"
"""Never answers anything: each INVITE received counts as one successful call."""

LOCAL_IP = "127.0.0.1"
SIPP = "sipp"
_TRANSPORT_MODES: dict[str, str] = {"udp": "u1", "tcp": "t1"}
_STATS_FILE = "stats.csv"
_ERRORS_FILE = "errors.log"
_STDERR_FILE = "stderr.log"
_TAIL_CHARS = 4000
# sipp reports times as HH:MM:SS:microseconds.
_US_PER_FIELD = (3_600_000_000, 60_000_000, 1_000_000, 1)
_POLL_INTERVAL = 0.02
_TERM_GRACE = 2.0


class HarnessError(TriosipError):
    """A harness process could not start, died early, or left no statistics behind."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SippResult:
    """What one sipp process did: its last statistics row, its response times, its exit.

    Counters are cumulative over the whole run. For a UAS stopped while calls were still
    open, ``calls_created - calls_successful - calls_failed`` calls were in progress.

    Attributes:
        command: the sipp command line that ran.
        exit_status: sipp's exit status: 0 when every call succeeded, 1 when at least one
            failed, 97 after an internal exit command, 99 when no call was processed,
            255 on a fatal error, 254 when a socket could not be bound. sipp catches
            SIGTERM and SIGUSR1 and exits with one of these; it is negative only when
            another signal (SIGKILL) ended it.
        calls_created: calls started (``TotalCallCreated``).
        calls_successful: calls that reached the end of the scenario.
        calls_failed: calls that failed, for any reason.
        failed_max_udp_retrans: failed calls that ran out of UDP retransmissions.
        failed_unexpected_message: failed calls that received a message the scenario did
            not expect.
        failed_timeout_on_recv: failed calls whose ``recv`` timed out.
        retransmissions: messages sipp sent again (its own timers A/E/G).
        response_time_samples: how many RTD 1 response times were logged.
        response_time_p50_ms: median RTD 1 (call setup) time, None without samples.
        response_time_p99_ms: 99th percentile of the same.
        response_time_mean_ms: sipp's own mean of RTD 1 (``ResponseTime1(C)``).
        duration: seconds from the start of the process to its exit.
        counters: the whole last statistics row, by sipp's column name.
        error_log: the tail of sipp's unexpected-messages log (``-trace_err``).
        stderr: the tail of sipp's standard error.
    """

    command: tuple[str, ...]
    exit_status: int
    calls_created: int
    calls_successful: int
    calls_failed: int
    failed_max_udp_retrans: int
    failed_unexpected_message: int
    failed_timeout_on_recv: int
    retransmissions: int
    response_time_samples: int
    response_time_p50_ms: float | None
    response_time_p99_ms: float | None
    response_time_mean_ms: float
    duration: float
    counters: Mapping[str, str]
    error_log: str
    stderr: str


class Uas:
    """A running sipp UAS, as :func:`open_uas` yields it.

    Attributes:
        port: the port it listens on, on 127.0.0.1.
        transport: ``"udp"`` or ``"tcp"``.
        pid: the sipp process's PID.
    """

    def __init__(self, *, port: int, transport: Transport, pid: int) -> None:
        self.port = port
        self.transport: Transport = transport
        self.pid = pid
        self._result: SippResult | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, the form sipp takes as a remote host or ``-rsa``."""
        return f"{LOCAL_IP}:{self.port}"

    @property
    def result(self) -> SippResult:
        """What the UAS did, once its ``open_uas`` block has exited.

        Raises:
            HarnessError: the UAS is still running, or its block ended with an exception.
        """
        if self._result is None:
            raise HarnessError("the UAS has no result until its open_uas() block has exited")
        return self._result

    def __repr__(self) -> str:
        return f"<Uas {self.transport}:{self.address} pid={self.pid}>"


def find_free_port(transport: Transport = "udp") -> int:
    """Return a port of 127.0.0.1 that nobody uses right now, by binding port 0.

    The port is released before returning, so another process may take it first; on a
    test machine that race is rare enough.

    Args:
        transport: ``"udp"`` or ``"tcp"``; a free UDP port may be taken in TCP.

    Returns:
        The port number.
    """
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOCAL_IP, 0))
        port: int = sock.getsockname()[1]
        return port


def is_listening(pid: int, port: int, transport: Transport = "udp") -> bool:
    """Tell whether process ``pid`` itself owns a socket bound to ``port``.

    Reads ``/proc/<pid>/fd`` and ``/proc/net/{udp,tcp}{,6}`` (Linux only). For TCP only a
    listening socket counts. Unlike a probe ``bind()``, this can't steal the port from the
    process that is about to bind it.

    Args:
        pid: the process that should own the socket (not its children).
        port: the local port.
        transport: ``"udp"`` or ``"tcp"``.

    Returns:
        True when it does; False otherwise, also when the process is gone.
    """
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    except OSError:
        return False
    for table in (f"/proc/net/{transport}", f"/proc/net/{transport}6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)  # the header
                for line in lines:
                    fields = line.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    # st 0A is TCP_LISTEN; UDP sockets are 07 (CLOSE) when unconnected.
                    listening = transport == "udp" or fields[3] == "0A"
                    if local_port == port and listening and fields[9] in inodes:
                        return True
        except FileNotFoundError:
            continue  # no IPv6
    return False


async def wait_listening(process: trio.Process, port: int, transport: Transport = "udp") -> None:
    """Wait until ``process`` owns a socket bound to ``port`` (see :func:`is_listening`).

    Polls every 20 ms and has no deadline of its own: wrap it in ``trio.fail_after``.

    Args:
        process: the process that should bind the port.
        port: the local port.
        transport: ``"udp"`` or ``"tcp"``.

    Raises:
        HarnessError: the process exited first.
    """
    while not is_listening(process.pid, port, transport):
        if process.poll() is not None:
            raise HarnessError(
                f"process {process.pid} exited with status {process.returncode} "
                f"before binding {transport} port {port}"
            )
        await trio.sleep(_POLL_INTERVAL)


async def stop_process(
    process: trio.Process,
    *,
    first_signal: signal.Signals = signal.SIGTERM,
    grace: float = _TERM_GRACE,
    process_group: bool = False,
) -> int:
    """Stop a process and reap it: ``first_signal``, then SIGTERM, then SIGKILL.

    ``first_signal`` gets ``grace`` seconds to work; SIGTERM, when it is not the first
    signal, gets 2 s. With ``process_group``, the signals go to the process group whose ID
    is the process's PID (a process started with ``start_new_session=True``), and whatever
    is left of the group once the leader has exited is killed. The whole sequence is
    shielded from cancellation and bounded by ``grace + 2`` seconds plus the time SIGKILL
    takes.

    Args:
        process: a process this program started.
        first_signal: the polite signal, e.g. SIGUSR1 for sipp's soft exit.
        grace: seconds to wait after ``first_signal``.
        process_group: signal the process's group rather than the process alone.

    Returns:
        The process's exit status (negative when a signal ended it).
    """
    waits = {
        first_signal: grace,
        signal.SIGTERM: grace if first_signal == signal.SIGTERM else _TERM_GRACE,
    }
    with trio.CancelScope(shield=True):
        for signum in (*waits, signal.SIGKILL):
            if process.poll() is not None:
                break
            _send(process, signum, process_group=process_group)
            if signum == signal.SIGKILL:
                await process.wait()
                break
            with trio.move_on_after(waits[signum]):
                await process.wait()
        if process_group:
            # The children of a leader that died first (or was killed) are still in its group.
            _send(process, signal.SIGKILL, process_group=True)
    returncode = process.returncode
    assert returncode is not None, "stop_process returns once the process is reaped"
    return returncode


def _send(process: trio.Process, signum: signal.Signals, *, process_group: bool) -> None:
    try:
        if process_group:
            os.killpg(process.pid, signum)
        elif process.poll() is None:
            process.send_signal(signum)
    except ProcessLookupError:
        pass  # already gone


async def run_uac(
    remote: str,
    *,
    scenario: Scenario = "uac",
    transport: Transport = "udp",
    rate: float = 10.0,
    max_calls: int = 1,
    limit: int | None = None,
    remote_sending_address: str | None = None,
    service: str | None = None,
    call_duration_ms: int | None = None,
    injection_file: Path | None = None,
    global_timeout: float | None = None,
    timeout_error: bool = False,
    stop_after: float | None = None,
    recv_timeout_ms: int | None = None,
    max_recv_loops: int | None = None,
    max_sched_loops: int | None = None,
    buff_size: int | None = None,
    rtt_freq: int | None = 1,
    abort_unexpected: bool = True,
    extra_args: Sequence[str] = (),
    sipp: str = SIPP,
) -> SippResult:
    """Run sipp as a UAC until it has made ``max_calls`` calls, and return what it did.

    The process runs in its own temporary directory, removed afterwards. Three bounds, from
    the softest: sipp's ``-timeout`` (``global_timeout``) stops new calls and lets the open
    ones end by themselves, which an unanswered INVITE over UDP takes ~32 s to do;
    ``stop_after`` sends SIGTERM, on which sipp exits at once and still writes its
    statistics (calls still open count as neither successful nor failed); and the caller's
    cancel scope, on which sipp is killed and reaped and nothing is returned.

    Args:
        remote: ``host:port`` of the peer; it also fills the scenario's ``[remote_ip]`` and
            ``[remote_port]``, i.e. the Request-URI of the built-in ``uac``.
        scenario: a built-in scenario name (``-sn``) or an XML file (``-sf``).
        transport: ``"udp"`` (``-t u1``) or ``"tcp"`` (``-t t1``).
        rate: calls per second (``-r``).
        max_calls: calls to make before exiting (``-m``).
        limit: most calls open at once (``-l``); sipp's default otherwise.
        remote_sending_address: ``host:port`` where every packet goes (``-rsa``): the
            proxy under test, while the Request-URI still names ``remote``.
        service: the user part of the Request-URI (``-s``).
        call_duration_ms: length of the scenario's ``<pause/>`` (``-d``).
        injection_file: a CSV file of per-call values (``-inf``).
        global_timeout: seconds after which sipp starts no new call and exits once the
            open calls have ended (``-timeout``).
        timeout_error: make reaching ``global_timeout`` an error exit (``-timeout_error``).
        stop_after: seconds after which sipp is stopped with SIGTERM and the results so
            far are returned; None waits for sipp to exit by itself.
        recv_timeout_ms: how long each ``recv`` waits before the call fails (``-recv_timeout``).
        max_recv_loops: messages read per event-loop cycle (``-max_recv_loops``).
        max_sched_loops: calls run per event-loop cycle (``-max_sched_loops``).
        buff_size: socket send and receive buffer size in bytes (``-buff_size``).
        rtt_freq: log response times every this many calls (``-rtt_freq``); the last
            ``rtt_freq - 1`` calls are never logged. None turns the log off.
        abort_unexpected: abort a call that receives a message its scenario does not
            expect (sipp's default). False ignores such messages
            (``-default_behaviors all,-abortunexp``): a proxy with several workers may
            relay a 180 after its 200, or an ACK after its BYE. A call still succeeds
            only if every message of its scenario came.
        extra_args: more sipp options, appended as they are.
        sipp: the sipp executable.

    Returns:
        The result, also when calls failed (``exit_status`` 1).

    Raises:
        HarnessError: sipp could not start or left no statistics (bad option, unusable
            port): the message carries its standard error.
    """
    argv = [sipp, "-sn" if _is_builtin(scenario) else "-sf", str(scenario), remote]
    argv += _common_args(transport, port=find_free_port(transport), rtt_freq=rtt_freq)
    argv += ["-r", _number(rate), "-m", str(max_calls)]
    argv += _option("-l", limit)
    argv += _option("-rsa", remote_sending_address)
    argv += _option("-s", service)
    argv += _option("-d", call_duration_ms)
    argv += _option("-inf", injection_file)
    if global_timeout is not None:
        argv += ["-timeout", f"{round(global_timeout * 1000)}ms"]
    if timeout_error:
        argv.append("-timeout_error")
    argv += _option("-recv_timeout", recv_timeout_ms)
    argv += _option("-max_recv_loops", max_recv_loops)
    argv += _option("-max_sched_loops", max_sched_loops)
    argv += _option("-buff_size", buff_size)
    argv += _behaviours(abort_unexpected)
    argv += extra_args
    async with _open_sipp(argv) as run:
        with trio.move_on_after(math.inf if stop_after is None else stop_after):
            await run.process.wait()
        if run.process.returncode is None:
            logger.debug("sipp UAC pid %d still running after %ss", run.process.pid, stop_after)
            await stop_process(run.process)
        result = run.result()
    return result


@asynccontextmanager
async def open_uas(
    *,
    port: int | None = None,
    scenario: Scenario = "uas",
    transport: Transport = "udp",
    stop_grace: float = 5.0,
    global_timeout: float | None = 900.0,
    max_recv_loops: int | None = None,
    max_sched_loops: int | None = None,
    buff_size: int | None = None,
    rtt_freq: int | None = 1,
    abort_unexpected: bool = True,
    extra_args: Sequence[str] = (),
    sipp: str = SIPP,
) -> AsyncIterator[Uas]:
    """Run sipp as a UAS on 127.0.0.1 for the duration of the block.

    Entering returns once sipp owns its port. Leaving stops it: SIGUSR1 (sipp's soft
    exit: no new calls, open calls run to their end), SIGTERM after ``stop_grace``
    seconds, SIGKILL 2 s later; then the results are parsed into ``uas.result``. The
    built-in ``uas`` keeps each call 4 s after its BYE (``<timewait>``) to absorb
    retransmissions, so a soft exit takes up to 4 s; with ``stop_grace=0`` it is stopped
    at once (sipp catches SIGTERM, writes its statistics and exits 0) and calls still in
    their timewait count neither as successful nor failed.
    The process is owned by this block: it is stopped and reaped however the block ends.

    Args:
        port: the port to listen on; a free one when None.
        scenario: a built-in scenario name (``-sn``) or an XML file (``-sf``).
        transport: ``"udp"`` (``-t u1``) or ``"tcp"`` (``-t t1``).
        stop_grace: seconds to let open calls finish after SIGUSR1; 0 sends SIGTERM first.
        global_timeout: seconds after which sipp starts no new call and quits once the
            open ones end (``-timeout``), so that a UAS orphaned by a crashed test cannot
            outlive it by much; None for never.
        max_recv_loops: messages read per event-loop cycle (``-max_recv_loops``).
        max_sched_loops: calls run per event-loop cycle (``-max_sched_loops``).
        buff_size: socket send and receive buffer size in bytes (``-buff_size``).
        rtt_freq: log response times every this many calls (``-rtt_freq``); None for never.
        abort_unexpected: abort a call that receives a message its scenario does not
            expect (sipp's default); False ignores such messages, see :func:`run_uac`.
        extra_args: more sipp options, appended as they are.
        sipp: the sipp executable.

    Yields:
        The running UAS: its ``address`` to give to the UAC or the proxy, and its
        ``result`` after the block.

    Raises:
        HarnessError: sipp exited before binding its port, or left no statistics.
    """
    if port is None:
        port = find_free_port(transport)
    argv = [sipp, "-sn" if _is_builtin(scenario) else "-sf", str(scenario)]
    argv += _common_args(transport, port=port, rtt_freq=rtt_freq)
    if global_timeout is not None:
        argv += ["-timeout", f"{round(global_timeout * 1000)}ms"]
    argv += _option("-max_recv_loops", max_recv_loops)
    argv += _option("-max_sched_loops", max_sched_loops)
    argv += _option("-buff_size", buff_size)
    argv += _behaviours(abort_unexpected)
    argv += extra_args
    async with _open_sipp(argv) as run:
        try:
            await wait_listening(run.process, port, transport)
        except HarnessError as exc:
            raise HarnessError(f"sipp UAS did not start: {exc}\n{run.stderr()}") from None
        uas = Uas(port=port, transport=transport, pid=run.process.pid)
        logger.debug("sipp UAS %r started: %s", uas, " ".join(argv))
        try:
            yield uas
        finally:
            first = signal.SIGUSR1 if stop_grace > 0 else signal.SIGTERM
            await stop_process(run.process, first_signal=first, grace=stop_grace or _TERM_GRACE)
        uas._result = run.result()


class _SippRun:
    """One sipp process in its working directory; the files it leaves, parsed."""

    def __init__(self, argv: Sequence[str], workdir: Path, process: trio.Process) -> None:
        self.argv = tuple(argv)
        self.workdir = workdir
        self.process = process
        self.started = trio.current_time()
        self.ended: float | None = None

    def stderr(self) -> str:
        return _tail(self.workdir / _STDERR_FILE)

    def result(self) -> SippResult:
        status = self.process.returncode
        assert status is not None, "parse results after the process has exited"
        duration = (self.ended or trio.current_time()) - self.started
        counters = self._last_stats_row()
        if counters is None:
            raise HarnessError(
                f"sipp exited with status {status} and no statistics: {' '.join(self.argv)}\n"
                f"{self.stderr()}"
            )
        times = self._response_times()
        return SippResult(
            command=self.argv,
            exit_status=status,
            calls_created=_int(counters, "TotalCallCreated"),
            calls_successful=_int(counters, "SuccessfulCall(C)"),
            calls_failed=_int(counters, "FailedCall(C)"),
            failed_max_udp_retrans=_int(counters, "FailedMaxUDPRetrans(C)"),
            failed_unexpected_message=_int(counters, "FailedUnexpectedMessage(C)"),
            failed_timeout_on_recv=_int(counters, "FailedTimeoutOnRecv(C)"),
            retransmissions=_int(counters, "Retransmissions(C)"),
            response_time_samples=len(times),
            response_time_p50_ms=_percentile(times, 50),
            response_time_p99_ms=_percentile(times, 99),
            response_time_mean_ms=_duration_ms(counters.get("ResponseTime1(C)", "")),
            duration=duration,
            counters=MappingProxyType(counters),
            error_log=_tail(self.workdir / _ERRORS_FILE),
            stderr=self.stderr(),
        )

    def _last_stats_row(self) -> dict[str, str] | None:
        try:
            with open(self.workdir / _STATS_FILE, newline="", encoding="latin-1") as stats:
                rows = list(csv.reader(stats, delimiter=";"))
        except FileNotFoundError:
            return None
        if len(rows) < 2:
            return None
        header = rows[0]
        complete = [row for row in rows[1:] if len(row) >= len(header) - 1]
        if not complete:
            return None
        return {name: value for name, value in zip(header, complete[-1], strict=False) if name}

    def _response_times(self) -> list[float]:
        # Date_ms;response_time_ms;rtd_no, one file per process, named after the scenario.
        times: list[float] = []
        for path in self.workdir.glob("*_rtt.csv"):
            with open(path, newline="", encoding="latin-1") as rtt:
                for row in csv.reader(rtt, delimiter=";"):
                    if len(row) >= 3 and row[2].strip() == "1":
                        try:
                            times.append(float(row[1]))
                        except ValueError:
                            continue  # the header line
        return times


@asynccontextmanager
async def _open_sipp(argv: Sequence[str]) -> AsyncIterator[_SippRun]:
    workdir = Path(tempfile.mkdtemp(prefix="triosip-sipp-"))
    try:
        if shutil.which(argv[0]) is None:
            raise HarnessError(f"{argv[0]!r} not found: install sipp (Debian: sip-tester)")
        stderr = os.open(workdir / _STDERR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            process = await trio.lowlevel.open_process(
                list(argv),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        finally:
            os.close(stderr)
        run = _SippRun(argv, workdir, process)
        logger.debug("sipp started, pid %d: %s", process.pid, " ".join(argv))
        try:
            yield run
        finally:
            await stop_process(process)
            run.ended = trio.current_time()
            logger.debug("sipp pid %d exited with status %s", process.pid, process.returncode)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_CONTROL_PORT_DRAWS = 8


def _common_args(transport: Transport, *, port: int, rtt_freq: int | None) -> list[str]:
    args = ["-t", _TRANSPORT_MODES[transport], "-i", LOCAL_IP, "-p", str(port), "-bind_local"]
    args += ["-mi", LOCAL_IP, "-ci", LOCAL_IP, "-cp", str(_control_port(port))]
    args += ["-nostdin", "-trace_stat", "-stf", _STATS_FILE, "-fd", "1"]
    args += ["-trace_err", "-error_file", _ERRORS_FILE]
    if rtt_freq is not None:
        args += ["-trace_rtt", "-rtt_freq", str(rtt_freq)]
    return args


def _control_port(sip_port: int) -> int:
    # sipp's remote-control socket (-cp) is UDP, and sipp cannot bind it on its own SIP
    # port: it exits 254. Both come from find_free_port, and the kernel may hand a port it
    # has just got back out again at once, so a port equal to the SIP port is drawn again.
    for _ in range(_CONTROL_PORT_DRAWS):
        port = find_free_port("udp")
        if port != sip_port:
            return port
    raise HarnessError(f"no free UDP port for sipp's control socket besides {sip_port}")


def _behaviours(abort_unexpected: bool) -> list[str]:
    return [] if abort_unexpected else ["-default_behaviors", "all,-abortunexp"]


def _is_builtin(scenario: Scenario) -> bool:
    if isinstance(scenario, Path):
        return False
    if scenario not in BUILTIN_SCENARIOS:
        raise ValueError(f"unknown built-in sipp scenario {scenario!r}; pass a Path for a file")
    return True


def _option(flag: str, value: object) -> list[str]:
    return [] if value is None else [flag, str(value)]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _int(counters: Mapping[str, str], name: str) -> int:
    try:
        return int(counters.get(name, "0") or "0")
    except ValueError:
        return 0


def _duration_ms(text: str) -> float:
    fields = text.strip().split(":")
    if len(fields) != len(_US_PER_FIELD) or not all(f.isdigit() for f in fields):
        return 0.0
    return sum(int(f) * unit for f, unit in zip(fields, _US_PER_FIELD, strict=True)) / 1000


def _percentile(values: list[float], percent: float) -> float | None:
    # Nearest rank: the smallest value with at least `percent` % of the samples at or below it.
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - _TAIL_CHARS))
            return file.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
