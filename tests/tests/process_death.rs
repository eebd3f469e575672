//! Process death: the exactly-once job (windows, keyed totals, the file sink) runs in a child
//! process that is killed with SIGKILL at a random moment; a new process resumes from the
//! newest complete checkpoint in the directory and finishes. The committed parts hold exactly
//! the brute-force output: nothing lost, nothing twice, nothing hidden left behind.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shardflow_tests::exactly_once::{self, first_difference, read_output};

const EVENTS: u64 = 150_000;
const KEYS: u64 = 2_000;

fn job(out: &std::path::Path, checkpoints: &std::path::Path, seed: u64, p: u32) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_exactly_once_job"));
    c.arg(out)
        .arg(checkpoints)
        .args([EVENTS, KEYS, seed, p as u64, 40].map(|n| n.to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn a_job_killed_with_sigkill_resumes_in_a_new_process_exactly_once() {
    let _cpus = shardflow_tests::exclusive_cpus();
    let seed = shardflow_tests::seed(0xdead);
    let mut rng = shardflow_core::rng::SplitMix64::new(seed);
    let want = exactly_once::reference(&exactly_once::events(EVENTS, KEYS, seed));
    let mut resumed_from_checkpoint = 0;
    for round in 0..3 {
        let p = [2, 1, 2][round];
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let checkpoints = tmp.path().join("checkpoints");
        let kill_after = Duration::from_millis(150 + rng.below(900));
        let what = format!("seed {seed} round {round}: P = {p}, killed after {kill_after:?}");

        let mut child = job(&out, &checkpoints, seed, p).spawn().unwrap();
        let start = Instant::now();
        while start.elapsed() < kill_after {
            if let Some(status) = child.try_wait().unwrap() {
                let o = child.wait_with_output().unwrap();
                panic!(
                    "{what}: the job ended ({status}) before it was killed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "{what}: {status}");

        let resumed = job(&out, &checkpoints, seed, p)
            .arg("--resume")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&resumed.stdout);
        assert!(
            resumed.status.success(),
            "{what}: the resumed job failed: {}{stdout}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        if stdout.contains("restored from Some(") {
            resumed_from_checkpoint += 1;
        }
        let (got, hidden) = read_output(&out);
        assert!(hidden.is_empty(), "{what}: left hidden: {hidden:?}");
        assert!(got == want, "{what}: {}", first_difference(&got, &want));
        eprintln!("{what}: {}", stdout.trim());
    }
    assert!(
        resumed_from_checkpoint >= 2,
        "only {resumed_from_checkpoint} of 3 kills came after a checkpoint"
    );
}
