"""Model names -> the deployments that may answer, in the order to try them.

A deployment is one upstream model of one provider (``<provider>/<model>``), with its own
circuit breaker and its count of requests in flight. A requested name is a model id, or an
alias naming one model id or several deployments with weights. For each request the router
picks one deployment by weight among those whose breaker lets requests through, preferring the
least busy (weighted least-connections: fewest in flight per unit of weight, ties drawn by
weight); the others follow as fallbacks, then the configured fallbacks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.errors import NotFound
from gateway.resilience import CircuitBreaker, RetryPolicy
from providers.base import Provider


@dataclass(frozen=True, slots=True)
class Policy:
    """A provider's deadlines (seconds; None: none) and retries."""

    first_token: float | None = 60.0
    idle: float | None = 60.0
    total: float | None = 600.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(eq=False, slots=True)
class Deployment:
    model_id: str
    provider: Provider
    upstream_model: str
    policy: Policy
    breaker: CircuitBreaker
    in_flight: int = 0
    guarded: bool = False  # a plugin's: each step runs apart, so ignoring cancellation cannot hold


@dataclass(frozen=True, slots=True)
class Target:
    deployment: Deployment
    weight: float = 1.0


class Router:
    def __init__(
        self,
        deployments: Sequence[Deployment],
        *,
        aliases: Mapping[str, Sequence[tuple[str, float]]] | None = None,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """``aliases``: name -> (model id, weight) pairs; ``fallbacks``: name -> names.

        Settings have checked that every name exists.
        """
        self.deployments = {d.model_id: d for d in deployments}
        self.model_ids = tuple(self.deployments)
        self._groups: dict[str, tuple[Target, ...]] = {
            model_id: (Target(d),) for model_id, d in self.deployments.items()
        }
        for alias, targets in (aliases or {}).items():
            group = tuple(Target(self.deployments[m], w) for m, w in targets)
            self._groups.setdefault(alias, group)
        self.aliases = tuple(aliases or ())
        self._fallbacks = {name: tuple(chain) for name, chain in (fallbacks or {}).items()}

    def group(self, model: str) -> tuple[Target, ...]:
        targets = self._groups.get(model)
        if targets is None:
            raise NotFound(
                f"The model '{_printable(model)}' does not exist or you do not have access to "
                "it. GET /v1/models lists the models this gateway serves.",
                param="model",
                code="model_not_found",
            )
        return targets

    def chain(self, model: str) -> tuple[Deployment, ...]:
        """The deployments to try for ``model``, in order; NotFound for an unknown name."""
        ordered = _ordered(self.group(model))
        seen = set(ordered)
        chain = list(ordered)
        fallbacks = self._fallbacks.get(model) or self._fallbacks.get(ordered[0].model_id, ())
        for name in fallbacks:
            for deployment in _ordered(self.group(name)):
                if deployment not in seen:
                    seen.add(deployment)
                    chain.append(deployment)
        return tuple(chain)


def _ordered(targets: tuple[Target, ...]) -> list[Deployment]:
    """The group's deployments, the one to try first picked as the module docstring says."""
    if len(targets) == 1:
        return [targets[0].deployment]
    ready = [t for t in targets if t.deployment.breaker.available()] or list(targets)
    best = min(t.deployment.in_flight / t.weight for t in ready)
    tied = [t for t in ready if t.deployment.in_flight / t.weight == best]
    first = random.choices(tied, weights=[t.weight for t in tied])[0]
    rest = sorted(
        (t for t in targets if t is not first),
        key=lambda t: (not t.deployment.breaker.available(), t.deployment.in_flight / t.weight),
    )
    return [first.deployment, *(t.deployment for t in rest)]


def _printable(value: str) -> str:
    """A model name safe to put in a message: bounded, no control characters."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in value[:200])
    return cleaned + ("…" if len(value) > 200 else "")
