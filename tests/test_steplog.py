"""The step-log writer: off the request path, rotated, bounded, flushed on close."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from server.steplog import StepLog


def read_all(directory: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def test_records_are_written_in_order_and_flushed_on_close(tmp_path: Path) -> None:
    written: list[str] = []
    log = StepLog(tmp_path, segment_bytes=1 << 20, queue_size=1000, on_written=written.append)
    log.start()
    for i in range(500):
        assert log.submit({"kind": "step", "i": i})
    log.submit({"kind": "outcome", "i": 500})
    log.close()
    assert [r["i"] for r in read_all(tmp_path)] == list(range(501))
    assert written.count("step") == 500 and written.count("outcome") == 1


def test_segments_rotate_at_the_size_limit(tmp_path: Path) -> None:
    log = StepLog(tmp_path, segment_bytes=1000, queue_size=1000)
    log.start()
    for i in range(100):
        log.submit({"kind": "step", "i": i, "pad": "x" * 40})
    log.close()
    segments = sorted(tmp_path.glob("*.jsonl"))
    assert len(segments) > 5
    assert all(p.stat().st_size <= 1000 for p in segments)
    assert [r["i"] for r in read_all(tmp_path)] == list(range(100))
    assert segments[0].name.startswith("steps-") and segments[0].name.endswith("-0000.jsonl")


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    drops: list[int] = []
    log = StepLog(
        tmp_path, segment_bytes=1 << 20, queue_size=10, on_dropped=lambda: drops.append(1)
    )
    # The writer is not started: the queue fills and nothing drains it.
    accepted = [log.submit({"kind": "step", "i": i}) for i in range(25)]
    assert accepted.count(True) == 10 and accepted.count(False) == 15
    assert log.dropped == 15 and len(drops) == 15
    log.start()
    log.close()
    assert len(read_all(tmp_path)) == 10


def test_submit_is_safe_from_many_threads(tmp_path: Path) -> None:
    log = StepLog(tmp_path, segment_bytes=1 << 16, queue_size=100_000)
    log.start()

    def produce(worker: int) -> None:
        for i in range(1000):
            log.submit({"kind": "step", "w": worker, "i": i})

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    records = read_all(tmp_path)
    assert len(records) == 4000
    for worker in range(4):
        assert [r["i"] for r in records if r["w"] == worker] == list(range(1000))


def test_an_unserialisable_record_is_dropped_not_fatal(tmp_path: Path) -> None:
    log = StepLog(tmp_path, segment_bytes=1 << 20, queue_size=10)
    log.start()
    log.submit({"kind": "step", "bad": object()})
    log.submit({"kind": "step", "i": 1})
    log.close()
    assert read_all(tmp_path) == [{"kind": "step", "i": 1}]
    assert log.dropped == 1
