"""Keep a Zgent inbox FIFO open and write a numbered line every few ms until STOPFILE exists.
Prints "ok N" per line written whole, "fail N <error>" per line refused (then reopens).
    moo-long-writer.py INBOX STOPFILE
"""
import os
import sys
import time

path, stop = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY)
n = 0
while not os.path.exists(stop):
    n += 1
    line = b'{"w":"long","n":%d}\n' % n
    try:
        written = os.write(fd, line)
        print(f"ok {n}" if written == len(line) else f"fail {n} short write", flush=True)
    except OSError as exc:  # EPIPE: no reader any more
        print(f"fail {n} {exc.strerror}", flush=True)
        os.close(fd)
        fd = os.open(path, os.O_WRONLY)   # waits for the next reader
    time.sleep(0.003)
os.close(fd)
