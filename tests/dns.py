"""A DNS server on loopback for the tests of replicas behind one name, as Kubernetes' DNS
serves a headless Service: one name, an A record per ready pod, the list changing as pods
come and go. Real DNS over UDP (RFC 1035), only what a resolver asks of a headless Service:
A queries answered from the records, every other question about a known name answered with
no records, an unknown name with NXDOMAIN. Records have a TTL of 1 s."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

TYPE_A = 1
CLASS_IN = 1
FLAGS_RESPONSE_AUTHORITATIVE = 0x8400
RCODE_NAME_ERROR = 3
TTL_SECONDS = 1
POLL_SECONDS = 0.1
NAME_AT_QUESTION = b"\xc0\x0c"  # a pointer to the name in the question (offset 12)


class LoopbackDns:
    """Answers A queries for the names it holds; ``set`` changes a name's addresses."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self.a_queries = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(POLL_SECONDS)
        self._closing = threading.Event()
        self.port = self._socket.getsockname()[1]

    def set(self, name: str, addresses: Sequence[str]) -> None:
        with self._lock:
            self._records[name.lower().rstrip(".")] = tuple(addresses)

    def serve(self) -> None:
        """Answer queries until ``close``."""
        while not self._closing.is_set():
            try:
                query, peer = self._socket.recvfrom(512)
            except TimeoutError:
                continue  # look at _closing again
            answer = self.answer(query)
            if answer is not None:
                self._socket.sendto(answer, peer)
        self._socket.close()

    def answer(self, query: bytes) -> bytes | None:
        """The response to one query; None for a packet that is not one."""
        try:
            ident, name, question_end = _question(query)
            qtype = struct.unpack(">H", query[question_end - 4 : question_end - 2])[0]
        except (IndexError, struct.error, UnicodeDecodeError):
            return None
        with self._lock:
            addresses = self._records.get(name)
            if qtype == TYPE_A and addresses is not None:
                self.a_queries += 1
        if addresses is None:
            return _header(ident, RCODE_NAME_ERROR, answers=0) + query[12:question_end]
        records = addresses if qtype == TYPE_A else ()
        body = b"".join(
            NAME_AT_QUESTION + struct.pack(">HHIH", TYPE_A, CLASS_IN, TTL_SECONDS, 4) + socket.inet_aton(address)
            for address in records
        )
        return _header(ident, 0, answers=len(records)) + query[12:question_end] + body

    def close(self) -> None:
        """Stop serving (within POLL_SECONDS); the socket is closed by the serving thread."""
        self._closing.set()


def _question(query: bytes) -> tuple[int, str, int]:
    """The query's id, the name it asks about (lower case, no final dot) and where its
    question ends (after the type and class)."""
    ident = struct.unpack(">H", query[:2])[0]
    labels, offset = [], 12
    while query[offset]:
        length = query[offset]
        labels.append(query[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    return ident, ".".join(labels).lower(), offset + 1 + 4


def _header(ident: int, rcode: int, answers: int) -> bytes:
    return struct.pack(">HHHHHH", ident, FLAGS_RESPONSE_AUTHORITATIVE | rcode, 1, answers, 0, 0)


@contextmanager
def loopback_dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns()
    thread = threading.Thread(target=server.serve, name="loopback-dns", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        thread.join(timeout=5)
