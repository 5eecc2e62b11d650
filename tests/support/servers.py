"""Run real servers for tests: an ASGI app in a background thread, or a whole subprocess.

Every wait here is bounded; nothing talks to anything but the loopback interface.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["GATEWAY", "ASGIApp", "ProcessServer", "free_port", "serve_in_thread", "spawn"]

# The gateway's executable of the environment the tests run in (not whichever is on PATH).
GATEWAY = str(Path(sys.executable).with_name("llm-gateway"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual bind-to-0 trick; racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def serve_in_thread(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 10.0,
    shutdown_timeout: float = 10.0,
    **uvicorn_config_kwargs: Any,
) -> Iterator[str]:
    """Run ``app`` under a real ``uvicorn.Server`` in a thread; yield ``http://HOST:PORT``.

    The port is chosen by the OS (port 0) and read back from the bound socket.  Defaults,
    all overridable through ``uvicorn_config_kwargs``: ``lifespan="on"``,
    ``log_level="warning"``, ``log_config=None`` (leave global logging alone: uvicorn's
    records propagate to the root logger, where pytest captures them) and
    ``timeout_graceful_shutdown=1`` (so a deliberately hung response cannot block exit).
    """
    kwargs: dict[str, Any] = {
        "port": 0,
        "lifespan": "on",
        "log_level": "warning",
        "log_config": None,
        "timeout_graceful_shutdown": 1,
    }
    kwargs.update(uvicorn_config_kwargs)
    server = uvicorn.Server(uvicorn.Config(app, host=host, **kwargs))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # SystemExit on startup failure, anything else
            failure.append(exc)

    thread = threading.Thread(target=run, name="serve_in_thread", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"uvicorn server failed to start: {failure!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn server not started within {startup_timeout} s")
            time.sleep(0.01)
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield _url(host, port)
    finally:
        server.should_exit = True
        thread.join(shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5.0)
        if thread.is_alive():  # pragma: no cover - would mean uvicorn ignores force_exit
            raise RuntimeError("uvicorn server thread did not stop")


class ProcessServer:
    """A started subprocess whose stdout+stderr go to a temporary file."""

    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path
        self._final_output: str | None = None

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        if self._final_output is not None:
            return self._final_output
        return self.log_path.read_bytes().decode("utf-8", errors="replace")

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process (and only to it) if it is still running."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait (bounded) for exit and return the exit code; raises on timeout."""
        return self.proc.wait(timeout=timeout)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        self.terminate(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5.0)


def _wait_ready(server: ProcessServer, ready_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no attempt"
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            code = server.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"process exited with {code} before {ready_url} was ready; "
                    f"output:\n{server.output()}"
                )
            try:
                response = client.get(ready_url)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last = repr(exc)
            time.sleep(0.1)
    raise TimeoutError(
        f"{ready_url} not ready within {timeout} s (last: {last}); output:\n{server.output()}"
    )


@contextlib.contextmanager
def spawn(
    cmd: list[str],
    *,
    env: dict[str, str],
    ready_url: str,
    timeout: float = 20.0,
    inherit_env: bool = True,
    cwd: str | os.PathLike[str] | None = None,
) -> Iterator[ProcessServer]:
    """Start ``cmd``, wait until GET ``ready_url`` answers 200, yield a :class:`ProcessServer`.

    ``env`` is laid over ``os.environ`` unless ``inherit_env=False``; ``PYTHONUNBUFFERED=1``
    is set unless given, so output shows up in ``output()`` promptly.  ``base_url`` is
    ``ready_url``'s scheme://host:port.  On exit: SIGTERM, then SIGKILL after 5 s.  The
    output stays readable through ``output()`` after the block ends.
    """
    full_env = {**os.environ, **env} if inherit_env else dict(env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    parts = urlsplit(ready_url)
    base_url = f"{parts.scheme}://{parts.netloc}"
    fd, name = tempfile.mkstemp(prefix="spawned-", suffix=".log")
    log_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for pytest does not hit it first
            )
        server = ProcessServer(proc, base_url, log_path)
        try:
            _wait_ready(server, ready_url, timeout)
            yield server
        finally:
            server.stop()
            server._final_output = server.output()
    finally:
        log_path.unlink(missing_ok=True)
