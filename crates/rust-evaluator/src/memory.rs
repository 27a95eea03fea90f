//! The memory the evaluation process may use, and whether it ran out: the limit of its memory
//! cgroup (a Slurm job's, v2 or v1) and `ulimit -v`, so that a cell killed for memory says so
//! (the limit, what was in use) instead of "the process died".

use std::path::{Path, PathBuf};

/// The memory cgroup a process is in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cgroup {
    /// cgroup v2: the directory under the unified hierarchy.
    V2(PathBuf),
    /// cgroup v1: the directory under the memory controller's hierarchy.
    V1(PathBuf),
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key N` in a flat-keyed file (`memory.events`, `memory.oom_control`).
fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Where each hierarchy is mounted, from `/proc/self/mountinfo`'s text: (v2 root, v1 memory
/// root).
fn mount_points(info: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut v2, mut v1) = (None, None);
    for line in info.lines() {
        // `... mount_point options - fstype source super_options`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split(' ').nth(4).map(PathBuf::from);
        let mut right = right.split(' ');
        match right.next() {
            Some("cgroup2") if v2.is_none() => v2 = mount,
            Some("cgroup")
                if right
                    .nth(1)
                    .is_some_and(|o| o.split(',').any(|o| o == "memory")) =>
            {
                v1 = mount
            }
            _ => {}
        }
    }
    (v2, v1)
}

impl Cgroup {
    /// The memory cgroup of process `pid` (v1's memory controller when it has one, else v2).
    pub(crate) fn of(pid: u32) -> Option<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Cgroup::parse(&text, &info).filter(|c| matches!(c, Cgroup::V1(_)) || c.dir().is_dir())
    }

    /// The memory cgroup a process's `/proc/PID/cgroup` names, under the mounts of
    /// `/proc/self/mountinfo` (v1's memory controller when it has one, else v2).
    fn parse(text: &str, mountinfo: &str) -> Option<Cgroup> {
        let (v2_root, v1_root) = mount_points(mountinfo);
        let mut v2 = None;
        for line in text.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let path = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory")
                && let Some(root) = &v1_root
            {
                return Some(Cgroup::V1(root.join(path)));
            }
            if controllers.is_empty()
                && let Some(root) = &v2_root
            {
                v2 = Some(Cgroup::V2(root.join(path)));
            }
        }
        v2
    }

    fn dir(&self) -> &Path {
        match self {
            Cgroup::V2(d) | Cgroup::V1(d) => d,
        }
    }

    /// Out-of-memory kills in this cgroup so far.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        match self {
            Cgroup::V2(d) => keyed(&d.join("memory.events"), "oom_kill"),
            Cgroup::V1(d) => keyed(&d.join("memory.oom_control"), "oom_kill"),
        }
    }

    /// The smallest limit on the way up to the hierarchy's root (a job's limit may be set on a
    /// parent of the step's cgroup), with the directory that sets it.
    fn limit(&self) -> Option<(u64, PathBuf)> {
        let (file, unlimited) = match self {
            Cgroup::V2(_) => ("memory.max", u64::MAX),
            // v1 writes "no limit" as a page-rounded i64::MAX.
            Cgroup::V1(_) => ("memory.limit_in_bytes", 1 << 62),
        };
        let mut best: Option<(u64, PathBuf)> = None;
        let mut dir = Some(self.dir());
        while let Some(d) = dir {
            if let Some(limit) = read_u64(&d.join(file)).filter(|l| *l < unlimited)
                && best.as_ref().is_none_or(|(b, _)| limit < *b)
            {
                best = Some((limit, d.to_owned()));
            }
            if !d.join(file).exists() {
                break;
            }
            dir = d.parent();
        }
        best
    }

    /// The most memory in use at once so far (v2 kernels before 5.19 have only the current
    /// use).
    fn peak(&self) -> Option<u64> {
        match self {
            Cgroup::V2(d) => {
                read_u64(&d.join("memory.peak")).or_else(|| read_u64(&d.join("memory.current")))
            }
            Cgroup::V1(d) => read_u64(&d.join("memory.max_usage_in_bytes")),
        }
    }
}

/// `1.5 GiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `ulimit -v` of this process (which the evaluation process inherits), when set.
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pointer to a rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur)
}

/// The memory state of the evaluation process before a cell, to tell after it whether it died
/// for memory.
#[derive(Debug, Clone)]
pub(crate) struct MemoryWatch {
    cgroup: Option<Cgroup>,
    oom_kills: Option<u64>,
}

impl MemoryWatch {
    pub(crate) fn before_cell(child_pid: u32) -> MemoryWatch {
        let cgroup = Cgroup::of(child_pid);
        let oom_kills = cgroup.as_ref().and_then(Cgroup::oom_kills);
        MemoryWatch { cgroup, oom_kills }
    }

    /// Why the process that died ran out of memory, if it did: the cgroup counted an
    /// out-of-memory kill during the cell, or an allocation failed (`alloc_failed`: the size
    /// Rust's allocator reported before it aborted).
    pub(crate) fn out_of_memory(&self, alloc_failed: Option<u64>) -> Option<String> {
        if let Some(cgroup) = &self.cgroup
            && let (Some(before), Some(after)) = (self.oom_kills, cgroup.oom_kills())
            && after > before
        {
            let mut text =
                String::from("the evaluation process was killed for using more memory than it may");
            if let Some((limit, dir)) = cgroup.limit() {
                text.push_str(&format!(
                    ": the limit is {} (the memory cgroup {})",
                    size(limit),
                    dir.display()
                ));
            }
            if let Some(peak) = cgroup.peak() {
                text.push_str(&format!(", and {} was in use at the most", size(peak)));
            }
            return Some(text);
        }
        if let Some(bytes) = alloc_failed {
            let mut text = format!(
                "an allocation of {} failed, and Rust ends the process then",
                size(bytes)
            );
            if let Some(limit) = address_space_limit() {
                text.push_str(&format!(
                    ": this kernel may use {} of address space (ulimit -v)",
                    size(limit)
                ));
            }
            return Some(text);
        }
        None
    }
}

/// A note for a cell that panicked because libtorch could not allocate (under `ulimit -v`, or a
/// cgroup without swap): what the process may use.
pub(crate) fn allocation_note(message: &str) -> Option<String> {
    if !message.contains("can't allocate memory") {
        return None;
    }
    Some(match address_space_limit() {
        Some(limit) => format!(
            "Out of memory: this kernel may use {} of address space (ulimit -v). Free tensors (drop them, or reassign the variables) or use smaller batches.",
            size(limit)
        ),
        None => "Out of memory: free tensors (drop them, or reassign the variables) or use smaller batches.".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(512), "512 bytes");
        assert_eq!(size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn the_memory_cgroup_is_found_under_its_mount() {
        // A Slurm job's step on a cgroup v2 node (systemd's unified hierarchy).
        let v2_mounts = "25 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let step = "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n";
        assert_eq!(
            Cgroup::parse(step, v2_mounts),
            Some(Cgroup::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/slurmstepd.scope/job_42/step_0/user/task_0"
            )))
        );
        // A cgroup v1 node (with the unified hierarchy mounted beside it): the memory
        // controller's directory wins.
        let v1_mounts = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let v1 = "4:memory:/slurm/uid_1000/job_7/step_0\n1:cpu:/\n0::/\n";
        assert_eq!(
            Cgroup::parse(v1, v1_mounts),
            Some(Cgroup::V1(PathBuf::from(
                "/sys/fs/cgroup/memory/slurm/uid_1000/job_7/step_0"
            )))
        );
        // No memory controller mounted: none.
        assert_eq!(
            Cgroup::parse("1:cpu:/\n", v1_mounts.lines().next().unwrap()),
            None
        );
        assert_eq!(Cgroup::parse(step, ""), None);
    }

    #[test]
    fn a_failed_libtorch_allocation_gets_a_note() {
        let message = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 64000000000 bytes. Error code 12 (Cannot allocate memory)";
        assert!(allocation_note(message).is_some_and(|n| n.starts_with("Out of memory")));
        assert_eq!(allocation_note("index out of range"), None);
    }

    #[test]
    fn a_counted_kill_says_the_limit_and_the_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("job");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        std::fs::write(dir.join("memory.max"), "1073741824\n").unwrap();
        std::fs::write(dir.join("memory.peak"), "1073741000\n").unwrap();
        let watch = MemoryWatch {
            cgroup: Some(Cgroup::V2(dir.clone())),
            oom_kills: Some(0),
        };
        assert_eq!(watch.out_of_memory(None), None);
        std::fs::write(dir.join("memory.events"), "oom 2\noom_kill 1\n").unwrap();
        let text = watch.out_of_memory(None).unwrap();
        assert!(
            text.contains("the limit is 1.0 GiB") && text.contains("1024.0 MiB was in use"),
            "{text}"
        );
    }
}
