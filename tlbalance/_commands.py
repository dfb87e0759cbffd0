# -*- test-case-name: tests.unit.test_commands -*-
"""
The runtime API's language, with no reactor: a command line read into a
L{Command} (L{parseCommand}), and a command's result written as text for a
person (L{renderText}). The control socket (L{tlbalance.control}) and
C{tlbalancectl} (L{tlbalance.ctl}) both use it.
"""

from __future__ import annotations

import shlex
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from attrs import frozen

#: Every command, as shown by C{help}.
USAGE = (
    "show servers",
    "show listeners",
    "show stat",
    "show version",
    "set server NAME state ready|drain|maint",
    "set server NAME weight N",
    "add server NAME ENDPOINT [key=value ...]",
    "del server NAME",
    "reload",
    "help",
)

_STATES = ("ready", "drain", "maint")


class CommandError(ValueError):
    """
    A command line that is not a command; the message is one line.
    """


@frozen
class Command:
    """
    One parsed command.

    @ivar action: what to do: C{"show servers"}, C{"show listeners"},
        C{"show stat"}, C{"show version"}, C{"set state"}, C{"set weight"},
        C{"add server"}, C{"del server"}, C{"reload"} or C{"help"}.
    @ivar name: the server named, for C{set}, C{add} and C{del}.
    @ivar value: the new state (C{"drain"}), weight (an C{int}) or, for
        C{add server}, the endpoint.
    @ivar options: C{add server}'s C{key=value} words, in order.
    @ivar json: answer with one JSON line (the line began with C{json}).
    """

    action: str
    name: Optional[str] = None
    value: Any = None
    options: Tuple[Tuple[str, str], ...] = ()
    json: bool = False


def _usage(words: Sequence[str]) -> CommandError:
    matching = [u for u in USAGE if u.split()[0] == words[0]]
    if matching:
        return CommandError("usage: " + " | ".join(matching))
    return CommandError(f"unknown command {' '.join(words)!r}; try help")


def parseCommand(line: str) -> Command:
    """
    Read one command line: words split as a shell would (quotes group),
    optionally after the word C{json}.

    @raise CommandError: saying what is wrong, in one line.
    """
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot split the line into words: {e}") from None
    json = bool(words) and words[0] == "json"
    if json:
        words = words[1:]
    if not words:
        raise CommandError("empty command; try help")
    verb = words[0]
    if verb in ("help", "reload") and len(words) == 1:
        return Command(verb, json=json)
    if verb == "show" and len(words) == 2:
        if words[1] in ("servers", "listeners", "stat", "version"):
            return Command("show " + words[1], json=json)
    if verb in ("set", "add", "del") and (len(words) < 2 or words[1] != "server"):
        raise _usage(words)
    if verb == "set" and len(words) == 5:
        name, what, value = words[2:]
        if what == "state":
            if value not in _STATES:
                raise CommandError(
                    f"unknown state {value!r}; choose one of {', '.join(_STATES)}"
                )
            return Command("set state", name, value, json=json)
        if what == "weight":
            if not value.isdigit():
                raise CommandError(f"weight must be a whole number, not {value!r}")
            return Command("set weight", name, int(value), json=json)
    if verb == "add" and len(words) >= 4:
        options = []
        for word in words[4:]:
            key, equals, text = word.partition("=")
            if not equals or not key:
                raise CommandError(f"expected key=value, got {word!r}")
            options.append((key, text))
        return Command("add server", words[2], words[3], tuple(options), json=json)
    if verb == "del" and len(words) == 3:
        return Command("del server", words[2], json=json)
    raise _usage(words)


def formatTable(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    """
    Lines of an aligned table: numbers to the right, text to the left,
    C{None} as C{-}.
    """
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [
        bool(rows) and all(isinstance(row[i], (int, float)) for row in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric)
        ]
        return "  ".join(parts).rstrip()

    return [line(headers)] + [line(row) for row in cells]


def _servers(result: Mapping[str, Any]) -> List[str]:
    rows = [
        [
            s["name"],
            s["endpoint"],
            s["state"],
            s["weight"],
            s["active"],
            s["total"],
            "yes" if s["checked"] else "no",
            "yes" if s["backup"] else "no",
            ",".join(s["runtime"]) or None,
        ]
        for s in result["servers"]
    ]
    headers = ["NAME", "ENDPOINT", "STATE", "WEIGHT", "ACTIVE", "TOTAL"]
    return formatTable(headers + ["CHECK", "BACKUP", "RUNTIME"], rows)


def _listeners(result: Mapping[str, Any]) -> List[str]:
    rows = [[r["listen"], r["address"]] for r in result["listeners"]]
    return formatTable(["LISTEN", "ADDRESS"], rows)


def _stat(result: Mapping[str, Any]) -> List[str]:
    balancer = result["balancer"]
    uptime = result["process"].get("uptime")
    head = (
        f"{balancer['algorithm']}: {balancer['current']} open, "
        f"{balancer['total']} accepted, {balancer['refused']} refused, "
        f"{balancer['rate']:.1f}/s" + ("" if uptime is None else f", up {uptime:.0f}s")
    )
    columns = [
        ("NAME", lambda b: b["name"]),
        ("STATE", lambda b: b["state"]),
        ("WEIGHT", lambda b: b["weight"]),
        ("ACTIVE", lambda b: b["active"]),
        ("PEAK", lambda b: b.get("peak")),
        ("TOTAL", lambda b: b["total"]),
        ("RATE/S", lambda b: round(b.get("rate", 0.0), 1)),
        ("CONNECT-FAILED", lambda b: b["connectFailures"]),
        ("BYTES-IN", lambda b: b["bytesIn"]),
        ("BYTES-OUT", lambda b: b["bytesOut"]),
        ("CHECK", lambda b: b.get("check", {}).get("status")),
    ]
    rows = [[value(b) for _, value in columns] for b in result["backends"]]
    return [head] + formatTable([h for h, _ in columns], rows)


def renderText(action: str, result: Dict[str, Any]) -> List[str]:
    """
    A command's result as lines of text for a person.

    @param action: the L{Command.action} that gave C{result}.
    """
    if action == "show servers":
        return _servers(result)
    if action == "show listeners":
        return _listeners(result)
    if action == "show stat":
        return _stat(result)
    if action == "show version":
        return [f"tlbalance {result['version']}"]
    if action == "help":
        return list(result["commands"])
    if action == "reload":
        return list(result["changes"])
    return [result["message"]]
