"""crates/torch-bindgen against tch's own releases: for the declarations a tch release was
generated from (shipped in its crate, third_party/pytorch/), the five generated files equal that
release's, byte for byte; the vendored crates/tch and crates/torch-sys hold tch 0.26's; and the
environment's own torchgen writes the same declarations tch shipped for its version."""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

BINDGEN = REPO / "target" / "release" / "torch-bindgen"
# Where each generated file is in tch-rs's tree (the crate it ships in, and its path there).
FILES = {
    "torch-sys/libtch/torch_api_generated.cpp": ("torch-sys", "libtch/torch_api_generated.cpp"),
    "torch-sys/libtch/torch_api_generated.h": ("torch-sys", "libtch/torch_api_generated.h"),
    "torch-sys/src/c_generated.rs": ("torch-sys", "src/c_generated.rs"),
    "tch/src/wrappers/tensor_generated.rs": ("tch", "src/wrappers/tensor_generated.rs"),
    "tch/src/wrappers/tensor_fallible_generated.rs": ("tch", "src/wrappers/tensor_fallible_generated.rs"),
}
# tch releases and the PyTorch whose declarations made them (their gen.ml's yaml_filename).
RELEASES = [("0.26.0", "2.13.0"), ("0.24.0", "2.11.0")]


def release_sources(tmp_path, version):
    """The crates.io sources of tch and torch-sys `version` (fetched into cargo's cache)."""
    project = tmp_path / f"tch-{version}"
    (project / "src").mkdir(parents=True)
    (project / "src" / "lib.rs").write_text("")
    (project / "Cargo.toml").write_text(textwrap.dedent(f"""\
        [package]
        name = "release-sources"
        version = "0.0.0"
        edition = "2021"
        [dependencies]
        tch = "={version}"
        torch-sys = "={version}"
        [workspace]
        """))
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1"], cwd=project,
                          capture_output=True, text=True, check=True)
    dirs = {p["name"]: Path(p["manifest_path"]).parent for p in json.loads(meta.stdout)["packages"]
            if p["name"] in ("tch", "torch-sys")}
    return dirs["tch"], dirs["torch-sys"]


@pytest.mark.parametrize("tch_version,torch_version", RELEASES)
def test_the_output_equals_tchs_own_files(tmp_path, tch_version, torch_version):
    tch, torch_sys = release_sources(tmp_path, tch_version)
    declarations = tch / "third_party" / "pytorch" / f"Declarations-v{torch_version}.yaml"
    out = tmp_path / "out"
    r = subprocess.run([str(BINDGEN), "--declarations", str(declarations), "--torch-version", torch_version,
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    crates = {"tch": tch, "torch-sys": torch_sys}
    for generated, (crate, path) in FILES.items():
        assert (out / generated).read_bytes() == (crates[crate] / path).read_bytes(), \
            f"{generated} differs from tch {tch_version}'s"
    assert (out / "torch-sys" / "libtch" / "generated-for").read_text() == f"{torch_version}\n"
    # Nothing was left out on purpose: no operator of those releases is missing.
    assert "removed upstream" not in r.stdout, r.stdout


def test_the_vendored_crates_hold_tch_026s_files(tmp_path):
    tch, torch_sys = release_sources(tmp_path, "0.26.0")
    crates = {"tch": tch, "torch-sys": torch_sys}
    for generated, (crate, path) in FILES.items():
        assert (REPO / "crates" / generated).read_bytes() == (crates[crate] / path).read_bytes(), generated
    assert (REPO / "crates" / "torch-sys" / "libtch" / "generated-for").read_text() == "2.13.0\n"


def test_a_second_run_rewrites_nothing(tmp_path):
    """cargo rebuilds path crates on mtimes: a reinstall with the same torch must not touch them."""
    tch, _ = release_sources(tmp_path, "0.26.0")
    declarations = tch / "third_party" / "pytorch" / "Declarations-v2.13.0.yaml"
    out = tmp_path / "bindings"
    args = [str(BINDGEN), "--crates-from", str(REPO / "crates"), "--declarations", str(declarations),
            "--torch-version", "2.13.0", "--out", str(out)]
    subprocess.run(args, check=True, capture_output=True)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert len(stamps) > 20 and (out / "tch" / "Cargo.toml").is_file()
    subprocess.run(args, check=True, capture_output=True)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_torchgen_of_the_environment_writes_tchs_declarations(tmp_path, torch_env):
    """The venv's torch makes its own declarations; where tch shipped them for that version, they
    are the same file."""
    libtorch = Path(torch_env["LIBTORCH"])
    version = torch_env["TCH_KERNEL_TORCH_VERSION"].split("+")[0]
    out = tmp_path / "out"
    python = REPO / ".venv" / "bin" / "python"
    r = subprocess.run([str(BINDGEN), "--site-packages", str(libtorch.parent), "--python", str(python),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"bound for PyTorch {version}" in r.stdout, r.stdout
    made = out / "aten" / "Declarations.yaml"
    for tch_version, torch_version in RELEASES:
        if torch_version == version:
            tch, _ = release_sources(tmp_path, tch_version)
            shipped = tch / "third_party" / "pytorch" / f"Declarations-v{torch_version}.yaml"
            assert made.read_bytes() == shipped.read_bytes()
