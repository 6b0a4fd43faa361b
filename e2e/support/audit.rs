//! The API server's audit log (every write, at Metadata level): who wrote what.

use crate::TestBed;

/// One write from the audit log, as much of it as the tests compare.
#[derive(Debug, Clone)]
pub struct AuditedWrite {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl TestBed {
    /// The audit log's length now: pass it to [`TestBed::audited_writes_since`]
    /// to see only what came after.
    pub fn audit_offset(&self) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(&self.audit_log)?.len())
    }

    /// Every completed write the audit log records after `offset` bytes.
    pub fn audited_writes_since(&self, offset: u64) -> anyhow::Result<Vec<AuditedWrite>> {
        let log = std::fs::read(&self.audit_log)?;
        let start = usize::try_from(offset)?.min(log.len());
        let mut writes = Vec::new();
        for line in String::from_utf8_lossy(&log[start..]).lines() {
            // The API server may be mid-line at the end; a partial line is not a write yet.
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if event["stage"] != "ResponseComplete" {
                continue;
            }
            let object = &event["objectRef"];
            let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
            writes.push(AuditedWrite {
                user: text(&event["user"]["username"]).unwrap_or_default(),
                verb: text(&event["verb"]).unwrap_or_default(),
                resource: text(&object["resource"]).unwrap_or_default(),
                namespace: text(&object["namespace"]),
                name: text(&object["name"]),
            });
        }
        Ok(writes)
    }
}
