//! Execution history, like IPython's: numbered sessions of numbered inputs (and outputs),
//! optionally persisted as JSON lines so `tail` and `search` reach earlier sessions.

use jupyter_wire::content::{HistAccessType, HistoryEntry, HistoryRequest};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    session: i64,
    line: i64,
    input: String,
    output: Option<String>,
}

pub struct History {
    file: Option<PathBuf>,
    session: i64,
    records: Vec<Record>,
}

impl History {
    /// Opens (or starts) a history file. Earlier sessions are loaded; this process gets the next
    /// session number. An unreadable file is logged and history stays in memory only.
    pub fn open(file: Option<PathBuf>) -> Self {
        let mut records = Vec::new();
        if let Some(path) = &file
            && let Ok(f) = std::fs::File::open(path)
        {
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                // Skip lines torn by a concurrent writer rather than fail.
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    records.push(r);
                }
            }
        }
        let session = records.iter().map(|r| r.session).max().unwrap_or(0) + 1;
        History {
            file,
            session,
            records,
        }
    }

    pub fn session(&self) -> i64 {
        self.session
    }

    pub fn record(&mut self, line: i64, input: &str, output: Option<String>) {
        let record = Record {
            session: self.session,
            line,
            input: input.to_owned(),
            output,
        };
        if let Some(path) = &self.file {
            // One write per line with O_APPEND keeps concurrent kernels from interleaving.
            let written = serde_json::to_string(&record).map(|mut s| {
                s.push('\n');
                s
            });
            let result = written.map_err(std::io::Error::other).and_then(|s| {
                // The inputs may hold a user's secrets: private, as IPython's history.
                if let Some(dir) = path.parent() {
                    private_files::create_dir_all(dir)?;
                }
                private_files::append(path)?.write_all(s.as_bytes())
            });
            if let Err(e) = result {
                log::warn!("cannot append to history file {}: {e}", path.display());
            }
        }
        self.records.push(record);
    }

    pub fn query(&self, req: &HistoryRequest) -> Vec<HistoryEntry> {
        let entry = |r: &Record| {
            if req.output {
                HistoryEntry::WithOutput(r.session, r.line, (r.input.clone(), r.output.clone()))
            } else {
                HistoryEntry::Input(r.session, r.line, r.input.clone())
            }
        };
        let selected: Vec<&Record> = match req.hist_access_type {
            HistAccessType::Tail => {
                let n = req.n.unwrap_or(10);
                let skip = self.records.len().saturating_sub(n);
                self.records.iter().skip(skip).collect()
            }
            HistAccessType::Range => {
                // Session 0 is this one; negative numbers count back from it (IPython).
                let session = if req.session <= 0 {
                    self.session + req.session
                } else {
                    req.session
                };
                let stop = req.stop.unwrap_or(i64::MAX);
                self.records
                    .iter()
                    .filter(|r| r.session == session && r.line >= req.start && r.line < stop)
                    .collect()
            }
            HistAccessType::Search => {
                let pattern = if req.pattern.is_empty() {
                    "*"
                } else {
                    &req.pattern
                };
                let mut seen = std::collections::HashSet::new();
                let mut hits: Vec<&Record> = Vec::new();
                for r in self.records.iter().rev() {
                    if !glob_match(pattern, &r.input) {
                        continue;
                    }
                    if req.unique && !seen.insert(r.input.as_str()) {
                        continue;
                    }
                    hits.push(r);
                    if req.n.is_some_and(|n| hits.len() >= n) {
                        break;
                    }
                }
                hits.reverse();
                hits
            }
        };
        selected.into_iter().map(entry).collect()
    }
}

/// Shell-style glob with `*` and `?`, as IPython's history search uses.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> HistoryRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn glob() {
        assert!(glob_match("*1*", "let x = 1;"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn tail_range_search_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.jsonl");
        let mut h = History::open(Some(file.clone()));
        assert_eq!(h.session(), 1);
        h.record(1, "1 + 1", Some("2".into()));
        h.record(2, "let a = 1;", None);
        h.record(3, "1 + 1", Some("2".into()));

        let tail = h.query(&req(
            json!({"hist_access_type": "tail", "n": 2, "output": true}),
        ));
        assert_eq!(
            tail[1],
            HistoryEntry::WithOutput(1, 3, ("1 + 1".into(), Some("2".into())))
        );
        assert_eq!(tail.len(), 2);

        let range = h.query(&req(
            json!({"hist_access_type": "range", "session": 0, "start": 2, "stop": 3}),
        ));
        assert_eq!(range, vec![HistoryEntry::Input(1, 2, "let a = 1;".into())]);

        let all = h.query(&req(json!({"hist_access_type": "search", "pattern": "1*"})));
        assert_eq!(all.len(), 2);
        let unique = h.query(&req(
            json!({"hist_access_type": "search", "pattern": "*1*", "unique": true}),
        ));
        assert_eq!(unique.len(), 2);

        // A second kernel sees the first one's session and gets the next number.
        let h2 = History::open(Some(file));
        assert_eq!(h2.session(), 2);
        let prev = h2.query(&req(
            json!({"hist_access_type": "range", "session": -1, "start": 1}),
        ));
        assert_eq!(prev.len(), 3);
    }
}
