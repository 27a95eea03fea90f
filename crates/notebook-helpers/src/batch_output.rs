//! Rich output outside a kernel (a program exported with `tch-kernel export`, a batch job):
//! plots, images and tables go to files in `$RUN_DIR/outputs/` (default `runs/outputs/`), named
//! after the notebook cell that showed them, and the log says where; everything else is printed
//! as its text form.

use base64::Engine;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Files {
    cell: usize,
    /// Outputs saved for the current cell so far.
    count: usize,
    /// The file of each display id, which its updates overwrite (a live chart ends as its last
    /// frame).
    by_id: BTreeMap<String, PathBuf>,
}

static FILES: Mutex<Files> = Mutex::new(Files {
    cell: 0,
    count: 0,
    by_id: BTreeMap::new(),
});

/// Marks the start of notebook cell `number` (exported programs call it before each cell), so
/// that its outputs are named `cell-NN-K`.
pub fn cell(number: usize) {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    files.cell = number;
    files.count = 0;
}

/// Where outputs go: `$RUN_DIR/outputs`.
pub fn outputs_dir() -> PathBuf {
    let run_dir = std::env::var_os("RUN_DIR").unwrap_or_else(|| "runs".into());
    Path::new(&run_dir).join("outputs")
}

/// Shows one output record (`display`, `update`, `result`, `clear`...) the way a log can.
pub(crate) fn show(kind: &str, id: &str, data: &[(String, String)]) {
    // Every rank of a data-parallel job runs the same cells: rank 0 shows for all.
    if kind.starts_with("clear") || !crate::rank::is_main_rank() {
        return;
    }
    if let Some(line) = save_in(&outputs_dir(), kind, id, data) {
        println!("{line}");
    }
}

/// The line to print for a record, after writing its file into `dir` if it is a picture or a
/// table. `None` for an update of a file already named in the log.
fn save_in(dir: &Path, kind: &str, id: &str, data: &[(String, String)]) -> Option<String> {
    let get = |mime: &str| {
        data.iter()
            .find(|(m, _)| m == mime)
            .map(|(_, c)| c.as_str())
    };
    let text = get("text/plain").unwrap_or("");
    // A table or page whose text form only names it (`<HTML>`); tensors and the like carry
    // their content as text and are printed.
    let placeholder = text.starts_with('<') && text.ends_with('>');
    let file: Option<(&str, Vec<u8>)> = if let Some(svg) = get("image/svg+xml") {
        Some(("svg", svg.as_bytes().to_vec()))
    } else if let Some(png) = get("image/png") {
        base64::engine::general_purpose::STANDARD
            .decode(png.trim())
            .ok()
            .map(|bytes| ("png", bytes))
    } else if let Some(html) = get("text/html").filter(|_| placeholder) {
        Some(("html", html.as_bytes().to_vec()))
    } else {
        None
    };
    let Some((extension, bytes)) = file else {
        return (!text.is_empty()).then(|| text.to_owned());
    };
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    let known = (!id.is_empty())
        .then(|| files.by_id.get(id).cloned())
        .flatten();
    let (path, is_new) =
        match known.filter(|p| kind == "update" && p.extension().is_some_and(|e| e == extension)) {
            Some(path) => (path, false),
            None => {
                files.count += 1;
                let path = dir.join(format!(
                    "cell-{:02}-{}.{extension}",
                    files.cell, files.count
                ));
                if !id.is_empty() {
                    files.by_id.insert(id.to_owned(), path.clone());
                }
                (path, true)
            }
        };
    drop(files);
    let written = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, &bytes));
    match written {
        Err(e) => Some(format!("{text} (not saved to {}: {e})", path.display())),
        Ok(()) if is_new => Some(format!("{text} -> {}", path.display())),
        Ok(()) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(m, c)| (m.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn pictures_and_tables_go_to_files_named_by_cell_and_text_is_printed() {
        let dir = tempfile::tempdir().unwrap();
        cell(3);
        let svg = bundle(&[
            ("text/plain", "<LinePlot loss>"),
            ("image/svg+xml", "<svg/>"),
        ]);
        let line = save_in(dir.path(), "result", "", &svg).unwrap();
        let first = dir.path().join("cell-03-1.svg");
        assert_eq!(line, format!("<LinePlot loss> -> {}", first.display()));
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "<svg/>");

        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG..");
        let image = bundle(&[("text/plain", "<PNG image 8x8>"), ("image/png", &png)]);
        save_in(dir.path(), "display", "", &image).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("cell-03-2.png")).unwrap(),
            b"\x89PNG.."
        );

        let table = bundle(&[("text/plain", "<HTML>"), ("text/html", "<table></table>")]);
        save_in(dir.path(), "result", "", &table).unwrap();
        assert!(dir.path().join("cell-03-3.html").exists());

        // Text with an HTML form (tensors, progress bars) stays text.
        let tensor = bundle(&[
            ("text/plain", "tensor([1., 2.])"),
            ("text/html", "<table/>"),
        ]);
        assert_eq!(
            save_in(dir.path(), "result", "", &tensor).as_deref(),
            Some("tensor([1., 2.])")
        );
        assert!(!dir.path().join("cell-03-4.html").exists());

        cell(4);
        let frame = |n: &str| bundle(&[("text/plain", "<LiveChart>"), ("image/svg+xml", n)]);
        assert!(save_in(dir.path(), "display", "live-1", &frame("a")).is_some());
        assert_eq!(save_in(dir.path(), "update", "live-1", &frame("b")), None);
        let live = dir.path().join("cell-04-1.svg");
        assert_eq!(
            std::fs::read_to_string(live).unwrap(),
            "b",
            "updates overwrite"
        );
    }
}
