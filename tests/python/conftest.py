"""Fixtures that run the real `vern` binary for external-client tests."""

import json
import os
import subprocess
import threading
import time
import uuid

import pytest


def _vern_bin():
    path = os.environ.get("VERN_BIN")
    if not path:
        pytest.fail("VERN_BIN is not set; run the suite through ./scripts/test")
    return path


def _postgres_url():
    """A URL to a fresh database, or None when PostgreSQL is not configured
    outside CI. Under CI=true a missing PostgreSQL fails the test."""
    base = os.environ.get("VERN_TEST_POSTGRES_URL")
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail("VERN_TEST_POSTGRES_URL is not set, but CI=true requires PostgreSQL")
        return None
    name = "vern_py_" + uuid.uuid4().hex
    psql = subprocess.run(
        ["psql", base, "-v", "ON_ERROR_STOP=1", "-qc", f"CREATE DATABASE {name}"],
        capture_output=True,
        text=True,
    )
    if psql.returncode != 0:
        pytest.fail(f"cannot create a test database: {psql.stderr}")
    head = base.rsplit("/", 1)[0]
    return f"{head}/{name}"


class VernServer:
    def __init__(self, args):
        self.proc = subprocess.Popen(
            [_vern_bin(), "serve", "--log-format", "json", "--listen", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log = []
        self.addr = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                if "Vern is listening." in line:
                    self.addr = json.loads(line)["address"]
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("vern serve did not start:\n" + "".join(self.log))
        self.url = f"http://{self.addr}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(params=["sqlite", "postgres"])
def sealed_server(request, tmp_path):
    """A fresh, uninitialised server over plain HTTP on each backend."""
    if request.param == "sqlite":
        storage = f"sqlite:{tmp_path / 'vern.db'}"
    else:
        storage = _postgres_url()
        if storage is None:
            pytest.skip("PostgreSQL is not configured")
    server = VernServer(["--insecure-listen", "--storage", storage, "--data-dir", str(tmp_path)])
    yield server
    server.stop()


@pytest.fixture
def dev_server(tmp_path):
    server = VernServer(["--dev", "--dev-root-token", "py-root", "--data-dir", str(tmp_path)])
    yield server
    server.stop()
