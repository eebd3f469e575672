//! The machine and the build a report ran on.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// What a reader needs to know to compare a figure with another: the cores, processor and
/// memory of the machine, its operating system, and the commit that was measured.
///
/// ```
/// use shardflow_bench::report::Machine;
///
/// let machine = Machine::detect();
/// assert!(machine.cores >= 1);
/// assert!(machine.summary().contains(&machine.os));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// The cores this process may run on.
    pub cores: usize,
    /// The processor's model name, as `/proc/cpuinfo` gives it; `"unknown"` if it does not.
    pub model: String,
    /// The machine's memory (`MemTotal` of `/proc/meminfo`), 0 if unknown.
    pub memory_bytes: u64,
    /// The operating system and its release, as `uname -sr` gives them.
    pub os: String,
    /// The commit of the checkout this binary was built from (`git rev-parse HEAD` in it),
    /// followed by `-dirty` if `git status --porcelain` lists anything; `"unknown"` if git
    /// cannot tell (no git, or not a checkout). Read when the report is made, so a tree edited
    /// after the build shows as dirty.
    pub commit: String,
}

impl Machine {
    /// Looks the machine up: `/proc/cpuinfo`, `/proc/meminfo`, `uname -sr` and git in the
    /// checkout the binary was built from. Whatever cannot be found is `"unknown"` (or 0).
    pub fn detect() -> Machine {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
        let checkout = if checkout.is_dir() {
            checkout
        } else {
            Path::new(".")
        };
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            model: processor_model(),
            memory_bytes: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|text| memory_bytes(&text))
                .unwrap_or(0),
            os: os_release(),
            commit: git_commit(checkout),
        }
    }

    /// One line for a reader: `2 cores (AMD EPYC), 23.5 GiB, Linux 6.18.0, commit 89404fa…`.
    pub fn summary(&self) -> String {
        let memory = if self.memory_bytes > 0 {
            format!(
                ", {:.1} GiB",
                self.memory_bytes as f64 / f64::from(1u32 << 30)
            )
        } else {
            String::new()
        };
        let cores = if self.cores == 1 { "core" } else { "cores" };
        format!(
            "{} {cores} ({}){memory}, {}, commit {}",
            self.cores, self.model, self.os, self.commit
        )
    }
}

/// This machine's processor model (`/proc/cpuinfo`), `"unknown"` if it does not say.
pub fn processor_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cpu_model(&text))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The first `model name` of `/proc/cpuinfo` (x86), else its `Hardware` or `Model` line (Arm).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "Model"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == *key && !value.trim().is_empty()).then(|| value.trim().to_string())
        })
    })
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn memory_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `uname -sr`, else the kernel's own files, else the name Rust was built for.
fn os_release() -> String {
    if let Some(uname) = run("uname", &["-sr"], Path::new("."))
        && !uname.is_empty()
    {
        return uname;
    }
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_string())
    };
    match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Some(os), Some(release)) => format!("{os} {release}"),
        _ => std::env::consts::OS.to_string(),
    }
}

/// The commit checked out in `dir`, with `-dirty` if the tree has changes; `"unknown"` if git
/// fails.
fn git_commit(dir: &Path) -> String {
    let Some(head) = run("git", &["rev-parse", "HEAD"], dir) else {
        return "unknown".to_string();
    };
    let Some(status) = run("git", &["status", "--porcelain"], dir) else {
        return "unknown".to_string();
    };
    if status.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    }
}

/// The trimmed standard output of `program args` run in `dir`, if it ran and succeeded.
fn run(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_cpuinfo() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7R13 Processor\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7R13 Processor\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("AMD EPYC 7R13 Processor"));
        let arm = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU part\t: 0xd40\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("BCM2835"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    #[test]
    fn memory_from_meminfo() {
        let meminfo = "MemTotal:       24684084 kB\nMemFree:        1000 kB\n";
        assert_eq!(memory_bytes(meminfo), Some(24_684_084 * 1024));
        assert_eq!(memory_bytes("MemFree: 1 kB\n"), None);
    }

    /// Runs git in `dir` for the test's own set-up, failing the test if it fails.
    fn git(dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["-c", "user.name=bench", "-c", "user.email=bench@invalid"];
        all.extend_from_slice(args);
        run("git", &all, dir).unwrap_or_else(|| panic!("git {args:?} failed in {dir:?}"))
    }

    #[test]
    fn commit_clean_dirty_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        // Not a checkout (a temporary directory is not inside one).
        assert_eq!(git_commit(dir.path()), "unknown");

        git(dir.path(), &["init", "-q"]);
        std::fs::write(dir.path().join("a.txt"), "a\n").unwrap();
        git(dir.path(), &["add", "a.txt"]);
        git(dir.path(), &["commit", "-q", "-m", "first"]);
        let head = git(dir.path(), &["log", "-1", "--format=%H"]);
        assert_eq!(head.len(), 40, "{head}");
        assert_eq!(git_commit(dir.path()), head);

        std::fs::write(dir.path().join("a.txt"), "b\n").unwrap();
        assert_eq!(git_commit(dir.path()), format!("{head}-dirty"));
        git(dir.path(), &["checkout", "-q", "a.txt"]);
        std::fs::write(dir.path().join("untracked.txt"), "new\n").unwrap();
        assert_eq!(git_commit(dir.path()), format!("{head}-dirty"));
    }

    #[test]
    fn detect_finds_this_machine() {
        let machine = Machine::detect();
        assert!(machine.cores >= 1);
        assert!(!machine.os.is_empty());
        assert!(!machine.model.is_empty());
        let summary = machine.summary();
        assert!(summary.contains(&machine.os), "{summary}");
        assert!(summary.contains(&machine.commit), "{summary}");
    }

    #[test]
    fn summary_reads_as_a_sentence() {
        let machine = Machine {
            cores: 2,
            model: "AMD EPYC".to_string(),
            memory_bytes: 24 << 30,
            os: "Linux 6.18.0".to_string(),
            commit: "89404fa".to_string(),
        };
        assert_eq!(
            machine.summary(),
            "2 cores (AMD EPYC), 24.0 GiB, Linux 6.18.0, commit 89404fa"
        );
    }
}
