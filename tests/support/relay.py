"""A TCP relay between a gRPC client and a server that can hold the server's
replies, or lose one: it reads the server's HTTP/2 frames (9-byte header:
24-bit length, type, flags, 31-bit stream id) to find where a reply starts.

`hold()` stops forwarding what the server sends until `release()`: calls
already sent stay in flight. `drop_reply(nth)` closes the connection instead of
forwarding the nth reply from then on (its first HEADERS frame): the server has
answered, so it has done the work, and the client sees UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

HEADERS = 0x1
FRAME_HEADER = 9


class Relay:
    """Listens on 127.0.0.1:`port`, forwards each connection to `upstream`."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.dropped = 0  # replies lost so far
        self._open = threading.Event()  # set: replies flow
        self._open.set()
        self._lock = threading.Lock()
        self._drop_in: int | None = None  # replies to let through before the lost one
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="relay-accept").start()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def drop_reply(self, nth: int = 1) -> None:
        """Lose the nth reply the server sends from now on."""
        with self._lock:
            self._drop_in = nth - 1

    def close(self) -> None:
        self._open.set()
        self.listener.close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        _shut(source, sink)

    def _replies(self, server: socket.socket, client: socket.socket) -> None:
        """Server to client, frame by frame; a new stream's HEADERS starts a reply."""
        seen: set[int] = set()
        with contextlib.suppress(OSError):
            for frame in _frames(server):
                self._open.wait()
                kind, stream = frame[3], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
                if kind == HEADERS and stream and stream not in seen:
                    seen.add(stream)
                    if self._lose():
                        break
                client.sendall(frame)
        _shut(server, client)

    def _lose(self) -> bool:
        with self._lock:
            if self._drop_in is None:
                return False
            if self._drop_in > 0:
                self._drop_in -= 1
                return False
            self._drop_in = None
            self.dropped += 1
            return True


def _frames(source: socket.socket) -> Iterator[bytes]:
    buffer = b""
    while data := source.recv(65536):
        buffer += data
        while len(buffer) >= FRAME_HEADER:
            end = FRAME_HEADER + int.from_bytes(buffer[:3], "big")
            if len(buffer) < end:
                break
            yield buffer[:end]
            buffer = buffer[end:]


def _shut(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
