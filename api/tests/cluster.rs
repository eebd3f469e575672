//! Cluster mode as a user runs it: a job manager and two task managers, each its own
//! `shardflow` process on loopback. Jobs give what local mode gives, over shared memory (task
//! managers of one host) and over TCP (of two); a task manager without the secret is refused;
//! one killed mid-job fails the job with an error naming it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::cluster::{
    Cluster, Watched, assert_ok, binary, example_binary, local, paced_telemetry, run_checkpointed,
    shardflow, wait_for_committed_output,
};

#[test]
fn jobs_on_two_task_managers_equal_local_mode_over_shared_memory_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let wordcount = ["wordcount", "--lines", "20000", "--seed", "5"];
    let telemetry = [
        "telemetry",
        "--rate",
        "200000",
        "--duration-secs",
        "3",
        "--sensors",
        "500",
    ];
    local(&wordcount, &dir.path().join("wc-local"));
    local(&telemetry, &dir.path().join("tel-local"));
    let want_wc = common::brute_force_counts(5, 20_000);
    assert_eq!(common::read_counts(&dir.path().join("wc-local")), want_wc);
    let want_tel = common::sorted_lines(&dir.path().join("tel-local"));
    assert!(want_tel.len() > 1000, "{} windows", want_tel.len());

    for (hosts, transport) in [(["h", "h"], "shared memory"), (["a", "b"], "TCP")] {
        let cluster = Cluster::start(&hosts);
        let wc = dir.path().join(format!("wc-{}", hosts[1]));
        let out = cluster.run(&wordcount, &wc);
        assert_ok(&out);
        assert_eq!(
            common::read_counts(&wc),
            want_wc,
            "wordcount over {transport}"
        );
        let tel = dir.path().join(format!("tel-{}", hosts[1]));
        assert_ok(&cluster.run(&telemetry, &tel));
        assert_eq!(
            common::sorted_lines(&tel),
            want_tel,
            "telemetry over {transport}"
        );
        // Each task manager ran one of the two shards, talking to the other as its host says.
        let line = cluster.tms[0].wait_for("job 1 attempt 1");
        let expected = match transport {
            "TCP" => "shared memory with task managers [], TCP with [2]",
            _ => "shared memory with task managers [2], TCP with []",
        };
        assert!(line.contains(expected), "{line}");
        assert!(line.contains("shards 0..1 of 2"), "{line}");
        cluster.jm.wait_for("job 2 'telemetry' finished");
    }
}

#[test]
fn a_task_manager_without_the_secret_is_refused() {
    let cluster = Cluster::start(&["h"]);
    let out = Command::new(env!("CARGO_BIN_EXE_shardflow"))
        .env("SHARDFLOW_CLUSTER_SECRET", "not-the-secret")
        .args(["taskmanager", "--jobmanager", &cluster.addr, "--cores", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret"), "{stderr}");
    cluster.jm.wait_for("refused a connection");
    // Nor does a client without it get a job run.
    let out = Command::new(env!("CARGO_BIN_EXE_shardflow"))
        .args([
            "run",
            "wordcount",
            "--lines",
            "10",
            "--output",
            "/tmp/never",
        ])
        .args(["--jobmanager", &cluster.addr, "--secret", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!Path::new("/tmp/never").exists());
}

#[test]
fn a_task_manager_killed_mid_job_fails_the_job_naming_it() {
    // Without checkpoints there is nothing to fail over to: the job fails, naming the task
    // manager it lost, and the survivor's part is cancelled (it is free for the next job).
    let mut cluster = Cluster::start(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tel");
    let mut run = shardflow()
        .args([
            "run",
            "telemetry",
            "--paced",
            "--rate",
            "20000",
            "--duration-secs",
            "60",
        ])
        .arg("--output")
        .arg(&out)
        .args(["--jobmanager", &cluster.addr])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cluster.tms[1].wait_for("job 1 attempt 1");
    let mut victim = cluster.tms.remove(1);
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("task manager 2"), "{stderr}");
    cluster.jm.wait_for("job 1 'telemetry' failed");
    // The survivor is free again: a new job runs on it alone.
    let wc = dir.path().join("wc");
    let out = cluster.run(&["wordcount", "--lines", "3000", "--seed", "9"], &wc);
    assert_ok(&out);
    assert_eq!(
        common::read_counts(&wc),
        common::brute_force_counts(9, 3000),
        "{}",
        cluster.jm.log()
    );
}

#[test]
fn a_users_own_binary_runs_on_its_cluster_as_locally() {
    // examples/cluster_job.rs: its main is shardflow::cluster::main, nothing else.
    let bin = example_binary("cluster_job");
    let cluster = Cluster::start_of(&bin, &["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let out = binary(&bin)
        .args(["run", "--jobmanager", &cluster.addr, "--", "100000"])
        .arg(dir.path().join("cluster"))
        .output()
        .unwrap();
    assert_ok(&out);
    let status = binary(&bin)
        .args(["run", "--", "100000"])
        .arg(dir.path().join("local"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut want: Vec<String> = (0..97i64)
        .map(|r| {
            let sum: i64 = (1..=100_000i64).filter(|x| x % 97 == r).sum();
            format!("{r},{sum}")
        })
        .collect();
    want.sort();
    assert_eq!(common::sorted_lines(&dir.path().join("cluster")), want);
    assert_eq!(common::sorted_lines(&dir.path().join("local")), want);
    cluster.tms[1].wait_for("shards 1..2 of 2");
}

#[test]
fn checkpoints_span_the_task_managers() {
    // The job manager triggers each checkpoint on both task managers, writes one metadata of
    // both parts into the shared directory, and tells them it is complete (their file sinks
    // commit then): the output is local mode's, and the newest checkpoint holds both shards.
    let cluster = Cluster::start(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let telemetry = paced_telemetry("2");
    local(&telemetry, &dir.path().join("local"));
    let ck = dir.path().join("ck");
    let mut args: Vec<&str> = telemetry.to_vec();
    let ck_str = ck.display().to_string();
    args.extend([
        "--checkpoint-dir",
        &ck_str,
        "--checkpoint-interval-ms",
        "200",
    ]);
    let out = dir.path().join("cluster");
    assert_ok(&cluster.run(&args, &out));
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local"))
    );
    cluster.jm.wait_for("checkpoint 2 complete");
    let (plan, skipped) = shardflow_core::checkpoint::RestorePlan::load(&ck).unwrap();
    assert!(skipped.is_empty());
    assert_eq!(
        plan.parallelism(),
        2,
        "both task managers' shards are in it"
    );
    assert!(plan.id() >= 2);
    // The job manager keeps three.
    let kept = std::fs::read_dir(&ck)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("chk-")
        })
        .count();
    assert!(kept <= 3, "{kept} checkpoints kept");
}

#[test]
fn a_task_manager_killed_mid_job_with_checkpoints_fails_over_to_the_survivor() {
    // The job manager restarts the job from its newest checkpoint on the task manager left (a
    // rescale from P = 2 to 1); the exactly-once file sink's output is the failure-free run's.
    let mut cluster = Cluster::start(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let telemetry = paced_telemetry("8");
    local(&telemetry, &dir.path().join("local"));
    let ck = dir.path().join("ck");
    let out = dir.path().join("cluster");
    let mut run = run_checkpointed(shardflow(), &telemetry, &ck, &out, &cluster.addr);
    wait_for_committed_output(&out);
    let mut victim = cluster.tms.remove(1);
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}\n{}", cluster.jm.log());
    let restart = cluster.jm.wait_for("attempt 2 at P = 1");
    assert!(
        restart.contains("task managers [1]") && restart.contains("restoring from"),
        "{restart}"
    );
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local")),
        "{}",
        cluster.jm.log()
    );
}

#[test]
fn a_restarted_job_manager_takes_its_running_job_up_from_the_newest_checkpoint() {
    // The job manager is killed mid-job; started again on its address with the same state
    // directory, it takes the job up from its newest checkpoint once the task managers have
    // registered again, and the job ends with exactly the failure-free output.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("jm-state");
    let jm = Watched::spawn(
        shardflow()
            .args(["jobmanager", "--bind", "127.0.0.1:0", "--state-dir"])
            .arg(&state),
    );
    let addr = jm
        .wait_for("listening on")
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let mut tms = Vec::new();
    for (i, host) in ["a", "b"].into_iter().enumerate() {
        tms.push(Watched::spawn(shardflow().args([
            "taskmanager",
            "--jobmanager",
            &addr,
            "--cores",
            "1",
            "--host",
            host,
        ])));
        jm.wait_for(&format!("task manager {} at", i + 1));
    }
    let telemetry = paced_telemetry("8");
    local(&telemetry, &dir.path().join("local"));
    let ck = dir.path().join("ck");
    let out = dir.path().join("cluster");
    let mut run = run_checkpointed(shardflow(), &telemetry, &ck, &out, &addr);
    wait_for_committed_output(&out);
    drop(jm); // SIGKILL
    // Its client learns that it went away.
    assert!(!run.wait().unwrap().success());
    let jm = Watched::spawn(
        shardflow()
            .args(["jobmanager", "--bind", &addr, "--state-dir"])
            .arg(&state),
    );
    jm.wait_for("taking up job 1 'telemetry'");
    let line = jm.wait_for("job 1 'telemetry' attempt 1 at P = 2");
    assert!(line.contains("restoring from"), "{line}");
    jm.wait_for("job 1 'telemetry' finished");
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local")),
        "{}",
        jm.log()
    );
    assert!(
        std::fs::read_dir(&state).unwrap().next().is_none(),
        "a finished job's record is removed"
    );
    drop(tms);
}

#[test]
fn a_savepoint_of_a_cluster_job_stops_it_and_resumes_it_elsewhere() {
    // `shardflow savepoint --jobmanager ... --cancel` stops the job with a savepoint that the
    // job manager writes whole; the job resumed from it in local mode at P = 1 leaves exactly
    // the output of an uninterrupted run.
    let cluster = Cluster::start(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let telemetry = paced_telemetry("8");
    local(&telemetry, &dir.path().join("local"));
    let out = dir.path().join("out");
    let ck = dir.path().join("ck");
    let mut run = run_checkpointed(shardflow(), &telemetry, &ck, &out, &cluster.addr);
    cluster.jm.wait_for("checkpoint 5 complete");
    let sp = shardflow()
        .args([
            "savepoint",
            "telemetry",
            "--cancel",
            "--jobmanager",
            &cluster.addr,
        ])
        .arg("--dir")
        .arg(dir.path().join("savepoints"))
        .output()
        .unwrap();
    assert_ok(&sp);
    let path = String::from_utf8(sp.stdout).unwrap().trim().to_string();
    assert!(path.contains("savepoint-"), "{path}");
    assert!(!run.wait().unwrap().success(), "the job was stopped");
    cluster.jm.wait_for("failed: cancelled after a savepoint");
    // The checkpoints are gone; the savepoint is whole on its own.
    std::fs::remove_dir_all(dir.path().join("ck")).unwrap();
    let ck2 = dir.path().join("ck2").display().to_string();
    let status = shardflow()
        .arg("run")
        .args(telemetry.iter().filter(|a| **a != "--paced"))
        .args([
            "-p",
            "1",
            "--checkpoint-dir",
            &ck2,
            "--from-savepoint",
            &path,
        ])
        .arg("--output")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local"))
    );
}

#[test]
fn a_replacement_task_manager_takes_the_place_of_a_lost_one() {
    // Task manager 2 is killed and a third registers in its place: the job manager restarts
    // the job from its newest checkpoint on task managers 1 and 3 at the same P = 2.
    let mut cluster = Cluster::start(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let telemetry = paced_telemetry("8");
    local(&telemetry, &dir.path().join("local"));
    let ck = dir.path().join("ck");
    let out = dir.path().join("cluster");
    let mut run = run_checkpointed(shardflow(), &telemetry, &ck, &out, &cluster.addr);
    cluster.jm.wait_for("checkpoint 5 complete");
    let mut victim = cluster.tms.remove(1);
    victim.child.kill().unwrap();
    let _ = victim.child.wait();
    cluster.tms.push(Watched::spawn(shardflow().args([
        "taskmanager",
        "--jobmanager",
        &cluster.addr,
        "--cores",
        "1",
        "--host",
        "c",
    ])));
    assert!(run.wait().unwrap().success(), "{}", cluster.jm.log());
    let restart = cluster.jm.wait_for("attempt 2 at P = 2");
    assert!(
        restart.contains("task managers [1, 3]") && restart.contains("restoring from"),
        "{restart}"
    );
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local")),
        "{}",
        cluster.jm.log()
    );
}

#[test]
fn a_part_that_ended_answers_the_checkpoints_that_follow() {
    // examples/uneven_parts.rs: no exchange between the shards; shard 0 (task manager 1) writes
    // ten numbers and ends at once, shard 1 (task manager 2) writes the rest over about 1.5 s
    // with a checkpoint every 100 ms. Only the ended part's standing acks let those
    // checkpoints complete. (The first version of this test found none complete at all: a part
    // that ended before its driving loop first looked never told the job manager it was ready.)
    let bin = example_binary("uneven_parts");
    let cluster = Cluster::start_of(&bin, &["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let (out, ck) = (dir.path().join("out"), dir.path().join("ck"));
    let n = 1_500u64;
    let run = binary(&bin)
        .args(["run", "--jobmanager", &cluster.addr, "--", &n.to_string()])
        .arg(&out)
        .arg(&ck)
        .output()
        .unwrap();
    assert_ok(&run);
    let mut want: Vec<String> = (0..n).map(|x| x.to_string()).collect();
    want.sort();
    assert_eq!(common::sorted_lines(&out), want);
    cluster.tms[0].wait_for("shards 0..1 of 2");
    let (plan, skipped) = shardflow_core::checkpoint::RestorePlan::load(&ck).unwrap();
    assert!(skipped.is_empty());
    assert_eq!(
        plan.parallelism(),
        2,
        "both parts are in the newest checkpoint"
    );
    assert!(
        plan.id() >= 3,
        "checkpoint {} is the newest complete one of a 1.5 s job",
        plan.id()
    );
}

#[test]
fn jobs_share_task_managers_core_by_core() {
    // Two task managers of two cores on two hosts (TCP between them). Two telemetry jobs at
    // P = 2, one with checkpoints, run side by side: each takes one core of each task manager,
    // and their channels, of the same ids, share the one link. A wordcount submitted while
    // every core is taken waits for one, then runs. Every output equals local mode.
    let cluster = Cluster::start_with(Path::new(env!("CARGO_BIN_EXE_shardflow")), &["a", "b"], 2);
    let dir = tempfile::tempdir().unwrap();
    let first = paced_telemetry("4");
    let mut second = paced_telemetry("3").to_vec();
    second[7] = "200"; // other sensors: another output
    local(&first, &dir.path().join("first-local"));
    local(&second, &dir.path().join("second-local"));
    let (out1, out2, out3) = (
        dir.path().join("first"),
        dir.path().join("second"),
        dir.path().join("third"),
    );
    let mut job1 = run_checkpointed(
        shardflow(),
        &[&first[..], &["-p", "2"]].concat(),
        &dir.path().join("ck"),
        &out1,
        &cluster.addr,
    );
    cluster.jm.wait_for("job 1 'telemetry' attempt 1 at P = 2");
    let submit = |job: &[&str], out: &Path| {
        cluster
            .submit(job, out)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let job2 = submit(&[&second[..], &["-p", "2"]].concat(), &out2);
    cluster.jm.wait_for("job 2 'telemetry' attempt 1 at P = 2");
    let wordcount = ["wordcount", "--lines", "20000", "--seed", "7"];
    let job3 = submit(&wordcount, &out3);
    cluster
        .jm
        .wait_for("job 3 'wordcount' waits for a free core");

    // Both telemetry jobs are listed; a name two jobs share is no way to cancel one.
    let list = shardflow()
        .args(["list", "--jobmanager", &cluster.addr])
        .output()
        .unwrap();
    assert_ok(&list);
    let listed = String::from_utf8(list.stdout).unwrap();
    assert!(
        listed.contains("1\ttelemetry\tP = 2") && listed.contains("2\ttelemetry\tP = 2"),
        "{listed}"
    );
    let cancel = shardflow()
        .args(["cancel", "telemetry", "--jobmanager", &cluster.addr])
        .output()
        .unwrap();
    assert!(!cancel.status.success());
    assert!(
        String::from_utf8_lossy(&cancel.stderr).contains("(ids [1, 2]): give the id"),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );

    assert!(job1.wait().unwrap().success(), "{}", cluster.jm.log());
    let job2 = job2.wait_with_output().unwrap();
    assert_ok(&job2);
    let job3 = job3.wait_with_output().unwrap();
    assert_ok(&job3);
    assert!(
        String::from_utf8_lossy(&job3.stderr).contains("waiting for a free core"),
        "{}",
        String::from_utf8_lossy(&job3.stderr)
    );
    assert_eq!(
        common::sorted_lines(&out1),
        common::sorted_lines(&dir.path().join("first-local")),
        "the checkpointed job"
    );
    assert_eq!(
        common::sorted_lines(&out2),
        common::sorted_lines(&dir.path().join("second-local")),
        "the job beside it"
    );
    assert_eq!(
        common::read_counts(&out3),
        common::brute_force_counts(7, 20_000),
        "the job that waited"
    );

    // They ran at once, on cores of their own, each over TCP to the other task manager.
    let log = cluster.jm.log();
    let at = |what: &str| log.find(what).unwrap_or_else(|| panic!("{what}: {log}"));
    assert!(at("job 2 'telemetry' attempt 1") < at("job 1 'telemetry' finished"));
    assert!(at("job 3 'wordcount' waits") < at("job 3 'wordcount' attempt 1"));
    for tm in &cluster.tms {
        let one = tm.wait_for("job 1 attempt 1: shards");
        let two = tm.wait_for("job 2 attempt 1: shards");
        let cores = |line: &str| {
            line.split("on cores ")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_string()
        };
        assert_ne!(cores(&one), cores(&two), "{one}\n{two}");
        assert!(
            one.contains("TCP with [") && !one.contains("TCP with []"),
            "{one}"
        );
        assert!(
            two.contains("TCP with [") && !two.contains("TCP with []"),
            "{two}"
        );
    }
    assert!(
        cluster
            .jm
            .wait_for("checkpoint 3 complete")
            .contains("job 1"),
        "the checkpointed job took checkpoints beside the other"
    );
}
