"""The console script end to end: start on the echo default, serve, stop cleanly."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.clients import sdk
from tests.support.servers import GATEWAY, free_port, spawn


def echo_once(cwd: Path, env: dict[str, str], content: str) -> str:
    """Start ``llm-gateway --no-ui`` with ``env``, have ``echo/echo`` repeat ``content`` through
    the SDK, stop it with SIGTERM (it must exit 0) and return all it printed: for tests of what a
    whole run writes (logs, exported spans)."""
    port = free_port()
    with spawn(
        [GATEWAY, "--no-ui", "--port", str(port)],
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=cwd,
    ) as server:
        reply = sdk(server.base_url).chat.completions.create(
            model="echo/echo", messages=[{"role": "user", "content": content}]
        )
        assert reply.choices[0].message.content == content
        server.terminate(signal.SIGTERM)  # the gateway flushes what it buffers as it stops
        assert server.wait(15) == 0
        return server.output()


def test_starts_on_echo_with_no_config_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    output = echo_once(tmp_path, {}, "it works")
    assert "GATEWAY_API_KEYS is not set" in output
    assert "Traceback" not in output
    assert '"POST /v1/chat/completions" 200' in output


def test_env_file_and_flags(tmp_path: Path) -> None:
    port = free_port()
    env_file = tmp_path / "my.env"
    env_file.write_text(
        'GATEWAY_PORT=1\nGATEWAY_API_KEYS=["cli-key"]\n'
        'GATEWAY_PROVIDERS__SLOW__TYPE=echo\nGATEWAY_PROVIDERS__SLOW__MODELS=["snail"]\n'
    )
    with spawn(
        [GATEWAY, "--no-ui", "--env-file", str(env_file), "--port", str(port)],
        env={},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
    ) as server:
        models = sdk(server.base_url, "cli-key").models.list()
        assert [m.id for m in models] == ["slow/snail"]
        assert "GATEWAY_API_KEYS is not set" not in server.output()
        assert "cli-key" not in server.output()


def test_workers_serve_the_api_and_log_access(tmp_path: Path) -> None:
    port = free_port()
    with spawn(
        [GATEWAY, "--workers", "2", "--port", str(port)],
        env={},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=tmp_path,
        timeout=40,
    ) as server:
        client = sdk(server.base_url)
        for _ in range(4):
            reply = client.chat.completions.create(
                model="echo/echo", messages=[{"role": "user", "content": "many workers"}]
            )
            assert reply.choices[0].message.content == "many workers"
        server.terminate(signal.SIGTERM)
        server.wait(20)
        output = server.output()
    assert "--workers > 1 serves the API only" in output
    assert output.count('"POST /v1/chat/completions" 200') == 4
    assert "Traceback" not in output


def test_the_collector_is_settled_after_start_up() -> None:
    """What start-up built is frozen, and the young generation's threshold raised (the
    reasons are in settle_collector's docstring; requests leave no cycles to find)."""
    import gc

    from gateway.cli import GC_YOUNG, settle_collector

    threshold = gc.get_threshold()
    try:
        settle_collector()
        assert gc.get_threshold() == (GC_YOUNG, *threshold[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
