//! The loader and the data sets on real files: PNGs written here (the JPEG cases, made by
//! Pillow, are in tests/test_data_loading.py).

use std::path::Path;

use tch::{Kind, Tensor};
use tch_data::{
    Batch, BatchContext, CenterCrop, Compose, DataError, DataLoader, Dataset, DatasetExt,
    ImageFolder, Normalize, RandomHorizontalFlip, RandomResizedCrop, TensorDataset,
};

fn write_png(path: &Path, width: u32, height: u32, value: u8) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let data: Vec<u8> = (0..width * height * 3)
        .map(|i| value.wrapping_add(i as u8))
        .collect();
    writer.write_image_data(&data).unwrap();
}

/// `classes` folders of `per_class` PNGs of several sizes; image k's first byte is k.
fn image_folder(classes: usize, per_class: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut k = 0u8;
    for c in 0..classes {
        let class = dir.path().join(format!("class{c}"));
        std::fs::create_dir(&class).unwrap();
        for i in 0..per_class {
            write_png(&class.join(format!("{i:03}.png")), 20 + i as u32, 16, k);
            k += 1;
        }
    }
    dir
}

fn first_bytes(images: &Tensor) -> Vec<u8> {
    let n = images.size()[0];
    (0..n)
        .map(|i| images.int64_value(&[i, 0, 0, 0]) as u8)
        .collect()
}

#[test]
fn an_image_folder_batches_in_order_and_the_same_whatever_the_workers() {
    let dir = image_folder(3, 5);
    let folder = ImageFolder::new(dir.path()).unwrap();
    assert_eq!(folder.classes(), ["class0", "class1", "class2"]);
    assert_eq!(folder.len(), 15);
    let load = |workers| {
        let loader = DataLoader::new(
            ImageFolder::new(dir.path())
                .unwrap()
                .transform(CenterCrop::new(8)),
        )
        .batch_size(4)
        .workers(workers)
        .shuffle(true)
        .seed(7);
        assert_eq!(loader.len(), 4);
        let epochs: Vec<Vec<(Vec<u8>, Vec<i64>)>> = (0..2)
            .map(|_| {
                loader
                    .iter()
                    .map(|(x, y)| {
                        assert_eq!(x.kind(), Kind::Uint8);
                        assert_eq!(&x.size()[1..], &[3, 8, 8]);
                        (first_bytes(&x), Vec::<i64>::try_from(&y).unwrap())
                    })
                    .collect()
            })
            .collect();
        epochs
    };
    let inline = load(0);
    assert_eq!(inline, load(1));
    assert_eq!(inline, load(3));
    assert_ne!(inline[0], inline[1], "a new order each epoch");
    // The last batch is smaller, and every image comes once per epoch with its label.
    assert_eq!(inline[0].last().unwrap().0.len(), 3);
    let mut labels: Vec<i64> = inline[0].iter().flat_map(|(_, l)| l.clone()).collect();
    labels.sort();
    assert_eq!(labels, (0..15).map(|k| k / 5).collect::<Vec<i64>>());
}

#[test]
fn random_transforms_depend_on_seed_epoch_and_index_only() {
    let dir = image_folder(2, 4);
    let t = || {
        Compose::new()
            .then(RandomResizedCrop::new(8))
            .then(RandomHorizontalFlip::default())
    };
    let batches = |workers, seed| {
        let loader = DataLoader::new(ImageFolder::new(dir.path()).unwrap().transform(t()))
            .batch_size(3)
            .workers(workers)
            .seed(seed);
        loader
            .epoch(5)
            .map(|(x, _)| Vec::<u8>::try_from(&x.flatten(0, -1)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(batches(0, 1), batches(2, 1));
    assert_ne!(batches(0, 1), batches(0, 2));
}

#[test]
fn normalize_in_the_transform_is_applied_to_the_batch() {
    let dir = image_folder(1, 2);
    let loader = DataLoader::new(
        ImageFolder::new(dir.path()).unwrap().transform(
            Compose::new()
                .then(CenterCrop::new(4))
                .then(Normalize::imagenet()),
        ),
    )
    .batch_size(2);
    let (x, _) = loader.iter().next().unwrap();
    assert_eq!(x.kind(), Kind::Float);
    let raw = DataLoader::new(
        ImageFolder::new(dir.path())
            .unwrap()
            .transform(CenterCrop::new(4)),
    )
    .batch_size(2)
    .iter()
    .next()
    .unwrap()
    .0;
    let expected = Normalize::imagenet().apply_to_batch(&raw).unwrap();
    assert!(x.allclose(&expected, 1e-6, 1e-6, false));
}

#[test]
fn shards_of_one_epoch_cover_it_once_whatever_the_world_size() {
    let x = Tensor::arange(10, (Kind::Int64, tch::Device::Cpu));
    let all = |world: usize| {
        let mut seen = Vec::new();
        for rank in 0..world {
            let ds = TensorDataset::new(x.shallow_clone(), x.shallow_clone()).unwrap();
            let loader = DataLoader::new(ds)
                .batch_size(2)
                .shuffle(true)
                .seed(3)
                .workers(1)
                .shard(rank, world)
                .unwrap();
            for (xb, _) in loader.epoch(1) {
                seen.extend(Vec::<i64>::try_from(&xb).unwrap());
            }
        }
        seen
    };
    let one = all(1);
    assert_eq!(one.len(), 10);
    for world in [2, 3, 4] {
        let mut seen = all(world);
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..10).collect::<Vec<_>>(), "world {world}");
    }
    assert!(
        DataLoader::new(TensorDataset::new(x.shallow_clone(), x.shallow_clone()).unwrap())
            .shard(2, 2)
            .is_err()
    );
}

#[test]
fn drop_last_and_splits() {
    let x = Tensor::arange(10, (Kind::Int64, tch::Device::Cpu));
    let ds = TensorDataset::new(x.shallow_clone(), x.shallow_clone()).unwrap();
    let loader = DataLoader::new(ds).batch_size(4).drop_last(true);
    assert_eq!(loader.len(), 2);
    assert_eq!(loader.iter().count(), 2);
    let (train, val) = TensorDataset::new(x.shallow_clone(), x.shallow_clone())
        .unwrap()
        .split(0.8, 1)
        .unwrap();
    assert_eq!((train.len(), val.len()), (8, 2));
    let mut both: Vec<usize> = train
        .indices()
        .iter()
        .chain(val.indices())
        .copied()
        .collect();
    both.sort();
    assert_eq!(both, (0..10).collect::<Vec<_>>());
    let (again, _) = TensorDataset::new(x.shallow_clone(), x)
        .unwrap()
        .split(0.8, 1)
        .unwrap();
    assert_eq!(again.indices(), train.indices());
}

#[test]
fn bad_inputs_are_errors_that_name_what_is_wrong() {
    let dir = image_folder(2, 2);
    std::fs::create_dir(dir.path().join("empty_class")).unwrap();
    let err = ImageFolder::new(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("empty_class") && err.contains("no image files"),
        "{err}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = ImageFolder::new(empty.path()).unwrap_err().to_string();
    assert!(err.contains("no class folders"), "{err}");
    let err = TensorDataset::new(
        Tensor::zeros([3, 2], tch::kind::FLOAT_CPU),
        Tensor::zeros([4], tch::kind::FLOAT_CPU),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[3, 2]") && err.contains("[4]"), "{err}");

    // A truncated file stops the epoch with its name; skipped, it is counted instead.
    let dir = image_folder(1, 3);
    let bad = dir.path().join("class0/001.png");
    let bytes = std::fs::read(&bad).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let make = || {
        ImageFolder::new(dir.path())
            .unwrap()
            .transform(CenterCrop::new(4))
    };
    let mut epoch_loader = DataLoader::new(make()).batch_size(1).workers(2);
    let mut epoch = epoch_loader.iter();
    let errors: Vec<DataError> = std::iter::from_fn(|| epoch.try_next())
        .filter_map(Result::err)
        .collect();
    drop(epoch);
    assert_eq!(errors.len(), 1);
    let message = errors[0].to_string();
    assert!(
        message.contains("001.png") && message.contains("PNG"),
        "{message}"
    );
    epoch_loader = epoch_loader.skip_bad_files(true);
    assert_eq!(
        epoch_loader.iter().count(),
        2,
        "the batch of the one bad file is passed over"
    );
    let skipped = epoch_loader.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].contains("001.png"));

    // Images of different sizes without a transform that evens them out.
    let dir = image_folder(1, 2);
    let err = DataLoader::new(ImageFolder::new(dir.path()).unwrap())
        .batch_size(2)
        .workers(0)
        .iter()
        .try_next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("Resize"), "{err}");
}

struct Panics;

impl Dataset for Panics {
    fn len(&self) -> usize {
        4
    }
    fn batch(&self, indices: &[usize], _: &BatchContext<'_>) -> Result<Batch, DataError> {
        if indices.contains(&2) {
            panic!("sample 2 is cursed");
        }
        let i = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        Ok(Batch {
            inputs: i.shallow_clone(),
            targets: i,
        })
    }
}

#[test]
fn a_worker_s_panic_is_the_epoch_s_error_and_the_workers_go_on() {
    let loader = DataLoader::new(Panics).batch_size(1).workers(2);
    for _ in 0..2 {
        let results: Vec<_> = std::iter::from_fn({
            let mut epoch = loader.iter();
            move || epoch.try_next()
        })
        .collect();
        assert_eq!(results.len(), 3, "two batches, then the error");
        let err = results[2].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("sample 2 is cursed") && err.contains("worker panicked"),
            "{err}"
        );
    }
    // In a loop, the panic becomes the cell's error.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.iter().count()));
    let message = caught.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("sample 2 is cursed"), "{message}");
}

#[test]
fn csv_lists_take_indices_or_class_names() {
    let dir = image_folder(2, 2);
    let csv = dir.path().join("list.csv");
    std::fs::write(
        &csv,
        "label,path\ncat,class0/000.png\ndog,class1/000.png\ncat,class0/001.png\n",
    )
    .unwrap();
    let list = ImageFolder::from_csv(&csv).unwrap();
    assert_eq!(list.classes(), ["cat", "dog"]);
    let labels: Vec<i64> = list.samples().iter().map(|s| s.1).collect();
    assert_eq!(labels, [0, 1, 0]);
    std::fs::write(&csv, "class0/000.png,3\nclass1/000.png,-1\n").unwrap();
    let err = ImageFolder::from_csv(&csv).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("negative"), "{err}");
    std::fs::write(&csv, "class0/000.png,3\nclass1/001.png,1\n").unwrap();
    let list = ImageFolder::from_csv(&csv).unwrap();
    assert_eq!(list.classes().len(), 4);
    let (x, y) = DataLoader::new(list.transform(CenterCrop::new(4)))
        .batch_size(2)
        .iter()
        .next()
        .unwrap();
    assert_eq!(x.size(), [2, 3, 4, 4]);
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [3, 1]);

    // Labels beyond a model's classes are an error naming the image.
    let err = ImageFolder::from_csv(&csv)
        .unwrap()
        .num_classes(3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("000.png") && err.contains("label 3 is out of range for 3 classes"),
        "{err}"
    );
    assert_eq!(
        ImageFolder::from_csv(&csv)
            .unwrap()
            .num_classes(10)
            .unwrap()
            .classes()
            .len(),
        10
    );
    let y = Tensor::from_slice(&[0i64, 2, 5, 1]);
    let err = TensorDataset::new(Tensor::zeros([4, 2], tch::kind::FLOAT_CPU), y)
        .unwrap()
        .num_classes(5)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 2: target 5 is out of range for 5 classes"),
        "{err}"
    );
}

#[test]
fn arrays_from_npy_npz_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::arange(12, tch::kind::FLOAT_CPU).view([6, 2]);
    let y = Tensor::arange(6, (Kind::Int64, tch::Device::Cpu));
    x.write_npy(dir.path().join("x.npy")).unwrap();
    y.write_npy(dir.path().join("y.npy")).unwrap();
    Tensor::write_npz(&[("x", &x), ("y", &y)], dir.path().join("d.npz")).unwrap();
    Tensor::write_safetensors(&[("x", &x), ("y", &y)], dir.path().join("d.safetensors")).unwrap();
    for ds in [
        TensorDataset::from_npy(dir.path().join("x.npy"), dir.path().join("y.npy")).unwrap(),
        TensorDataset::from_npz(dir.path().join("d.npz"), "x", "y").unwrap(),
        TensorDataset::from_safetensors(dir.path().join("d.safetensors"), "x", "y").unwrap(),
    ] {
        let loader = DataLoader::new(ds).batch_size(4).workers(1);
        let batches: Vec<(Tensor, Tensor)> = loader.iter().collect();
        assert_eq!(batches.len(), 2);
        assert!(batches[0].0.equal(&x.narrow(0, 0, 4)));
        assert!(batches[1].1.equal(&y.narrow(0, 4, 2)));
    }
    let err = TensorDataset::from_npz(dir.path().join("d.npz"), "x", "labels")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"labels\"") && err.contains("d.npz"), "{err}");
}
