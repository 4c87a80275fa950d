"""`vern agent` with the SPIFFE project's own Python client: the `spiffe`
package's `WorkloadApiClient`, unchanged, fetches an X.509-SVID, the
bundles and a JWT-SVID from the agent's socket, has the agent validate
the JWT-SVID, and sees a renewed SVID arrive on the stream before the
first one expires. A raw gRPC call without the `workload.spiffe.io`
header is refused with INVALID_ARGUMENT, as the specification requires."""

import os
import subprocess
import threading
import time

import grpc
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from spiffe import WorkloadApiClient

from conftest import _vern_bin

ROOT = {"X-Vault-Token": "py-root"}
API_ID = "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"


class Agent:
    """`vern agent` for node `name`, serving on `socket`."""

    def __init__(self, url, socket, client_id, secret_file):
        self.proc = subprocess.Popen(
            [
                _vern_bin(), "agent", "--log-format", "json", "--address", url,
                "--socket", f"unix://{socket}", "--client-id", client_id,
                "--client-secret-file", str(secret_file), "--refresh", "1s",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                if "Agent is listening." in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("vern agent did not start:\n" + "".join(self.log))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def agent(dev_server, tmp_path):
    """A node with an entry giving this process's uid the api service's
    SVIDs, which live 8 seconds, and its agent; yields the socket."""
    r = requests.post(dev_server.url + "/v1/auth/clients", json={"name": "py", "node": True}, headers=ROOT)
    assert r.status_code == 200, r.text
    node = r.json()["data"]
    secret = tmp_path / "node.secret"
    secret.write_text(node["client_secret"])
    r = requests.post(
        dev_server.url + "/v1/pki/workloads",
        json={
            "node": node["client_id"],
            "selectors": [f"unix:uid:{os.getuid()}"],
            "service": "svc.acme.web.prod.api",
            "ttl": "8s",
        },
        headers=ROOT,
    )
    assert r.status_code == 200, r.text
    socket = tmp_path / "agent.sock"
    running = Agent(dev_server.url, socket, node["client_id"], secret)
    yield socket
    running.stop()


def test_the_spiffe_client_fetches_and_validates_svids(agent):
    client = WorkloadApiClient(f"unix://{agent}")
    try:
        svid = client.fetch_x509_svid()
        assert str(svid.spiffe_id) == API_ID
        leaf = svid.leaf
        assert leaf.not_valid_after_utc.timestamp() - time.time() <= 8
        key_der = svid.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        assert key_der

        bundles = client.fetch_x509_bundles()
        bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert bundle is not None and bundle.x509_authorities
        # The SVID's chain ends at one of the bundle's roots.
        roots = {c.subject for c in bundle.x509_authorities}
        assert svid.cert_chain[-1].issuer in roots

        jwt_svid = client.fetch_jwt_svid(audience={"db"})
        assert str(jwt_svid.spiffe_id) == API_ID
        validated = client.validate_jwt_svid(jwt_svid.token, "db")
        assert str(validated.spiffe_id) == API_ID
        with pytest.raises(Exception):
            client.validate_jwt_svid(jwt_svid.token, "another-audience")

        jwt_bundles = client.fetch_jwt_bundles()
        jwt_bundle = jwt_bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        assert jwt_bundle is not None and jwt_bundle.jwt_authorities
    finally:
        client.close()


def test_a_renewed_svid_arrives_on_the_stream_before_the_first_expires(agent):
    client = WorkloadApiClient(f"unix://{agent}")
    seen = []
    errors = []
    arrived = threading.Condition()

    def on_success(context):
        with arrived:
            seen.append((time.time(), context.default_svid))
            arrived.notify_all()

    def on_error(err):
        errors.append(err)

    handle = client.stream_x509_contexts(on_success, on_error)
    try:
        with arrived:
            assert arrived.wait_for(lambda: len(seen) >= 2, timeout=30), errors
        first_at, first = seen[0]
        second_at, second = seen[1]
        first_expiry = first.leaf.not_valid_after_utc.timestamp()
        assert second_at < first_expiry
        assert second.leaf.serial_number != first.leaf.serial_number
        assert str(second.spiffe_id) == API_ID
        assert second.leaf.not_valid_after_utc.timestamp() > first_expiry
    finally:
        handle.cancel()
        client.close()


def test_calls_without_the_security_header_are_refused(agent):
    channel = grpc.insecure_channel(f"unix://{agent}")
    try:
        fetch = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=lambda _: b"",
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(fetch(None, timeout=10)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # With the header the same call is answered.
        answered = next(iter(fetch(None, timeout=10, metadata=[("workload.spiffe.io", "true")])))
        assert answered
    finally:
        channel.close()
