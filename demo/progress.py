"""The demo's progress as plain lines, for output that is not a terminal (a file, a pipe, CI).

A live progress bar redraws one line in place; written to a file it shows nothing until the
run ends. Here every stage prints a line when it starts, one every `every` tasks, and one
when it ends, each with the run's elapsed time, so `tail -f` on a log follows the run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Stage = Callable[[str, int | None], Callable[[int], None]]


def line_stages(write: Callable[[str], None], every: int = 10) -> tuple[Stage, Callable[[], None]]:
    """(stage, finish): `stage(name, total)` starts a stage (ending the one before) and
    returns its `advance(n)`; `finish()` ends the last one. Advances may come from several
    threads (episodes played at once)."""
    started = time.monotonic()
    lock = threading.Lock()
    current: dict[str, float | int | str | None] = {}

    def clock() -> str:
        seconds = int(time.monotonic() - started)
        return f"[{seconds // 60:3d}:{seconds % 60:02d}]"

    def finish() -> None:
        with lock:
            if not current:
                return
            took = time.monotonic() - float(current["since"] or 0.0)
            done, total = current["done"], current["total"]
            count = f" ({done}/{total} tasks)" if total is not None else ""
            write(f"{clock()} {current['name']}: done in {took:.0f} s{count}")
            current.clear()

    def stage(name: str, total: int | None) -> Callable[[int], None]:
        finish()
        with lock:
            current.update(name=name, total=total, done=0, since=time.monotonic())
            write(f"{clock()} {name}: started")

        def advance(n: int) -> None:
            with lock:
                if current.get("name") != name:
                    return
                before = int(current["done"] or 0)
                done = before + n
                current["done"] = done
                if total is not None and done < total and done // every > before // every:
                    write(f"{clock()} {name}: {done}/{total} tasks")

        return advance

    return stage, finish
