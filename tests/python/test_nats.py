"""NATS security through the independent nats-py client and a real
nats-server 2.15, unchanged: tenants are accounts, permissions come from the
declarations and the policies, the callout authenticates Vern access tokens,
revocation and expiry end connections, and a stopped Vern refuses new
connections while the auth users still connect."""

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import nats
import pytest
import requests
from nats.errors import NoServersError

from conftest import VernServer, _vern_bin

ROOT = {"X-Vault-Token": "py-root"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_bin():
    found = os.environ.get("NATS_SERVER_BIN") or shutil.which(
        "nats-server", path=os.path.dirname(sys.executable)
    )
    if not found:
        pytest.fail("nats-server is missing: it comes with the nats-server-bin package")
    return found


class NatsServer:
    def __init__(self, conf, port):
        # The log goes to a file: a pipe nobody reads would stall the
        # server once it filled.
        self.log_path = f"{conf}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [nats_server_bin(), "-c", str(conf), "-a", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("nats-server did not start: " + self.log())
                time.sleep(0.05)

    def log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def create(server, tenant, name, publish=(), subscribe=(), ttl=None, imports=()):
    body = {
        "tenant": tenant,
        "project": "web",
        "environment": "prod",
        "name": name,
        "nats": {"publish": list(publish), "subscribe": list(subscribe), "imports": list(imports)},
    }
    if ttl:
        body["token_ttl"] = ttl
    r = requests.post(server.url + "/v1/auth/clients", json=body, headers=ROOT)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def token_of(server, client):
    t = requests.post(
        server.url + "/oauth2/token",
        auth=(client["client_id"], client["client_secret"]),
        data={"grant_type": "client_credentials"},
    )
    assert t.status_code == 200, t.text
    return t.json()["access_token"]


def start_stack(tmp_path, specs, extra_args=(), apply=None):
    """Vern (with the callout) and its clients, the configuration `vern
    nats config` renders (after `vern apply` of the `apply` file's text, if
    any), and nats-server running it."""
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    vern = VernServer(
        ["--dev", "--dev-root-token", "py-root", "--data-dir", str(tmp_path / "vern"), "--nats-url", url, *extra_args]
    )
    clients = {key: create(vern, *args, **kw) for key, (args, kw) in specs.items()}
    if apply is not None:
        platform = tmp_path / "platform.yaml"
        platform.write_text(apply)
        out = subprocess.run(
            [_vern_bin(), "apply", "-f", str(platform), "--address", vern.url, "--token", "py-root"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
    conf = tmp_path / "nats.conf"
    out = subprocess.run(
        [_vern_bin(), "nats", "config", "--address", vern.url, "--token", "py-root", "--out", str(conf)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    server = NatsServer(conf, port)
    # Vern's callout retries until nats-server is up; wait until it serves.
    deadline = time.monotonic() + 30
    while not any("The NATS callout is serving." in line for line in vern.log):
        assert time.monotonic() < deadline, "".join(vern.log)
        time.sleep(0.05)
    return {"vern": vern, "url": url, "clients": clients, "conf": conf.read_text(), "nats": server}


@pytest.fixture
def stack(tmp_path):
    """Three services of two tenants."""
    s = start_stack(
        tmp_path,
        {
            "api": (("acme", "api"), {"publish": ["orders.>"], "subscribe": ["orders.>"]}),
            "worker": (("acme", "worker"), {"subscribe": ["orders.created"], "publish": ["$SYS.REQ.SERVER.PING"]}),
            "globex": (("globex", "api"), {"publish": ["orders.>"], "subscribe": ["orders.>"]}),
        },
    )
    yield s
    s["nats"].stop()
    s["vern"].stop()


GRANT = """
@id("acme-feed-receives-globex-prices")
@cross_tenant_grant("acme web/prod feed receives globex prices")
permit (
  principal == Vern::Service::"svc.acme.web.prod.feed",
  action == Vern::Action::"nats.subscribe",
  resource == Vern::NatsSubject::"globex:prices.>"
);
"""


def test_cross_tenant_import_exists_only_where_a_policy_grants_it(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "grants.cedar").write_text(GRANT)
    s = start_stack(
        tmp_path,
        {
            "feed": (
                ("acme", "feed"),
                {"imports": [{"tenant": "globex", "subject": "prices.>"}, {"tenant": "globex", "subject": "orders.>"}]},
            ),
            "pricer": (("globex", "pricer"), {"publish": ["prices.>", "orders.>"]}),
        },
        extra_args=["--policy-dir", str(policies)],
    )
    try:
        conf = s["conf"]
        assert 'exports: [ { stream: "prices.>" } ]' in conf
        assert 'imports: [ { stream: { account: "globex", subject: "prices.>" } } ]' in conf
        assert "orders.>" not in conf
        vern, url, c = s["vern"], s["url"], s["clients"]

        async def scenario():
            feed, feed_errors = await connect(url, token_of(vern, c["feed"]))
            pricer, pricer_errors = await connect(url, token_of(vern, c["pricer"]))
            got = []

            async def cb(msg):
                got.append((msg.subject, msg.data))

            await feed.subscribe("prices.>", cb=cb)
            await feed.subscribe("orders.>", cb=cb)
            await settle(feed)
            await pricer.publish("prices.eur", b"1.08")
            await pricer.publish("orders.created", b"secret order")
            await pricer.flush()
            assert await eventually(lambda: got), (
                f"nothing delivered; feed closed={feed.is_closed} errors={feed_errors}, "
                f"pricer closed={pricer.is_closed} errors={pricer_errors}; nats-server's log: "
                + s["nats"].log()
            )
            await asyncio.sleep(0.3)
            assert got == [("prices.eur", b"1.08")]
            await feed.close()
            await pricer.close()

        run(scenario())

        out = subprocess.run(
            [_vern_bin(), "nats", "paths", "--address", vern.url, "--token", "py-root", "-o", "json"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        import json

        report = json.loads(out.stdout)
        assert report["cross_account"] == [
            {
                "exporter": "globex",
                "importer": "acme",
                "client_id": "svc.acme.web.prod.feed",
                "subject": "prices.>",
                "kind": "stream",
            }
        ]
        table = subprocess.run(
            [_vern_bin(), "nats", "paths", "--address", vern.url, "--token", "py-root"], capture_output=True, text=True
        )
        assert "stream prices.> globex -> acme" in table.stdout
    finally:
        s["nats"].stop()
        s["vern"].stop()


def run(coro):
    return asyncio.run(coro)


async def connect(url, token, **kw):
    errors = []

    async def on_error(e):
        errors.append(str(e))

    nc = await nats.connect(
        servers=[url],
        token=token,
        allow_reconnect=False,
        connect_timeout=5,
        error_cb=on_error,
        **kw,
    )
    return nc, errors


async def refused(url, **kw):
    """Whether nats-server refuses a connection with these options."""
    try:
        nc = await nats.connect(servers=[url], allow_reconnect=False, connect_timeout=5, max_reconnect_attempts=0, **kw)
    except (NoServersError, nats.errors.Error, OSError, asyncio.TimeoutError) as e:
        return str(e) or type(e).__name__
    await nc.close()
    return None


async def settle(*clients):
    """Returns once nats-server has processed what these clients sent.
    nats-py's flush writes its PING ahead of the commands still queued for
    its flusher task, so its PONG can come back before a SUB is processed,
    and another connection's publish can overtake the subscription. By the
    time that first PONG arrives the queue has been written, so a second
    PING follows it on the wire."""
    for nc in clients:
        await nc.flush()
        await nc.flush()


async def eventually(check, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


def test_tenants_are_accounts_and_permissions_come_from_policy(stack):
    vern, url, c = stack["vern"], stack["url"], stack["clients"]
    api_token = token_of(vern, c["api"])
    worker_token = token_of(vern, c["worker"])
    globex_token = token_of(vern, c["globex"])

    async def scenario():
        api, api_errors = await connect(url, api_token)
        worker, worker_errors = await connect(url, worker_token)
        globex, _ = await connect(url, globex_token)
        got = {"api": [], "worker": [], "globex": []}

        async def into(name):
            async def cb(msg):
                got[name].append((msg.subject, msg.data))

            return cb

        await api.subscribe("orders.>", cb=await into("api"))
        await worker.subscribe("orders.created", cb=await into("worker"))
        await globex.subscribe("orders.created", cb=await into("globex"))
        await settle(api, worker, globex)

        await api.publish("orders.created", b"acme-1")
        await api.flush()
        assert await eventually(lambda: got["worker"] and got["api"])
        assert got["worker"] == [("orders.created", b"acme-1")]
        # Same subject name in globex's account: nothing crosses.
        await asyncio.sleep(0.3)
        assert got["globex"] == []

        # A publish outside the permissions is a permissions violation, and
        # nothing is delivered.
        await api.publish("billing.charged", b"x")
        await api.flush()
        assert await eventually(lambda: any("permissions violation" in e.lower() for e in api_errors))
        # The worker declared a privileged subject: no policy grants it.
        await worker.publish("$SYS.REQ.SERVER.PING", b"")
        await worker.flush()
        assert await eventually(lambda: any("permissions violation" in e.lower() for e in worker_errors))
        # Subscribing outside the permissions is refused too.
        await worker.subscribe("billing.>")
        await worker.flush()
        assert await eventually(
            lambda: any("permissions violation" in e.lower() and "subscription" in e.lower() for e in worker_errors)
        )

        # globex's own traffic reaches globex only.
        await globex.publish("orders.created", b"globex-1")
        await globex.flush()
        assert await eventually(lambda: got["globex"])
        await asyncio.sleep(0.3)
        assert ("orders.created", b"globex-1") not in got["worker"]

        # Request/reply without any wildcard on _INBOX: the requester reads
        # replies on its own inbox prefix, the responder answers through
        # its response permission.
        # The worker may not publish on orders.> at all.
        async def answer(msg):
            await msg.respond(b"done:" + msg.data)

        responder, _ = await connect(url, token_of(vern, c["worker"]))
        await responder.subscribe("orders.created", cb=answer)
        await settle(responder)
        requester, _ = await connect(url, token_of(vern, c["api"]), inbox_prefix="_INBOX." + c["api"]["client_id"])
        reply = await requester.request("orders.created", b"2", timeout=5)
        assert reply.data == b"done:2"
        for nc in (api, worker, globex, responder, requester):
            await nc.close()

    run(scenario())

    # Every decision is in the audit log, with the subjects granted.
    records = requests.get(vern.url + "/v1/audit/records?limit=1000", headers=ROOT).json()["data"]["records"]
    connects = [r["event"] for r in records if r["event"].get("action") == "nats.connect"]
    allowed = [e for e in connects if e["decision"]["allowed"]]
    assert any(e["principal"]["id"] == c["worker"]["client_id"] and "refused_by_policy" in e["details"] for e in allowed)
    assert all(e["token"]["hmac"] for e in allowed)


def test_bad_tokens_are_refused_and_revocation_disconnects(stack):
    vern, url, c = stack["vern"], stack["url"], stack["clients"]

    async def scenario():
        assert await refused(url) is not None
        assert await refused(url, token="not-a-token") is not None
        # A token of another issuer's shape, signed by nobody Vern knows.
        forged = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"
        assert await refused(url, token=forged) is not None

        # A revoked token's live connection is closed within seconds, and
        # the token is refused at connect from then on.
        token = token_of(vern, c["api"])
        closed = asyncio.Event()

        async def on_closed():
            closed.set()

        nc, _ = await connect(url, token, closed_cb=on_closed)
        assert nc.is_connected
        r = requests.post(
            vern.url + "/oauth2/revoke",
            auth=(c["api"]["client_id"], c["api"]["client_secret"]),
            data={"token": token},
        )
        assert r.status_code == 200, r.text
        await asyncio.wait_for(closed.wait(), timeout=10)
        assert await refused(url, token=token) is not None

        # Deleting the client closes its connections too.
        token = token_of(vern, c["globex"])
        closed2 = asyncio.Event()

        async def on_closed2():
            closed2.set()

        nc2, _ = await connect(url, token, closed_cb=on_closed2)
        r = requests.delete(vern.url + f"/v1/auth/clients/{c['globex']['client_id']}", headers=ROOT)
        assert r.status_code == 204, r.text
        await asyncio.wait_for(closed2.wait(), timeout=10)

    run(scenario())
    records = requests.get(vern.url + "/v1/audit/records?limit=1000", headers=ROOT).json()["data"]["records"]
    denied = [r["event"] for r in records if r["event"].get("action") == "nats.connect" and not r["event"]["decision"]["allowed"]]
    assert any("no credential" in e["details"]["reason"] for e in denied)
    assert any("refused" in e["details"]["reason"] for e in denied)


def test_expired_tokens_end_connections_and_are_refused(stack):
    vern, url = stack["vern"], stack["url"]
    short = create(vern, "acme", "short", subscribe=["orders.>"], ttl=2)
    token = token_of(vern, short)

    async def scenario():
        closed = asyncio.Event()

        async def on_closed():
            closed.set()

        nc, _ = await connect(url, token, closed_cb=on_closed)
        assert nc.is_connected
        # The user JWT expires with the token: the server ends the connection.
        await asyncio.wait_for(closed.wait(), timeout=15)
        assert await refused(url, token=token) is not None

    run(scenario())


def test_vern_stopped_refuses_clients_but_auth_users_connect(stack, tmp_path):
    vern, url, c = stack["vern"], stack["url"], stack["clients"]
    token = token_of(vern, c["api"])
    conf = stack["conf"]
    # The rendered file holds bcrypt hashes of the auth users' passwords,
    # never their clear text; a second nats-server runs the same file with
    # a password this test knows in the callout user's place.
    hashes = re.findall(r'password: "([^"]+)"', conf)
    assert len(hashes) == 2 and all(h.startswith("$2a$11$") for h in hashes), conf
    known = tmp_path / "known.conf"
    known.write_text(re.sub(r'(user: "vern-callout", password: ")[^"]+"', r'\1known"', conf))
    port = free_port()
    second = NatsServer(known, port)
    second_url = f"nats://127.0.0.1:{port}"
    vern.stop()

    async def scenario():
        assert await refused(url, token=token) is not None
        assert await refused(second_url, token=token) is not None
        nc = await nats.connect(servers=[second_url], user="vern-callout", password="known", allow_reconnect=False)
        assert nc.is_connected
        await nc.close()

    try:
        run(scenario())
    finally:
        second.stop()


def test_paths_report_and_dot_render(stack):
    vern = stack["vern"]
    base = [_vern_bin(), "nats", "paths", "--address", vern.url, "--token", "py-root"]
    out = subprocess.run([*base, "--output", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import json

    report = json.loads(out.stdout)
    assert report["accounts"] == ["acme", "globex"]
    flows = {(f["account"], f["publisher"], f["subscriber"]) for f in report["flows"]}
    assert ("acme", "svc.acme.web.prod.api", "svc.acme.web.prod.worker") in flows
    assert not any(f["account"] != "acme" and "acme" in f["subscriber"] for f in report["flows"])
    worker = next(p for p in report["principals"] if p["client_id"] == "svc.acme.web.prod.worker")
    assert worker["refused"] == [{"direction": "publish", "subject": "$SYS.REQ.SERVER.PING"}]
    acme = subprocess.run([*base, "--tenant", "acme", "-o", "json"], capture_output=True, text=True)
    assert json.loads(acme.stdout)["accounts"] == ["acme"]

    dot = subprocess.run([*base, "--output", "dot"], capture_output=True, text=True)
    assert dot.returncode == 0, dot.stderr
    graphviz = shutil.which("dot")
    if graphviz is None:
        pytest.fail("Graphviz's dot is missing; scripts/test installs it")
    svg = subprocess.run([graphviz, "-Tsvg"], input=dot.stdout, capture_output=True, text=True)
    assert svg.returncode == 0, svg.stderr
    assert "<svg" in svg.stdout


def openssl(*args, cwd):
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def svid_files(vern, token, directory, name):
    """An X.509-SVID for the principal of `token` from POST /v1/pki/svid,
    written as `<name>.pem` (leaf and chain) and `<name>.key`."""
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", "/CN=workload",
        cwd=directory,
    )
    csr = (directory / f"{name}.csr").read_text()
    r = requests.post(vern.url + "/v1/pki/svid", json={"csr": csr}, headers={"X-Vault-Token": token})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    (directory / f"{name}.pem").write_text(data["certificate"] + "".join(data["chain"]))
    return directory / f"{name}.pem", directory / f"{name}.key", data["spiffe_id"]


def test_services_connect_with_their_svid_over_tls(tmp_path):
    import ssl

    # nats-server's own certificate, from a CA of the operator's that the
    # callout trusts through --nats-ca-cert.
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server-ca.key", "-out", "server-ca.pem", "-days", "1", "-subj", "/CN=nats test CA",
        cwd=tmp_path,
    )
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=tmp_path,
    )
    (tmp_path / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "server-ca.pem", "-CAkey", "server-ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.pem",
        cwd=tmp_path,
    )
    port = free_port()
    url = f"tls://127.0.0.1:{port}"
    vern = VernServer(
        [
            "--dev", "--dev-root-token", "py-root", "--data-dir", str(tmp_path / "vern"),
            "--nats-url", url, "--nats-ca-cert", str(tmp_path / "server-ca.pem"),
        ]
    )
    server = None
    try:
        api = create(vern, "acme", "api", publish=["orders.>"], subscribe=["orders.>"])
        globex = create(vern, "globex", "api", publish=["orders.>"], subscribe=["orders.>"])
        conf = tmp_path / "nats.conf"
        out = subprocess.run(
            [
                _vern_bin(), "nats", "config", "--address", vern.url, "--token", "py-root", "--out", str(conf),
                "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
            ],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert "verify: true" in conf.read_text()
        assert (tmp_path / "vern-ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        server = NatsServer(conf, port)
        deadline = time.monotonic() + 30
        while not any("The NATS callout is serving." in line for line in vern.log):
            assert time.monotonic() < deadline, "".join(vern.log)
            time.sleep(0.05)

        api_token = token_of(vern, api)
        cert, key, spiffe_id = svid_files(vern, api_token, tmp_path, "api")
        assert spiffe_id == "spiffe://vern.internal/t/acme/p/web/e/prod/s/api"
        admin = create_operator(vern)
        admin_cert, admin_key, _ = svid_files(vern, admin, tmp_path, "dana")

        def context(cert_file, key_file):
            ctx = ssl.create_default_context(cafile=str(tmp_path / "server-ca.pem"))
            if cert_file:
                ctx.load_cert_chain(str(cert_file), str(key_file))
            return ctx

        async def scenario():
            errors = []

            async def on_error(e):
                errors.append(str(e))

            closed = asyncio.Event()

            async def on_closed():
                closed.set()

            # The SVID alone: no token, the service's own subjects.
            nc = await nats.connect(
                servers=[url], tls=context(cert, key), allow_reconnect=False, connect_timeout=5,
                error_cb=on_error, closed_cb=on_closed,
            )
            sub = await nc.subscribe("orders.>")
            await nc.flush()
            await nc.publish("orders.created", b"by-svid")
            msg = await sub.next_msg(timeout=5)
            assert msg.data == b"by-svid"
            await nc.publish("billing.charged", b"x")
            await nc.flush()
            assert await eventually(lambda: any("permissions violation" in e.lower() for e in errors), 5), errors

            # With another principal's token beside it: refused.
            assert await refused(url, tls=context(cert, key), token=token_of(vern, globex)) is not None
            # No certificate: the handshake fails, token or not.
            assert await refused(url, tls=context(None, None), token=api_token) is not None
            # An operator's SVID names no service.
            assert await refused(url, tls=context(admin_cert, admin_key)) is not None

            # Deleting the client closes its SVID's connection.
            r = requests.delete(vern.url + f"/v1/auth/clients/{api['client_id']}", headers=ROOT)
            assert r.status_code == 204, r.text
            await asyncio.wait_for(closed.wait(), timeout=10)
            assert await refused(url, tls=context(cert, key)) is not None

        run(scenario())
        records = requests.get(vern.url + "/v1/audit/records?limit=1000", headers=ROOT).json()["data"]["records"]
        connects = [r["event"] for r in records if r["event"].get("action") == "nats.connect"]
        assert any(
            e["decision"]["allowed"] and e["details"].get("spiffe_id") == spiffe_id for e in connects
        )
        reasons = [e["details"].get("reason", "") for e in connects if not e["decision"]["allowed"]]
        assert any("same principal" in r for r in reasons), reasons
        assert any("names no service" in r for r in reasons), reasons
    finally:
        if server:
            server.stop()
        vern.stop()


def create_operator(vern):
    """A tenant administrator of acme; its token."""
    r = requests.post(
        vern.url + "/v1/auth/clients",
        json={"tenant": "acme", "name": "dana", "roles": ["tenant-admin"]},
        headers=ROOT,
    )
    assert r.status_code == 200, r.text
    return token_of(vern, r.json()["data"])


SITES = """
nats:
  site: dc1
  sites:
    - name: dc2
      leafnode: {url: "nats-leaf://127.0.0.1:%d", accounts: [acme], deny_imports: ["orders.private.>"]}
  mappings:
    - {tenant: acme, from: "orders.v1.>", to: "orders.>"}
    - {tenant: acme, from: "legacy.*.created", to: "orders.$1"}
"""


def test_a_mapping_maps_and_its_permission_is_the_destinations(tmp_path):
    s = start_stack(
        tmp_path,
        {
            "api": (("acme", "api"), {"publish": ["orders.>"], "subscribe": ["orders.>"]}),
            "legacy": (("acme", "legacy"), {"publish": ["orders.v1.>"]}),
        },
        apply=SITES % free_port(),
    )
    try:
        conf = s["conf"]
        assert 'mappings: { "legacy.*.created": "orders.$1", "orders.v1.>": "orders.>" }' in conf
        assert 'server_name: "dc1"' in conf
        assert '"$SYS.>"' in conf.split("leafnodes", 1)[1]
        vern, url, c = s["vern"], s["url"], s["clients"]

        async def scenario():
            api, _ = await connect(url, token_of(vern, c["api"]))
            legacy, legacy_errors = await connect(url, token_of(vern, c["legacy"]))
            got = []

            async def cb(msg):
                got.append(msg.subject)

            await api.subscribe("orders.>", cb=cb)
            await api.flush()
            await api.publish("orders.v1.created", b"1")
            await api.flush()
            assert await eventually(lambda: got == ["orders.created"])
            # A destination names the source's wildcard: legacy.eu.created
            # is delivered on orders.eu, which api may publish on.
            await api.publish("legacy.eu.created", b"3")
            await api.flush()
            assert await eventually(lambda: got == ["orders.created", "orders.eu"])
            # The permission is checked on the mapped subject: orders.v1.>
            # alone does not cover orders.shipped.
            await legacy.publish("orders.v1.shipped", b"2")
            await legacy.flush()
            assert await eventually(lambda: any("permissions violation" in e.lower() for e in legacy_errors))
            await asyncio.sleep(0.3)
            assert got == ["orders.created", "orders.eu"]
            await api.close()
            await legacy.close()

        run(scenario())

        base = [_vern_bin(), "nats", "paths", "--address", vern.url, "--token", "py-root"]
        import json

        report = json.loads(subprocess.run([*base, "-o", "json"], capture_output=True, text=True, check=True).stdout)
        assert report["mappings"] == [
            {"account": "acme", "from": "legacy.*.created", "to": "orders.$1"},
            {"account": "acme", "from": "orders.v1.>", "to": "orders.>"},
        ]
        via = {(f["publisher"], f["mapping"]["from"]) for f in report["flows"] if f.get("mapping")}
        assert ("svc.acme.web.prod.api", "legacy.*.created") in via
        assert [(l["site"], l["link"]) for l in report["sites"]] == [("dc2", "leafnode")]
        received = {(x["client_id"], x["subject"]) for x in report["cross_site"] if x["direction"] == "subscribe"}
        assert received == {("svc.acme.web.prod.api", "orders.>")}
        dot = subprocess.run([*base, "-o", "dot"], capture_output=True, text=True, check=True).stdout
        assert '"site:dc2"' in dot
        graphviz = shutil.which("dot")
        if graphviz is None:
            pytest.fail("Graphviz's dot is missing; scripts/test installs it")
        svg = subprocess.run([graphviz, "-Tsvg"], input=dot, capture_output=True, text=True)
        assert svg.returncode == 0, svg.stderr
        assert "<svg" in svg.stdout
    finally:
        s["nats"].stop()
        s["vern"].stop()
