"""serve_in_thread / spawn: the happy paths and the bounded failure paths."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.servers import Message, Receive, Scope, Send, free_port, serve_in_thread, spawn

pytestmark = pytest.mark.timeout(30)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        message: Message = await receive()
        while message["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


async def broken_startup(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "nope"})


def test_serve_in_thread_serves_on_an_os_chosen_port() -> None:
    with serve_in_thread(hello) as base, serve_in_thread(hello) as other:
        assert base.startswith("http://127.0.0.1:") and base != other
        assert httpx.get(base, trust_env=False).text == "hello"
    with pytest.raises(httpx.ConnectError):
        httpx.get(base, trust_env=False, timeout=1.0)


def test_serve_in_thread_reports_startup_failure() -> None:
    with pytest.raises(RuntimeError, match="failed to start"), serve_in_thread(broken_startup):
        pass  # pragma: no cover


def test_spawn_runs_until_ready_and_keeps_output(tmp_path: Path) -> None:
    port = free_port()
    # http.server as `python -m` runs it, with Python's own SIGINT handler put back: a runner
    # started in the background by a shell without job control (`cmd &`) ignores SIGINT, and
    # its children inherit that (CPython then never installs its handler).
    serve = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'http.server'; runpy.run_module('http.server', run_name='__main__')"
    )
    cmd = [sys.executable, "-c", serve, str(port), "--bind", "127.0.0.1"]
    ready = f"http://127.0.0.1:{port}/"
    with spawn(cmd, env={}, ready_url=ready, cwd=tmp_path) as server:
        assert server.base_url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{server.base_url}/", trust_env=False).status_code == 200
        server.terminate(signal.SIGINT)
        assert server.wait(10.0) == 0  # http.server exits cleanly on KeyboardInterrupt
    assert '"GET / HTTP/1.1" 200' in server.output()
    assert "Keyboard interrupt" in server.output()


def test_spawn_reports_early_exit_with_output() -> None:
    cmd = [sys.executable, "-c", "print('boom'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*boom"):  # noqa: SIM117
        with spawn(cmd, env={}, ready_url=f"http://127.0.0.1:{free_port()}/"):
            pass  # pragma: no cover


def test_spawn_times_out_and_stops_the_process() -> None:
    cmd = [sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)"]
    with pytest.raises(TimeoutError, match=r"not ready within 0\.5 s(.|\n)*waiting"):  # noqa: SIM117
        with spawn(cmd, env={}, ready_url=f"http://127.0.0.1:{free_port()}/", timeout=0.5):
            pass  # pragma: no cover
