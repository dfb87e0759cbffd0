# -*- test-case-name: tests.unit.test_pbbatch -*-
"""
The session daemon's client sends its requests in batches
(L{RequestBatcher}): one at once when none is in flight, and those made
meanwhile together, in one message, when its answer arrives. A lone request
waits for nothing; many concurrent ones share the cost of each message.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tlsession._wire import MAX_BATCH
from tlsession.interfaces import StoreUnavailableError

__all__ = ["MAX_BATCH_BYTES", "RequestBatcher"]

#: A batch grows past this many bytes only to carry one large request.
MAX_BATCH_BYTES = 2**20

#: Sends a batch of requests; the L{Deferred} fires with their answers, in
#: order, or fails (already as L{StoreUnavailableError}).
Send = Callable[[List[bytes]], "Deferred[Any]"]

_Waiting = Tuple[bytes, "Deferred[Any]"]


class RequestBatcher:
    """
    The requests of one connection to the daemon: at most one batch in
    flight, the others queued until it is answered, then sent together (up
    to L{MAX_BATCH} requests and about L{MAX_BATCH_BYTES}).

    @ivar queued: requests waiting for the batch in flight to be answered,
        each with the L{Deferred} its answer fires.
    @ivar inFlight: whether a batch is waiting for its answer.
    """

    def __init__(self, send: Send, malformed: Callable[[], None]) -> None:
        """
        @param send: sends a batch (see L{Send}).
        @param malformed: called when an answer is not one per request: the
            connection can no longer be trusted.
        """
        self._send = send
        self._malformed = malformed
        self.queued: List[_Waiting] = []
        self.inFlight = False
        self._closed = False

    def request(self, request: bytes) -> Deferred[Any]:
        """
        Send C{request}, now if no batch is in flight, else with the next
        batch.

        @return: L{Deferred} firing with its answer, or failing with
            L{StoreUnavailableError}.
        """
        answer: Deferred[Any] = Deferred()
        if self._closed:
            answer.errback(StoreUnavailableError(_CLOSED))
            return answer
        self.queued.append((request, answer))
        if not self.inFlight:
            self._sendBatch()
        return answer

    def close(self, reason: Failure) -> None:
        """
        The connection is gone: fail the queued requests with C{reason},
        and any made from now on. (The batch in flight fails with the
        connection.)
        """
        self._closed = True
        queued, self.queued = self.queued, []
        _fail(queued, reason)

    def _sendBatch(self) -> None:
        count = size = 0
        for request, _ in self.queued:
            if count and (count >= MAX_BATCH or size + len(request) > MAX_BATCH_BYTES):
                break
            count += 1
            size += len(request)
        batch, self.queued = self.queued[:count], self.queued[count:]
        self.inFlight = True
        self._send([request for request, _ in batch]).addCallbacks(
            self._answered, self._failed, callbackArgs=(batch,), errbackArgs=(batch,)
        )

    def _answered(self, answers: object, batch: List[_Waiting]) -> None:
        if not isinstance(answers, list) or len(answers) != len(batch):
            self._malformed()
            self._failed(
                Failure(StoreUnavailableError("unexpected answer from the daemon")),
                batch,
            )
            return
        for (_, waiting), answer in zip(batch, answers):
            waiting.callback(answer)
        self._next()

    def _failed(self, reason: Failure, batch: List[_Waiting]) -> None:
        _fail(batch, reason)
        self._next()

    def _next(self) -> None:
        self.inFlight = False
        if self.queued and not self._closed:
            self._sendBatch()


_CLOSED = "lost the connection to the session daemon"


def _fail(waiting: List[_Waiting], reason: Failure) -> None:
    for _, answer in waiting:
        answer.errback(reason)
