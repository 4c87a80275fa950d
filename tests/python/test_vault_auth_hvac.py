"""Vault's auth methods and token endpoints through hvac, unchanged: an
AppRole login and a certificate login give tenant services Vern access
tokens that read their own environment and nothing else, hvac's
is_authenticated() and lookup_self() work, revoke_self() takes effect at
once, and every login and refusal is in the audit log."""

import base64
import datetime
import ipaddress

import hvac
import hvac.exceptions
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import VernServer

ROOT = {"X-Vault-Token": "py-root"}
SECRETS = ["secrets:read", "secrets:write", "secrets:delete"]


def create_client(url, headers=ROOT, verify=True, **spec):
    r = requests.post(url + "/v1/auth/clients", json=spec, headers=headers, verify=verify)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def service(tenant, name, **more):
    return {"tenant": tenant, "project": "web", "environment": "prod", "name": name, "scopes": SECRETS, **more}


def audit_records(url, root_headers=ROOT, verify=True):
    r = requests.get(url + "/v1/audit/records?limit=1000", headers=root_headers, verify=verify)
    assert r.status_code == 200, r.text
    return [rec["event"] for rec in r.json()["data"]["records"]]


def test_approle_login_and_the_token_endpoints(dev_server):
    acme = create_client(dev_server.url, **service("acme", "app"))
    globex = create_client(dev_server.url, **service("globex", "app"))
    root = hvac.Client(url=dev_server.url, token="py-root")
    root.secrets.kv.v2.create_or_update_secret(path="globex/web/prod/db", secret={"p": "globex"})

    client = hvac.Client(url=dev_server.url)
    assert not client.is_authenticated()
    login = client.auth.approle.login(role_id=acme["client_id"], secret_id=acme["client_secret"])
    auth = login["auth"]
    assert auth["policies"] == SECRETS
    assert auth["metadata"] == {
        "client_id": acme["client_id"],
        "tenant": "acme",
        "project": "web",
        "environment": "prod",
    }
    assert auth["renewable"] is False and auth["lease_duration"] == 300
    assert client.token == auth["client_token"]
    assert client.is_authenticated()

    me = client.auth.token.lookup_self()["data"]
    assert me["id"] == client.token
    assert me["accessor"] == auth["accessor"]
    assert me["meta"]["tenant"] == "acme"
    assert me["path"] == "auth/approle/login"
    assert 0 < me["ttl"] <= 300

    # Its own environment, and nothing of another tenant's.
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(path="acme/web/prod/db", secret={"p": "acme"})
    read = kv.read_secret_version(path="acme/web/prod/db", raise_on_deleted_version=True)
    assert read["data"]["data"] == {"p": "acme"}
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path="globex/web/prod/db", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        kv.create_or_update_secret(path="globex/web/prod/db", secret={"p": "taken"})
    other = hvac.Client(url=dev_server.url)
    other.auth.approle.login(role_id=globex["client_id"], secret_id=globex["client_secret"])
    assert other.secrets.kv.v2.read_secret_version(path="globex/web/prod/db", raise_on_deleted_version=True)[
        "data"
    ]["data"] == {"p": "globex"}

    # Vern tokens are not renewable: Vault's answer, and nothing changes.
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        client.auth.token.renew_self()
    assert "not renewable" in str(err.value)
    assert client.is_authenticated()

    # A wrong secret is Vault's refusal; a bad token is not authenticated.
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        hvac.Client(url=dev_server.url).auth.approle.login(role_id=acme["client_id"], secret_id="vern.cs.wrong")
    assert "invalid role or secret ID" in str(err.value)
    assert not hvac.Client(url=dev_server.url, token="not-a-token").is_authenticated()
    # One bit of the signature flipped: always another signature, where
    # rewriting its last characters can leave the same one (1 in 256).
    head, _, sig = client.token.rpartition(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    flipped = base64.urlsafe_b64encode(bytes([raw[0] ^ 1]) + raw[1:]).rstrip(b"=").decode()
    forged = hvac.Client(url=dev_server.url, token=f"{head}.{flipped}")
    assert forged.token != client.token
    assert not forged.is_authenticated()

    # The root token of init is authenticated too.
    assert root.is_authenticated()
    assert root.auth.token.lookup_self()["data"]["policies"] == ["root"]

    # revoke_self: refused everywhere at once.
    token = client.token
    client.auth.token.revoke_self()
    assert not hvac.Client(url=dev_server.url, token=token).is_authenticated()
    with pytest.raises(hvac.exceptions.Unauthorized):
        hvac.Client(url=dev_server.url, token=token).secrets.kv.v2.read_secret_version(
            path="acme/web/prod/db", raise_on_deleted_version=True
        )

    # A deleted client's secret_id no longer logs in.
    r = requests.delete(dev_server.url + "/v1/auth/clients/" + globex["client_id"], headers=ROOT)
    assert r.status_code in (200, 204), r.text
    with pytest.raises(hvac.exceptions.InvalidRequest):
        hvac.Client(url=dev_server.url).auth.approle.login(
            role_id=globex["client_id"], secret_id=globex["client_secret"]
        )
    assert not other.is_authenticated(), "its earlier token is refused at once"

    # Every login, refusal and token call is on record, secrets as HMACs.
    events = audit_records(dev_server.url)
    logins = [e for e in events if e["operation"] == "POST /v1/auth/approle/login"]
    assert [e["status"] for e in logins] == [200, 200, 400, 400]
    assert all(e["action"] == "token.issue" for e in logins)
    assert logins[0]["resource"] == "client:" + acme["client_id"]
    assert logins[3]["resource"] == "client:" + globex["client_id"]
    assert all(acme["client_secret"] not in str(e) for e in events)
    renew = [e for e in events if e["operation"] == "POST /v1/auth/token/renew-self"]
    assert renew and renew[0]["status"] == 400
    revoke = [e for e in events if e["operation"] == "POST /v1/auth/token/revoke-self"]
    assert revoke[0]["status"] == 204 and revoke[0]["action"] == "token.revoke-self"


def test_vault_kv_preflight_through_hvac(dev_server):
    app = create_client(dev_server.url, **service("acme", "app", scopes=["secrets:write"]))
    client = hvac.Client(url=dev_server.url)
    client.auth.approle.login(role_id=app["client_id"], secret_id=app["client_secret"])
    mount = client.adapter.get("/v1/sys/internal/ui/mounts/secret/acme/web/prod/db")["data"]
    assert (mount["type"], mount["options"]["version"], mount["path"]) == ("kv", "2", "secret/")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.adapter.get("/v1/sys/internal/ui/mounts/secret/globex/web/prod/db")
    mounts = client.sys.list_mounted_secrets_engines()
    assert mounts["data"]["secret/"]["options"]["version"] == "2"


# --- certificate login over mutual TLS ------------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, key, cert):
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


class Authority:
    """A throwaway CA issuing server and client certificates."""

    def __init__(self, directory):
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Vern test CA"))
            .issuer_name(_name("Vern test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = str(directory / "ca.pem")
        (directory / "ca.pem").write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, san, usage):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _write(self.dir / name, key, cert)


@pytest.fixture
def mtls_server(tmp_path):
    """A TLS server asking for client certificates of a fresh CA,
    initialised and unsealed: (server, https URL, CA, root headers)."""
    ca = Authority(tmp_path)
    crt, key = ca.issue(
        "server", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), ExtendedKeyUsageOID.SERVER_AUTH
    )
    server = VernServer(
        ["--tls-cert", crt, "--tls-key", key, "--tls-client-ca", ca.pem, "--data-dir", str(tmp_path / "data")]
    )
    url = f"https://{server.addr}"
    admin = hvac.Client(url=url, verify=ca.pem)
    result = admin.sys.initialize(secret_shares=1, secret_threshold=1)
    admin.sys.submit_unseal_keys(result["keys"])
    yield server, url, ca, {"X-Vault-Token": result["root_token"]}
    server.stop()


def test_cert_login_with_a_spiffe_svid(mtls_server):
    _, url, ca, root = mtls_server
    spiffe = "spiffe://acme.test/web/prod/worker"
    create_client(url, headers=root, verify=ca.pem, **service("acme", "worker", tls_client_auth_san=spiffe))
    worker = ca.issue("worker", x509.UniformResourceIdentifier(spiffe), ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = ca.issue(
        "stranger",
        x509.UniformResourceIdentifier("spiffe://acme.test/web/prod/stranger"),
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    # hvac sends the certificate with the login request (requests' cert=);
    # the token is bound to it, so the client presents it afterwards too.
    client = hvac.Client(url=url, verify=ca.pem, cert=worker)
    login = client.auth.cert.login(cert_pem=worker[0], key_pem=worker[1])
    assert login["auth"]["metadata"]["client_id"] == "svc.acme.web.prod.worker"
    assert client.is_authenticated()
    assert client.auth.token.lookup_self()["data"]["path"] == "auth/cert/login"
    kv = client.secrets.kv.v2
    kv.create_or_update_secret(path="acme/web/prod/tls", secret={"k": "v"})
    assert kv.read_secret_version(path="acme/web/prod/tls", raise_on_deleted_version=True)["data"]["data"] == {
        "k": "v"
    }
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path="globex/web/prod/tls", raise_on_deleted_version=True)

    # The same token without the certificate is refused.
    bare = hvac.Client(url=url, verify=ca.pem, token=client.token)
    assert not bare.is_authenticated()

    # A certificate naming no client, and no certificate at all, are
    # refused the way Vault refuses them.
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        hvac.Client(url=url, verify=ca.pem).auth.cert.login(cert_pem=stranger[0], key_pem=stranger[1])
    assert "invalid certificate" in str(err.value)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        hvac.Client(url=url, verify=ca.pem).adapter.login("/v1/auth/cert/login", json={})
    assert "invalid certificate" in str(err.value)

    events = audit_records(url, root_headers=root, verify=ca.pem)
    logins = [e for e in events if e["operation"] == "POST /v1/auth/cert/login"]
    assert [e["status"] for e in logins] == [200, 400, 400]
    assert logins[0]["resource"] == "client:svc.acme.web.prod.worker"
