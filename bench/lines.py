"""Writing timestamped JSON lines (paced or as a burst) and reading them back with latencies.

Each line is a narrative message of the seed's schema (``ts``, ``from``, ``type``, ``content``)
plus ``"seq": N, "t": <CLOCK_MONOTONIC ns at write>``; a reader takes ``now - t`` as the
latency. Also the entry point of one FIFO writer process for B4:

    python -m bench.lines FIFO WRITER COUNT RATE   (RATE 0 = burst, 4 KiB writes)

It prints "ready" once the FIFO is open and starts writing when a line arrives on stdin, so
interpreter start-up never overlaps the measurement. A paced writer's stdin line is the
CLOCK_MONOTONIC ns of its first write: the bench spreads the writers' first writes over one
interval, so N writers at RATE each make an even stream of N x RATE lines/s. After its last
line it waits for stdin to close before it exits.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO

import orjson

PIPE_BUF = 4096  # writes up to this size reach a FIFO whole, never interleaved


def line(seq: int, sender: str = "bench", writer: int = 0) -> bytes:
    return orjson.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "from": sender, "type": "narrative", "content": "bench line",
                         "seq": seq, "w": writer, "t": time.monotonic_ns()}) + b"\n"


def write_paced(fd: int, count: int, rate: float, *, first: int = 0, writer: int = 0,
                start_ns: int | None = None) -> None:
    """One line per write(2), on schedule; catches up after a late wake-up, never bursts more."""
    start = start_ns if start_ns is not None else time.monotonic_ns()
    interval = 1e9 / rate
    for seq in range(first, first + count):
        due = start + (seq - first) * interval
        delay = (due - time.monotonic_ns()) / 1e9
        if delay > 0:
            time.sleep(delay)
        os.write(fd, line(seq, writer=writer))


def write_burst(fd: int, count: int, *, first: int = 0, writer: int = 0) -> None:
    """As fast as possible, in writes of at most PIPE_BUF bytes of whole lines."""
    chunk: list[bytes] = []
    size = 0
    for seq in range(first, first + count):
        one = line(seq, writer=writer)
        if size + len(one) > PIPE_BUF:
            os.write(fd, b"".join(chunk))
            chunk, size = [], 0
        chunk.append(one)
        size += len(one)
    if chunk:
        os.write(fd, b"".join(chunk))


class LineReader:
    """Reads JSON lines from a stream in a thread and keeps (latency ns, arrival ns)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.latencies: list[int] = []
        self.first = self.last = 0
        self.malformed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            now = time.monotonic_ns()
            try:
                sent = orjson.loads(raw)["t"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.malformed += 1
                continue
            self.first = self.first or now
            self.last = now
            self.latencies.append(now - sent)

    def wait_count(self, count: int, idle: float = 2.0, limit: float = 120.0) -> int:
        """Wait until ``count`` lines arrived, or nothing new came for ``idle`` seconds."""
        deadline = time.monotonic() + limit
        seen, quiet_since = -1, time.monotonic()
        while len(self.latencies) < count and time.monotonic() < deadline:
            if len(self.latencies) != seen:
                seen, quiet_since = len(self.latencies), time.monotonic()
            elif time.monotonic() - quiet_since > idle:
                break
            time.sleep(0.02)
        return len(self.latencies)


def writer_main(argv: list[str]) -> None:
    path, writer, count, rate = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    fd = os.open(path, os.O_WRONLY)
    print("ready", flush=True)
    go = sys.stdin.readline().strip()
    if rate:
        write_paced(fd, count, rate, writer=writer, start_ns=int(go) if go else None)
    else:
        write_burst(fd, count, writer=writer)
    sys.stdin.readline()   # the bench closes stdin once it has measured
    os.close(fd)
    times = os.times()
    sys.stdout.write(orjson.dumps({"cpu_s": times.user + times.system}).decode() + "\n")


if __name__ == "__main__":
    writer_main(sys.argv[1:])
