//! Reaching pods from the host as a user would: `kubectl port-forward` through
//! the API server and the kubelet, and plain HTTP with curl.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

/// curl with a 10 s limit; an HTTP error status is an error carrying the body.
pub fn curl(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "10"])
        .args(args)
        .output()?;
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "curl {args:?}: {} {body}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(body)
}

/// One JSON-RPC call over HTTP POST; the whole response (result or error).
pub fn rpc(url: &str, method: &str, params: Value) -> anyhow::Result<Value> {
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    Ok(serde_json::from_str(&curl(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        &request.to_string(),
        url,
    ])?)?)
}

/// `kubectl port-forward` to ephemeral ports of 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct PortForward {
    child: Child,
    /// The local port of each remote port asked for, in order.
    pub local_ports: Vec<u16>,
}

impl PortForward {
    /// `target` as kubectl takes it: `pod/<name>`, `service/<name>`, …
    pub fn start(namespace: &str, target: &str, ports: &[u16]) -> anyhow::Result<Self> {
        let mut child = Command::new("kubectl")
            .args(["port-forward", "--namespace", namespace, target])
            .args(ports.iter().map(|port| format!(":{port}")))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("kubectl port-forward has no stdout"))?;
        // "Forwarding from 127.0.0.1:41234 -> 1234", one line per port.
        let mut local_ports = Vec::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                let local = rest.split_whitespace().next().unwrap_or_default();
                local_ports.push(local.parse()?);
                if local_ports.len() == ports.len() {
                    // It reports every connection: keep reading, or it dies of SIGPIPE.
                    std::thread::spawn(move || lines.for_each(drop));
                    return Ok(Self { child, local_ports });
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("kubectl port-forward {target} ended before forwarding {ports:?}")
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
