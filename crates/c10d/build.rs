//! Compiles `shim/c10d.cpp` against the environment's libtorch (`$LIBTORCH`, as torch-sys
//! finds it) and the vendored gloo headers the wheels do not carry. Where libtorch has CUDA
//! (`lib/libtorch_cuda.so`) and NCCL's and CUDA's headers are found, the shim gets NCCL groups
//! too; elsewhere creating one is an error that says why.
use std::path::{Path, PathBuf};

/// Where to look for the headers ProcessGroupNCCL.hpp needs (NCCL's, and CUDA's runtime with
/// its `crt/` and CCCL's `nv/`): a CUDA toolkit (`CUDA_HOME`, as a cluster's CUDA module sets
/// it), `NCCL_INCLUDE_DIR` and `CPATH`, then the `nvidia-*` wheels beside `torch/`
/// (`nvidia/nccl/include`, `nvidia/cu13/include`, ...), then Triton's copy of CUDA's headers (a
/// dependency of the CUDA wheels, with the `crt/` the runtime wheel lacks).
fn cuda_include_dirs(libtorch: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = std::env::var_os(var) {
            dirs.push(PathBuf::from(dir).join("include"));
        }
    }
    if let Some(dir) = std::env::var_os("NCCL_INCLUDE_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(cpath) = std::env::var_os("CPATH") {
        dirs.extend(std::env::split_paths(&cpath));
    }
    if let Some(site) = libtorch.parent() {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut wheels: Vec<PathBuf> = entries
                .filter_map(|e| Some(e.ok()?.path().join("include")))
                .collect();
            wheels.sort();
            dirs.extend(wheels);
        }
        dirs.push(site.join("triton/backends/nvidia/include"));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Headers that a CUDA build of ProcessGroupNCCL.hpp includes, one from each package.
const CUDA_HEADERS: [&str; 4] = [
    "nccl.h",
    "cuda_runtime_api.h",
    "crt/host_config.h",
    "nv/target",
];

fn main() {
    println!("cargo:rerun-if-changed=shim/c10d.cpp");
    for var in [
        "LIBTORCH",
        "LIBTORCH_CXX11_ABI",
        "NCCL_INCLUDE_DIR",
        "CUDA_HOME",
        "CUDA_PATH",
        "CPATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!(
            "c10d needs LIBTORCH (the directory with include/ and lib/ of libtorch, e.g. site-packages/torch)"
        );
    };
    // The C++ standard torch-sys compiled tch's shim with (the vendored torch-sys says which its
    // headers need: C++20 from PyTorch 2.14); a torch-sys release says nothing: C++17.
    println!("cargo:rerun-if-env-changed=DEP_TCH_CXX_STD");
    let std = std::env::var("DEP_TCH_CXX_STD").unwrap_or_else(|_| "c++17".to_owned());
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let include = libtorch.join("include");
    let lib = libtorch.join("lib");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std(&std)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("vendor/gloo/include");
    let mut nccl = false;
    if lib.join("libtorch_cuda.so").exists() {
        let dirs = cuda_include_dirs(&libtorch);
        let missing: Vec<&str> = CUDA_HEADERS
            .into_iter()
            .filter(|h| !dirs.iter().any(|d| d.join(h).exists()))
            .collect();
        if missing.is_empty() {
            for dir in &dirs {
                build.include(dir);
            }
            build
                .define("USE_C10D_NCCL", None)
                .define("TCH_C10D_NCCL", None);
            nccl = true;
        } else {
            println!(
                "cargo:warning=c10d is built without NCCL (CUDA tensors go through Gloo): libtorch has CUDA, but {} not found in {dirs:?}. Load your site's CUDA module (CUDA_HOME), or pip install nvidia-cuda-cccl (CUDA 13) / nvidia-cuda-cccl-cu12 in torch's environment, then rebuild.",
                missing.join(", ")
            );
        }
    }
    build.file("shim/c10d.cpp").compile("c10d_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
