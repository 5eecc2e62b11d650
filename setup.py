"""The one compiled part: a virtual key's counters (gateway/tenancy/_counters.c).

Optional: where it cannot be built (no C compiler), the install goes on and the gateway runs
the same limits in Python (gateway/tenancy/limits.py, the reference). Everything else about
the package is in pyproject.toml.
"""

import sys

from setuptools import Extension, setup

# A fused multiply-add rounds differently from Python's float arithmetic, which the compiled
# admission must repeat exactly; MSVC does not contract by default.
_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off", "-O2"]

setup(
    ext_modules=[
        Extension(
            "gateway.tenancy._counters",
            ["gateway/tenancy/_counters.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
    ]
)
