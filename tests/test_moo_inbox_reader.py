"""The inbox FIFO reader (arqond/moo/inbox.py) in process, on a real FIFO, with a second reader
of that FIFO stealing bytes at the worst moment: while arqond handles a line it peeked."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from arqond.moo.files import open_fifo_reader
from arqond.moo.inbox import InboxReader, Peeker


class Fifo:
    def __init__(self, path) -> None:
        os.mkfifo(path)
        self.path = str(path)
        self.fd = open_fifo_reader(self.path)
        self.writer = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self.thief = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)   # the second reader
        self.lines: list[bytes] = []
        self.refused: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self.second_readers = 0
        self.steal: list[int] = []   # bytes the thief takes while line N is handled
        self.peeker = Peeker()
        self.reader = InboxReader(asyncio.get_running_loop(), self.path, self.fd, 1000,
                                  self.peeker, self.on_line,
                                  lambda why, size: self.refused.append((why, size)),
                                  self.errors.append, self.on_second_reader)
        self.stolen = b""

    def on_line(self, line: bytes) -> None:
        self.lines.append(line)
        if self.steal:
            self.stolen += os.read(self.thief, self.steal.pop(0))

    def on_second_reader(self) -> None:
        self.second_readers += 1

    async def write(self, data: bytes) -> None:
        os.write(self.writer, data)
        for _ in range(100):
            await asyncio.sleep(0.005)
            if not self.peeker_has(self.fd):
                return

    def peeker_has(self, fd: int) -> bool:
        try:
            return bool(self.peeker.peek(fd))
        except BlockingIOError:
            return False

    def close(self) -> None:
        self.reader.close()
        self.peeker.close()
        for fd in (self.writer, self.thief):
            os.close(fd)


@pytest.fixture
async def fifo(tmp_path):
    made = Fifo(tmp_path / "dreader-inbox")
    yield made
    made.close()


async def test_lines_are_delivered_once_and_taken_out_after_handling(fifo):
    await fifo.write(b'{"n":1}\n{"n":2}\n{"n":')
    assert fifo.lines == [b'{"n":1}', b'{"n":2}']
    await fifo.write(b"3}\n")
    assert fifo.lines[-1] == b'{"n":3}' and fifo.second_readers == 0


async def test_a_second_reader_taking_a_whole_line_is_caught_and_nothing_else_is_lost(
        fifo, caplog):
    fifo.steal = [5]   # while "aaaa" is handled, the thief takes "aaaa\n" from the pipe
    await fifo.write(b"aaaa\nbbbb\ncccc\n")
    assert fifo.stolen == b"aaaa\n"
    # "aaaa" reached both readers; arqond took "bbbb\n" instead and still delivers it.
    assert fifo.lines == [b"aaaa", b"bbbb", b"cccc"] and fifo.refused == []
    assert fifo.second_readers == 1
    assert f"{fifo.path}: another process is reading this FIFO (seen 1 time(s)): lines go " \
        "to one reader or the other, and may arrive cut or twice. arqond must be its only " \
        "reader; read the inbox with arqon recv or arqon.recv" in caplog.text
    assert caplog.records[-1].levelno == logging.ERROR


async def test_a_second_reader_taking_part_of_a_line_never_glues_or_repeats_it(fifo):
    fifo.steal = [2]   # the thief takes "aa"; arqond then takes "aa\nbb", its rest and more
    await fifo.write(b"aaaa\nbbbb\ncccc\n")
    assert fifo.stolen == b"aa"
    assert fifo.lines == [b"aaaa", b"bbbb", b"cccc"] and fifo.second_readers == 1


async def test_a_second_reader_taking_the_end_of_a_line_leaves_the_next_one_whole(fifo):
    await fifo.write(b"half a li")        # taken into memory at once: nothing comes out
    os.write(fifo.writer, b"ne\nnext\n")
    fifo.steal = [3]                      # while "half a line" is handled: "ne\n"
    await fifo.write(b"")
    assert fifo.stolen == b"ne\n"
    assert fifo.lines == [b"half a line", b"next"] and fifo.second_readers == 1


async def test_the_start_of_a_line_cut_short_by_a_second_reader_is_refused_not_glued(
        fifo, monkeypatch):
    peek = fifo.peeker.peek

    def peek_then_steal(fd):
        data = peek(fd)
        fifo.stolen += os.read(fifo.thief, 2)   # between arqond's peek and its read
        return data
    monkeypatch.setattr(fifo.peeker, "peek", peek_then_steal)
    await fifo.write(b"half")
    monkeypatch.setattr(fifo.peeker, "peek", peek)
    assert fifo.stolen == b"ha"
    assert fifo.refused == [("cut short by another reader of the FIFO", 4)]
    await fifo.write(b"\nnext\n")
    # What arqond took ("lf") is kept, as the line it makes, never glued to "half".
    assert fifo.lines == [b"lf", b"next"] and fifo.second_readers == 1


async def test_a_second_reader_emptying_the_pipe_is_caught(fifo):
    fifo.steal = [100]
    await fifo.write(b"aaaa\nbbbb\n")
    assert fifo.lines == [b"aaaa"] and fifo.stolen == b"aaaa\nbbbb\n"
    assert fifo.second_readers == 1
    await fifo.write(b"after\n")   # and reading goes on
    assert fifo.lines[-1] == b"after"


async def test_a_second_reader_is_logged_at_most_every_ten_seconds(fifo, caplog):
    fifo.steal = [5, 5]
    await fifo.write(b"a\nb\nc\nd\ne\nf\n")
    assert fifo.second_readers == 2
    assert caplog.text.count("another process is reading this FIFO") == 1
    fifo.reader.second_reader_logged -= 10
    fifo.steal = [2]
    await fifo.write(b"gg\nhh\n")
    assert "another process is reading this FIFO (seen 2 time(s))" in caplog.text
