//! Two hosts made inside the test: a network namespace each, joined to this one by a bridge
//! (veth pairs), a task manager in each, the job manager here. Their records cross by TCP (the
//! hosts differ); cutting one host's link (`ip link set ... down`) makes the job manager fail
//! the job over to the other host, which finishes it with exactly the failure-free output.
//!
//! Needs root and `ip` (iproute2); where namespaces cannot be made the test says so and passes
//! without running.

mod common;

use std::path::Path;
use std::process::Command;

use common::cluster::{
    SECRET, Watched, binary, local, paced_telemetry, run_checkpointed, wait_for_committed_output,
};

/// Runs `ip` with `args`; an error says what failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, links and bridge of one test, removed when dropped.
struct Hosts {
    tag: String,
    subnet: String,
}

impl Hosts {
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let hosts = Self {
            tag: format!("{}", pid % 100_000),
            subnet: format!("10.231.{}", pid % 250 + 1),
        };
        let bridge = hosts.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", hosts.subnet),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for (i, h) in ["a", "b"].into_iter().enumerate() {
            let ns = hosts.ns(h);
            let (outer, inner) = (hosts.veth(h, 0), hosts.veth(h, 1));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            let addr = format!("{}.{}/24", hosts.subnet, i + 2);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("sfbr{}", self.tag)
    }

    fn ns(&self, h: &str) -> String {
        format!("sf{h}{}", self.tag)
    }

    fn veth(&self, h: &str, end: u8) -> String {
        format!("sf{h}{end}-{}", self.tag)
    }

    /// A command run on host `h`.
    fn on(&self, h: &str, bin: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(h), bin]);
        c.env("SHARDFLOW_CLUSTER_SECRET", SECRET);
        c
    }

    /// Cuts host `h` off: its link to the bridge goes down.
    fn cut(&self, h: &str) {
        ip(&["link", "set", &self.veth(h, 0), "down"]).unwrap();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for h in ["a", "b"] {
            let _ = ip(&["netns", "del", &self.ns(h)]);
            let _ = ip(&["link", "del", &self.veth(h, 0)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

#[test]
fn cutting_a_hosts_link_fails_the_job_over_with_nothing_lost() {
    let hosts = match Hosts::create() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("skipped: cannot make network namespaces here ({e})");
            return;
        }
    };
    let bin = env!("CARGO_BIN_EXE_shardflow");
    let jm = Watched::spawn(
        Command::new(bin)
            .env("SHARDFLOW_CLUSTER_SECRET", SECRET)
            .args(["jobmanager", "--bind", "0.0.0.0:0"]),
    );
    let port = jm
        .wait_for("listening on")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let jm_addr = format!("{}.1:{port}", hosts.subnet);
    let mut tms = Vec::new();
    for (i, h) in ["a", "b"].into_iter().enumerate() {
        tms.push(Watched::spawn(hosts.on(h, bin).args([
            "taskmanager",
            "--jobmanager",
            &jm_addr,
            "--cores",
            "1",
        ])));
        jm.wait_for(&format!("task manager {} at", i + 1));
    }
    let dir = tempfile::tempdir().unwrap();
    let telemetry = paced_telemetry("12");
    local(&telemetry, &dir.path().join("local"));
    let out = dir.path().join("cluster");
    let ck = dir.path().join("ck");
    let mut run = run_checkpointed(binary(Path::new(bin)), &telemetry, &ck, &out, &jm_addr);
    // Task manager 1 (host a) and 2 (host b) exchange records over TCP.
    let line = tms[0].wait_for("job 1 attempt 1");
    assert!(line.contains("TCP with [2]"), "{line}");
    wait_for_committed_output(&out);
    hosts.cut("b");
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}\n{}", jm.log());
    let lost = jm.wait_for("lost:");
    assert!(lost.contains("task manager 2"), "{lost}");
    let restart = jm.wait_for("attempt 2 at P = 1");
    assert!(restart.contains("task managers [1]"), "{restart}");
    assert_eq!(
        common::sorted_lines(&out),
        common::sorted_lines(&dir.path().join("local")),
        "{}",
        jm.log()
    );
}
