//! The `lotus-follower` binary run as a process with given arguments, as a pod
//! runs it: signals, exit status and its log (printed if it outlives the test).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The binary: `$LOTUS_FOLLOWER_BIN`, or the one cargo built beside the test
/// executables (`cargo test --workspace` builds it for the follower's own
/// process tests).
fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LOTUS_FOLLOWER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("lotus-follower"))
        .ok_or_else(|| anyhow::anyhow!("no directory above {}", exe.display()))?;
    anyhow::ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p lotus-follower` (or run `cargo test --workspace`), or set LOTUS_FOLLOWER_BIN",
        path.display()
    );
    Ok(path)
}

/// A port free right now on 127.0.0.1.
pub fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[derive(Debug)]
pub struct FollowerProcess {
    pub name: String,
    /// Behind a lock so a wait's probe can look at it through a shared reference.
    child: std::sync::Mutex<Child>,
    id: u32,
    log: tempfile::NamedTempFile,
}

impl FollowerProcess {
    /// Starts the binary with `args` and `env` (and nothing of ours named
    /// `LOTUS_FOLLOWER_*` that a flag would read).
    pub fn start(name: &str, args: &[String], env: &[(&str, String)]) -> anyhow::Result<Self> {
        let log = tempfile::NamedTempFile::new()?;
        let mut command = Command::new(binary()?);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen()?);
        for (key, _) in std::env::vars() {
            if key.starts_with("LOTUS_FOLLOWER_") && !key.starts_with("LOTUS_FOLLOWER_TESTBED") {
                command.env_remove(key);
            }
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn()?;
        Ok(Self {
            name: name.to_owned(),
            id: child.id(),
            child: std::sync::Mutex::new(child),
            log,
        })
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Whether it exited already (with its status).
    pub fn exited(&self) -> anyhow::Result<Option<ExitStatus>> {
        let mut child = self
            .child
            .lock()
            .map_err(|_| anyhow::anyhow!("{}: a poisoned lock", self.name))?;
        Ok(child.try_wait()?)
    }

    /// Sends SIGTERM, as the kubelet does to stop a container.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.id.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.id);
        Ok(())
    }

    /// Waits for the exit, at most `limit`; its status and how long it took.
    pub async fn exit_within(&self, limit: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited()? {
                return Ok((status, started.elapsed()));
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "{} did not exit within {limit:?}; its log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FollowerProcess {
    fn drop(&mut self) {
        let Ok(child) = self.child.get_mut() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("{} was still running; its log:\n{}", self.name, self.log());
        }
    }
}

/// A GET over a bare connection: the status and the body. Health and metrics
/// endpoints answer plain text, which the JSON-RPC helper does not read.
pub async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
