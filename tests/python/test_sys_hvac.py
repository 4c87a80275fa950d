"""Vern's sys/ endpoints through hvac, the Python Vault client, unchanged."""

import hvac
import hvac.exceptions
import pytest
import requests


def test_health_init_unseal_seal_with_hvac(sealed_server):
    client = hvac.Client(url=sealed_server.url)

    assert client.sys.is_initialized() is False
    health = client.sys.read_health_status(method="GET", uninit_code=200)
    assert health["initialized"] is False and health["sealed"] is True
    assert requests.get(sealed_server.url + "/v1/sys/health").status_code == 501

    result = client.sys.initialize(secret_shares=5, secret_threshold=3)
    keys, root = result["keys"], result["root_token"]
    assert len(keys) == 5 and len(result["keys_base64"]) == 5
    assert client.sys.is_initialized() is True
    assert client.sys.is_sealed() is True
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.initialize(secret_shares=5, secret_threshold=3)

    status = client.sys.read_seal_status()
    assert (status["type"], status["t"], status["n"], status["progress"]) == ("shamir", 3, 5, 0)

    status = client.sys.submit_unseal_key(keys[0])
    assert status["sealed"] is True and status["progress"] == 1
    status = client.sys.submit_unseal_key(reset=True)
    assert status["progress"] == 0

    status = client.sys.submit_unseal_keys(keys[2:5])
    assert status["sealed"] is False
    health = client.sys.read_health_status(method="GET")
    assert health["initialized"] is True and health["sealed"] is False
    assert health["cluster_id"]

    client.token = root
    client.sys.seal()
    assert client.sys.is_sealed() is True
    assert requests.get(sealed_server.url + "/v1/sys/health").status_code == 503
    assert client.sys.read_health_status(method="GET", sealed_code=200)["sealed"] is True

    # Shares that do not belong together are refused and reset progress.
    client.sys.submit_unseal_key(keys[0])
    bogus = "09" + "00" * 32
    with pytest.raises(hvac.exceptions.InvalidRequest):
        client.sys.submit_unseal_keys([keys[1], bogus])
    assert client.sys.read_seal_status()["progress"] == 0
    client.sys.submit_unseal_keys(keys[:3])
    assert client.sys.is_sealed() is False


def test_dev_server_answers_hvac_as_an_unsealed_vault(dev_server):
    client = hvac.Client(url=dev_server.url, token="py-root")
    assert client.sys.is_initialized() is True
    assert client.sys.is_sealed() is False
    health = client.sys.read_health_status(method="GET")
    for field in ("initialized", "sealed", "standby", "server_time_utc", "version", "cluster_name", "cluster_id"):
        assert field in health
    head = requests.head(dev_server.url + "/v1/sys/health")
    assert head.status_code == 200 and head.content == b""
    wrong = hvac.Client(url=dev_server.url, token="not-the-root")
    with pytest.raises(hvac.exceptions.Forbidden):
        wrong.sys.seal()
    assert client.sys.is_sealed() is False
