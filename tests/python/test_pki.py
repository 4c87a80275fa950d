"""The CA with independent clients: Python's own TLS (the standard `ssl`
module, OpenSSL underneath) completes mutual TLS between a client and a
server that each hold an X.509-SVID from Vern and check the peer's SPIFFE
ID; a certificate from another trust domain (a second Vern) fails the
handshake; a JWT-SVID validates with PyJWT against the SPIFFE bundle."""

import base64
import socket
import ssl
import threading

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import VernServer

ROOT = {"X-Vault-Token": "py-root"}


@pytest.fixture
def other_domain(tmp_path):
    """A second Vern, of trust domain other.example."""
    data = tmp_path / "other"
    server = VernServer(
        ["--dev", "--dev-root-token", "py-root", "--data-dir", str(data), "--trust-domain", "other.example"]
    )
    yield server
    server.stop()


def service_token(url, name, tenant="acme"):
    spec = {"tenant": tenant, "project": "web", "environment": "prod", "name": name}
    r = requests.post(url + "/v1/auth/clients", json=spec, headers=ROOT)
    assert r.status_code == 200, r.text
    created = r.json()["data"]
    r = requests.post(
        url + "/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(created["client_id"], created["client_secret"]),
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def svid(url, token, directory, name, spiffe_id=None):
    """An X.509-SVID for a key made here: writes NAME.pem (leaf and chain)
    and NAME.key, and returns the answer."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    if spiffe_id:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()
    r = requests.post(url + "/v1/pki/svid", json={"csr": csr}, headers={"X-Vault-Token": token})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    (directory / f"{name}.pem").write_text(data["certificate"] + "".join(data["chain"]))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return data


def spiffe_id_of(der):
    cert = x509.load_der_x509_certificate(der)
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    )
    assert len(uris) == 1, uris
    return uris[0]


def context(purpose, directory, name, ca_file):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
    # SPIFFE authenticates the peer by its SPIFFE ID, not a host name.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca_file))
    ctx.load_cert_chain(str(directory / f"{name}.pem"), str(directory / f"{name}.key"))
    return ctx


def serve_once(ctx, expect_client):
    """A TLS server on loopback answering one connection with the client's
    SPIFFE ID; returns its port and what it saw."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen = {}

    def run():
        with listener:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = spiffe_id_of(tls.getpeercert(binary_form=True))
                    seen["peer"] = peer
                    if peer != expect_client:
                        seen["refused"] = True
                        return
                    tls.sendall(f"hello {peer}".encode())
            except (ssl.SSLError, OSError) as e:
                seen["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], seen, thread


def connect(ctx, port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as tls:
            server_id = spiffe_id_of(tls.getpeercert(binary_form=True))
            return server_id, tls.recv(1024).decode()


def test_mutual_tls_between_two_svids(dev_server, other_domain, tmp_path):
    url = dev_server.url
    api_id = "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
    web_id = "spiffe://vern.internal/t/acme/p/web/e/prod/s/web"
    api = svid(url, service_token(url, "api"), tmp_path, "api", api_id)
    assert api["spiffe_id"] == api_id
    web = svid(url, service_token(url, "web"), tmp_path, "web")
    assert web["spiffe_id"] == web_id
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(requests.get(url + "/v1/pki/ca.pem").text)
    # Every certificate of the chain is strict DER that cryptography's
    # parser reads to the last extension; the leaf is an SVID.
    for pem in [api["certificate"], *api["chain"], ca_file.read_text()]:
        cert = x509.load_pem_x509_certificate(pem.encode())
        assert [e.oid for e in cert.extensions]
    leaf = x509.load_pem_x509_certificate(api["certificate"].encode())
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).critical
    assert leaf.serial_number.bit_length() > 128

    port, seen, thread = serve_once(context("server", tmp_path, "api", ca_file), web_id)
    server_id, reply = connect(context("client", tmp_path, "web", ca_file), port)
    thread.join(10)
    assert server_id == api_id
    assert reply == f"hello {web_id}"
    assert seen["peer"] == web_id

    # A client whose SVID comes from another trust domain: the server
    # refuses the handshake.
    other = svid(other_domain.url, service_token(other_domain.url, "web"), tmp_path, "intruder")
    assert other["spiffe_id"] == "spiffe://other.example/t/acme/p/web/e/prod/s/web"
    port, seen, thread = serve_once(context("server", tmp_path, "api", ca_file), web_id)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect(context("client", tmp_path, "intruder", ca_file), port)
    thread.join(10)
    assert "peer" not in seen and isinstance(seen.get("error"), ssl.SSLError)

    # And a client trusting only the other domain refuses Vern's server.
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(requests.get(other_domain.url + "/v1/pki/ca.pem").text)
    port, seen, thread = serve_once(context("server", tmp_path, "api", ca_file), web_id)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(context("client", tmp_path, "intruder", other_ca), port)
    thread.join(10)


def test_jwt_svid_validates_against_the_bundle(dev_server):
    url = dev_server.url
    token = service_token(url, "api")
    r = requests.post(url + "/v1/pki/jwt-svid", json={"audience": "payments"}, headers={"X-Vault-Token": token})
    assert r.status_code == 200, r.text
    svid = r.json()["data"]["token"]
    bundle = requests.get(url + "/v1/pki/bundle").json()
    assert bundle["spiffe_sequence"] >= 1 and bundle["spiffe_refresh_hint"] > 0
    header = jwt.get_unverified_header(svid)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    jwks = {k["kid"]: k for k in bundle["keys"] if k["use"] == "jwt-svid"}
    key = jwt.PyJWK(jwks[header["kid"]])
    claims = jwt.decode(svid, key=key.key, algorithms=["ES256"], audience="payments")
    assert claims["sub"] == "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
    assert claims["exp"] > claims["iat"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(svid, key=key.key, algorithms=["ES256"], audience="ledger")
    # The x509-svid entry carries the trust anchor that ca.pem holds.
    anchors = [k for k in bundle["keys"] if k["use"] == "x509-svid"]
    assert len(anchors) == 1
    der = base64.b64decode(anchors[0]["x5c"][0])
    pem = requests.get(url + "/v1/pki/ca.pem").text
    assert x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER) == der
