# -*- test-case-name: tests.unit.test_sockets -*-
"""
Socket-level shortcuts for the relay's hot path.

Twisted's C{transport.write} never sends at once: it queues the bytes, asks
the reactor to watch the socket for writability, and sends on the next
reactor turn, after which it stops watching again. For a proxy that forwards
every chunk it reads, that is two C{epoll_ctl} calls and one extra reactor
turn per chunk. L{writerFor} gives a write function that sends straight away
when nothing is queued, and falls back to C{transport.write} for the rest.

It relies on attributes of L{twisted.internet.abstract.FileDescriptor}
(C{dataBuffer}, C{offset}, C{_tempDataLen}, C{_writeDisconnected}) and on
C{writeSomeData}; the tests pin them, so a Twisted change shows up as a test
failure rather than as lost bytes.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address


def _sendNow(transport: Any, data: bytes) -> None:
    if (
        transport._tempDataLen
        or transport.offset != len(transport.dataBuffer)
        or transport.disconnecting
        or not transport.connected
        or transport._writeDisconnected
    ):
        # Something is queued (order matters) or the transport is closing:
        # leave it all to Twisted.
        transport.write(data)
        return
    sent = transport.writeSomeData(data)
    if isinstance(sent, int) and sent >= 0:
        if sent < len(data):
            transport.write(data[sent:])
    else:
        # An error: queued, the reactor's own write finds it and closes the
        # connection the usual way.
        transport.write(data)


def writerFor(transport: Any) -> Callable[[bytes], None]:
    """
    The fastest correct way to write to C{transport}.

    @param transport: any transport.
    @return: a function sending straight away for plain TCP and unix
        sockets; C{transport.write} for anything else (TLS, wrappers,
        test transports).
    """
    if type(transport) in (tcp.Server, tcp.Client) or _isPlainUnix(transport):
        if not transport.TLS:
            return lambda data: _sendNow(transport, data)
    return transport.write  # type: ignore[no-any-return,unused-ignore]


def _isPlainUnix(transport: Any) -> bool:
    from twisted.internet import unix

    return type(transport) in (unix.Server, unix.Client)


def setNoDelay(transport: Any) -> None:
    """
    Turn Nagle's algorithm off on a TCP transport (no-op for others).

    A relay forwards what it has at once; with Nagle, the last small segment
    of each response waits for the peer's delayed ACK (tens of
    milliseconds per response).
    """
    if type(transport) in (tcp.Server, tcp.Client):
        # The common case, decided without asking the kernel for addresses.
        transport.setTcpNoDelay(True)
        return
    if _isPlainUnix(transport):
        return
    # Wrappers (TLS, the PROXY receiver) pass the call on to the socket.
    if isinstance(transport.getHost(), (IPv4Address, IPv6Address)):
        setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            try:
                setTcpNoDelay(True)
            except OSError:
                pass
