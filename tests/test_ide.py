"""The notebook as an IDE, through the clients that use it: jupyter-resource-usage's kernel
panel (its server extension asks usage_request on control, in a real Jupyter server)."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TORCH_KERNEL_NAME

VENV_BIN = Path(sys.executable).parent
TOKEN = "tch-kernel-test-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`jupyter server` with the extensions installed in the venv, on a free port."""

    def __init__(self, root):
        self.port = free_port()
        self.log = open(root / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyter"), "server", "--no-browser", f"--port={self.port}",
             f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ),
        )

    def call(self, method, path, body=None):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def wait_up(self, deadline_s=120):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, "jupyter server exited"
            try:
                return self.call("GET", "/api/status")
            except OSError:
                time.sleep(0.2)
        raise AssertionError("jupyter server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.log.close()


@pytest.fixture
def server(torch_env, tmp_path):
    s = Server(tmp_path)
    s.wait_up()
    yield s
    s.stop()


def test_the_resource_usage_panel_gets_figures_for_the_kernel_and_its_evaluation_process(server):
    kernel = server.call("POST", "/api/kernels", {"name": TORCH_KERNEL_NAME})
    path = f"/api/metrics/v1/kernel_usage/get_usage/{kernel['id']}"
    # What the panel shows (jupyter-resource-usage 1.3 asks usage_request on control and waits
    # 10 s): poll until the evaluation process has started beside the kernel.
    end, content = time.monotonic() + 300, {}
    while time.monotonic() < end:
        content = server.call("GET", path).get("content", {})
        if len(content.get("processes", [])) >= 2:
            break
        time.sleep(0.5)
    assert "reason" not in content, content  # "timeout" or "not_supported"
    for key in ("hostname", "pid", "kernel_cpu", "kernel_memory", "cpu_count", "host_virtual_memory"):
        assert key in content, (key, content)
    assert content["kernel_memory"] > 10 * 2**20, content
    assert content["host_virtual_memory"]["total"] >= content["host_virtual_memory"]["available"] > 0
    pids = [p["pid"] for p in content["processes"]]
    assert pids[0] == content["pid"] and len(pids) >= 2, content
    assert content["kernel_memory"] == sum(p["memory"] for p in content["processes"])
    # CPU is measured between two requests.
    second = server.call("GET", path)["content"]
    assert second["kernel_cpu"] >= 0 and isinstance(second["kernel_cpu"], (int, float))
    server.call("DELETE", f"/api/kernels/{kernel['id']}")
