//! Cells call tch's generic functions, which are instantiated in the cell and call torch-sys's
//! C shim (`libtch.a`, linked into this dylib) directly. rustc's version script would hide the
//! shim's symbols; a second version script exports them, so cells resolve them here and there is
//! one copy of the shim (and of its thread-local "last error") in the process. The c10d crate's
//! shim (`c10d_*`) is exported the same way, for any of its calls inlined into a cell.

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let script = std::path::Path::new(&out_dir).join("export-libtch.map");
    let exports = "{ global: at_*; atc_*; atg_*; ati_*; atm_*; ato_*; ats_*; c10d_*; get_and_reset_last_err; };\n";
    std::fs::write(&script, exports).expect("write the export map");
    println!(
        "cargo:rustc-link-arg=-Wl,--version-script={}",
        script.display()
    );
    println!("cargo:rerun-if-changed=build.rs");
}
