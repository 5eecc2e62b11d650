"""What a request costs: ``GATEWAY_PRICES`` (USD per million tokens) as integer micro-USD.

Money is integers, never floats: a rate is micro-USD per million tokens, a cost is rounded up
to a whole micro-USD once per request, and sums over the ledger are exact. OpenAI's
``prompt_tokens`` include the cached ones, so only the rest pay the input rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.settings import ModelPrice
from providers.base import Usage

MICRO = 1_000_000
_UNKNOWN = object()
_KNOWN_PAIRS = 1024


@dataclass(frozen=True, slots=True)
class Rate:
    """Micro-USD per million tokens."""

    input: int
    output: int
    cached: int

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        total = input_tokens * self.input + output_tokens * self.output
        if cached_tokens:  # at most the input: they are part of it
            cached = cached_tokens if cached_tokens < input_tokens else input_tokens
            total -= cached * (self.input - self.cached)
        return -(-total // MICRO)  # ceiling, in integers

    def bound(self, other: Rate) -> Rate:
        """The larger of two rates, field by field (a reservation's price over fallbacks)."""
        return Rate(
            max(self.input, other.input),
            max(self.output, other.output),
            max(self.cached, other.cached),
        )


class Prices:
    """Rates by model id (``provider/model``), upstream model name or alias, as configured."""

    def __init__(self, table: Mapping[str, ModelPrice]) -> None:
        self.rates = {
            name: Rate(
                round(p.input * MICRO),
                round(p.output * MICRO),
                round((p.input if p.cached_input is None else p.cached_input) * MICRO),
            )
            for name, p in table.items()
        }
        self._known: dict[tuple[str | None, str | None], Rate | object | None] = {}

    def rate_of(self, deployment: str | None, model: str | None) -> Rate | None:
        """The rate of a request: by the model id that answered (``provider/model``), its
        upstream model, then the name the client asked for; remembered per pair (twice per
        request: settlement and the ledger)."""
        pair = (deployment, model)
        found = self._known.get(pair, _UNKNOWN)
        if found is _UNKNOWN:
            upstream = deployment.split("/", 1)[-1] if deployment else None
            found = self.rate((deployment, upstream, model))
            if len(self._known) >= _KNOWN_PAIRS:  # names come from clients: bounded
                self._known.clear()
            self._known[pair] = found
        return found if isinstance(found, Rate) else None

    def rate(self, names: Iterable[str | None]) -> Rate | None:
        """The rate of the first of ``names`` that has one (None: unpriced)."""
        for name in names:
            if name is not None:
                found = self.rates.get(name)
                if found is not None:
                    return found
        return None

    def cost(self, names: Iterable[str | None], usage: Usage) -> tuple[int, bool]:
        """Micro-USD for ``usage`` and whether a price was found (False: cost 0)."""
        rate = self.rate(names)
        if rate is None:
            return 0, False
        return rate.cost(usage.input_tokens, usage.output_tokens, usage.cached_tokens), True
