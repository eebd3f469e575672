//! WordCount on a cluster of two task manager processes beside the same job in local mode at
//! the same parallelism: what spreading a job over processes costs.
//!
//! The harness binary plays every role itself (`shardflow-bench jobmanager` and
//! `taskmanager` are hidden subcommands), as a user's job binary does through
//! `shardflow::cluster`. Both runs read the same generated file and write `word,count` CSV
//! files; the cluster run is timed from submission to the job manager's report of its end.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardflow::jobs::wordcount::{self, WordCountInput};
use shardflow::prelude::*;

/// The job both runs execute: `[input, output]`.
pub fn job(args: &[String]) -> Result<(), JobError> {
    let [input, output] = args else {
        return Err(JobError::Config("usage: INPUT OUTPUT_DIR".into()));
    };
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(2).set_runtime_mode(RuntimeMode::Batch);
    let lines = wordcount::lines(&env, &WordCountInput::Path(input.into()));
    wordcount::word_counts(&lines).write_as_csv_with(output.clone(), WriteMode::Overwrite);
    env.execute("wordcount")?;
    Ok(())
}

/// The secret of the bench's own cluster (its processes are its children, on loopback).
pub const SECRET: &str = "shardflow-bench";

/// A job manager and two task managers of one core each, children of this process; `hosts`
/// names their hosts (equal: shared memory between them; different: TCP).
pub struct Cluster {
    children: Vec<Child>,
    pub addr: String,
}

impl Cluster {
    pub fn start(hosts: [&str; 2]) -> std::io::Result<Self> {
        let me = std::env::current_exe()?;
        let spawn = |args: &[&str], stderr: Stdio| {
            Command::new(&me)
                .args(args)
                .env(shardflow::cluster::SECRET_ENV, SECRET)
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
        };
        let mut jm = spawn(&["jobmanager", "--bind", "127.0.0.1:0"], Stdio::piped())?;
        let mut lines = BufReader::new(jm.stderr.take().expect("piped")).lines();
        let addr = lines
            .next()
            .and_then(Result::ok)
            .and_then(|l| l.rsplit(' ').next().map(String::from))
            .ok_or_else(|| std::io::Error::other("the job manager said no address"))?;
        let mut children = vec![jm];
        for (i, host) in hosts.iter().enumerate() {
            let tm = spawn(
                &[
                    "taskmanager",
                    "--jobmanager",
                    &addr,
                    "--cores",
                    "1",
                    "--host",
                    host,
                ],
                Stdio::null(),
            )?;
            // Its registration, in order (task manager i + 1 takes shard i).
            let want = format!("task manager {} at", i + 1);
            loop {
                let line = lines
                    .next()
                    .and_then(Result::ok)
                    .ok_or_else(|| std::io::Error::other("the job manager stopped"))?;
                if line.contains(&want) {
                    break;
                }
            }
            children.push(tm);
        }
        // Keep draining the job manager's log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self { children, addr })
    }

    /// Runs the job on the cluster; returns the time from submission to its end.
    pub fn run(&self, input: &Path, output: &Path) -> Result<Duration, JobError> {
        let t0 = Instant::now();
        shardflow_core::cluster::jobmanager::submit(
            &self.addr,
            SECRET.as_bytes(),
            "wordcount",
            vec![input.display().to_string(), output.display().to_string()],
            Some(2),
            |_, _| {},
        )?;
        Ok(t0.elapsed())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The job in this process at P = 2; returns its time.
pub fn local(input: &Path, output: &Path) -> Result<Duration, JobError> {
    let t0 = Instant::now();
    job(&[input.display().to_string(), output.display().to_string()])?;
    Ok(t0.elapsed())
}
