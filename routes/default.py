"""The default routes: a record-routing proxy in front of one downstream.

Run it with::

    triosip run routes/default.py --define downstream=udp:127.0.0.1:5080

Every new request goes to the downstream (or, with no ``downstream`` defined, to the host
of its Request-URI); the dialog's later requests come back through us because we
record-route, and follow their Route set. Read it as a tutorial: it is what Kamailio's
and OpenSIPS's sample configs do, in Python.
"""

from triosip.script.api import FailureContext, RequestContext, Routes

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    # Max-Forwards, loops and Proxy-Require were checked before we got here (483, 482,
    # 420), and CANCELs are matched and relayed by the proxy itself.

    # In-dialog requests (BYE, re-INVITE, the ACK of a 200...) carry a To tag. They follow
    # their Route set, else go to their Request-URI (the callee's Contact). A UAC that
    # ignores Record-Route (sipp's built-in uac) names us there, as in its INVITE: that
    # request goes downstream, as the INVITE did. What can't go is answered 404.
    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

    # An ACK without a To tag matched no transaction here (the ACK of a non-2xx is
    # absorbed by its transaction before any route runs): there is nothing to relay it
    # to, as in Kamailio's sample config (t_check_trans() fails: exit).
    if req.method == "ACK":
        return

    # A new dialog or a standalone request: stay on the path of the dialog, and relay.
    req.record_route()
    req.on_failure(failover)
    downstream = req.params.get("downstream")
    if not await req.relay(downstream):
        await req.reply(503, "No Route")


@routes.failure
async def failover(req: FailureContext) -> None:
    # Every branch failed; req.status is the best failure (408 if nothing answered in
    # fr_timeout). With a backup downstream defined, try it once: serial forking.
    backup = req.params.get("backup")
    if backup and req.status in (408, 500, 503) and not req.vars.get("tried_backup"):
        req.vars["tried_backup"] = True
        req.log.info("%s from the downstream, trying %s", req.status, backup)
        await req.relay(backup)
