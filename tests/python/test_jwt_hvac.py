"""The JWT auth method through hvac, unchanged: a test issuer (an RSA key
made here, signing RS256 tokens with pyjwt as a Kubernetes cluster signs
service-account tokens) serves its JWKS from a thread; Vern fetches it, and
hvac's jwt_login gets a token that reads its own environment's secrets and
nothing of another tenant's."""

import http.server
import json
import threading
import time

import hvac
import hvac.exceptions
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = {"X-Vault-Token": "py-root"}
ISSUER = "https://kubernetes.default.svc"
SUBJECT = "system:serviceaccount:web:api"


class Issuer:
    """An RSA signing key and an HTTP server publishing it as a JWKS."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "k8s-1"
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        body = json.dumps({"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self.http.server_address[1]}/openid/v1/jwks"

    def token(self, **overrides):
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": SUBJECT,
            "aud": ["vern"],
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "kubernetes.io": {"namespace": "web", "serviceaccount": {"name": "api"}},
            **overrides,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def stop(self):
        self.http.shutdown()


@pytest.fixture
def issuer():
    i = Issuer()
    yield i
    i.stop()


def create_service(server, tenant, name):
    body = {
        "tenant": tenant,
        "project": "web",
        "environment": "prod",
        "name": name,
        "scopes": ["secrets:read", "secrets:write"],
    }
    r = requests.post(server.url + "/v1/auth/clients", json=body, headers=ROOT)
    assert r.status_code == 200, r.text
    return r.json()["data"]["client_id"]


def test_hvac_jwt_login_reads_its_own_secrets_only(dev_server, issuer):
    root = hvac.Client(url=dev_server.url, token="py-root")
    acme = create_service(dev_server, "acme", "api")
    create_service(dev_server, "globex", "api")
    for tenant in ("acme", "globex"):
        root.secrets.kv.v2.create_or_update_secret(path=f"{tenant}/web/prod/db", secret={"pw": tenant})
    role = {
        "client_id": acme,
        "bound_issuer": ISSUER,
        "jwks_url": issuer.jwks_url,
        "bound_audiences": ["vern"],
        "bound_subject": SUBJECT,
        "bound_claims": {"/kubernetes.io/namespace": "web"},
        "jwt_supported_algs": ["RS256"],
    }
    r = requests.post(dev_server.url + "/v1/auth/jwt/role/k8s-web", json=role, headers=ROOT)
    assert r.status_code == 200, r.text
    assert root.auth.jwt.read_role("k8s-web")["data"]["client_id"] == acme
    assert root.auth.jwt.list_roles()["data"]["keys"] == ["k8s-web"]

    client = hvac.Client(url=dev_server.url)
    login = client.auth.jwt.jwt_login(role="k8s-web", jwt=issuer.token())
    assert login["auth"]["client_token"] == client.token
    assert login["auth"]["metadata"]["tenant"] == "acme"
    assert login["auth"]["lease_duration"] == 300
    assert client.is_authenticated()

    got = client.secrets.kv.v2.read_secret_version(path="acme/web/prod/db", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"pw": "acme"}
    client.secrets.kv.v2.create_or_update_secret(path="acme/web/prod/app", secret={"k": "v"})
    # Another tenant's secret: not found, as if it did not exist; no write.
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(path="globex/web/prod/db", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(path="globex/web/prod/db", secret={"pw": "x"})


def test_hvac_jwt_login_refuses_wrong_tokens(dev_server, issuer):
    acme = create_service(dev_server, "acme", "api")
    role = {
        "client_id": acme,
        "bound_issuer": ISSUER,
        "jwks_url": issuer.jwks_url,
        "bound_audiences": "vern",
        "bound_subject": SUBJECT,
    }
    r = requests.post(dev_server.url + "/v1/auth/jwt/role/k8s-web", json=role, headers=ROOT)
    assert r.status_code == 200, r.text
    other = Issuer()
    try:
        forged = jwt.encode(
            {"iss": ISSUER, "sub": SUBJECT, "aud": "vern", "exp": int(time.time()) + 600},
            other.key,
            algorithm="RS256",
            headers={"kid": issuer.kid},
        )
    finally:
        other.stop()
    cases = {
        "issuer": issuer.token(iss="https://evil.example"),
        "audience": issuer.token(aud="vault"),
        "subject": issuer.token(sub="system:serviceaccount:web:db"),
        "expired": issuer.token(exp=int(time.time()) - 3600),
        "signature": forged,
    }
    client = hvac.Client(url=dev_server.url)
    for name, token in cases.items():
        with pytest.raises(hvac.exceptions.InvalidRequest) as err:
            client.auth.jwt.jwt_login(role="k8s-web", jwt=token)
        assert name in str(err.value), (name, str(err.value))
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.auth.jwt.jwt_login(role="no-such-role", jwt=issuer.token())
