//! Control of running local jobs from other processes: `shardflow list`, `shardflow savepoint`
//! and `shardflow cancel` talk to a job over a Unix socket it serves while it runs,
//! `<temp dir>/shardflow-jobs/<job>-<pid>.sock`, a line each way:
//!
//! - `savepoint <dir>` → `ok <path of the savepoint>` or `error <why>`
//! - `cancel` → `ok`
//!
//! The socket is only as private as its directory (owner-only permissions); cluster mode will
//! authenticate with the cluster secret (issue 6).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use shardflow_core::JobError;
use shardflow_core::config::JobControl;

/// Where running local jobs keep their sockets.
pub fn jobs_dir() -> PathBuf {
    std::env::temp_dir().join("shardflow-jobs")
}

/// Serves `control` for job `job` until dropped (the socket is removed then).
pub struct ControlServer {
    /// None: not served (a cluster's part, which the job manager controls).
    path: Option<PathBuf>,
}

impl ControlServer {
    /// No socket: a job deployed on a task manager is listed, cancelled and savepointed
    /// through the job manager (and a task manager may run several parts of one name).
    pub fn none() -> Self {
        Self { path: None }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Starts serving `control` as job `job` of this process, on a thread of its own.
pub fn serve(job: &str, control: JobControl) -> Result<ControlServer, JobError> {
    let dir = jobs_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| JobError::io(&dir, "cannot create the jobs directory", e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let path = dir.join(format!("{job}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| JobError::io(&path, "cannot listen for job control", e))?;
    std::thread::Builder::new()
        .name("shardflow-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let control = control.clone();
                // One request per connection; a savepoint may take a while, so each has a
                // thread (requests are rare).
                let _ = std::thread::Builder::new()
                    .name("shardflow-control-request".into())
                    .spawn(move || answer(stream, &control));
            }
        })
        .map_err(|e| JobError::io(&path, "cannot start the control thread", e))?;
    Ok(ControlServer { path: Some(path) })
}

fn answer(stream: UnixStream, control: &JobControl) {
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let line = line.trim_end();
    let reply = if let Some(dir) = line.strip_prefix("savepoint ") {
        match control.savepoint(dir) {
            Ok(path) => format!("ok {}", path.display()),
            Err(e) => format!("error {e}"),
        }
    } else if line == "cancel" {
        control.cancel();
        "ok".to_string()
    } else {
        format!("error unknown request {line:?}")
    };
    let _ = (&stream).write_all(format!("{reply}\n").as_bytes());
}

/// A running local job: its name, process id and socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    pub job: String,
    pub pid: u32,
    pub socket: PathBuf,
}

/// The local jobs running now (sockets nobody answers are stale and removed).
pub fn running_jobs() -> Vec<RunningJob> {
    let Ok(entries) = std::fs::read_dir(jobs_dir()) else {
        return Vec::new();
    };
    let mut jobs = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".sock"))
        else {
            continue;
        };
        let Some((job, pid)) = name
            .rsplit_once('-')
            .and_then(|(j, p)| p.parse().ok().map(|p| (j.to_string(), p)))
        else {
            continue;
        };
        if UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        jobs.push(RunningJob {
            job,
            pid,
            socket: path,
        });
    }
    jobs.sort_by(|a, b| (&a.job, a.pid).cmp(&(&b.job, b.pid)));
    jobs
}

/// The one running job named `job` (or with process id `pid`).
pub fn find(job: &str, pid: Option<u32>) -> Result<RunningJob, JobError> {
    let matching: Vec<RunningJob> = running_jobs()
        .into_iter()
        .filter(|j| j.job == job && pid.is_none_or(|p| p == j.pid))
        .collect();
    match matching.len() {
        1 => Ok(matching.into_iter().next().expect("one")),
        0 => Err(JobError::Config(format!(
            "no local job '{job}' is running{}",
            pid.map_or(String::new(), |p| format!(" as process {p}"))
        ))),
        _ => Err(JobError::Config(format!(
            "{} local jobs '{job}' are running (processes {}): choose one with --pid",
            matching.len(),
            matching
                .iter()
                .map(|j| j.pid.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Sends `request` to a running job and returns its answer (after `ok `), or its error.
pub fn request(job: &RunningJob, request: &str) -> Result<String, JobError> {
    let io = |e| JobError::io(&job.socket, "cannot talk to the job", e);
    let stream = UnixStream::connect(&job.socket).map_err(io)?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    let line = line.trim_end();
    match line.strip_prefix("ok") {
        Some(rest) => Ok(rest.trim_start().to_string()),
        None => Err(JobError::Config(format!(
            "job '{}' (process {}): {}",
            job.job,
            job.pid,
            line.strip_prefix("error ").unwrap_or(line)
        ))),
    }
}

/// A savepoint of running job `job` into a new directory under `dir`; its path.
pub fn savepoint(job: &RunningJob, dir: &Path) -> Result<PathBuf, JobError> {
    let dir = std::path::absolute(dir)
        .map_err(|e| JobError::io(dir, "cannot resolve the savepoint directory", e))?;
    request(job, &format!("savepoint {}", dir.display())).map(PathBuf::from)
}
