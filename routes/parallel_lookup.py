"""Two lookups at once: the caller in the database, the callee from a REST service.

Run it with::

    triosip run routes/parallel_lookup.py --db sqlite:////var/lib/triosip/subscribers.db \\
        --define routing_url=http://127.0.0.1:8000/route

The database has the subscribers (see routes/opensips_async.py)::

    CREATE TABLE subscribers (username TEXT PRIMARY KEY, setid INTEGER NOT NULL);

and the service answers ``GET <routing_url>?user=<callee>`` as in routes/rest_routing.py:
``{"destination": "udp:10.0.0.7:5060"}``, or 404.

A call needs both answers: is the caller a subscriber (and in which set), and where is the
callee. They don't depend on each other, so we ask both at once, and the call waits for the
slower of the two instead of their sum. OpenSIPS has ``launch`` and ``async`` for one
function each; joining two means writing the join yourself. Here:

- ``rows, answer = await req.gather(query, request, timeout=...)`` runs both in the
  transaction and returns both results, in order.
- If either fails, the other is cancelled at once (the query interrupted, or the HTTP
  connection closed) and the route gets the failure as an `OpError`, whose ``kind``
  (``"db"`` or ``"rest"``) says which one, so that the caller hears a clear reason.
- A timeout is an `OpTimeout` for the pair; a CANCEL or the fr timer cancels both.

(``req.async_([query, request], resume=route)`` does the same and resumes ``route`` with
``req.result == [rows, answer]``.)

Script parameters (``--define NAME=VALUE``):

- ``routing_url``: the routing service's URL (required).
- ``lookup_timeout``: seconds the two lookups may take together (default 2).
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

LOOKUP_TIMEOUT = 2.0


@routes.request
async def main(req: RequestContext) -> None:
    # In-dialog requests (BYE, re-INVITE, the ACK of a 200) follow their Route set, as in
    # routes/default.py: the lookups ran when the dialog started; those of a UA that ignored our
    # Record-Route go downstream.
    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

    req.record_route()
    caller = req.db.query("SELECT setid FROM subscribers WHERE username = ?", [req.from_user])
    callee = req.rest.get(req.params["routing_url"], params={"user": req.ruri_user or ""})
    timeout = float(req.params.get("lookup_timeout", LOOKUP_TIMEOUT))
    try:
        rows, answer = await req.gather(caller, callee, timeout=timeout)
    except OpTimeout as exc:
        req.log.warning("lookups: %s", exc)
        await req.reply(503, "Lookup Timed Out", headers={"Retry-After": "5"})
        return
    except OpError as exc:
        req.log.error("lookups: %s", exc)
        if exc.kind == "db":
            await req.reply(500, "Subscriber Lookup Failed")
        else:
            await req.reply(503, "Routing Service Unavailable")
        return

    if not rows:
        await req.reply(403, "Unknown Caller")
        return
    if answer.status == 404:
        await req.reply(404, "Not Found")
        return
    destination = destination_of(answer)
    if destination is None:
        req.log.error("routing service answered %d: %s", answer.status, answer.text[:200])
        await req.reply(500, "Bad Routing Answer")
        return

    req.vars["setid"] = rows[0]["setid"]
    req.log.info("caller %s in set %s, to %s", req.from_user, req.vars["setid"], destination)
    req.add_header("X-Subscriber-Set", str(req.vars["setid"]))
    try:
        relayed = await req.relay(destination)
    except ScriptError as exc:  # not a destination ("udp:host:port", "sip:host", ...)
        req.log.error("routing service: %s", exc)
        await req.reply(500, "Bad Routing Answer")
        return
    if not relayed:
        await req.reply(503, "No Route")


def destination_of(answer: RestResponse) -> str | None:
    """The destination in the service's 200 JSON answer, or None if it names none."""
    if answer.status != 200:
        return None
    try:
        destination = answer.json().get("destination")
    except (OpError, AttributeError):  # not JSON (OpFailed), or JSON but not an object
        return None
    return destination if isinstance(destination, str) else None
