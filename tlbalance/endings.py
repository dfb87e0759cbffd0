# -*- test-case-name: tests.unit.test_endings -*-
"""
How a relayed client connection ended: a fixed vocabulary for the
per-connection log event, modelled on HAProxy's termination states.

Each L{Ending} names what ended the connection and the phase it was in, as
C{"cause/phase"}; its L{Ending.code} is the two-letter code HAProxy would
log for the same event in TCP mode.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict

__all__ = ["Ending", "Phase"]


class Phase(Enum):
    """
    Where a client connection stands.

    @cvar HANDSHAKE: a TLS listener's connection before its handshake is
        done; no backend picked yet (HAProxy's C{R}, waiting for the
        request).
    @cvar CONNECT: picking a backend and connecting to it, with retries
        (HAProxy's C{C}).
    @cvar ESTABLISHED: connected to a backend and relaying (HAProxy's
        C{D}, data).
    """

    HANDSHAKE = "handshake"
    CONNECT = "connect"
    ESTABLISHED = "established"


class Ending(Enum):
    """
    How a client connection ended. The value (C{"client-closed/established"})
    is what the log event's C{ending} field holds, and never changes.

    Causes: C{client-closed} and C{server-closed} (a clean close by that
    side), C{both-closed}, C{client-reset} and C{server-reset} (the
    connection was lost with an error), C{tls-failed}, C{client-timeout},
    C{server-timeout}, C{first-byte-timeout}, C{server-failed} (every
    connect attempt failed), C{no-backend}, C{resource} (the balancer ran
    out of descriptors, memory or ports) and C{drain-timeout} (still open
    when a graceful stop ran out of time).
    """

    CLIENT_CLOSED_HANDSHAKE = "client-closed/handshake"
    CLIENT_RESET_HANDSHAKE = "client-reset/handshake"
    TLS_FAILED = "tls-failed/handshake"
    HANDSHAKE_TIMEOUT = "client-timeout/handshake"
    DRAINED_HANDSHAKE = "drain-timeout/handshake"

    CLIENT_CLOSED_CONNECT = "client-closed/connect"
    CLIENT_RESET_CONNECT = "client-reset/connect"
    NO_BACKEND = "no-backend/connect"
    CONNECT_FAILED = "server-failed/connect"
    CONNECT_TIMEOUT = "server-timeout/connect"
    LOCAL_RESOURCE = "resource/connect"
    DRAINED_CONNECT = "drain-timeout/connect"

    CLIENT_CLOSED = "client-closed/established"
    SERVER_CLOSED = "server-closed/established"
    BOTH_CLOSED = "both-closed/established"
    CLIENT_RESET = "client-reset/established"
    SERVER_RESET = "server-reset/established"
    CLIENT_TIMEOUT = "client-timeout/established"
    SERVER_TIMEOUT = "server-timeout/established"
    FIRST_BYTE_TIMEOUT = "first-byte-timeout/established"
    DRAINED = "drain-timeout/established"

    @property
    def cause(self) -> str:
        """
        What ended the connection: the part before the slash.
        """
        return self.value.split("/", 1)[0]

    @property
    def phase(self) -> Phase:
        """
        The phase the connection was in.
        """
        return Phase(self.value.split("/", 1)[1])

    @property
    def code(self) -> str:
        """
        HAProxy's two-letter termination state for the same event: who or
        what ended it (C{C} client, C{S} server, C{c}/C{s} their timeouts,
        C{R} a resource of the balancer, C{K} killed by the stop, C{-}
        normal), then the phase (C{R} handshake, C{C} connect, C{D} data,
        C{-} normal).
        """
        return _CODES[self]

    @property
    def normal(self) -> bool:
        """
        Whether the connection was relayed to the end and closed cleanly:
        the endings C{--dontlog-normal} leaves out.
        """
        return _CODES[self] == "--"

    @classmethod
    def clientClosed(cls, phase: Phase) -> Ending:
        """
        The client closed cleanly during C{phase}.
        """
        return _CLIENT_CLOSED[phase]

    @classmethod
    def clientReset(cls, phase: Phase) -> Ending:
        """
        The client's connection was lost with an error during C{phase}.
        """
        return _CLIENT_RESET[phase]

    @classmethod
    def drained(cls, phase: Phase) -> Ending:
        """
        A graceful stop's drain timeout closed the connection during
        C{phase}.
        """
        return _DRAINED[phase]


_CODES: Dict[Ending, str] = {
    Ending.CLIENT_CLOSED_HANDSHAKE: "CR",
    Ending.CLIENT_RESET_HANDSHAKE: "CR",
    Ending.TLS_FAILED: "CR",
    Ending.HANDSHAKE_TIMEOUT: "cR",
    Ending.DRAINED_HANDSHAKE: "KR",
    Ending.CLIENT_CLOSED_CONNECT: "CC",
    Ending.CLIENT_RESET_CONNECT: "CC",
    # HAProxy logs a request no server could take as "SC" too (<NOSRV>).
    Ending.NO_BACKEND: "SC",
    Ending.CONNECT_FAILED: "SC",
    Ending.CONNECT_TIMEOUT: "sC",
    Ending.LOCAL_RESOURCE: "RC",
    Ending.DRAINED_CONNECT: "KC",
    Ending.CLIENT_CLOSED: "--",
    Ending.SERVER_CLOSED: "--",
    Ending.BOTH_CLOSED: "--",
    Ending.CLIENT_RESET: "CD",
    Ending.SERVER_RESET: "SD",
    Ending.CLIENT_TIMEOUT: "cD",
    Ending.SERVER_TIMEOUT: "sD",
    Ending.FIRST_BYTE_TIMEOUT: "sD",
    Ending.DRAINED: "KD",
}

_CLIENT_CLOSED = {
    Phase.HANDSHAKE: Ending.CLIENT_CLOSED_HANDSHAKE,
    Phase.CONNECT: Ending.CLIENT_CLOSED_CONNECT,
    Phase.ESTABLISHED: Ending.CLIENT_CLOSED,
}

_CLIENT_RESET = {
    Phase.HANDSHAKE: Ending.CLIENT_RESET_HANDSHAKE,
    Phase.CONNECT: Ending.CLIENT_RESET_CONNECT,
    Phase.ESTABLISHED: Ending.CLIENT_RESET,
}

_DRAINED = {
    Phase.HANDSHAKE: Ending.DRAINED_HANDSHAKE,
    Phase.CONNECT: Ending.DRAINED_CONNECT,
    Phase.ESTABLISHED: Ending.DRAINED,
}
