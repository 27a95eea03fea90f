"""The notebook as an IDE, through the clients that use it: JupyterLab's debugger protocol
(debug_request on control, as JupyterLab sends it), JupyterLab's debugger itself in headless
Chromium (Debian's chromium, driven by playwright), and jupyter-resource-usage's kernel panel
(its server extension asks usage_request on control, in a real Jupyter server)."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TORCH_KERNEL_NAME, ok, result, run, start_torch, stdout_of, tk  # noqa: F401 (a fixture)

VENV_BIN = Path(sys.executable).parent
# The DAP adapter the kernel finds (the newest lldb-dap on PATH); tests/run.sh installs lldb-19
# as root.
ADAPTER = next((p for d in os.environ.get("PATH", "").split(os.pathsep) if d
                for p in sorted(Path(d).glob("lldb-dap*")) if os.access(p, os.X_OK)), None)
TOKEN = "tch-kernel-test-token"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`jupyter server` (or `jupyter lab`) with the extensions installed in the venv, on a free
    port."""

    def __init__(self, root, app="server"):
        self.port = free_port()
        self.log = open(root / "server.log", "w")
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "jupyter"), app, "--no-browser", f"--port={self.port}",
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
    # CPU is measured between two requests. (Once in about ten runs one request of the panel's
    # got no reply within its 10 s, not reproduced since: the panel asks again, as here.)
    for _ in range(3):
        second = server.call("GET", path)["content"]
        if "reason" not in second:
            break
    assert isinstance(second.get("kernel_cpu"), (int, float)) and second["kernel_cpu"] >= 0, second
    server.call("DELETE", f"/api/kernels/{kernel['id']}")


def debug(kc, command, arguments=None, seq=[0]):
    """One DAP request through `debug_request` on control; returns the DAP response."""
    seq[0] += 1
    msg = kc.session.msg("debug_request", {"type": "request", "seq": seq[0], "command": command,
                                           "arguments": arguments or {}})
    kc.control_channel.send(msg)
    while True:
        reply = kc.control_channel.get_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            assert reply["msg_type"] == "debug_reply"
            return reply["content"]


def test_the_debuggers_variables_panel_through_debug_requests(tk):
    # JupyterLab's debugger as it talks to a kernel: kernel_info says there is one.
    info = tk.kernel_info(reply=True, timeout=60)["content"]
    assert "debugger" in info["supported_features"] and info["debugger"] is True
    assert debug(tk, "initialize", {"adapterID": "jupyterlab", "pathFormat": "path"})["success"]
    assert debug(tk, "attach")["success"]
    info = debug(tk, "debugInfo")["body"]
    assert info["isStarted"] and info["hashMethod"] == "Murmur2" and info["richRendering"]
    # JupyterLab names a cell's file itself: prefix + murmur2(code, seed) + suffix, the hash
    # ipykernel computes too.
    from ipykernel.compiler import murmur2_x86

    code = "let lr = 0.1f64;\nlet step = 3usize;"
    path = debug(tk, "dumpCell", {"code": code})["body"]["sourcePath"]
    assert path == f"{info['tmpFilePrefix']}{murmur2_x86(code, info['hashSeed'])}{info['tmpFileSuffix']}"
    assert Path(path).read_text() == code and (Path(path).stat().st_mode & 0o077) == 0
    # A breakpoint is kept; without an adapter it says why it cannot stop.
    set_ = debug(tk, "setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 2}]})
    assert set_["body"]["breakpoints"][0]["verified"] is (ADAPTER is not None), set_
    assert ADAPTER or "lldb" in set_["body"]["breakpoints"][0]["message"]
    assert debug(tk, "debugInfo")["body"]["breakpoints"][0]["source"] == path
    assert debug(tk, "setBreakpoints", {"source": {"path": path}, "breakpoints": []})["success"]
    # Cells run; after each one JupyterLab asks inspectVariables.
    from conftest import ok

    ok(tk, code)
    ok(tk, "let vs = nn::VarStore::new(Device::Cpu);\nlet net = nn::linear(vs.root() / \"fc\", 3, 2, Default::default());\n"
           "let loss = (net.forward(&Tensor::ones([4, 3], (Kind::Float, Device::Cpu))).sum(Kind::Float) * 0.0 + 0.25).detach();\n"
           "let names = vec![String::from(\"cat\"); 1000];")
    variables = {v["name"]: v for v in debug(tk, "inspectVariables")["body"]["variables"]}
    # Numbers go as Python's type names: JupyterLab's Variables tree shows values only for those.
    assert variables["step"]["value"] == "3" and variables["step"]["type"] == "int"
    assert variables["lr"]["value"] == "0.1"
    assert "[]" in variables["loss"]["value"] and variables["loss"]["type"] == "Tensor", variables["loss"]
    assert variables["names"]["value"].startswith('["cat", "cat"') and variables["names"]["value"].endswith("…")
    assert variables["vs"]["variablesReference"] > 0, variables["vs"]
    children = debug(tk, "variables", {"variablesReference": variables["vs"]["variablesReference"]})["body"]["variables"]
    assert {c["name"] for c in children} == {"fc.weight", "fc.bias"}, children
    assert any("[2, 3]" in c["value"] for c in children)
    rich = debug(tk, "richInspectVariables", {"variableName": "loss"})["body"]["data"]
    assert "Tensor" in rich["text/html"] and "0.25" in rich["text/html"], rich
    # A later cell's change shows at the next request, and a moved variable goes away. A
    # value whose Debug panics is described as "…", and its cell does not fail for it.
    ok(tk, "let step = step + 1; drop(names);\n"
           "struct Touchy; impl std::fmt::Debug for Touchy { fn fmt(&self, _: &mut std::fmt::Formatter) -> std::fmt::Result { panic!(\"no\") } }\n"
           "let touchy = Touchy;")
    variables = {v["name"]: v for v in debug(tk, "inspectVariables")["body"]["variables"]}
    assert variables["step"]["value"] == "4" and "names" not in variables
    assert variables["touchy"]["value"] == "…", variables["touchy"]
    assert debug(tk, "disconnect", {"restart": False, "terminateDebuggee": True})["success"]
    assert not debug(tk, "debugInfo")["body"]["isStarted"]


def debug_event(kc, event, deadline_s=300):
    """The next `debug_event` named `event` on IOPub (others are skipped)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            msg = kc.get_iopub_msg(timeout=max(0.1, end - time.monotonic()))
        except Exception:
            break
        if msg["msg_type"] == "debug_event" and msg["content"].get("event") == event:
            return msg["content"]
    raise AssertionError(f"no {event} event")


# A training step a cell defines, and a training loop's cell that calls it (a blank line before
# the push: a breakpoint there stops at the push).
STEP_FN = ("// one step of gradient descent on (w x - 1)^2\n"
           "fn train_step(w: &mut f64, x: f64) -> f64 {\n"
           "    let grad = 2.0 * (*w * x - 1.0) * x;\n"
           "    *w -= 0.1 * grad;\n"
           "    (*w * x - 1.0).powi(2)\n"
           "}")
TRAINING_LOOP = ("let mut w = 0.0f64;\n"
                 "let mut losses = Vec::new();\n"
                 "for step in 0..3 {\n"
                 "    let loss = train_step(&mut w, 1.0);\n"
                 "\n"
                 "    losses.push(loss);\n"
                 "}\n"
                 "println!(\"done {}\", losses.len());")


def frames(kc, thread):
    return debug(kc, "stackTrace", {"threadId": thread})["body"]["stackFrames"]


def locals_of(kc, frame):
    """The frame's locals, by name, and the scopes' names."""
    scopes = debug(kc, "scopes", {"frameId": frame["id"]})["body"]["scopes"]
    local = next(s for s in scopes if s["name"].lower().startswith("local"))
    variables = debug(kc, "variables", {"variablesReference": local["variablesReference"]})["body"]["variables"]
    return {v["name"]: v for v in variables}, [s["name"] for s in scopes]


def test_breakpoints_stop_in_cell_code_through_lldb_dap(tk):
    """As JupyterLab drives it: breakpoints in a function a cell defines and in a training
    loop's own statements; the stop shows the cells' files and lines, the locals and the
    session's variables; step, continue, and the cell finishes."""
    from conftest import ok

    if ADAPTER is None:
        pytest.skip("no lldb-dap on PATH: tests/run.sh installs lldb-19 when run as root")
    assert debug(tk, "initialize", {"adapterID": "jupyterlab", "pathFormat": "path"})["success"]
    assert debug(tk, "attach")["success"]
    step_fn, loop = STEP_FN, TRAINING_LOOP
    fn_path = debug(tk, "dumpCell", {"code": step_fn})["body"]["sourcePath"]
    loop_path = debug(tk, "dumpCell", {"code": loop})["body"]["sourcePath"]
    # A breakpoint set before the cell that defines the function runs, and one on the blank
    # line before `losses.push(loss)` (it stops at the push).
    debug(tk, "setBreakpoints", {"source": {"path": fn_path}, "breakpoints": [{"line": 4}]})
    debug(tk, "setBreakpoints", {"source": {"path": loop_path}, "breakpoints": [{"line": 5}]})
    debug(tk, "configurationDone")
    from conftest import run

    assert run(tk, step_fn, timeout=300)[0]["status"] == "ok"
    msg_id = tk.execute(loop)

    stopped = debug_event(tk, "stopped")
    thread = stopped["body"]["threadId"]
    assert thread in debug(tk, "debugInfo")["body"]["stoppedThreads"]
    stack = frames(tk, thread)
    top = stack[0]
    assert top["source"]["path"] == fn_path and top["line"] == 4, stack[:4]
    assert top["name"] == "train_step", top
    # The caller is the loop's cell, at the call, and the stack ends there (the engine's
    # frames below it are left out).
    caller = next(f for f in stack[1:] if f.get("source"))
    assert caller["source"]["path"] == loop_path and caller["line"] == 4, stack[:4]
    assert stack[-1] is caller and caller["name"] == "<cell>", stack
    local, scopes = locals_of(tk, top)
    assert float(local["grad"]["value"]) == -2.0 and float(local["x"]["value"]) == 1.0, local
    assert "Session" in scopes

    assert debug(tk, "continue", {"threadId": thread})["success"]
    stopped = debug_event(tk, "stopped")
    top = frames(tk, stopped["body"]["threadId"])[0]
    assert top["source"]["path"] == loop_path and top["line"] == 6, top
    local, _ = locals_of(tk, top)
    assert abs(float(local["loss"]["value"]) - 0.64) < 1e-9 and local["step"]["value"] == "0", local
    assert local["loss"]["type"] == "float", local["loss"]
    assert not [n for n in local if n.startswith(("__tch", "evcxr"))], "the engine's locals show"

    # Step over the push: the next stop is still in the loop's cell, past line 6 or back at
    # its head.
    assert debug(tk, "next", {"threadId": thread})["success"]
    stopped = debug_event(tk, "stopped")
    top = frames(tk, stopped["body"]["threadId"])[0]
    assert top["source"]["path"] == loop_path and top["line"] != 6, top

    # Breakpoints off, continue: the cell finishes as it would have.
    debug(tk, "setBreakpoints", {"source": {"path": fn_path}, "breakpoints": []})
    debug(tk, "setBreakpoints", {"source": {"path": loop_path}, "breakpoints": []})
    assert debug(tk, "continue", {"threadId": thread})["success"]
    reply = tk.get_shell_msg(timeout=300)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = tk.get_shell_msg(timeout=300)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert not debug(tk, "debugInfo")["body"]["stoppedThreads"]

    # With the adapter attached, an interrupt still stops a cell (SIGINT goes through).
    from conftest import run_interrupted, printed

    class ByMessage:  # the kernelspec's interrupt_mode is "message"
        def interrupt_kernel(self):
            tk.control_channel.send(tk.session.msg("interrupt_request", {}))

    reply, _ = run_interrupted(ByMessage(), tk, 'println!("spinning"); loop { std::hint::spin_loop(); }',
                               printed("spinning"))
    assert reply["status"] == "error", reply

    assert debug(tk, "disconnect", {"restart": False, "terminateDebuggee": False})["success"]
    # Detached: the session goes on.
    assert "[0.64" in "".join(c["data"]["text/plain"] for t, c in ok(tk, "losses") if t == "execute_result")


CHROMIUM = Path("/usr/bin/chromium")


def chromium_missing():
    """Why JupyterLab cannot be driven in a browser here, or None."""
    if ADAPTER is None:
        return "no lldb-dap on PATH: tests/run.sh installs lldb-19 when run as root"
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium: tests/run.sh installs Debian's chromium when run as root"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not in the venv: run ./install.sh"
    return None


def test_jupyterlabs_debugger_stops_in_a_training_loop_in_chromium(torch_env, tmp_path):
    """What a workshop participant does: opens a notebook in JupyterLab, turns the debugger on
    (the bug icon), sets a breakpoint in the training loop's cell by clicking its gutter, runs
    the cells; the cell stops there (the line highlighted), the Variables panel shows the
    loss, Next moves on, and with the breakpoint removed Continue lets the cell finish."""
    why = chromium_missing()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    step_fn, loop = STEP_FN, TRAINING_LOOP
    notebook = {
        "cells": [{"cell_type": "code", "metadata": {}, "source": code, "outputs": [],
                   "execution_count": None} for code in (step_fn, loop)],
        "metadata": {"kernelspec": {"name": TORCH_KERNEL_NAME, "display_name": "Rust",
                                    "language": "rust"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    (tmp_path / "train.ipynb").write_text(json.dumps(notebook))
    lab = Server(tmp_path, app="lab")
    try:
        lab.wait_up()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            try:
                page.goto(f"http://127.0.0.1:{lab.port}/lab/tree/train.ipynb?token={TOKEN}")
                # The bug icon is enabled once the kernel said it has a debugger.
                bug = page.locator("jp-button.jp-DebuggerBugButton[aria-disabled='false']")
                bug.wait_for(timeout=300_000)
                bug.click()
                page.locator("jp-button.jp-DebuggerBugButton[title='Disable Debugger']").wait_for(timeout=60_000)
                cells = page.locator(".jp-Notebook .jp-Cell")

                def toggle_breakpoint(cell, line):
                    """Clicks the breakpoint gutter beside line `line` (its line number's row)."""
                    number = cells.nth(cell).locator(".cm-lineNumbers .cm-gutterElement",
                                                     has_text=re.compile(rf"^{line}$"))
                    gutter = cells.nth(cell).locator("div.cm-gutter.cm-breakpoint-gutter").bounding_box()
                    row = number.bounding_box()
                    page.mouse.click(gutter["x"] + gutter["width"] / 2, row["y"] + row["height"] / 2)

                toggle_breakpoint(1, 6)  # `losses.push(loss);`
                page.locator(".jp-DebuggerBreakpoint").first.wait_for(timeout=60_000)
                cells.nth(0).click()
                page.keyboard.press("Escape")
                page.keyboard.press("Shift+Enter")
                page.keyboard.press("Shift+Enter")
                highlight = cells.nth(1).locator(".jp-DebuggerEditor-highlight")
                highlight.wait_for(timeout=300_000)
                assert "losses.push(loss)" in highlight.inner_text()
                frame = page.locator(".jp-DebuggerCallstackFrame.selected")
                assert "<cell>" in frame.inner_text(), frame.inner_text()
                # The loss of the first step, in the Variables panel.
                loss = page.locator("jp-tree-item", has=page.locator(
                    ".jp-DebuggerVariables-name", has_text=re.compile(r"^loss$"))).first
                loss.wait_for(timeout=60_000)
                value = loss.locator(".jp-DebuggerVariables-detail").first.inner_text()
                assert abs(float(value) - 0.64) < 1e-9, value
                # The cell's own variables, not those the engine wrote into it.
                names = page.locator(".jp-DebuggerVariables-name").all_inner_texts()
                assert "losses" in names and not [n for n in names if n.startswith(("__tch", "evcxr"))], names
                # Next: the highlight leaves the push.
                page.locator("jp-button[data-command='debugger:next']").click()
                page.wait_for_function(
                    "() => ![...document.querySelectorAll('.jp-DebuggerEditor-highlight')]"
                    ".some(e => e.textContent.includes('losses.push'))", timeout=60_000)
                # The breakpoint off, Continue: the cell finishes.
                toggle_breakpoint(1, 6)
                # JupyterLab lists it until the kernel answered; Continue only after that.
                page.wait_for_function(
                    "() => document.querySelectorAll('.jp-DebuggerBreakpoint').length === 0",
                    timeout=60_000)
                page.locator("jp-button[data-command='debugger:continue']").click()
                cells.nth(1).locator(".jp-OutputArea-output", has_text="done 3").wait_for(timeout=120_000)
                assert cells.nth(1).locator(".jp-DebuggerEditor-highlight").count() == 0
            except Exception:
                page.screenshot(path=str(tmp_path / "jupyterlab.png"))
                raise
            finally:
                browser.close()
    finally:
        lab.stop()


def test_the_kernelspec_offers_the_debugger(torch_env):
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(TORCH_KERNEL_NAME)
    assert spec.metadata.get("debugger") is True


def _proc_fields(pid, name):
    """/proc/<pid>/<name> (status, smaps_rollup) as {field: first word of its value}."""
    fields = {}
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.split():
            fields[key] = value.split()[0]
    return fields


def test_a_users_notebooks_share_one_zygote_that_loaded_libtorch(torch_env, tmp_path):
    # Two notebooks in folders of their own, each kernel with a variable of its own.
    kernels = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            kernels.append(start_torch({"ZYGOTE_PROBE": name}, cwd=tmp_path / name))
        zygotes = set()
        for (km, kc), name in zip(kernels, ("a", "b")):
            said = stdout_of(ok(kc, 'println!("{} {} {}", std::process::id(), '
                                    'std::env::var("ZYGOTE_PROBE").unwrap(), '
                                    'std::env::current_dir().unwrap().display());'))
            pid, probe, cwd = said.split()
            # Each process has its kernel's environment and folder, not the zygote's.
            assert (probe, cwd) == (name, str(tmp_path / name)), said
            kernel = km.provisioner.process.pid
            zygote = int(_proc_fields(pid, "status")["PPid"])
            assert zygote != kernel, "the kernel started its evaluation process itself"
            assert os.readlink(f"/proc/{zygote}/exe") == os.readlink(f"/proc/{kernel}/exe")
            zygotes.add(zygote)
            # libtorch's start-up (its operator registry, about 190 MB) is the zygote's pages,
            # shared copy-on-write, not loaded again.
            shared_kib = int(_proc_fields(pid, "smaps_rollup")["Shared_Dirty"])
            assert shared_kib > 64 * 1024, _proc_fields(pid, "smaps_rollup")
        assert len(zygotes) == 1, zygotes
        (zygote,) = zygotes
        assert "libtorch_cpu.so" in Path(f"/proc/{zygote}/maps").read_text()

        # A crash's signal comes through the zygote, which reaps the process; the next cell runs
        # in a new one it forks.
        km, kc = kernels[1]
        reply, _ = run(kc, "std::process::abort();", timeout=300)
        assert reply["ename"] == "EvaluatorCrashed" and "SIGABRT" in reply["evalue"], reply
        pid = int(result(ok(kc, "std::process::id()"))[0])
        assert int(_proc_fields(pid, "status")["PPid"]) == zygote
        # Usage counts the process, though it is not below the kernel.
        msg = kc.session.msg("usage_request", {})
        kc.control_channel.send(msg)
        while (reply := kc.control_channel.get_msg(timeout=60))["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            pass
        assert pid in [p["pid"] for p in reply["content"]["processes"]], reply["content"]
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_without_the_zygote_the_kernel_starts_its_evaluation_process(torch_env):
    km, kc = start_torch({"TCH_KERNEL_ZYGOTE": "off"})
    try:
        pid = int(result(ok(kc, "std::process::id()"))[0])
        assert int(_proc_fields(pid, "status")["PPid"]) == km.provisioner.process.pid
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
