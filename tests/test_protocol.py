"""Protocol behaviour through jupyter_client, beyond the conformance suite: busy/idle on every
channel, execution counts, stop-on-error aborts, panics and crashes, interrupts (message and
signal mode), stdin, shutdown/restart, bad signatures and malformed frames."""

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import zmq
from jupyter_client.session import Session

from conftest import SIGNAL_KERNEL_NAME, run, start, stdout_of

TIMEOUT = 120


def iopub_until_idle(kc, parent_id, timeout=30):
    """IOPub messages whose parent is `parent_id`, up to and including its idle status."""
    msgs = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != parent_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs
    raise AssertionError(f"no idle for {parent_id}")


def reply_to(kc, msg_id, channel="shell", timeout=TIMEOUT):
    get = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    while True:
        msg = get(timeout=timeout)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


def test_first_cell_is_one_and_silent_cells_do_not_count(kernel):
    _, kc = kernel
    reply, outputs = run(kc, "40 + 2")
    assert reply["status"] == "ok"
    count = reply["execution_count"]
    assert ("execute_result", {"data": {"text/plain": "42"}, "execution_count": count, "metadata": {}}) in outputs

    msg_id = kc.execute("1 + 1", silent=True)
    assert reply_to(kc, msg_id)["content"]["execution_count"] == count
    types = [m["msg_type"] for m in iopub_until_idle(kc, msg_id)]
    assert types == ["status", "status"], "silent cells publish nothing but busy/idle"

    msg_id = kc.execute("1 + 1", store_history=False)
    assert reply_to(kc, msg_id)["content"]["execution_count"] == count
    reply, _ = run(kc, "1")
    assert reply["execution_count"] == count + 1


def test_fresh_kernel_counts_from_one():
    km, kc = start()
    try:
        reply, outputs = run(kc, 'let greeting = "hello";')
        assert reply["execution_count"] == 1
        assert outputs[0] == ("execute_input", {"code": 'let greeting = "hello";', "execution_count": 1})
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_kernel_info_on_control_with_busy_idle(kernel):
    _, kc = kernel
    msg = kc.session.msg("kernel_info_request")
    kc.control_channel.send(msg)
    reply = reply_to(kc, msg["header"]["msg_id"], channel="control")
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["language_info"]["name"] == "rust"
    # As numbers: "5.10" is newer than "5.4".
    assert tuple(int(p) for p in reply["content"]["protocol_version"].split(".")) >= (5, 4)
    states = [m["content"]["execution_state"] for m in iopub_until_idle(kc, msg["header"]["msg_id"])]
    assert states == ["busy", "idle"]


def test_every_shell_request_gets_busy_idle(kernel):
    _, kc = kernel
    for send in (lambda: kc.complete("String::ne"), lambda: kc.is_complete("fn f() {"), lambda: kc.history(), lambda: kc.comm_info()):
        msg_id = send()
        reply_to(kc, msg_id)
        states = [m["content"]["execution_state"] for m in iopub_until_idle(kc, msg_id) if m["msg_type"] == "status"]
        assert states == ["busy", "idle"]


def test_stop_on_error_aborts_queued_cells(kernel):
    _, kc = kernel
    failing = kc.execute('panic!("first fails")')
    queued = [kc.execute('println!("must not run");'), kc.execute("2 + 2")]
    assert reply_to(kc, failing)["content"]["status"] == "error"
    for msg_id in queued:
        assert reply_to(kc, msg_id)["content"]["status"] == "aborted"
        states = [m["content"]["execution_state"] for m in iopub_until_idle(kc, msg_id) if m["msg_type"] == "status"]
        assert states == ["busy", "idle"]
    # After the queue is drained, cells run again.
    reply, outputs = run(kc, "2 + 2")
    assert reply["status"] == "ok"

    # stop_on_error=False does not abort what follows.
    failing = kc.execute('panic!("tolerated")', stop_on_error=False)
    following = kc.execute("3 + 3")
    assert reply_to(kc, failing)["content"]["status"] == "error"
    assert reply_to(kc, following)["content"]["status"] == "ok"


def test_panic_reports_error_and_keeps_variables(kernel):
    _, kc = kernel
    assert run(kc, "let kept = 41;")[0]["status"] == "ok"
    reply, outputs = run(kc, 'let lost = 1; panic!("boom {}", kept)')
    assert reply["status"] == "error"
    assert reply["ename"] == "Panic"
    assert reply["evalue"] == "boom 41"
    errors = [c for t, c in outputs if t == "error"]
    assert len(errors) == 1 and errors[0]["evalue"] == "boom 41"
    reply, outputs = run(kc, "kept + 1")
    assert ("execute_result", {"data": {"text/plain": "42"}, "execution_count": reply["execution_count"], "metadata": {}}) in outputs


def test_compile_error_has_traceback(kernel):
    _, kc = kernel
    reply, outputs = run(kc, 'let n: i32 = "text";')
    assert reply["status"] == "error"
    assert reply["ename"] == "CompilationError"
    assert "mismatched types" in reply["evalue"]
    assert any("expected `i32`" in line for line in reply["traceback"])
    assert [t for t, _ in outputs] == ["execute_input", "error"]


def test_native_writes_to_fd_1_and_2_reach_the_notebook(kernel):
    _, kc = kernel
    code = """
use std::io::Write;
use std::os::fd::FromRawFd;
for fd in [1, 2] {
    // What a C library (libtorch) does: write(2) on the raw descriptor, bypassing Rust's stdout.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(format!("raw fd {}\\n", fd).as_bytes()).unwrap();
    std::mem::forget(f);
}
"""
    reply, outputs = run(kc, code)
    assert reply["status"] == "ok", reply
    streams = {c["name"]: c["text"] for t, c in outputs if t == "stream"}
    assert "raw fd 1" in streams.get("stdout", "")
    assert "raw fd 2" in streams.get("stderr", "")


def test_output_and_displays_keep_their_order(kernel):
    _, kc = kernel
    reply, outputs = run(kc, 'println!("a"); display_mime("text/html", "<i>b</i>"); println!("c");')
    assert reply["status"] == "ok"
    seq = [(t, c.get("text") or c.get("data")) for t, c in outputs if t in ("stream", "display_data")]
    assert seq == [("stream", "a\n"), ("display_data", {"text/html": "<i>b</i>"}), ("stream", "c\n")]


def test_partial_lines_and_long_output(kernel):
    _, kc = kernel
    reply, outputs = run(kc, 'for i in 0..2000 { println!("line {i}"); }')
    assert reply["status"] == "ok"
    text = stdout_of(outputs)
    assert text.count("\n") == 2000 and text.endswith("line 1999\n")
    # Output is batched: far fewer messages than lines.
    assert sum(1 for t, _ in outputs if t == "stream") < 200


def test_input_request_round_trip(kernel):
    _, kc = kernel
    prompts = []

    def answer(msg):
        prompts.append((msg["content"]["prompt"], msg["content"]["password"]))
        kc.input("Ada: 100%" if not msg["content"]["password"] else "s3cret")

    code = 'let name = input("Name: "); let pw = password("Password:"); println!("hi {name} {}", pw.len());'
    reply, outputs = run(kc, code, allow_stdin=True, stdin_hook=answer)
    assert reply["status"] == "ok", reply
    assert prompts == [("Name: ", False), ("Password:", True)]
    assert stdout_of(outputs) == "hi Ada: 100% 6\n"


def test_input_without_stdin_fails_clearly(kernel):
    _, kc = kernel
    reply, _ = run(kc, 'let v = input("x? ");', allow_stdin=False)
    assert reply["status"] == "error"
    assert "allow_stdin" in reply["evalue"]


def test_comms(kernel):
    _, kc = kernel
    msg_id = kc.comm_info()
    assert reply_to(kc, msg_id)["content"] == {"status": "ok", "comms": {}}
    comm_id = uuid.uuid4().hex
    msg = kc.session.msg("comm_open", {"comm_id": comm_id, "target_name": "no.such.target", "data": {}})
    kc.shell_channel.send(msg)
    msgs = iopub_until_idle(kc, msg["header"]["msg_id"])
    closes = [m for m in msgs if m["msg_type"] == "comm_close"]
    assert closes and closes[0]["content"]["comm_id"] == comm_id


def _raw_dealer(km, channel):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    port = {"shell": km.shell_port, "control": km.control_port}[channel]
    sock.connect(f"tcp://{km.ip}:{port}")
    return sock


def test_wrong_signature_is_dropped_and_kernel_stays_up(kernel):
    km, kc = kernel
    for channel in ("shell", "control"):
        sock = _raw_dealer(km, channel)
        bad = Session(key=b"not-the-key")
        bad.send(sock, "execute_request", {"code": 'println!("intruder");', "silent": False})
        assert sock.poll(2000) == 0, "a message with a wrong signature must get no reply"
        sock.close()
    reply, outputs = run(kc, "1 + 1")
    assert reply["status"] == "ok"
    assert "intruder" not in stdout_of(outputs)


def test_malformed_frames_do_not_kill_the_kernel(kernel):
    km, kc = kernel
    good = kc.session
    for channel in ("shell", "control"):
        sock = _raw_dealer(km, channel)
        sock.send_multipart([b"garbage"])
        sock.send_multipart([b"<IDS|MSG>"])
        sock.send_multipart([b"<IDS|MSG>", b"", b"{}", b"{}"])
        header = good.pack(good.msg_header("execute_request"))
        parts = [header, b"not json", b"{}", b"[1, 2]"]
        sock.send_multipart([b"<IDS|MSG>", good.sign(parts).encode() if isinstance(good.sign(parts), str) else good.sign(parts)] + parts)
        sock.close()
    # A well-signed request with invalid content is answered with an error, not a crash.
    msg = good.msg("execute_request", {"code": 5})
    kc.shell_channel.send(msg)
    assert reply_to(kc, msg["header"]["msg_id"])["content"]["status"] == "error"
    assert km.is_alive()
    assert kc.is_alive()
    reply, _ = run(kc, "7 * 6")
    assert reply["status"] == "ok"


def _interrupt_running_cell(km, kc):
    msg_id = kc.execute('println!("started"); std::thread::sleep(std::time::Duration::from_secs(120)); println!("not reached");')
    # Wait until the cell is really running (its first line arrived).
    deadline = time.time() + 90
    while time.time() < deadline:
        msg = kc.get_iopub_msg(timeout=90)
        if msg["msg_type"] == "stream" and "started" in msg["content"]["text"]:
            break
    # Control and heartbeat stay live while the cell runs.
    info = kc.session.msg("kernel_info_request")
    kc.control_channel.send(info)
    assert reply_to(kc, info["header"]["msg_id"], channel="control", timeout=10)["content"]["status"] == "ok"
    assert kc.hb_channel.is_beating()
    km.interrupt_kernel()
    # The cell sleeps for 120 s: a reply within 30 s means the interrupt stopped it.
    return reply_to(kc, msg_id, timeout=30)["content"]


def test_interrupt_message_mode_stops_cell(kernel):
    km, kc = kernel
    reply = _interrupt_running_cell(km, kc)
    assert reply["status"] == "error"
    assert reply["ename"] == "KeyboardInterrupt"
    # The restart says which variables went with it.
    assert any("restarted" in line and "lost" in line.lower() for line in reply["traceback"])
    assert km.is_alive()
    reply, outputs = run(kc, "6 * 7")
    assert reply["status"] == "ok"


def test_interrupt_while_idle_keeps_variables(kernel):
    km, kc = kernel
    run(kc, "let survivor = 5;")
    # The kernelspec's interrupt_mode is "message": wait for the kernel's interrupt_reply.
    interrupt = kc.session.msg("interrupt_request", {})
    kc.control_channel.send(interrupt)
    assert reply_to(kc, interrupt["header"]["msg_id"], channel="control", timeout=30)["msg_type"] == "interrupt_reply"
    reply, outputs = run(kc, "survivor")
    assert reply["status"] == "ok", reply
    assert ("execute_result", {"data": {"text/plain": "5"}, "execution_count": reply["execution_count"], "metadata": {}}) in outputs


def test_interrupt_signal_mode():
    km, kc = start(SIGNAL_KERNEL_NAME)
    try:
        reply = _interrupt_running_cell(km, kc)
        assert reply["ename"] == "KeyboardInterrupt"
        assert km.is_alive(), "SIGINT must not kill the kernel"
        assert run(kc, "1 + 1")[0]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


CRASHES = {
    "abort": "std::process::abort();",
    "segfault": "unsafe { std::ptr::null_mut::<i32>().write_volatile(1) };",
}


def test_crashed_child_is_restarted_with_a_clear_message():
    km, kc = start()
    try:
        for kind, code in CRASHES.items():
            run(kc, "let before_crash = 1;")
            reply, _ = run(kc, code)
            assert reply["status"] == "error", kind
            assert reply["ename"] == "EvaluatorCrashed", kind
            assert any("Lost: `before_crash` (1 variable)" in line for line in reply["traceback"]), reply
            reply, _ = run(kc, "1 + 1")
            assert reply["status"] == "ok"
            reply, _ = run(kc, "before_crash")
            assert reply["status"] == "error"
        # A panic after the restart is still reported as a panic (the hook was reinstalled).
        reply, _ = run(kc, 'panic!("after restart")')
        assert reply["ename"] == "Panic"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def _session_of(kc):
    msg_id = kc.kernel_info()
    return reply_to(kc, msg_id)["header"]["session"]


def test_restart_then_shutdown():
    km, kc = start()
    try:
        run(kc, "let gone_after_restart = 1;")
        first = _session_of(kc)
        km.restart_kernel(now=False)
        kc.wait_for_ready(timeout=60)
        assert _session_of(kc) != first, "a restarted kernel has a new session id"
        reply, _ = run(kc, "gone_after_restart")
        assert reply["status"] == "error"
        assert run(kc, "2 + 2")[0]["status"] == "ok"
        process = km.provisioner.process
        km.shutdown_kernel(now=False)
        assert not km.is_alive()
        assert process.returncode == 0, "the kernel exits by itself on shutdown_request"
    finally:
        kc.stop_channels()


def test_shutdown_request_on_shell_is_honoured():
    km, kc = start()
    try:
        msg = kc.session.msg("shutdown_request", {"restart": False})
        kc.shell_channel.send(msg)
        reply = reply_to(kc, msg["header"]["msg_id"])
        assert reply["content"] == {"status": "ok", "restart": False}
        process = km.provisioner.process
        process.wait(timeout=15)
        assert process.returncode == 0
    finally:
        kc.stop_channels()
        km.cleanup_resources()


def test_ipc_transport():
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="tch-kernel-test", transport="ipc")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply, outputs = run(kc, 'println!("over ipc");')
        assert reply["status"] == "ok"
        assert stdout_of(outputs) == "over ipc\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def _alive(pid):
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def test_the_evaluation_process_does_not_outlive_a_killed_kernel():
    # Jupyter's forced shutdown is SIGKILL; a kernel whose client died exits while its cell
    # runs. Either way an endless cell must not go on in an orphaned evaluation process.
    km, kc = start()
    try:
        ok_reply, outputs = run(kc, "std::process::id()")
        assert ok_reply["status"] == "ok"
        kernel_pid = km.provisioner.process.pid
        # The kernel's zygote forked it: it is not below the kernel.
        children = [int(c["data"]["text/plain"]) for t, c in outputs if t == "execute_result"]
        assert children, "the kernel has no evaluation process"
        msg_id = kc.execute('println!("spinning"); loop {}')
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        os.kill(kernel_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while any(_alive(c) for c in children):
            assert time.monotonic() < deadline, f"evaluation process {children} outlived the kernel"
            time.sleep(0.2)
    finally:
        kc.stop_channels()
        km.cleanup_resources()
