"""The command line's side of the MI: a synchronous HTTP client for ``triosip tasks`` and
``triosip stats`` (httpx; no trio in a command that makes one request at a time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import httpx

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
        headers = {"authorization": f"Bearer {token}"} if token else {}
        # trust_env=False: an HTTP proxy from the environment must not see loopback traffic.
        self._client = httpx.Client(
            base_url=mi_url(host, port), headers=headers, timeout=timeout, trust_env=False
        )

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
        self._client.close()

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

    def _request(self, method: str, path: str, params: Mapping[str, str] | None) -> httpx.Response:
        try:
            response = self._client.request(method, path, params=params)
        except httpx.TimeoutException:
            raise MIUnavailable(f"the triosip MI on {self.where} did not answer in time") from None
        except httpx.TransportError:
            raise MIUnavailable(
                f"no triosip MI answers on {self.where}: is `triosip run` running? (--mi)"
            ) from None
        if response.status_code == 401:
            raise MIRefused(f"the triosip MI on {self.where} wants its token: give --token")
        if response.status_code >= 400:
            try:
                reason = str(response.json().get("error", response.text))
            except ValueError:
                reason = response.text.strip() or response.reason_phrase
            raise MIRefused(
                f"the triosip MI on {self.where} answered {response.status_code}: {reason}"
            )
        return response
