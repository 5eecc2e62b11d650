"""An https upstream: certificates are verified, and a private CA can be trusted by config."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import GatewayFactory, post_chat
from tests.support.clients import sdk
from tests.support.fault_upstream import FaultUpstream
from tests.support.servers import serve_in_thread

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "over tls"}]

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=llm-gateway test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )
    return d


@pytest.fixture(scope="module")
def tls_upstream(pki: Path) -> Iterator[str]:
    app = FaultUpstream()
    with serve_in_thread(
        app, ssl_certfile=str(pki / "server.pem"), ssl_keyfile=str(pki / "server.key")
    ) as url:
        yield url.replace("http://", "https://") + "/v1"


def test_a_trusted_private_ca_serves_streams_and_whole_answers(
    make_gateway: GatewayFactory, tls_upstream: str, pki: Path
) -> None:
    url = make_gateway(
        providers={
            "secure": {
                "type": "openai",
                "base_url": tls_upstream,
                "models": ["ok"],
                "ca_bundle": str(pki / "ca.pem"),
            }
        }
    )
    client = sdk(url)
    whole = client.chat.completions.create(model="secure/ok", messages=USER)
    assert whole.choices[0].message.content == "over tls"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="secure/ok", messages=USER, stream=True)
        if c.choices
    )
    assert streamed == "over tls"


def test_an_untrusted_certificate_is_refused(
    make_gateway: GatewayFactory, tls_upstream: str
) -> None:
    url = make_gateway(
        providers={
            "secure": {
                "type": "openai",
                "base_url": tls_upstream,
                "models": ["ok"],
                "max_retries": 0,
            }
        }
    )
    response = post_chat(url, {"model": "secure/ok", "messages": USER})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_unavailable"
