//! The kernel's side of snapshots (child-protocol's `snapshot_format`): a notebook's snapshot
//! directory, the files a dead evaluation process left kept for `:restore`, and the cell that
//! restores them.
//!
//! `DIR/live` is written by the running evaluation process after each cell. When a new process
//! starts (the kernel starts, or the last process died), what `live` holds moves to
//! `DIR/saved`, replacing older files of the same variables: that is what `:restore` reads.

use child_protocol::snapshot_format::{
    SNAPSHOT_EXT, SNAPSHOT_LOCK, SNAPSHOT_STATUS, SnapshotHeader, SnapshotKind,
};
use child_protocol::{FIELD_SEP, escape, unescape};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// A notebook's snapshots not used (no kernel started on it) for this long are removed.
const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// What [`SnapshotConfig::notebook`] starts with for a kernel that was not told its notebook:
/// then its connection file is the key, which lives as long as the kernel and its restarts.
pub const CONNECTION_FILE_KEY: &str = "connection file ";

/// Whether the snapshot directory `dir` (last used `age` ago) will not be read again: unused for
/// a month, or keyed by a connection file that is gone (its kernel has shut down).
pub(crate) fn is_stale(dir: &Path, age: Option<std::time::Duration>) -> bool {
    if age.is_some_and(|a| a > MAX_AGE) {
        return true;
    }
    let notebook = std::fs::read_to_string(dir.join("notebook")).unwrap_or_default();
    notebook
        .trim_end()
        .strip_prefix(CONNECTION_FILE_KEY)
        .is_some_and(|file| !Path::new(file).exists())
}

/// Snapshots for one notebook.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// The notebook's snapshot directory (the evaluation process writes `DIR/live`, whose path
    /// it gets from [`child_protocol::snapshot_format::SNAPSHOT_DIR_ENV`]).
    pub dir: PathBuf,
    /// What the directory is for (the notebook's path, or [`CONNECTION_FILE_KEY`] and the
    /// kernel's connection file), written into it as `DIR/notebook`.
    pub notebook: String,
    /// The prelude crate's path in cells (`::tch_prelude`): its `__tch_snapshot_saver!`, its
    /// `snapshot_savers` loaders and its `tch`.
    pub prelude_path: String,
}

impl SnapshotConfig {
    /// The directory the evaluation process writes to.
    pub fn live_dir(&self) -> PathBuf {
        self.dir.join("live")
    }

    fn saved_dir(&self) -> PathBuf {
        self.dir.join("saved")
    }

    /// The macro the store statements name each variable's saver with.
    pub(crate) fn saver_macro(&self) -> String {
        format!("{}::__tch_snapshot_saver", self.prelude_path)
    }
}

/// Evcxr's names for the variables' types (a saved file has only `std::any::type_name`, which
/// is not always Rust a cell can write), with each binding's mutability: `name US type US mut`.
const TYPES_FILE: &str = "types";

fn read_types(dir: &Path) -> BTreeMap<String, (String, bool)> {
    let text = std::fs::read_to_string(dir.join(TYPES_FILE)).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(FIELD_SEP);
            let name = unescape(fields.next()?);
            let type_name = unescape(fields.next()?);
            let is_mut = fields.next()? == "1";
            Some((name, (type_name, is_mut)))
        })
        .collect()
}

fn write_types(dir: &Path, types: &BTreeMap<String, (String, bool)>) -> io::Result<()> {
    let mut text = String::new();
    for (name, (type_name, is_mut)) in types {
        text.push_str(&format!(
            "{}{FIELD_SEP}{}{FIELD_SEP}{}\n",
            escape(name),
            escape(type_name),
            u8::from(*is_mut)
        ));
    }
    write_whole(&dir.join(TYPES_FILE), &text)
}

/// Writes `path` under a temporary name, then renames it: a reader sees the old file or the
/// new one.
fn write_whole(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    private_files::write(Path::new(&tmp), text)?;
    std::fs::rename(tmp, path)
}

/// How long a new evaluation process waits for the last one's writer to finish a snapshot
/// (which goes on after the process died) before it takes the files as they are.
const WRITER_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Holds the directory's lock (waiting for a snapshot being written) until dropped.
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// The lock, or None after [`WRITER_WAIT`] (a writer that is stuck: each file it finished
    /// is whole, the others are the earlier ones).
    fn take(dir: &Path) -> io::Result<Option<DirLock>> {
        use std::os::fd::AsRawFd;
        let file = private_files::create(&dir.join(SNAPSHOT_LOCK))?;
        let end = std::time::Instant::now() + WRITER_WAIT;
        loop {
            // SAFETY: a valid descriptor; the lock goes with the file.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Some(DirLock { _file: file }));
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            if std::time::Instant::now() > end {
                log::warn!(
                    "snapshots: the last writer still holds {}; going on",
                    dir.display()
                );
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// A variable's saved file.
#[derive(Debug)]
pub(crate) struct SavedVariable {
    pub name: String,
    pub path: PathBuf,
    pub header: Result<SnapshotHeader, String>,
    pub bytes: u64,
}

fn saved_variables(dir: &Path) -> Vec<SavedVariable> {
    let mut saved: Vec<SavedVariable> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            if path.extension()? != SNAPSHOT_EXT {
                return None;
            }
            let name = path.file_stem()?.to_str()?.to_owned();
            let bytes = entry.metadata().map_or(0, |m| m.len());
            Some(SavedVariable {
                name,
                header: SnapshotHeader::read_file(&path),
                path,
                bytes,
            })
        })
        .collect();
    saved.sort_by(|a, b| a.name.cmp(&b.name));
    saved
}

/// What `:restore` does: the cell to run, and what it restores or cannot.
#[derive(Debug, Default)]
pub(crate) struct RestorePlan {
    /// The whole cell.
    pub code: String,
    /// Its statements, one per entry of `restored` (in order): run one by one when the whole
    /// cell fails, so that one bad file costs only its variable.
    pub statements: Vec<String>,
    pub restored: Vec<(String, String)>,
    pub not_restored: Vec<(String, String)>,
}

impl RestorePlan {
    fn statement(&mut self, code: String) {
        self.code.push_str(&code);
        self.statements.push(code);
    }
}

/// The result of a restore, as the notebook shows it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RestoreReport {
    /// Each variable restored, with what it is (`Tensor [64, 10]`).
    pub restored: Vec<(String, String)>,
    /// Each variable not restored, with why.
    pub not_restored: Vec<(String, String)>,
}

impl RestoreReport {
    pub fn is_empty(&self) -> bool {
        self.restored.is_empty() && self.not_restored.is_empty()
    }

    /// Whether the report says anything of variable `name` (restored or why not).
    pub fn mentions(&self, name: &str) -> bool {
        self.restored
            .iter()
            .chain(&self.not_restored)
            .any(|(n, _)| n == name)
    }
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return write!(f, "No snapshot of this notebook's variables to restore.");
        }
        if !self.restored.is_empty() {
            writeln!(f, "Restored from the snapshot:")?;
            for (name, what) in &self.restored {
                writeln!(f, "  {name}: {what}")?;
            }
        }
        if !self.not_restored.is_empty() {
            writeln!(f, "Not restored:")?;
            for (name, why) in &self.not_restored {
                writeln!(f, "  {name}: {why}")?;
            }
        }
        Ok(())
    }
}

fn rust_string(path: &Path) -> String {
    format!("{:?}", path.to_string_lossy())
}

fn shape(header: &SnapshotHeader) -> String {
    header.tensors.first().map_or_else(String::new, |t| {
        let dims: Vec<String> = t.shape.iter().map(i64::to_string).collect();
        format!(" [{}] {}", dims.join(", "), t.dtype)
    })
}

/// Types of the cells' own crate (`ctx::Config`) that `type_name` mentions.
fn cell_types(type_name: &str) -> Vec<&str> {
    type_name
        .match_indices("ctx::")
        .filter(|(i, _)| *i == 0 || !type_name.as_bytes()[i - 1].is_ascii_alphanumeric())
        .filter_map(|(i, m)| {
            let rest = &type_name[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].rsplit("::").next()
        })
        .collect()
}

impl SnapshotConfig {
    /// Moves what the last evaluation process wrote into `saved` (after a snapshot being
    /// written has finished), so the next process starts with an empty `live`.
    pub(crate) fn keep_last(&self) -> io::Result<()> {
        let (live, saved) = (self.live_dir(), self.saved_dir());
        // The variables' values: this user's only (the base may be on shared scratch).
        private_files::create_dir_all(&self.dir)?;
        private_files::create_dir_all(&live)?;
        private_files::create_dir_all(&saved)?;
        // Replaced at each start: the directory's time says when it was last used (old ones are
        // removed with the cache's garbage).
        write_whole(&self.dir.join("notebook"), &format!("{}\n", self.notebook))?;
        let _lock = DirLock::take(&live)?;
        for variable in saved_variables(&live) {
            std::fs::rename(
                &variable.path,
                saved.join(variable.path.file_name().unwrap_or_default()),
            )?;
        }
        let mut types = read_types(&saved);
        types.extend(read_types(&live));
        write_types(&saved, &types)?;
        for leftover in [TYPES_FILE, SNAPSHOT_STATUS] {
            let _ = std::fs::remove_file(live.join(leftover));
        }
        Ok(())
    }

    /// Records evcxr's names for the variables' types (after each cell).
    pub(crate) fn record_types(&self, variables: &[(String, String, bool)]) -> io::Result<()> {
        let live = self.live_dir();
        private_files::create_dir_all(&live)?;
        let types = variables
            .iter()
            .filter(|(_, t, _)| !t.is_empty())
            .map(|(n, t, m)| (n.clone(), (t.clone(), *m)))
            .collect();
        write_types(&live, &types)
    }

    /// The cell that restores the saved variables. `current`: the variables this session has
    /// (name, type); `items`: the items it defines (types a saved value may need).
    pub(crate) fn plan(&self, current: &[(String, String)], items: &[String]) -> RestorePlan {
        let saved_dir = self.saved_dir();
        let types = read_types(&saved_dir);
        let prelude = &self.prelude_path;
        let mut plan = RestorePlan::default();
        for variable in saved_variables(&saved_dir) {
            let name = variable.name;
            let header = match variable.header {
                Ok(h) => h,
                Err(e) => {
                    plan.not_restored
                        .push((name, format!("its file cannot be read ({e})")));
                    continue;
                }
            };
            let (is_mut, type_name) = match types.get(&name) {
                Some((t, m)) => (*m, Some(t.as_str())),
                None => (false, None),
            };
            let binding = if is_mut { "let mut" } else { "let" };
            let path = rust_string(&variable.path);
            let loaders = format!("{prelude}::snapshot_savers");
            match header.kind {
                SnapshotKind::Unsaved => plan.not_restored.push((name, header.reason)),
                SnapshotKind::Tensor => {
                    plan.statement(format!(
                        "{binding} {name}: {prelude}::tch::Tensor = {loaders}::load_tensor({path});\n"
                    ));
                    plan.restored
                        .push((name, format!("Tensor{}", shape(&header))));
                }
                SnapshotKind::Tensors => {
                    plan.statement(format!(
                        "{binding} {name}: Vec<{prelude}::tch::Tensor> = {loaders}::load_tensors({path});\n"
                    ));
                    plan.restored
                        .push((name, format!("Vec<Tensor> of {}", header.tensors.len())));
                }
                SnapshotKind::VarStore => {
                    let n = header.tensors.len();
                    if current
                        .iter()
                        .any(|(v, t)| *v == name && t.contains("VarStore"))
                    {
                        plan.statement(format!(
                            "println!(\"{name}: {{}}\", {loaders}::load_into_var_store(&{name}, {path}));\n"
                        ));
                        plan.restored.push((
                            name,
                            format!("its {n} weights, into the VarStore this session built"),
                        ));
                    } else {
                        plan.statement(format!(
                            "{binding} {name}: {prelude}::tch::nn::VarStore = {loaders}::load_var_store({path});\n"
                        ));
                        plan.restored.push((
                            name,
                            format!("VarStore of {n} tensors (run the cell that builds its model, then `:restore` again to load them into it)"),
                        ));
                    }
                }
                SnapshotKind::Data => {
                    let missing: Vec<&str> = cell_types(&header.type_name)
                        .into_iter()
                        .filter(|t| !items.iter().any(|i| i == t))
                        .collect();
                    match type_name {
                        None => plan.not_restored.push((name, "its type is not known".into())),
                        Some(_) if !missing.is_empty() => plan.not_restored.push((
                            name,
                            format!(
                                "its type `{}` is not defined in this session: run the cell that defines it, then `:restore`",
                                missing.join("`, `")
                            ),
                        )),
                        Some(t) => {
                            plan.statement(format!(
                                "{binding} {name}: {t} = {loaders}::load_data::<{t}>({path});\n"
                            ));
                            plan.restored.push((name, evcxr::short_type_name(t)));
                        }
                    }
                }
            }
        }
        plan
    }

    /// What `:snapshot` shows.
    pub(crate) fn describe(&self) -> String {
        let live = self.live_dir();
        let mut out = format!(
            "Snapshots of this notebook's variables: {}\n",
            self.dir.display()
        );
        match std::fs::read_to_string(live.join(SNAPSHOT_STATUS)) {
            Ok(status) => out.push_str(&format!("Last written after {}", status.trim_end())),
            Err(_) => out.push_str("Nothing written by this evaluation process yet."),
        }
        out.push('\n');
        for (title, dir) in [
            ("Saved now", live),
            (
                "Kept from an earlier process, for `:restore`",
                self.saved_dir(),
            ),
        ] {
            let saved = saved_variables(&dir);
            if saved.is_empty() {
                continue;
            }
            out.push_str(&format!("{title}:\n"));
            for v in saved {
                let what = match &v.header {
                    Ok(h) if h.kind == SnapshotKind::Unsaved => format!("not saved: {}", h.reason),
                    Ok(h) if h.kind == SnapshotKind::Tensor => {
                        format!("Tensor{}, {} bytes", shape(h), v.bytes)
                    }
                    Ok(h) if h.kind == SnapshotKind::Data => {
                        format!(
                            "{}, {} bytes",
                            evcxr::short_type_name(&h.type_name),
                            v.bytes
                        )
                    }
                    Ok(h) => format!(
                        "{}, {} tensors, {} bytes",
                        h.kind.as_str(),
                        h.tensors.len(),
                        v.bytes
                    ),
                    Err(e) => format!("unreadable: {e}"),
                };
                out.push_str(&format!("  {}: {what}\n", v.name));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use child_protocol::snapshot_format::TensorEntry;

    fn write(dir: &Path, name: &str, kind: SnapshotKind, type_name: &str) {
        let header = SnapshotHeader {
            kind,
            type_name: type_name.into(),
            reason: if kind == SnapshotKind::Unsaved {
                "a closure".into()
            } else {
                String::new()
            },
            tensors: if matches!(kind, SnapshotKind::Tensor | SnapshotKind::VarStore) {
                vec![TensorEntry {
                    name: String::new(),
                    dtype: "Float".into(),
                    shape: vec![2],
                    device: "cpu".into(),
                    requires_grad: false,
                    bytes: 8,
                }]
            } else {
                vec![]
            },
        };
        std::fs::write(dir.join(format!("{name}.{SNAPSHOT_EXT}")), header.to_text()).unwrap();
    }

    fn config(dir: &Path) -> SnapshotConfig {
        SnapshotConfig {
            dir: dir.to_owned(),
            notebook: "test.ipynb".into(),
            prelude_path: "::tch_prelude".into(),
        }
    }

    #[test]
    fn the_last_process_files_are_kept_and_replace_older_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        std::fs::create_dir_all(c.live_dir()).unwrap();
        write(&c.live_dir(), "a", SnapshotKind::Tensor, "T");
        c.record_types(&[("n".into(), "usize".into(), true)])
            .unwrap();
        write(&c.live_dir(), "n", SnapshotKind::Data, "usize");
        c.keep_last().unwrap();
        write(&c.live_dir(), "n", SnapshotKind::Data, "u8");
        c.record_types(&[("n".into(), "u8".into(), false)]).unwrap();
        c.keep_last().unwrap();
        assert!(saved_variables(&c.live_dir()).is_empty());
        let saved = saved_variables(&c.saved_dir());
        assert_eq!(
            saved.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["a", "n"]
        );
        assert_eq!(saved[1].header.as_ref().unwrap().type_name, "u8");
        assert_eq!(read_types(&c.saved_dir())["n"], ("u8".to_owned(), false));
    }

    #[test]
    fn the_plan_restores_what_it_can_and_says_why_not() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(tmp.path());
        let saved = c.saved_dir();
        std::fs::create_dir_all(&saved).unwrap();
        write(&saved, "t", SnapshotKind::Tensor, "tch::Tensor");
        write(&saved, "vs", SnapshotKind::VarStore, "tch::nn::VarStore");
        write(&saved, "f", SnapshotKind::Unsaved, "{{closure}}");
        write(&saved, "cfg", SnapshotKind::Data, "ctx::Config");
        write(&saved, "losses", SnapshotKind::Data, "alloc::vec::Vec<f64>");
        write_types(
            &saved,
            &[("cfg", "Config", false), ("losses", "Vec<f64>", true)]
                .into_iter()
                .map(|(n, t, m)| (n.to_owned(), (t.to_owned(), m)))
                .collect(),
        )
        .unwrap();
        let plan = c.plan(&[], &[]);
        assert!(plan.code.contains(
            "let t: ::tch_prelude::tch::Tensor = ::tch_prelude::snapshot_savers::load_tensor("
        ));
        assert!(plan.code.contains(
            "let mut losses: Vec<f64> = ::tch_prelude::snapshot_savers::load_data::<Vec<f64>>("
        ));
        assert!(plan.code.contains(
            "let vs: ::tch_prelude::tch::nn::VarStore = ::tch_prelude::snapshot_savers::load_var_store("
        ));
        let not: Vec<&str> = plan.not_restored.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(not, ["cfg", "f"]);
        assert!(plan.not_restored[0].1.contains("`Config` is not defined"));

        let plan = c.plan(&[("vs".into(), "nn::VarStore".into())], &["Config".into()]);
        assert!(plan.code.contains("load_into_var_store(&vs, "));
        assert!(plan.code.contains("let cfg: Config = "));
    }

    #[test]
    fn a_kernel_s_own_snapshots_go_with_its_connection_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("kernel-1.json");
        std::fs::write(&file, "{}").unwrap();
        let mut c = config(&tmp.path().join("s"));
        c.notebook = format!("{CONNECTION_FILE_KEY}{}", file.display());
        c.keep_last().unwrap();
        assert!(!is_stale(&c.dir, None));
        std::fs::remove_file(&file).unwrap();
        assert!(is_stale(&c.dir, None));
        let notebook = config(&tmp.path().join("n"));
        notebook.keep_last().unwrap();
        assert!(!is_stale(&notebook.dir, None));
        assert!(is_stale(&notebook.dir, Some(MAX_AGE * 2)));
    }

    #[test]
    fn cell_types_are_found_inside_others() {
        assert_eq!(cell_types("alloc::vec::Vec<ctx::Point>"), ["Point"]);
        assert_eq!(
            cell_types("(ctx::A, std::collections::HashMap<u8, ctx::b::B>)"),
            ["A", "B"]
        );
        assert!(cell_types("alloc::vec::Vec<f64>").is_empty());
        assert!(cell_types("abctx::X").is_empty());
    }
}
