//! Build directories for the engine, shared safely between kernels.
//!
//! A kernelspec has one cache root (e.g. `~/.cache/tch-kernel/<name>`, or a directory on
//! `$SCRATCH`). The installer builds the prelude once into `prebuilt/`. Each running kernel gets
//! its own `instances/<host>-<pid>/`, seeded from `prebuilt/`: large immutable artifacts (`.so`,
//! `.rlib`, `.rmeta`, `.a`) are hard-linked, everything cargo may rewrite is copied with its
//! mtime, so cargo sees the dependencies as fresh and no two kernels ever write the same file.
//! (A shared target dir would rely on cargo's file lock, which does not work on NFS homes.)
//!
//! A course installs one cache for all its students: they cannot write it, so their instances
//! live in a directory of their own ([`BuildCache::with_instances_in`]) and are seeded from the
//! shared `prebuilt/`, which they only read.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Instances of other hosts (whose processes we cannot see) are removed after this long.
const FOREIGN_INSTANCE_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// In `prebuilt/`: the settings it was built with.
const STAMP_FILE: &str = "stamp";

/// What `prebuilt/` holds, for the installation a kernel runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrebuiltState {
    /// Nothing prebuilt: the first cell builds the prelude.
    Missing,
    /// Built for this installation.
    Current,
    /// Built for another installation, whose stamp this is: cargo rebuilds what differs.
    Other(String),
}

#[derive(Debug, Clone)]
pub struct BuildCache {
    root: PathBuf,
    /// Where running kernels' build dirs go: `root/instances` unless moved.
    instances: PathBuf,
}

impl BuildCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        BuildCache {
            instances: root.join("instances"),
            root,
        }
    }

    /// The same cache with kernels' build dirs in `dir` (for a cache this user cannot write).
    pub fn with_instances_in(self, dir: impl Into<PathBuf>) -> Self {
        BuildCache {
            instances: dir.into(),
            ..self
        }
    }

    /// Whether this process can create its build dir where [`BuildCache::instance_dir`] says.
    pub fn instances_writable(&self) -> bool {
        let probe = self
            .instances
            .join(format!(".probe-{}-{}", hostname(), std::process::id()));
        let ok = fs::create_dir_all(&probe).is_ok();
        let _ = fs::remove_dir(&probe);
        ok
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where notebooks' variable snapshots go: next to the kernels' build dirs, which this user
    /// can write (see `SnapshotConfig`).
    pub fn snapshots_dir(&self) -> PathBuf {
        if self.instances == self.root.join("instances") {
            self.root.join("snapshots")
        } else {
            self.instances.join("snapshots")
        }
    }

    /// The installer's build, shared read-only by every kernel of this kernelspec.
    pub fn prebuilt_dir(&self) -> PathBuf {
        self.root.join("prebuilt")
    }

    /// This process's private build dir.
    pub fn instance_dir(&self) -> PathBuf {
        self.instances
            .join(format!("{}-{}", hostname(), std::process::id()))
    }

    /// A fresh directory to prebuild into, next to `prebuilt/` (so the final rename is atomic).
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(format!(
            "prebuilt.staging-{}-{}",
            hostname(),
            std::process::id()
        ))
    }

    /// Whether `prebuilt/` was built for the installation described by `stamp` (the settings a
    /// prebuilt prelude depends on, see `publish`).
    pub fn prebuilt_state(&self, stamp: &str) -> PrebuiltState {
        match fs::read_to_string(self.prebuilt_dir().join(STAMP_FILE)) {
            Err(_) => PrebuiltState::Missing,
            Ok(found) if found == stamp => PrebuiltState::Current,
            Ok(found) => PrebuiltState::Other(found),
        }
    }

    /// True when `prebuilt/` is [`PrebuiltState::Current`] for `stamp` and none of `sources`
    /// (the prelude's crates, the lockfile; files or dirs) changed after it was published: what
    /// cargo would otherwise have to check.
    pub fn prebuilt_is_current(&self, stamp: &str, sources: &[PathBuf]) -> bool {
        let Ok(published) =
            fs::metadata(self.prebuilt_dir().join(STAMP_FILE)).and_then(|m| m.modified())
        else {
            return false;
        };
        self.prebuilt_state(stamp) == PrebuiltState::Current
            && sources.iter().all(|dir| !changed_after(dir, published))
    }

    /// Replaces `prebuilt/` with `staging` atomically, stamped with `stamp` (see
    /// `prebuilt_state`); running kernels keep what they cloned.
    pub fn publish(&self, staging: &Path, stamp: &str) -> io::Result<()> {
        fs::write(staging.join(STAMP_FILE), stamp)?;
        let target = self.prebuilt_dir();
        let old = self
            .root
            .join(format!("prebuilt.old-{}", std::process::id()));
        if target.exists() {
            fs::rename(&target, &old)?;
        }
        fs::rename(staging, &target)?;
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    /// Removes build dirs left by kernels that died without cleaning up: same-host instances
    /// whose process is gone, and other hosts' instances untouched for a week; and notebooks'
    /// snapshots no kernel will read again (see `snapshot_dir::is_stale`).
    pub fn collect_garbage(&self) {
        let age = |entry: &fs::DirEntry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
        };
        for entry in fs::read_dir(self.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if crate::snapshot_dir::is_stale(&entry.path(), age(&entry)) {
                log::info!("removing old snapshots {}", entry.path().display());
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let Ok(entries) = fs::read_dir(&self.instances) else {
            return;
        };
        let host = hostname();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((entry_host, pid)) = name.rsplit_once('-') else {
                continue;
            };
            let stale = if entry_host == host {
                pid.parse::<u32>().is_ok_and(|pid| {
                    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
                })
            } else {
                age(&entry).is_some_and(|age| age > FOREIGN_INSTANCE_MAX_AGE)
            };
            if stale {
                log::info!("removing stale build dir {}", entry.path().display());
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().replace(['/', '-'], "_"))
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Whether `path`, or a file under it (but not in a `target` dir, and not documentation), was
/// modified after `time`.
fn changed_after(path: &Path, time: SystemTime) -> bool {
    if path.is_file() {
        return fs::metadata(path)
            .and_then(|m| m.modified())
            .map_or(true, |m| m > time);
    }
    let Ok(entries) = fs::read_dir(path) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(kind) = entry.file_type() else {
            return true;
        };
        if kind.is_dir() {
            entry.file_name() != "target" && changed_after(&entry.path(), time)
        } else if entry.path().extension().is_some_and(|e| e == "md") {
            false
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .map_or(true, |m| m > time)
        }
    })
}

/// Seeds `to` from `from` (see the module docs). Returns the number of bytes copied, as opposed
/// to linked.
pub(crate) fn clone_tree(from: &Path, to: &Path) -> io::Result<u64> {
    let mut copied = 0;
    clone_dir(from, to, false, &mut copied)?;
    Ok(copied)
}

fn clone_dir(from: &Path, to: &Path, in_target: bool, copied: &mut u64) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            // The cell crate's own incremental state is keyed by its (per-instance) path.
            if in_target && name_str == "incremental" {
                continue;
            }
            clone_dir(&src, &dst, in_target || name_str == "target", copied)?;
        } else if kind.is_file() {
            // Cells' shared objects are per-session garbage. Object files in target are the
            // inputs of an archive or link that is already done (build scripts' `out/*.o`,
            // 7 MB for torch-sys): cargo never looks at them, a rerun build script remakes them.
            // The saved completions (megabytes) are read from the prebuilt dir itself.
            if name_str.starts_with("libcode_")
                || (in_target && name_str.ends_with(".o"))
                || name_str == crate::KNOWN_NAMES_FILE
            {
                continue;
            }
            let meta = entry.metadata()?;
            // Another user's prebuilt files cannot be hard-linked (fs.protected_hardlinks);
            // a symbolic link to them is as good, since nothing writes through either.
            if in_target
                && is_immutable_artifact(&name_str, &meta)
                && (fs::hard_link(&src, &dst).is_ok()
                    || (!owned_by_me(&meta) && std::os::unix::fs::symlink(&src, &dst).is_ok()))
            {
                continue;
            }
            *copied += fs::copy(&src, &dst)?;
            filetime::set_file_mtime(&dst, filetime::FileTime::from_last_modification_time(&meta))?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        }
    }
    Ok(())
}

fn owned_by_me(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    meta.uid() == unsafe { libc::geteuid() }
}

/// Files that the toolchain replaces (unlink + create) rather than rewrites in place, so a hard
/// link is never modified through another instance: libraries, and executables (build scripts,
/// 25 MB of them, which a linker writes; cargo's `build-script-build` is its own hard link).
fn is_immutable_artifact(name: &str, meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    [".so", ".rlib", ".rmeta", ".a"]
        .iter()
        .any(|ext| name.ends_with(ext))
        || meta.permissions().mode() & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn clone_links_artifacts_and_copies_the_rest_with_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("prebuilt");
        let deps = from.join("target/x86_64/debug/deps");
        fs::create_dir_all(&deps).unwrap();
        fs::create_dir_all(from.join("target/x86_64/debug/incremental/ctx-1")).unwrap();
        fs::write(deps.join("libtch.rlib"), b"rlib").unwrap();
        let script = from.join("target/debug/build/torch-sys-1");
        fs::create_dir_all(script.join("out")).unwrap();
        fs::write(script.join("build-script-build"), b"elf").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            script.join("build-script-build"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(script.join("out/torch_api.o"), b"object").unwrap();
        fs::write(script.join("out/libtch.a"), b"archive").unwrap();
        fs::write(deps.join("tch.d"), b"dep-info").unwrap();
        fs::write(from.join("target/x86_64/debug/libcode_3.so"), b"old cell").unwrap();
        fs::write(from.join("Cargo.toml"), b"[package]").unwrap();
        let old = filetime::FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_mtime(deps.join("tch.d"), old).unwrap();

        let to = dir.path().join("instance");
        let copied = clone_tree(&from, &to).unwrap();
        let out = to.join("target/x86_64/debug/deps");
        assert_eq!(
            fs::metadata(out.join("libtch.rlib")).unwrap().ino(),
            fs::metadata(deps.join("libtch.rlib")).unwrap().ino()
        );
        assert_ne!(
            fs::metadata(out.join("tch.d")).unwrap().ino(),
            fs::metadata(deps.join("tch.d")).unwrap().ino()
        );
        assert_eq!(
            filetime::FileTime::from_last_modification_time(
                &fs::metadata(out.join("tch.d")).unwrap()
            ),
            old
        );
        let script_to = to.join("target/debug/build/torch-sys-1");
        for linked in ["build-script-build", "out/libtch.a"] {
            assert_eq!(
                fs::metadata(script_to.join(linked)).unwrap().ino(),
                fs::metadata(script.join(linked)).unwrap().ino(),
                "{linked}"
            );
        }
        assert!(!script_to.join("out/torch_api.o").exists());
        assert!(!to.join("target/x86_64/debug/libcode_3.so").exists());
        assert!(!to.join("target/x86_64/debug/incremental").exists());
        assert_eq!(copied, ("dep-info".len() + "[package]".len()) as u64);
    }

    #[test]
    fn instances_can_live_outside_a_shared_cache() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        let cache = BuildCache::new(dir.path().join("shared")).with_instances_in(&own);
        assert!(cache.instance_dir().starts_with(&own));
        assert_eq!(cache.prebuilt_dir(), dir.path().join("shared/prebuilt"));
        assert!(cache.instances_writable());
        let dead = own.join(format!("{}-999999999", hostname()));
        fs::create_dir_all(&dead).unwrap();
        cache.collect_garbage();
        assert!(
            !dead.exists(),
            "garbage is collected where the instances are"
        );
    }

    #[test]
    fn garbage_collection_removes_dead_instances_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(dir.path());
        let mine = cache.instance_dir();
        // A pid that cannot exist (above pid_max).
        let dead = dir
            .path()
            .join("instances")
            .join(format!("{}-{}", hostname(), 99_999_999));
        let foreign = dir.path().join("instances").join("otherhost-12");
        for d in [&mine, &dead, &foreign] {
            fs::create_dir_all(d).unwrap();
        }
        cache.collect_garbage();
        assert!(mine.exists());
        assert!(!dead.exists());
        assert!(foreign.exists(), "recent instances of other hosts are kept");
    }

    #[test]
    fn publish_replaces_atomically_and_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BuildCache::new(dir.path());
        assert_eq!(cache.prebuilt_state("a"), PrebuiltState::Missing);
        for round in 0..2 {
            let staging = cache.staging_dir();
            fs::create_dir_all(&staging).unwrap();
            fs::write(staging.join("round"), round.to_string()).unwrap();
            cache
                .publish(&staging, &format!("settings {round}"))
                .unwrap();
            assert_eq!(
                fs::read_to_string(cache.prebuilt_dir().join("round")).unwrap(),
                round.to_string()
            );
        }
        assert_eq!(cache.prebuilt_state("settings 1"), PrebuiltState::Current);
        let sources = dir.path().join("sources");
        fs::create_dir_all(&sources).unwrap();
        let old = filetime::FileTime::from_unix_time(1_000_000, 0);
        fs::write(sources.join("lib.rs"), "").unwrap();
        filetime::set_file_mtime(sources.join("lib.rs"), old).unwrap();
        assert!(cache.prebuilt_is_current("settings 1", std::slice::from_ref(&sources)));
        assert!(!cache.prebuilt_is_current("settings 2", std::slice::from_ref(&sources)));
        fs::write(sources.join("NOTES.md"), "docs only").unwrap();
        assert!(cache.prebuilt_is_current("settings 1", std::slice::from_ref(&sources)));
        fs::write(sources.join("lib.rs"), "// edited").unwrap();
        assert!(!cache.prebuilt_is_current("settings 1", &[sources]));
        assert_eq!(
            cache.prebuilt_state("settings 2"),
            PrebuiltState::Other("settings 1".into())
        );
    }
}
