"""The compiled parts: a virtual key's counters (gateway/tenancy/_counters.c) and the usage
ledger's rows (gateway/tenancy/_rows.c).

Optional: where they cannot be built (no C compiler), the install goes on and the gateway runs
the same code in Python (gateway/tenancy/limits.py and admission.py, usage_row in ledger.py:
the references). Everything else about the package is in pyproject.toml.
"""

import sys

from setuptools import Extension, setup

# A fused multiply-add rounds differently from Python's float arithmetic, which the compiled
# admission must repeat exactly; MSVC does not contract by default.
_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off", "-O2"]

setup(
    ext_modules=[
        Extension(
            f"gateway.tenancy.{name}",
            [f"gateway/tenancy/{name}.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
        for name in ("_counters", "_rows")
    ]
)
