"""The traffic log: JSON Lines segments written off the request path.

Requests put records on a bounded queue and never wait; one writer thread serialises them
and appends to the current segment, which rotates at a size limit and at midnight (UTC).
A full queue drops the record and counts it; so does a record JSON cannot hold (a
pass-through step whose messages nest deeper than orjson writes). Closing drains the queue
and flushes.

Each process writes its own segments (`steps-<day>-<replica>-<seq>.jsonl`), so replicas can
share one directory; training reads the whole directory.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import orjson

log = logging.getLogger("escalator.steplog")

_STOP = object()


class StepLog:
    _FLUSH_INTERVAL_S = 0.05

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        queue_size: int,
        on_written: Callable[[str], None] = lambda kind: None,
        on_dropped: Callable[[], None] = lambda: None,
        on_unwritable: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        # SimpleQueue is implemented in C: a put costs a fraction of queue.Queue's. The bound
        # is checked by hand and may be overshot by a few records under a race; no more.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queue_size = queue_size
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_unwritable = on_unwritable
        self._replica = f"{socket.gethostname()}-{os.getpid()}"
        self._thread = threading.Thread(target=self._run, name="steplog-writer", daemon=True)
        self._file: IO[bytes] | None = None
        self._day = ""
        self._seq = 0
        self._size = 0
        self.dropped = 0

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> bool:
        """Queue a record for writing; never blocks. False if it had to be dropped."""
        if self._queue.qsize() >= self._queue_size:
            self.dropped += 1
            self._on_dropped()
            return False
        self._queue.put(record)
        return True

    def has_room(self) -> bool:
        return self._queue.qsize() < self._queue_size

    def depth(self) -> int:
        return self._queue.qsize()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued so far, then stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)  # past the bound on purpose: the stop marker must not be dropped
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("step log writer did not finish within %.0fs", timeout_s)

    # -- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        # The writer wakes on a timer, not per record: waking a thread for every step would
        # take the GIL from the event loop in the middle of answering requests.
        try:
            while True:
                time.sleep(self._FLUSH_INTERVAL_S)
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        return
                    self._write(item)
                if self._file is not None:
                    self._file.flush()
        finally:
            if self._file is not None:
                self._file.close()

    def _write(self, record: dict[str, Any]) -> None:
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError as exc:
            log.error(
                "step log: a %s record of session %r could not be written as JSON (%s); dropped",
                record.get("kind", "step"),
                record.get("session"),
                exc,
            )
            self.dropped += 1
            self._on_unwritable()
            return
        segment = self._segment(len(line))
        segment.write(line)
        self._size += len(line)
        self._on_written(str(record.get("kind", "step")))

    def _segment(self, incoming: int) -> IO[bytes]:
        day = time.strftime("%Y%m%d", time.gmtime())
        full = self._size and self._size + incoming > self._segment_bytes
        if self._file is None or day != self._day or full:
            if self._file is not None:
                self._file.close()
            self._seq = self._seq + 1 if day == self._day else 0
            self._day = day
            path = self.directory / f"steps-{day}-{self._replica}-{self._seq:04d}.jsonl"
            self._file = open(path, "ab")  # noqa: SIM115  (kept open across writes)
            self._size = self._file.tell()
        return self._file
