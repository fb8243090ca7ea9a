//! The admin server of the real binary when the process runs out of file descriptors: it backs
//! off instead of spinning, says so once instead of once per attempt, and serves again when
//! descriptors come back. (Issue 17, defect 10: 100 % of a core and 1 GB of WARN lines in 10 s.)
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::live::{wait_for, workdir};
use support::prom::{Killed, free_port, try_http_get};

/// User plus system CPU time of a process so far, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_admin_server_backs_off_and_recovers() {
    let dir = workdir("admin-emfile");
    let port = free_port();
    let log = dir.path().join("drill.log");
    // A drill serving its metrics on the admin server, with 48 descriptors in all.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} drill --serve-metrics 127.0.0.1:{port} --speed 1 --linger 600 --out {}",
            env!("CARGO_BIN_EXE_spillway"),
            dir.path().join("out").display()
        ))
        .env("SPILLWAY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _child = Killed(child);
    wait_for("the admin server", 30, || async {
        try_http_get(port, "/metrics").is_some_and(|(code, _)| code == 200)
    })
    .await;

    // More idle connections than it has descriptors: the kernel queues them, accept fails.
    let mut held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    let warned = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("accept failed; backing off")
            .count()
    };
    wait_for("accept fails for want of descriptors", 30, || async {
        warned(&log) >= 1
    })
    .await;
    // Out of descriptors for two seconds (the idle connections hold theirs for 5 s): measure
    // the CPU it burns meanwhile. A spinning accept loop burns a whole core.
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let burnt = (cpu_ticks(pid) - before) as f64 / ticks_per_second() as f64;
    assert!(
        burnt < 0.25 * window.as_secs_f64(),
        "burnt {burnt:.2} s of CPU in {window:?} out of descriptors"
    );
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(
        warned(&log) <= 2 && size < 64 * 1024,
        "{} WARN lines, {size} bytes of log",
        warned(&log)
    );

    // Descriptors come back: it serves again, and says so.
    held.clear();
    wait_for("served again", 30, || async {
        try_http_get(port, "/metrics").is_some_and(|(code, _)| code == 200)
    })
    .await;
    wait_for("the recovery logged", 10, || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("accepting again")
    })
    .await;
    eprintln!("out of descriptors: {burnt:.3} s CPU in {window:?}, {size} bytes of log");
}
