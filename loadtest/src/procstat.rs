//! What a process costs, read from `/proc/<pid>/stat` and `/proc/<pid>/status`
//! (Linux only): CPU seconds consumed so far, and memory resident now and at peak.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::stats::lock;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time since the process started.
    pub cpu_secs: f64,
    pub rss_bytes: u64,
    /// The kernel's own high-water mark of resident memory (VmHWM).
    pub hwm_bytes: u64,
}

/// Reads one process; fails if it is gone or not on Linux.
pub fn sample(pid: u32) -> std::io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let cpu_secs = cpu_from_stat(&stat).ok_or_else(|| bad("/proc/pid/stat"))?;
    Ok(ProcSample {
        cpu_secs,
        rss_bytes: kb_field(&status, "VmRSS:").unwrap_or(0) * 1024,
        hwm_bytes: kb_field(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("unreadable {what}"),
    )
}

/// utime + stime (fields 14 and 15) in seconds. The command name (field 2)
/// may hold spaces and parentheses, so counting starts after the last ')'.
fn cpu_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

fn kb_field(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The host's one-minute load average (other work competing for the CPUs).
pub fn load_avg_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Sum of CPU seconds over `pids` (missing processes count zero).
pub fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| sample(p).ok())
        .map(|s| s.cpu_secs)
        .sum()
}

/// Polls resident memory of some processes until stopped, keeping the peak
/// per pid (VmHWM alone would include whatever ran before this test).
pub struct Sampler {
    peaks: Arc<Mutex<BTreeMap<u32, ProcSample>>>,
}

impl Sampler {
    pub fn start(pids: Vec<u32>, every: Duration, mut stop: watch::Receiver<bool>) -> Self {
        let peaks: Arc<Mutex<BTreeMap<u32, ProcSample>>> = Arc::default();
        let shared = peaks.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                for &pid in &pids {
                    if let Ok(s) = sample(pid) {
                        let mut map = lock(&shared);
                        let peak = map.entry(pid).or_default();
                        peak.rss_bytes = peak.rss_bytes.max(s.rss_bytes);
                        peak.hwm_bytes = peak.hwm_bytes.max(s.hwm_bytes);
                        peak.cpu_secs = s.cpu_secs;
                    }
                }
            }
        });
        Self { peaks }
    }

    /// Highest resident memory seen per pid so far.
    pub fn peaks(&self) -> BTreeMap<u32, ProcSample> {
        lock(&self.peaks).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "42 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 5 6 7";
        let cpu = cpu_from_stat(stat).unwrap();
        // SAFETY: as above.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((cpu - 300.0 / hz).abs() < 1e-9);
        assert_eq!(
            kb_field("Name:\tx\nVmRSS:\t  1234 kB\n", "VmRSS:"),
            Some(1234)
        );
    }

    #[test]
    fn reads_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.hwm_bytes >= s.rss_bytes / 2);
    }
}
