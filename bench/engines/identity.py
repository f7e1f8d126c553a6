"""Is the server answering the one we meant? Socket ownership from /proc, and the model /v1/models serves.

Why (issue 25): a server start was accepted as soon as *anything* answered /health with 200 on the chosen
port, so a process that held that port first was measured and recorded as the started vLLM. The port cannot be
handed to vLLM already bound (it binds its own socket), so instead of holding it the harness proves, before
measuring, that (1) every listening socket on the port belongs to a process of the group it started (the
socket inodes of /proc/net/tcp{,6} matched against /proc/<pid>/fd of the group's members), and (2)
`/v1/models` serves the name it was started with. An `openai` endpoint is not ours to own, so only (2) is
checked for it: the endpoint must serve the model the sweep asks for.

Linux /proc; the HTTP check is urllib (one request, before any load).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from bench.measure.redact import redact

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
MODELS_TIMEOUT_S = 10.0  # one GET /v1/models; a healthy server answers in milliseconds
REASON_CHARS = 300  # how much of an unexpected /v1/models answer a failure reason quotes


def listening_inodes(port: int, proc_net: Path = Path("/proc/net")) -> list[int]:
    """Socket inodes of every TCP socket listening on `port` (any address, IPv4 or IPv6)."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(f) > 9 and f[3] == LISTEN and int(f[1].rsplit(":", 1)[1], 16) == port:
                out.append(int(f[9]))
    return out


def socket_inodes_of(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (empty when it is gone or not readable)."""
    found = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def owner_of(inode: int) -> int | None:
    """The first process (by pid) holding socket `inode`, among those this user may inspect."""
    for d in os.listdir("/proc"):
        if d.isdigit() and inode in socket_inodes_of(int(d)):
            return int(d)
    return None


def _describe(pid: int | None) -> str:
    if pid is None:
        return "a process this user cannot inspect"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = "?"
    return f"pid {pid} ({' '.join(cmd.split())[:120]})"  # one line: a `python -c` script has newlines


def port_owner_problem(port: int, members: list[int]) -> str | None:
    """None when `port` is listened on, only by sockets that processes in `members` hold; else why not.

    vLLM may bind with SO_REUSEPORT, which lets another process listen on the same port beside it (and take a
    share of the connections): every listener must be ours, not just one."""
    inodes = listening_inodes(port)
    if not inodes:
        return f"nothing listens on port {port}"
    ours: set[int] = set()
    for pid in members:
        ours |= socket_inodes_of(pid)
    foreign = [i for i in inodes if i not in ours]
    if not foreign:
        return None
    return (f"port {port} is held by another process, {_describe(owner_of(foreign[0]))}, not by the server this "
            "run started")


def _get_json(url: str, headers: dict[str, str | bytes], ctx: ssl.SSLContext | None) -> tuple[int, object]:
    """(HTTP status, parsed JSON body or the body's text); direct connection, as the streaming client makes."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ctx) if ctx else
                                         urllib.request.HTTPSHandler())
    req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "maas-bench",
                                               **headers})  # type: ignore[dict-item]  # bytes values pass as-is
    try:
        with opener.open(req, timeout=MODELS_TIMEOUT_S) as r:
            status, raw = r.status, r.read(1 << 20)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read(1 << 16)
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def model_ids(body: object) -> list[str] | None:
    """The ids of an OpenAI `GET /models` list ({"data": [{"id": ...}, ...]}); None when it is not one."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


def serves_model_problem(models_url: str, model: str, api_key: str | None = None,
                         ctx: ssl.SSLContext | None = None) -> str | None:
    """None when the endpoint serves `model`; else why not, in one line, every form of `api_key` masked
    (bench.measure.redact) before the quoted answer is cut to length.

    Proof is `GET <api>/models` listing the id, or else the OpenAI "retrieve model" route, `GET <api>/models/<id>`,
    answering that id (a provider may not list every model; the simulator serves any name it is asked for)."""
    # UTF-8 bytes, as the streaming client sends it (http.client would encode a str as latin-1)
    headers: dict[str, str | bytes] = {"Authorization": f"Bearer {api_key}".encode()} if api_key else {}
    try:
        status, body = _get_json(models_url, headers, ctx)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return redact(f"GET {models_url} failed ({reason}); cannot confirm the endpoint serves model {model!r}",
                      api_key)
    ids = model_ids(body) if status == 200 else None
    if ids is not None and model in ids:
        return None
    try:
        one_status, one = _get_json(f"{models_url}/{quote(model, safe='/')}", headers, ctx)
        if one_status == 200 and isinstance(one, dict) and one.get("id") == model:
            return None
    except (urllib.error.URLError, OSError, ValueError):
        pass
    if ids is not None:
        shown = ", ".join(repr(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
        return f"the endpoint does not serve model {model!r}: GET {models_url} lists {shown or 'no model'}"
    said = redact(body if isinstance(body, str) else json.dumps(body), api_key) or ""
    return (f"cannot confirm the endpoint serves model {model!r}: GET {models_url} answered HTTP {status} "
            f"{' '.join(said.split())[:REASON_CHARS]}")


def boot_id() -> str | None:
    """This boot's random id: a process start time (clock ticks since boot) only names a process within one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_fingerprint(pid: int) -> dict[str, object] | None:
    """What proves a process is the one the harness started: its start time (clock ticks since boot, field 22
    of /proc/<pid>/stat), the boot, its session and process group, and its command line; None when it is gone.

    Why each: a pid is reused once its process is gone, and a reused pid may even run the same command (another
    maas-bench's server); the start time tells them apart. A server is started as the leader of a new session
    (bench.engines.process.start_group), so its session id and group id both equal its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: state ppid pgrp session ... starttime
    if fields[0] == "Z":
        return None
    return {"start_ticks": int(fields[19]), "boot_id": boot_id(), "pgid": int(fields[2]), "sid": int(fields[3]),
            "command": [a.decode(errors="replace") for a in raw.split(b"\0") if a]}


def proven_own_group(rec: dict[str, object]) -> int | None:
    """The recorded server's pid when the process now holding that pid is provably the one recorded (same start
    time, boot and command line, and still leading its own session and group); else None, and nothing may be
    signalled: a crafted or stale record never names a process the harness can kill."""
    try:
        pid = int(rec["pid"])  # type: ignore[call-overload]
        want = (int(rec["start_ticks"]), str(rec["boot_id"]), [str(a) for a in rec["command"]])  # type: ignore
    except (KeyError, TypeError, ValueError):
        return None
    now = process_fingerprint(pid) if pid > 1 else None
    if now is None or now["sid"] != pid or now["pgid"] != pid:
        return None
    return pid if (now["start_ticks"], now["boot_id"], now["command"]) == want else None
