"""``scripted``: a provider TYPE for llm-gateway that answers from a script, offline.

Configure it with ``GATEWAY_PROVIDERS__<NAME>__TYPE=scripted`` and
``GATEWAY_PROVIDERS__<NAME>__SCRIPT=<path of a JSON list of turns>``; see README.md.
"""

from providers.spec import ProviderType

from llm_gateway_scripted.provider import Options, ScriptedProvider
from llm_gateway_scripted.script import Script, ScriptedToolCall, Turn, load_script

SPEC = ProviderType(
    name="scripted",
    options=Options,
    create=ScriptedProvider,
    capabilities=frozenset({"chat", "tools", "reasoning"}),
    default_models=("scripted",),
)

__all__ = [
    "SPEC",
    "Options",
    "Script",
    "ScriptedProvider",
    "ScriptedToolCall",
    "Turn",
    "load_script",
]
