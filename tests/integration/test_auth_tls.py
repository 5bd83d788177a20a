"""Bearer-token auth and TLS/mTLS on a real server (both off by default)."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rectune.v1 import policy_pb2, policy_pb2_grpc
from services.common.clients import ClientOptions, make_channel
from services.common.contracts import ADMIN_METHODS
from services.common.server import RunningService
from services.common.settings import ServerSettings
from tests.integration.standins import start_standins
from tests.rpc import error_of

pytestmark = pytest.mark.integration

TOKEN, ADMIN = "app-token", "tuner-token"


@pytest.fixture
def authed() -> Iterator[RunningService]:
    service, _ = start_standins(ServerSettings(port=0, auth_token=TOKEN, admin_token=ADMIN), ADMIN_METHODS)
    yield service
    service.stop(0)


def policy_stub(service: RunningService, token: str = "") -> policy_pb2_grpc.PolicyServiceStub:
    return policy_pb2_grpc.PolicyServiceStub(make_channel(f"127.0.0.1:{service.port}", ClientOptions(token=token)))


def test_missing_token_is_unauthenticated(authed) -> None:
    stub = policy_stub(authed)
    assert error_of(lambda: stub.Recommend(policy_pb2.RecommendRequest(k=1))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "authorization: missing bearer token (metadata 'authorization: Bearer <token>')",
    )


def test_wrong_token_is_unauthenticated(authed) -> None:
    stub = policy_stub(authed, "guess")
    assert error_of(lambda: stub.Recommend(policy_pb2.RecommendRequest(k=1))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "authorization: bearer token is not valid",
    )


def test_right_token_reaches_the_handler(authed) -> None:
    stub = policy_stub(authed, TOKEN)
    assert stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=1)).decision_id == "d1"


def test_admin_methods_need_the_admin_token(authed) -> None:
    request = policy_pb2.SetArmStateRequest(arm_id="a9")
    assert error_of(lambda: policy_stub(authed, TOKEN).SetArmState(request)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "/rectune.v1.PolicyService/SetArmState requires the admin token",
    )
    # The admin token gets through auth to the handler, which answers NOT_FOUND.
    assert error_of(lambda: policy_stub(authed, ADMIN).SetArmState(request)) == (
        grpc.StatusCode.NOT_FOUND,
        "arm_id: no arm 'a9'",
    )


def test_health_needs_no_token(authed) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{authed.port}") as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_auth_is_off_by_default() -> None:
    service, _ = start_standins(ServerSettings(port=0))
    try:
        assert policy_stub(service).Recommend(policy_pb2.RecommendRequest(user_id="u", k=1)).arm_id == "a1"
    finally:
        service.stop(0)


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed: {result.stderr}"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA, a server certificate for localhost and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rectune-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=folder,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.pem",
            cwd=folder,
        )
    return folder


def tls_settings(pki: Path, mutual: bool) -> ServerSettings:
    return ServerSettings(
        port=0,
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        tls_client_ca=str(pki / "ca.pem") if mutual else "",
    )


def test_tls_server_accepts_a_verifying_client_and_refuses_plaintext(certificates: Path) -> None:
    service, _ = start_standins(tls_settings(certificates, mutual=False))
    try:
        options = ClientOptions(ca_cert=str(certificates / "ca.pem"), deadline_seconds=5)
        stub = policy_pb2_grpc.PolicyServiceStub(make_channel(f"localhost:{service.port}", options))
        assert stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=1)).arm_id == "a1"
        plain = policy_stub(service)
        code, _ = error_of(lambda: plain.Recommend(policy_pb2.RecommendRequest(k=1), timeout=2))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        service.stop(0)


def test_mtls_server_requires_a_client_certificate(certificates: Path) -> None:
    service, _ = start_standins(tls_settings(certificates, mutual=True))
    try:
        address = f"localhost:{service.port}"
        anonymous = ClientOptions(ca_cert=str(certificates / "ca.pem"), deadline_seconds=2)
        stub = policy_pb2_grpc.PolicyServiceStub(make_channel(address, anonymous))
        code, _ = error_of(lambda: stub.Recommend(policy_pb2.RecommendRequest(k=1)))
        assert code == grpc.StatusCode.UNAVAILABLE
        identified = ClientOptions(
            ca_cert=str(certificates / "ca.pem"),
            client_cert=str(certificates / "client.pem"),
            client_key=str(certificates / "client.key"),
            deadline_seconds=5,
        )
        stub = policy_pb2_grpc.PolicyServiceStub(make_channel(address, identified))
        assert stub.Recommend(policy_pb2.RecommendRequest(user_id="u", k=1)).arm_id == "a1"
    finally:
        service.stop(0)


def test_health_port_answers_plaintext_without_token_while_the_main_port_needs_both(certificates: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        health_port = probe.getsockname()[1]
    settings = tls_settings(certificates, mutual=False)
    settings = dataclasses.replace(settings, auth_token=TOKEN, health_port=health_port)
    service, _ = start_standins(settings)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
            # Only health lives on that port.
            code, _ = error_of(
                lambda: policy_pb2_grpc.PolicyServiceStub(channel).Recommend(policy_pb2.RecommendRequest(k=1))
            )
            assert code == grpc.StatusCode.UNIMPLEMENTED
        plain = policy_stub(service, TOKEN)
        code, _ = error_of(lambda: plain.Recommend(policy_pb2.RecommendRequest(k=1), timeout=2))
        assert code == grpc.StatusCode.UNAVAILABLE
    finally:
        service.stop(0)
