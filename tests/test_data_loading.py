"""Your own data and PyTorch's weights through a real client, on material nobody here wrote:
scikit-image's photos re-encoded by Pillow (grayscale, CMYK, 16-bit, palette, progressive, one
truncated), arrays written by NumPy, and torchvision's ResNets with the weights Python gave
them, loaded into tch's `vision::resnet` and saved back for Python's `load_state_dict`."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from conftest import ok, result, run, run_interrupted, printed, start_torch, stdout_of
from make_image_folder import write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    made = write_folder(root)
    return root, made


@pytest.fixture(scope="module")
def dk(torch_env):
    km, kc = start_torch()
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel()


def test_an_image_folder_of_real_photos_through_workers(dk, folder):
    km, kc = dk
    root, made = folder
    ok(kc, f"""
let train = ImageFolder::new({json.dumps(str(root))})?.transform(Compose::new()
    .then(RandomResizedCrop::new(64)).then(RandomHorizontalFlip::default()).then(Normalize::imagenet()));
let loader = DataLoader::new(train).batch_size(8).shuffle(true).workers(2).skip_bad_files(true);
""")
    assert result(ok(kc, "(loader.dataset().classes().len(), loader.dataset().len(), loader.len())")) == \
        [f"(4, {len(made['files'])}, {-(-len(made['files']) // 8)})"]
    outputs = ok(kc, """
let mut seen = 0i64;
for (images, labels) in progress(&loader).desc("epoch 0") {
    assert_eq!(&images.size()[1..], &[3, 64, 64]);
    assert_eq!(images.kind(), Kind::Float);
    assert!(labels.max().int64_value(&[]) < 4);
    seen += labels.size()[0];
}
seen
""")
    # Every file but the truncated one, and a report naming it at the end of the epoch.
    assert result(outputs) == [str(len(made["files"]) - 1)]
    stderr = "".join(c["text"] for t, c in outputs if t == "stream" and c["name"] == "stderr")
    assert "skipped 1 unreadable file" in stderr and "truncated.jpg" in stderr, stderr
    bars = [c["data"]["text/plain"] for t, c in outputs if t in ("display_data", "update_display_data")]
    assert any("images/s" in b for b in bars), bars[-1:]

    # Without skipping, the cell stops with the file's name and the decoder's reason, and the
    # loader (and every variable) is kept for the next cell.
    reply, _ = run(kc, f"""
let strict = DataLoader::new(ImageFolder::new({json.dumps(str(root))})?.transform(CenterCrop::new(32))).batch_size(4).workers(2);
for (x, _) in &strict {{ let _ = x; }}
""", timeout=600)
    assert reply["status"] == "error"
    assert "truncated.jpg" in reply["evalue"] and "JPEG" in reply["evalue"], reply["evalue"]
    assert result(ok(kc, "loader.iter().count() == loader.len()")) == ["true"]


def test_decoding_and_transforms_match_pillow_and_torchvision(dk, folder, tmp_path):
    """The special files decode as Pillow's `convert("RGB")` does, and Resize(256) +
    CenterCrop(224) as torchvision's, to within JPEG decoders' and resamplers' rounding."""
    km, kc = dk
    root, made = folder
    paths = {k: str(v) for k, v in made["special"].items() if k != "truncated"}
    ok(kc, f"""
for [name, path] in {json.dumps(sorted(paths.items()))}.iter() {{
    let image = tch_data::decode(&std::fs::read(path)?).map_err(anyhow::Error::msg)?;
    Tensor::from_data_size(&image.pixels, &[image.height as i64, image.width as i64, 3], Kind::Uint8)
        .write_npy(format!("{tmp_path}/{{name}}.npy"))?;
}}
let eval = ImageFolder::new({json.dumps(str(root))})?.transform(Compose::new().then(Resize::new(256)).then(CenterCrop::new(224)));
let (one, _) = eval.sample(0, 0)?;
Tensor::from_data_size(&one.pixels, &[224, 224, 3], Kind::Uint8).write_npy("{tmp_path}/eval0.npy")?;
""")
    for name, path in paths.items():
        ours = np.load(tmp_path / f"{name}.npy").astype(np.int16)
        if name == "png16":
            # Pillow clips 16-bit values to 255 in convert("RGB"); the image is their top byte.
            top = (np.asarray(Image.open(path)).astype(np.uint32) >> 8).astype(np.int16)
            pillow = np.repeat(top[:, :, None], 3, axis=2)
        else:
            pillow = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
        assert ours.shape == pillow.shape, name
        diff = np.abs(ours - pillow)
        # PNGs are lossless; JPEG decoders differ by an IDCT rounding here and there. CMYK
        # JPEGs: Pillow writes Adobe's inverted CMYK, which both read back the same way.
        limit = 0 if path.lower().endswith(".png") else 3.0
        assert diff.mean() <= limit, (name, diff.mean(), diff.max())
    from torchvision import transforms as T
    first = sorted((root / "class_0").iterdir())[0]
    theirs = np.asarray(T.Compose([T.Resize(256), T.CenterCrop(224)])(Image.open(first).convert("RGB"))).astype(np.int16)
    ours = np.load(tmp_path / "eval0.npy").astype(np.int16)
    assert np.abs(ours - theirs).mean() < 2.0, np.abs(ours - theirs).mean()


def test_arrays_written_by_numpy(dk, tmp_path):
    km, kc = dk
    x = np.random.default_rng(0).standard_normal((50, 3), dtype=np.float32)
    y = np.arange(50, dtype=np.int64) % 3
    np.savez(tmp_path / "d.npz", inputs=x, labels=y)
    np.save(tmp_path / "short.npy", y[:40])
    np.save(tmp_path / "x.npy", x)
    outputs = ok(kc, f"""
let arrays = DataLoader::new(TensorDataset::from_npz("{tmp_path}/d.npz", "inputs", "labels")?).batch_size(16).workers(2);
let (mut total, mut count) = (0f64, 0i64);
for (x, y) in &arrays {{ total += x.sum(Kind::Double).double_value(&[]); count += y.size()[0]; }}
println!("{{count}} {{total:.4}}");
""")
    count, total = stdout_of(outputs).split()
    assert int(count) == 50 and abs(float(total) - float(x.astype(np.float64).sum())) < 1e-3
    reply, _ = run(kc, f'TensorDataset::from_npy("{tmp_path}/x.npy", "{tmp_path}/short.npy")?;', timeout=600)
    assert reply["status"] == "error" and "[50, 3]" in reply["evalue"] and "[40]" in reply["evalue"], reply["evalue"]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_torchvision_weights_give_the_same_outputs_and_fine_tuned_weights_go_back(dk, tmp_path, arch):
    km, kc = dk
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
    torch.save(model.state_dict(), tmp_path / f"{arch}.pth")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", expected.numpy())
    outputs = ok(kc, f"""
let vs = nn::VarStore::new(Device::Cpu);
// Boxed: resnet50 returns an `impl ModuleT`, which a later cell could not name.
let net: Box<dyn ModuleT> = Box::new(tch::vision::resnet::{arch}(&vs.root(), 1000));
let report = vs.load_state_dict("{tmp_path}/{arch}.pth")?;
println!("{{report}}");
let x = Tensor::read_npy("{tmp_path}/x.npy")?;
let y = net.forward_t(&x, false);
let diff = (&y - Tensor::read_npy("{tmp_path}/y.npy")?).abs().max().double_value(&[]);
println!("max abs diff {{diff:e}}");
""")
    text = stdout_of(outputs)
    assert "missing_keys (0)" in text and "unexpected_keys (0)" in text, text
    assert float(text.split("max abs diff ")[1].split()[0]) <= 1e-5, text

    # Fine-tune the head a few steps, then Python loads the result strictly and agrees.
    ok(kc, f"""
let mut opt = nn::Sgd::default().build(&vs, 0.01)?;
let target = Tensor::from_slice(&[3i64, 7]);
let before = net.forward_t(&x, true).cross_entropy_for_logits(&target).double_value(&[]);
for _ in 0..3 {{ opt.backward_step(&net.forward_t(&x, true).cross_entropy_for_logits(&target)); }}
let after = net.forward_t(&x, true).cross_entropy_for_logits(&target).double_value(&[]);
assert!(after < before, "{{before}} -> {{after}}");
net.forward_t(&x, false).write_npy("{tmp_path}/tuned.npy")?;
vs.save_state_dict("{tmp_path}/tuned.pth")?;
""")
    tuned = getattr(torchvision.models, arch)(weights=None)
    tuned.load_state_dict(torch.load(tmp_path / "tuned.pth"))  # strict, weights_only
    with torch.no_grad():
        again = tuned.eval()(x)
    assert torch.allclose(again, torch.from_numpy(np.load(tmp_path / "tuned.npy")), atol=1e-5)


def test_weights_of_another_architecture_are_refused_whole(dk, tmp_path):
    km, kc = dk
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), tmp_path / "r18.pth")
    ok(kc, """
let other = nn::VarStore::new(Device::Cpu);
let net34 = tch::vision::resnet::resnet34(&other.root(), 1000);
let fc_before = other.variables()["fc.weight"].copy();
""")
    reply, _ = run(kc, f'other.load_state_dict("{tmp_path}/r18.pth")?;', timeout=600)
    assert reply["status"] == "error"
    message = reply["evalue"]
    assert "nothing was loaded" in message and "missing_keys" in message and "layer1.2.bn1.bias" in message and "and 68 more" in message, message
    assert "fc.weight: the model has [1000, 512], the file [10, 512]" in message, message
    assert result(ok(kc, 'other.variables()["fc.weight"].equal(&fc_before)')) == ["true"]
    # Not strict: what matches is loaded, the rest reported.
    outputs = ok(kc, f'let report = other.load_state_dict_non_strict("{tmp_path}/r18.pth")?; (report.missing.len(), report.mismatched.len(), report.unexpected.len())')
    assert result(outputs)[0].startswith("(") and not result(outputs)[0].startswith("(0,"), result(outputs)


def test_an_interrupt_stops_the_loader_and_keeps_it(dk, folder):
    km, kc = dk
    root, _ = folder
    ok(kc, f"""
let slow = DataLoader::new(ImageFolder::new({json.dumps(str(root))})?.transform(Resize::exact(512, 512))).batch_size(1).workers(2).skip_bad_files(true);
""")
    reply, _ = run_interrupted(km, kc, """
println!("loading");
loop { for (x, _) in &slow { std::thread::sleep(std::time::Duration::from_millis(20)); let _ = x; } }
""", printed("loading"), timeout=120)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert result(ok(kc, "slow.iter().take(3).count()")) == ["3"]


def test_a_data_set_of_the_users_that_panics_in_a_worker_is_the_cells_error(dk):
    km, kc = dk
    reply, _ = run(kc, """
struct Flaky;
impl Dataset for Flaky {
    fn len(&self) -> usize { 8 }
    fn batch(&self, indices: &[usize], _: &tch_data::BatchContext<'_>) -> Result<tch_data::Batch, DataError> {
        if indices.contains(&5) { panic!("sample 5 is corrupt"); }
        let x = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        Ok(tch_data::Batch { inputs: x.shallow_clone(), targets: x })
    }
}
let flaky = DataLoader::new(Flaky).batch_size(2).workers(2);
for (x, _) in &flaky { let _ = x; }
""", timeout=600)
    assert reply["status"] == "error" and "sample 5 is corrupt" in reply["evalue"], reply
    assert "worker panicked" in reply["evalue"], reply["evalue"]
    assert result(ok(kc, "1 + 1")) == ["2"]
