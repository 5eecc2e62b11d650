"""The Dashboard's usage section: requests, tokens and cost per key and model, from the ledger.

The figures come from the gateway's admin API over HTTP (``GET /admin/usage?group_by=key,model``
for the sums, ``GET /admin/keys`` for the keys' names), with the admin key the visitor typed:
never a key of the UI's server. The ledger is a database query, so the section refreshes on
demand and every :data:`POLL_SECONDS`, not at the pace of the metrics charts.

Without ``GATEWAY_ADMIN_KEY`` the gateway has no admin API (404) and the section says how to turn
teams on. A refused key is reported and the table emptied; the key itself is never shown, and
neither is anything of a key but its name and id (the admin API never returns a secret).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd  # type: ignore[import-untyped]

POLL_SECONDS = 60.0
WINDOWS: dict[str, float] = {
    "Last hour": 3_600.0,
    "Last day": 86_400.0,
    "Last 30 days": 30 * 86_400.0,
}
DEFAULT_WINDOW = "Last day"
HEADERS = [
    "key",
    "key id",
    "model",
    "requests",
    "input tokens",
    "output tokens",
    "cached tokens",
    "reasoning tokens",
    "cost (USD)",
]
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
KEY_PAGE = 1000
MAX_KEY_PAGES = 20
"""The key list is read a page at a time until every key in the figures has its name; past
this many pages (20,000 keys) the rest show their id alone rather than make a refresh slow."""
TEAMS_OFF = (
    "Teams are off on this gateway: usage per key comes from its admin API, which exists only "
    "when the gateway runs with `GATEWAY_ADMIN_KEY` set (see docs/teams.md)."
)
BAD_ANSWER = "⚠ The gateway did not answer with the admin API's JSON."
REFUSED = "🔑 The admin key was refused."


@dataclass(slots=True)
class Usage:
    """What one fetch read: the sums of ``/admin/usage`` and the names of the keys in them."""

    answer: dict[str, Any]
    names: dict[str, str]


def usd(micro: int) -> str:
    """Integer micro-USD as dollars, exactly (the ledger's sums are integers: no float drift)."""
    return f"{micro // 1_000_000:,}.{micro % 1_000_000:06d}"


def key_name(key_id: str | None, names: dict[str, str]) -> str:
    """What to call the key a ledger row is charged to."""
    if key_id is None:
        return "(no key)"
    if key_id in names:
        return names[key_id]
    if key_id.startswith("static-"):  # GATEWAY_API_KEYS, named by position, never by content
        return f"static key #{key_id.removeprefix('static-')}"
    return "(unknown key)"


def _row(name: str, key_id: str, model: str, sums: dict[str, Any]) -> list[Any]:
    return [
        name,
        key_id,
        model,
        int(sums["requests"]),
        *(int(sums[f]) for f in TOKEN_FIELDS),
        usd(int(sums["cost_micro_usd"])),
    ]


def table(usage: Usage) -> pd.DataFrame:
    """One row per key and model, the costliest first, then a row of totals."""
    groups = sorted(
        usage.answer["data"],
        key=lambda g: (
            -int(g["cost_micro_usd"]),
            -int(g["requests"]),
            g["key"] or "",
            g["model"] or "",
        ),
    )
    rows = [
        _row(key_name(g["key"], usage.names), g["key"] or "", g["model"] or "", g) for g in groups
    ]
    rows.append(_row("Total", "", "", usage.answer["total"]))
    return pd.DataFrame(rows, columns=HEADERS)


def empty_table() -> pd.DataFrame:
    return pd.DataFrame([], columns=HEADERS)


def notes(usage: Usage) -> str:
    """What the figures leave out: requests without a price, ledger rows dropped."""
    out = []
    unpriced = int(usage.answer["total"].get("unpriced_requests", 0))
    if unpriced:
        out.append(
            f"{unpriced} request(s) were of models without a price: their cost counts as 0 "
            "(set prices with `GATEWAY_PRICES`)."
        )
    dropped = int(usage.answer.get("dropped_rows", 0))
    if dropped:
        out.append(f"The ledger dropped {dropped} row(s) under load: the sums miss them.")
    return " ".join(out)


def view(usage: Usage, label: str, now: float) -> tuple[str, pd.DataFrame]:
    """The section's status line and table; a problem and no table when the JSON is not the
    admin API's (a proxy's page, another version): never an exception in the page."""
    try:
        rows, remarks = table(usage), notes(usage)
    except (KeyError, TypeError, ValueError, AttributeError):
        return BAD_ANSWER, empty_table()
    updated = time.strftime("%H:%M:%S", time.localtime(now))
    return f"{label}, updated {updated}. {remarks}".rstrip(), rows


def _since(seconds: float, now: float) -> str:
    return datetime.fromtimestamp(now - seconds, UTC).isoformat(timespec="seconds")


def admin_headers(admin_key: str) -> dict[str, str] | None:
    """The header that carries the typed admin key (none when nothing was typed); None for a
    key no HTTP header can carry, which is then not sent (and cannot be the gateway's key)."""
    key = admin_key.strip()
    if not key:
        return {}
    if not (key.isascii() and key.isprintable()):
        return None
    return {"authorization": f"Bearer {key}"}


def _problem(response: httpx.Response, typed_key: bool) -> str:
    """What to tell the visitor about an answer other than 200: never the key, never a body."""
    if response.status_code == 404:
        return TEAMS_OFF
    if response.status_code in (401, 403):
        if typed_key:
            return REFUSED
        return "🔑 Usage per key needs the gateway's admin key: enter it above."
    if response.status_code == 503:
        return "⚠ The gateway's database cannot be reached; the next refresh tries again."
    return f"⚠ /admin/usage answered {response.status_code}"


async def _names(
    client: httpx.AsyncClient,
    base_url: str,
    headers: dict[str, str],
    wanted: set[str],
    page_size: int,
) -> dict[str, str] | httpx.Response:
    """The names of the keys in ``wanted`` (a revoked or expired one says so), or the answer
    that failed."""
    names: dict[str, str] = {}
    after: str | None = None
    for _ in range(MAX_KEY_PAGES):
        if not wanted - names.keys():
            break
        params: dict[str, str | int] = {"limit": page_size}
        if after:
            params["after"] = after
        response = await client.get(f"{base_url}/admin/keys", params=params, headers=headers)
        if response.status_code != 200:
            return response
        page = response.json()
        for key in page["data"]:
            status = key.get("status", "active")
            names[key["id"]] = key["name"] if status == "active" else f"{key['name']} ({status})"
        after = page.get("last_id")
        if not page.get("has_more") or not after:
            break
    return names


async def fetch(
    client: httpx.AsyncClient,
    base_url: str,
    admin_key: str,
    *,
    seconds: float,
    now: float,
    page_size: int = KEY_PAGE,
) -> Usage | str:
    """The usage of the last ``seconds`` per key and model, or what to tell the visitor."""
    headers = admin_headers(admin_key)
    if headers is None:
        return REFUSED
    query = {"group_by": "key,model", "since": _since(seconds, now)}
    try:
        response = await client.get(f"{base_url}/admin/usage", params=query, headers=headers)
        if response.status_code != 200:
            return _problem(response, bool(headers))
        answer = response.json()
        wanted = {g["key"] for g in answer["data"] if g.get("key")}
        names = await _names(client, base_url, headers, wanted, page_size)
    except httpx.HTTPError as exc:
        return f"⚠ cannot reach the gateway ({type(exc).__name__})"
    except (ValueError, KeyError, TypeError, AttributeError):
        return BAD_ANSWER
    if isinstance(names, httpx.Response):
        return _problem(names, bool(headers))
    return Usage(answer=answer, names=names)


def build(admin_key: Any, client: Callable[[], httpx.AsyncClient], base_url: str) -> None:
    """Add the usage section to the current Gradio page.

    ``admin_key`` is the dashboard's admin key textbox (the metrics and the usage take the same
    key); ``client`` gives the dashboard's one HTTP client.
    """
    import gradio as gr  # here, as in webui.dashboard: the helpers above do without it

    gr.Markdown(
        "### Usage and cost per key and model\n"
        f"From the gateway's usage ledger; refreshed every {POLL_SECONDS:.0f} s and on demand."
    )
    with gr.Row():
        window = gr.Radio(
            list(WINDOWS),
            value=DEFAULT_WINDOW,
            label="Window",
            elem_id="dashboard-usage-window",
            scale=3,
        )
        refresh_button = gr.Button("Refresh usage", elem_id="dashboard-usage-refresh", scale=1)
    status = gr.Markdown("", elem_id="dashboard-usage-status")
    usage_table = gr.Dataframe(
        value=empty_table(),
        headers=HEADERS,
        label="Usage per key and model",
        interactive=False,
        elem_id="dashboard-usage",
    )
    timer = gr.Timer(POLL_SECONDS)

    async def refresh(key: str | None, chosen: str | None) -> tuple[str, pd.DataFrame]:
        label = chosen if chosen in WINDOWS else DEFAULT_WINDOW
        now = time.time()
        result = await fetch(client(), base_url, key or "", seconds=WINDOWS[label], now=now)
        if isinstance(result, str):  # nothing stale stays on screen
            return result, empty_table()
        return view(result, label, now)

    page = gr.context.get_blocks_context()
    assert page is not None and page.root_block is not None
    # One listener for every trigger, so that a visitor's refreshes run one after the other
    # and the last asked for is the one shown: two listeners would run side by side, and a
    # slower answer for the old window (the key's blur as the window is clicked) could land
    # last. No concurrency limit across visitors: each refresh is one query.
    gr.on(
        [
            page.root_block.load,
            timer.tick,
            refresh_button.click,
            window.change,
            admin_key.submit,
            admin_key.blur,
        ],
        refresh,
        [admin_key, window],
        [status, usage_table],
        show_progress="hidden",
        trigger_mode="always_last",
        api_visibility="undocumented",
        concurrency_limit=None,
    )
