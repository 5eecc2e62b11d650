"""Run the real agent CLIs, Claude Code and Codex CLI, against a base URL on 127.0.0.1.

``tests/setup-agents.sh`` installs them into ``.agents/``. Each run gets a clean environment,
not the caller's: a temporary HOME (and CODEX_HOME, TMPDIR) that the caller owns and removes, no
proxy or key variables of the machine, telemetry and auto-update off. So a run touches only the
given directories and the given base URL, and leaves nothing behind once they are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "CLAUDE",
    "CODEX",
    "claude_env",
    "codex_config",
    "codex_env",
    "missing_clis",
    "run_claude",
    "run_codex",
]

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".agents" / "node_modules" / ".bin"
CLAUDE = BIN / "claude"
CODEX = BIN / "codex"
# What the commands the agents run may use: a shell and coreutils, nothing of this venv; and
# node, which runs Codex's launcher (bin/codex.js) wherever npm found it.
_NODE = shutil.which("node")
_PATH = ":".join(
    dict.fromkeys(
        [*([str(Path(_NODE).parent)] if _NODE else []), "/usr/local/bin", "/usr/bin", "/bin"]
    )
)


def missing_clis() -> str | None:
    """Why the CLIs cannot run here (for a skip), or None when both are installed."""
    absent = [path.name for path in (CLAUDE, CODEX) if not os.access(path, os.X_OK)]
    if absent:
        return f"{' and '.join(absent)} not installed: run bash tests/setup-agents.sh"
    if shutil.which("bash", path=_PATH) is None:
        return "no bash on PATH for the agents' shell tool"
    if _NODE is None:
        return "no node on PATH to run Codex's launcher"
    return None


def _base_env(home: Path) -> dict[str, str]:
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": _PATH, "HOME": str(home), "TMPDIR": str(tmp), "LANG": "C.UTF-8"}


def claude_env(
    home: Path,
    base_url: str,
    *,
    token: str,
    model: str | None,
    small_model: str,
    header: str = "authorization",
    streaming_fallback: bool = False,
) -> dict[str, str]:
    """Claude Code's environment for a gateway at ``base_url`` (no ``/v1``: Claude Code adds it).

    ``ANTHROPIC_AUTH_TOKEN`` goes out as ``Authorization: Bearer`` (``header="x-api-key"``:
    ``ANTHROPIC_API_KEY``, sent as ``x-api-key``); ``ANTHROPIC_MODEL`` is the main model (None:
    Claude Code's default) and ``ANTHROPIC_DEFAULT_HAIKU_MODEL`` (with the older
    ``ANTHROPIC_SMALL_FAST_MODEL``) the small one its background calls use (session titles).
    ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`` keeps it off the network otherwise. No
    retries, so that a failure shows at once; and no second, non-streamed try of a failed
    stream unless ``streaming_fallback``, so that what a test sees is what the stream did.
    """
    config = home / ".claude.json"
    home.mkdir(parents=True, exist_ok=True)
    if not config.exists():  # no first-run screens (theme, onboarding) in interactive runs
        config.write_text(json.dumps({"hasCompletedOnboarding": True, "theme": "dark"}))
    key_variable = "ANTHROPIC_API_KEY" if header == "x-api-key" else "ANTHROPIC_AUTH_TOKEN"
    env = {
        **_base_env(home),
        "ANTHROPIC_BASE_URL": base_url,
        key_variable: token,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small_model,
        "ANTHROPIC_SMALL_FAST_MODEL": small_model,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    if model is not None:
        env["ANTHROPIC_MODEL"] = model
    if not streaming_fallback:
        env["CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK"] = "1"
    return env


def _run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """A CLI run to its end (bounded by ``timeout``), nothing on stdin, its output kept."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_claude(
    prompt: str, *, cwd: Path, env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``claude -p PROMPT``, its Bash tool allowed (``--dangerously-skip-permissions`` is
    refused to root, which CI is)."""
    return _run([str(CLAUDE), "-p", prompt, "--allowedTools", "Bash"], cwd, env, timeout)


def codex_config(base_url: str, *, model: str, env_key: str = "LLM_GATEWAY_KEY") -> str:
    """Codex's ``config.toml`` with the gateway as its model provider, over the Responses API.

    ``base_url`` includes ``/v1``; Codex posts to ``{base_url}/responses`` and sends the value
    of ``env_key``'s variable as ``Authorization: Bearer``.
    """
    return (
        f"model = {json.dumps(model)}\n"
        'model_provider = "gateway"\n'
        "\n"
        "[model_providers.gateway]\n"
        'name = "llm-gateway"\n'
        f"base_url = {json.dumps(base_url)}\n"
        f"env_key = {json.dumps(env_key)}\n"
        'wire_api = "responses"\n'
        # One attempt, so a failure shows at once instead of after backoffs.
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )


def codex_env(
    home: Path, base_url: str, *, key: str, model: str, env_key: str = "LLM_GATEWAY_KEY"
) -> dict[str, str]:
    """Codex's environment: ``CODEX_HOME`` holding :func:`codex_config`, the key in ``env_key``."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(codex_config(base_url, model=model, env_key=env_key))
    return {**_base_env(home), "CODEX_HOME": str(codex_home), env_key: key}


def run_codex(
    prompt: str, *, cwd: Path, env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``codex exec PROMPT`` outside a git repository, commands run without Codex's sandbox
    (the work directory is a temporary one; bubblewrap may be unavailable on CI)."""
    return _run(
        [
            str(CODEX),
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            prompt,
        ],
        cwd,
        env,
        timeout,
    )
