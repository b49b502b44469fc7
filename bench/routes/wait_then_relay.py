"""bench/bench_async.py's routes: every new INVITE waits on something, then is relayed.

routes/default.py, plus a wait before each initial INVITE is relayed, chosen with
``--define wait=...``:

- ``none``: no wait (routes/default.py itself, for the baseline);
- ``sleep``: ``req.async_(sleep(delay), resume=relay_new)``: the sleep op runs in the
  transaction and the route returns; the proxy goes on with other messages;
- ``rest``: ``req.async_(req.rest.get(rest_url), resume=relay_new)``: an HTTP GET to a
  service that answers after its own delay (bench_async.py starts one);
- ``block``: ``time.sleep(delay)`` called in the route, as a worker without async would:
  the whole proxy stops for that long;
- ``lookup``: ``req.async_(req.db.query(...), resume=relay_new)``: one subscriber lookup
  (routes/opensips_async.py's) on ``--db``, sqlite or PostgreSQL.

Other parameters: ``delay`` (seconds, default 0.05), ``rest_url``, ``rest_count`` (GETs per
INVITE, default 1), ``op_timeout`` (seconds
the op may take, default 5: it fails with 503, which sipp counts as a failed call), and
``downstream`` (where new requests go, as in routes/default.py). Kamailio's counterpart of
``sleep`` is bench/kamailio-async.cfg (``async_ms_route``).

Run it by hand with::

    triosip run bench/routes/wait_then_relay.py --define wait=sleep --define delay=0.05 \\
        --define downstream=udp:127.0.0.1:5080
"""

import time

from triosip.script.api import RequestContext, Routes, sleep

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    if req.has_to_tag:
        # In-dialog requests (the ACK of the 200, the BYE) as in routes/default.py: sipp's
        # built-in uac ignores Record-Route, so they come back to us by Request-URI.
        destination = None
        if not req.loose_route() and req.ruri_is_myself:
            destination = req.params.get("downstream")
        if not await req.relay(destination) and not req.is_stateless:
            await req.reply(404, "Not Here")
        return

    wait = req.params.get("wait", "none")
    if req.method != "INVITE" or wait == "none":
        await relay_new(req)
        return
    delay = float(req.params.get("delay", "0.05"))
    timeout = float(req.params.get("op_timeout", "5"))
    if wait == "sleep":
        req.async_(sleep(delay), resume=relay_new, timeout=timeout)
    elif wait == "rest":
        # rest_count > 1: that many GETs in a row (bench_async.py's restcpu part, which
        # divides the CPU they add by their number), the last one through async_.
        for _ in range(int(req.params.get("rest_count", "1")) - 1):
            await req.call(req.rest.get(req.params["rest_url"]), timeout=timeout)
        req.async_(req.rest.get(req.params["rest_url"]), resume=relay_new, timeout=timeout)
    elif wait == "lookup":
        lookup = req.db.query(
            "SELECT setid FROM subscribers WHERE username = ?", [req.from_user or ""]
        )
        req.async_(lookup, resume=relay_new, timeout=timeout)
    elif wait == "block":
        # What a worker without async does: nothing else runs until the wait is over.
        time.sleep(delay)  # noqa: ASYNC251 - blocking on purpose: the bench's baseline
        await relay_new(req)
    else:
        await req.reply(500, f"Unknown wait {wait!r}")


@routes.resume
async def relay_new(req: RequestContext) -> None:
    # Also the resume route of the ops above: req.error is an OpError if the op failed.
    if req.error is not None:
        req.log.warning("the wait failed: %s", req.error)
        await req.reply(503, "Wait Failed")
        return
    # As routes/default.py: stay on the path of the dialog (its failover route is not
    # armed: with no backup downstream it does nothing).
    req.record_route()
    if not await req.relay(req.params.get("downstream")):
        await req.reply(503, "No Route")
