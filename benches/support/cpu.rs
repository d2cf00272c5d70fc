//! Where the CPU goes during a bench run, from `/proc` (Linux): the machine's counters, this
//! process's and every `postgres` process's. Shared by the benches that report it.

use std::path::Path;

/// CPU counters in clock ticks.
pub struct CpuSample {
    busy: u64,
    total: u64,
    this_process: u64,
    postgres: u64,
}

/// Where the CPU went between two samples, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub machine: f64,
    pub this_process: f64,
    pub postgres: f64,
    pub cores: f64,
    /// What this process is called in the report ("worker", "server").
    pub this_name: &'static str,
    /// What the rest of the machine's use is called ("the rest", "wrk and the rest").
    pub rest_name: &'static str,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} of {:.0} cores busy: {} {:.2}, PostgreSQL {:.2}, {} {:.2}",
            self.machine,
            self.cores,
            self.this_name,
            self.this_process,
            self.postgres,
            self.rest_name,
            (self.machine - self.this_process - self.postgres).max(0.0)
        )
    }
}

impl CpuSample {
    pub fn take() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((comm, ticks)) = process_ticks(&entry.path().join("stat"))
                && comm == "postgres"
            {
                postgres += ticks;
            }
        }
        Some(CpuSample {
            busy: total - idle,
            total,
            this_process: process_ticks(Path::new("/proc/self/stat"))?.1,
            postgres,
        })
    }

    /// The use since `before`, this process reported as `this_name` and the rest as `rest_name`.
    pub fn since(
        &self,
        before: &CpuSample,
        this_name: &'static str,
        rest_name: &'static str,
    ) -> CpuUse {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total = (self.total - before.total).max(1) as f64 / cores;
        let share = |ticks: u64| ticks as f64 / total;
        CpuUse {
            machine: share(self.busy - before.busy),
            this_process: share(self.this_process - before.this_process),
            postgres: share(self.postgres.saturating_sub(before.postgres)),
            cores,
            this_name,
            rest_name,
        }
    }
}

/// A process's command name and user plus system time, from its `/proc/<pid>/stat`.
fn process_ticks(path: &Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}
