"""The Arena page: one prompt to two to four models at once, streaming side by side.

Each column shows its model's answer as it streams, under a collapsible thought when the model
reasons first (open while it thinks, as on the Chat page), and under it the TTFT, tok/s, tokens
and how its stream ended. The visitor then marks the better answer (or a tie); the tally of
wins is kept in the visitor's browser, across reloads, and never on the server.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from webui.gateway import Gateway
from webui.progress import Progress, duration, follow
from webui.settings import Settings, models_refresher, settings_panel

MAX_MODELS = 4
MIN_MODELS = 2
STORAGE_KEY = "llm-gateway-arena"
CSS = """
.arena-answer { min-height: 180px; }
.arena-stats { font-size: 0.85em; opacity: 0.8; }
.arena-answer details.arena-thought { opacity: 0.75; margin-bottom: 0.5em; }
"""


@dataclass
class Round:
    """The models of the last prompt, and whether the visitor has voted on it."""

    models: list[str] = field(default_factory=list)
    voted: bool = True


def new_tally() -> dict[str, Any]:
    return {"wins": {}, "ties": 0, "rounds": 0}


def valid_tally(value: object) -> dict[str, Any]:
    """The tally from the browser, or a fresh one when it is missing or malformed."""
    if not isinstance(value, Mapping):
        return new_tally()
    wins = value.get("wins")
    ties, rounds = value.get("ties"), value.get("rounds")
    if not (
        isinstance(wins, Mapping)
        and all(isinstance(k, str) and isinstance(v, int) for k, v in wins.items())
        and isinstance(ties, int)
        and isinstance(rounds, int)
    ):
        return new_tally()
    return {"wins": dict(wins), "ties": ties, "rounds": rounds}


def vote(tally: dict[str, Any], round_: Round, choice: int | None) -> bool:
    """Count a vote for the ``choice``-th model of the round (``None``: a tie), once a round."""
    if round_.voted or not round_.models:
        return False
    if choice is None:
        tally["ties"] += 1
    elif 0 <= choice < len(round_.models):
        model = round_.models[choice]
        tally["wins"][model] = tally["wins"].get(model, 0) + 1
    else:
        return False
    tally["rounds"] += 1
    round_.voted = True
    return True


def tally_markdown(tally: Mapping[str, Any]) -> str:
    if not tally["rounds"]:
        return "No votes yet: ask something, then mark the better answer."
    rows = sorted(tally["wins"].items(), key=lambda item: (-item[1], item[0]))
    lines = ["| model | wins |", "|---|---|"]
    lines += [f"| `{model}` | {wins} |" for model, wins in rows]
    lines.append(f"| *tie* | {tally['ties']} |")
    return "\n".join(lines) + f"\n\n{tally['rounds']} rounds voted."


def answer_markdown(progress: Progress) -> str:
    """A column's answer, under its reasoning as a ``<details>`` block: open while the model
    thinks, closed once the answer starts. The reasoning is the model's text, shown as text
    (escaped), never as markup of the page."""
    if not progress.reasoning:
        return progress.text
    if progress.thinking:
        head, opened = "Thinking…", " open"
    else:
        head, opened = f"Thought for {duration(progress.thought_seconds() or 0.0)}", ""
    thought = html.escape(progress.reasoning)
    return (
        f'<details class="arena-thought"{opened}><summary>{head}</summary>\n\n{thought}\n\n'
        f"</details>\n\n{progress.text}"
    )


def _stats(progress: Progress) -> str:
    if progress.error is not None:
        return f"⚠ {progress.error}"
    return progress.footer()


@dataclass
class _Sessions:
    """The progress of every column streaming now, by Gradio session, for Stop; and of the
    columns just stopped, for Stop's follow-up redraw (by then the stream has let go of them)."""

    live: dict[str, list[Progress]] = field(default_factory=dict)
    stopped: dict[str, list[Progress]] = field(default_factory=dict)


def build(gateway: Gateway) -> None:
    """The Arena page's components and events, inside the current Blocks context."""
    sessions = _Sessions()
    refresh = models_refresher(gateway)
    # A fixed secret, as the Studio's: Gradio sends it to the page anyway, and the tally must
    # outlive a server restart.
    tally_store = gr.BrowserState(new_tally(), storage_key=STORAGE_KEY, secret=STORAGE_KEY)
    round_state = gr.State(Round())

    gr.Markdown(
        "## Arena\nOne prompt, several models at once. Mark the better answer; "
        "the tally stays in this browser."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240, variant="panel"):
            panel = settings_panel(gateway, Settings.defaults(), model_label="Model 1")
            extra = [
                gr.Dropdown(
                    label=f"Model {n}",
                    choices=[],
                    value="",
                    allow_custom_value=True,
                    elem_id=f"arena-model-{n}",
                )
                for n in range(2, MAX_MODELS + 1)
            ]
            gr.Markdown("Leave models 3 and 4 empty for two columns.")
        with gr.Column(scale=4):
            with gr.Row():
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=2,
                    scale=5,
                    elem_id="arena-prompt",
                    placeholder="Ask all the models the same thing",
                )
                with gr.Column(scale=1, min_width=120):
                    send = gr.Button("Send", variant="primary", elem_id="arena-send")
                    stop = gr.Button("Stop", variant="stop", elem_id="arena-stop")
            headers, answers, stats, votes = [], [], [], []
            with gr.Row(equal_height=True):
                for n in range(MAX_MODELS):
                    with gr.Column(min_width=200, visible=n < MIN_MODELS) as column:
                        headers.append(
                            (column, gr.Markdown(f"### Model {n + 1}", elem_id=f"arena-head-{n}"))
                        )
                        answers.append(
                            gr.Markdown(
                                "",
                                elem_id=f"arena-answer-{n}",
                                elem_classes=["arena-answer"],
                                latex_delimiters=[{"left": "$$", "right": "$$", "display": True}],
                            )
                        )
                        stats.append(
                            gr.Markdown(
                                "", elem_id=f"arena-stats-{n}", elem_classes=["arena-stats"]
                            )
                        )
                        votes.append(
                            gr.Button(
                                "Better", size="sm", elem_id=f"arena-vote-{n}", interactive=False
                            )
                        )
            with gr.Row():
                tie = gr.Button("Tie", size="sm", elem_id="arena-tie", interactive=False)
            tally_view = gr.Markdown(tally_markdown(new_tally()), elem_id="arena-tally")

    columns = [column for column, _ in headers]
    heads = [head for _, head in headers]
    dropdowns = [panel.model, *extra]

    async def run(
        text: str,
        system_prompt: str,
        temperature: float,
        max_tokens: float | None,
        api_key: str,
        model_1: str | None,
        model_2: str | None,
        model_3: str | None,
        model_4: str | None,
        request: gr.Request,
    ) -> AsyncIterator[list[Any]]:
        chosen = [model_1, model_2, model_3, model_4][:MAX_MODELS]
        models = [m for m in chosen if isinstance(m, str) and m.strip()]
        if not text.strip():
            raise gr.Error("Type a prompt first.", print_exception=False)
        if gateway.missing_key(api_key):
            raise gr.Error("Enter your API key in the settings first.", print_exception=False)
        if len(models) < MIN_MODELS:
            raise gr.Error(f"Pick at least {MIN_MODELS} models.", print_exception=False)
        messages: list[Any] = []
        if system_prompt.strip():
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": text})
        progresses = [Progress(model=m) for m in models]
        session = request.session_hash or ""
        sessions.live[session] = progresses
        client = gateway.client(api_key)
        readers = [
            (
                p,
                p.read(
                    client,
                    messages=messages,
                    temperature=temperature,
                    max_tokens=int(max_tokens) if max_tokens else None,
                ),
            )
            for p in progresses
        ]
        first = True
        try:
            async for _ in follow(readers):
                if any(p.stopped for p in progresses):
                    return  # Stop drew the last state
                yield _draw(progresses, Round(models, voted=False), first=first)
                first = False
        finally:
            if sessions.live.get(session) is progresses:
                del sessions.live[session]

    def _draw(progresses: list[Progress], round_: Round, *, first: bool) -> list[Any]:
        done = not any(p.streaming for p in progresses)
        out: list[Any] = []
        for n in range(MAX_MODELS):
            p = progresses[n] if n < len(progresses) else None
            out.append(gr.update(visible=p is not None) if first else gr.skip())
            out.append(gr.update(value=f"### `{p.model}`") if p and first else gr.skip())
            out.append(gr.update(value=answer_markdown(p)) if p else gr.skip())
            out.append(gr.update(value=_stats(p)) if p else gr.skip())
            out.append(gr.update(interactive=done and p is not None))
        out.append(gr.update(interactive=done))
        out.append(round_ if first or done else gr.skip())
        return out

    outputs: list[Any] = []
    for n in range(MAX_MODELS):
        outputs += [columns[n], heads[n], answers[n], stats[n], votes[n]]
    outputs += [tie, round_state]

    def halt(request: gr.Request) -> list[Any]:
        session = request.session_hash or ""
        progresses = sessions.live.get(session, [])
        for progress in progresses:
            progress.stopped = True
        sessions.stopped[session] = progresses
        return _stopped(progresses)

    def settle(request: gr.Request) -> list[Any]:
        """Stop's last word, after any late redraw: the columns as :func:`halt` left them."""
        return _stopped(sessions.stopped.pop(request.session_hash or "", []))

    def _stopped(progresses: list[Progress]) -> list[Any]:
        out: list[Any] = []
        for n in range(MAX_MODELS):
            column = progresses[n] if n < len(progresses) else None
            out += [gr.skip(), gr.skip()]
            out.append(gr.update(value=answer_markdown(column)) if column else gr.skip())
            out.append(gr.update(value=_stats(column)) if column else gr.skip())
            out.append(gr.update(interactive=column is not None))
        out += [gr.update(interactive=bool(progresses)), gr.skip()]
        return out

    def cast(tally: Any, round_: Round, choice: int | None) -> tuple[Any, ...]:
        tally = valid_tally(tally)
        vote(tally, round_, choice)
        locked = [gr.update(interactive=False)] * (MAX_MODELS + 1)
        return (tally, round_, tally_markdown(tally), *locked)

    events: dict[str, Any] = {"api_visibility": "undocumented", "concurrency_limit": None}
    inputs = [prompt, panel.system, panel.temperature, panel.max_tokens, panel.key, *dropdowns]
    # No progress overlay: the columns stream their own progress, and the stats say the rest.
    running = gr.on(
        [send.click, prompt.submit], run, inputs, outputs, show_progress="hidden", **events
    )
    stopping = stop.click(halt, None, outputs, cancels=[running], **events)
    stopping.then(settle, None, outputs, **events)  # the last word, after any late redraw
    vote_outputs = [tally_store, round_state, tally_view, *votes, tie]
    for n, button in enumerate(votes):
        button.click(
            lambda t, r, n=n: cast(t, r, n), [tally_store, round_state], vote_outputs, **events
        )
    tie.click(lambda t, r: cast(t, r, None), [tally_store, round_state], vote_outputs, **events)

    page = gr.context.get_blocks_context()
    assert page is not None and page.root_block is not None
    page.root_block.load(
        lambda t: tally_markdown(valid_tally(t)), [tally_store], [tally_view], **events
    )
    panel.wire()
    # The other dropdowns follow the panel's own: refreshed on load, on ↻ and on a typed key, and
    # a key typed while the load-time refresh runs is not dropped (see Panel.wire).
    triggers: list[Any] = [page.root_block.load, panel.refresh.click]
    if gateway.require_key:
        triggers += [panel.key.submit, panel.key.blur]
    listing: dict[str, Any] = {"trigger_mode": "always_last", **events}
    for position, dropdown in enumerate(extra[: MIN_MODELS - 1], start=1):

        async def fill(current: str | None, api_key: str = "", position: int = position) -> Any:
            return await refresh(current, api_key, position)

        gr.on(triggers, fill, [dropdown, panel.key], [dropdown], **listing)
    for dropdown in extra[MIN_MODELS - 1 :]:
        # Models 3 and 4 are offered the list but start empty: two columns by default.
        async def offer(current: str | None, api_key: str = "") -> Any:
            if gateway.missing_key(api_key):
                return gr.skip()
            models, _ = await gateway.models_or_error(api_key)
            return gr.Dropdown(choices=["", *models], value=current if current in models else "")

        gr.on(triggers, offer, [dropdown, panel.key], [dropdown], **listing)
