"""Serial forking on a busy callee: relay to ``first``; if it answers 486, try ``second``.

The default routes fail over only on 408/500/503; this file is what a test of the failure
route loads. Run it with::

    triosip run tests/proxy/routes/serial_forking.py \
        --define first=udp:127.0.0.1:5080 --define second=udp:127.0.0.1:5090
"""

from triosip.script.api import FailureContext, RequestContext, Routes

routes = Routes()


@routes.request
async def main(req: RequestContext) -> None:
    if req.has_to_tag:
        # In-dialog: follow the Route set (we record-routed), else the Request-URI.
        req.loose_route()
        if not await req.relay() and not req.is_stateless:
            await req.reply(404, "Not Here")
        return
    req.record_route()
    req.on_failure(next_destination)
    if not await req.relay(req.params["first"]):
        await req.reply(503, "No Route")


@routes.failure
async def next_destination(req: FailureContext) -> None:
    req.log.info("failure route: %d from %s", req.status, req.params["first"])
    if req.status == 486 and not req.vars.get("tried_second"):
        req.vars["tried_second"] = True
        await req.relay(req.params["second"])
