"""The ``rest`` op: HTTP requests through one shared pool of keep-alive connections.

Opening a client costs milliseconds (an SSL context loads the system's CA store), so the proxy
opens one (`open_rest_client`) and every request borrows a pooled connection from it. The
client is triosip's own (`triosip.ops._http`): httptools on trio sockets, with no anyio layer and no
pool machinery beyond a list per origin, so that a request costs about what a SIP message
does. When a request is cancelled, its connection is closed at once (its HTTP/1.1 state is
half-way through an exchange, so it can't be reused): the peer sees the connection close, and
the pool never hands out a half-used connection. Redirects are not followed (a 3xx is a
response like any other); proxies from the environment are not used.

A response of any status is a result (the script decides what a 404 means); only failures to
get a response — refused connections, broken or malformed exchanges, the client's own
timeout — are errors.
"""

from __future__ import annotations

import codecs
import json as jsonlib
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import Message
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from triosip.ops._base import Op, OpFailed, OpTimeout
from triosip.ops._http import HttpError, HttpPool, HttpTimeout, rest_ssl_context

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Mapping

logger = logging.getLogger(__name__)

# The client's own limit on each phase of a request (connect, write, each read), in seconds:
# a safety net under the script's op timeout and the transaction's timers.
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RestResponse:
    """An HTTP response, read in full.

    Attributes:
        request: the request it answers, as ``"GET http://host/path"``.
        status: the status code (any: a 404 or a 500 is a response, not an error).
        headers: the header fields, by lower-case name; repeated fields are joined by ``", "``.
        content: the body as bytes.
        text: the body decoded (charset from Content-Type, else UTF-8).
    """

    request: str
    status: int
    headers: Mapping[str, str]
    content: bytes
    text: str

    def json(self) -> Any:
        """The body parsed as JSON.

        Returns:
            The parsed value.

        Raises:
            OpFailed: the body is not JSON.
        """
        try:
            return jsonlib.loads(self.content)
        except ValueError as exc:
            raise OpFailed("rest", self.request, f"response body is not JSON: {exc}") from exc

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300


@dataclass(frozen=True, slots=True, kw_only=True)
class RestStatistics:
    """A snapshot of a `RestClient`'s counters.

    Attributes:
        requests_in_flight: requests started and not yet finished.
        requests_done: requests that got a response (of any status).
        requests_failed: requests that raised `OpFailed`.
        requests_timed_out: requests that passed the client's own timeout (`OpTimeout`).
        requests_cancelled: requests that were cancelled.
        connections_idle: keep-alive connections in the pool, waiting for a request.
        connections_busy: connections carrying (or opening for) a request.
        connections_opened: connections opened since the start.
        connections_closed: connections closed since the start (for any reason).
        connections_closed_by_cancel: of those, the ones closed because their request was
            cancelled half-way through its exchange.
    """

    requests_in_flight: int
    requests_done: int
    requests_failed: int
    requests_timed_out: int
    requests_cancelled: int
    connections_idle: int = 0
    connections_busy: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connections_closed_by_cancel: int = 0


_Outcome = Literal["done", "failed", "timed_out", "cancelled"]


class RestClient:
    """HTTP requests as ops, on one pooled client; made by `open_rest_client`."""

    def __init__(self, pool: HttpPool, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._in_flight = 0
        self._outcomes: dict[_Outcome, int] = dict.fromkeys(
            ("done", "failed", "timed_out", "cancelled"), 0
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Op[RestResponse]:
        """An op that sends an HTTP request and reads the whole response.

        Args:
            method: the HTTP method (``"GET"``, ``"POST"``, …).
            url: an ``http://`` or ``https://`` URL.
            json: a value to send as a JSON body (``Content-Type: application/json``).
            data: a raw body to send (a str is sent as UTF-8); not with ``json``.
            headers: header fields to add.
            params: query parameters to add to the URL.

        Returns:
            An op (kind ``"rest"``, described as ``"GET http://…"``) whose result is the
            `RestResponse`, whatever its status.

        Raises:
            ValueError: both ``json`` and ``data`` are given.
            OpFailed: (when run) no response: the connection was refused or broke, the URL
                is invalid, the response is malformed.
            OpTimeout: (when run) a phase of the request passed the client's own timeout.
        """
        if json is not None and data is not None:
            raise ValueError("give a request body as json= or as data=, not both")
        method = method.upper()
        description = f"{method} {url}"

        async def send() -> RestResponse:
            return await self._send(
                description,
                method,
                url,
                json=json,
                data=data,
                headers=headers,
                params=params,
            )

        return Op("rest", description, send)

    def get(
        self,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Op[RestResponse]:
        """An op that sends a GET; see `request`."""
        return self.request("GET", url, json=json, data=data, headers=headers, params=params)

    def post(
        self,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Op[RestResponse]:
        """An op that sends a POST; see `request`."""
        return self.request("POST", url, json=json, data=data, headers=headers, params=params)

    def put(
        self,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Op[RestResponse]:
        """An op that sends a PUT; see `request`."""
        return self.request("PUT", url, json=json, data=data, headers=headers, params=params)

    def delete(
        self,
        url: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Op[RestResponse]:
        """An op that sends a DELETE; see `request`."""
        return self.request("DELETE", url, json=json, data=data, headers=headers, params=params)

    def statistics(self) -> RestStatistics:
        """A snapshot of the counters.

        Returns:
            The snapshot.
        """
        pool = self._pool.statistics()
        return RestStatistics(
            requests_in_flight=self._in_flight,
            requests_done=self._outcomes["done"],
            requests_failed=self._outcomes["failed"],
            requests_timed_out=self._outcomes["timed_out"],
            requests_cancelled=self._outcomes["cancelled"],
            connections_idle=pool.connections_idle,
            connections_busy=pool.connections_busy,
            connections_opened=pool.connections_opened,
            connections_closed=pool.connections_closed,
            connections_closed_by_cancel=pool.connections_closed_by_cancel,
        )

    async def _send(
        self,
        description: str,
        method: str,
        url: str,
        *,
        json: Any,
        data: bytes | str | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> RestResponse:
        outcome: _Outcome = "cancelled"
        self._in_flight += 1
        try:
            body = b""
            content_type = None
            if json is not None:
                body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode()
                content_type = "application/json"
            elif data is not None:
                body = data.encode() if isinstance(data, str) else data
            try:
                result = await self._pool.request(
                    method,
                    url,
                    headers=headers,
                    params=params,
                    body=body,
                    content_type=content_type,
                )
            except HttpTimeout as exc:
                outcome = "timed_out"
                raise OpTimeout("rest", description, self._timeout) from exc
            except HttpError as exc:
                outcome = "failed"
                raise OpFailed("rest", description, str(exc)) from exc
            outcome = "done"
            fields: dict[str, str] = {}
            for name, value in result.headers:
                fields[name] = f"{fields[name]}, {value}" if name in fields else value
            return RestResponse(
                request=description,
                status=result.status,
                headers=MappingProxyType(fields),
                content=result.body,
                text=result.body.decode(_charset(fields.get("content-type")), "replace"),
            )
        finally:
            self._in_flight -= 1
            self._outcomes[outcome] += 1


def _charset(content_type: str | None) -> str:
    # RFC 9110 §8.3: the charset parameter of Content-Type; UTF-8 when there is none, or when
    # it names no codec Python knows.
    if not content_type or "charset" not in content_type:
        return "utf-8"
    message = Message()
    message["content-type"] = content_type
    charset = message.get_content_charset()
    if charset:
        try:
            codecs.lookup(charset)
        except LookupError:
            return "utf-8"
        return charset
    return "utf-8"


@asynccontextmanager
async def open_rest_client(
    *,
    max_connections: int = 100,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the per-phase limit, not a scope
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[RestClient]:
    """Open the shared HTTP client, and close its pooled connections at the end.

    The block owns the pool: run the client's ops in nurseries inside it.

    Args:
        max_connections: the most connections open at once, over all hosts; more requests
            wait for one to free.
        timeout: the client's own limit on each phase of a request (connect, write, each read),
            in seconds; passing it raises `OpTimeout`. It is a safety net: the script's
            ``timeout=`` and the transaction's timers are the real limits.
        ssl_context: the TLS settings of https:// requests; by default the system's CA store,
            with the certificate and the host name checked.

    Yields:
        The `RestClient`.
    """
    pool = HttpPool(
        max_connections=max_connections,
        timeout=timeout,
        ssl_context=ssl_context if ssl_context is not None else rest_ssl_context(),
    )
    logger.debug("REST client opened: at most %d connections", max_connections)
    try:
        yield RestClient(pool, timeout=timeout)
    finally:
        pool.close()
