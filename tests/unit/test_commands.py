"""
Tests for L{tlbalance._commands}: the runtime API's command parser and its
text tables.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tlbalance._commands import (
    Command,
    CommandError,
    formatTable,
    parseCommand,
    renderText,
)

#: Lines that are commands, and what they read as.
GOOD = [
    ("show servers", Command("show servers")),
    ("  show   listeners  ", Command("show listeners")),
    ("show stat\r", Command("show stat")),
    ("show version", Command("show version")),
    ("help", Command("help")),
    ("json show servers", Command("show servers", json=True)),
    ("set server web1 state drain", Command("set state", "web1", "drain")),
    ("set server web1 state maint", Command("set state", "web1", "maint")),
    ("set server web1 state ready", Command("set state", "web1", "ready")),
    ("set server 'web 1' weight 0", Command("set weight", "web 1", 0)),
    ("json set server a weight 256", Command("set weight", "a", 256, json=True)),
    (
        "add server web3 127.0.0.1:8083",
        Command("add server", "web3", "127.0.0.1:8083"),
    ),
    (
        'add server web3 tcp:host=::1:port=80 weight=3 check="http GET /"',
        Command(
            "add server",
            "web3",
            "tcp:host=::1:port=80",
            (("weight", "3"), ("check", "http GET /")),
        ),
    ),
    ("del server web3", Command("del server", "web3")),
]

#: Lines that are not, and the one-line error each gets.
BAD = [
    ("", "empty command; try help"),
    ("json", "empty command; try help"),
    ("frobnicate", "unknown command 'frobnicate'; try help"),
    ("show", "usage: show servers | show listeners | show stat | show version"),
    (
        "show sessions",
        "usage: show servers | show listeners | show stat | show version",
    ),
    (
        "show servers now",
        "usage: show servers | show listeners | show stat | show version",
    ),
    (
        "set server a",
        "usage: set server NAME state ready|drain|maint | set server NAME weight N",
    ),
    (
        "set backend a state drain",
        "usage: set server NAME state ready|drain|maint | set server NAME weight N",
    ),
    (
        "set server a state off",
        "unknown state 'off'; choose one of ready, drain, maint",
    ),
    ("set server a weight -1", "weight must be a whole number, not '-1'"),
    ("set server a weight 1.5", "weight must be a whole number, not '1.5'"),
    (
        "set server a colour red",
        "usage: set server NAME state ready|drain|maint | set server NAME weight N",
    ),
    ("add server a", "usage: add server NAME ENDPOINT [key=value ...]"),
    ("add server a b weight", "expected key=value, got 'weight'"),
    ("add server a b =3", "expected key=value, got '=3'"),
    ("del server", "usage: del server NAME"),
    ("del server a b", "usage: del server NAME"),
    ("show 'servers", "cannot split the line into words: No closing quotation"),
]


class ParseCommandTests(SynchronousTestCase):
    """
    L{parseCommand} reads each command and refuses the rest in one line.
    """

    def test_good(self) -> None:
        """
        Each command line reads as its L{Command}.
        """
        for line, expected in GOOD:
            with self.subTest(line=line):
                self.assertEqual(parseCommand(line), expected)

    def test_bad(self) -> None:
        """
        Each line that is not a command raises L{CommandError} with one line.
        """
        for line, message in BAD:
            with self.subTest(line=line):
                error = self.assertRaises(CommandError, parseCommand, line)
                self.assertEqual(str(error), message)
                self.assertNotIn("\n", str(error))


class RenderTests(SynchronousTestCase):
    """
    Results become aligned tables for a terminal.
    """

    def test_alignment(self) -> None:
        """
        Numbers line up on the right, words on the left, C{None} shows as C{-}.
        """
        self.assertEqual(
            formatTable(["NAME", "N", "NOTE"], [["a", 5, None], ["long", 120, "x"]]),
            ["NAME    N  NOTE", "a       5  -", "long  120  x"],
        )

    def test_servers(self) -> None:
        """
        C{show servers} says which values came from the runtime API.
        """
        row = {
            "name": "web1",
            "endpoint": "tcp:host=127.0.0.1:port=8081",
            "state": "DRAIN",
            "weight": 2,
            "active": 1,
            "total": 9,
            "checked": True,
            "backup": False,
            "runtime": ["state", "weight"],
        }
        lines = renderText("show servers", {"servers": [row]})
        self.assertEqual(
            lines[0].split(),
            [
                "NAME",
                "ENDPOINT",
                "STATE",
                "WEIGHT",
                "ACTIVE",
                "TOTAL",
                "CHECK",
                "BACKUP",
                "RUNTIME",
            ],
        )
        self.assertEqual(
            lines[1].split(),
            [
                "web1",
                "tcp:host=127.0.0.1:port=8081",
                "DRAIN",
                "2",
                "1",
                "9",
                "yes",
                "no",
                "state,weight",
            ],
        )

    def test_message(self) -> None:
        """
        A change's result is its one-line message.
        """
        self.assertEqual(
            renderText("set state", {"message": "server a: ready -> drain"}),
            ["server a: ready -> drain"],
        )
