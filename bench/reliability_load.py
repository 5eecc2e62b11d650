"""Phases 3 and 4 of bench/reliability.py: the soak with disconnecting clients, and the
SIGTERM drain."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from reliability_client import Conn, Outcome, chat_body
from reliability_phases import HOST, SOAK_TEXT
from reliability_rig import FaultUpstream, Gateway, echo_env, gateway, slope

# --- 3. Soak: RSS growth with 10 % of clients disconnecting mid-stream ------------------------


async def soak(
    gw: Gateway,
    upstream: FaultUpstream,
    *,
    total: int,
    warmup: int,
    concurrency: int,
    model: str,
    time_limit: float,
) -> dict[str, Any]:
    upstream.reset()  # disconnects are counted over the whole soak, warm-up included
    body = chat_body(model, SOAK_TEXT, stream=True)
    # Those that leave ask for 100 words (~1 s from fault/slow:10): if the gateway did not cancel
    # the upstream call, the upstream would still be sending when its client has long gone.
    leaver_body = chat_body(model, " ".join(["bye"] * 100), stream=True)
    state = {"next": 0, "done": 0}
    samples: list[tuple[int, int]] = []  # (measured requests done, RSS KB)
    errors: Counter[str] = Counter()  # clients that stayed: anything but 200 + [DONE]
    leaver_errors: Counter[str] = Counter()  # clients that left: an error before their chunk
    error_samples: list[str] = []
    disconnects = {"clients": 0, "already_finished": 0}
    deadline = time.monotonic() + time_limit
    t0 = time.monotonic()
    t_measured = t0

    def finished(i: int, out: Outcome) -> None:
        nonlocal t_measured
        if i % 10 == 9:  # the 10 % that disconnect after the first chunk
            disconnects["clients"] += 1
            if out.kind != "closed_by_us":
                disconnects["already_finished"] += out.kind == "done"
                if out.kind != "done":
                    leaver_errors[f"{out.kind}/{out.status}"] += 1
        elif out.status != 200 or out.kind != "done":
            errors[f"{out.kind}/{out.status}"] += 1
            if len(error_samples) < 5:
                error_samples.append((b"|".join(out.events[-2:]) or out.body)[:300].decode())
        state["done"] += 1
        measured = state["done"] - warmup
        if measured == 0:
            t_measured = time.monotonic()
        if measured >= 0 and measured % 1000 == 0:
            samples.append((measured, gw.rss_kb()))

    async def worker() -> None:
        conn = Conn(HOST, gw.port)
        while time.monotonic() < deadline and state["next"] < warmup + total:
            i = state["next"]
            state["next"] += 1
            leave = i % 10 == 9
            if leave:
                out = await conn.request(leaver_body, close_after_events=1, limit_s=30.0)
            else:
                out = await conn.request(body, limit_s=30.0)
            finished(i, out)
        conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.monotonic() - t_measured
    measured = state["done"] - warmup
    await asyncio.sleep(1.0)  # let the gateway settle, then one more reading
    idle_rss = gw.rss_kb()
    fit = slope([float(x) for x, _ in samples], [float(y) for _, y in samples])
    half = samples[len(samples) // 2 :]
    late = slope([float(x) for x, _ in half], [float(y) for _, y in half])
    upstream_seen = sum(1 for d in upstream.disconnects if d.model == model.split("/", 1)[1])
    return {
        "model": model,
        "requests_measured": measured,
        "warmup": warmup,
        "concurrency": concurrency,
        "stopped_by_time_limit": measured < total,
        "wall_s": round(wall, 1),
        "streams_per_s": round(measured / wall, 1) if wall > 0 else None,
        "rss_samples_kb": samples,
        "rss_after_idle_kb": idle_rss,
        "rss_growth_kb_per_1000": round(fit * 1000.0, 1) if fit is not None else None,
        "rss_growth_total_kb": samples[-1][1] - samples[0][1] if samples else None,
        "rss_growth_kb_per_1000_second_half": round(late * 1000.0, 1) if late is not None else None,
        "errors_non_disconnecting": sum(errors.values()),
        "error_kinds": dict(errors),
        "errors_disconnecting": dict(leaver_errors),
        "error_samples": error_samples,
        "disconnecting_clients": disconnects["clients"],
        "disconnecting_got_whole_stream": disconnects["already_finished"],
        "upstream_disconnects_seen": upstream_seen,
    }


# --- 4. SIGTERM drain --------------------------------------------------------------------------


async def drain(
    workdir: Path, k: int, drain_timeout: float, sigterm_after: float
) -> dict[str, Any]:
    delay_ms = 100.0
    env = {**echo_env("echo", delay_ms), "GATEWAY_DRAIN_TIMEOUT": str(drain_timeout)}
    short = chat_body("echo/echo", " ".join(["s"] * 20), stream=True)  # 20 x 100 ms = 2 s
    long = chat_body("echo/echo", " ".join(["l"] * 200), stream=True)  # 20 s
    with gateway(env, workdir, "drain") as gw:
        budget = drain_timeout + 25.0
        tasks = [
            asyncio.create_task(Conn(HOST, gw.port).request(b, limit_s=budget))
            for b in [short] * k + [long] * k
        ]
        await asyncio.sleep(sigterm_after)
        t_term = time.monotonic()
        gw.sigterm()
        await asyncio.sleep(1.0)
        refused = (await Conn(HOST, gw.port).request(short, limit_s=2.0)).kind == "conn_error"
        outs = await asyncio.gather(*tasks)
        exit_code = await asyncio.to_thread(gw.wait, drain_timeout + 15.0)
        exit_after = time.monotonic() - t_term
        log_tail = gw.log.read_text(errors="replace")[-2000:]

    def tally(group: list[Outcome]) -> dict[str, int]:
        c: Counter[str] = Counter()
        for out in group:
            if out.kind == "done":
                c["done"] += 1
            elif out.kind == "error_event" and out.error_code == "shutdown":
                c["shutdown_error_event"] += 1
            else:
                c[f"other:{out.kind}/{out.status}/{out.error_code}"] += 1
        return dict(c)

    everything = tally(outs)
    n = len(outs)
    return {
        "streams": n,
        "short_streams": k,
        "long_streams": k,
        "short_expected_s": 20 * delay_ms / 1000,
        "long_expected_s": 200 * delay_ms / 1000,
        "drain_timeout_s": drain_timeout,
        "sigterm_after_s": sigterm_after,
        "short": tally(outs[:k]),
        "long": tally(outs[k:]),
        "share_done": round(everything.get("done", 0) / n, 4),
        "share_shutdown_error": round(everything.get("shutdown_error_event", 0) / n, 4),
        "other": n - everything.get("done", 0) - everything.get("shutdown_error_event", 0),
        "exit_code": exit_code,
        "exit_after_sigterm_s": round(exit_after, 2),
        "new_connections_refused_during_drain": refused,
        "gateway_log_tail": log_tail,
    }
