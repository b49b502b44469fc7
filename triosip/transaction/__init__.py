"""RFC 3261 §17 transactions, with RFC 6026's Accepted states, on trio.

Server transactions are tasks, each with its own nursery, until answered; then records
whose timers the layer's one timers loop runs. Client transactions run in the task that
calls :meth:`TransactionLayer.run_client`, or, started with
:meth:`TransactionLayer.start_client` (UDP), as records run by that same loop. Every timer
is a cancel-scope deadline.
"""

from ._client import ClientTransaction as ClientTransaction
from ._errors import TransactionError as TransactionError
from ._errors import TransactionTimeout as TransactionTimeout
from ._errors import TransportFailure as TransportFailure
from ._fsm import ClientState as ClientState
from ._fsm import ServerState as ServerState
from ._layer import Alarm as Alarm
from ._layer import TransactionLayer as TransactionLayer
from ._layer import TransactionStatistics as TransactionStatistics
from ._limits import DEFAULT_MAX_TRANSACTIONS as DEFAULT_MAX_TRANSACTIONS
from ._limits import LoadLimits as LoadLimits
from ._port import Transport as Transport
from ._server import ServerTransaction as ServerTransaction
from ._timers import TimerConfig as TimerConfig

__all__ = [
    "DEFAULT_MAX_TRANSACTIONS",
    "Alarm",
    "ClientState",
    "ClientTransaction",
    "LoadLimits",
    "ServerState",
    "ServerTransaction",
    "TimerConfig",
    "TransactionError",
    "TransactionLayer",
    "TransactionStatistics",
    "TransactionTimeout",
    "Transport",
    "TransportFailure",
]
