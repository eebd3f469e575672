//! Clusters of `shardflow` processes for the tests: a job manager and task managers, each a
//! child process whose standard error is kept for the test to look at.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-cluster-secret";

pub fn shardflow() -> Command {
    binary(Path::new(env!("CARGO_BIN_EXE_shardflow")))
}

pub fn binary(path: &Path) -> Command {
    let mut c = Command::new(path);
    c.env("SHARDFLOW_CLUSTER_SECRET", SECRET);
    c
}

/// The example binary `name` (cargo builds the examples of the package it tests, beside the
/// test binaries).
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built (run `cargo test -p shardflow`, which builds the examples)",
        path.display()
    );
    path
}

/// A process whose standard error is kept, line by line, for the test to look at.
pub struct Watched {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    news: mpsc::Receiver<String>,
}

impl Watched {
    pub fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, news) = mpsc::channel();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self { child, lines, news }
    }

    /// Waits (bounded) for a line containing `what`; returns it.
    pub fn wait_for(&self, what: &str) -> String {
        if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.news.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "never saw '{what}' in:\n{}",
                    self.lines.lock().unwrap().join("\n")
                ),
            }
        }
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub jm: Watched,
    pub addr: String,
    pub tms: Vec<Watched>,
    _shm: tempfile::TempDir,
}

impl Cluster {
    /// A job manager, and a task manager of one core on each of `hosts` (equal names: one
    /// host, shared memory between them).
    pub fn start(hosts: &[&str]) -> Self {
        Self::start_of(Path::new(env!("CARGO_BIN_EXE_shardflow")), hosts)
    }

    /// The same, of a job binary's roles.
    pub fn start_of(bin: &Path, hosts: &[&str]) -> Self {
        Self::start_with(bin, hosts, 1)
    }

    /// A job manager, and a task manager of `cores` cores on each of `hosts`.
    pub fn start_with(bin: &Path, hosts: &[&str], cores: u32) -> Self {
        let jm = Watched::spawn(binary(bin).args(["jobmanager", "--bind", "127.0.0.1:0"]));
        let line = jm.wait_for("listening on");
        let addr = line.rsplit(' ').next().unwrap().to_string();
        let shm = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        // One at a time, so that task manager i + 1 is `tms[i]`.
        let tms = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let tm = Watched::spawn(
                    binary(bin)
                        .args(["taskmanager", "--jobmanager", &addr, "--cores"])
                        .arg(cores.to_string())
                        .args(["--host", host, "--shm-dir"])
                        .arg(shm.path()),
                );
                jm.wait_for(&format!("task manager {} at", i + 1));
                tm
            })
            .collect();
        Self {
            jm,
            addr,
            tms,
            _shm: shm,
        }
    }

    pub fn run(&self, args: &[&str], out: &Path) -> std::process::Output {
        self.submit(args, out).output().unwrap()
    }

    /// `shardflow run` of `args` on this cluster, writing into `out`.
    pub fn submit(&self, args: &[&str], out: &Path) -> Command {
        let mut c = shardflow();
        c.arg("run")
            .args(args)
            .arg("--output")
            .arg(out)
            .args(["--jobmanager", &self.addr]);
        c
    }
}

/// The job in local mode at P = 2: the reference output. Unpaced: pacing sets when readings
/// are made, not what they are, so the output is the same, sooner.
pub fn local(args: &[&str], out: &Path) {
    let status = shardflow()
        .arg("run")
        .args(args.iter().filter(|a| **a != "--paced"))
        .args(["-p", "2", "--output"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The paced telemetry job of `secs` seconds the failover tests run (300 sensors, 20,000
/// readings a second).
pub fn paced_telemetry(secs: &'static str) -> [&'static str; 8] {
    [
        "telemetry",
        "--paced",
        "--rate",
        "20000",
        "--duration-secs",
        secs,
        "--sensors",
        "300",
    ]
}

/// `run` of `job` on the cluster at `jobmanager`, with a checkpoint every 200 ms into `ck` and
/// output parts rolled (so committed) every 300 ms into `out`; its stderr piped.
pub fn run_checkpointed(
    mut cmd: Command,
    job: &[&str],
    ck: &Path,
    out: &Path,
    jobmanager: &str,
) -> Child {
    cmd.arg("run")
        .args(job)
        .arg("--checkpoint-dir")
        .arg(ck)
        .args([
            "--checkpoint-interval-ms",
            "200",
            "--part-rollover-ms",
            "300",
        ])
        .arg("--output")
        .arg(out)
        .args(["--jobmanager", jobmanager])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until `out` holds a committed part file: failures injected after it test
/// that committed output is neither lost nor written again.
pub fn wait_for_committed_output(out: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_dir(out).is_ok_and(|mut d| {
        d.any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-")
        })
    }) {
        assert!(Instant::now() < deadline, "no output committed");
        std::thread::sleep(Duration::from_millis(20));
    }
}
