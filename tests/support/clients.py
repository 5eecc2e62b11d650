"""The openai SDK pointed at a gateway under test: no retries, so a test sees each answer."""

from __future__ import annotations

from typing import Any

import openai


def sdk(base_url: str, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, **kwargs)


def async_sdk(base_url: str, api_key: str = "unused", **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, **kwargs)
