//! The ingester's Kubernetes Lease (DESIGN.md, "Fixed interfaces"): held by
//! one ingester at a time, renewed at most every 10 s, annotated with what the
//! operator reports (`head-height`, `head-time`, `leader`, `store`). Its
//! `leaseTransitions` is the fencing term the ingester writes heads with, so
//! an ingester that lost the Lease can never move the head again.
//!
//! The ingester's Role allows only get, update and patch of this one Lease:
//! each renewal is a get and an update guarded by the resourceVersion, so two
//! ingesters racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, api::PostParams};

/// How long a holder that stops renewing keeps the Lease.
const LEASE_SECONDS: i32 = 30;

/// Annotation names the operator reads.
pub use lotus_follower_interfaces::lease::{HEAD_HEIGHT, HEAD_TIME, LEADER, STORE};

/// What the ingester publishes on the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub head_height: Option<i64>,
    /// The head tipset's timestamp (seconds since the epoch).
    pub head_time: Option<u64>,
    /// `ok`, or the last error talking to the leader (short).
    pub leader: String,
    /// `ok`, or the last store error (short).
    pub store: String,
}

/// The ingester's side of the Lease.
#[derive(Clone)]
pub struct LeaseHolder {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl std::fmt::Debug for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseHolder")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

/// An error message short enough for an annotation.
pub fn short(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

impl LeaseHolder {
    pub fn new(api: Api<Lease>, name: &str, identity: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// How often to renew: well inside the Lease's duration, never more than
    /// every 10 s.
    pub const RENEW_EVERY: Duration = Duration::from_secs(10);

    /// Takes the Lease if it is free or expired, or renews it, publishing
    /// `report`. Returns the fencing term while this ingester holds it, `None`
    /// while another does (or won the race for it).
    pub async fn renew(&self, report: &Report) -> Result<Option<u64>, kube::Error> {
        let mut lease = self.api.get(&self.name).await?;
        let now = Timestamp::now();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS),
            ));
            now.duration_since(renewed.0) > duration
        });
        if !(mine || free || expired) {
            return Ok(None);
        }
        if !mine {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(MicroTime(now));
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        let term = u64::try_from(spec.lease_transitions.unwrap_or(0)).unwrap_or(0);
        let annotations = lease
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        // What is not known now is removed, never left from an earlier report.
        match report.head_height {
            Some(height) => annotations.insert(HEAD_HEIGHT.into(), height.to_string()),
            None => annotations.remove(HEAD_HEIGHT),
        };
        match report
            .head_time
            .and_then(|seconds| Timestamp::from_second(i64::try_from(seconds).ok()?).ok())
        {
            Some(time) => annotations.insert(HEAD_TIME.into(), time.to_string()),
            None => annotations.remove(HEAD_TIME),
        };
        annotations.insert(LEADER.into(), report.leader.clone());
        annotations.insert(STORE.into(), report.store.clone());
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Some(term)),
            // Someone else updated it first: they hold it, at least for now.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up (on shutdown), so a standby takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let mut lease = self.api.get(&self.name).await?;
        if let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await?;
        }
        Ok(())
    }
}
