"""Artifact trust through the independent in-toto (3.x) and securesystemslib
packages, unchanged: they verify Vern's DSSE envelopes (Ed25519 and, with
`--attest-key-type ecdsa-p256`, securesystemslib's `ecdsa-sha2-nistp256`)
with the key Vern publishes, and `vern attest verify` verifies envelopes
they sign. A promotion gate is then weighed over plain HTTP."""

import base64
import hashlib
import json
import os
import subprocess

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from in_toto.models.metadata import Envelope as InTotoEnvelope
from in_toto.models.metadata import Metadata, SignatureVerificationError
from jwcrypto.jwk import JWK
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from conftest import VernServer

ROOT = {"X-Vault-Token": "py-root"}
SLSA = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


def service_token(server, name, scopes):
    body = {"tenant": "acme", "project": "web", "environment": "prod", "name": name, "scopes": scopes}
    r = requests.post(server.url + "/v1/auth/clients", json=body, headers=ROOT)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    t = requests.post(
        server.url + "/oauth2/token",
        auth=(data["client_id"], data["client_secret"]),
        data={"grant_type": "client_credentials"},
    )
    assert t.status_code == 200, t.text
    return t.json()["access_token"]


def digest(data):
    return hashlib.sha256(data).hexdigest()


def vern_signed(server, subject_hex):
    token = service_token(server, "builder", ["attest:sign"])
    r = requests.post(
        server.url + "/v1/attest/sign",
        headers={"X-Vault-Token": token},
        json={
            "subject": f"registry.example/acme/web@sha256:{subject_hex}",
            "predicate_type": SLSA,
            "predicate": {"buildDefinition": {"buildType": "https://example.com/ci/v1"}},
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def published_key(server, kid):
    pem = requests.get(server.url + "/v1/attest/keys", params={"tenant": "acme", "format": "pem"})
    assert pem.status_code == 200
    public = serialization.load_pem_public_key(pem.text.encode())
    return SSlibKey.from_crypto(public, keyid=kid)


@pytest.fixture(params=["ed25519", "ecdsa-p256"])
def attest_server(request, tmp_path):
    """A dev server whose artifact signing keys are of each algorithm."""
    server = VernServer(
        [
            "--dev",
            "--dev-root-token",
            "py-root",
            "--data-dir",
            str(tmp_path),
            "--attest-key-type",
            request.param,
        ]
    )
    server.key_type = request.param
    yield server
    server.stop()


def test_securesystemslib_and_in_toto_verify_vern_envelopes(attest_server):
    subject = digest(b"an artifact")
    signed = vern_signed(attest_server, subject)
    key = published_key(attest_server, signed["kid"])
    expected = {"ed25519": ("ed25519", "ed25519"), "ecdsa-p256": ("ecdsa", "ecdsa-sha2-nistp256")}
    assert (key.keytype, key.scheme) == expected[attest_server.key_type]

    def envelope():
        # A fresh copy each time: from_dict consumes the dict it is given.
        return json.loads(signed["envelope"])

    # securesystemslib's DSSE verification with the published key.
    verified = SslibEnvelope.from_dict(envelope()).verify([key], 1)
    assert list(verified) == [signed["kid"]]

    # in-toto reads it as its own metadata and verifies it the same way.
    meta = Metadata.from_dict(envelope())
    assert isinstance(meta, InTotoEnvelope)
    meta.verify_signature({"keyid": key.keyid, **key.to_dict()})
    statement = json.loads(meta.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": subject}
    assert statement["predicateType"] == SLSA

    # Over other bytes the signature fails in both.
    def forged():
        e = envelope()
        e["payload"] = base64.b64encode(statement_bytes(subject, {"forged": True})).decode()
        return e

    with pytest.raises(VerificationError):
        SslibEnvelope.from_dict(forged()).verify([key], 1)
    with pytest.raises(SignatureVerificationError):
        Metadata.from_dict(forged()).verify_signature({"keyid": key.keyid, **key.to_dict()})


def statement_bytes(subject_hex, predicate):
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "app.tar", "digest": {"sha256": subject_hex}}],
            "predicateType": SLSA,
            "predicate": predicate,
        }
    ).encode()


def thumbprint(public):
    """RFC 7638 thumbprint, the key id Vern names keys by."""
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return JWK.from_pem(pem).thumbprint(), pem


def vern(*args):
    return subprocess.run(
        [os.environ["VERN_BIN"], *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("VERN_ADDR", "VERN_TOKEN")},
    )


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa-p256"])
def test_vern_verifies_envelopes_signed_by_securesystemslib_and_in_toto(tmp_path, kind):
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    kid, pem = thumbprint(private.public_key())
    # securesystemslib's own default key id, not Vern's thumbprint: DSSE
    # key ids are hints, and Vern finds the key by its signature.
    signer = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
    assert signer.public_key.keyid != kid
    subject = digest(b"built elsewhere")
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem)

    # One envelope by securesystemslib, one by in-toto.
    sslib = SslibEnvelope(statement_bytes(subject, {"by": "sslib"}), PAYLOAD_TYPE, {})
    sslib.sign(signer)
    intoto = InTotoEnvelope(statement_bytes(subject, {"by": "in-toto"}), PAYLOAD_TYPE, {})
    intoto.create_signature(signer)
    for name, env in (("sslib", sslib), ("in-toto", intoto)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(env.to_dict()))
        out = vern("attest", "verify", str(path), "--key", str(key_file), "--subject", f"sha256:{subject}")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert report["verified"] is True
        assert report["kids"] == [kid]

        # A payload swapped under the signature is refused.
        d = env.to_dict()
        d["payload"] = base64.b64encode(statement_bytes(subject, {"by": "someone else"})).decode()
        path.write_text(json.dumps(d))
        out = vern("attest", "verify", str(path), "--key", str(key_file))
        assert out.returncode != 0
        assert "does not verify" in out.stderr


def test_a_promotion_gate_over_http(dev_server):
    """The gate declared through `/v1/auth/apply`, weighed by
    `/v1/attest/promote`: denied with what is missing, then allowed."""
    r = requests.post(
        dev_server.url + "/v1/auth/apply",
        headers=ROOT,
        json={"promotion": [{"environment": "acme/web/prod", "require": [
            {"predicate_type": SLSA, "signer": "svc.acme.web.prod.builder"}]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["promotion"]["create"] == ["acme/web/prod"]
    subject_hex = digest(b"promoted")
    subject = f"registry.example/acme/web@sha256:{subject_hex}"

    def promote():
        r = requests.post(
            dev_server.url + "/v1/attest/promote",
            headers=ROOT,
            json={"subject": subject, "to": "acme/web/prod"},
        )
        assert r.status_code == 200, r.text
        return r.json()["data"]

    denied = promote()
    assert denied["allowed"] is False
    assert "svc.acme.web.prod.builder" in denied["missing"][0]
    signed = vern_signed(dev_server, subject_hex)
    allowed = promote()
    assert allowed["allowed"] is True, allowed
    assert allowed["evidence"][0]["address"] == signed["address"]

    # The promotion record verifies with securesystemslib like any envelope.
    record = allowed["record"]
    key = published_key(dev_server, record["kid"])
    SslibEnvelope.from_dict(json.loads(record["envelope"])).verify([key], 1)
    statement = json.loads(base64.b64decode(json.loads(record["envelope"])["payload"]))
    assert statement["predicateType"] == "https://vern.dev/attestation/promotion/v1"
    assert statement["predicate"]["environment"] == "acme/web/prod"
