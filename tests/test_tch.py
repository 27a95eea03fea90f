"""tch through a real client: the prelude is there without `:dep` or `use`, tensors, autograd,
training, VarStore save/load, `:gpu`, several kernels of one spec at once, offline cells."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TORCH_KERNEL_NAME, install_torch_spec, ok, result, run, start_torch, stdout_of, wait_for_analyzer


def test_prelude_is_in_scope_and_tensors_compute(tk):
    ok(tk, "let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);")
    ok(tk, "let b = &a * 2 + 1;")
    assert result(ok(tk, "Vec::<f32>::try_from(&b).unwrap()")) == ["[3.0, 5.0, 7.0]"]
    assert result(ok(tk, "b.size()")) == ["[3]"]
    assert result(ok(tk, "a.matmul(&b).double_value(&[])")) == ["34.0"]
    # CPU exactly when CUDA is not usable: holds on a CPU machine and on a GPU node.
    assert result(ok(tk, "(Device::cuda_if_available() == Device::Cpu) == !Cuda::is_available()")) == ["true"]
    # Errors from libtorch come back as Rust errors, not crashes.
    assert result(ok(tk, "a.f_view([7]).is_err()")) == ["true"]


def test_variables_of_many_types_persist(tk):
    """Variable types are named by rustc (tch-kernel's evcxr fork), not rust-analyzer."""
    ok(tk, """
let vs = nn::VarStore::new(Device::Cpu);
let net = nn::seq().add(nn::linear(vs.root() / "l", 2, 1, Default::default()));
let mut counts = std::collections::HashMap::<String, i32>::new();
let shared = Some(std::sync::Arc::new(std::sync::Mutex::new(3u8)));
let (X, mut y) = (Tensor::ones([4, 2], (Kind::Float, Device::Cpu)), vec![1.5f64]);
let name = "literal";
let boxed: Box<dyn Fn(i32) -> i32> = Box::new(|a| a + 1);
struct Point { x: f64 }
let p = Point { x: 2.5 };
""")
    ok(tk, 'counts.insert("a".into(), 1); y.push(2.5);')
    assert result(ok(tk, "net.forward(&X).size()")) == ["[4, 1]"]
    assert result(ok(tk, "(counts[\"a\"], y.len(), *shared.as_ref().unwrap().lock().unwrap(), name, boxed(1), p.x)")) == \
        ['(1, 2, 3, "literal", 2, 2.5)']
    # Shadowing with another type, and a variable of a type only the prelude's tch names.
    ok(tk, 'let name = name.len(); let opt = nn::Adam::default().build(&vs, 1e-3).unwrap();')
    assert result(ok(tk, "name + 1")) == ["8"]
    ok(tk, "drop(opt);")
    # Closures cannot be kept, and the error says how to keep them.
    reply, _ = run(tk, "let f = |a: i32| a * 2;", timeout=600)
    assert reply["status"] == "error" and "closure" in reply["evalue"]
    # A compile error in a cell with `let` is reported against the user's code.
    reply, _ = run(tk, "let z = undefined_function(1);", timeout=600)
    assert reply["status"] == "error" and "undefined_function" in reply["evalue"]
    assert result(ok(tk, "p.x * 2.0")) == ["5.0"]


def test_completion_knows_tensor_methods(tk):
    # From the names saved at install (a `let` of the same cell), and from rust-analyzer for a
    # field of the cell's own struct, which loads it.
    code = "let t = Tensor::zeros([1], (Kind::Float, Device::Cpu)); t.matm"
    matches = tk.complete(code, len(code), reply=True, timeout=300)["content"]["matches"]
    assert any(m.startswith("matmul") for m in matches), matches
    assert "warm_field" in wait_for_analyzer(tk)["matches"]


def test_autograd(tk):
    ok(tk, "let x = Tensor::from_slice(&[2.0f64, -3.0]).set_requires_grad(true);")
    ok(tk, "let y = (&x * &x * 3.0).sum(Kind::Double); y.backward();")
    assert result(ok(tk, "Vec::<f64>::try_from(x.grad()).unwrap()")) == ["[12.0, -18.0]"]
    assert result(ok(tk, "no_grad(|| (&x * 2).requires_grad())")) == ["false"]


def test_training_a_small_network(tk):
    ok(tk, """
fn model(p: &nn::Path) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(p / "l1", 2, 16, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "l2", 16, 1, Default::default()))
}
tch::manual_seed(0);
let vs = nn::VarStore::new(Device::Cpu);
let net = model(&vs.root());
let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
let xs = Tensor::rand([256, 2], (Kind::Float, Device::Cpu));
let ys = (xs.select(1, 0) * 3.0 - xs.select(1, 1) * 2.0 + 0.5).unsqueeze(1);
""")
    # Variables (model, optimizer, data) carry over to the next cell.
    out = ok(tk, """
let mut losses: Vec<f64> = Vec::new();
for _ in 0..150 {
    let loss = net.forward(&xs).mse_loss(&ys, Reduction::Mean);
    opt.backward_step(&loss);
    losses.push(loss.double_value(&[]));
}
println!("first {:.5} last {:.5}", losses[0], losses[losses.len() - 1]);
""")
    first, last = [float(w) for w in stdout_of(out).split()[1::2]]
    assert last < first * 0.1, (first, last)
    # The loss keeps going down: each block of 30 steps averages lower than the one before.
    code = "let m: Vec<f64> = losses.chunks(30).map(|c| c.iter().sum::<f64>() / 30.0).collect(); m.windows(2).all(|w| w[1] < w[0])"
    assert result(ok(tk, code)) == ["true"]


def test_varstore_safetensors_round_trip(tk, tmp_path):
    path = tmp_path / "model.safetensors"
    ok(tk, f'vs.save({json.dumps(str(path))}).unwrap();')
    assert path.stat().st_size > 0
    ok(tk, f"""
let mut vs2 = nn::VarStore::new(Device::Cpu);
let net2 = model(&vs2.root());
vs2.load({json.dumps(str(path))}).unwrap();
""")
    assert result(ok(tk, "net.forward(&xs).allclose(&net2.forward(&xs), 1e-6, 1e-6, false)")) == ["true"]
    assert result(ok(tk, "vs2.variables().len()")) == ["4"]


def test_gpu_command_reports_the_device(tk, torch_env):
    text = stdout_of(ok(tk, ":gpu"))
    assert f"libtorch {torch_env['TCH_KERNEL_TORCH_VERSION']} (tch {torch_env['TCH_KERNEL_TCH_VERSION']})" in text, text
    cuda = result(ok(tk, "Cuda::is_available()")) == ["true"]
    if cuda:
        assert "CUDA available:" in text and "Device::cuda_if_available() = Cuda(0)" in text, text
    else:
        assert "CUDA not available: running on CPU" in text, text


def test_two_kernels_of_one_spec_run_at_once(torch_env):
    cache = Path(torch_env["TCH_KERNEL_CACHE_DIR"])
    kernels = [start_torch() for _ in range(2)]
    try:
        # Both build cells at the same time, each in its own build dir.
        ids = [kc.execute("(Tensor::ones([2, 2], (Kind::Float, Device::Cpu)) * 2).sum(Kind::Float).double_value(&[])") for _, kc in kernels]
        for (km, kc), msg_id in zip(kernels, ids):
            while True:
                reply = kc.get_shell_msg(timeout=600)
                if reply["parent_header"]["msg_id"] == msg_id:
                    break
            assert reply["content"]["status"] == "ok", reply["content"]
        instances = {p.name for p in (cache / "instances").iterdir()}
        pids = {str(km.provisioner.pid) for km, _ in kernels}
        assert all(any(name.endswith("-" + pid) for name in instances) for pid in pids), (instances, pids)
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel()
    remaining = {p.name for p in (cache / "instances").iterdir()}
    assert not any(name.endswith("-" + pid) for name in remaining for pid in pids), "build dirs are removed at shutdown"


def test_a_kernel_without_its_prebuilt_prelude_says_why_the_first_cell_waits(torch_env, tmp_path):
    # A cache whose prebuilt prelude another installation wrote (its stamp): this kernel builds
    # its own before the first cell runs, which says so once. The build is this installation's
    # own (hard links), so cargo finds it fresh and the test is quick.
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    cache = tmp_path / "cache"
    shutil.copytree(Path(torch_env["TCH_KERNEL_CACHE_DIR"]) / "prebuilt", cache / "prebuilt", copy_function=link)
    stamp = cache / "prebuilt" / "stamp"
    stamp.unlink()  # a link to the real stamp: not written through
    stamp.write_text("installed by another checkout\n")
    name = "tch-kernel-test-foreign-cache"
    install_torch_spec(name, dict(torch_env, TCH_KERNEL_CACHE_DIR=str(cache)))
    km, kc = start_torch(name=name)
    try:
        first = ok(kc, "1 + 1")
        notices = "".join(c["text"] for t, c in first if t == "stream" and c["name"] == "stderr")
        assert f"the prebuilt prelude in {cache} was built for another installation" in notices, first
        assert "Run install.sh again" in notices
        assert result(first) == ["2"]
        second = ok(kc, "2 + 2")
        assert not any(t == "stream" and c["name"] == "stderr" for t, c in second), second
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


@pytest.mark.parametrize("offline_flag", [True, False], ids=["CARGO_NET_OFFLINE", "no-flag"])
def test_cells_build_offline(torch_env, offline_flag):
    # Any attempt to reach a registry goes to a closed port and fails at once; the prelude's
    # dependencies are prebuilt and locked, so cells never need one, flagged offline or not.
    dead = "http://127.0.0.1:9"
    env = {"CARGO_HTTP_PROXY": dead, "https_proxy": dead, "http_proxy": dead}
    if offline_flag:
        env["CARGO_NET_OFFLINE"] = "true"
    km, kc = start_torch(env)
    try:
        ok(kc, "let t = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([2, 3]);")
        assert result(ok(kc, "t.sum(Kind::Int64).int64_value(&[])")) == ["15"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


def test_torch_kernelspec_is_listed_with_its_environment(torch_env):
    jupyter = Path(sys.executable).parent / "jupyter"
    specs = json.loads(subprocess.run([str(jupyter), "kernelspec", "list", "--json"], check=True, capture_output=True, text=True).stdout)["kernelspecs"]
    env = specs[TORCH_KERNEL_NAME]["spec"]["env"]
    assert env["LD_LIBRARY_PATH"] == f"{env['LIBTORCH']}/lib:${{LD_LIBRARY_PATH}}"
    assert Path(env["LIBTORCH"], "lib", "libtorch_cpu.so").exists()
    assert (Path(env["TCH_KERNEL_CACHE_DIR"]) / "prebuilt").is_dir()


def test_a_program_started_outside_the_kernel_sees_none_of_its_variables(tk):
    """Every variable the kernel or its evaluation process sets for itself (not the kernelspec's
    settings, not the kernel's executable) is left out of what `outside_the_kernel` starts, as
    builds and jobs from a cell are: a new one the kernel starts setting fails here until it is
    listed."""
    from jupyter_client.kernelspec import KernelSpecManager

    launched = set(os.environ) | set(KernelSpecManager().get_kernel_spec(TORCH_KERNEL_NAME).env)
    ours = lambda names: {n for n in names if n.startswith(("TCH_KERNEL_", "EVCXR_")) and n not in launched}
    code = """
let inside: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
let out = outside_the_kernel(&mut std::process::Command::new("env")).output().unwrap();
let outside: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=')).map(|(k, _)| k.to_owned()).collect();
println!("{}", serde_json::json!({"inside": inside, "outside": outside}));
"""
    seen = json.loads(stdout_of(ok(tk, code)))
    set_by_the_kernel = ours(seen["inside"])
    assert {"EVCXR_IS_RUNTIME", "TCH_KERNEL_EXE", "EVCXR_INTERRUPT_COUNTER"} <= set_by_the_kernel, set_by_the_kernel
    # The kernel's executable is passed on on purpose: a job's program may submit another notebook.
    assert ours(seen["outside"]) == {"TCH_KERNEL_EXE"}, f"left to programs started from a cell: {ours(seen['outside'])}"


def torch_minor(torch_env):
    return tuple(int(x) for x in torch_env["TCH_KERNEL_TORCH_VERSION"].split("+")[0].split(".")[:2])


# linalg_polar: added in PyTorch 2.14 (native_functions.yaml), so in no tch release.
POLAR_CELL = """{
    let a = Tensor::from_slice2(&[[2.0f64, 1.0], [0.5, 3.0]]);
    let (u, h) = Tensor::linalg_polar(&a);
    let eye = Tensor::eye(2, (Kind::Double, Device::Cpu));
    let err = |t: Tensor| t.abs().max().double_value(&[]);
    (err(u.mm(&h) - &a) < 1e-12, err(u.tr().mm(&u) - &eye) < 1e-12, err(h.tr() - &h) < 1e-12)
}"""


def test_an_operator_new_in_the_kernels_pytorch(tk, torch_env):
    """Bindings generated from the environment's own operator list reach operators no tch release
    has; a kernel on an older PyTorch says clearly that there is no such function."""
    reply, outputs = run(tk, POLAR_CELL, timeout=600)
    if torch_minor(torch_env) >= (2, 14):
        assert reply["status"] == "ok", reply
        assert result(outputs) == ["(true, true, true)"]
    else:
        assert reply["status"] == "error"
        assert "no function or associated item named `linalg_polar` found" in reply["evalue"], reply["evalue"]


def test_operators_pytorch_removed_keep_their_methods(tk):
    """torch::cholesky and torch::qr are gone from PyTorch 2.14; tch's methods for them stay, on
    linalg_cholesky and linalg_qr (`some` is mode \"reduced\"), on every PyTorch."""
    ok(tk, "let spd = Tensor::from_slice2(&[[4.0f64, 2.0], [2.0, 3.0]]);")
    assert result(ok(tk, "(spd.cholesky(false) - spd.linalg_cholesky(false)).abs().max().double_value(&[])")) == ["0.0"]
    ok(tk, "let m = Tensor::from_slice2(&[[1.0f64, 2.0], [3.0, 4.0], [5.0, 6.0]]);")
    assert result(ok(tk, "let (q, r) = m.qr(true); (q.size(), r.size(), (q.mm(&r) - &m).abs().max().double_value(&[]) < 1e-12)")) == \
        ["([3, 2], [2, 2], true)"]
    assert result(ok(tk, "let (q, r) = m.qr(false); (q.size(), r.size())")) == ["([3, 3], [3, 2])"]
