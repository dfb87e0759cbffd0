"""
Tests for L{tlbalance.endings}: the vocabulary of the per-connection log
event's C{ending} field.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from tlbalance.endings import Ending, Phase


class EndingTests(SynchronousTestCase):
    """
    Every L{Ending} is a distinct C{cause/phase} string with an HAProxy-style
    code.
    """

    def test_distinctValues(self) -> None:
        """
        No two members share a value (an L{Enum} would make one an alias of
        the other, and the log could not tell them apart).
        """
        self.assertEqual(len(list(Ending)), len(Ending.__members__))

    def test_valueNamesCauseAndPhase(self) -> None:
        """
        Each value is a lower-case cause, a slash and a phase.
        """
        for ending in Ending:
            self.assertRegex(ending.value, r"^[a-z-]+/(handshake|connect|established)$")
            self.assertEqual(f"{ending.cause}/{ending.phase.value}", ending.value)

    def test_codes(self) -> None:
        """
        Codes are two characters: who or what ended the connection, then the
        phase, which matches the value's phase; only the clean closes of a
        relayed connection are C{--}, the normal endings.
        """
        phaseLetters = {
            Phase.HANDSHAKE: "R",
            Phase.CONNECT: "C",
            Phase.ESTABLISHED: "D",
        }
        for ending in Ending:
            self.assertTrue(re.fullmatch(r"[CSRKcs-][RCD-]", ending.code), ending)
            if ending.code != "--":
                self.assertEqual(ending.code[1], phaseLetters[ending.phase], ending)
        self.assertEqual(
            {e for e in Ending if e.normal},
            {Ending.CLIENT_CLOSED, Ending.SERVER_CLOSED, Ending.BOTH_CLOSED},
        )

    def test_byPhase(self) -> None:
        """
        The endings that can come in any phase are found by phase.
        """
        for phase in Phase:
            self.assertEqual(
                Ending.clientClosed(phase).value, f"client-closed/{phase.value}"
            )
            self.assertEqual(
                Ending.clientReset(phase).value, f"client-reset/{phase.value}"
            )
            self.assertEqual(
                Ending.drained(phase).value, f"drain-timeout/{phase.value}"
            )

    def test_stableValues(self) -> None:
        """
        The values are part of the log format (docs/balancer.md lists them):
        they do not change.
        """
        self.assertEqual(
            [e.value for e in Ending],
            [
                "client-closed/handshake",
                "client-reset/handshake",
                "tls-failed/handshake",
                "client-timeout/handshake",
                "drain-timeout/handshake",
                "client-closed/connect",
                "client-reset/connect",
                "no-backend/connect",
                "server-failed/connect",
                "server-timeout/connect",
                "resource/connect",
                "drain-timeout/connect",
                "client-closed/established",
                "server-closed/established",
                "both-closed/established",
                "client-reset/established",
                "server-reset/established",
                "client-timeout/established",
                "server-timeout/established",
                "first-byte-timeout/established",
                "drain-timeout/established",
            ],
        )
