"""bench/measure/kstamp.py: the plain-TCP transport that hands each read its kernel receive stamp.

The stamp checks are orderings, not timings: a stamp must lie between the perf_counter_ns taken just before
the peer's send and the one taken when the read was handed over, and when the event loop is kept busy after
the data arrived, the stamp must come before the loop got round to reading (the asyncio path's stamp would
come after). A stamp on the wrong clock (CLOCK_REALTIME unconverted) is off by ~1.7e18 ns and fails both.
The client-level behaviours (chunked and Content-Length bodies, keep-alive, errors, TLS) run on this transport
in tests/unit/measure/test_client_http.py, since plain http uses it by default on Linux.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from bench.measure import kstamp
from bench.measure.client import ClientConfig, RequestSpec, StreamingClient, run_async

pytestmark = pytest.mark.skipif(not kstamp.AVAILABLE, reason="no SO_TIMESTAMPNS on this platform")

REQ = RequestSpec(prompt="a b", input_len=2, output_len=2)
SSE = (b'data: {"choices":[{"index":0,"text":" ba"}]}\n\n' b'data: {"choices":[{"index":0,"text":" be"}]}\n\n'
       b'data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":2}}\n\n' b"data: [DONE]\n\n")
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(SSE)


class _Recorder:
    """A StampedProtocol that keeps (stamp, perf_counter_ns at hand-over, data) per read."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int, bytes]] = []
        self.lost: list[Exception | None] = []
        self.eof = 0
        self.transport: asyncio.BaseTransport | None = None
        self.got = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def received_at(self, now_ns: int, data: bytes) -> None:
        self.reads.append((now_ns, time.perf_counter_ns(), data))
        self.got.set()

    def eof_received(self) -> bool:
        self.eof += 1
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


@pytest.fixture(autouse=True)
def stamping_on():
    """Keep the kernel's receive stamping switched on while a test runs.

    Linux switches it on system-wide, in deferred work, when the first socket asks and off when the last
    one closes, so the very first packet after that may come without a stamp (kstamp's docstring: such a
    read is counted as unstamped). A UDP socket of this fixture holds it on, and the fixture waits until a
    datagram to itself comes back stamped.
    """
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, kstamp.SO_TIMESTAMPNS, 1)
    u.bind(("127.0.0.1", 0))
    u.settimeout(1)
    try:
        for _ in range(100):
            u.sendto(b"w", u.getsockname())
            if u.recvmsg(16, socket.CMSG_SPACE(16))[1]:
                break
            time.sleep(0.01)
        yield
    finally:
        u.close()


async def _pair() -> tuple[kstamp.KStampTransport, _Recorder, socket.socket, socket.socket]:
    """A listening socket, a KStampTransport connected to it, and the accepted (blocking) server socket."""
    lsock = socket.create_server(("127.0.0.1", 0))
    t, proto = await kstamp.open_connection(_Recorder, "127.0.0.1", lsock.getsockname()[1])
    peer, _ = lsock.accept()
    assert isinstance(t, kstamp.KStampTransport) and isinstance(proto, _Recorder)
    return t, proto, peer, lsock


def test_stamp_lies_between_the_send_and_the_read_on_the_monotonic_clock():
    """A first exchange primes the kernel: Linux switches receive timestamping on machine-wide only when a socket
    asks for it and no other socket has it on, through deferred work, so a packet that arrives right away may come
    unstamped (once in a CI run of 2026-12-05, when no other socket had it on; kstamp counts such a read and stamps
    it at the read). The second exchange must then carry the kernel's stamp."""
    async def go():
        t, proto, peer, lsock = await _pair()
        try:
            assert t.kernel_stamps
            peer.sendall(b"prime")
            await asyncio.wait_for(proto.got.wait(), 5)
            await asyncio.sleep(0.05)
            proto.got.clear()
            unstamped = t.unstamped_reads
            before = time.perf_counter_ns()
            peer.sendall(b"hello")
            await asyncio.wait_for(proto.got.wait(), 5)
            stamp, handed, data = proto.reads[-1]
            assert data == b"hello" and before <= stamp <= handed
            assert t.unstamped_reads == unstamped
        finally:
            t.close()
            peer.close()
            lsock.close()

    asyncio.run(go())


@pytest.mark.parametrize("runner", [asyncio.run, run_async], ids=["asyncio", "uvloop-if-installed"])
def test_stamp_is_the_arrival_not_the_late_read(runner):
    """The loop is blocked after the data arrived: the stamp comes before the block ended, the read after."""

    async def go():
        t, proto, peer, lsock = await _pair()
        try:
            peer.sendall(b"x" * 100)
            sent = time.perf_counter_ns()
            time.sleep(0.05)  # the event loop cannot read now: what asyncio's path would stamp is after this
            unblocked = time.perf_counter_ns()
            await asyncio.wait_for(proto.got.wait(), 5)
            stamp, handed, _ = proto.reads[0]
            assert stamp <= sent < unblocked <= handed
        finally:
            t.close()
            peer.close()
            lsock.close()

    runner(go())


def test_write_larger_than_the_socket_buffer_is_delivered_in_order():
    payload = bytes(range(256)) * 40_000  # 10 MB: more than the send buffer, so the rest waits for add_writer

    async def go():
        t, proto, peer, lsock = await _pair()
        try:
            t.write(payload)
            assert t.get_write_buffer_size() > 0
            peer.setblocking(False)
            got = bytearray()
            while len(got) < len(payload):
                try:
                    got += peer.recv(1 << 20)
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert bytes(got) == payload and t.get_write_buffer_size() == 0
        finally:
            t.close()
            peer.close()
            lsock.close()

    asyncio.run(go())


def test_peer_close_gives_eof_then_connection_lost_once():
    async def go():
        t, proto, peer, lsock = await _pair()
        peer.sendall(b"bye")
        peer.close()
        lsock.close()
        for _ in range(500):
            if proto.lost:
                break
            await asyncio.sleep(0.002)
        assert [r[2] for r in proto.reads] == [b"bye"] and proto.eof == 1 and proto.lost == [None]
        assert t.is_closing()
        t.close()  # a second close is a no-op
        await asyncio.sleep(0.01)
        assert proto.lost == [None]

    asyncio.run(go())


def test_reset_by_peer_reports_the_error():
    async def go():
        t, proto, peer, lsock = await _pair()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()  # linger 0: RST instead of FIN
        lsock.close()
        for _ in range(500):
            if proto.lost:
                break
            await asyncio.sleep(0.002)
        assert len(proto.lost) == 1 and isinstance(proto.lost[0], ConnectionResetError)

    asyncio.run(go())


def test_connect_refused_raises_and_leaves_no_socket_open():
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    lsock.close()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(kstamp.open_connection(_Recorder, "127.0.0.1", port))


def test_read_without_a_stamp_is_timed_at_the_read_and_counted(monkeypatch):
    monkeypatch.setattr(kstamp, "_ANC_BYTES", 0)  # no room for ancillary data: the kernel drops the stamp

    async def go():
        t, proto, peer, lsock = await _pair()
        try:
            peer.sendall(b"x")
            await asyncio.wait_for(proto.got.wait(), 5)
            assert t.unstamped_reads == 1
            stamp, handed, _ = proto.reads[0]
            assert stamp <= handed
        finally:
            t.close()
            peer.close()
            lsock.close()

    asyncio.run(go())


async def _one_reply_server(replies: int) -> tuple[asyncio.base_events.Server, list[int]]:
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        for _ in range(replies):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            writer.write(HEAD)
            for i in range(0, len(SSE), 40):  # separate reads, so each event is stamped on its own
                writer.write(SSE[i:i + 40])
                await writer.drain()
                await asyncio.sleep(0.002)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), conns


@pytest.mark.parametrize(("kernel", "available", "source"),
                         [(True, True, "kernel"), (False, True, "loop"), (True, False, "loop")])
def test_client_records_which_path_timed_the_request(monkeypatch, kernel, available, source):
    monkeypatch.setattr(kstamp, "AVAILABLE", available)

    async def go():
        srv, conns = await _one_reply_server(2)
        port = srv.sockets[0].getsockname()[1]
        try:
            cfg = ClientConfig(base_url=f"http://127.0.0.1:{port}", model="m", kernel_timestamps=kernel)
            async with StreamingClient(cfg) as client:
                t0 = time.perf_counter_ns()
                recs = [await client.send(i, REQ) for i in range(2)]
                t1 = time.perf_counter_ns()
                kinds = {type(c.transport) for c in client._open}
            return recs, conns, kinds, t0, t1
        finally:
            srv.close()
            await srv.wait_closed()

    recs, conns, kinds, t0, t1 = asyncio.run(go())
    for rec in recs:
        assert rec.ok and rec.output_text == " ba be" and rec.timestamp_source == source
        assert t0 <= rec.send_ns < rec.chunk_ns[0] < rec.chunk_ns[1] <= rec.done_ns <= t1
    assert len(conns) == 1  # keep-alive reuse on either transport
    assert (kinds == {kstamp.KStampTransport}) == (source == "kernel")


def test_cancelled_request_closes_the_kernel_transport():
    async def go():
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(HEAD + SSE[:SSE.index(b"\n\n") + 2])  # one event, then nothing
            await writer.drain()
            await reader.read()  # until the client goes away
            writer.close()

        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        try:
            async with StreamingClient(ClientConfig(base_url=f"http://127.0.0.1:{port}", model="m")) as client:
                task = asyncio.create_task(client.send(0, REQ))
                while not client._open or not any(c.response and c.response.got_bytes for c in client._open):
                    await asyncio.sleep(0.002)
                (conn,) = client._open
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert conn.transport is not None and conn.transport.is_closing() and not client._open
                (rec,) = client.cancelled
                assert rec.cancelled and len(rec.chunk_ns) == 1 and rec.timestamp_source == "kernel"
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(go())
