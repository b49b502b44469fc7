"""The management interface: the live task tree, transactions, statistics and reload over
HTTP and JSON (docs/architecture.md), and the terminal views of ``triosip tasks`` and
``triosip stats``."""

from triosip.mi._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from triosip.mi._client import MIClient as MIClient
from triosip.mi._client import MIRefused as MIRefused
from triosip.mi._client import MIUnavailable as MIUnavailable
from triosip.mi._http import HttpLimits as HttpLimits
from triosip.mi._http import HttpRequest as HttpRequest
from triosip.mi._http import HttpResponse as HttpResponse
from triosip.mi._http import serve_http as serve_http
from triosip.mi._server import DEFAULT_HOST as DEFAULT_HOST
from triosip.mi._server import DEFAULT_PORT as DEFAULT_PORT
from triosip.mi._server import ManagementInterface as ManagementInterface
from triosip.mi._server import MIConfig as MIConfig
from triosip.mi._server import MIError as MIError
from triosip.mi._server import MISources as MISources
from triosip.mi._server import is_authorized as is_authorized
from triosip.mi._server import mi_url as mi_url
from triosip.mi._server import parse_mi_address as parse_mi_address
from triosip.mi._server import serve_mi as serve_mi
from triosip.mi._server import token_refusal as token_refusal
from triosip.mi._stats import PROMETHEUS_CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from triosip.mi._stats import prometheus_text as prometheus_text
from triosip.mi._stats import statistics_document as statistics_document
from triosip.mi._tasks import BranchSample as BranchSample
from triosip.mi._tasks import ClientSample as ClientSample
from triosip.mi._tasks import OpSample as OpSample
from triosip.mi._tasks import QueryError as QueryError
from triosip.mi._tasks import TaskQuery as TaskQuery
from triosip.mi._tasks import TaskSample as TaskSample
from triosip.mi._tasks import TransactionSample as TransactionSample
from triosip.mi._tasks import task_tree as task_tree
from triosip.mi._tasks import transaction_table as transaction_table
from triosip.mi._tasks import transaction_timers as transaction_timers
from triosip.mi._view import print_stats as print_stats
from triosip.mi._view import print_tasks as print_tasks
from triosip.mi._view import render_stats as render_stats
from triosip.mi._view import render_tasks as render_tasks

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "PROMETHEUS_CONTENT_TYPE",
    "BranchSample",
    "ClientSample",
    "HttpLimits",
    "HttpRequest",
    "HttpResponse",
    "MIClient",
    "MIConfig",
    "MIError",
    "MIRefused",
    "MISources",
    "MIUnavailable",
    "ManagementInterface",
    "OpSample",
    "QueryError",
    "TaskQuery",
    "TaskSample",
    "TransactionSample",
    "is_authorized",
    "mi_url",
    "parse_mi_address",
    "print_stats",
    "print_tasks",
    "prometheus_text",
    "render_stats",
    "render_tasks",
    "serve_http",
    "serve_mi",
    "statistics_document",
    "task_tree",
    "token_refusal",
    "transaction_table",
    "transaction_timers",
]
