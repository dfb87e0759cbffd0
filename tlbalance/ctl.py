# -*- test-case-name: tests.integration.test_control -*-
"""
C{tlbalancectl}: the runtime API of a running balancer from the command
line, e.g. C{tlbalancectl --control run/control.sock set server web1 state
drain}. Tables for a terminal by default, the JSON result with C{--json}.

It needs no reactor: one command, one JSON line over the control socket
(L{tlbalance.control}), with the standard library's socket module.
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
from typing import Any, Dict, List, Optional, Sequence, TextIO

from tlbalance._commands import USAGE, CommandError, parseCommand, renderText

#: Seconds to wait for the balancer's answer.
TIMEOUT = 30.0


class ControlError(Exception):
    """
    The command failed; the message is the one line to print.
    """


def ask(path: str, words: Sequence[str], timeout: float = TIMEOUT) -> Dict[str, Any]:
    """
    Run one command on the balancer serving the control socket C{path}.

    @param words: the command, e.g. C{["show", "servers"]}.
    @return: the reply, C{{"ok": ..., "command": ..., "result": ...}}.
    @raise ControlError: the socket cannot be reached or the command
        failed, saying why in one line.
    """
    line = "json " + " ".join(shlex.quote(w) for w in words)
    try:
        parseCommand(line)
    except CommandError as e:
        raise ControlError(str(e)) from None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        try:
            client.connect(path)
            client.sendall(line.encode("utf-8") + b"\n")
            answer = _readLine(client)
        except OSError as e:
            raise ControlError(f"{path}: {e.strerror or e}") from None
    finally:
        client.close()
    try:
        reply: Dict[str, Any] = json.loads(answer)
    except ValueError:
        raise ControlError(f"{path}: not a tlbalance control socket") from None
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "the command failed")))
    return reply


def _readLine(client: socket.socket) -> bytes:
    received = b""
    while not received.endswith(b"\n"):
        chunk = client.recv(65536)
        if not chunk:
            raise ConnectionResetError("the balancer closed the connection")
        received += chunk
    return received


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tlbalancectl",
        description="Query and change a running tlbalance through its "
        "control socket (twistd tlbalance --control PATH).",
        epilog="commands: " + "; ".join(USAGE),
    )
    parser.add_argument(
        "--control", required=True, metavar="PATH", help="the control socket"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command")
    return parser


def main(
    argv: Optional[List[str]] = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """
    The C{tlbalancectl} console script.

    @return: the exit status: 0, 1 when the command failed (with one line
        on standard error), 2 for a usage error.
    """
    arguments = _parser().parse_args(argv)
    if not arguments.command:
        stderr.write("tlbalancectl: give a command: " + "; ".join(USAGE) + "\n")
        return 2
    try:
        reply = ask(arguments.control, arguments.command)
    except ControlError as e:
        stderr.write(f"tlbalancectl: {e}\n")
        return 1
    if arguments.json:
        stdout.write(json.dumps(reply["result"], indent=2, sort_keys=True) + "\n")
    else:
        for line in renderText(reply["command"], reply["result"]):
            stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
