//! The MLPerf logs of finished runs gathered into one table (device, job, world size, status,
//! time to train, accuracy, images per second) and a bar chart: [`results`] over the `RUN_DIR` of a
//! sweep, or of jobs on several GPU types.

use crate::display::html_escape;
use crate::display::{MimeBundle, RichDisplay};
use crate::plot::BarChart;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run: what its MLPerf log says, plus images/s from the `results.jsonl` beside it
/// (notebook 04 writes both).
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub log: PathBuf,
    /// `submission_platform` (notebook 04: the GPU's name).
    pub platform: String,
    /// From the log's name, `mllog-JOB.txt` (the Slurm job id, or `local`).
    pub job: String,
    /// How many processes trained together (`submission_platform`'s `world_size`; 1 when the
    /// log does not say).
    pub world_size: u64,
    /// `run_stop`'s status: `success` (target reached) or `aborted`; empty if it never stopped.
    pub status: String,
    /// From `run_start` to `run_stop`.
    pub time_to_train_s: Option<f64>,
    /// The last `eval_accuracy`.
    pub accuracy: Option<f64>,
    pub images_per_second: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunResults(pub Vec<RunResult>);

/// Every `mllog*.txt` below `dir`, read into a table (sorted by platform, world size, job).
pub fn results(dir: impl AsRef<Path>) -> RunResults {
    let mut logs = Vec::new();
    find_logs(dir.as_ref(), &mut logs);
    let mut rows: Vec<RunResult> = logs.iter().filter_map(|p| read_run(p)).collect();
    rows.sort_by(|a, b| {
        (&a.platform, a.world_size, &a.job).cmp(&(&b.platform, b.world_size, &b.job))
    });
    RunResults(rows)
}

fn find_logs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            find_logs(&path, out);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("mllog") && n.ends_with(".txt"))
        {
            out.push(path);
        }
    }
}

fn read_run(log: &Path) -> Option<RunResult> {
    let text = std::fs::read_to_string(log).ok()?;
    let job = log
        .file_stem()?
        .to_string_lossy()
        .trim_start_matches("mllog")
        .trim_start_matches('-')
        .to_owned();
    let mut run = RunResult {
        log: log.to_owned(),
        platform: String::new(),
        job,
        world_size: 1,
        status: String::new(),
        time_to_train_s: None,
        accuracy: None,
        images_per_second: None,
    };
    let (mut started, mut stopped) = (None, None);
    for line in text.lines() {
        let Some(record) = line
            .strip_prefix(":::MLLOG ")
            .and_then(|j| serde_json::from_str::<Value>(j).ok())
        else {
            continue;
        };
        let time = record["time_ms"].as_f64();
        match record["key"].as_str() {
            Some("submission_platform") => {
                run.platform = record["value"].as_str().unwrap_or_default().to_owned();
                run.world_size = record["metadata"]["world_size"]
                    .as_u64()
                    .unwrap_or(1)
                    .max(1);
            }
            Some("run_start") => started = time,
            Some("run_stop") => {
                stopped = time;
                run.status = record["metadata"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            Some("eval_accuracy") => run.accuracy = record["value"].as_f64(),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (started, stopped) {
        run.time_to_train_s = Some((b - a) / 1000.0);
    }
    // notebook 04's line for this job, beside the log.
    let jsonl = log.with_file_name("results.jsonl");
    if let Ok(lines) = std::fs::read_to_string(jsonl) {
        run.images_per_second = lines
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["job"].as_str() == Some(run.job.as_str()))
            .filter_map(|r| r["images_per_second"].as_f64())
            .next_back();
    }
    Some(run)
}

impl RunResults {
    /// Images per second per run, as bars labelled with the device, times the world size when
    /// several processes trained (and the job when that label appears more than once).
    pub fn chart(&self) -> BarChart {
        let mut chart = BarChart::new()
            .title("training throughput")
            .y_label("images/s");
        for row in &self.0 {
            chart = chart.bar(self.label(row), row.images_per_second.unwrap_or(f64::NAN));
        }
        chart
    }

    fn label(&self, row: &RunResult) -> String {
        let device = |r: &RunResult| match r.world_size {
            1 => r.platform.clone(),
            n => format!("{n} x {}", r.platform),
        };
        let label = device(row);
        if self.0.iter().filter(|r| device(r) == label).count() > 1 {
            format!("{label} ({})", row.job)
        } else {
            label
        }
    }

    fn cells(row: &RunResult) -> [String; 7] {
        let num = |v: Option<f64>, digits: usize| {
            v.map(|v| format!("{v:.digits$}"))
                .unwrap_or_else(|| "-".into())
        };
        [
            row.platform.clone(),
            row.job.clone(),
            row.world_size.to_string(),
            row.status.clone(),
            row.time_to_train_s
                .filter(|_| row.status == "success")
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "not reached".into()),
            num(row.accuracy, 4),
            num(row.images_per_second, 1),
        ]
    }
}

const HEADER: [&str; 7] = [
    "device",
    "job",
    "world size",
    "status",
    "time to train",
    "accuracy",
    "images/s",
];

impl RichDisplay for RunResults {
    fn mime_bundle(&self) -> MimeBundle {
        let mut text = HEADER.join(" | ");
        let mut html = String::from("<table><tr>");
        for h in HEADER {
            html.push_str(&format!("<th>{h}</th>"));
        }
        html.push_str("</tr>");
        for row in &self.0 {
            let cells = Self::cells(row);
            text.push('\n');
            text.push_str(&cells.join(" | "));
            html.push_str("<tr>");
            for cell in &cells {
                html.push_str("<td>");
                html.push_str(&html_escape(cell));
                html.push_str("</td>");
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
        if self.0.iter().any(|r| r.images_per_second.is_some())
            && let Ok(svg) = self.chart().to_svg()
        {
            html.push_str(&svg.0);
        }
        MimeBundle::new()
            .with("text/plain", text)
            .with("text/html", html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mllog(platform: &str, start: u64, stop: u64, accuracy: f64, status: &str) -> String {
        [
            format!(r#":::MLLOG {{"namespace":"","time_ms":{start},"event_type":"POINT_IN_TIME","key":"submission_platform","value":"{platform}","metadata":{{}}}}"#),
            format!(r#":::MLLOG {{"namespace":"","time_ms":{start},"event_type":"INTERVAL_START","key":"run_start","value":null,"metadata":{{}}}}"#),
            format!(r#":::MLLOG {{"namespace":"","time_ms":{stop},"event_type":"POINT_IN_TIME","key":"eval_accuracy","value":{accuracy},"metadata":{{"epoch_num":3}}}}"#),
            format!(r#":::MLLOG {{"namespace":"","time_ms":{stop},"event_type":"INTERVAL_END","key":"run_stop","value":null,"metadata":{{"status":"{status}"}}}}"#),
        ]
        .join("\n")
    }

    #[test]
    fn logs_below_a_dir_become_a_table_with_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("task-0");
        let b = dir.path().join("task-1");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            a.join("mllog-11.txt"),
            mllog("NVIDIA H100", 1000, 61000, 0.9412, "success"),
        )
        .unwrap();
        std::fs::write(a.join("results.jsonl"), "{\"job\":\"10\",\"images_per_second\":1.0}\n{\"job\":\"11\",\"images_per_second\":35000.5}\n").unwrap();
        std::fs::write(
            b.join("mllog-12.txt"),
            mllog("NVIDIA A100", 0, 90000, 0.91, "aborted"),
        )
        .unwrap();
        std::fs::write(b.join("notes.txt"), "not a log").unwrap();
        let table = results(dir.path());
        assert_eq!(table.0.len(), 2);
        let (a100, h100) = (&table.0[0], &table.0[1]);
        assert_eq!(
            (
                a100.platform.as_str(),
                a100.job.as_str(),
                a100.status.as_str()
            ),
            ("NVIDIA A100", "12", "aborted")
        );
        assert_eq!(a100.images_per_second, None);
        assert_eq!(h100.time_to_train_s, Some(60.0));
        assert_eq!(h100.accuracy, Some(0.9412));
        assert_eq!(h100.images_per_second, Some(35000.5));
        let bundle = table.mime_bundle();
        let text = bundle.get("text/plain").unwrap();
        assert!(
            text.contains("NVIDIA H100 | 11 | 1 | success | 60.0 s | 0.9412 | 35000.5"),
            "{text}"
        );
        assert!(
            text.contains("NVIDIA A100 | 12 | 1 | aborted | not reached | 0.9100 | -"),
            "{text}"
        );
        let html = bundle.get("text/html").unwrap();
        assert!(
            html.starts_with("<table>") && html.contains("<svg"),
            "table and bar chart"
        );
    }

    #[test]
    fn the_world_size_comes_from_the_platform_event_and_tells_runs_apart() {
        let dir = tempfile::tempdir().unwrap();
        let one = mllog("CPU", 0, 30000, 0.5, "aborted");
        let two = one.replace(
            r#""key":"submission_platform","value":"CPU","metadata":{}"#,
            r#""key":"submission_platform","value":"CPU","metadata":{"world_size":2}"#,
        );
        assert_ne!(one, two);
        std::fs::write(dir.path().join("mllog-local.txt"), one).unwrap();
        std::fs::write(dir.path().join("mllog-40.txt"), two).unwrap();
        let table = results(dir.path());
        let sizes: Vec<_> = table
            .0
            .iter()
            .map(|r| (r.job.as_str(), r.world_size))
            .collect();
        assert_eq!(sizes, [("local", 1), ("40", 2)]);
        assert_eq!(table.label(&table.0[0]), "CPU");
        assert_eq!(table.label(&table.0[1]), "2 x CPU");
        let text = table.mime_bundle().get("text/plain").unwrap().to_owned();
        assert!(
            text.starts_with("device | job | world size | status"),
            "{text}"
        );
        assert!(text.contains("CPU | 40 | 2 | aborted"), "{text}");
    }
}
