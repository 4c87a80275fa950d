"""Vern's KV v2 API through hvac, unchanged, on SQLite and PostgreSQL."""

import hvac
import hvac.exceptions
import pytest
import requests


@pytest.fixture
def kv_client(sealed_server):
    """An initialised, unsealed server and a root-token hvac client."""
    client = hvac.Client(url=sealed_server.url)
    result = client.sys.initialize(secret_shares=3, secret_threshold=2)
    client.sys.submit_unseal_keys(result["keys"][:2])
    client.token = result["root_token"]
    return client


def test_kv_v2_full_flow(kv_client):
    kv = kv_client.secrets.kv.v2
    path = "acme/web/prod/database"

    created = kv.create_or_update_secret(path=path, secret={"user": "app", "password": "one"})
    assert created["data"]["version"] == 1
    kv.create_or_update_secret(path=path, secret={"user": "app", "password": "two"}, cas=1)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        kv.create_or_update_secret(path=path, secret={"password": "stale"}, cas=1)
    assert "check-and-set" in str(err.value)

    latest = kv.read_secret_version(path=path, raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"user": "app", "password": "two"}
    assert latest["data"]["metadata"]["version"] == 2
    first = kv.read_secret_version(path=path, version=1, raise_on_deleted_version=True)
    assert first["data"]["data"]["password"] == "one"

    kv.patch(path=path, secret={"password": "three"})
    patched = kv.read_secret_version(path=path, raise_on_deleted_version=True)
    assert patched["data"]["data"] == {"user": "app", "password": "three"}
    assert patched["data"]["metadata"]["version"] == 3

    # hvac has no subkeys helper; its adapter sends the raw request.
    subkeys = kv_client.adapter.get(f"/v1/secret/subkeys/{path}")
    assert subkeys["data"]["subkeys"] == {"user": None, "password": None}

    # Soft delete of the latest version: a 404 whose body carries metadata.
    kv.delete_latest_version_of_secret(path=path)
    deleted = kv.read_secret_version(path=path, raise_on_deleted_version=False)
    assert deleted["data"]["data"] is None
    assert deleted["data"]["metadata"]["deletion_time"] != ""
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, raise_on_deleted_version=True)
    kv.undelete_secret_versions(path=path, versions=[3])
    assert kv.read_secret_version(path=path, raise_on_deleted_version=True)["data"]["metadata"]["version"] == 3

    kv.delete_secret_versions(path=path, versions=[1])
    kv.destroy_secret_versions(path=path, versions=[2])
    meta = kv.read_secret_metadata(path=path)["data"]
    assert meta["current_version"] == 3
    assert meta["versions"]["1"]["deletion_time"] != ""
    assert meta["versions"]["2"]["destroyed"] is True
    assert meta["versions"]["3"]["destroyed"] is False

    kv.update_metadata(
        path=path,
        max_versions=2,
        cas_required=False,
        delete_version_after="3h",
        custom_metadata={"owner": "team-web"},
    )
    meta = kv.read_secret_metadata(path=path)["data"]
    assert meta["max_versions"] == 2
    assert meta["delete_version_after"] == "3h0m0s"
    assert meta["custom_metadata"] == {"owner": "team-web"}
    kv.create_or_update_secret(path=path, secret={"password": "four"})
    meta = kv.read_secret_metadata(path=path)["data"]
    assert sorted(meta["versions"]) == ["3", "4"], "max_versions prunes the oldest"

    kv.create_or_update_secret(path="acme/web/prod/api-key", secret={"k": "v"})
    kv.create_or_update_secret(path="acme/web/prod/nested/one", secret={"k": "v"})
    kv.create_or_update_secret(path="acme/mail/prod/smtp", secret={"k": "v"})
    assert kv.list_secrets(path="acme/web/prod")["data"]["keys"] == ["api-key", "database", "nested/"]
    assert kv.list_secrets(path="acme")["data"]["keys"] == ["mail/", "web/"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets(path="nobody")

    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_version(path=path, raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=path)

    # Mount configuration.
    kv_client.secrets.kv.v2.configure(max_versions=5, cas_required=True)
    conf = kv_client.secrets.kv.v2.read_configuration()["data"]
    assert conf["max_versions"] == 5 and conf["cas_required"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        kv.create_or_update_secret(path="acme/web/prod/needs-cas", secret={"a": "b"})
    assert "check-and-set parameter required" in str(err.value)
    kv.create_or_update_secret(path="acme/web/prod/needs-cas", secret={"a": "b"}, cas=0)


def test_sealed_server_refuses_kv_and_recovers(kv_client, sealed_server):
    kv = kv_client.secrets.kv.v2
    kv.create_or_update_secret(path="acme/web/prod/x", secret={"a": "b"})
    kv_client.sys.seal()
    response = requests.get(
        sealed_server.url + "/v1/secret/data/acme/web/prod/x",
        headers={"X-Vault-Token": kv_client.token},
    )
    assert response.status_code == 503
    assert response.json() == {"errors": ["Vern is sealed"]}


def test_bad_input_is_refused_and_nothing_is_stored(kv_client, sealed_server):
    url = sealed_server.url + "/v1/secret/data/"
    headers = {"X-Vault-Token": kv_client.token}
    cases = [
        ("acme/web/prod/a", b"{not json", 400, "not valid JSON"),
        ("acme/web/prod/a", b'{"data": "string"}', 400, "must be a JSON object"),
        ("acme/web/prod/a", b'{"data": [1, 2]}', 400, "must be a JSON object"),
        ("acme/web/prod/a", b"{}", 400, "no data provided"),
        ("acme//prod/a", b'{"data": {}}', 400, "empty segment"),
        ("acme/web/prod/%2E%2E/a", b'{"data": {}}', 400, "`..`"),
        ("acme/web/prod/a%07b", b'{"data": {}}', 400, "control character"),
        ("acme/web/prod/" + "x" * 1100, b'{"data": {}}', 400, "limit is 1024"),
        ("acme/web", b'{"data": {}}', 400, "<tenant>/<project>/<environment>/<name>"),
        ("Acme/web/prod/a", b'{"data": {}}', 400, "tenant name"),
    ]
    for path, body, status, needle in cases:
        r = requests.post(url + path, data=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == status, (path, r.text)
        assert needle in r.json()["errors"][0], (path, r.text)
    big = b'{"data": {"blob": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    r = requests.post(url + "acme/web/prod/big", data=big, headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 413
    r = requests.request("LIST", sealed_server.url + "/v1/secret/metadata/", headers=headers)
    assert r.status_code == 404, "nothing was stored: " + r.text
