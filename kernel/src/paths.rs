//! Where the kernel keeps its own files.

use std::path::PathBuf;

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
    data_home_dir("TCH_KERNEL_DATA_DIR", "tch-kernel")
}

/// Jupyter's user data dir, as jupyter_core computes it on Linux: `$JUPYTER_DATA_DIR`, else
/// `~/.local/share/jupyter`.
pub fn jupyter_user_data_dir() -> Option<PathBuf> {
    data_home_dir("JUPYTER_DATA_DIR", "jupyter")
}
