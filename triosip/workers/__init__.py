"""``triosip run --workers N``: worker processes sharing the listeners, and their supervisor
(docs/architecture.md, "Workers").

`Supervisor` starts and keeps the workers and serves one MI for them all; `WorkerLink` is
what a worker got from it. `merge_statistics` and `merge_tasks` merge the workers' MI
documents.
"""

from triosip.workers._link import WorkerLink as WorkerLink
from triosip.workers._merge import merge_statistics as merge_statistics
from triosip.workers._merge import merge_tasks as merge_tasks
from triosip.workers._merge import worker_metrics as worker_metrics
from triosip.workers._supervisor import Supervisor as Supervisor
from triosip.workers._supervisor import WorkerFailed as WorkerFailed

__all__ = [
    "Supervisor",
    "WorkerFailed",
    "WorkerLink",
    "merge_statistics",
    "merge_tasks",
    "worker_metrics",
]
