//! `usage_request` (ipykernel's, read by jupyter-resource-usage's kernel panel): CPU and memory
//! of the kernel and every process below it (an evaluation process, its workers), the host's,
//! and the GPU memory those processes hold where `nvidia-smi` can tell. Read from Linux's
//! `/proc` directly: the kernel's descendants from each task's `children` file (no scan of a
//! shared node's whole process table) and memory as PSS, as ipykernel reports it, so that a
//! library mapped by two processes is not counted twice.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long `nvidia-smi` may take before the reply goes without GPU figures.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(2);

/// The reply's content, with ipykernel's field names.
#[derive(Debug, Serialize)]
pub struct UsageReply {
    pub hostname: String,
    pub pid: u32,
    /// Percent of one core, summed over the kernel and its descendants, since the last request
    /// (0 at the first, as psutil's `cpu_percent`).
    pub kernel_cpu: f64,
    /// Bytes (PSS), summed over the kernel and its descendants.
    pub kernel_memory: u64,
    pub cpu_count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_cpu_percent: Option<f64>,
    pub host_virtual_memory: HostMemory,
    /// Each process of the kernel's: pid, command name, CPU percent, PSS bytes.
    pub processes: Vec<ProcessUsage>,
    /// GPU memory (bytes) the kernel's processes hold, where `nvidia-smi` answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ProcessUsage {
    pub pid: u32,
    pub name: String,
    pub cpu: f64,
    pub memory: u64,
}

/// psutil's `virtual_memory()` fields that the panel reads.
#[derive(Debug, Default, Serialize)]
pub struct HostMemory {
    pub total: u64,
    pub available: u64,
    pub percent: f64,
    pub used: u64,
    pub free: u64,
}

/// Processes of the kernel's that are not below it (an evaluation process forked by another
/// process): they and their descendants count as the kernel's.
pub type OtherProcesses = std::sync::Arc<dyn Fn() -> Vec<u32> + Send + Sync>;

/// Remembers the CPU time seen at the last request, for percentages between requests.
#[derive(Default)]
pub struct UsageMeter {
    last: Mutex<Samples>,
    others: Option<OtherProcesses>,
}

#[derive(Default)]
struct Samples {
    /// pid -> (start time in ticks, CPU ticks, when read): a pid reused by a new process has
    /// another start time.
    processes: HashMap<u32, (u64, u64, Instant)>,
    /// (busy ticks, total ticks) of the host.
    host: Option<(u64, u64)>,
}

impl UsageMeter {
    pub fn new(others: Option<OtherProcesses>) -> UsageMeter {
        UsageMeter {
            last: Mutex::default(),
            others,
        }
    }

    pub fn reply(&self) -> UsageReply {
        let me = std::process::id();
        let ticks_per_s = clock_ticks();
        let mut samples = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut processes = Vec::new();
        let mut seen = HashMap::new();
        let others = self.others.as_ref().map(|f| f()).unwrap_or_default();
        for pid in descendants(me, &others) {
            let Some(stat) = ProcStat::read(pid) else {
                continue;
            };
            let cpu = match samples.processes.get(&pid) {
                Some(&(start, ticks, when)) if start == stat.start => {
                    let elapsed = now.duration_since(when).as_secs_f64();
                    let used = stat.cpu_ticks.saturating_sub(ticks) as f64 / ticks_per_s;
                    if elapsed > 0.0 {
                        100.0 * used / elapsed
                    } else {
                        0.0
                    }
                }
                _ => 0.0,
            };
            seen.insert(pid, (stat.start, stat.cpu_ticks, now));
            processes.push(ProcessUsage {
                pid,
                name: stat.name,
                cpu: (cpu * 10.0).round() / 10.0,
                memory: pss(pid).unwrap_or(stat.rss_pages * page_size()),
            });
        }
        samples.processes = seen;
        let host = host_cpu_ticks();
        let host_cpu_percent = match (samples.host, host) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(100.0 * busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        samples.host = host;
        drop(samples);
        let pids: Vec<u32> = processes.iter().map(|p| p.pid).collect();
        UsageReply {
            hostname: hostname(),
            pid: me,
            kernel_cpu: processes.iter().map(|p| p.cpu).sum(),
            kernel_memory: processes.iter().map(|p| p.memory).sum(),
            cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get()),
            host_cpu_percent: host_cpu_percent.filter(|p| *p > 0.0),
            host_virtual_memory: host_memory(),
            processes,
            gpu_memory: gpu_memory(&pids),
        }
    }
}

/// `pid` and `others`, and every process below them, parents first.
fn descendants(pid: u32, others: &[u32]) -> Vec<u32> {
    let mut out = vec![pid];
    out.extend(others.iter().filter(|o| **o != pid));
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task"))
            .into_iter()
            .flatten()
            .flatten();
        for task in tasks {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                if !out.contains(&child) {
                    out.push(child);
                }
            }
        }
        i += 1;
    }
    out
}

struct ProcStat {
    name: String,
    cpu_ticks: u64,
    start: u64,
    rss_pages: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may hold spaces: fields count from after it.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let name = text[open + 1..close].to_owned();
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        Some(ProcStat {
            name,
            cpu_ticks: field(14)? + field(15)?,
            start: field(22)?,
            rss_pages: field(24)?,
        })
    }
}

/// Proportional set size in bytes (`/proc/PID/smaps_rollup`, Linux 4.14 and newer).
fn pss(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:")
}

/// A `Name:   123 kB` line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn host_memory() -> HostMemory {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |name: &str| kib_field(&text, name).unwrap_or(0);
    let total = get("MemTotal:");
    let available = get("MemAvailable:");
    let free = get("MemFree:");
    let used = total.saturating_sub(available);
    HostMemory {
        total,
        available,
        percent: if total > 0 {
            (1000.0 * used as f64 / total as f64).round() / 10.0
        } else {
            0.0
        },
        used,
        free,
    }
}

/// (busy, total) CPU ticks of the host, from `/proc/stat`'s first line.
fn host_cpu_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    // idle and iowait are the 4th and 5th.
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// GPU memory held by `pids`, from `nvidia-smi`'s per-process list; None without a GPU (no
/// `nvidia-smi`, or it fails or hangs).
fn gpu_memory(pids: &[u32]) -> Option<u64> {
    let mut child = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + NVIDIA_SMI_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    if !status.success() {
        return None;
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take()?, &mut out).ok()?;
    Some(parse_compute_apps(&out, pids))
}

/// Sums `pid, MiB` lines of `pids`, in bytes.
fn parse_compute_apps(csv: &str, pids: &[u32]) -> u64 {
    csv.lines()
        .filter_map(|line| {
            let (pid, mib) = line.split_once(',')?;
            let pid: u32 = pid.trim().parse().ok()?;
            let mib: u64 = mib.trim().parse().ok()?;
            pids.contains(&pid).then_some(mib * 1024 * 1024)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_and_its_cpu_are_counted() {
        // A child that burns CPU until it is killed.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let meter = UsageMeter::default();
        let first = meter.reply();
        assert!(
            first.processes.iter().any(|p| p.pid == child.id()),
            "{first:?}"
        );
        assert_eq!(first.pid, std::process::id());
        assert!(first.kernel_memory > 0 && first.host_virtual_memory.total > 0);
        // CPU is measured between requests: wait until the child has used some.
        let start = ProcStat::read(child.id()).unwrap().cpu_ticks;
        while ProcStat::read(child.id()).unwrap().cpu_ticks < start + 5 {
            std::thread::yield_now();
        }
        let second = meter.reply();
        let busy = second
            .processes
            .iter()
            .find(|p| p.pid == child.id())
            .unwrap();
        assert!(busy.cpu > 0.0, "{second:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn gpu_lines_of_our_processes_are_summed() {
        let csv = "123, 512\n456, 1024\nnot a line\n";
        assert_eq!(parse_compute_apps(csv, &[456, 7]), 1024 * 1024 * 1024);
        assert_eq!(parse_compute_apps("", &[1]), 0);
    }
}
