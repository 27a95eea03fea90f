//! Where the kernel keeps its own files.

use std::path::PathBuf;

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Kernel data (history): `$TCH_KERNEL_DATA_DIR`, else `$XDG_DATA_HOME/tch-kernel`, else
/// `~/.local/share/tch-kernel`.
pub fn data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TCH_KERNEL_DATA_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("tch-kernel"));
    }
    home().map(|h| h.join(".local/share/tch-kernel"))
}

/// Jupyter's user data dir, as jupyter_core computes it on Linux.
pub fn jupyter_user_data_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("jupyter"));
    }
    home().map(|h| h.join(".local/share/jupyter"))
}
