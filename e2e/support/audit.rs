//! The API server's audit log (Metadata level): every write, and the reads of
//! service accounts — who asked what, of which object, and the answer's code.

use crate::TestBed;

/// One request from the audit log, as much of it as the tests compare.
#[derive(Debug, Clone)]
pub struct AuditedRequest {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The HTTP status of the answer (403: refused by RBAC).
    pub code: u16,
}

const WRITES: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl AuditedRequest {
    pub fn is_write(&self) -> bool {
        WRITES.contains(&self.verb.as_str())
    }
}

impl TestBed {
    /// The audit log's length now: pass it to [`TestBed::audited_since`]
    /// to see only what came after.
    pub fn audit_offset(&self) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(&self.audit_log)?.len())
    }

    /// Every request the audit log records after `offset` bytes: completed
    /// ones, and watches that started.
    pub fn audited_since(&self, offset: u64) -> anyhow::Result<Vec<AuditedRequest>> {
        let log = std::fs::read(&self.audit_log)?;
        let start = usize::try_from(offset)?.min(log.len());
        let mut requests = Vec::new();
        for line in String::from_utf8_lossy(&log[start..]).lines() {
            // The API server may be mid-line at the end; a partial line is not a request yet.
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // A watch is logged when its response starts (it completes only when
            // the watcher stops); everything else once complete.
            let complete = event["stage"] == "ResponseComplete";
            let watching = event["stage"] == "ResponseStarted" && event["verb"] == "watch";
            if !(complete || watching) {
                continue;
            }
            let object = &event["objectRef"];
            let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
            requests.push(AuditedRequest {
                user: text(&event["user"]["username"]).unwrap_or_default(),
                verb: text(&event["verb"]).unwrap_or_default(),
                resource: text(&object["resource"]).unwrap_or_default(),
                subresource: text(&object["subresource"]),
                namespace: text(&object["namespace"]),
                name: text(&object["name"]),
                code: event["responseStatus"]["code"]
                    .as_u64()
                    .and_then(|code| u16::try_from(code).ok())
                    .unwrap_or_default(),
            });
        }
        Ok(requests)
    }

    /// Every completed write the audit log records after `offset` bytes.
    pub fn audited_writes_since(&self, offset: u64) -> anyhow::Result<Vec<AuditedRequest>> {
        let mut requests = self.audited_since(offset)?;
        requests.retain(AuditedRequest::is_write);
        Ok(requests)
    }
}
