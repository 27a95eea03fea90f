//! Where the kernel keeps its own files.

use std::path::{Path, PathBuf};

fn non_empty_var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$override_var`, else `$XDG_DATA_HOME/<sub>`, else `~/.local/share/<sub>` (XDG rules).
fn data_home_dir(override_var: &str, sub: &str) -> Option<PathBuf> {
    non_empty_var(override_var)
        .or_else(|| non_empty_var("XDG_DATA_HOME").map(|d| d.join(sub)))
        .or_else(|| non_empty_var("HOME").map(|h| h.join(".local/share").join(sub)))
}

/// Kernel data (history): `$TCH_KERNEL_DATA_DIR`, else `~/.local/share/tch-kernel`.
pub fn data_dir() -> Option<PathBuf> {
    data_home_dir(child_protocol::env::kernelspec::DATA_DIR, "tch-kernel")
}

/// Jupyter's user data dir, as jupyter_core computes it on Linux: `$JUPYTER_DATA_DIR`, else
/// `~/.local/share/jupyter`.
pub fn jupyter_user_data_dir() -> Option<PathBuf> {
    data_home_dir("JUPYTER_DATA_DIR", "jupyter")
}

/// Where `install` puts a kernelspec: `PREFIX/share/jupyter/kernels` with a prefix, else the
/// `kernels` dir of Jupyter's user data dir.
pub fn kernels_dir(prefix: Option<&Path>) -> Option<PathBuf> {
    match prefix {
        Some(p) => Some(p.join("share/jupyter/kernels")),
        None => jupyter_user_data_dir().map(|d| d.join("kernels")),
    }
}

/// The `kernels` dirs Jupyter searches, in jupyter_core's order: `$JUPYTER_PATH`, the user data
/// dir, then the system dirs. (The Python environment's own `sys.prefix` dir is not known here.)
pub fn kernelspec_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os("JUPYTER_PATH") {
        dirs.extend(
            std::env::split_paths(&path)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| p.join("kernels")),
        );
    }
    dirs.extend(kernels_dir(None));
    dirs.push(PathBuf::from("/usr/local/share/jupyter/kernels"));
    dirs.push(PathBuf::from("/usr/share/jupyter/kernels"));
    dirs
}

/// The `kernel.json` of the kernelspec `name`, the first one found in
/// [`kernelspec_search_dirs`]; the dirs searched when there is none.
pub fn find_kernelspec(name: &str) -> Result<PathBuf, Vec<PathBuf>> {
    let dirs = kernelspec_search_dirs();
    dirs.iter()
        .map(|d| d.join(name).join("kernel.json"))
        .find(|p| p.is_file())
        .ok_or(dirs)
}
