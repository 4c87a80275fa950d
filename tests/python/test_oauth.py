"""The token authority through independent OAuth2 and JOSE clients:
authlib (client_secret_basic, private_key_jwt), requests-oauth2client (a
DPoP-bound token used against Vern's API) and pyjwt (verifying tokens
against the published JWKS)."""

import json

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey
from requests_oauth2client import OAuth2Client

ROOT = {"X-Vault-Token": "py-root"}


def create_client(server, **spec):
    body = {"tenant": "acme", "project": "web", "environment": "prod", **spec}
    r = requests.post(server.url + "/v1/auth/clients", json=body, headers=ROOT)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def metadata(server):
    return requests.get(server.url + "/.well-known/oauth-authorization-server").json()


def test_metadata_is_rfc_8414(dev_server):
    meta = metadata(dev_server)
    assert meta["issuer"] == dev_server.url
    assert meta["token_endpoint"] == dev_server.url + "/oauth2/token"
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"]
    assert "ES256" in meta["dpop_signing_alg_values_supported"]
    # RFC 8414 §2: every endpoint listing private_key_jwt names its
    # algorithms; the fully specified Ed25519 (RFC 9864) beside EdDSA.
    for endpoint in ("token", "introspection", "revocation"):
        assert "private_key_jwt" in meta[f"{endpoint}_endpoint_auth_methods_supported"]
        assert meta[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == ["EdDSA", "Ed25519", "ES256"]
    assert meta["dpop_signing_alg_values_supported"] == ["EdDSA", "Ed25519", "ES256"]


def test_authlib_client_secret_basic_and_pyjwt_verification(dev_server):
    client = create_client(dev_server, name="reader", scopes=["secrets:read", "secrets:write"])
    meta = metadata(dev_server)
    session = OAuth2Session(
        client["client_id"], client["client_secret"], token_endpoint_auth_method="client_secret_basic"
    )
    token = session.fetch_token(
        meta["token_endpoint"], grant_type="client_credentials", scope="secrets:read secrets:write"
    )
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 300
    assert token["scope"] == "secrets:read secrets:write"
    access = token["access_token"]

    # pyjwt verifies the token against the JWKS, with the algorithm pinned.
    header = jwt.get_unverified_header(access)
    assert header["typ"] == "at+jwt" and header["alg"] == "EdDSA"
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access)
    claims = jwt.decode(
        access,
        signing_key.key,
        algorithms=["EdDSA"],
        audience=meta["issuer"],
        issuer=meta["issuer"],
        options={"require": ["exp", "iat", "jti", "sub", "aud", "iss"]},
    )
    assert claims["client_id"] == client["client_id"]
    assert (claims["tenant"], claims["project"], claims["environment"]) == ("acme", "web", "prod")
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(access, signing_key.key, algorithms=["EdDSA"], audience="https://someone-else")

    # The token works on Vern's API, for its own tenant only.
    api = dev_server.url + "/v1/secret/data/"
    auth = {"Authorization": "Bearer " + access}
    assert requests.post(api + "acme/web/prod/db", json={"data": {"p": "1"}}, headers=auth).status_code == 200
    assert requests.get(api + "globex/web/prod/db", headers=auth).status_code == 404

    # A wrong secret: RFC 6749 invalid_client with 401.
    bad = OAuth2Session(client["client_id"], "vern.cs.wrong", token_endpoint_auth_method="client_secret_basic")
    with pytest.raises(Exception) as err:
        bad.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert "invalid_client" in str(err.value)


def test_authlib_private_key_jwt(dev_server):
    key = ECKey.generate_key("P-256", private=True)
    public = key.as_dict(private=False)
    client = create_client(dev_server, name="signer", jwks=[public], scopes=["secrets:read"])
    assert "client_secret" not in client
    meta = metadata(dev_server)
    session = OAuth2Session(
        client["client_id"],
        key,
        token_endpoint_auth_method=PrivateKeyJWT(meta["token_endpoint"], alg="ES256"),
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    introspected = requests.post(
        meta["introspection_endpoint"],
        data={"token": token["access_token"]},
        auth=(create_client(dev_server, name="checker")["client_id"], "wrong"),
    )
    assert introspected.status_code == 401


def test_requests_oauth2client_dpop_bound_token_against_the_api(dev_server):
    client = create_client(dev_server, name="bound", dpop_bound=True, scopes=["secrets:read", "secrets:write"])
    meta = metadata(dev_server)
    oauth = OAuth2Client(
        token_endpoint=meta["token_endpoint"],
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        dpop_bound_access_tokens=True,
        # The test server speaks plain HTTP on loopback; the library
        # otherwise insists on https endpoints.
        testing=True,
    )
    token = oauth.client_credentials(scope="secrets:read secrets:write")
    assert token.token_type.lower() == "dpop"
    url = dev_server.url + "/v1/secret/data/acme/web/prod/bound-secret"

    r = requests.post(url, json={"data": {"k": "v"}}, auth=token)
    assert r.status_code == 200, r.text
    r = requests.get(url, auth=token)
    assert r.status_code == 200 and r.json()["data"]["data"] == {"k": "v"}

    # The same token as a bearer token is refused.
    r = requests.get(url, headers={"Authorization": "Bearer " + str(token.access_token)})
    assert r.status_code == 401
    assert "DPoP" in r.headers["WWW-Authenticate"]
    r = requests.get(url, headers={"X-Vault-Token": str(token.access_token)})
    assert r.status_code == 401

    # Revocation takes effect at once.
    other = create_client(dev_server, name="plain", scopes=["secrets:read"])
    plain = OAuth2Client(
        token_endpoint=meta["token_endpoint"],
        client_id=other["client_id"],
        client_secret=other["client_secret"],
        testing=True,
    ).client_credentials()
    headers = {"Authorization": "Bearer " + str(plain.access_token)}
    assert requests.get(url, headers=headers).status_code == 200
    r = requests.post(
        meta["revocation_endpoint"],
        data={"token": str(plain.access_token)},
        auth=(other["client_id"], other["client_secret"]),
    )
    assert r.status_code == 200
    assert requests.get(url, headers=headers).status_code == 401


def test_a_client_without_dpop_cannot_get_a_token_when_bound(dev_server):
    client = create_client(dev_server, name="must-bind", dpop_bound=True)
    r = requests.post(
        metadata(dev_server)["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
    )
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"
    assert r.headers["Cache-Control"] == "no-store"
    assert json.loads(r.text)["error_description"]
