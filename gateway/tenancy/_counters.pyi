# The compiled counters (_counters.c). Its KeyState and Budget have the fields of the Python
# classes in limits.py and are used in their place, so they are typed as them.
from collections.abc import Callable

from gateway.observe import Call
from gateway.tenancy.limits import Budget as Budget
from gateway.tenancy.limits import KeyState as KeyState
from gateway.tenancy.prices import Rate
from providers.base import Usage

class Plan:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        max_parallel: int | None,
        budget_micro_usd: int | None,
        budget_tokens: int | None,
        reserve_max: int,
        caps_output: bool,
        rpm_line: bytes | None,
        tpm_line: bytes | None,
        estimated: Callable[[int, int], Usage],
        cost_of: Callable[[Call], tuple[int, bool]],
        clock: Callable[[], float],
    ) -> None: ...

class Ticket:
    tokens: int
    tokens_in: int
    tokens_out: int
    micro_usd: int
    settled: bool
    def settle(self, call: Call) -> None: ...

def admit(
    plan: Plan,
    state: KeyState,
    budget: Budget | None,
    call: Call,
    tokens_in: int,
    output_cap: int | None,
    choices: int,
    cap_output: Callable[[int], None] | None,
    now: float,
    next_sweep: float,
    rate: Rate | None,
) -> Ticket | None: ...
