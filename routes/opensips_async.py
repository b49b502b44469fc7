"""OpenSIPS's async() example, runnable: a DB query suspends the request, a route resumes it.

Run it with::

    triosip run routes/opensips_async.py --db sqlite:////var/lib/triosip/subscribers.db \\
        --define downstream=udp:127.0.0.1:5080

and give the database a table of subscribers::

    CREATE TABLE subscribers (username TEXT PRIMARY KEY, setid INTEGER NOT NULL);
    INSERT INTO subscribers VALUES ('alice', 1), ('bob', 2);

This is the example of OpenSIPS's async() statement (opensips.org, "Asynchronous
Statements"), line for line::

    route {
        async(avp_db_query("SELECT setid FROM subscribers WHERE username='$fU'",
                           "$avp(setid)"), my_resume_route);
        # never reached
    }
    route[my_resume_route] {
        xlog("The set used by the callee is $avp(setid)\\n");
    }

What changes in Python:

- ``req.async_(op, resume=route, timeout=...)`` is ``async(f, resume_route, timeout)``. The
  query runs in the transaction while the proxy goes on with other messages; the route
  returns (the "never reached" of OpenSIPS is just the end of our function).
- The resume route gets the rows in ``req.result``; ``$avp(setid)`` becomes
  ``req.vars["setid"]``, which lives as long as the transaction, as an AVP does.
- A query that fails or passes its timeout does not resume with an empty AVP: the resume
  route sees ``req.error`` (an `OpFailed` or an `OpTimeout`) and answers the caller.
  The query is parameterised (``?``), never pasted into the SQL as ``'$fU'`` is.
- A CANCEL or the fr timer cancels the query (sqlite's statement is interrupted) and the
  resume route does not run: OpenSIPS would wait for the query anyway.

Script parameters (``--define NAME=VALUE``):

- ``downstream``: where new requests go (``udp:10.0.0.1:5060``), else to the Request-URI's
  host; and the in-dialog requests of a UA that ignores Record-Route (sipp's built-in
  uac sends its ACK and BYE to the proxy, with no Route).
- ``db_timeout``: seconds the query may take (default 2).
"""

from triosip.script.api import OpTimeout, RequestContext, Routes

routes = Routes()

# How long the query may take unless --define db_timeout=SECONDS says otherwise. Well under
# fr_timeout: the caller should hear our 503, not a 408.
DB_TIMEOUT = 2.0


@routes.request
async def main(req: RequestContext) -> None:
    # In-dialog requests (BYE, re-INVITE, the ACK of a 200) follow their Route set, as in
    # routes/default.py: the subscriber was looked up when the dialog started; those of a UA that
    # ignored our Record-Route go downstream.
    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

    req.record_route()
    # $fU is req.from_user. The op only describes the query: async_() starts it in this
    # transaction and returns at once.
    lookup = req.db.query("SELECT setid FROM subscribers WHERE username = ?", [req.from_user])
    timeout = float(req.params.get("db_timeout", DB_TIMEOUT))
    req.async_(lookup, resume=my_resume_route, timeout=timeout)
    # Nothing to do after async_(): like OpenSIPS's "never reached", the route just ends.


@routes.resume
async def my_resume_route(req: RequestContext) -> None:
    if isinstance(req.error, OpTimeout):
        # Busy database: tell the caller to come back rather than fail the call for good.
        req.log.warning("subscriber lookup: %s", req.error)
        await req.reply(503, "Subscriber Lookup Timed Out", headers={"Retry-After": "5"})
        return
    if req.error is not None:
        # OpFailed: no such table, a locked or corrupt file... The caller can do nothing.
        req.log.error("subscriber lookup: %s", req.error)
        await req.reply(500, "Subscriber Lookup Failed")
        return

    rows = req.result  # a list of dicts, one per row: [{"setid": 1}] or []
    req.vars["setid"] = rows[0]["setid"] if rows else None
    req.log.info("The set used by the callee is %s", req.vars["setid"])
    if req.vars["setid"] is not None:
        # Tell the downstream which set to use (OpenSIPS would hand $avp(setid) to
        # ds_select_dst()); the header goes out with the request we relay.
        req.add_header("X-Subscriber-Set", str(req.vars["setid"]))

    if not await req.relay(req.params.get("downstream")):
        await req.reply(503, "No Route")
