"""Gateway overhead: the same requests sent to an engine directly, through npucenter's gateway
(the real path and the bare one) and through the LiteLLM proxy, in one run.

Open-loop arrivals (``--rates``, default 200, 500 and 1,000 requests/s; streaming at
``--stream-rates``) on loopback, chat completions against a scripted OpenAI-compatible engine
(``npucenter.gateway.testing``, 16 tokens, no model time), so the difference of the latency
distributions is what each path adds. At each rate one run goes, in turn, direct to the engine;
through the real path (`npucenter up`'s app: a tenant key from the store, limits on, every
request metered into the ledger on SQLite, then on PostgreSQL); through the bare ASGI gateway;
and through the LiteLLM proxy (its own venv under bench/.venv-litellm, a master key, no
database; ``--no-litellm`` or a failed install skips it with a note in the JSON). All servers
are up at once in front of the same engine; each run waits until every server is idle again.
The client is a minimal keep-alive HTTP/1.1 client (uvloop) so that its own cost stays small
and equal on every path; each server's CPU per answered request is read from /proc.

Then closed-loop maximum throughput of each path, 3x overload of a 4-replica fleet through
the real path with and without load shedding, clients abandoning streams (slots and ledger
checked after), cProfile of the bare and real paths at 500 requests/s, and the live center
against the digital twin on the head of the Azure conversation trace.

Writes bench/results/gateway.json and prints a summary. ``--quick`` runs shorter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
KEY = "sk-bench"
LITELLM_KEY = "sk-litellm-bench-0123456789"
LITELLM_VERSION = "1.108.7"  # the version issue 16 measured
DRAIN_S = 10.0  # an open-loop run waits this long after its last send, then counts the rest lost
MAX_OPEN = 1024  # the open-loop client's bound on requests in flight (more: counted as errors)
ADMIN_KEY = "bench-gateway-admin-0123456789"
BODY = json.dumps(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "Hello, proving ground."}],
        "max_tokens": 16,
    }
).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()


# --- the processes -------------------------------------------------------------------------------


def serve_gateway(
    port: int,
    upstream: str,
    profile_out: str | None,
    key_out: str | None = None,
    shedding: bool = True,
    slots: int = 4096,
    database_url: str = "",
) -> None:
    """Run the gateway (the bench starts this in a child process): the bare ASGI gateway, or
    with ``key_out`` the real path — `npucenter up`'s whole app on a fresh store (SQLite, or
    ``database_url``), a tenant key (its secret written to ``key_out``), the tenant's token
    rate on (set far above what the run asks, so it never refuses) and every request metered
    into the store's ledger. ``upstream``: the replicas' URLs, comma-separated, one replica
    each with ``slots`` slots."""
    import uvicorn

    from npucenter.gateway import (
        Gateway,
        GatewayConfig,
        Principal,
        ReplicaEndpoint,
        StaticKeyResolver,
    )

    endpoints = [
        ReplicaEndpoint(
            replica_id=f"rngd-0-r{i}",
            base_url=url,
            model_id="m",
            device_id="rngd",
            max_inflight=slots,
        )
        for i, url in enumerate(upstream.split(","))
    ]
    app: object
    if key_out is None:
        app = Gateway(
            keys=StaticKeyResolver({KEY: Principal(key_id="bench", tenant="bench")}),
            endpoints=endpoints,
            config=GatewayConfig(scrape_interval_s=0),
        )
    else:
        app = _real_center(endpoints, key_out, database_url)
    if key_out is not None and os.environ.get("BENCH_GATEWAY_NO_FAST_PATH"):  # before/after
        server: Any = app
        server.user_middleware = [
            m for m in server.user_middleware if m.cls.__name__ != "GatewayFastPath"
        ]
    gateway: Any = app if key_out is None else app.state.gateway  # type: ignore[attr-defined]
    if slots != 4096:  # the overload scenario's bound on the expected wait
        gateway.dispatcher.waits.max_expected_wait_s = OVERLOAD_MAX_WAIT_S
    if not shedding:  # the gateway as it was before load shedding, for the overload comparison
        gateway.door.max_inflight, gateway.door.max_loop_lag_s = 1 << 60, 0.0
        gateway.dispatcher.waits.max_expected_wait_s = float("inf")
        gateway.dispatcher.max_queued, gateway.dispatcher.max_wait_s = 1 << 60, 3600.0
    profiler = cProfile.Profile() if profile_out else None

    def dump(*_: object) -> None:
        if profiler is not None and profile_out:
            profiler.disable()
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("tottime").print_stats(30)
            report = {"text": out.getvalue(), "by_category": _where_time_goes(stats)}
            Path(profile_out).write_text(json.dumps(report))
        os._exit(0)

    signal.signal(signal.SIGTERM, dump)
    if profiler is not None:
        profiler.enable()
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _real_center(endpoints: list[Any], key_out: str, database_url: str = "") -> object:
    import tempfile

    import npucenter.live.extension  # noqa: F401  (registers the gateway server extension)
    from npucenter.api.app import build_server_app
    from npucenter.settings import Settings

    env = {
        "NPUCENTER_ADMIN_KEY": ADMIN_KEY,
        "NPUCENTER_VIRTUAL_FLEET": "0",
        "NPUCENTER_JOB_RUNNER": "0",
    }
    if database_url:
        env["NPUCENTER_DATABASE_URL"] = database_url
    # a fresh store beside the key file, in the run's work directory (removed after the run)
    data_dir = tempfile.mkdtemp(prefix="data-", dir=Path(key_out).parent)
    settings = Settings.from_env(env, data_dir=data_dir)
    app = build_server_app(settings)
    with app.state.control.tx() as repo:
        tenant = repo.create_tenant("bench", "company")
        repo.set_quota(tenant, "rngd", nominal_cards=1, tokens_per_s=1e9)
        _, secret = repo.create_key(tenant_id=tenant.id, scope="tenant", name="bench")
    Path(key_out).write_text(secret)
    db = database_url or str(settings.database_url).removeprefix("sqlite:///")
    Path(key_out + ".db").write_text(db)
    app.state.gateway.pool.set(endpoints)
    return app


# cProfile charges the loop's waiting to the coroutine frame that waits longest (the lifespan
# task, the ticker) or to asyncio's runner: all of it is idle time.
_CATEGORIES = (
    (
        "event loop idle (waiting for sockets)",
        ("asyncio/runners.py", "base_events.py:", "selectors.py", ":_lifespan", ":_tick_forever"),
    ),
    (
        "socket writes/reads (uvicorn, asyncio streams)",
        ("httptools_impl.py", "asyncio/streams.py", "transports"),
    ),
    ("gateway code (npucenter)", ("npucenter/",)),
    ("Prometheus client", ("prometheus_client",)),
    ("JSON", ("json/",)),
    ("asyncio tasks and timeouts", ("asyncio/",)),
)


def _where_time_goes(stats: pstats.Stats) -> dict[str, float]:
    """Profiled self time (s) summed by category of the function's file."""
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        name = f"{filename}:{func}"
        label = next(
            (lbl for lbl, needles in _CATEGORIES if any(n in name for n in needles)),
            "other (builtins, C calls; start-up imports and ssl setup)",
        )
        totals[label] = totals.get(label, 0.0) + tottime
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def _wait_up(port: int, path: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on port {port}")


# --- a minimal keep-alive HTTP/1.1 client -----------------------------------------------------------


class _Conn:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ids: list[bytes] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.ids = ids  # the x-request-id of every answer read (the ledger's request ids)

    async def post(self, head: bytes) -> int:
        """The answer's status; 0 for a 503 shed at the gateway's door (no request id)."""
        self.writer.write(head)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        lower = header.lower()
        j = lower.find(b"x-request-id: ")
        if status == 503 and j < 0:
            status = 0
        i = lower.find(b"content-length:")
        if i >= 0:
            n = int(lower[i + 15 : lower.index(b"\r\n", i)])
            await self.reader.readexactly(n)
        else:  # chunked
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if self.ids is not None and j >= 0:
            self.ids.append(header[j + 14 : header.index(b"\r\n", j)])
        return status


def _request_head(path: str, key: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _run_rate(
    port: int,
    path: str,
    rate_rps: float,
    duration_s: float,
    key: str = KEY,
    body: bytes = BODY,
    drain_s: float = DRAIN_S,
    max_open: int = MAX_OPEN,
) -> dict[str, object]:
    """Open loop: ``rate_rps`` requests a second for ``duration_s``, each on an idle keep-alive
    connection (a new one when none is idle); what is not answered ``drain_s`` after the last
    send is cancelled and counted as an error (``num_timed_out``), and a request due while
    ``max_open`` are unanswered is not sent and counted as an error (``num_not_sent``: a
    client's connection pool is bounded too, and a saturated server's backlog stays so)."""
    head = _request_head(path, key, body)
    ids: list[bytes] = []
    idle: list[_Conn] = []
    for _ in range(64):
        idle.append(_Conn(*await asyncio.open_connection("127.0.0.1", port), ids))
    latencies: list[float] = []
    shed: list[float] = []  # latency of 429/503 answers
    lags: list[float] = []
    errors = 0
    answered = 0
    door = 0  # shed before the key was read: nobody to charge, no ledger row
    busy: set[_Conn] = set()

    not_sent = 0

    async def one(due: float) -> None:
        nonlocal errors, answered, door, not_sent
        if len(busy) >= max_open:
            not_sent += 1
            return
        try:
            conn = (
                idle.pop()
                if idle
                else _Conn(*await asyncio.open_connection("127.0.0.1", port), ids)
            )
        except OSError:
            errors += 1
            return
        start = time.perf_counter()
        lags.append(start - due)
        busy.add(conn)
        try:
            status = await conn.post(head)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn.writer.close()
            return
        finally:
            busy.discard(conn)
        answered += 1
        if status == 200:
            latencies.append(time.perf_counter() - start)
        elif status in (0, 429, 503):
            shed.append(time.perf_counter() - start)
            door += status == 0
        else:
            errors += 1
        idle.append(conn)

    n = int(rate_rps * duration_s)
    tasks = []
    t0 = time.perf_counter() + 0.05
    for i in range(n):
        due = t0 + i / rate_rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    _done, pending = await asyncio.wait(tasks, timeout=drain_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
    elapsed = time.perf_counter() - t0
    for conn in (*idle, *busy):
        conn.writer.close()
    warm = latencies[len(latencies) // 10 :] if len(latencies) > 50 else latencies  # drop warm-up
    warm.sort()
    shed.sort()
    return {
        "num_requests": n,
        "num_answered": answered,
        "num_errors": errors + len(pending) + not_sent,
        "num_timed_out": len(pending),
        "num_not_sent": not_sent,
        "num_shed": len(shed),
        "num_shed_at_door": door,
        "shed_p50_ms": _pct(shed, 50) * 1e3,
        "shed_p99_ms": _pct(shed, 99) * 1e3,
        "achieved_rps": answered / elapsed,
        "ok_rps": len(latencies) / elapsed,
        "p50_ms": _pct(warm, 50) * 1e3,
        "p90_ms": _pct(warm, 90) * 1e3,
        "p99_ms": _pct(warm, 99) * 1e3,
        "mean_ms": statistics.fmean(warm) * 1e3 if warm else float("nan"),
        "p99_send_lag_ms": _pct(sorted(lags), 99) * 1e3,
        "answered_ids": ids,
    }


async def _closed_loop(
    port: int, path: str, concurrency: int, duration_s: float, key: str = KEY
) -> dict[str, object]:
    """``concurrency`` connections each sending its next request as soon as its last is
    answered, for ``duration_s``: the most the server answers per second."""
    head = _request_head(path, key, BODY)
    ids: list[bytes] = []
    conns = [
        _Conn(*await asyncio.open_connection("127.0.0.1", port), ids) for _ in range(concurrency)
    ]
    ok = answered = errors = shed = door = 0
    stop = time.perf_counter() + duration_s

    async def loop(conn: _Conn) -> None:
        nonlocal ok, answered, errors, shed, door
        while time.perf_counter() < stop:
            try:
                status = await conn.post(head)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                return
            answered += 1
            ok += status == 200
            shed += status in (0, 429, 503)
            door += status == 0

    t0 = time.perf_counter()
    with contextlib.suppress(TimeoutError):  # a server that stalls: what it answered counts
        await asyncio.wait_for(asyncio.gather(*(loop(c) for c in conns)), duration_s + DRAIN_S)
    elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.writer.close()
    return {
        "concurrency": concurrency,
        "ok_rps": ok / elapsed,
        "num_answered": answered,
        "num_ok": ok,
        "num_shed": shed,
        "num_shed_at_door": door,
        "num_errors": errors + answered - ok - shed,
        "answered_ids": ids,
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its children alive now (Linux /proc;
    other sessions' load does not count)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def _ledger_query(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the bench store: a SQLite file or a PostgreSQL URL."""
    if db.startswith("postgresql"):
        import psycopg

        with psycopg.connect(db.replace("postgresql+psycopg://", "postgresql://")) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def _ledger_rows(db: str) -> int:
    return int(_ledger_query(db, "SELECT count(*) FROM usage_ledger")[0][0])


def _measured(
    proc: subprocess.Popen[bytes] | None, coro: Any, db: str | None = None
) -> dict[str, object]:
    """Run ``coro`` (a load run) and add the server's CPU per answered request (``proc`` and
    its children) and, with the store's database, the ledger rows the run wrote (checked
    against the answers)."""
    import uvloop

    rows_before = _ledger_rows(db) if db else 0
    cpu0 = _cpu_s(proc.pid) if proc else 0.0
    load0 = os.getloadavg()[0]
    out: dict[str, object] = uvloop.run(coro)
    answered = int(out["num_answered"])  # type: ignore[call-overload]
    if proc is not None:
        cpu = _cpu_s(proc.pid) - cpu0
        out["gateway_cpu_us_per_request"] = cpu / answered * 1e6 if answered else float("nan")
    out["load_average_1m"] = round(max(load0, os.getloadavg()[0]), 2)
    # a request shed at the door (before its key is read) has nobody to charge: no row
    answered -= int(out.get("num_shed_at_door", 0))  # type: ignore[call-overload]
    ids = {i.decode() for i in out.pop("answered_ids", [])}  # type: ignore[attr-defined]
    if db is not None:
        deadline = time.monotonic() + 5.0  # the ticker writes the journal's rows every 0.2 s
        while True:
            rows = _ledger_rows(db) - rows_before
            if rows >= answered or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # rows of requests the client gave up on may still come
        stored = {r[0] for r in _ledger_query(db, _rows_since(db, rows_before, "request_id"))}
        out["ledger_rows"] = len(stored)
        # every answer the client read has its row (request_id is unique: exactly one); the
        # other rows are requests the client gave up on (timed out), metered as the gateway saw
        out["ledger_rows_missing"] = len(ids - stored)
        out["ledger_rows_of_unanswered"] = len(stored - ids)
        out["ledger_rows_match_answers"] = not (ids - stored) and len(ids) == answered
    return out


def _rows_since(db: str, offset: int, columns: str) -> str:
    """SQL: ``columns`` of the ledger rows after the first ``offset`` (SQLite or PostgreSQL)."""
    limit = "" if db.startswith("postgresql") else "LIMIT -1 "
    return f"SELECT {columns} FROM usage_ledger ORDER BY id {limit}OFFSET {offset}"


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# --- the benchmark ------------------------------------------------------------------------------------


def _start_gateway(
    upstream_url: str,
    profile_out: str | None = None,
    key_out: str | None = None,
    shedding: bool = True,
    slots: int = 4096,
    database_url: str = "",
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    argv = [sys.executable, __file__, "--serve-gateway", str(port), "--upstream", upstream_url]
    if profile_out:
        argv += ["--profile-out", profile_out]
    if key_out:
        argv += ["--key-out", key_out]
    if database_url:
        argv += ["--database-url", database_url]
    if not shedding:
        argv.append("--no-shedding")
    argv += ["--slots", str(slots)]
    proc = _spawn(argv)
    try:
        _wait_up(port, "/health", timeout_s=60.0)
    except RuntimeError:
        _stop(proc)
        raise
    return proc, port


def _start_stub(*extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    argv = [sys.executable, "-m", "npucenter.gateway.testing", "--port", str(port)]
    proc = _spawn([*argv, "--output-tokens", "16", *extra])
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- LiteLLM in its own venv, and a PostgreSQL server ---------------------------------------------

LITELLM_VENV = ROOT / "bench" / ".venv-litellm"


def _litellm_bin() -> tuple[Path | None, str]:
    """The venv's ``litellm`` (made and installed when missing), or None and why not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    version = LITELLM_VENV / ".installed"
    if exe.exists() and version.exists() and version.read_text().strip() == LITELLM_VERSION:
        return exe, f"litellm[proxy]=={LITELLM_VERSION} in {LITELLM_VENV.relative_to(ROOT)}"
    try:
        if not (LITELLM_VENV / "bin" / "pip").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True
            )
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV} (once)")
        subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "--quiet",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", b"") or b""
        tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
        return None, f"skipped: could not install litellm[proxy]=={LITELLM_VERSION}: {exc!r} {tail}"
    version.write_text(LITELLM_VERSION)
    return exe, f"litellm[proxy]=={LITELLM_VERSION} in {LITELLM_VENV.relative_to(ROOT)}"


def _start_litellm(exe: Path, upstream_url: str, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The LiteLLM proxy (one worker, a master key, no database) in front of ``upstream_url``."""
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params:\n"
        "      model: openai/m\n"
        f"      api_base: {upstream_url}/v1\n"
        "      api_key: none\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONPATH")} | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
    }
    proc = subprocess.Popen(
        [
            str(exe),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
        env=env,
        start_new_session=True,  # stopped as a group: no worker outlives the bench
    )
    try:
        _wait_up(port, "/health/liveliness", timeout_s=120.0)
    except RuntimeError:
        _stop_group(proc)
        raise
    return proc, port


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` and every process of its session (the LiteLLM proxy and its workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def _postgres(work: Path) -> Any:
    """A fresh PostgreSQL database for the bench: on the server NPUCENTER_TEST_POSTGRES_URL
    names, else on one scripts/pg-test-server.sh starts on loopback (stopped after); yields
    its URL, or a string starting "skipped:" when no server can be had."""
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL", "")
    pg_tmp = work / "pg"  # the script's state file and data: this run's own
    pg_tmp.mkdir(mode=0o755)
    work.chmod(0o755)  # initdb runs as the postgres user
    env = os.environ | {"TMPDIR": str(pg_tmp)}
    started = False
    if not base:
        try:
            out = subprocess.run(
                ["bash", str(ROOT / "scripts" / "pg-test-server.sh"), "start"],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
            base = out.stdout.strip().split("=", 1)[1]
            started = True
        except (OSError, subprocess.SubprocessError, IndexError) as exc:
            err = (getattr(exc, "stderr", "") or "").strip().splitlines()[-1:]
            yield f"skipped: no PostgreSQL server could be started ({exc!r} {err})"
            return
    import psycopg

    name = f"npucenter_bench_{os.getpid()}"
    try:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made = True
    except psycopg.Error as exc:
        made = False
        why = f"skipped: PostgreSQL at {base.split('@')[-1]} refused: {exc!r}"
    try:
        yield base.rsplit("/", 1)[0] + "/" + name if made else why
    finally:
        if made:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(base, autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if started:
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "pg-test-server.sh"), "stop"],
                capture_output=True,
                env=env,
                timeout=60,
            )


# --- the benchmark ------------------------------------------------------------------------------------

PATHS = ("direct", "real", "real_postgres", "bare", "litellm")  # the order within each rate


def run(
    rates: list[float],
    duration_s: float,
    *,
    real_path: bool = True,
    litellm: bool = True,
    postgres: bool = True,
    stream_rates: list[float] | None = None,
    overload_s: float = 3.0,
    profile: bool = True,
) -> dict[str, object]:
    """At each rate, non-streaming then streaming, one run on each path in turn: direct to the
    stub engine, the real path (a tenant key, limits on, the ledger on SQLite; then on
    PostgreSQL), the bare gateway and the LiteLLM proxy, all up at once in front of the same
    stub; then closed-loop maximum throughput and CPU per request of each, 3x overload of a
    4-replica fleet with and without shedding, clients abandoning streams, and profiles of the
    bare and real paths at 500 requests/s."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="npucenter-bench-gateway-"))
    key_file = work / "key"
    path = "/v1/chat/completions"
    procs: list[subprocess.Popen[bytes]] = []
    group: subprocess.Popen[bytes] | None = None
    notes: dict[str, str] = {}
    runs: dict[tuple[bool, float, str], dict[str, object]] = {}
    closed: dict[str, dict[str, object]] = {}
    overload: dict[str, object] = {}
    overload_off: dict[str, object] = {}
    abandon: dict[str, object] = {}
    profiles: dict[str, dict[str, object]] = {}
    with contextlib.ExitStack() as stack:
        pg_url = stack.enter_context(_postgres(work)) if (real_path and postgres) else ""
        if pg_url.startswith("skipped"):
            notes["real_postgres"], pg_url = pg_url, ""
        elif not (real_path and postgres):
            notes["real_postgres"] = "skipped: --no-postgres or --no-real-path"
        try:
            upstream, up_port = _start_stub()
            procs.append(upstream)
            _wait_up(up_port, "/health")
            upstream_url = f"http://127.0.0.1:{up_port}"
            # target name -> (port, key, process, ledger database)
            targets: dict[str, tuple[int, str, Any, str | None]] = {
                "direct": (up_port, KEY, None, None)
            }
            gw, port = _start_gateway(upstream_url)
            procs.append(gw)
            targets["bare"] = (port, KEY, gw, None)
            if real_path:
                for name, url in (("real", ""), ("real_postgres", pg_url)):
                    if name == "real_postgres" and not url:
                        continue
                    kf = work / f"key-{name}"
                    gw, port = _start_gateway(upstream_url, key_out=str(kf), database_url=url)
                    procs.append(gw)
                    db = Path(str(kf) + ".db").read_text()
                    targets[name] = (port, kf.read_text(), gw, db)
                    key_file = kf if name == "real" else key_file
            if litellm:
                exe, why = _litellm_bin()
                notes["litellm"] = why
                if exe is not None:
                    try:
                        group, port = _start_litellm(exe, upstream_url, work)
                        targets["litellm"] = (port, LITELLM_KEY, group, None)
                    except RuntimeError as exc:
                        notes["litellm"] = f"skipped: the LiteLLM proxy did not start: {exc}"
            else:
                notes["litellm"] = "skipped: --no-litellm"
            for stream in (False, True):
                body = STREAM_BODY if stream else BODY
                for rate in stream_rates or [] if stream else rates:
                    for name in PATHS:
                        if name not in targets:
                            continue
                        port, key, proc, db = targets[name]
                        runs[stream, rate, name] = _measured(
                            proc, _run_rate(port, path, rate, duration_s, key, body), db
                        )
                        _say(stream, rate, name, runs[stream, rate, name])
                        _settle([t[2] for t in targets.values() if t[2] is not None])
            for name in PATHS[1:]:
                if name in targets:
                    port, key, proc, db = targets[name]
                    closed[name] = _measured(
                        proc, _closed_loop(port, path, 64, min(duration_s, 4.0), key), db
                    )
                    _settle([t[2] for t in targets.values() if t[2] is not None])
            if group is not None:
                _stop_group(group)
                group = None
            for proc in procs[1:]:
                _stop(proc)
            if real_path:
                overload, overload_off = _overload_pair(overload_s, work / "key-overload")
                abandon = _abandonment(work / "key-abandon", min(duration_s, 4.0))
            if profile:
                for name, key_out in (("bare", None), ("real", str(key_file))):
                    if name == "real" and not real_path:
                        continue
                    profile_path = work / f"gateway_profile_{name}.json"
                    gw, port = _start_gateway(upstream_url, str(profile_path), key_out=key_out)
                    secret = key_file.read_text() if key_out else KEY
                    import uvloop

                    uvloop.run(_run_rate(port, path, 500, duration_s, key=secret))
                    _stop(gw)
                    if profile_path.exists():
                        profiles[name] = json.loads(profile_path.read_text())
        finally:
            if group is not None:
                _stop_group(group)
            for proc in procs:
                _stop(proc)
    rows = [_row(rate, runs[False, rate, "direct"], runs[False, rate, "bare"]) for rate in rates]
    real = [
        _row(rate, runs[False, rate, "direct"], runs[False, rate, "real"])
        for rate in rates
        if (False, rate, "real") in runs
    ]
    shutil.rmtree(work, ignore_errors=True)
    side = [
        _side(rate, stream, {n: runs[k] for n in PATHS if (k := (stream, rate, n)) in runs})
        for stream, rate in sorted({(k[0], k[1]) for k in runs})
    ]

    def headline(stream: bool, name: str) -> list[dict[str, object]]:
        return [
            _headline(_row(k[1], runs[stream, k[1], "direct"], r))
            for k, r in sorted(runs.items(), key=lambda kv: kv[0][1])
            if k[0] == stream and k[2] == name
        ]

    metered = [r for k, r in runs.items() if k[2] in ("real", "real_postgres")]
    bare = profiles.get("bare", {})
    return {
        "benchmark": "gateway_overhead",
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "duration_s_per_run": duration_s,
        "goal": {"added_p50_ms": 1.0, "added_p99_ms": 5.0},
        "rows": rows,
        "real_path": headline(False, "real"),
        "bare_path": headline(False, "bare"),
        "real_path_postgres": headline(False, "real_postgres"),
        "litellm_path": headline(False, "litellm"),
        "streaming": {name: headline(True, name) for name in PATHS[1:]},
        "side_by_side": side,
        "notes": notes,
        "litellm": notes.get("litellm", ""),
        "closed_loop": closed,
        "overload_3x": overload,
        "overload_3x_without_shedding": overload_off,
        "abandoned": abandon,
        "ledger_rows_match_answers": all(
            bool(r.get("ledger_rows_match_answers", True)) for r in metered
        )
        and all(bool(c.get("ledger_rows_match_answers", True)) for c in closed.values())
        and all(
            bool(o.get("run", {}).get("ledger_rows_match_answers", True))  # type: ignore[attr-defined]
            for o in (overload, overload_off)
        )
        and bool(abandon.get("ledger_ok", True)),
        "real_path_rows": real,
        "profile_top": _profile_lines(str(bare.get("text", ""))),
        "profile_requests": int(500 * duration_s),
        "profile_self_time_s_by_category": bare.get("by_category", {}),
        "real_path_profile_top": _profile_lines(str(profiles.get("real", {}).get("text", ""))),
        "real_path_profile_self_time_s_by_category": profiles.get("real", {}).get(
            "by_category", {}
        ),
    }


def _settle(procs: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> None:
    """Wait until the servers are idle (under 5 % of a core over 0.5 s): a saturated proxy
    works off its backlog after the client hung up, which would load the next path's run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = sum(_cpu_s(p.pid) for p in procs)
        time.sleep(0.5)
        if sum(_cpu_s(p.pid) for p in procs) - before < 0.025:
            return


def _say(stream: bool, rate: float, name: str, r: dict[str, object]) -> None:
    """One line per run as it ends (a long run shows its progress)."""
    cpu = r.get("gateway_cpu_us_per_request")
    print(
        f"  {'stream' if stream else 'unary':<6} {rate:>6.0f}/s {name:<13} p50 {r['p50_ms']:8.2f} ms"
        f"  p99 {r['p99_ms']:9.2f} ms  ok {r['ok_rps']:6.0f}/s  errors {r['num_errors']}"
        f"  shed {r['num_shed']}"
        + (f"  cpu {cpu:5.0f} us/req" if isinstance(cpu, float) else "")
        + f"  load {r['load_average_1m']}",
        flush=True,
    )


def _side(rate: float, stream: bool, runs: dict[str, dict[str, object]]) -> dict[str, object]:
    """One row of the side-by-side table: each path's latency added to direct's, its ok rate,
    errors (shed included) and server CPU per request."""
    d = runs["direct"]
    out: dict[str, object] = {
        "rate_rps": rate,
        "stream": stream,
        "direct": {
            "p50_ms": d["p50_ms"],
            "p99_ms": d["p99_ms"],
            "ok_rps": d["ok_rps"],
            "errors": d["num_errors"],
        },
    }
    for name, r in runs.items():
        if name == "direct":
            continue
        out[name] = {
            "added_p50_ms": float(r["p50_ms"]) - float(d["p50_ms"]),  # type: ignore[arg-type]
            "added_p99_ms": float(r["p99_ms"]) - float(d["p99_ms"]),  # type: ignore[arg-type]
            "ok_rps": r["ok_rps"],
            "errors": int(r["num_errors"]) + int(r["num_shed"]),  # type: ignore[call-overload]
            "cpu_us_per_request": r.get("gateway_cpu_us_per_request"),
            "load_average_1m": r.get("load_average_1m"),
        }
    return out


OVERLOAD_REPLICAS = 4  # the fleet in the overload scenario
OVERLOAD_SLOTS = 4  # slots of each replica
OVERLOAD_SERVICE_S = 0.04  # each request holds its slot this long (the stub's time to answer)
OVERLOAD_MAX_WAIT_S = 0.5  # the gateway's max_expected_wait_s in the scenario


def _overload_pair(
    overload_s: float, key_file: Path
) -> tuple[dict[str, object], dict[str, object]]:
    """3x overload of the fleet: the real path in front of ``OVERLOAD_REPLICAS`` stub replicas
    (one process each) of ``OVERLOAD_SLOTS`` slots answering in ``OVERLOAD_SERVICE_S``
    (together ~400 requests/s, so that one load-generating process can offer 3x of it on this
    machine). The fleet's capacity through the gateway is measured closed-loop, then 3x that
    is offered open-loop for ``overload_s`` to the gateway without shedding (the queue
    unbounded, as before) and with it (``max_expected_wait_s`` = OVERLOAD_MAX_WAIT_S)."""
    stubs = [_start_stub("--ttft-s", str(OVERLOAD_SERVICE_S)) for _ in range(OVERLOAD_REPLICAS)]
    path = "/v1/chat/completions"
    gw = None
    out: dict[bool, dict[str, object]] = {}
    try:
        for _, port in stubs:
            _wait_up(port, "/health")
        urls = ",".join(f"http://127.0.0.1:{port}" for _, port in stubs)
        cap: dict[str, object] = {}
        offered = 0.0
        for shedding in (False, True):
            gw, gw_port = _start_gateway(
                urls, key_out=str(key_file), shedding=shedding, slots=OVERLOAD_SLOTS
            )
            secret = key_file.read_text()
            db = Path(str(key_file) + ".db").read_text()
            if not cap:
                cap = _measured(gw, _closed_loop(gw_port, path, 64, 2.0, secret), db)
                offered = 3 * float(cap["ok_rps"])  # type: ignore[arg-type]
            run = _measured(
                gw, _run_rate(gw_port, path, offered, overload_s, secret, max_open=1 << 20), db
            )
            out[shedding] = _overload(offered, cap, run, overload_s)
            _stop(gw)
            gw = None
    finally:
        if gw is not None:
            _stop(gw)
        for proc, _ in stubs:
            _stop(proc)
    return out[True], out[False]


def _overload(
    offered: float, cap: dict[str, object], run: dict[str, object], duration_s: float
) -> dict[str, object]:
    capacity = float(cap["ok_rps"])  # type: ignore[arg-type]
    return {
        "offered_rps": offered,
        "capacity_rps": capacity,
        "fleet_nominal_rps": OVERLOAD_REPLICAS * OVERLOAD_SLOTS / OVERLOAD_SERVICE_S,
        "goodput_rps": run["ok_rps"],
        "goodput_over_capacity": float(run["ok_rps"]) / capacity,  # type: ignore[arg-type]
        "shed": run["num_shed"],
        "shed_p50_ms": run["shed_p50_ms"],
        "shed_p99_ms": run["shed_p99_ms"],
        "ok_p50_ms": run["p50_ms"],
        "ok_p99_ms": run["p99_ms"],
        "errors": run["num_errors"],
        "duration_s": duration_s,
        "replicas": OVERLOAD_REPLICAS,
        "replica_slots": OVERLOAD_SLOTS,
        "service_s": OVERLOAD_SERVICE_S,
        "max_expected_wait_s": OVERLOAD_MAX_WAIT_S,
        "load_average_1m": run.get("load_average_1m"),
        "run": run,
    }


ABANDON_TTFT_S = 0.05  # the stub's time to the first token in the abandonment scenario
ABANDON_ITL_S = 0.005  # and between two tokens (16 tokens: a stream lasts ~0.13 s)


def _abandonment(key_file: Path, duration_s: float, rate_rps: float = 150.0) -> dict[str, object]:
    """Clients that abandon requests, through the real path (SQLite ledger), streaming: of each
    three requests one reads its whole stream, one hangs up after the first event (mid-stream)
    and one hangs up 10 ms after sending (before any answer: the stub's first token takes
    ``ABANDON_TTFT_S``). Afterwards the replica's slots in use and the gateway's queue must be
    0 (read from /v1/metrics), every answered request has one ledger row (``ok``), every
    mid-stream one a ``cancelled`` row billed for what it was sent, and no request that got no
    answer is billed a token."""
    import uvloop

    stub, port = _start_stub("--ttft-s", str(ABANDON_TTFT_S), "--token-delay-s", str(ABANDON_ITL_S))
    gw = None
    try:
        _wait_up(port, "/health")
        gw, gw_port = _start_gateway(f"http://127.0.0.1:{port}", key_out=str(key_file))
        secret = key_file.read_text()
        db = Path(str(key_file) + ".db").read_text()
        rows_before = _ledger_rows(db)
        cpu0 = _cpu_s(gw.pid)
        counts = uvloop.run(_run_abandon(gw_port, secret, rate_rps, duration_s))
        cpu = _cpu_s(gw.pid) - cpu0
        time.sleep(1.0)  # the ticker flushes the ledger every 0.2 s
        in_use, queued = _slots_in_use(gw_port)
        rows = _ledger_query(db, _rows_since(db, rows_before, "ref, tokens_in, tokens_out"))
    finally:
        if gw is not None:
            _stop(gw)
        _stop(stub)
    by_status: dict[str, int] = {}
    billed: dict[str, int] = {}
    for ref, tokens_in, tokens_out in rows:
        status = str(ref).split(" ")[2]
        by_status[status] = by_status.get(status, 0) + 1
        billed[status] = billed.get(status, 0) + (tokens_in + tokens_out > 0)
    n_ok = by_status.get("ok", 0)
    n_cancelled = by_status.get("cancelled", 0)
    # a hang-up before any answer is a free "cancelled" row (device time metered, no tokens)
    ledger_ok = (
        n_ok == counts["completed"]
        and n_cancelled == counts["mid_stream"] + counts["before_answer"]
        and billed.get("cancelled", 0) <= counts["mid_stream"]
        and len(rows) == counts["sent"]
    )
    return {
        "rate_rps": rate_rps,
        "duration_s": duration_s,
        **counts,
        "ledger_rows": len(rows),
        "ledger_rows_by_status": by_status,
        "ledger_rows_billed_by_status": billed,
        "ledger_ok": ledger_ok,
        "slots_in_use_after": in_use,
        "queued_after": queued,
        "no_leaked_slots": in_use == 0 and queued == 0,
        "gateway_cpu_us_per_request": cpu / max(1, counts["sent"]) * 1e6,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


async def _run_abandon(port: int, key: str, rate_rps: float, duration_s: float) -> dict[str, int]:
    head = _request_head("/v1/chat/completions", key, STREAM_BODY)
    counts = {"sent": 0, "completed": 0, "mid_stream": 0, "before_answer": 0, "errors": 0}

    async def one(i: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            counts["errors"] += 1
            return
        counts["sent"] += 1
        try:
            writer.write(head)
            if i % 3 == 2:  # hang up before any answer
                await asyncio.sleep(0.01)
                counts["before_answer"] += 1
                return
            header = await reader.readuntil(b"\r\n\r\n")
            if header[9:12] != b"200":
                counts["errors"] += 1
                return
            if i % 3 == 1:  # hang up after the first event
                await reader.readuntil(b"\n\n")
                counts["mid_stream"] += 1
                return
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
            counts["completed"] += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            counts["errors"] += 1
        finally:
            writer.close()

    tasks = []
    t0 = time.perf_counter()
    for i in range(int(rate_rps * duration_s)):
        delay = t0 + i / rate_rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.wait(tasks, timeout=DRAIN_S)
    return counts


def _slots_in_use(port: int) -> tuple[int, int]:
    """The replicas' requests in flight and the queue, summed from the gateway's /v1/metrics."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /v1/metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    in_use = queued = 0.0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("npucenter_replica_inflight_requests{"):
            in_use += float(line.rsplit(" ", 1)[1])
        elif line.startswith("npucenter_gateway_queue") and not line.startswith("#"):
            queued += float(line.rsplit(" ", 1)[1])
    return int(in_use), int(queued)


def _row(rate: float, direct: dict[str, object], via: dict[str, object]) -> dict[str, object]:
    return {
        "rate_rps": rate,
        "direct": direct,
        "gateway": via,
        "added_p50_ms": float(via["p50_ms"]) - float(direct["p50_ms"]),  # type: ignore[arg-type]
        "added_p99_ms": float(via["p99_ms"]) - float(direct["p99_ms"]),  # type: ignore[arg-type]
    }


def _headline(row: dict[str, object]) -> dict[str, object]:
    via: dict[str, object] = row["gateway"]  # type: ignore[assignment]
    return {
        "rate_rps": row["rate_rps"],
        "added_p50_ms": row["added_p50_ms"],
        "added_p99_ms": row["added_p99_ms"],
        "errors": int(via["num_errors"]) + int(via.get("num_shed", 0)),  # type: ignore[call-overload]
        "ok_rps": via["ok_rps"],
        "shed": via.get("num_shed", 0),
        "gateway_cpu_us_per_request": via.get("gateway_cpu_us_per_request"),
        "ledger_rows": via.get("ledger_rows"),
    }


def run_agreement(num_requests: int, rate_scale: float) -> dict[str, object]:
    """Replay the head of the Azure conversation trace (CC-BY 4.0, Patel et al., ISCA 2024)
    through the gateway on two virtual RNGD replicas, and simulate it: p50/p90 TTFT and TPOT."""
    import numpy as np

    from npucenter.catalog import default_catalog
    from npucenter.clock import SystemClock
    from npucenter.fleet.spec import fleet_spec_from_mapping
    from npucenter.gateway import (
        Gateway,
        GatewayConfig,
        Principal,
        StaticKeyResolver,
    )
    from npucenter.gateway.routing import make_router
    from npucenter.gateway.testing import running_server, start_virtual_replicas
    from npucenter.sim.center import build_center
    from npucenter.workload.readers import read_azure_trace

    model = "llama-3.1-8b"
    fleet = {
        "name": "agreement",
        "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
        "services": [
            {
                "model": model,
                "device": "rngd",
                "tp": 1,
                "replicas_per_server": 2,
                "max_num_seqs": 64,
            }
        ],
    }
    trace = (
        read_azure_trace("conv")
        .head(num_requests)
        .rebase()
        .cap_tokens(4096, 256)
        .scale_rate(rate_scale)
    )
    sim = build_center(fleet_spec_from_mapping(fleet), default_catalog(), policy="round-robin").run(
        trace
    )

    async def replay(urls: list[str]) -> list[tuple[float, float]]:
        """Request ``i`` goes to ``urls[i % len(urls)]`` (one URL: the gateway)."""
        import httpx

        async with httpx.AsyncClient(headers={"authorization": f"Bearer {KEY}"}, timeout=120) as c:
            t0 = time.perf_counter() + 0.3

            async def one(i: int) -> tuple[float, float]:
                await asyncio.sleep(max(0.0, t0 + float(trace.arrival_s[i]) - time.perf_counter()))
                body = {
                    "model": model,
                    "prompt": list(range(1, int(trace.prompt_tokens[i]) + 1)),
                    "max_tokens": int(trace.output_tokens[i]),
                    "ignore_eos": True,
                    "stream": True,
                }
                sent = time.perf_counter()
                stamps: list[float] = []
                url = urls[i % len(urls)] + "/v1/completions"
                async with c.stream("POST", url, json=body) as resp:
                    async for line in resp.aiter_lines():
                        if line.startswith("data: {"):
                            choices = json.loads(line[6:]).get("choices") or []
                            if choices and choices[0].get("text"):
                                stamps.append(time.perf_counter())
                tpot = (
                    (stamps[-1] - stamps[0]) / (len(stamps) - 1)
                    if len(stamps) > 1
                    else float("nan")
                )
                return stamps[0] - sent, tpot

            return list(await asyncio.gather(*(one(i) for i in range(len(trace)))))

    executor, endpoints = asyncio.run(start_virtual_replicas(model, "rngd", 2))
    try:
        gateway = Gateway(
            keys=StaticKeyResolver({KEY: Principal(key_id="bench", tenant="bench")}),
            endpoints=endpoints,
            router=make_router("round-robin", SystemClock()),
            config=GatewayConfig(scrape_interval_s=0),
        )
        # the same replay straight to the engines (round-robin by the client), to separate
        # the gateway's share of any live/sim difference from the HTTP path and engine timing
        direct = asyncio.run(replay([e.base_url for e in endpoints]))
        with running_server(gateway) as url:
            live = asyncio.run(replay([url]))
    finally:
        asyncio.run(executor.shutdown())
    out: dict[str, object] = {
        "trace": f"azure-conv head {num_requests}, tokens capped 4096/256, rate x{rate_scale:g}",
        "num_requests": len(trace),
        "mean_rate_rps": trace.mean_rate_rps,
    }
    for name, k, sim_values in (("ttft", 0, sim.ttft_s), ("tpot", 1, sim.tpot_s)):
        for q in (50, 90):
            lv = float(np.nanpercentile([r[k] for r in live], q))
            dv = float(np.nanpercentile([r[k] for r in direct], q))
            sv = float(np.nanpercentile(sim_values, q))
            out[f"{name}_p{q}_live_ms"] = lv * 1e3
            out[f"{name}_p{q}_direct_ms"] = dv * 1e3
            out[f"{name}_p{q}_sim_ms"] = sv * 1e3
            out[f"{name}_p{q}_live_over_sim"] = lv / sv
    return out


def _profile_lines(text: str, num: int = 18) -> list[str]:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("ncalls"):
            return [ln.rstrip() for ln in lines[i : i + 1 + num] if ln.strip()]
    return []


def _raise_open_files_limit() -> None:
    """An open-loop client against a saturated proxy holds one connection per waiting request."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _print_side_by_side(result: dict[str, Any]) -> None:
    """rate -> direct / real / real (PostgreSQL) / bare / LiteLLM: added p50/p99, ok/s, CPU."""
    names = [n for n in PATHS[1:] if any(n in row for row in result["side_by_side"])]
    print("side by side (added p50 / p99 ms over direct, ok/s, server CPU us/request):")
    print(f"{'':>13} {'direct p50/p99':>16}" + "".join(f" {n:>30}" for n in names))
    for row in result["side_by_side"]:
        d = row["direct"]
        line = (
            f"{'stream' if row['stream'] else 'unary':>6} {row['rate_rps']:>6.0f}"
            f" {d['p50_ms']:>7.2f}/{d['p99_ms']:<8.2f}"
        )
        for n in names:
            c = row.get(n)
            if c is None:
                line += f" {'-':>30}"
                continue
            cell = (
                f"+{c['added_p50_ms']:.2f}/+{c['added_p99_ms']:.1f} {c['ok_rps']:.0f}/s "
                f"{c['cpu_us_per_request']:.0f}us" + (f" e{c['errors']}" if c["errors"] else "")
            )
            line += f" {cell:>30}"
        print(line)


def main() -> None:
    """Run the benchmark (or, with --serve-gateway, be the gateway process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-gateway", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-shedding", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-real-path", action="store_true", help="skip the real path (tenant key, store)"
    )
    parser.add_argument(
        "--litellm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the LiteLLM proxy side by side (its own venv under bench/.venv-litellm, "
        "installed on first use; skipped with a note when it cannot be)",
    )
    parser.add_argument(
        "--postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the real path with the ledger on PostgreSQL too (NPUCENTER_TEST_POSTGRES_URL, "
        "or a server scripts/pg-test-server.sh starts; skipped with a note otherwise)",
    )
    parser.add_argument(
        "--streaming", action=argparse.BooleanOptionalAction, default=True, help="streaming rates"
    )
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, default=True, help="cProfile at 500/s"
    )
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument(
        "--stream-rates",
        default="200,500",
        help="streaming rates (16 events a request: the stub and the client are the limit "
        "above ~500/s on 2 cores)",
    )
    parser.add_argument("--duration-s", type=float, default=6.0)
    parser.add_argument("--quick", action="store_true", help="2 s per run, 40-request agreement")
    parser.add_argument("--no-agreement", action="store_true", help="skip the live-vs-sim replay")
    args = parser.parse_args()
    if args.serve_gateway:
        serve_gateway(
            args.serve_gateway,
            args.upstream,
            args.profile_out,
            args.key_out,
            shedding=not args.no_shedding,
            slots=args.slots,
            database_url=args.database_url,
        )
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",")]
    _raise_open_files_limit()
    result = run(
        rates,
        2.0 if args.quick else args.duration_s,
        real_path=not args.no_real_path,
        litellm=args.litellm,
        postgres=args.postgres,
        stream_rates=[float(r) for r in args.stream_rates.split(",")] if args.streaming else [],
        profile=args.profile,
    )
    if not args.no_agreement:
        result["agreement"] = run_agreement(40 if args.quick else 120, 2.0)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"gateway overhead on loopback ({result['machine']['cpus']} CPUs), non-streaming, 16 tokens"
    )  # type: ignore[index]
    print(
        f"{'rate':>6} {'direct p50':>11} {'gw p50':>8} {'+p50':>7} {'direct p99':>11} {'gw p99':>8} {'+p99':>7} {'gw rps':>7} {'errors':>6}"
    )
    for row in result["rows"]:  # type: ignore[attr-defined]
        d, g = row["direct"], row["gateway"]
        print(
            f"{row['rate_rps']:>6.0f} {d['p50_ms']:>9.2f}ms {g['p50_ms']:>6.2f}ms {row['added_p50_ms']:>5.2f}ms "
            f"{d['p99_ms']:>9.2f}ms {g['p99_ms']:>6.2f}ms {row['added_p99_ms']:>5.2f}ms "
            f"{g['achieved_rps']:>7.0f} {g['num_errors']:>6}"
        )
    if result["real_path"]:
        print("real path (tenant key, limits on, SQLite ledger):")
        for real in result["real_path"]:  # type: ignore[attr-defined]
            print(
                f"{real['rate_rps']:>6.0f} +p50 {real['added_p50_ms']:>7.2f}ms "
                f"+p99 {real['added_p99_ms']:>8.2f}ms  ok {real['ok_rps']:>6.0f}/s "
                f"errors {real['errors']}  cpu {real['gateway_cpu_us_per_request']:.0f} us/req  "
                f"ledger rows {real['ledger_rows']}"
            )
    _print_side_by_side(result)
    for name, c in result["closed_loop"].items():  # type: ignore[attr-defined]
        print(
            f"closed loop ({name}, 64 connections): {c['ok_rps']:.0f} ok/s, "
            f"{c['gateway_cpu_us_per_request']:.0f} us CPU/request, errors {c['num_errors']}, "
            f"load {c['load_average_1m']}"
        )
    for key, label in (
        ("overload_3x_without_shedding", "no shedding"),
        ("overload_3x", "shedding"),
    ):
        o: dict[str, Any] = result[key]  # type: ignore[assignment]
        if not o:
            continue
        print(
            f"3x overload of the fleet ({o['replicas']} replicas x {o['replica_slots']} slots, "
            f"capacity {o['capacity_rps']:.0f}/s), {label} ({o['offered_rps']:.0f} req/s for "
            f"{o['duration_s']:g} s): goodput {o['goodput_rps']:.0f}/s = "
            f"{o['goodput_over_capacity']:.0%} of capacity, shed {o['shed']} (p50 "
            f"{o['shed_p50_ms']:.1f} ms, p99 {o['shed_p99_ms']:.1f} ms), ok p99 "
            f"{o['ok_p99_ms']:.0f} ms, errors {o['errors']}, load {o['load_average_1m']}"
        )
    ab: dict[str, Any] = result["abandoned"]  # type: ignore[assignment]
    if ab:
        print(
            f"abandoned streams ({ab['rate_rps']:.0f}/s for {ab['duration_s']:g} s): sent "
            f"{ab['sent']}, completed {ab['completed']}, hung up mid-stream {ab['mid_stream']}, "
            f"before any answer {ab['before_answer']}, errors {ab['errors']}; slots in use "
            f"after {ab['slots_in_use_after']}, queued {ab['queued_after']}; ledger rows "
            f"{ab['ledger_rows_by_status']} (billed {ab['ledger_rows_billed_by_status']}), "
            f"ok: {ab['ledger_ok']}"
        )
    for name, note in result["notes"].items():  # type: ignore[attr-defined]
        if note.startswith("skipped"):
            print(f"{name}: {note}")
    print(f"ledger rows match answers: {result['ledger_rows_match_answers']}")
    print("goal: added p50 <= 1 ms, p99 <= 5 ms")
    n = result["profile_requests"]
    print(f"where the gateway's time goes at 500 req/s (cProfile self time, {n} requests):")
    for label, seconds in result["profile_self_time_s_by_category"].items():  # type: ignore[attr-defined]
        print(f"  {label:<50} {seconds:7.3f} s  ({seconds / n * 1e6:6.0f} us/request)")
    real_profile = result.get("real_path_profile_self_time_s_by_category") or {}
    if real_profile:
        print(f"where the real path's time goes at 500 req/s ({n} requests):")
        for label, seconds in real_profile.items():  # type: ignore[attr-defined]
            print(f"  {label:<50} {seconds:7.3f} s  ({seconds / n * 1e6:6.0f} us/request)")
    agreement = result.get("agreement")
    if isinstance(agreement, dict):
        print(f"live (gateway + virtual engines) vs simulator, {agreement['trace']}:")
        for name in ("ttft", "tpot"):
            for q in (50, 90):
                print(
                    f"  {name} p{q}: via gateway {agreement[f'{name}_p{q}_live_ms']:.1f} ms, "
                    f"engines direct {agreement[f'{name}_p{q}_direct_ms']:.1f} ms, "
                    f"sim {agreement[f'{name}_p{q}_sim_ms']:.1f} ms "
                    f"(gateway/sim {agreement[f'{name}_p{q}_live_over_sim']:.3f})"
                )
    print(f"wrote {RESULTS / 'gateway.json'}")


if __name__ == "__main__":
    main()
