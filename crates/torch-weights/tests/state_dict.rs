//! Round trips through the writer and the reader, and the load report. Files written by Python
//! (torchvision's ResNets) are checked in tests/test_data_loading.py.

use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};
use torch_weights::{StateDict, VarStoreStateDict, WeightsError};

fn model(vs: &VarStore, out: i64) {
    let p = vs.root();
    let _ = nn::linear(&p / "fc", 4, out, Default::default());
    let _ = nn::batch_norm1d(&p / "bn", 4, Default::default());
}

#[test]
fn a_saved_var_store_loads_back_and_mismatches_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.pth");
    let a = VarStore::new(Device::Cpu);
    model(&a, 3);
    a.save_state_dict(&path).unwrap();
    let sd = StateDict::read(&path).unwrap();
    let names: Vec<&str> = sd.tensors().iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"bn.num_batches_tracked"), "{names:?}");
    assert_eq!(
        sd.get("bn.num_batches_tracked").unwrap().kind(),
        Kind::Int64
    );

    let b = VarStore::new(Device::Cpu);
    model(&b, 3);
    let report = b.load_state_dict(&path).unwrap();
    assert!(report.fits(), "{report}");
    assert_eq!(report.ignored, ["bn.num_batches_tracked"]);
    for (name, t) in a.variables() {
        assert!(t.equal(&b.variables()[&name]), "{name}");
    }

    // Another head: strict refuses and loads nothing; non-strict loads the rest.
    let c = VarStore::new(Device::Cpu);
    model(&c, 5);
    let _ = tch::no_grad(|| c.variables()["bn.weight"].shallow_clone().fill_(7.0));
    let err = c.load_state_dict(&path).unwrap_err();
    let WeightsError::Mismatch(report) = &err else {
        panic!("{err}")
    };
    assert_eq!(report.mismatched.len(), 2);
    let message = err.to_string();
    assert!(
        message.contains("fc.weight: the model has [5, 4], the file [3, 4]"),
        "{message}"
    );
    assert_eq!(
        c.variables()["bn.weight"].double_value(&[0]),
        7.0,
        "nothing loaded"
    );
    let report = c.load_state_dict_non_strict(&path).unwrap();
    assert_eq!(report.matched.len(), 4);
    assert!(c.variables()["bn.weight"].equal(&a.variables()["bn.weight"]));

    // A file from another model.
    let d = VarStore::new(Device::Cpu);
    let _ = nn::linear(d.root() / "head", 4, 3, Default::default());
    let report = d.load_state_dict_non_strict(&path).unwrap();
    assert_eq!(report.missing, ["head.bias", "head.weight"]);
    assert_eq!(report.unexpected.len(), 6);
    assert_eq!(report.ignored, ["bn.num_batches_tracked"]);
}

#[test]
fn safetensors_views_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = VarStore::new(Device::Cpu);
    model(&a, 3);
    let st = dir.path().join("w.safetensors");
    a.save_state_dict(&st).unwrap();
    let b = VarStore::new(Device::Cpu);
    model(&b, 3);
    assert!(b.load_state_dict(&st).unwrap().fits());

    // A truncated archive and a file of another kind: errors naming the file.
    let pth = dir.path().join("w.pth");
    a.save_state_dict(&pth).unwrap();
    let bytes = std::fs::read(&pth).unwrap();
    std::fs::write(&pth, &bytes[..bytes.len() / 2]).unwrap();
    let err = StateDict::read(&pth).unwrap_err().to_string();
    assert!(err.contains("w.pth"), "{err}");
    std::fs::write(&pth, b"hello").unwrap();
    assert!(
        StateDict::read(&pth)
            .unwrap_err()
            .to_string()
            .contains("w.pth")
    );

    // Kinds survive, and select() takes a checkpoint's part.
    let t = Tensor::arange(6, (Kind::Half, Device::Cpu))
        .view([2, 3])
        .tr();
    let vs = VarStore::new(Device::Cpu);
    let _ = (vs.root() / "model").var_copy("x", &t);
    let p = dir.path().join("half.pt");
    vs.save_state_dict(&p).unwrap();
    let sd = StateDict::read(&p).unwrap().select("model");
    assert!(sd.get("x").unwrap().equal(&t));
}
