//! The command-line tools a user runs (`helm`, `kubectl`), run as the test bed's
//! admin from the repository's root, so tests run exactly the README's commands.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use crate::TestBed;

/// The repository's root: relative paths in commands (`charts/…`,
/// `manifests/…`) are the README's.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// What a command printed, and whether it succeeded.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The standard output, or an error with the command and its standard error.
    pub fn ok(self, what: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.success,
            "{what} failed: {}{}",
            self.stderr,
            self.stdout
        );
        Ok(self.stdout)
    }
}

impl From<Output> for Ran {
    fn from(output: Output) -> Self {
        Self {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl TestBed {
    /// `program args…` in the repository's root with the test bed's kubeconfig,
    /// `stdin` piped in when given. A program missing from `PATH` is an error
    /// that says how to get the test bed's.
    pub fn command(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<Ran> {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(repo_root())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| {
                anyhow::anyhow!(
                    "cannot run {program} ({error}): put the test bed's tools on PATH with \
                     `eval \"$(e2e/testbed env)\"`"
                )
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())?;
        }
        Ok(child.wait_with_output()?.into())
    }

    /// `helm args…`, which must succeed: its standard output.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        self.command("helm", args, None)?
            .ok(&format!("helm {}", args.join(" ")))
    }

    /// `kubectl args…`, which must succeed: its standard output.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.command("kubectl", args, None)?
            .ok(&format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl args…` reading `stdin` (`-f -`), which must succeed.
    pub fn kubectl_with(&self, args: &[&str], stdin: &str) -> anyhow::Result<String> {
        self.command("kubectl", args, Some(stdin))?
            .ok(&format!("kubectl {}", args.join(" ")))
    }
}
