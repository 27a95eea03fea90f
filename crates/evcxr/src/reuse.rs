// tch-kernel: builds reused. A notebook's most common loop is to change a number in one cell
// and run the unchanged cell below it again. When the crate generated for a cell (the cell,
// the items it uses, its variables' types), the manifest and rustc's arguments are what an
// earlier build had, that build's shared object is loaded and run again, with today's
// variables, and rustc does not run. Anything that goes through cargo (a `:dep`, an `:opt`, a
// linker change) may rebuild dependencies: every build is forgotten then.

use crate::errors::CompilationError;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::PathBuf;

/// How many builds are remembered (a notebook's cells, several versions each).
const REMEMBERED: usize = 256;

/// A build that may run again.
pub(crate) struct Reusable {
    pub(crate) so_file: PathBuf,
    /// The function the build exports (each build's has its own number).
    pub(crate) fn_name: String,
    /// The build's warnings: the type probe names the variables' types from them.
    pub(crate) warnings: Vec<CompilationError>,
}

#[derive(Default)]
pub(crate) struct BuildReuse {
    builds: VecDeque<(BuildKey, Reusable)>,
}

/// What a build is, as a SHA-256 of its code with the build's own function name taken out, the
/// manifest's key (see `Module::direct_key`) and the extra rustc arguments: a notebook's crates
/// run to hundreds of kilobytes each, and only whether two are the same is needed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct BuildKey([u8; 32]);

pub(crate) fn key(code: &str, fn_name: &str, manifest_key: &str, args: &[&str]) -> BuildKey {
    let mut hash = Sha256::new();
    for part in [manifest_key, "\n", &format!("{args:?}"), "\n"] {
        hash.update(part.as_bytes());
    }
    let own_fn = format!("fn {fn_name}(");
    for (i, piece) in code.split(own_fn.as_str()).enumerate() {
        if i > 0 {
            hash.update(b"fn <cell fn>(");
        }
        hash.update(piece.as_bytes());
    }
    BuildKey(hash.finalize().into())
}

impl BuildReuse {
    /// The build made for `key`, if its shared object is still there.
    pub(crate) fn get(&self, key: &BuildKey) -> Option<&Reusable> {
        self.builds
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, build)| build)
            .filter(|build| build.so_file.exists())
    }

    pub(crate) fn remember(&mut self, key: BuildKey, build: Reusable) {
        self.builds.retain(|(k, _)| *k != key);
        if self.builds.len() == REMEMBERED {
            self.builds.pop_front();
        }
        self.builds.push_back((key, build));
    }

    pub(crate) fn forget_all(&mut self) {
        self.builds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(code: &str) -> BuildKey {
        key(code, "run_user_code_0", "m", &[])
    }

    fn build(so: &std::path::Path, n: u32) -> Reusable {
        Reusable {
            so_file: so.to_path_buf(),
            fn_name: format!("run_user_code_{n}"),
            warnings: vec![],
        }
    }

    #[test]
    fn the_same_code_under_another_build_number_is_the_same_build() {
        let a = key(
            "pub extern \"C\" fn run_user_code_3(x) {}",
            "run_user_code_3",
            "m",
            &[],
        );
        let b = key(
            "pub extern \"C\" fn run_user_code_9(x) {}",
            "run_user_code_9",
            "m",
            &[],
        );
        assert_eq!(a, b);
        let other_manifest = key(
            "pub extern \"C\" fn run_user_code_9(x) {}",
            "run_user_code_9",
            "n",
            &[],
        );
        assert_ne!(a, other_manifest);
        let other_args = key(
            "pub extern \"C\" fn run_user_code_9(x) {}",
            "run_user_code_9",
            "m",
            &["-Zx"],
        );
        assert_ne!(a, other_args);
        let other_code = key(
            "pub extern \"C\" fn run_user_code_9(y) {}",
            "run_user_code_9",
            "m",
            &[],
        );
        assert_ne!(a, other_code);
    }

    #[test]
    fn a_build_is_found_while_its_shared_object_exists_and_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("libcode_1.so");
        std::fs::write(&so, b"").unwrap();
        let mut reuse = BuildReuse::default();
        reuse.remember(named("k"), build(&so, 1));
        assert_eq!(
            reuse.get(&named("k")).map(|b| b.fn_name.as_str()),
            Some("run_user_code_1")
        );
        assert!(reuse.get(&named("other")).is_none());
        std::fs::remove_file(&so).unwrap();
        assert!(
            reuse.get(&named("k")).is_none(),
            "its shared object is gone"
        );
        std::fs::write(&so, b"").unwrap();
        reuse.forget_all();
        assert!(reuse.get(&named("k")).is_none());
    }

    #[test]
    fn the_oldest_builds_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let so = dir.path().join("libcode.so");
        std::fs::write(&so, b"").unwrap();
        let mut reuse = BuildReuse::default();
        for n in 0..=REMEMBERED as u32 {
            reuse.remember(named(&format!("k{n}")), build(&so, n));
        }
        assert!(reuse.get(&named("k0")).is_none());
        assert!(reuse.get(&named("k1")).is_some());
        assert!(reuse.get(&named(&format!("k{REMEMBERED}"))).is_some());
    }
}
