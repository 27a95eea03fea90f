"""The Rust ecosystem in a cell, through a real client, with code nobody here wrote: `:dep` of
crates from the registry (plain, with a build script, with features, heavy, made for evcxr's
display), a path dependency on a crate of the user's that uses tch, several `:dep`s in one cell,
`:dep` without network, the errors of a `:dep` that cannot be, and tch's own examples pasted
whole into cells and run as their programs run.

A `:dep` compiles the new crates only: the prelude and the crates it is built with are never
built again (checked on the kernel's own build dir), and the cells after it load and run."""

import base64
import os
import re
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import ok, result, run, start_torch, stdout_of

# Names of the engine's internals that no message may show.
INTERNALS = ("LOAD_AND_RUN", "libcode_", "run_user_code_", "ctx v1.0.0", "evcxr")


def dep_dir(km, torch_env):
    """The running kernel's build dir for `cargo`'s outputs (`deps/`)."""
    pid = km.provisioner.process.pid
    instance = Path(torch_env["TCH_KERNEL_CACHE_DIR"]) / "instances" / f"{socket.gethostname()}-{pid}"
    deps = instance / "build" / "target" / "x86_64-unknown-linux-gnu" / "debug" / "deps"
    assert deps.is_dir(), deps
    return deps


def built(deps):
    """Every library cargo built so far, with its inode and modification time."""
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in deps.iterdir()
        if p.suffix in (".rlib", ".so", ".rmeta") and not p.name.startswith("libcode_") and not p.name.startswith("libctx")
    }


def assert_only_added(before, after):
    """Nothing built before was built again: only new files."""
    changed = sorted(name for name, stamp in before.items() if after.get(name) != stamp)
    assert not changed, f"rebuilt by a :dep: {changed}"


def failed(kc, code):
    """Runs `code`, which must fail with a one-line message in the user's terms; returns it."""
    reply, outputs = run(kc, code, timeout=600)
    assert reply["status"] == "error", (code, outputs)
    message = reply["evalue"]
    assert "\n" not in message.strip(), message
    shown = message + "\n".join(reply["traceback"])
    for word in INTERNALS:
        assert word not in shown, (word, shown)
    return message


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("deps")


@pytest.fixture(scope="module")
def dk(torch_env, work):
    """A libtorch kernel whose working directory is `work` (as a notebook's folder)."""
    km, kc = start_torch(cwd=work)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


def test_a_dep_builds_only_the_new_crate_and_later_cells_run(dk, torch_env):
    km, kc = dk
    ok(kc, "let kept = 41;")
    deps = dep_dir(km, torch_env)
    before = built(deps)
    assert "libtch_prelude.so" in before
    # evcxr's tour: a small pure-Rust crate, used in the same cell.
    assert result(ok(kc, ':dep base64 = "0.10.1"\nbase64::encode(&vec![1, 2, 3, 4])')) == ['"AQIDBA=="']
    after = built(deps)
    assert_only_added(before, after)
    assert any(name.startswith("libbase64-") for name in set(after) - set(before))
    assert result(ok(kc, "kept + 1")) == ["42"]


def test_several_deps_in_one_cell_with_a_build_script_and_features(dk, torch_env):
    km, kc = dk
    deps = dep_dir(km, torch_env)
    before = built(deps)
    # num-bigint has a build script (autocfg); smallvec is asked for with features.
    outputs = ok(kc, """:dep num-bigint = "0.4"
:dep smallvec = { version = "1", features = ["const_generics", "union"] }
let big: num_bigint::BigUint = (1u32..=30).product();
let small: smallvec::SmallVec<[u8; 4]> = smallvec::smallvec![1, 2, 3];
(big.to_string(), small.len(), small.spilled())""")
    assert result(outputs) == ['("265252859812191058636308480000000", 3, false)']
    assert_only_added(before, built(deps))


def test_crates_made_for_evcxr_display_show_as_images_and_html(dk, torch_env):
    km, kc = dk
    deps = dep_dir(km, torch_env)
    before = built(deps)
    # evcxr's tour: a heavy crate (image and its codecs) and a crate made for evcxr's display.
    outputs = ok(kc, ':dep image = "0.23"\n:dep evcxr_image = "1.1"')
    assert_only_added(before, built(deps))
    # While they build, one line names the crate compiling; at the end, what was built.
    lines = [c["data"]["text/plain"] for t, c in outputs if t in ("display_data", "update_display_data")]
    assert lines and lines[0].startswith("compiling "), outputs
    assert re.match(r"compiled \d+ crates in \d+ s: .*\bimage\b", lines[-1]), lines[-1]
    outputs = ok(kc, """use evcxr_image::ImageDisplay;
image::ImageBuffer::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 128u8])).evcxr_display();""")
    shown = [c["data"] for t, c in outputs if t in ("execute_result", "display_data") and "image/png" in c["data"]]
    assert shown, outputs
    assert base64.b64decode(shown[0]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    # plotters' own evcxr form (as its README has it): the prelude is built with it.
    outputs = ok(kc, """:dep plotters = { version = "0.3", default-features = false, features = ["evcxr", "all_series"] }
use plotters::prelude::*;
evcxr_figure((160, 120), |root| {
    root.fill(&WHITE)?;
    root.draw(&Circle::new((80, 60), 30, RED.filled()))?;
    Ok(())
})""")
    html = [c["data"]["text/html"] for t, c in outputs if t == "execute_result" and "text/html" in c["data"]]
    assert html and "<svg" in html[0] and "<circle" in html[0], outputs


def test_a_path_dependency_that_uses_tch_shares_the_kernels_tch(dk, torch_env, work):
    km, kc = dk
    major_minor = ".".join(torch_env["TCH_KERNEL_TCH_VERSION"].split(".")[:2])
    lib = work / "research-lib"
    (lib / "src").mkdir(parents=True)
    (lib / "Cargo.toml").write_text(f"""[package]
name = "research-lib"
version = "0.1.0"
edition = "2021"

[dependencies]
tch = "{major_minor}"
""")
    (lib / "src" / "lib.rs").write_text("""use tch::{Kind, Tensor};

/// A group's own layer, beside its notebooks.
pub fn scaled_sum(t: &Tensor, scale: f64) -> Tensor {
    (t * scale).sum(Kind::Float)
}
""")
    deps = dep_dir(km, torch_env)
    before = built(deps)
    # A path relative to the notebook's folder; the crate's tch is the kernel's (the prelude's
    # `Tensor` is accepted by its function only if it is the same crate).
    outputs = ok(kc, """:dep research-lib = { path = "research-lib" }
research_lib::scaled_sum(&Tensor::from_slice(&[1.0f32, 2.0, 3.0]), 2.0).double_value(&[])""")
    assert result(outputs) == ["12.0"]
    after = built(deps)
    assert_only_added(before, after)
    # No second tch or torch-sys (its C++ shim) was built: the kernel's are the crate's.
    added = set(after) - set(before)
    assert any(n.startswith("libresearch_lib-") for n in added), sorted(added)
    assert not [n for n in added if n.startswith(("libtch-", "libtorch_sys-"))], sorted(added)


def test_a_dep_that_cannot_be_says_why_in_one_line_and_keeps_every_variable(dk):
    km, kc = dk
    ok(kc, "let model_weights = Tensor::ones([2, 2], (Kind::Float, Device::Cpu)); let steps = 7;")
    message = failed(kc, ':dep no-such-crate-tch-kernel-test = "1"')
    assert "no crate named `no-such-crate-tch-kernel-test` in the crate registry" in message
    # Another version of a crate the prelude is built with.
    message = failed(kc, ':dep serde_json = "=1.0.100"')
    assert re.search(r"needs serde_json 1\.0\.100 \(the kernel has 1\.0\.\d+\)", message), message
    assert "no variable is lost" in message
    # More features of one.
    message = failed(kc, ':dep serde = { version = "1", features = ["rc"] }')
    assert "feature `rc` of serde" in message, message
    # A second native libtorch binding.
    message = failed(kc, ':dep tch = "0.20"')
    assert "links the native library `tch`" in message and "the kernel's torch-sys" in message, message
    # A feature that does not exist: cargo's words, without the generated crate.
    message = failed(kc, ':dep anyhow = { version = "1", features = ["no-such-feature"] }')
    assert "no-such-feature" in message, message
    assert result(ok(kc, "(model_weights.sum(Kind::Float).double_value(&[]), steps)")) == ["(4.0, 7)"]
    # The refused crates were not added: a later cell builds as before.
    assert result(ok(kc, "steps + 1")) == ["8"]


def test_a_library_that_fails_to_load_says_which_and_why(dk, work):
    km, kc = dk
    # A crate that links a shared library of its own, which is not on the loader's path at run
    # time (a common mistake with native code): the cell compiles, then cannot be loaded.
    native = work / "native-dir"
    native.mkdir()
    (native / "twice.c").write_text("int tch_kernel_test_twice(int x) { return 2 * x; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(native / "libtchktwice.so"), str(native / "twice.c")], check=True)
    crate = work / "uses-native"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "uses-native"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "build.rs").write_text(
        f'fn main() {{ println!("cargo:rustc-link-search=native={native}"); println!("cargo:rustc-link-lib=dylib=tchktwice"); }}\n')
    (crate / "src" / "lib.rs").write_text(
        'extern "C" { fn tch_kernel_test_twice(x: i32) -> i32; }\npub fn twice(x: i32) -> i32 { unsafe { tch_kernel_test_twice(x) } }\n')
    ok(kc, "let before_native = 5;")
    message = failed(kc, ':dep uses-native = { path = "uses-native" }\nuses_native::twice(21)')
    assert "could not be loaded" in message and "libtchktwice.so: cannot open shared object file" in message, message
    assert result(ok(kc, "before_native")) == ["5"]


def test_a_dep_without_network_uses_crates_fetched_before(torch_env):
    # No registry can be reached (a closed port): a crate this machine fetched before (the
    # installer fetched the workspace's) resolves offline; one never fetched says what to do.
    dead = "http://127.0.0.1:9"
    km, kc = start_torch({"CARGO_HTTP_PROXY": dead, "https_proxy": dead, "http_proxy": dead})
    try:
        ok(kc, "let kept = 3;")
        assert result(ok(kc, ':dep hex = "0.4"\nhex::encode([0xcau8, 0xfe])')) == ['"cafe"']
        message = failed(kc, ':dep leftpad = "0.2"')
        assert message.startswith("`:dep leftpad = \"0.2\"`: it needs crates never fetched on this machine") and "login node" in message, message
        assert result(ok(kc, "kept")) == ["3"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel()


# tch's own examples, pasted whole into a cell each, then their entry point called in the next.
def tch_examples(torch_env):
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    version = torch_env["TCH_KERNEL_TCH_VERSION"]
    found = sorted(home.glob(f"registry/src/*/tch-{version}/examples"))
    assert found, f"tch {version}'s sources are not in {home} (install.sh fetches them)"
    return found[0]


def write_mnist(data, train=200, test=50):
    """MNIST's IDX files (uncompressed), with images that tell their label (a bright band)."""
    data.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = bytes((i * 7) % 10 for i in range(n))
        pixels = bytearray()
        for label in labels:
            image = bytearray(784)
            image[label * 70:label * 70 + 70] = b"\xff" * 70
            pixels += image
        (data / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + pixels)
        (data / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels)


def test_tchs_examples_pasted_whole_run_as_their_programs(dk, torch_env, work):
    km, kc = dk
    examples = tch_examples(torch_env)
    write_mnist(work / "data")
    (work / "data" / "input.txt").write_text("To be, or not to be, that is the question.\n" * 20)

    # basics.rs: `fn main()` with CUDA queries. A program built with tch's link flags loads
    # libtorch_cuda whenever libtorch has it, GPU or not, and so does the kernel: the cuDNN
    # and CUDA runtime versions print (a CPU-only libtorch fails there, as the program does).
    ok(kc, (examples / "basics.rs").read_text())
    cuda_build = (Path(torch_env["LIBTORCH"]) / "lib" / "libtorch_cuda.so").exists()
    reply, outputs = run(kc, "main()", timeout=600)
    printed = stdout_of(outputs)
    assert "Grad 1.24" in printed and "has_mps: false" in printed, printed
    if cuda_build:
        assert reply["status"] == "ok", reply
        assert re.search(r"version_cudnn: \d+\nversion_cudart: \d+", printed), printed
    else:
        assert reply["status"] == "error" and "Cannot query cuDNN version without ATen_cuda library" in reply["evalue"]

    # mnist/main.rs, whole: `mod mnist_conv; mod mnist_linear; mod mnist_nn;` are its files beside
    # the notebook (as beside main.rs), `fn main() -> Result<()>` picks the model from the
    # program's arguments (none here: the nn model) and reads ./data as the program does.
    for module in ("mnist_conv.rs", "mnist_linear.rs", "mnist_nn.rs"):
        (work / module).write_text((examples / "mnist" / module).read_text())
    ok(kc, (examples / "mnist" / "main.rs").read_text())
    printed = stdout_of(ok(kc, "main()?;"))
    assert re.search(r"epoch:  199 train loss: +[0-9.]+ test acc: 100\.00%", printed), printed[-500:]
    # One of those files pasted whole as well (`pub fn run() -> Result<()>`, `use tch::..`).
    ok(kc, (examples / "mnist" / "mnist_linear.rs").read_text())
    printed = stdout_of(ok(kc, "run()?;"))
    assert "train-images: [200, 784]" in printed
    assert re.search(r"epoch:  199 train loss: +[0-9.]+ test acc: 100\.00%", printed), printed[-500:]
    # The conv model through the module: 99 epochs (fewer than 256 images: evaluation only).
    printed = stdout_of(ok(kc, "mnist_conv::run()?;"))
    assert len(re.findall(r"epoch: +\d+ test acc:", printed)) == 99, printed[-500:]

    # custom-optimizer/main.rs: `mod sparse_adam;` (its file beside the notebook), and a
    # `fn main()` that unwraps `run()`.
    (work / "sparse_adam.rs").write_text((examples / "custom-optimizer" / "sparse_adam.rs").read_text())
    ok(kc, (examples / "custom-optimizer" / "main.rs").read_text())
    printed = stdout_of(ok(kc, "main()"))
    assert re.search(r"epoch:  199 train loss: +[0-9.]+ test acc: +[0-9.]+%", printed), printed[-500:]

    # vae/main.rs: `pub fn main() -> Result<()>`, which writes a PNG per epoch into the cwd.
    ok(kc, (examples / "vae" / "main.rs").read_text())
    printed = stdout_of(ok(kc, "main()?;"))
    assert "Epoch: 20, loss:" in printed, printed[-500:]
    assert all((work / f"s_{epoch}.png").read_bytes()[:4] == b"\x89PNG" for epoch in range(1, 21))

    # min-gpt/main.rs: loads ./data/input.txt, builds its model, then wants an argument, which a
    # program started without one does not have: its error is the cell's, as the program's.
    ok(kc, (examples / "min-gpt" / "main.rs").read_text())
    reply, outputs = run(kc, "main()?;", timeout=600)
    assert "Dataset loaded" in stdout_of(outputs)
    assert reply["status"] == "error" and reply["evalue"] == "usage: main (train|predict weights.ot seqstart)", reply

    # A `mod` whose file is not there says where it looked.
    message = failed(kc, "mod no_such_module;")
    assert "`mod no_such_module;` needs the file no_such_module.rs" in message and str(work) in message, message
