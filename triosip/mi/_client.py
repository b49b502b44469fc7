"""The command line's side of the MI: a synchronous HTTP client for ``triosip tasks`` and
``triosip stats`` (the stdlib's `http.client`; no trio in a command that makes one request at a
time, and no proxy from the environment: loopback traffic goes straight to the MI)."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

from triosip.errors import TriosipError
from triosip.mi._server import mi_url

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

DEFAULT_TIMEOUT = 5.0
"""Seconds the CLI waits for the MI to connect and answer."""


class MIUnavailable(TriosipError):
    """No MI answers at the address; the message says so in one line."""


class MIRefused(TriosipError):
    """The MI answered with an error (401 without the token, 400 for a bad filter...)."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    reason: str
    body: bytes

    @property
    def text(self) -> str:
        # The MI writes UTF-8 (JSON, and the Prometheus text format).
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class MIClient:
    """Requests to one running proxy's MI.

    Args:
        host: the MI's host (IPv6 without brackets).
        port: its port.
        token: the bearer token, for an MI not on loopback.
        timeout: seconds to connect and to wait for each answer.
    """

    def __init__(
        self, host: str, port: int, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.where = mi_url(host, port).removeprefix("http://")
        self._host = host
        self._port = port
        self._timeout = timeout
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """``GET path`` and its JSON.

        Raises:
            MIUnavailable: nothing answers, or not in time.
            MIRefused: the MI answered with an error status.
        """
        return self._request("GET", path, params).json()

    def get_text(self, path: str) -> str:
        """``GET path`` and its text (``/metrics``).

        Raises:
            MIUnavailable: nothing answers, or not in time.
            MIRefused: the MI answered with an error status.
        """
        return self._request("GET", path, None).text

    def post_json(self, path: str) -> Any:
        """``POST path`` and its JSON (``/reload``).

        Raises:
            MIUnavailable: nothing answers, or not in time.
            MIRefused: the MI answered with an error status.
        """
        return self._request("POST", path, None).json()

    def _request(self, method: str, path: str, params: Mapping[str, str] | None) -> _Answer:
        target = f"{path}?{urlencode(params)}" if params else path
        try:
            answer = self._exchange(method, target)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            # A kept-alive connection the MI has closed since (its idle timeout, in
            # `--watch`): once more, on a new one.
            self.close()
            answer = self._round_trip(method, target)
        if answer.status == 401:
            raise MIRefused(f"the triosip MI on {self.where} wants its token: give --token")
        if answer.status >= 400:
            try:
                document = answer.json()
                reason = str(document.get("error", answer.text))
            except (ValueError, AttributeError):
                reason = answer.text.strip() or answer.reason
            raise MIRefused(f"the triosip MI on {self.where} answered {answer.status}: {reason}")
        return answer

    def _exchange(self, method: str, target: str) -> _Answer:
        if self._connection is None:
            return self._round_trip(method, target)
        return self._send(self._connection, method, target)

    def _round_trip(self, method: str, target: str) -> _Answer:
        try:
            return self._send(self._connect(), method, target)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            raise MIUnavailable(self._nothing_there()) from None

    def _connect(self) -> http.client.HTTPConnection:
        self._connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._connection

    def _send(self, connection: http.client.HTTPConnection, method: str, target: str) -> _Answer:
        try:
            connection.request(method, target, headers=self._headers)
            response = connection.getresponse()
            answer = _Answer(response.status, response.reason, response.read())
        except TimeoutError:
            self.close()
            raise MIUnavailable(f"the triosip MI on {self.where} did not answer in time") from None
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            raise  # the caller knows whether the connection was a kept-alive one
        except (OSError, http.client.HTTPException):
            self.close()
            raise MIUnavailable(self._nothing_there()) from None
        if response.will_close:
            self.close()
        return answer

    def _nothing_there(self) -> str:
        return f"no triosip MI answers on {self.where}: is `triosip run` running? (--mi)"
