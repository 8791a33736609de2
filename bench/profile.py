"""Sampling profiles of arqond during the bench, with py-spy attached to the daemon's pid.

``python -m bench --profile DIR`` records every arqond the bench starts into
``DIR/arqond-<pid>.txt`` (collapsed stacks, idle samples included, so time spent waiting in
epoll shows as such). ``python -m bench.profile FILE`` prints the frames that dominate.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


PY_SPY = Path(sys.executable).with_name("py-spy")


class Recording:
    def __init__(self, pid: int, directory: Path) -> None:
        binary = str(PY_SPY) if PY_SPY.exists() else shutil.which("py-spy")
        if binary is None:
            raise RuntimeError("py-spy not found: make bench-deps")
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"arqond-{pid}.txt"
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--idle",
             "--nonblocking", "--output", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """py-spy writes its file on SIGINT; call before the daemon exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def summary(path: Path, top: int = 20) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"{path}: {total} samples", "self:"]
    lines += [f"{n * 100 / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"{n * 100 / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summary(Path(name)))
