// tch-kernel: this module is new in the fork (see FORK.md, "`:dep` resolves beside the build").

//! How a `:dep` is checked before any build: cargo resolves the cell crate's manifest with the
//! new dependency in a scratch copy of the build's manifest, lock file and cargo config, so the
//! crates the cells already use keep their locked versions, and nothing in the build dir changes
//! until the resolution is known to be good.
//!
//! Upstream wrote a throw-away manifest with the new dependency alone over the build dir's
//! `Cargo.toml` and ran `cargo metadata` there, which rewrote `Cargo.lock` for that manifest:
//! every locked version of the crates the cells were built with was dropped, the next build
//! resolved them anew and rebuilt them all, and a dylib dependency already loaded in the
//! evaluation process (tch-kernel's prelude) was replaced under the same file name by a build
//! whose symbols the loaded one lacks (`dlopen failed`).
//!
//! Crates whose builds the evaluation process has loaded ([`Resolution::freeze`]) may not change
//! version or features: a `:dep` that would change them is refused with what it would change.

use crate::eval_context::Config;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Where the scratch resolution runs, under the cell crate's target dir.
const SCRATCH_DIR: &str = "dep-check";

/// One resolved package: what decides its build besides the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) features: BTreeSet<String>,
}

/// The packages of a resolved manifest by cargo's package id, and the lock file cargo wrote.
#[derive(Clone, Debug, Default)]
pub(crate) struct Resolution {
    packages: BTreeMap<String, ResolvedPackage>,
    lock: Option<String>,
}

/// Packages the evaluation process has loaded, which a `:dep` may not change.
#[derive(Clone, Debug, Default)]
pub(crate) struct Frozen {
    packages: BTreeMap<String, ResolvedPackage>,
}

/// What a `:dep` would change in a frozen package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrozenChange {
    /// Resolved to another version (`now` is the frozen one).
    Version {
        name: String,
        now: String,
        wanted: Vec<String>,
    },
    /// The same version with more (or other) features.
    Features {
        name: String,
        version: String,
        added: Vec<String>,
    },
}

impl std::fmt::Display for FrozenChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrozenChange::Version { name, now, wanted } if wanted.is_empty() => {
                write!(f, "no {name} (the kernel has {name} {now})")
            }
            FrozenChange::Version { name, now, wanted } => {
                write!(f, "{name} {} (the kernel has {now})", wanted.join(" or "))
            }
            FrozenChange::Features {
                name,
                version,
                added,
            } => {
                let plural = if added.len() == 1 { "" } else { "s" };
                write!(
                    f,
                    "feature{plural} {} of {name} {version}",
                    added
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
    }
}

impl Resolution {
    /// Parses `cargo metadata --format-version=1` output.
    pub(crate) fn from_metadata(json: &str, lock: Option<String>) -> Result<Resolution> {
        let metadata: Value = serde_json::from_str(json).context("cargo metadata's output")?;
        let mut versions = BTreeMap::new();
        for package in metadata["packages"].as_array().into_iter().flatten() {
            if let (Some(id), Some(name), Some(version)) = (
                package["id"].as_str(),
                package["name"].as_str(),
                package["version"].as_str(),
            ) {
                versions.insert(id.to_owned(), (name.to_owned(), version.to_owned()));
            }
        }
        let mut packages = BTreeMap::new();
        for node in metadata["resolve"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(id) = node["id"].as_str() else {
                continue;
            };
            let Some((name, version)) = versions.get(id).cloned() else {
                continue;
            };
            let features = node["features"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            packages.insert(
                id.to_owned(),
                ResolvedPackage {
                    name,
                    version,
                    features,
                },
            );
        }
        Ok(Resolution { packages, lock })
    }

    /// Every package of this resolution, frozen (the cell crate itself is left out: it is
    /// rebuilt for every cell anyway).
    pub(crate) fn freeze(&self, cell_crate: &str) -> Frozen {
        Frozen {
            packages: self
                .packages
                .iter()
                .filter(|(_, p)| p.name != cell_crate)
                .map(|(id, p)| (id.clone(), p.clone()))
                .collect(),
        }
    }

    pub(crate) fn lock(&self) -> Option<&str> {
        self.lock.as_deref()
    }
}

impl Frozen {
    /// `name version` of the frozen package `name` (the first, if several versions).
    pub(crate) fn name_version(&self, name: &str) -> Option<String> {
        self.packages
            .values()
            .find(|p| p.name == name)
            .map(|p| format!("{} {}", p.name, p.version))
    }

    /// What `new` changes in the frozen packages, by package name.
    pub(crate) fn changes_in(&self, new: &Resolution) -> Vec<FrozenChange> {
        let mut changes = Vec::new();
        for (id, frozen) in &self.packages {
            match new.packages.get(id) {
                Some(now) => {
                    let added: Vec<String> =
                        now.features.difference(&frozen.features).cloned().collect();
                    if !added.is_empty() {
                        changes.push(FrozenChange::Features {
                            name: frozen.name.clone(),
                            version: frozen.version.clone(),
                            added,
                        });
                    }
                }
                None => {
                    // The package's id names its version: another id of the same name is
                    // another version of it (or the same crate from another source).
                    let wanted = new
                        .packages
                        .iter()
                        .filter(|(other, p)| {
                            p.name == frozen.name && !self.packages.contains_key(*other)
                        })
                        .map(|(_, p)| p.version.clone())
                        .collect();
                    changes.push(FrozenChange::Version {
                        name: frozen.name.clone(),
                        now: frozen.version.clone(),
                        wanted,
                    });
                }
            }
        }
        changes
    }
}

/// Resolves `manifest` (a cell crate's `Cargo.toml`) with the build's lock file and cargo config,
/// in a scratch dir: locked versions are kept, new crates are resolved (offline first: crates
/// already on this machine need no network; the registry only when they are not, and
/// `config.offline_mode` is off).
pub(crate) fn resolve(manifest: &str, config: &Config) -> Result<Resolution, ResolveError> {
    resolve_in_scratch(manifest, config).map_err(|e| match e.downcast::<ResolveError>() {
        Ok(e) => e,
        Err(e) => ResolveError::Cargo(format!("{e:#}")),
    })
}

fn resolve_in_scratch(manifest: &str, config: &Config) -> Result<Resolution> {
    let scratch = config.crate_dir().join("target").join(SCRATCH_DIR);
    std::fs::create_dir_all(scratch.join("src"))
        .with_context(|| format!("creating {}", scratch.display()))?;
    std::fs::write(scratch.join("Cargo.toml"), manifest)?;
    std::fs::write(scratch.join("src").join("lib.rs"), "")?;
    copy_if_exists(
        &config.crate_dir().join("Cargo.lock"),
        &scratch.join("Cargo.lock"),
    )?;
    let cargo_config = config.crate_dir().join(".cargo");
    std::fs::create_dir_all(scratch.join(".cargo"))?;
    copy_if_exists(
        &cargo_config.join("config.toml"),
        &scratch.join(".cargo").join("config.toml"),
    )?;
    let run = |offline: bool| -> Result<std::process::Output> {
        let mut command: Command = config.cargo_command("metadata");
        command
            .arg("--format-version=1")
            .arg("--filter-platform")
            .arg(&config.target)
            .current_dir(&scratch);
        if offline && !config.offline_mode {
            command.arg("--offline");
        }
        command.output().context("running cargo metadata")
    };
    let mut output = run(true)?;
    if !output.status.success() && !config.offline_mode {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Offline, cargo sees only crates already downloaded; anything else needs the registry.
        if stderr.contains("offline") {
            output = run(false)?;
        }
    }
    if !output.status.success() {
        bail!(ResolveError::from_cargo(
            &String::from_utf8_lossy(&output.stderr),
            config.offline_mode
        ));
    }
    let lock = std::fs::read_to_string(scratch.join("Cargo.lock")).ok();
    Resolution::from_metadata(std::str::from_utf8(&output.stdout)?, lock)
}

fn copy_if_exists(from: &Path, to: &Path) -> Result<()> {
    match std::fs::copy(from, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(to);
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("copying {}", from.display())),
    }
}

/// Why cargo could not resolve a `:dep`, in one line without cargo's view of the generated crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("no crate named `{0}` in the crate registry")]
    NoSuchCrate(String),
    #[error(
        "it needs crates never fetched on this machine{}, and the crate registry cannot be reached: run the `:dep` once where there is network (a login node: crates are kept in $CARGO_HOME), or ask for a version fetched before",
        .0.as_ref().map(|name| format!(" (`{name}`)")).unwrap_or_default()
    )]
    NotFetched(Option<String>),
    #[error(
        "{package} links the native library `{library}`, which the kernel's {kernel_has} links already, and a program may link it only once: ask for a release that uses the kernel's"
    )]
    NativeLibraryTwice {
        /// The crate that links it (cargo names one of the two).
        package: String,
        library: String,
        /// The kernel's crate of that name, with its version (see [`Frozen::name_version`]).
        kernel_has: String,
    },
    #[error("{0}")]
    Cargo(String),
}

impl ResolveError {
    pub(crate) fn from_cargo(stderr: &str, offline: bool) -> ResolveError {
        let backticked = |line: &str, after: &str| -> Option<String> {
            let rest = &line[line.find(after)? + after.len()..];
            let rest = rest.strip_prefix('`')?;
            Some(rest[..rest.find('`')?].to_owned())
        };
        let lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let unreachable = stderr.contains("failed to query replaced source")
            || stderr.contains("failed to get")
            || stderr.contains("download of config.json failed")
            || stderr.contains("Couldn't resolve host")
            || stderr.contains("failed to download")
            || stderr.contains("spurious network error");
        for line in &lines {
            if let Some(name) = backticked(line, "no matching package named ") {
                // Offline (or with a registry that cannot be reached), "no matching package"
                // means not fetched, not that it does not exist.
                if offline || unreachable || stderr.contains("offline") {
                    return ResolveError::NotFetched(Some(name));
                }
                return ResolveError::NoSuchCrate(name);
            }
        }
        // "package `torch-sys` links to the native library `tch`, but it conflicts with a
        // previous package ...:" then "package `torch-sys v0.20.0`", the one asked for now.
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("links to the native library "))
        {
            let library = backticked(line, "links to the native library ").unwrap_or_default();
            let name = backticked(line, "package ").unwrap_or_else(|| "a crate".to_owned());
            let package = lines
                .iter()
                .filter(|l| !l.contains("links to"))
                .find_map(|l| l.strip_prefix("package `"))
                .and_then(|p| p.split('`').next())
                .map(|p| p.replacen(" v", " ", 1))
                .unwrap_or_else(|| name.clone());
            return ResolveError::NativeLibraryTwice {
                kernel_has: name,
                package,
                library,
            };
        }
        if unreachable {
            // cargo names whichever crate it asked the registry for first, not necessarily the
            // `:dep`'s own: the caller names the `:dep`.
            return ResolveError::NotFetched(None);
        }
        // cargo's first error line, and the lines that say why, without the lines about the
        // generated crate (`required by package ctx ...`, its path).
        let message: Vec<String> = lines
            .iter()
            .filter(|l| !l.contains("required by package") && !l.starts_with("... which"))
            .filter(|l| !l.starts_with("location searched") && !l.starts_with("Caused by"))
            .map(|l| {
                let l = l.strip_prefix("error: ").unwrap_or(l);
                match l.find(" as a dependency of package `") {
                    Some(at) => l[..at].to_owned(),
                    None => l.to_owned(),
                }
            })
            .collect();
        ResolveError::Cargo(message.join(": "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(packages: &[(&str, &str, &[&str])]) -> String {
        let pkgs: Vec<Value> = packages
            .iter()
            .map(|(name, version, _)| {
                serde_json::json!({"id": format!("registry#{name}@{version}"), "name": name, "version": version})
            })
            .collect();
        let nodes: Vec<Value> = packages
            .iter()
            .map(|(name, version, features)| {
                serde_json::json!({"id": format!("registry#{name}@{version}"), "features": features, "deps": []})
            })
            .collect();
        serde_json::json!({"packages": pkgs, "resolve": {"nodes": nodes}}).to_string()
    }

    #[test]
    fn a_new_crate_changes_nothing_frozen() {
        let before = Resolution::from_metadata(
            &metadata(&[("ctx", "1.0.0", &[]), ("serde", "1.0.1", &["std"])]),
            None,
        )
        .unwrap();
        let frozen = before.freeze("ctx");
        let after = Resolution::from_metadata(
            &metadata(&[
                ("ctx", "1.0.0", &[]),
                ("serde", "1.0.1", &["std"]),
                ("anyhow", "1.0.0", &["std"]),
                ("base64", "0.10.1", &[]),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(frozen.changes_in(&after), vec![]);
    }

    #[test]
    fn another_version_or_more_features_of_a_frozen_crate_are_changes() {
        let frozen = Resolution::from_metadata(
            &metadata(&[
                ("ctx", "1.0.0", &[]),
                ("serde", "1.0.1", &["std"]),
                ("itoa", "1.0.1", &[]),
            ]),
            None,
        )
        .unwrap()
        .freeze("ctx");
        let after = Resolution::from_metadata(
            &metadata(&[
                ("ctx", "1.0.0", &["x"]),
                ("serde", "1.0.1", &["rc", "std"]),
                ("itoa", "1.0.9", &[]),
            ]),
            None,
        )
        .unwrap();
        let changes = frozen.changes_in(&after);
        assert_eq!(
            changes,
            vec![
                FrozenChange::Version {
                    name: "itoa".into(),
                    now: "1.0.1".into(),
                    wanted: vec!["1.0.9".into()]
                },
                FrozenChange::Features {
                    name: "serde".into(),
                    version: "1.0.1".into(),
                    added: vec!["rc".into()]
                },
            ]
        );
        assert_eq!(changes[0].to_string(), "itoa 1.0.9 (the kernel has 1.0.1)");
        assert_eq!(changes[1].to_string(), "feature `rc` of serde 1.0.1");
    }

    #[test]
    fn cargo_errors_read_in_one_line() {
        let missing = "    Updating crates.io index\nerror: no matching package named `nosuchcrate` found\nlocation searched: crates.io index\nrequired by package `ctx v1.0.0 (/cache/build)`\n";
        assert_eq!(
            ResolveError::from_cargo(missing, false),
            ResolveError::NoSuchCrate("nosuchcrate".into())
        );
        let offline = "error: no matching package named `rand_distr` found\nlocation searched: crates.io index\nrequired by package `ctx v1.0.0 (/cache/build)`\nAs a reminder, you're using offline mode (--offline) which can sometimes cause surprising resolution failures, if this error is too confusing you may wish to retry without `--offline`.\n";
        assert_eq!(
            ResolveError::from_cargo(offline, true),
            ResolveError::NotFetched(Some("rand_distr".into()))
        );
        let conflict = "    Updating crates.io index\nerror: failed to select a version for `torch-sys`.\n    ... required by package `tch v0.23.0`\n    ... which satisfies dependency `tch = \">=0.23, <0.27\"` of package `tch-prelude v0.1.0 (/x/crates/tch-prelude)`\n    ... which satisfies path dependency `tch-prelude` (locked to 0.1.0) of package `ctx v1.0.0 (/cache/build)`\nversions that meet the requirements `^0.23.0` are: 0.23.0\n\npackage `torch-sys` links to the native library `tch`, but it conflicts with a previous package which links to `tch` as well:\npackage `torch-sys v0.20.0`\n    ... which satisfies dependency `torch-sys = \"^0.20.0\"` of package `tch v0.20.0`\n    ... which satisfies dependency `tch = \"^0.20\"` of package `ctx v1.0.0 (/cache/build)`\nOnly one package in the dependency graph may specify the same links value.\n\nfailed to select a version for `torch-sys` which could resolve this conflict\n";
        assert_eq!(
            ResolveError::from_cargo(conflict, false),
            ResolveError::NativeLibraryTwice {
                package: "torch-sys 0.20.0".into(),
                library: "tch".into(),
                kernel_has: "torch-sys".into(),
            }
        );
        let bad_feature = "error: failed to select a version for `anyhow`.\n    ... required by package `ctx v1.0.0 (/cache/build)`\nversions that meet the requirements `^1` are: 1.0.104\n\npackage `ctx` depends on `anyhow` with feature `nope` but `anyhow` does not have that feature.\n\nfailed to select a version for `anyhow` which could resolve this conflict\n";
        let message = ResolveError::from_cargo(bad_feature, false).to_string();
        assert!(
            message.contains("with feature `nope` but `anyhow` does not have that feature"),
            "{message}"
        );
        assert!(!message.contains("/cache/build"), "{message}");
    }
}
