"""Reading and editing the request a route has: `MessageView`, shared by the request,
failure, resume and branch routes' contexts (OpenSIPS's ``$ru``, ``$fU``, ``$hdr()``...)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from triosip.sip import Request


class HoldsRequest(Protocol):
    """Where a context's request lives: a transaction (or a stateless request), or one
    branch of it."""

    request: Request


class MessageView:
    """Accessors over ``self._holder.request``, where each context's request lives (the
    transaction's, or one branch's). Edits build a new request (messages are values) and
    store it back there."""

    _holder: HoldsRequest

    @property
    def request(self) -> Request:
        """The request as the route has it now (edits included)."""
        return self._holder.request

    @property
    def method(self) -> str:
        return self._holder.request.method

    @property
    def ruri(self) -> str:
        """The Request-URI; assign to rewrite it ($ru)."""
        return str(self._holder.request.uri)

    @ruri.setter
    def ruri(self, value: str) -> None:
        holder = self._holder
        holder.request = holder.request.with_uri(value)

    @property
    def ruri_user(self) -> str | None:
        return self._holder.request.uri.user

    @property
    def ruri_domain(self) -> str:
        return self._holder.request.uri.host

    @property
    def from_user(self) -> str | None:
        return self._holder.request.from_.uri.user

    @property
    def from_domain(self) -> str:
        return self._holder.request.from_.uri.host

    @property
    def from_tag(self) -> str | None:
        return self._holder.request.from_.tag

    @property
    def to_user(self) -> str | None:
        return self._holder.request.to.uri.user

    @property
    def to_domain(self) -> str:
        return self._holder.request.to.uri.host

    @property
    def to_tag(self) -> str | None:
        return self._holder.request.to.tag

    @property
    def has_to_tag(self) -> bool:
        """Whether the request is within a dialog (has_totag)."""
        return self._holder.request.to.tag is not None

    @property
    def call_id(self) -> str:
        return self._holder.request.call_id

    def header(self, name: str) -> str | None:
        """The value of the first header of that name, or None ($hdr(name))."""
        return self._holder.request.header(name)

    def headers(self, name: str) -> list[str]:
        """Every comma-separated value of that header, over all its lines."""
        return self._holder.request.header_values(name)

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line (append_hf / insert_hf)."""
        holder = self._holder
        if first:
            holder.request = holder.request.with_header_first(name, value)
        else:
            holder.request = holder.request.with_header_last(name, value)

    def remove_header(self, name: str) -> None:
        """Remove every line of that header (remove_hf)."""
        holder = self._holder
        holder.request = holder.request.without_header(name)
