//! Cluster mode: one job manager, any number of task managers, and jobs whose shards span them.
//!
//! ```text
//!   shardflow run wordcount --jobmanager JM ──Submit──▶ job manager
//!                                                         │ Deploy (the job's command line,
//!                                                         │ its P, every task manager's shards)
//!                     ┌───────────────────────────────────┴──────────┐
//!                     ▼                                              ▼
//!              task manager 1 (shards 0..2)  ◀── data ──▶  task manager 2 (shards 2..4)
//!              shared memory on one host, TCP between hosts (one link per pair)
//! ```
//!
//! The job binary is the same everywhere (jobs are compiled Rust): a task manager gets the
//! job's command line and runs it through its [`JobRunner`] exactly as local mode would, with
//! [`deployed`] telling the environment's `execute` which shards are this process's and how to
//! reach the others (a [`crate::config::ClusterPart`]). Every exchange between
//! shards of different processes then goes through a shared-memory ring (task managers of one
//! host) or a channel of the TCP link between the two processes; the operators cannot tell.
//!
//! The control plane ([`protocol`]) is rkyv messages in crc-checked frames over TCP, every
//! connection authenticated with the cluster secret: registration, deployment, heartbeats,
//! checkpoint trigger and ack, the end of each task manager's part, cancel, savepoints. A task
//! manager that stops heart-beating or drops its connection fails the attempts of the jobs it
//! has parts of; their other parts are cancelled and each job restarts from its newest
//! checkpoint.
//!
//! A task manager's cores are its slots: each job's part takes cores of its own, so one task
//! manager runs parts of several jobs at once. Their channels share the task managers' TCP
//! links under a tag per deployment ([`shardflow_shuffle::link::LinkChannel`]); their
//! shared-memory rings are files named by job and attempt.

pub mod jobmanager;
pub mod protocol;
pub mod taskmanager;

use std::cell::RefCell;

use crate::config::{ClusterPart, JobControl};

/// The environment variable that holds the cluster secret when no flag gives it.
pub const SECRET_ENV: &str = "SHARDFLOW_CLUSTER_SECRET";

/// What a task manager's job thread runs under: its part of the deployment.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub parallelism: u32,
    pub part: ClusterPart,
    /// The task manager cancels the job through it.
    pub control: JobControl,
    /// Resume from this checkpoint directory's newest complete checkpoint (a restart).
    pub restore_from: Option<std::path::PathBuf>,
}

thread_local! {
    static DEPLOYED: RefCell<Option<Deployed>> = const { RefCell::new(None) };
}

/// The deployment the calling thread runs a job for (on a task manager), if any: the
/// environment's `execute` takes its parallelism, shards and control from it.
pub fn deployed() -> Option<Deployed> {
    DEPLOYED.with(|d| d.borrow().clone())
}

/// Runs `f` with `d` as the calling thread's deployment.
pub fn with_deployment<R>(d: Deployed, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DEPLOYED.with(|d| d.borrow_mut().take());
        }
    }
    DEPLOYED.with(|slot| *slot.borrow_mut() = Some(d));
    let _reset = Reset;
    f()
}

/// Builds and runs a deployed job from its command line (what `shardflow run` was given after
/// `run`), through the same code as local mode; the deployment is the thread's
/// ([`deployed`]). An error is the job's failure, as a message.
pub type JobRunner = std::sync::Arc<dyn Fn(&[String]) -> Result<(), String> + Send + Sync>;

/// The cluster secret: the flag's value, else the environment's; an error says how to give it.
pub fn secret(flag: Option<&str>) -> Result<Vec<u8>, crate::JobError> {
    let s = match flag {
        Some(s) => s.to_string(),
        None => std::env::var(SECRET_ENV).unwrap_or_default(),
    };
    if s.is_empty() {
        return Err(crate::JobError::Config(format!(
            "a cluster needs a shared secret: give --secret or set {SECRET_ENV}"
        )));
    }
    Ok(s.into_bytes())
}
