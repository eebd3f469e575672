//! Cluster mode for job binaries: the job manager and task manager roles, and submitting a job,
//! as the `shardflow` binary offers them, for a user's own binary too.
//!
//! A job is compiled Rust, so a cluster runs the same binary everywhere: the job manager
//! names the job's command line, and every task manager runs it with its part of the shards
//! (the environment's `execute` picks the part up: the job's code does not change). A user's
//! binary gets the three roles from [`main`]:
//!
//! ```no_run
//! use shardflow::prelude::*;
//!
//! fn main() -> std::process::ExitCode {
//!     shardflow::cluster::main("squares", |args: &[String]| {
//!         let n: i64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
//!         let mut env = StreamExecutionEnvironment::local();
//!         env.generate_sequence(1, n)
//!             .map(|x| x * x)
//!             .write_as_text("squares-out");
//!         env.execute("squares")?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! ```text
//! my-job jobmanager --bind 0.0.0.0:6123                # one machine
//! my-job taskmanager --jobmanager jm:6123 --cores 8    # every machine
//! my-job run --jobmanager jm:6123 -- 1000000           # anywhere: runs on the cluster
//! my-job run -- 1000000                                # local mode, this process
//! ```
//!
//! Every role needs the cluster secret: `--secret` or `SHARDFLOW_CLUSTER_SECRET`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use shardflow_core::JobError;
use shardflow_core::cluster::jobmanager::{JobManager, JobManagerConfig};
use shardflow_core::cluster::taskmanager::{TaskManagerConfig, run_task_manager};

pub use shardflow_core::cluster::{JobRunner, SECRET_ENV};

/// Where a cluster's job manager is, and its secret.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// A cluster's job manager (host:port): run on, or ask, the cluster instead of this
    /// machine.
    #[arg(long, value_name = "ADDR")]
    pub jobmanager: Option<String>,
    /// The cluster secret (default: $SHARDFLOW_CLUSTER_SECRET).
    #[arg(long)]
    pub secret: Option<String>,
}

/// The job manager's flags.
#[derive(clap::Args, Clone, Debug)]
pub struct JobManagerArgs {
    #[arg(long, default_value = "0.0.0.0:6123")]
    pub bind: SocketAddr,
    /// The cluster secret (default: $SHARDFLOW_CLUSTER_SECRET).
    #[arg(long)]
    pub secret: Option<String>,
    /// Where the job manager records its running jobs: restarted with the same directory, it
    /// takes them up again from their newest checkpoints.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// How long a submitted job waits for a free core (every core of the task managers runs a
    /// job) before it is refused.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub resource_wait_secs: u64,
}

/// A task manager's flags.
#[derive(clap::Args, Clone, Debug)]
pub struct TaskManagerArgs {
    #[arg(long)]
    pub jobmanager: String,
    /// Shards to offer (default: the cores this process may use).
    #[arg(long)]
    pub cores: Option<u32>,
    /// The cluster secret (default: $SHARDFLOW_CLUSTER_SECRET).
    #[arg(long)]
    pub secret: Option<String>,
    /// Where to listen for other task managers' data (default: the interface that reaches the
    /// job manager, any port).
    #[arg(long)]
    pub data_bind: Option<SocketAddr>,
    /// Where shared-memory rings live.
    #[arg(long, default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Which host this is (default: the machine's boot id and network namespace); task
    /// managers of one host exchange records through shared memory.
    #[arg(long)]
    pub host: Option<String>,
}

/// Serves as a job manager until the process ends.
pub fn run_jobmanager(args: JobManagerArgs) -> Result<(), JobError> {
    let secret = shardflow_core::cluster::secret(args.secret.as_deref())?;
    let mut config = JobManagerConfig::new(args.bind, secret);
    config.state_dir = args.state_dir;
    config.resource_wait = std::time::Duration::from_secs(args.resource_wait_secs);
    let jm = JobManager::start(config)?;
    eprintln!("job manager listening on {}", jm.local_addr());
    jm.wait();
    Ok(())
}

/// Serves as a task manager, running deployed jobs through `runner`, until the job manager
/// goes away.
pub fn run_taskmanager(args: TaskManagerArgs, runner: JobRunner) -> Result<(), JobError> {
    let secret = shardflow_core::cluster::secret(args.secret.as_deref())?;
    let cores = args
        .cores
        .unwrap_or_else(shardflow_core::config::default_parallelism);
    let mut config = TaskManagerConfig::new(args.jobmanager, cores, secret);
    config.data_bind = args.data_bind;
    config.shm_dir = args.shm_dir;
    config.host = args.host;
    run_task_manager(config, runner, Default::default())
}

/// Submits job `name` with its command line `args` to the cluster and waits for its end;
/// returns the parallelism it ran at.
pub fn submit(
    cluster: &ClusterArgs,
    name: &str,
    args: Vec<String>,
    parallelism: Option<u32>,
) -> Result<u32, JobError> {
    let jm = cluster
        .jobmanager
        .as_deref()
        .ok_or_else(|| JobError::Config("no --jobmanager given".into()))?;
    let secret = shardflow_core::cluster::secret(cluster.secret.as_deref())?;
    shardflow_core::cluster::jobmanager::submit(jm, &secret, name, args, parallelism, |id, p| {
        eprintln!("job {id} '{name}' deployed at P = {p} by {jm}")
    })
}

/// The arguments after `run`, less the cluster's flags: what a task manager runs the job with.
pub fn job_args(argv: &[String]) -> Vec<String> {
    let start = argv
        .iter()
        .position(|a| a == "run")
        .map_or(argv.len(), |i| i + 1);
    let mut out = Vec::new();
    let mut skip = false;
    for a in &argv[start..] {
        if std::mem::take(&mut skip) {
            continue;
        }
        match a.as_str() {
            "--jobmanager" | "--secret" => skip = true,
            _ if a.starts_with("--jobmanager=") || a.starts_with("--secret=") => {}
            _ => out.push(a.clone()),
        }
    }
    out
}

#[derive(Parser)]
struct MainCli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run the job: on a cluster with --jobmanager, else in this process.
    Run {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Shards on the cluster (default: every core its task managers offer).
        #[arg(long, short = 'p')]
        parallelism: Option<u32>,
        /// The job's own arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Serve as the cluster's job manager.
    Jobmanager(JobManagerArgs),
    /// Serve as a task manager of the cluster.
    Taskmanager(TaskManagerArgs),
}

/// The `main` of a job binary: `run` (locally, or on a cluster with `--jobmanager`),
/// `jobmanager` and `taskmanager`, with `job` building and executing the job from its own
/// arguments (those after `--`). Errors are printed; the exit code is 2 for a bad setting or
/// input, 1 for a failed job.
pub fn main(
    name: &str,
    job: impl Fn(&[String]) -> Result<(), JobError> + Send + Sync + 'static,
) -> ExitCode {
    let cli = MainCli::parse();
    let job = Arc::new(job);
    let result = match cli.role {
        Role::Run {
            cluster,
            parallelism,
            args,
        } => {
            if cluster.jobmanager.is_some() {
                // A task manager runs it as `run -- ARGS`: the runner below gets ARGS.
                submit(&cluster, name, args, parallelism).map(|_| ())
            } else {
                job(&args)
            }
        }
        Role::Jobmanager(a) => run_jobmanager(a),
        Role::Taskmanager(a) => {
            let job = job.clone();
            run_taskmanager(
                a,
                Arc::new(move |args: &[String]| job(args).map_err(|e| e.to_string())),
            )
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
