"""Installed-looking plugin distributions without pip: a ``*.dist-info`` with ``METADATA`` and
``entry_points.txt``, and the module it names, written into a directory that goes on the path
(``sys.path`` in process, ``PYTHONPATH`` for a spawned gateway).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

# A plugin whose behaviour is chosen by model name, like TensorZero's dummy provider.
BEHAVING = """
import asyncio

from pydantic import BaseModel, ConfigDict, field_validator

from providers.base import Chunk, Delta, Usage
from providers.spec import ProviderType


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greeting: str = "hello"

    @field_validator("greeting")
    @classmethod
    def _careless(cls, value):
        if value == "explode-options":  # a validator raising what pydantic does not wrap
            raise KeyError("sk-plugin-secret-in-a-message")
        return value


class Provider:
    def __init__(self, context, options):
        if options.greeting == "explode-create":
            raise RuntimeError("sk-plugin-secret-in-a-message")
        self.name = context.name
        self.models = context.models
        self.greeting = options.greeting

    async def stream(self, request):
        model = request.model
        if model == "raises-first":
            raise RuntimeError("a bug before the first chunk")
        yield Chunk(deltas=[Delta(text=self.greeting + " ")])
        if model == "raises-mid":
            raise RuntimeError("a bug mid-stream")
        if model == "deaf":  # swallows every cancellation, yields again when it wakes
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
            yield Chunk(deltas=[Delta(text="still here ")])
            await asyncio.sleep(0.05)
            yield Chunk(deltas=[Delta(text="and here")])
        if model == "deaf-forever":  # swallows every cancellation and never yields again
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass
        yield Chunk(deltas=[Delta(text="from the plugin")])
        yield Chunk(deltas=[Delta(finish_reason="stop")])
        yield Chunk(deltas=[], usage=Usage(input_tokens=1, output_tokens=4, source="estimated"))

    async def aclose(self):
        return None


SPEC = ProviderType(
    name=TYPE_NAME,
    options=Options,
    create=Provider,
    default_models=("ok", "raises-first", "raises-mid", "deaf", "deaf-forever"),
    contract_version=CONTRACT,
)
"""


def behaving_source(type_name: str, *, contract: int | None = None) -> str:
    """The module text of a working plugin of TYPE ``type_name`` (``contract``: a version to
    declare other than the gateway's)."""
    header = f"TYPE_NAME = {type_name!r}\n"
    if contract is None:
        header += "from providers.spec import CONTRACT_VERSION as CONTRACT\n"
    else:
        header += f"CONTRACT = {contract}\n"
    return header + BEHAVING


def write_distribution(
    site: Path,
    *,
    name: str,
    version: str,
    types: dict[str, str],
    modules: dict[str, str] | None = None,
) -> None:
    """Write distribution ``name`` ``version`` into ``site``: entry points ``types``
    (TYPE -> ``"module:OBJECT"``) in the gateway's group, and ``modules`` (name -> source)."""
    stem = re.sub(r"[-_.]+", "_", name)
    info = site / f"{stem}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = "".join(f"{type_name} = {value}\n" for type_name, value in types.items())
    (info / "entry_points.txt").write_text(f"[llm_gateway.providers]\n{lines}", encoding="utf-8")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
