"""
Tests for L{tlsession.stores._pbbatch}: how the session daemon's client
groups its requests into batches, with a fake daemon that answers when
told.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tlsession._wire import MAX_BATCH
from tlsession.interfaces import StoreUnavailableError
from tlsession.stores._pbbatch import MAX_BATCH_BYTES, RequestBatcher


class _Daemon:
    """
    Keeps each batch sent, with the L{Deferred} that answers it.
    """

    def __init__(self) -> None:
        self.batches: List[List[bytes]] = []
        self.answers: List[Deferred[Any]] = []
        self.malformed = 0

    def send(self, requests: List[bytes]) -> Deferred[Any]:
        self.batches.append(requests)
        answer: Deferred[Any] = Deferred()
        self.answers.append(answer)
        return answer

    def answer(self, index: int = -1) -> None:
        """
        Answer a batch: each request's answer is the request reversed.
        """
        self.answers[index].callback([request[::-1] for request in self.batches[index]])

    def sawMalformed(self) -> None:
        self.malformed += 1


class RequestBatcherTests(SynchronousTestCase):
    """
    L{RequestBatcher}: one batch in flight, the rest together after it.
    """

    def setUp(self) -> None:
        self.daemon = _Daemon()
        self.batcher = RequestBatcher(self.daemon.send, self.daemon.sawMalformed)

    def test_loneRequestAtOnce(self) -> None:
        """
        With nothing in flight, a request is sent at once, alone.
        """
        d = self.batcher.request(b"abc")
        self.assertEqual(self.daemon.batches, [[b"abc"]])
        self.daemon.answer()
        self.assertEqual(self.successResultOf(d), b"cba")
        self.assertFalse(self.batcher.inFlight)

    def test_queuedTogether(self) -> None:
        """
        Requests made while a batch is in flight go out together when it is
        answered, each getting its own answer, in order.
        """
        first = self.batcher.request(b"1")
        rest = [self.batcher.request(b"%d" % n) for n in range(2, 6)]
        self.assertEqual(len(self.daemon.batches), 1)
        self.daemon.answer(0)
        self.assertEqual(self.daemon.batches[1], [b"2", b"3", b"4", b"5"])
        self.successResultOf(first)
        for d in rest:
            self.assertNoResult(d)
        self.daemon.answer(1)
        self.assertEqual(
            [self.successResultOf(d) for d in rest], [b"2", b"3", b"4", b"5"]
        )

    def test_bounded(self) -> None:
        """
        A batch carries at most L{MAX_BATCH} requests, and more than
        L{MAX_BATCH_BYTES} only for one large request.
        """
        self.batcher.request(b"first")
        for _ in range(MAX_BATCH + 1):
            self.batcher.request(b"x")
        big = b"y" * (MAX_BATCH_BYTES - 10)
        self.batcher.request(big)
        self.batcher.request(big)
        self.daemon.answer()
        self.assertEqual(len(self.daemon.batches[1]), MAX_BATCH)
        self.daemon.answer()
        self.assertEqual(self.daemon.batches[2], [b"x", big])
        self.daemon.answer()
        self.assertEqual(self.daemon.batches[3], [big])

    def test_failedBatch(self) -> None:
        """
        A batch that fails fails each of its requests; the next batch goes
        out anyway.
        """
        first = self.batcher.request(b"1")
        second = self.batcher.request(b"2")
        self.daemon.answers[0].errback(StoreUnavailableError("timed out"))
        self.failureResultOf(first, StoreUnavailableError)
        self.assertEqual(self.daemon.batches[1], [b"2"])
        self.daemon.answer()
        self.successResultOf(second)

    def test_malformedAnswer(self) -> None:
        """
        An answer that is not one per request fails the batch's requests
        and says so, so the connection is dropped.
        """
        first = self.batcher.request(b"1")
        self.daemon.answers[0].callback([b"a", b"b"])
        failure = self.failureResultOf(first, StoreUnavailableError)
        self.assertEqual(str(failure.value), "unexpected answer from the daemon")
        self.assertEqual(self.daemon.malformed, 1)

    def test_close(self) -> None:
        """
        Closing fails the queued requests, and those made afterwards, with
        the reason given; nothing more is sent.
        """
        self.batcher.request(b"1")
        queued = self.batcher.request(b"2")
        self.batcher.close(Failure(StoreUnavailableError("lost")))
        self.assertEqual(
            str(self.failureResultOf(queued, StoreUnavailableError).value), "lost"
        )
        self.daemon.answer(0)
        late = self.batcher.request(b"3")
        self.failureResultOf(late, StoreUnavailableError)
        self.assertEqual(len(self.daemon.batches), 1)
