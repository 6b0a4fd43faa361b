//! `lotus-follower devnet --api-secret-file` as a user runs it, the binary
//! itself: the key file is created when missing, the admin token it prints is
//! still accepted after the process is killed and started again on the same
//! file, and a bad key file stops it with an error naming the file and the flag.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lotus_follower::{
    rpc::auth::{Auth, Perm},
    testdata,
};
use serde_json::json;

/// A port nothing listens on right now.
fn free_address() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn devnet(dir: &Path, listen: SocketAddr) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lotus-follower"));
    command
        .arg("devnet")
        .arg("--store")
        .arg(format!("embedded:{}", dir.join("chain").display()))
        .args(["--listen", &listen.to_string()])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--token-file")
        .arg(dir.join("token"))
        .env("LOTUS_FOLLOWER_LOG", "warn")
        .stdout(Stdio::null());
    command
}

/// Kills the devnet when the test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ChainHead with `token`: the HTTP status (401 for a token the key did not sign).
async fn chain_head_status(at: SocketAddr, token: &str) -> anyhow::Result<u16> {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.ChainHead", "params": []});
    let (status, _) = testdata::post(
        &format!("http://{at}/rpc/v1"),
        request.to_string(),
        Some(token),
    )
    .await?;
    Ok(status)
}

/// Starts the devnet and waits until it answers.
async fn start(command: &mut Command, at: SocketAddr, log: &Path) -> anyhow::Result<Running> {
    // A file, not a pipe nobody reads: a full pipe would block the devnet.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut running = Running(command.stderr(log_file).spawn()?);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = running.0.try_wait()? {
            anyhow::bail!(
                "the devnet exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let request =
            json!({"jsonrpc": "2.0", "id": 1, "method": "Filecoin.Version", "params": []});
        if testdata::post(&format!("http://{at}/rpc/v1"), request.to_string(), None)
            .await
            .is_ok_and(|(status, _)| status == 200)
        {
            return Ok(running);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the devnet did not answer on {at}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_created_and_its_tokens_outlive_a_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("api-secret");
    let at = free_address()?;
    let mut command = devnet(dir.path(), at);
    // From the environment, as a pod spec passes it.
    command.env("LOTUS_FOLLOWER_API_SECRET_FILE", &key_file);

    let log = dir.path().join("devnet.log");
    let first = start(&mut command, at, &log).await?;
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key_file)?.permissions());
    assert_eq!(mode & 0o777, 0o600, "the created key is private");
    let token = std::fs::read_to_string(dir.path().join("token"))?;
    assert_eq!(chain_head_status(at, &token).await?, 200);
    let foreign = Auth::random()?.token(Perm::Admin)?;
    assert_eq!(chain_head_status(at, &foreign).await?, 401);
    drop(first); // SIGKILL: a crash, not a clean stop.

    let key = std::fs::read(&key_file)?;
    let _second = start(&mut command, at, &log).await?;
    assert_eq!(std::fs::read(&key_file)?, key, "the key file is kept");
    assert_eq!(
        chain_head_status(at, &token).await?,
        200,
        "the first start's token after the restart"
    );
    assert_eq!(chain_head_status(at, &foreign).await?, 401);
    Ok(())
}

#[test]
fn an_empty_key_file_stops_the_devnet_naming_the_file_and_the_flag() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("empty-secret");
    std::fs::write(&key_file, b"")?;
    let output = devnet(dir.path(), free_address()?)
        .arg("--api-secret-file")
        .arg(&key_file)
        .stderr(Stdio::piped())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert!(!output.status.success());
    assert!(
        stderr.contains("--api-secret-file") && stderr.contains(&*key_file.to_string_lossy()),
        "{stderr}"
    );
    assert!(stderr.contains("empty"), "{stderr}");
    Ok(())
}
