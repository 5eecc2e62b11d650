"""Install a plugin distribution with pip, as a user would, into a directory of its own.

``pip install --no-deps --target DIR`` keeps the test environment untouched; the directory then
goes on a spawned gateway's ``PYTHONPATH``. The source is copied first, since setuptools builds
in the source tree (``build/``, ``*.egg-info``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

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
