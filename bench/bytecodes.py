"""Bytecodes a non-stream request runs on the gateway's event loop, by Python function.

    .venv/bin/python bench/bytecodes.py [--key static|virtual|both] [--requests 200] [--top 40]

Like ``callgrind.py``'s instructions, the count is the same on a busy machine as on a quiet one
(to a few bytecodes: timers that fire during the count), and unlike them it names the Python
function that ran: where a request's interpreted work is,
and what a change added or removed there. It does not weigh the bytecodes (a dict lookup and a
``LOAD_FAST`` count one each) and sees no C code, nothing of other threads (the ledger's
SQLite writer), and no kernel time; ``docs/teams.md`` (Cost) says what they add.

Each key kind runs in a process of its own: the gateway under uvicorn, configured as the
command line does (``gateway.server.make_config``), in front of the bench's mock upstream (a
subprocess), and a client thread that sends 300 requests on one keep-alive connection to warm
up, then ``--requests`` more while the event loop's thread is traced (``sys.settrace`` with
``f_trace_opcodes``). ``virtual`` has an admin key, a virtual key with every limit on (never
reached) and the SQLite ledger, as ``tenancy_cost.py``; its ledger writes no batch during the
count (``GATEWAY_LEDGER_FLUSH_SECONDS`` is an hour), as under load, where a batch's few hundred
bytecodes fall on a thousand requests. ``both`` prints the two side by side and the difference
per function. Prints a table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from targets import (
    API_KEY,
    REPO,
    base_env,
    free_port,
    mock_env,
    mock_proc,
    teams_env,
    virtual_key,
)

WARM_UP = 300
BODY = json.dumps({"model": "mock/mock", "messages": [{"role": "user", "content": "Say hello."}]})


def where(code: Any) -> str:
    """A function's name for the table: path from the repository or site-packages, qualname."""
    path = str(code.co_filename)
    if path.startswith(str(REPO) + "/"):
        path = path[len(str(REPO)) + 1 :]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif "/lib/python3." in path:  # the standard library
        path = path.split("/lib/", 1)[1]
    return f"{path}:{code.co_qualname}"


class Counter:
    """The tracer: bytecodes and calls per code object, while :attr:`on`."""

    def __init__(self) -> None:
        self.bytecodes: collections.Counter[Any] = collections.Counter()
        self.calls: collections.Counter[Any] = collections.Counter()

    def trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            self.bytecodes[frame.f_code] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            self.calls[frame.f_code] += 1
        return self.trace


def measure(key_kind: str, requests: int) -> dict[str, list[float]]:
    """Per function: [bytecodes, calls] a request, on the event loop's thread."""
    import uvicorn

    from gateway.app import create_app
    from gateway.cli import settle_collector
    from gateway.server import make_config
    from gateway.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="bytecodes-"))
    mock = mock_proc(free_port())
    mock.start(None, base_env(), work, 30)
    try:
        lines = [
            *mock_env(mock.port),
            f"GATEWAY_API_KEYS={json.dumps([API_KEY])}",
            "GATEWAY_ACCESS_LOG=false",
        ]
        if key_kind == "virtual":
            lines += [*teams_env(work / "ledger.db"), "GATEWAY_LEDGER_FLUSH_SECONDS=3600"]
        (work / "gateway.env").write_text("\n".join(lines) + "\n")
        settings = load_settings(str(work / "gateway.env"))
        port = free_port()
        config = make_config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            drain_timeout=1.0,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            json_logs=False,
        )
        config.log_level = "warning"
        settle_collector()
        server = uvicorn.Server(config)
        counter = Counter()
        failure: list[BaseException] = []

        def client(loop: asyncio.AbstractEventLoop) -> None:
            try:
                while not server.started:
                    time.sleep(0.05)
                key = API_KEY if key_kind == "static" else virtual_key(port)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

                def one() -> None:
                    conn.request("POST", "/v1/chat/completions", body=BODY, headers=headers)
                    reply = conn.getresponse()
                    reply.read()
                    assert reply.status == 200, reply.status

                for _ in range(WARM_UP):
                    one()
                on_loop(loop, lambda: sys.settrace(counter.trace))
                for _ in range(requests):
                    one()
                on_loop(loop, lambda: sys.settrace(None))
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)
            finally:
                server.should_exit = True

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            threading.Thread(target=client, args=(loop,), daemon=True).start()
            await server.serve()

        # The event loop the command line gets (uvloop when installed), not asyncio's own.
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(serve())
        if failure:
            raise failure[0]
    finally:
        mock.stop()
    table: dict[str, list[float]] = {}
    for code in set(counter.bytecodes) | set(counter.calls):
        row = table.setdefault(where(code), [0.0, 0.0])
        row[0] += counter.bytecodes[code] / requests
        row[1] += counter.calls[code] / requests
    return table


def on_loop(loop: asyncio.AbstractEventLoop, action: Any) -> None:
    """Run ``action`` on the event loop's thread (``sys.settrace`` is per thread) and wait."""
    done = threading.Event()

    def act() -> None:
        action()
        done.set()

    loop.call_soon_threadsafe(act)
    done.wait()


def run_arm(key_kind: str, requests: int) -> dict[str, list[float]]:
    """``measure`` in a fresh interpreter (one gateway per process)."""
    argv = [sys.executable, __file__, "--key", key_kind, "--requests", str(requests), "--json"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=base_env()).stdout
    table: dict[str, list[float]] = json.loads(out)[key_kind]
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", choices=["static", "virtual", "both"], default="both")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--top", type=int, default=40, help="functions shown (by bytecodes)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    kinds = ["static", "virtual"] if a.key == "both" else [a.key]
    if a.json and len(kinds) == 1:
        tables = {kinds[0]: measure(kinds[0], a.requests)}
    else:
        tables = {kind: run_arm(kind, a.requests) for kind in kinds}
    if a.json:
        print(json.dumps(tables))
        return
    totals = {kind: sum(row[0] for row in table.values()) for kind, table in tables.items()}
    print(", ".join(f"{kind}: {total:,.0f} bytecodes a request" for kind, total in totals.items()))
    names = set().union(*tables.values())
    first, last = tables[kinds[0]], tables[kinds[-1]]

    def order(name: str) -> float:
        if len(kinds) == 1:
            return -first[name][0]
        return -abs(last.get(name, [0.0])[0] - first.get(name, [0.0])[0])

    header = "".join(f"{kind:>10}" for kind in kinds) + ("      diff" if len(kinds) > 1 else "")
    print(f"{header}  calls  function (calls: entries, a coroutine's resumptions included)")
    for name in sorted(names, key=order)[: a.top]:
        counts = [tables[kind].get(name, [0.0, 0.0]) for kind in kinds]
        cells = "".join(f"{c[0]:10.1f}" for c in counts)
        if len(kinds) > 1:
            cells += f"{counts[-1][0] - counts[0][0]:+10.1f}"
        print(f"{cells}  {counts[-1][1]:5.1f}  {name}")


if __name__ == "__main__":
    main()
