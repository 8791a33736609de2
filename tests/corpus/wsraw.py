"""A WebSocket client that writes frames byte by byte (RFC 6455 5.2), to send what no library
will: bad opcodes, unmasked frames, reserved bits, broken UTF-8, oversized control frames."""

from __future__ import annotations

import base64
import os
import socket
import struct

from tests.conftest import scaled

KEY = base64.b64encode(b"arqond-corpus-16").decode()
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def upgrade_request(path: str = "/", host: str = "localhost", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    length = len(payload)
    if length < 126:
        head = bytes((first, (0x80 if mask else 0) | length))
    elif length < 65536:
        head = bytes((first, (0x80 if mask else 0) | 126)) + struct.pack("!H", length)
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(self, address: tuple[str, int] | str, path: str = "/") -> None:
        if isinstance(address, str):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(address)
        else:
            self.sock = socket.create_connection(address)
        self.sock.settimeout(scaled(10))
        self.buffer = b""
        self.sock.sendall(upgrade_request(path))
        head = self._until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head

    def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._exactly(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._exactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._exactly(8))[0]
        return first & 0x0F, self._exactly(length)

    def close_received(self) -> tuple[int, str]:
        """Read until the server's close frame: its code and reason."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == CLOSE:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def close(self) -> None:
        self.sock.close()
