"""Install a plugin distribution with pip, as a user would, into a directory of its own.

``pip install --no-deps --target DIR`` keeps the test environment untouched; the directory then
goes on a spawned gateway's ``PYTHONPATH`` (:func:`serve_scripted`). The source is copied
first, since setuptools builds in the source tree (``build/``, ``*.egg-info``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.servers import GATEWAY, ProcessServer, free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
SCRIPTED = ROOT / "examples" / "llm-gateway-scripted"


def pip_install(source: Path, target: Path, *, scratch: Path) -> None:
    """Build and install the distribution at ``source`` into ``target``.

    Offline first (the environment's own setuptools, no index); that needs a setuptools able to
    build wheels by itself (70.1+, or ``wheel`` installed). Otherwise pip builds in isolation,
    fetching setuptools from the configured index.
    """
    copy = scratch / source.name
    shutil.copytree(
        source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-input",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
    ]
    attempts = [[*command, "--no-build-isolation", "--no-index", str(copy)], [*command, str(copy)]]
    failures = []
    for attempt in attempts:
        result = subprocess.run(attempt, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            return
        failures.append(f"$ {' '.join(attempt)}\n{result.stdout}{result.stderr}")
    raise AssertionError("pip could not install " + source.name + ":\n" + "\n".join(failures))


@contextmanager
def gateway_with_plugins(site: Path, work: Path, *settings: str) -> Iterator[ProcessServer]:
    """A spawned gateway (no UI) with the plugins installed in ``site`` on its PYTHONPATH and
    ``settings`` as the lines of its env file; its files go in ``work``, its cwd."""
    env_file = work / "gateway.env"
    env_file.write_text("".join(f"{line}\n" for line in settings))
    port = free_port()
    with spawn(
        [GATEWAY, "--no-ui", "--env-file", str(env_file), "--port", str(port)],
        env={"PYTHONPATH": str(site)},
        ready_url=f"http://127.0.0.1:{port}/health",
        cwd=work,
    ) as server:
        yield server


@contextmanager
def serve_scripted(
    site: Path, work: Path, script: Sequence[object], *settings: str
) -> Iterator[str]:
    """A spawned gateway (no UI) whose provider ``bot`` is the scripted plugin installed in
    ``site``, playing ``script`` as model ``bot/agent``; ``settings`` are further lines of its env
    file. Its files go in ``work``, its cwd. Yields its base URL; afterwards, its output must
    hold no traceback."""
    script_file = work / "script.json"
    script_file.write_text(json.dumps(script))
    with gateway_with_plugins(
        site,
        work,
        "GATEWAY_PROVIDERS__BOT__TYPE=scripted",
        f"GATEWAY_PROVIDERS__BOT__SCRIPT={script_file}",
        'GATEWAY_PROVIDERS__BOT__MODELS=["agent"]',
        *settings,
    ) as server:
        yield server.base_url
    assert "Traceback" not in server.output()
