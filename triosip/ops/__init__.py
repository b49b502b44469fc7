"""Async operations that route scripts run, each one cancellable for real.

An op (`Op`) describes work — a query, an HTTP request, a program, a sleep, a blocking
function — and runs at most once, when awaited. Each kind keeps the cancellation contract of
docs/cancellation.md: a cancel interrupts the sqlite statement or cancels the PostgreSQL one on the
server, closes the HTTP connection, terminates the program's process group, and in every
case waits until nothing of the op is left (no thread, process, fd or half-used pooled
connection) before it returns.

Failures are `OpFailed`; an op's own timeout, given to `run_with_timeout`, is `OpTimeout`;
both are `OpError`, under `triosip.errors.TriosipError`.
"""

from triosip.ops._base import LATENCY_BUCKETS as LATENCY_BUCKETS
from triosip.ops._base import Op as Op
from triosip.ops._base import OpAccounting as OpAccounting
from triosip.ops._base import OpError as OpError
from triosip.ops._base import OpFailed as OpFailed
from triosip.ops._base import OpKindStatistics as OpKindStatistics
from triosip.ops._base import OpTimeout as OpTimeout
from triosip.ops._base import op_accounting as op_accounting
from triosip.ops._base import op_faults as op_faults
from triosip.ops._base import run_with_timeout as run_with_timeout
from triosip.ops._db import BUSY_TIMEOUT as BUSY_TIMEOUT
from triosip.ops._db import Database as Database
from triosip.ops._db import DatabaseError as DatabaseError
from triosip.ops._db import DatabaseStatistics as DatabaseStatistics
from triosip.ops._db import database_path as database_path
from triosip.ops._db import open_database as open_database
from triosip.ops._exec import DEFAULT_MAX_OUTPUT as DEFAULT_MAX_OUTPUT
from triosip.ops._exec import TERMINATE_GRACE as TERMINATE_GRACE
from triosip.ops._exec import ExecResult as ExecResult
from triosip.ops._exec import exec_ as exec_
from triosip.ops._http import rest_ssl_context as rest_ssl_context
from triosip.ops._rest import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from triosip.ops._rest import RestClient as RestClient
from triosip.ops._rest import RestResponse as RestResponse
from triosip.ops._rest import RestStatistics as RestStatistics
from triosip.ops._rest import open_rest_client as open_rest_client
from triosip.ops._sleep import IN_THREAD_LIMIT as IN_THREAD_LIMIT
from triosip.ops._sleep import in_thread as in_thread
from triosip.ops._sleep import in_thread_limiter as in_thread_limiter
from triosip.ops._sleep import sleep as sleep

__all__ = [
    "BUSY_TIMEOUT",
    "DEFAULT_MAX_OUTPUT",
    "DEFAULT_TIMEOUT",
    "IN_THREAD_LIMIT",
    "LATENCY_BUCKETS",
    "TERMINATE_GRACE",
    "Database",
    "DatabaseError",
    "DatabaseStatistics",
    "ExecResult",
    "Op",
    "OpAccounting",
    "OpError",
    "OpFailed",
    "OpKindStatistics",
    "OpTimeout",
    "RestClient",
    "RestResponse",
    "RestStatistics",
    "database_path",
    "exec_",
    "in_thread",
    "in_thread_limiter",
    "op_accounting",
    "op_faults",
    "open_database",
    "open_rest_client",
    "rest_ssl_context",
    "run_with_timeout",
    "sleep",
]
