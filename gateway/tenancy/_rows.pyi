# The compiled ledger row (_rows.c): usage_row in ledger.py, with its own ids.
from collections.abc import Callable

from gateway.observe import Call
from gateway.tenancy.store import UsageValues
from providers.base import Usage

class RowMaker:
    def __init__(
        self,
        prefix: str,
        cost_of: Callable[[Call], tuple[int, bool]],
        day_of: Callable[[int], str],
        no_usage: Usage,
    ) -> None: ...
    def __call__(self, call: Call, now: float, end: float) -> UsageValues: ...
