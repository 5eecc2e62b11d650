"""Teams: virtual keys with model lists, rate limits and budgets, and the usage ledger.

``keys`` (secrets, digests, the key record), ``store`` and ``postgres`` (where keys and usage
live), ``prices`` (cost of a request), ``limits`` (the in-process limiter; ``_counters``, a C
extension built when a compiler is there, decides its common case), ``redis_limits`` (the
shared one), ``ledger`` (one row per request, written in batches; ``_rows``, a C extension
too, makes the row), ``admission`` (what the middleware and the surfaces call). See
docs/teams.md.
"""
