"""Reading and editing the request a route has: `MessageView`, shared by the request,
failure, resume and branch routes' contexts (OpenSIPS's ``$ru``, ``$fU``, ``$hdr()``...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from triosip.sip import Request


class MessageView:
    """Accessors over ``self._request``, which each context maps to where its request
    lives (the transaction's, or one branch's). Edits build a new request (messages are
    values) and store it back there."""

    _request: Request

    @property
    def request(self) -> Request:
        """The request as the route has it now (edits included)."""
        return self._request

    @property
    def method(self) -> str:
        return self._request.method

    @property
    def ruri(self) -> str:
        """The Request-URI; assign to rewrite it ($ru)."""
        return str(self._request.uri)

    @ruri.setter
    def ruri(self, value: str) -> None:
        self._request = self._request.with_uri(value)

    @property
    def ruri_user(self) -> str | None:
        return self._request.uri.user

    @property
    def ruri_domain(self) -> str:
        return self._request.uri.host

    @property
    def from_user(self) -> str | None:
        return self._request.from_.uri.user

    @property
    def from_domain(self) -> str:
        return self._request.from_.uri.host

    @property
    def from_tag(self) -> str | None:
        return self._request.from_.tag

    @property
    def to_user(self) -> str | None:
        return self._request.to.uri.user

    @property
    def to_domain(self) -> str:
        return self._request.to.uri.host

    @property
    def to_tag(self) -> str | None:
        return self._request.to.tag

    @property
    def has_to_tag(self) -> bool:
        """Whether the request is within a dialog (has_totag)."""
        return self._request.to.tag is not None

    @property
    def call_id(self) -> str:
        return self._request.call_id

    def header(self, name: str) -> str | None:
        """The value of the first header of that name, or None ($hdr(name))."""
        return self._request.header(name)

    def headers(self, name: str) -> list[str]:
        """Every comma-separated value of that header, over all its lines."""
        return self._request.header_values(name)

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line (append_hf / insert_hf)."""
        if first:
            self._request = self._request.with_header_first(name, value)
        else:
            self._request = self._request.with_header_last(name, value)

    def remove_header(self, name: str) -> None:
        """Remove every line of that header (remove_hf)."""
        self._request = self._request.without_header(name)
