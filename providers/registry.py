"""Provider TYPE -> its spec. Built-in types are entries of this table.

The gateway validates a provider block's type-specific variables with the TYPE's ``options``
model (unknown variables refused) and calls ``create(context, options)``; a type from another
package joins the table the same way.
"""

from __future__ import annotations

from providers import echo, openai_compat
from providers.spec import ProviderType

BUILTIN_TYPES: dict[str, ProviderType] = {
    spec.name: spec for spec in (echo.SPEC, openai_compat.SPEC)
}


def provider_type(name: str) -> ProviderType:
    """The TYPE called ``name``; KeyError naming the known ones if there is none."""
    try:
        return BUILTIN_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(BUILTIN_TYPES))
        raise KeyError(f"unknown provider type {name!r} (known: {known})") from None
