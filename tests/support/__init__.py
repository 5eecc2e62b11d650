"""Test support: real servers in threads/subprocesses, a misbehaving OpenAI upstream, and
validation against the official OpenAI OpenAPI spec.

* :mod:`tests.support.servers` - ``serve_in_thread``, ``spawn``/``ProcessServer``, ``free_port``
* :mod:`tests.support.fault_upstream` - ``FaultUpstream``, ``serve_fault_upstream``
* :mod:`tests.support.records` - what a server saw: ``RecordedRequest``, ``Disconnect``
* :mod:`tests.support.sse_frames` - chunk payloads, SSE framings, a reference ``parse_sse``
* :mod:`tests.support.openapi_spec` - ``validate(schema_name, instance)``
"""
