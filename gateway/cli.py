"""``llm-gateway``: start the gateway, with the chat UI mounted at /ui unless --no-ui."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys

import uvicorn

from gateway import logs
from gateway.app import create_app
from gateway.metrics_workers import prepare_workers_dir, workers_dir
from gateway.server import make_config
from gateway.settings import ConfigError, Settings, load_settings
from providers.registry import list_types

logger = logging.getLogger("gateway")
ENV_FILE_VAR = "LLM_GATEWAY_ENV_FILE"
LOG_LEVEL_VAR = "LLM_GATEWAY_LOG_LEVEL"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="llm-gateway",
        description="An OpenAI-compatible LLM gateway with a chat UI.",
        epilog="llm-gateway plugins: list the provider types (built-in and installed plugins).",
    )
    parser.add_argument("--env-file", help="env file to read (default: .env when present)")
    parser.add_argument("--host", help="address to bind (default: GATEWAY_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: GATEWAY_PORT or 8000)")
    parser.add_argument("--no-ui", action="store_true", help="serve the API only, without Gradio")
    parser.add_argument(
        "--workers", type=int, default=1, help="API worker processes (implies --no-ui when > 1)"
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser.parse_args(argv)


GC_YOUNG = 10_000  # the collector's first threshold (Python's default: 700)


def settle_collector() -> None:
    """Once start-up is done. What it built lives as long as the process: the collector need
    not scan it again (``gc.freeze``). And a request leaves no reference cycle
    (tests/test_reference_cycles.py), so all the default threshold did was run the collector
    every ~25 requests: 3 % of a loaded gateway's time, and pauses of 2-5 ms (its older
    generations) inside the waves of paced streams. At 10,000 it runs a few times a minute
    under load; what it still finds is at most that many objects, freed a little later."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def app_from_env() -> object:
    """The API app of one worker process, from the env file named by the parent process.

    Workers are spawned, not forked: each sets up its own logging.
    """
    settings = load_settings(os.environ.get(ENV_FILE_VAR))
    logs.configure(os.environ.get(LOG_LEVEL_VAR, "info"), json=settings.log_format == "json")
    app = create_app(settings)
    settle_collector()
    return app


def _local_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def plugins(argv: list[str]) -> int:
    """``llm-gateway plugins``: the provider types, built-in or from installed plugins.

    Lists entry points without importing any plugin, so a broken one shows up here too.
    """
    argparse.ArgumentParser(
        prog="llm-gateway plugins",
        description="List the provider types: built-in or plugin, distribution and version.",
    ).parse_args(argv)
    rows = [("TYPE", "KIND", "DISTRIBUTION", "VERSION", "NOTE")]
    rows += [(t.name, t.kind, t.distribution, t.version, t.note) for t in list_types()]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[4]]).rstrip())
    return 0


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["plugins"]:
        raise SystemExit(plugins(words[1:]))
    args = parse_args(argv)
    logs.configure(args.log_level, json=False)
    ui_on = not args.no_ui and args.workers == 1
    try:
        settings: Settings = load_settings(args.env_file)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        # Built here in every mode: a provider that cannot start stops the start here, once,
        # rather than in every worker.
        app = create_app(settings, open_prefixes=("/ui",) if ui_on else ())
    except ConfigError as exc:
        print(f"llm-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.log_format == "json":
        logs.configure(args.log_level, json=True)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if not settings.api_keys:
        logger.warning(
            "GATEWAY_API_KEYS is not set: anyone who can reach %s:%s can use the gateway",
            host,
            port,
        )
    if not args.no_ui and args.workers > 1:
        logger.warning(
            "--workers > 1 serves the API only: Gradio keeps its queue in one process. Run the "
            "UI beside it with: python ui.py --gateway-url %s",
            _local_url(host, port),
        )
    if args.workers > 1 and settings.admin_key is not None and settings.redis_url is None:
        logger.warning(
            "--workers %d without GATEWAY_REDIS_URL: virtual keys' limits and budgets are "
            "counted per worker process (each admits up to the whole limit); set "
            "GATEWAY_REDIS_URL to share them",
            args.workers,
        )
    if args.workers > 1:
        if args.env_file:
            os.environ[ENV_FILE_VAR] = os.path.abspath(args.env_file)
        os.environ[LOG_LEVEL_VAR] = args.log_level
        config = make_config(
            "gateway.cli:app_from_env",
            host=host,
            port=port,
            drain_timeout=settings.drain_timeout,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            json_logs=settings.log_format == "json",
            workers=args.workers,
            factory=True,
        )
        # Every worker counts into /metrics: each publishes its snapshot to a directory set up
        # here, before they start (gateway.metrics_workers says how).
        cleanup = prepare_workers_dir() if settings.metrics else lambda: None
        try:
            uvicorn.supervisors.Multiprocess(config, sockets=[config.bind_socket()]).run()
        finally:
            cleanup()
        return
    if settings.metrics and workers_dir() is not None:
        # One process but a directory named: it shares its snapshot there as a worker would,
        # so old snapshots must go (they would be counted).
        prepare_workers_dir()
    if ui_on:
        import ui  # Gradio is heavy: imported only when the UI is served

        ui.mount(
            app,
            gateway_url=_local_url(host, port),
            api_key=None,
            require_key=bool(settings.api_keys),
        )
        logger.info("chat UI at %s/ui", _local_url(host, port))
    config = make_config(
        app,
        host=host,
        port=port,
        drain_timeout=settings.drain_timeout,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        json_logs=settings.log_format == "json",
    )
    settle_collector()
    server = uvicorn.Server(config)
    # uvicorn re-raises SIGTERM/SIGINT once it has shut down; after a completed drain that is a
    # clean exit, so the re-raised signal is ignored and the process exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if not server.started:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
