"""Routing decided by an external program: run it, relay to the destination it prints.

Run it with::

    triosip run routes/exec_example.py --define program=/usr/local/bin/route-call

The program gets the callee's user as its one argument and the call's data in its
environment (``SIP_METHOD``, ``SIP_RURI``, ``SIP_FROM_USER``, ``SIP_TO_USER``,
``SIP_CALL_ID``, ``SIP_SOURCE_IP``), and prints where the call goes on its first line,
then exits 0. For instance::

    #!/bin/sh
    case "$1" in
        alice) echo udp:10.0.0.7:5060 ;;
        *) echo "no route for $1 (call $SIP_CALL_ID from $SIP_FROM_USER)" >&2; exit 1 ;;
    esac

It is OpenSIPS's ``exec()`` run under ``async(exec(...), resume_route)``, and what Kamailio's
``exec_avp()`` does, without blocking a worker. Here:

- ``exec_(argv, env=...)`` describes the run; no shell reads the call's data, so a From user
  like ``$(reboot)`` stays a string. ``req.async_()`` starts it, and ``resume_with_output``
  runs when it has exited, with its `ExecResult` (exit status, stdout, stderr) in
  ``req.result``.
- A program that can't start, exits non-zero, prints nothing or runs past its timeout is
  answered 500 with a reason saying which, and its stderr is logged.
- A CANCEL or the fr timer terminates the program's whole process group (SIGTERM, then
  SIGKILL), and reaps it: no stray route-call processes pile up.

Script parameters (``--define NAME=VALUE``):

- ``program``: the program to run (required).
- ``exec_timeout``: seconds it may take (default 2).
- ``downstream``: where the in-dialog requests of a UA that ignores Record-Route go (sipp's
  built-in uac sends its ACK and BYE to the proxy, with no Route); without it they get 404.
"""

from triosip.script.api import ExecResult, OpTimeout, RequestContext, Routes, ScriptError, exec_

routes = Routes(requires=("program",))

EXEC_TIMEOUT = 2.0


@routes.request
async def main(req: RequestContext) -> None:
    # In-dialog requests (BYE, re-INVITE, the ACK of a 200) follow their Route set, as in
    # routes/default.py: the program ran when the dialog started; those of a UA that ignored our
    # Record-Route go downstream.
    if req.has_to_tag:
        await req.relay_in_dialog(req.params.get("downstream"))
        return

    req.record_route()
    program = exec_(
        [req.params["program"], req.ruri_user or ""],
        env={
            "SIP_METHOD": req.method,
            "SIP_RURI": req.ruri,
            "SIP_FROM_USER": req.from_user or "",
            "SIP_TO_USER": req.to_user or "",
            "SIP_CALL_ID": req.call_id,
            "SIP_SOURCE_IP": req.source.host,
        },
    )
    timeout = float(req.params.get("exec_timeout", EXEC_TIMEOUT))
    req.async_(program, resume=resume_with_output, timeout=timeout)


@routes.resume
async def resume_with_output(req: RequestContext) -> None:
    if isinstance(req.error, OpTimeout):
        req.log.error("routing program: %s", req.error)  # and its process group is gone
        await req.reply(500, "Routing Program Timed Out")
        return
    if req.error is not None:  # OpFailed: not found, not executable
        req.log.error("routing program: %s", req.error)
        await req.reply(500, "Routing Program Failed")
        return

    run: ExecResult = req.result
    destination = run.stdout_text.partition("\n")[0].strip()
    if not run.ok or not destination:
        req.log.error(
            "routing program exited %d, printed %r: %s",
            run.returncode,
            destination,
            run.stderr_text.strip()[:200],
        )
        await req.reply(500, "Routing Program Failed")
        return
    try:
        relayed = await req.relay(destination)
    except ScriptError as exc:  # it printed something that is no destination
        req.log.error("routing program: %s", exc)
        await req.reply(500, "Routing Program Failed")
        return
    if not relayed:
        await req.reply(503, "No Route")
