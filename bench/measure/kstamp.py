"""Kernel receive timestamps for plain-TCP connections: chunk arrival times that event-loop lag does not move.

Why: an asyncio Protocol sees bytes only when the loop gets round to reading them, so a stamp taken in
`data_received` carries the loop's lateness (3-10 ms at p99 with 200 streams on a busy 2-core box). Linux
stamps every received packet in the kernel when a socket asks for it (`SO_TIMESTAMPNS`), and `recvmsg`
hands that stamp over as ancillary data, which asyncio's transports drop. `KStampTransport` is a minimal
transport of its own (loop.add_reader + recvmsg) that passes each read to the protocol with the kernel's
stamp, converted to `time.perf_counter_ns()`'s clock.

Clocks: the kernel stamp is CLOCK_REALTIME; perf_counter_ns is CLOCK_MONOTONIC on Linux. The offset between
the two is sampled right next to every read (two vDSO clock reads), so a slewing wall clock moves the result
by nanoseconds; a stamp is never later than the read itself (a step of the wall clock cannot put it in the
future).

Limits, stated because they decide what the stamp means:
- TCP returns the stamp of the last packet a read copied. When the reader is so late that several packets
  of one connection queue up, their events share that stamp (the newest arrival): the "coalesced" case the
  client already counts (`RequestRecord.coalesced_chunks`). Packets that the kernel merged on arrival
  (loopback coalescing) likewise carry the newest stamp.
- A read that comes without a stamp (timestamping switched on system-wide only after the packet was queued,
  a kernel that does not stamp) is stamped at the read, as the asyncio path does, and counted
  (`KStampTransport.unstamped_reads`).
- TLS keeps asyncio's transport (`bench.measure.http._Conn.data_received` stamps), as does a platform
  without SO_TIMESTAMPNS (`AVAILABLE` is False).
"""

from __future__ import annotations

import asyncio
import platform
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["AVAILABLE", "SO_TIMESTAMPNS", "KStampTransport", "open_connection"]

# Python < 3.12 lacks the constant. 35 is SO_TIMESTAMPNS(_OLD) in asm-generic/socket.h, which these
# architectures use; there `struct timespec` is two 64-bit longs, so the stamp is 16 bytes.
_GENERIC_ABI_64 = {"x86_64", "amd64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x"}
SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", None)
if SO_TIMESTAMPNS is None and sys.platform == "linux" and platform.machine().lower() in _GENERIC_ABI_64:
    SO_TIMESTAMPNS = 35
AVAILABLE = SO_TIMESTAMPNS is not None and sys.platform == "linux" and struct.calcsize("l") == 8
_TIMESPEC = struct.Struct("@ll")
_unpack = _TIMESPEC.unpack_from
_perf_ns, _real_ns = time.perf_counter_ns, time.time_ns
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if AVAILABLE else 0
READ_BYTES = 65536  # per recvmsg; a level-triggered reader comes back for more


class StampedProtocol(Protocol):
    """What the transport feeds: asyncio.Protocol's callbacks plus `received_at`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def received_at(self, now_ns: int, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...


class KStampTransport(asyncio.Transport):
    """A plain-TCP transport that reads with recvmsg and hands each read its kernel receive stamp.

    Only what a request/response client needs: write (buffered when the socket is full), close/abort,
    is_closing, get_extra_info("socket"/"peername"/"sockname"). Reads call
    `protocol.received_at(perf_counter_ns_of_arrival, data)`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: StampedProtocol) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._recvmsg = sock.recvmsg
        self._protocol = protocol
        self._closing = False
        self._wbuf = bytearray()
        self.kernel_stamps = False  # True once SO_TIMESTAMPNS is on for this socket
        self.unstamped_reads = 0  # reads that carried no kernel stamp (timed at the read instead)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if AVAILABLE and SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                self.kernel_stamps = True
            except OSError:
                pass
        self._extra = {"socket": sock, "peername": _peer(sock), "sockname": sock.getsockname()}
        protocol.connection_made(self)
        loop.add_reader(self._fd, self._read_ready)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def get_protocol(self) -> Any:
        return self._protocol

    def set_protocol(self, protocol: Any) -> None:
        self._protocol = protocol

    def _read_ready(self) -> None:
        if self._closing:
            return
        try:
            data, anc, _flags, _addr = self._recvmsg(READ_BYTES, _ANC_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._fatal(e)
            return
        now = _perf_ns()
        if not data:
            if not self._protocol.eof_received():
                self.close()
            return
        try:  # the only ancillary data this socket asked for is SCM_TIMESTAMPNS
            sec, nsec = _unpack(anc[0][2])
        except (IndexError, struct.error):  # none, or cut short
            self.unstamped_reads += 1
        else:
            stamp = sec * 1_000_000_000 + nsec - (_real_ns() - _perf_ns())
            if stamp < now:  # never later than the read (a wall-clock step cannot put it in the future)
                now = stamp
        self._protocol.received_at(now, data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        if not self._wbuf:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as e:
                self._fatal(e)
                return
            if sent == len(data):
                return
            self._wbuf += data[sent:]
            self._loop.add_writer(self._fd, self._write_ready)
            return
        self._wbuf += data

    def _write_ready(self) -> None:
        try:
            sent = self._sock.send(self._wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._fatal(e)
            return
        del self._wbuf[:sent]
        if not self._wbuf:
            self._loop.remove_writer(self._fd)

    def get_write_buffer_size(self) -> int:
        return len(self._wbuf)

    def close(self) -> None:
        self._shut(None)

    def abort(self) -> None:
        self._shut(None)

    def _fatal(self, exc: Exception) -> None:
        self._shut(exc)

    def _shut(self, exc: Exception | None) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if self._wbuf:
            self._loop.remove_writer(self._fd)
            self._wbuf.clear()
        self._sock.close()  # at once (not in the callback), so a loop that ends first leaks no socket
        self._loop.call_soon(self._protocol.connection_lost, exc)


def _peer(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:
        return None


async def open_connection(protocol_factory: Callable[[], StampedProtocol], host: str,
                          port: int) -> tuple[KStampTransport, StampedProtocol]:
    """Connect to host:port (every address getaddrinfo gives, in order) and wrap the socket in a KStampTransport.

    A numeric host resolves without the executor thread that loop.getaddrinfo would use.
    """
    loop = asyncio.get_running_loop()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _name, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
        except OSError as e:
            sock.close()
            error = e
            continue
        except BaseException:
            sock.close()
            raise
        protocol = protocol_factory()
        return KStampTransport(loop, sock, protocol), protocol
    raise error or OSError(f"getaddrinfo gave no address for {host}:{port}")
