//! Files and directories that hold a user's values: variable snapshots, the build dir with the
//! cells' sources, the input history. Only their owner may read them (directories 0700, files
//! 0600) whatever the umask, as Jupyter does for its runtime files: the README advises a cache on
//! a shared scratch file system, where the default 0755/0644 would let every user read them.
//!
//! A directory that already exists is made private too (one created by an older kernel).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a private directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents (those with [`DIR_MODE`]), and makes `dir` private if it
/// already existed. Parents that existed keep their mode: they may be shared (a scratch root).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    // The umask may have taken bits from the new ones; an old one may be 0755.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Opens `path` for writing with [`FILE_MODE`]: created if missing, made private if it existed
/// (its mode would otherwise stay).
fn open_private(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options.mode(FILE_MODE).open(path)?;
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(file)
}

/// Creates or truncates `path`, private, for writing.
pub fn create(path: &Path) -> io::Result<File> {
    open_private(
        path,
        OpenOptions::new().write(true).create(true).truncate(true),
    )
}

/// Writes `contents` to `path`, private (like `std::fs::write`).
pub fn write(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    create(path)?.write_all(contents.as_ref())
}

/// Opens `path` to append to it, private; created if missing.
pub fn append(path: &Path) -> io::Result<File> {
    open_private(path, OpenOptions::new().append(true).create(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Runs `f` with a permissive umask, as on a cluster where the default is 0002.
    fn with_umask<T>(mask: libc_umask::Mode, f: impl FnOnce() -> T) -> T {
        let old = libc_umask::set(mask);
        let out = f();
        libc_umask::set(old);
        out
    }

    /// The C library's `umask`, declared here: this crate has no dependencies.
    mod libc_umask {
        pub type Mode = u32;
        unsafe extern "C" {
            fn umask(mask: Mode) -> Mode;
        }
        pub fn set(mask: Mode) -> Mode {
            // SAFETY: umask(2) cannot fail; it changes this process's mask only (the tests
            // that use it create files under their own temporary dirs).
            unsafe { umask(mask) }
        }
    }

    #[test]
    fn new_and_existing_dirs_and_files_are_private_whatever_the_umask() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("scratch");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, Permissions::from_mode(0o755)).unwrap();
        let dir = shared.join("a/b");
        with_umask(0o000, || create_dir_all(&dir)).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&shared.join("a")), DIR_MODE, "a parent it created");
        assert_eq!(mode(&shared), 0o755, "a parent that existed keeps its mode");

        let old = shared.join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&old).unwrap();
        assert_eq!(mode(&old), DIR_MODE, "an existing dir is made private");

        let file = dir.join("f");
        std::fs::write(&file, "old").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        with_umask(0o000, || write(&file, "secret")).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "secret");

        let log = dir.join("log");
        with_umask(0o000, || append(&log).and_then(|mut f| f.write_all(b"a"))).unwrap();
        append(&log).unwrap().write_all(b"b").unwrap();
        assert_eq!(mode(&log), FILE_MODE);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "ab");
    }
}
