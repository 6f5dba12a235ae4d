"""Dynamic batching: the inputs of concurrent requests scored together, in shared forward passes.

Requests put a Job (its inputs and their token counts) on one queue; one worker thread owns the
model. Each time the model is free, the worker takes inputs from the head of the queue, request
after request in arrival order, until the next input would pass `max_batch_tokens` tokens or
`max_batch_requests` inputs, and scores them in one call (one packed forward pass). The input
cap (TEI's max_batch_requests; 32 by default, offline predict's batch) keeps passes the size
predict runs best on a CPU. A request whose inputs are all scored is answered
at once, while the rest of the queue goes on; a large request may be spread over several passes.

The event loop never waits on the model: it only appends to the queue and awaits a future that
the worker resolves through `loop.call_soon_threadsafe`. A job whose client went away is
skipped. If a shared pass fails (a NaN score, say), each request in it is scored again alone,
so that only the request that caused the failure gets the error.

A request's numbers do not depend on what shares its pass beyond float32 rounding (about 1e-6:
BLAS may round a row differently in a larger product); duplicates within a pass are scored once.
"""

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Job:
    inputs: list
    lengths: list[int]                         # tokens of each input
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    results: list = field(default_factory=list)  # arrays of the passes done, in order
    taken: int = 0                             # inputs handed to a pass so far
    cancelled: bool = False                    # the client went away: skip what is left


@dataclass(frozen=True)
class Pass:
    """What one forward pass did, for the metrics."""
    inputs: int
    requests: int
    tokens: int
    seconds: float


class Batcher:
    """One worker thread running `run(inputs) -> array [n, ...]` on passes of at most max_batch_tokens tokens
    and max_batch_requests inputs (None: no such cap).

    on_pass(Pass) is called from the worker thread after each pass.
    """

    def __init__(self, run, max_batch_tokens: int, max_batch_requests: int | None = None, on_pass=None):
        self.run, self.max_batch_tokens, self.on_pass = run, max_batch_tokens, on_pass
        self.max_batch_requests = max_batch_requests or float("inf")
        self._pending: deque[Job] = deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="minibert-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Score what is queued, then end the worker thread (blocks until it has ended)."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join()

    @property
    def queued(self) -> int:
        """Requests with inputs not yet handed to a pass."""
        with self._lock:
            return len(self._pending)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, inputs: list, lengths: list[int]) -> Job:
        """Queue inputs; `await job.future` gives their array, in input order."""
        loop = asyncio.get_running_loop()
        job = Job(list(inputs), list(lengths), loop, loop.create_future())
        with self._lock:
            if self._stopping:
                raise RuntimeError("the batcher is stopped")
            self._pending.append(job)
            self._lock.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The client went away: its inputs not yet in a pass are not scored."""
        with self._lock:
            job.cancelled = True
            if job in self._pending:
                self._pending.remove(job)

    # -----------------------------------------------------------------------------------------
    # the worker thread

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if not self._pending:
                    return
                segments = self._next_pass()
            self._score(segments)

    def _next_pass(self) -> list[tuple[Job, int, int]]:
        """(job, start, end) slices from the head of the queue, in order, of at most max_batch_tokens
        tokens and max_batch_requests inputs in all (at least one input, however long). Called with
        the lock held."""
        segments, tokens, n = [], 0, 0
        while self._pending:
            job = self._pending[0]
            start = end = job.taken
            while end < len(job.inputs) and n < self.max_batch_requests and (
                    tokens == 0 or tokens + job.lengths[end] <= self.max_batch_tokens):
                tokens += job.lengths[end]
                end += 1
                n += 1
            if end > start:
                segments.append((job, start, end))
                job.taken = end
            if job.taken < len(job.inputs):
                break   # the pass is full
            self._pending.popleft()
        return segments

    def _score(self, segments) -> None:
        inputs = [x for job, start, end in segments for x in job.inputs[start:end]]
        t0 = time.perf_counter()
        try:
            out = self.run(inputs)
        except Exception as error:  # noqa: BLE001 - sent back to the requests, never raised in this thread
            if len(segments) == 1:
                self._fail(segments[0][0], error)
            else:  # find the request that fails: score each one alone
                for segment in segments:
                    self._score([segment])
            return
        seconds = time.perf_counter() - t0
        offset = 0
        for job, start, end in segments:
            job.results.append(out[offset:offset + end - start])
            offset += end - start
            if end == len(job.inputs) and not job.future.done():
                result = np.concatenate(job.results) if len(job.results) > 1 else job.results[0]
                job.loop.call_soon_threadsafe(_resolve, job.future, result, None)
        if self.on_pass is not None:
            tokens = sum(sum(job.lengths[start:end]) for job, start, end in segments)
            self.on_pass(Pass(len(inputs), len(segments), tokens, seconds))

    def _fail(self, job: Job, error: Exception) -> None:
        with self._lock:
            if job in self._pending:
                self._pending.remove(job)
        job.loop.call_soon_threadsafe(_resolve, job.future, None, error)


def _resolve(future: asyncio.Future, result, error) -> None:
    if future.done():   # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
