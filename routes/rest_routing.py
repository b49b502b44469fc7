"""Routing decided by a REST service: ask it where the callee is, then relay there.

Run it with::

    triosip run routes/rest_routing.py --define routing_url=http://127.0.0.1:8000/route

For each new request the proxy asks ``GET <routing_url>?user=<Request-URI user>``, and the
service answers ``200`` with ``{"destination": "udp:10.0.0.7:5060"}``, or ``404`` when it
knows no such user. In OpenSIPS this is rest_client's ``rest_get()`` (or its async form),
in Kamailio http_client's ``http_client_query()``; both leave you to parse the JSON and to
tell a slow service from a missing user. Here:

- ``await req.call(op, timeout=...)`` waits for the answer *inside the route*, keeping
  its locals, like a plain function call; the proxy goes on with other messages meanwhile.
  (``await op`` alone works too; ``req.call`` adds the timeout.)
- A refused connection, a timeout and a body that is not JSON are each an `OpError` the
  route catches, and each gets its own answer: the caller is never left to its timer.
- A CANCEL or the fr timer closes the HTTP connection at once.

Script parameters (``--define NAME=VALUE``):

- ``routing_url``: the service's URL (required).
- ``rest_timeout``: seconds the service may take (default 1).
- ``downstream``: where the in-dialog requests of a UA that ignores Record-Route go (sipp's
  built-in uac sends its ACK and BYE to the proxy, with no Route); without it they get 404.
"""

from triosip.script.api import (
    OpError,
    OpTimeout,
    RequestContext,
    RestResponse,
    Routes,
    ScriptError,
)

routes = Routes(requires=("routing_url",))

REST_TIMEOUT = 1.0


@routes.request
async def main(req: RequestContext) -> None:
    # In-dialog requests (BYE, re-INVITE, the ACK of a 200) follow their Route set, as in
    # routes/default.py: the service was asked when the dialog started; those of a UA that ignored
    # our Record-Route go downstream.
    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

    req.record_route()
    lookup = req.rest.get(req.params["routing_url"], params={"user": req.ruri_user or ""})
    try:
        answer = await req.call(lookup, timeout=float(req.params.get("rest_timeout", REST_TIMEOUT)))
    except OpTimeout as exc:
        req.log.warning("routing service: %s", exc)
        await req.reply(503, "Routing Service Timed Out", headers={"Retry-After": "5"})
        return
    except OpError as exc:  # OpFailed: refused, reset, not HTTP...
        req.log.error("routing service: %s", exc)
        await req.reply(503, "Routing Service Unavailable")
        return

    # Any HTTP status is an answer, not an error: the route decides what it means.
    if answer.status == 404:
        await req.reply(404, "Not Found")
        return
    if answer.status != 200:
        req.log.error("routing service answered %d: %s", answer.status, answer.text[:200])
        await req.reply(500, "Routing Service Error")
        return
    destination = destination_of(answer)
    if destination is None:
        req.log.error("routing service answered no destination: %s", answer.text[:200])
        await req.reply(500, "Bad Routing Answer")
        return
    try:
        relayed = await req.relay(destination)
    except ScriptError as exc:  # not a destination ("udp:host:port", "sip:host", ...)
        req.log.error("routing service: %s", exc)
        await req.reply(500, "Bad Routing Answer")
        return
    if not relayed:
        await req.reply(503, "No Route")


def destination_of(answer: RestResponse) -> str | None:
    """The destination in the service's JSON answer, or None if it names none."""
    try:
        destination = answer.json().get("destination")
    except (OpError, AttributeError):  # not JSON (OpFailed), or JSON but not an object
        return None
    return destination if isinstance(destination, str) else None
