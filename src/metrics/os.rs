//! The standard `process_*` metrics (CPU seconds, resident and virtual memory, file
//! descriptors, start time) that Prometheus's client libraries export and dashboards expect,
//! read from `/proc/self` at each scrape. Linux only; elsewhere none are exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// What `/proc/self` says of this process now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub virtual_bytes: f64,
    pub open_fds: f64,
    pub max_fds: f64,
    pub start_time_seconds: f64,
}

/// Reads `/proc/self`; `None` where there is no procfs or a file does not parse.
pub fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    parse(
        &stat,
        &boot,
        &limits,
        open_fds,
        ticks,
        rustix::param::page_size() as f64,
    )
}

/// [`Reading`] from the text of `/proc/self/stat`, `/proc/stat` and `/proc/self/limits`.
pub fn parse(
    stat: &str,
    boot: &str,
    limits: &str,
    open_fds: usize,
    ticks_per_second: f64,
    page_size: f64,
) -> Option<Reading> {
    // The command name (field 2) is in parentheses and may hold spaces: count after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers fields from 1 with the pid; `rest` starts at field 3 (state).
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let btime: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0.0);
    Some(Reading {
        cpu_seconds: (field(14)? + field(15)?) / ticks_per_second,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page_size,
        open_fds: open_fds as f64,
        max_fds,
        start_time_seconds: btime + field(22)? / ticks_per_second,
    })
}

/// Encodes a [`Reading`] at each scrape (registered on a registry without spillway's prefix).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                r.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                r.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                r.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                r.max_fds,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds",
                Some(Unit::Seconds),
                r.start_time_seconds,
            ),
        ] {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// proc(5)'s layout, with a command name holding spaces and a parenthesis.
    #[test]
    fn proc_files_parse_into_the_standard_figures() {
        let stat = "4242 (spill way) (x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 9 0 123400 987654321 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let boot = "cpu  1 2 3\nbtime 1765000000\nprocesses 99\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let r = parse(stat, boot, limits, 17, 100.0, 4096.0).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.virtual_bytes, 987_654_321.0);
        assert_eq!(r.resident_bytes, 2560.0 * 4096.0);
        assert_eq!(r.open_fds, 17.0);
        assert_eq!(r.max_fds, 1024.0);
        assert_eq!(r.start_time_seconds, 1_765_000_000.0 + 1234.0);
        assert_eq!(parse("garbage", boot, limits, 1, 100.0, 4096.0), None);
    }

    /// This very process, read for real: figures a live process has.
    #[test]
    fn this_process_reads_as_a_live_one() {
        let r = read().expect("procfs on Linux");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            r.resident_bytes > 1e6 && r.virtual_bytes >= r.resident_bytes,
            "{r:?}"
        );
        assert!(r.open_fds >= 3.0 && r.max_fds >= r.open_fds, "{r:?}");
        assert!(r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 86_400.0);
    }
}
