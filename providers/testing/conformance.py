"""Checks a provider's own tests can run: the contract every built-in provider keeps.

All are coroutines with bounded waits; a broken rule is an ``AssertionError`` saying which::

    async with open_provider(SPEC, {"script": str(path)}) as provider:
        summary = await check_provider(provider, chat_request("hello"))
        assert summary.text == "Hi!"
        await check_aclose(provider, chat_request("hello"))
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import types
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

from providers.base import ChatRequest, Chunk, Provider
from providers.errors import ProviderError
from providers.http1 import PoolTransport
from providers.registry import spec_problem
from providers.spec import ProviderContext, ProviderType
from providers.testing.grammar import StreamSummary, check_stream

T = TypeVar("T")
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def chat_request(
    text: str = "Hello", *, model: str = "model", stream: bool = True, **body: Any
) -> ChatRequest:
    """A request whose one message is the user's ``text``; ``body`` adds or replaces fields
    (``messages=[...]``, ``tools=[...]``, ``max_tokens=5``)."""
    full: dict[str, Any] = {"messages": [{"role": "user", "content": text}], **body}
    return ChatRequest(model=model, body=full, stream=stream)


def check_spec(spec: object, name: str | None = None) -> None:
    """``spec`` is a TYPE this gateway would load under ``name`` (default: its own name):
    a :class:`ProviderType` of the current contract, a lower-case name, and an options model
    that refuses unknown variables."""
    assert isinstance(spec, ProviderType), f"the spec is a {type(spec).__name__}"
    problem = spec_problem(spec, name or spec.name)
    assert not problem, problem
    assert _TYPE_NAME.fullmatch(spec.name), f"TYPE {spec.name!r} is not [a-z][a-z0-9_-]*"
    extra = spec.options.model_config.get("extra")
    assert extra == "forbid", f"the options model must refuse unknown variables (extra={extra!r})"
    assert isinstance(spec.capabilities, frozenset), "capabilities is not a frozenset"
    assert all(isinstance(c, str) for c in spec.capabilities), "a capability is not a str"


@contextlib.asynccontextmanager
async def open_provider(
    spec: ProviderType,
    options: Mapping[str, Any] | None = None,
    *,
    name: str = "test",
    models: tuple[str, ...] | None = None,
) -> AsyncIterator[Provider]:
    """A provider of ``spec`` made as the gateway makes it: ``options`` validated by the
    TYPE's options model, a context with a fresh gateway transport; both closed on exit.

    Values are given as Python values; the gateway also decodes list and object variables
    from their JSON text in an env file before validating.
    """
    validated = spec.options.model_validate(dict(options or {}))
    transport = PoolTransport()
    context = ProviderContext(
        name=name,
        models=models or spec.default_models or ("model",),
        transport=transport,
        connect_timeout=5.0,
        pool_timeout=5.0,
    )
    try:
        provider = spec.create(context, validated)
        try:
            yield provider
        finally:
            await provider.aclose()
    finally:
        await transport.aclose()


async def collect(provider: Provider, request: ChatRequest, *, within: float = 10.0) -> list[Chunk]:
    """Every chunk of ``provider.stream(request)``; each must be a :class:`Chunk`, and the
    stream must end within ``within`` seconds. A provider error propagates as it is."""
    stream = _open(provider, request)
    chunks: list[Chunk] = []

    async def drain() -> None:
        async for item in stream:
            assert isinstance(item, Chunk), (
                f"item {len(chunks)} of the stream is a {type(item).__name__}, not a Chunk"
            )
            chunks.append(item)

    try:
        await _bounded(drain(), within, f"the stream did not end within {within} s")
    finally:
        await _bounded(stream.aclose(), within, "aclose() did not return")
    return chunks


async def check_provider(
    provider: Provider,
    request: ChatRequest,
    *,
    within: float = 10.0,
    require_usage: bool = False,
) -> StreamSummary:
    """Stream ``request`` to its end and check the stream's grammar (:func:`check_stream`);
    return what it said."""
    chunks = await collect(provider, request, within=within)
    return check_stream(chunks, require_usage=require_usage)


async def expect_provider_error(
    provider: Provider, request: ChatRequest, *, within: float = 10.0
) -> ProviderError:
    """Stream ``request``, which must fail with a :class:`~providers.errors.ProviderError`
    (anything else is a bug the gateway can only report as ``provider_failed``); return it."""
    try:
        chunks = await collect(provider, request, within=within)
    except ProviderError as exc:
        return exc
    except AssertionError:
        raise
    except Exception as exc:
        raise AssertionError(
            f"the stream raised {type(exc).__name__}, not a providers.errors.ProviderError"
        ) from exc
    raise AssertionError(f"the stream ended without an error, after {len(chunks)} chunks")


async def check_aclose(
    provider: Provider, request: ChatRequest, *, after: int = 1, within: float = 5.0
) -> None:
    """Read ``after`` chunks, then close the stream as the gateway does when it stops
    reading: ``aclose()`` must return within ``within`` seconds and leave the generator finished
    (its ``finally`` blocks ran, its connection went back). Use a request whose answer has
    more than ``after`` chunks."""
    stream = _open(provider, request)
    for n in range(after):
        try:
            item = await _bounded(
                stream.__anext__(), within, f"chunk {n} did not come within {within} s"
            )
        except StopAsyncIteration:
            raise AssertionError(
                f"the stream ended after {n} chunks; use a request with a longer answer"
            ) from None
        assert isinstance(item, Chunk), f"item {n} is a {type(item).__name__}, not a Chunk"
    try:
        await _bounded(stream.aclose(), within, f"aclose() did not return within {within} s")
    except RuntimeError as exc:  # "async generator ignored GeneratorExit"
        raise AssertionError(f"the stream would not close: {exc}") from exc
    if isinstance(stream, types.AsyncGeneratorType):
        assert stream.ag_frame is None, "the stream is still suspended after aclose()"


async def check_cancellation(
    provider: Provider, request: ChatRequest, *, after: int = 1, within: float = 5.0
) -> None:
    """Read ``after`` chunks in a task, then cancel the task while it waits for the next one,
    as the gateway does when the client leaves or a timeout passes: the stream must end with
    ``CancelledError`` within ``within`` seconds, neither swallowing it nor hanging. Use a request
    whose next chunk takes a while (a :class:`~providers.testing.Pause` in the stand-in's
    reply, a slow scripted turn)."""
    stream = _open(provider, request)
    reached = asyncio.Event()

    async def read() -> int:
        count = 0
        async for _ in stream:
            count += 1
            if count >= after:
                reached.set()
        return count

    task = asyncio.get_running_loop().create_task(read())
    try:
        waiter = asyncio.ensure_future(reached.wait())
        await asyncio.wait({task, waiter}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # a provider error or an AssertionError: let the test see it
            raise AssertionError(
                f"the stream ended after {task.result()} chunks, before it could be "
                "cancelled; use a request whose next chunk takes a while"
            )
        assert reached.is_set(), f"{after} chunks did not come within {within} s"
        await asyncio.sleep(0.01)  # let the task get to its wait for the next chunk
        task.cancel()
        await asyncio.wait({task}, timeout=within)
        assert task.done(), (
            f"the stream did not end within {within} s of its cancellation "
            "(it catches CancelledError and goes on waiting)"
        )
        if not task.cancelled():
            error = task.exception()
            assert error is None, (
                f"the cancelled stream raised {type(error).__name__} instead of CancelledError"
            )
            raise AssertionError("the stream swallowed CancelledError and ended normally")
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(stream.aclose(), within)


def _open(provider: Provider, request: ChatRequest) -> AsyncGenerator[Chunk, None]:
    stream = provider.stream(request)
    assert isinstance(stream, AsyncGenerator), (
        f"stream() returned a {type(stream).__name__}, not an async generator"
    )
    return stream


async def _bounded(awaitable: Awaitable[T], within: float, message: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, within)
    except TimeoutError:
        raise AssertionError(message) from None
