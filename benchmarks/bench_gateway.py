"""Gateway overhead: the same requests sent to an engine directly and through the gateway.

Open-loop arrivals at 200, 500 and 1,000 requests/s on loopback, non-streaming chat completions
against a scripted OpenAI-compatible engine (``npucenter.gateway.testing``, 16 tokens, no model
time), so the difference of the two latency distributions is what the gateway adds. The engine,
the gateway and this load generator run as three processes (uvloop + httptools); the client is a
minimal keep-alive HTTP/1.1 client so that its own cost stays small and equal on both paths. A
last run at 500 requests/s profiles the gateway process (cProfile) to show where the time goes.

Then the live center and the digital twin on one trace: the head of the Azure conversation
trace replayed through the gateway on two virtual RNGD replicas and simulated with the same
routing policy, p50/p90 TTFT and TPOT side by side.

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
ADMIN_KEY = "bench-gateway-admin-0123456789"
BODY = json.dumps(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "Hello, proving ground."}],
        "max_tokens": 16,
    }
).encode()


# --- the processes -------------------------------------------------------------------------------


def serve_gateway(
    port: int,
    upstream: str,
    profile_out: str | None,
    key_out: str | None = None,
    shedding: bool = True,
    slots: int = 4096,
) -> None:
    """Run the gateway (the bench starts this in a child process): the bare ASGI gateway, or
    with ``key_out`` the real path — `npucenter up`'s whole app on a fresh SQLite store, a
    tenant key (its secret written to ``key_out``), the tenant's token rate on (set far above
    what the run asks, so it never refuses) and every request metered into the store's ledger."""
    import uvicorn

    from npucenter.gateway import (
        Gateway,
        GatewayConfig,
        Principal,
        ReplicaEndpoint,
        StaticKeyResolver,
    )

    endpoint = ReplicaEndpoint(
        replica_id="rngd-0-r0",
        base_url=upstream,
        model_id="m",
        device_id="rngd",
        max_inflight=slots,
    )
    app: object
    if key_out is None:
        app = Gateway(
            keys=StaticKeyResolver({KEY: Principal(key_id="bench", tenant="bench")}),
            endpoints=[endpoint],
            config=GatewayConfig(scrape_interval_s=0),
        )
    else:
        app = _real_center(endpoint, key_out)
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


def _real_center(endpoint: object, key_out: str) -> object:
    import tempfile

    import npucenter.live.extension  # noqa: F401  (registers the gateway server extension)
    from npucenter.api.app import build_server_app
    from npucenter.settings import Settings

    settings = Settings.from_env(
        {
            "NPUCENTER_ADMIN_KEY": ADMIN_KEY,
            "NPUCENTER_VIRTUAL_FLEET": "0",
            "NPUCENTER_JOB_RUNNER": "0",
        },
        data_dir=tempfile.mkdtemp(prefix="npucenter-bench-gateway-"),
    )
    app = build_server_app(settings)
    with app.state.control.tx() as repo:
        tenant = repo.create_tenant("bench", "company")
        repo.set_quota(tenant, "rngd", nominal_cards=1, tokens_per_s=1e9)
        _, secret = repo.create_key(tenant_id=tenant.id, scope="tenant", name="bench")
    Path(key_out).write_text(secret)
    Path(key_out + ".db").write_text(str(settings.database_url).removeprefix("sqlite:///"))
    app.state.gateway.pool.set([endpoint])
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
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, head: bytes) -> int:
        """The answer's status; 0 for a 503 shed at the gateway's door (no request id)."""
        self.writer.write(head)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        lower = header.lower()
        if status == 503 and b"x-request-id" not in lower:
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
        return status


async def _run_rate(
    port: int, path: str, rate_rps: float, duration_s: float, key: str = KEY
) -> dict[str, object]:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    idle: list[_Conn] = []
    for _ in range(64):
        idle.append(_Conn(*await asyncio.open_connection("127.0.0.1", port)))
    latencies: list[float] = []
    shed: list[float] = []  # latency of 429/503 answers
    lags: list[float] = []
    errors = 0
    answered = 0
    door = 0  # shed before the key was read: nobody to charge, no ledger row

    async def one(due: float) -> None:
        nonlocal errors, answered, door
        try:
            conn = idle.pop() if idle else _Conn(*await asyncio.open_connection("127.0.0.1", port))
        except OSError:
            errors += 1
            return
        start = time.perf_counter()
        lags.append(start - due)
        try:
            status = await conn.post(head)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            return
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
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    for conn in idle:
        conn.writer.close()
    warm = latencies[len(latencies) // 10 :] if len(latencies) > 50 else latencies  # drop warm-up
    warm.sort()
    shed.sort()
    return {
        "num_requests": n,
        "num_answered": answered,
        "num_errors": errors,
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
    }


async def _closed_loop(
    port: int, path: str, concurrency: int, duration_s: float, key: str = KEY
) -> dict[str, object]:
    """``concurrency`` connections each sending its next request as soon as its last is
    answered, for ``duration_s``: the most the server answers per second."""
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    conns = [_Conn(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(concurrency)]
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
    await asyncio.gather(*(loop(c) for c in conns))
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
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; other sessions' load
    does not count)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ledger_rows(db_file: Path) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_file)) as db:
        return int(db.execute("SELECT count(*) FROM usage_ledger").fetchone()[0])


def _measured(
    proc: subprocess.Popen[bytes], coro: Any, db_file: Path | None = None
) -> dict[str, object]:
    """Run ``coro`` (a load run) and add the gateway's CPU per answered request and, with the
    store's database, the ledger rows the run wrote (checked against the answers)."""
    import uvloop

    rows_before = _ledger_rows(db_file) if db_file else 0
    cpu0 = _cpu_s(proc.pid)
    out: dict[str, object] = uvloop.run(coro)
    cpu = _cpu_s(proc.pid) - cpu0
    answered = int(out["num_answered"])  # type: ignore[call-overload]
    out["gateway_cpu_us_per_request"] = cpu / answered * 1e6 if answered else float("nan")
    # a request shed at the door (before its key is read) has nobody to charge: no row
    answered -= int(out.get("num_shed_at_door", 0))  # type: ignore[call-overload]
    if db_file is not None:
        deadline = time.monotonic() + 5.0  # the ticker writes the journal's rows every 0.2 s
        while True:
            rows = _ledger_rows(db_file) - rows_before
            if rows >= answered or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        out["ledger_rows"] = rows
        out["ledger_rows_match_answers"] = rows == answered
    return out


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
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    argv = [sys.executable, __file__, "--serve-gateway", str(port), "--upstream", upstream_url]
    if profile_out:
        argv += ["--profile-out", profile_out]
    if key_out:
        argv += ["--key-out", key_out]
    if not shedding:
        argv.append("--no-shedding")
    argv += ["--slots", str(slots)]
    proc = _spawn(argv)
    _wait_up(port, "/health", timeout_s=60.0)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(
    rates: list[float], duration_s: float, *, real_path: bool = True, overload_s: float = 3.0
) -> dict[str, object]:
    """Measure direct vs the bare gateway vs the real path (a tenant key, limits on, the SQLite
    ledger) at each rate, closed-loop maximum throughput and CPU per request of both, the
    real path at 3x its closed-loop capacity; profile both at 500 requests/s."""
    import tempfile

    import uvloop

    up_port = _free_port()
    upstream = _spawn(
        [
            sys.executable,
            "-m",
            "npucenter.gateway.testing",
            "--port",
            str(up_port),
            "--output-tokens",
            "16",
        ]
    )
    path = "/v1/chat/completions"
    gw = None
    profiles: dict[str, dict[str, object]] = {}
    key_file = Path(tempfile.mkdtemp(prefix="npucenter-bench-key-")) / "key"
    closed: dict[str, dict[str, object]] = {}
    overload: dict[str, object] = {}
    overload_off: dict[str, object] = {}
    try:
        _wait_up(up_port, "/health")
        upstream_url = f"http://127.0.0.1:{up_port}"
        rows: list[dict[str, object]] = []
        real: list[dict[str, object]] = []
        gw, gw_port = _start_gateway(upstream_url)
        directs = {}
        for rate in rates:
            direct = directs[rate] = uvloop.run(_run_rate(up_port, path, rate, duration_s))
            via = _measured(gw, _run_rate(gw_port, path, rate, duration_s))
            rows.append(_row(rate, direct, via))
        closed["bare"] = _measured(gw, _closed_loop(gw_port, path, 64, duration_s))
        _stop(gw)
        gw = None
        if real_path:
            gw, gw_port = _start_gateway(upstream_url, key_out=str(key_file))
            secret = key_file.read_text()
            db_file = Path(Path(str(key_file) + ".db").read_text())
            for rate in rates:
                via = _measured(gw, _run_rate(gw_port, path, rate, duration_s, secret), db_file)
                real.append(_row(rate, directs[rate], via))
            closed["real"] = _measured(
                gw, _closed_loop(gw_port, path, 64, duration_s, secret), db_file
            )
            _stop(gw)
            gw = None
            overload, overload_off = _overload_pair(overload_s, key_file)
        for name, key_out in (("bare", None), ("real", str(key_file))):
            if name == "real" and not real_path:
                continue
            profile_path = RESULTS / f"gateway_profile_{name}.json"
            gw, gw_port = _start_gateway(upstream_url, str(profile_path), key_out=key_out)
            secret = key_file.read_text() if key_out else KEY
            uvloop.run(_run_rate(gw_port, path, 500, duration_s, key=secret))
            _stop(gw)
            gw = None
            profiles[name] = json.loads(profile_path.read_text()) if profile_path.exists() else {}
            profile_path.unlink(missing_ok=True)
    finally:
        if gw is not None:
            _stop(gw)
        _stop(upstream)
    bare = profiles.get("bare", {})
    return {
        "benchmark": "gateway_overhead",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "duration_s_per_run": duration_s,
        "goal": {"added_p50_ms": 1.0, "added_p99_ms": 5.0},
        "rows": rows,
        "real_path": [_headline(r) for r in real],
        "bare_path": [_headline(r) for r in rows],
        "closed_loop": closed,
        "overload_3x": overload,
        "overload_3x_without_shedding": overload_off,
        "ledger_rows_match_answers": all(
            bool(r["gateway"].get("ledger_rows_match_answers"))  # type: ignore[attr-defined]
            for r in real
        )
        and all(bool(c.get("ledger_rows_match_answers", True)) for c in closed.values())
        and all(
            bool(o.get("run", {}).get("ledger_rows_match_answers", True))  # type: ignore[attr-defined]
            for o in (overload, overload_off)
        ),
        "litellm": "skipped: the LiteLLM proxy is not installed here and could not be set up "
        "in its own venv within this session; issue 16's figures (LiteLLM 1.108.7) stand",
        "real_path_rows": real,
        "profile_top": _profile_lines(str(bare.get("text", ""))),
        "profile_requests": int(500 * duration_s),
        "profile_self_time_s_by_category": bare.get("by_category", {}),
        "real_path_profile_top": _profile_lines(str(profiles.get("real", {}).get("text", ""))),
        "real_path_profile_self_time_s_by_category": profiles.get("real", {}).get(
            "by_category", {}
        ),
    }


OVERLOAD_SLOTS = 8  # the replica's slots in the overload scenario
OVERLOAD_SERVICE_S = 0.02  # each request holds its slot this long (the stub's time to answer)
OVERLOAD_MAX_WAIT_S = 0.5  # the gateway's max_expected_wait_s in the scenario


def _overload_pair(
    overload_s: float, key_file: Path
) -> tuple[dict[str, object], dict[str, object]]:
    """3x overload of a replica: the real path in front of one stub replica with
    ``OVERLOAD_SLOTS`` slots answering in ``OVERLOAD_SERVICE_S`` (capacity ~400 requests/s,
    so that one load-generating process can offer 3x of it on this machine; 3x the gateway's
    own CPU capacity is beyond what it can send here). Its capacity is measured closed-loop,
    then 3x that is offered open-loop for ``overload_s`` to the gateway without shedding (the
    queue unbounded, as before) and with it (``max_expected_wait_s`` = OVERLOAD_MAX_WAIT_S)."""
    port = _free_port()
    stub = _spawn(
        [
            sys.executable,
            "-m",
            "npucenter.gateway.testing",
            "--port",
            str(port),
            "--output-tokens",
            "16",
            "--ttft-s",
            str(OVERLOAD_SERVICE_S),
        ]
    )
    path = "/v1/chat/completions"
    gw = None
    out: dict[bool, dict[str, object]] = {}
    try:
        _wait_up(port, "/health")
        cap: dict[str, object] = {}
        offered = 0.0
        for shedding in (False, True):
            gw, gw_port = _start_gateway(
                f"http://127.0.0.1:{port}",
                key_out=str(key_file),
                shedding=shedding,
                slots=OVERLOAD_SLOTS,
            )
            secret = key_file.read_text()
            db_file = Path(Path(str(key_file) + ".db").read_text())
            if not cap:
                cap = _measured(gw, _closed_loop(gw_port, path, 64, 2.0, secret), db_file)
                offered = 3 * float(cap["ok_rps"])  # type: ignore[arg-type]
            run = _measured(gw, _run_rate(gw_port, path, offered, overload_s, secret), db_file)
            out[shedding] = _overload(offered, cap, run, overload_s)
            _stop(gw)
            gw = None
    finally:
        if gw is not None:
            _stop(gw)
        _stop(stub)
    return out[True], out[False]


def _overload(
    offered: float, cap: dict[str, object], run: dict[str, object], duration_s: float
) -> dict[str, object]:
    capacity = float(cap["ok_rps"])  # type: ignore[arg-type]
    return {
        "offered_rps": offered,
        "capacity_rps": capacity,
        "goodput_rps": run["ok_rps"],
        "goodput_over_capacity": float(run["ok_rps"]) / capacity,  # type: ignore[arg-type]
        "shed": run["num_shed"],
        "shed_p50_ms": run["shed_p50_ms"],
        "shed_p99_ms": run["shed_p99_ms"],
        "ok_p50_ms": run["p50_ms"],
        "ok_p99_ms": run["p99_ms"],
        "errors": run["num_errors"],
        "duration_s": duration_s,
        "replica_slots": OVERLOAD_SLOTS,
        "service_s": OVERLOAD_SERVICE_S,
        "max_expected_wait_s": OVERLOAD_MAX_WAIT_S,
        "run": run,
    }


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


def main() -> None:
    """Run the benchmark (or, with --serve-gateway, be the gateway process)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve-gateway", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-shedding", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slots", type=int, default=4096, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-real-path", action="store_true", help="skip the real path (tenant key, store)"
    )
    parser.add_argument("--rates", default="200,500,1000")
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
        )
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    rates = [float(r) for r in args.rates.split(",")]
    result = run(rates, 2.0 if args.quick else args.duration_s, real_path=not args.no_real_path)
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
    for name, c in result["closed_loop"].items():  # type: ignore[attr-defined]
        print(
            f"closed loop ({name}, 64 connections): {c['ok_rps']:.0f} ok/s, "
            f"{c['gateway_cpu_us_per_request']:.0f} us CPU/request, errors {c['num_errors']}"
        )
    for key, label in (
        ("overload_3x_without_shedding", "no shedding"),
        ("overload_3x", "shedding"),
    ):
        o: dict[str, Any] = result[key]  # type: ignore[assignment]
        if not o:
            continue
        print(
            f"3x overload of an 8-slot replica, {label} ({o['offered_rps']:.0f} req/s for {o['duration_s']:g} s): "
            f"goodput {o['goodput_rps']:.0f}/s = {o['goodput_over_capacity']:.0%} of capacity, "
            f"shed {o['shed']} (p50 {o['shed_p50_ms']:.1f} ms, p99 {o['shed_p99_ms']:.1f} ms), "
            f"ok p99 {o['ok_p99_ms']:.0f} ms, errors {o['errors']}"
        )
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
