//! Where a cell's lines are in the debug builds that hold them, and back. JupyterLab names
//! breakpoints and shows stops by cell file and line; the adapter knows each build's source
//! file (one per build, see `evcxr::DebugBuild`) and its lines.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// How many builds are kept. Older ones lose their breakpoints (their code is that of cells
/// run long ago; a function defined there and still called is built again into each later
/// cell that uses it).
const KEPT_BUILDS: usize = 64;

#[derive(Default)]
pub(super) struct LineTables {
    builds: VecDeque<Build>,
}

pub(super) struct Build {
    pub(super) file: String,
    /// Cell file -> cell line -> the build's lines for it.
    by_cell: HashMap<String, BTreeMap<usize, Vec<usize>>>,
    /// Build line -> (cell file, cell line).
    back: HashMap<usize, (String, usize)>,
}

impl Build {
    /// The build lines that breakpoints on `lines` of `cell` go to. A line without code of its
    /// own (blank, a comment between statements) stops at the next one that has.
    fn lines_for(&self, cell: &str, lines: &[i64]) -> Vec<usize> {
        let Some(table) = self.by_cell.get(cell) else {
            return Vec::new();
        };
        let mut out: Vec<usize> = lines
            .iter()
            .filter_map(|l| usize::try_from(*l).ok())
            .filter_map(|l| table.range(l..).next())
            .flat_map(|(_, build_lines)| build_lines.iter().copied())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// This build's lines for all of JupyterLab's breakpoints (by cell file).
    fn breakpoints(&self, breakpoints: &BTreeMap<String, Vec<i64>>) -> Vec<usize> {
        let mut lines: Vec<usize> = breakpoints
            .iter()
            .flat_map(|(cell, lines)| self.lines_for(cell, lines))
            .collect();
        lines.sort_unstable();
        lines.dedup();
        lines
    }

    fn holds(&self, cell: &str) -> bool {
        self.by_cell.contains_key(cell)
    }
}

impl LineTables {
    /// Adds a build, from (build line, cell file, cell line) triples. Returns the file of a
    /// build dropped to make room, if any.
    pub(super) fn add(
        &mut self,
        file: String,
        lines: impl IntoIterator<Item = (usize, String, usize)>,
    ) -> Option<String> {
        let mut build = Build {
            file,
            by_cell: HashMap::new(),
            back: HashMap::new(),
        };
        for (line, cell, cell_line) in lines {
            build
                .by_cell
                .entry(cell.clone())
                .or_default()
                .entry(cell_line)
                .or_default()
                .push(line);
            build.back.insert(line, (cell, cell_line));
        }
        self.builds.push_back(build);
        (self.builds.len() > KEPT_BUILDS)
            .then(|| self.builds.pop_front())
            .flatten()
            .map(|b| b.file)
    }

    /// The breakpoints of each build that holds code of `cell`, from JupyterLab's breakpoints
    /// by cell file: (build file, lines).
    pub(super) fn breakpoints(
        &self,
        breakpoints: &BTreeMap<String, Vec<i64>>,
        cell: &str,
    ) -> Vec<(String, Vec<usize>)> {
        self.builds
            .iter()
            .filter(|b| b.holds(cell))
            .map(|b| (b.file.clone(), b.breakpoints(breakpoints)))
            .collect()
    }

    /// The newest build's breakpoints.
    pub(super) fn newest_breakpoints(
        &self,
        breakpoints: &BTreeMap<String, Vec<i64>>,
    ) -> Option<(String, Vec<usize>)> {
        let b = self.builds.back()?;
        Some((b.file.clone(), b.breakpoints(breakpoints)))
    }

    /// The cell file and line of `line` of a build's `file`; None for a line the engine wrote
    /// (or a file that is no build's).
    pub(super) fn cell_position(&self, file: &str, line: usize) -> Option<(&str, usize)> {
        self.builds
            .iter()
            .rev()
            .find(|b| b.file == file)
            .and_then(|b| b.back.get(&line))
            .map(|(cell, cell_line)| (cell.as_str(), *cell_line))
    }

    pub(super) fn is_build_file(&self, file: &str) -> bool {
        self.builds.iter().any(|b| b.file == file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(cell: &str, lines: &[i64]) -> BTreeMap<String, Vec<i64>> {
        BTreeMap::from([(cell.to_owned(), lines.to_vec())])
    }

    #[test]
    fn breakpoints_go_to_the_builds_that_hold_the_cell() {
        let mut t = LineTables::default();
        // Build 1: cell A's lines 1-3 at 10-12. Build 2: cell A's line 2 (a fn it defined) at
        // 5, and cell B's lines 1, 3 at 20, 21 (line 2 of B is blank).
        t.add(
            "b1.rs".into(),
            [
                (10, "A".into(), 1),
                (11, "A".into(), 2),
                (12, "A".into(), 3),
            ],
        );
        t.add(
            "b2.rs".into(),
            [(5, "A".into(), 2), (20, "B".into(), 1), (21, "B".into(), 3)],
        );
        assert_eq!(
            t.breakpoints(&bp("A", &[2]), "A"),
            vec![("b1.rs".into(), vec![11]), ("b2.rs".into(), vec![5])]
        );
        // A blank line stops at the next line with code; a line past the end nowhere.
        assert_eq!(
            t.newest_breakpoints(&bp("B", &[2, 9])),
            Some(("b2.rs".into(), vec![21]))
        );
        assert_eq!(
            t.breakpoints(&bp("B", &[1]), "B"),
            vec![("b2.rs".into(), vec![20])]
        );
        assert_eq!(t.cell_position("b2.rs", 5), Some(("A", 2)));
        assert_eq!(t.cell_position("b2.rs", 6), None);
        assert!(t.is_build_file("b1.rs") && !t.is_build_file("lib.rs"));
    }

    #[test]
    fn old_builds_are_dropped() {
        let mut t = LineTables::default();
        for i in 0..KEPT_BUILDS {
            assert_eq!(t.add(format!("b{i}.rs"), [(1, "A".into(), 1)]), None);
        }
        assert_eq!(t.add("new.rs".into(), []), Some("b0.rs".into()));
        assert!(!t.is_build_file("b0.rs"));
    }
}
