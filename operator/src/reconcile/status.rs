//! The status, a pure function of the resource and what was observed: the
//! conditions come from the ingester's Lease (its holder and the annotations it
//! publishes) and from workload status, without dialling any workload.
//! `lastTransitionTime` moves only when a condition's status really changes.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::Lease,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};

use super::{
    observe::{Observed, replicas},
    validate::Problem,
};
use crate::{
    build::{child_name, service::endpoint},
    crd::{LotusFollowerCluster, LotusFollowerClusterStatus},
};

/// Annotations the ingester keeps on its Lease.
pub use lotus_follower_interfaces::lease::{HEAD_HEIGHT, HEAD_TIME, LEADER, STORE};

/// How old the head may be before `HeadInSync` is False, unless the spec says.
pub const DEFAULT_MAX_HEAD_AGE: Duration = Duration::from_secs(120);

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// The ingester holds the Lease while its holder is set and it renewed it within
/// its duration.
fn held(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let holder = spec
        .holder_identity
        .as_deref()
        .is_some_and(|holder| !holder.is_empty());
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let fresh = spec
        .renew_time
        .as_ref()
        .is_some_and(|renewed| now.duration_since(renewed.0) <= duration);
    holder && fresh
}

/// `HeadInSync`, `LeaderReady` and `DatabaseReady` from the ingester's Lease.
pub fn lease_conditions(
    lease: Option<&Lease>,
    max_head_age: Duration,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let annotations = lease
        .and_then(|lease| lease.metadata.annotations.clone())
        .unwrap_or_default();
    if !lease.is_some_and(|lease| held(lease, now)) {
        return ["HeadInSync", "LeaderReady", "DatabaseReady"]
            .into_iter()
            .map(|type_| {
                condition(
                    type_,
                    "Unknown",
                    "NoIngester",
                    "no ingester holds the Lease",
                    generation,
                    now,
                )
            })
            .collect();
    }
    // Messages stay stable while a condition holds, so a status write happens
    // on a change, not on every head.
    let head = match annotations
        .get(HEAD_TIME)
        .map(|text| text.parse::<Timestamp>())
    {
        Some(Ok(head_time)) => {
            let max = SignedDuration::try_from(max_head_age).unwrap_or(SignedDuration::MAX);
            if now.duration_since(head_time) <= max {
                condition(
                    "HeadInSync",
                    "True",
                    "HeadRecent",
                    format!("the head is under {}s old", max.as_secs()),
                    generation,
                    now,
                )
            } else {
                condition(
                    "HeadInSync",
                    "False",
                    "HeadStale",
                    format!("the head is over {}s old", max.as_secs()),
                    generation,
                    now,
                )
            }
        }
        Some(Err(error)) => condition(
            "HeadInSync",
            "Unknown",
            "BadHeadTime",
            format!("{HEAD_TIME}: {error}"),
            generation,
            now,
        ),
        None => condition(
            "HeadInSync",
            "Unknown",
            "NoHead",
            "the ingester has published no head yet",
            generation,
            now,
        ),
    };
    let health = |type_: &str, key: &str, ok_reason: &str, error_reason: &str| match annotations
        .get(key)
        .map(String::as_str)
    {
        Some(lotus_follower_interfaces::lease::OK) => {
            condition(type_, "True", ok_reason, "", generation, now)
        }
        Some(error) => condition(type_, "False", error_reason, error, generation, now),
        None => condition(
            type_,
            "Unknown",
            "NotReported",
            format!("{key} is not on the Lease"),
            generation,
            now,
        ),
    };
    vec![
        head,
        health("LeaderReady", LEADER, "LeaderSynced", "LeaderError"),
        health("DatabaseReady", STORE, "StoreReachable", "StoreError"),
    ]
}

/// A condition from a workload's availability.
pub fn workload_condition(
    type_: &str,
    ready: i32,
    desired: i32,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    if desired > 0 && ready >= desired {
        condition(type_, "True", "Available", "", generation, now)
    } else {
        condition(
            type_,
            "False",
            "Unavailable",
            format!("{ready}/{desired} ready"),
            generation,
            now,
        )
    }
}

/// `Ready`: every component's workload is available (a fleet can be Ready while
/// the head is still catching up: `HeadInSync` and the phase say so).
pub fn ready_condition(
    workloads: &[&Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    match workloads.iter().find(|c| c.status != "True") {
        None => condition("Ready", "True", "Available", "", generation, now),
        Some(missing) => condition(
            "Ready",
            "False",
            "Unavailable",
            format!("{} is {}", missing.type_, missing.reason),
            generation,
            now,
        ),
    }
}

/// The new conditions, keeping each old `lastTransitionTime` whose status did not change.
pub fn merge_conditions(old: &[Condition], new: Vec<Condition>) -> Vec<Condition> {
    new.into_iter()
        .map(|mut condition| {
            if let Some(previous) = old
                .iter()
                .find(|c| c.type_ == condition.type_ && c.status == condition.status)
            {
                condition.last_transition_time = previous.last_transition_time.clone();
            }
            condition
        })
        .collect()
}

/// The resource's status as observed now.
pub fn desired_status(
    cluster: &LotusFollowerCluster,
    observed: &Observed,
    problems: &[Problem],
    now: Timestamp,
) -> LotusFollowerClusterStatus {
    let generation = cluster.metadata.generation;
    let deployment = |role| observed.deployments.get(&child_name(cluster, role));
    let (ready, desired) = replicas(deployment("followers"));
    let (ingester_ready, ingester_desired) = replicas(deployment("ingester"));
    let lease = observed
        .leases
        .get(&child_name(cluster, "ingester"))
        .map(AsRef::as_ref);

    let ingester = workload_condition(
        "IngesterReady",
        ingester_ready,
        ingester_desired,
        generation,
        now,
    );
    let followers = workload_condition("FollowersReady", ready, desired, generation, now);
    let ready_condition = ready_condition(&[&ingester, &followers], generation, now);
    let mut conditions = vec![ready_condition, ingester, followers];
    conditions.extend(lease_conditions(
        lease,
        max_head_age(cluster),
        generation,
        now,
    ));
    conditions.push(match problems.first() {
        None => condition("SpecValid", "True", "Valid", "", generation, now),
        Some(problem) => {
            let message: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
            condition(
                "SpecValid",
                "False",
                problem.reason,
                message.join("; "),
                generation,
                now,
            )
        }
    });
    let old = cluster.status.clone().unwrap_or_default();
    let conditions = merge_conditions(&old.conditions, conditions);

    let is_true = |type_: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    };
    let phase = if cluster.spec.paused {
        "Paused"
    } else if !problems.is_empty() {
        "Invalid"
    } else {
        match (is_true("Ready"), is_true("HeadInSync")) {
            (true, true) => "Running",
            (true, false) => "Syncing",
            (false, _) => "Pending",
        }
    };
    let head_height = lease.and_then(|lease| {
        lease
            .metadata
            .annotations
            .as_ref()?
            .get(HEAD_HEIGHT)?
            .parse()
            .ok()
    });
    LotusFollowerClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions,
        head_height,
        followers: Some(format!("{ready}/{desired}")),
        endpoint: Some(endpoint(cluster)),
    }
}

/// `spec.ingester.maxHeadAge` (`120s`, `5m`, `1h30m`), or the default.
pub fn max_head_age(cluster: &LotusFollowerCluster) -> Duration {
    cluster
        .spec
        .ingester
        .max_head_age
        .as_deref()
        .and_then(|text| text.parse::<SignedDuration>().ok())
        .and_then(|age| Duration::try_from(age).ok())
        .unwrap_or(DEFAULT_MAX_HEAD_AGE)
}

/// When a condition would change with no watch event to say so: the head
/// turning stale, or the Lease expiring because its holder stopped renewing.
pub fn next_change(
    lease: Option<&Lease>,
    max_head_age: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let lease = lease?;
    let head_stale = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(HEAD_TIME)?.parse::<Timestamp>().ok())
        .and_then(|head_time| {
            let max = SignedDuration::try_from(max_head_age).ok()?;
            Some(head_time + max)
        });
    let expiry = lease.spec.as_ref().and_then(|spec| {
        let renewed = spec.renew_time.as_ref()?.0;
        Some(
            renewed
                + SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15))),
        )
    });
    [head_stale, expiry]
        .into_iter()
        .flatten()
        .filter_map(|at| Duration::try_from(at.duration_since(now)).ok())
        .min()
        .map(|left| left + Duration::from_secs(1))
}

/// Whether two statuses differ in more than the head height.
pub fn materially_different(
    old: &LotusFollowerClusterStatus,
    new: &LotusFollowerClusterStatus,
) -> bool {
    let mut old = old.clone();
    old.head_height = new.head_height;
    old != *new
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().expect("a timestamp")
    }

    fn lease(renewed_ago: i64, annotations: &[(&str, &str)]) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("ingester-0".into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(now() - SignedDuration::from_secs(renewed_ago))),
                ..LeaseSpec::default()
            }),
        }
    }

    fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> (&'a str, &'a str) {
        let c = conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("the condition");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_held_lease_with_recent_ok_annotations_is_true() {
        let lease = lease(
            5,
            &[
                (HEAD_HEIGHT, "100"),
                (HEAD_TIME, "2026-11-25T11:59:30Z"),
                (LEADER, "ok"),
                (STORE, "ok"),
            ],
        );
        let conditions = lease_conditions(Some(&lease), DEFAULT_MAX_HEAD_AGE, Some(3), now());
        assert_eq!(status_of(&conditions, "HeadInSync"), ("True", "HeadRecent"));
        assert_eq!(
            status_of(&conditions, "LeaderReady"),
            ("True", "LeaderSynced")
        );
        assert_eq!(
            status_of(&conditions, "DatabaseReady"),
            ("True", "StoreReachable")
        );
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn stale_heads_and_reported_errors_are_false_with_the_reason() {
        let lease = lease(
            5,
            &[
                (HEAD_TIME, "2026-11-25T11:50:00Z"),
                (LEADER, "not syncing: 40 epochs behind"),
                (STORE, "timeout"),
            ],
        );
        let conditions = lease_conditions(Some(&lease), DEFAULT_MAX_HEAD_AGE, None, now());
        assert_eq!(status_of(&conditions, "HeadInSync"), ("False", "HeadStale"));
        assert_eq!(
            status_of(&conditions, "LeaderReady"),
            ("False", "LeaderError")
        );
        let store = conditions
            .iter()
            .find(|c| c.type_ == "DatabaseReady")
            .expect("DatabaseReady");
        assert_eq!(
            (store.status.as_str(), store.message.as_str()),
            ("False", "timeout")
        );
    }

    #[test]
    fn no_holder_or_an_expired_lease_is_unknown() {
        for lease in [None, Some(lease(60, &[(LEADER, "ok"), (STORE, "ok")]))] {
            let conditions = lease_conditions(lease.as_ref(), DEFAULT_MAX_HEAD_AGE, None, now());
            assert!(
                conditions
                    .iter()
                    .all(|c| c.status == "Unknown" && c.reason == "NoIngester"),
                "{conditions:?}"
            );
        }
    }

    #[test]
    fn transition_times_move_only_on_a_change() {
        let earlier = now() - SignedDuration::from_secs(600);
        let old = vec![condition(
            "HeadInSync",
            "True",
            "HeadRecent",
            "",
            None,
            earlier,
        )];
        let same = merge_conditions(
            &old,
            vec![condition(
                "HeadInSync",
                "True",
                "HeadRecent",
                "head 5",
                None,
                now(),
            )],
        );
        assert_eq!(same[0].last_transition_time, Time(earlier));
        let changed = merge_conditions(
            &old,
            vec![condition(
                "HeadInSync",
                "False",
                "HeadStale",
                "",
                None,
                now(),
            )],
        );
        assert_eq!(changed[0].last_transition_time, Time(now()));
    }

    #[test]
    fn max_head_age_reads_durations() -> anyhow::Result<()> {
        let mut cluster = crate::build::fixture(include_str!("../build/fixtures/minimal.yaml"))?;
        assert_eq!(max_head_age(&cluster), DEFAULT_MAX_HEAD_AGE);
        for (text, seconds) in [("90s", 90), ("5m", 300), ("1h30m", 5400)] {
            cluster.spec.ingester.max_head_age = Some(text.into());
            assert_eq!(
                max_head_age(&cluster),
                Duration::from_secs(seconds),
                "{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_next_change_is_the_head_turning_stale_or_the_lease_expiring() {
        let now = now();
        // Head 100 s old, renewed 5 s ago for 15 s: the Lease expires first.
        let mut held = lease(
            5,
            &[(
                HEAD_TIME,
                &(now - SignedDuration::from_secs(100)).to_string(),
            )],
        );
        assert_eq!(
            next_change(Some(&held), Duration::from_secs(120), now),
            Some(Duration::from_secs(11))
        );
        // Without a renewal time, only the head: stale in 20 s.
        if let Some(spec) = held.spec.as_mut() {
            spec.renew_time = None;
        }
        assert_eq!(
            next_change(Some(&held), Duration::from_secs(120), now),
            Some(Duration::from_secs(21))
        );
        // Already stale, or no Lease at all: nothing to wait for.
        assert_eq!(next_change(Some(&held), Duration::from_secs(60), now), None);
        assert_eq!(next_change(None, Duration::from_secs(60), now), None);
    }

    #[test]
    fn only_the_head_height_is_not_material() {
        let old = LotusFollowerClusterStatus {
            head_height: Some(10),
            phase: Some("Running".into()),
            ..LotusFollowerClusterStatus::default()
        };
        let mut new = old.clone();
        new.head_height = Some(11);
        assert!(!materially_different(&old, &new));
        new.phase = Some("Syncing".into());
        assert!(materially_different(&old, &new));
    }

    #[test]
    fn an_invalid_spec_is_a_condition_and_a_phase() -> anyhow::Result<()> {
        let cluster = crate::build::fixture(include_str!("../build/fixtures/minimal.yaml"))?;
        let problems = [Problem {
            reason: "ConflictingArguments",
            message: "followers.extraArgs sets --store".into(),
        }];
        let status = desired_status(&cluster, &Observed::default(), &problems, now());
        assert_eq!(status.phase.as_deref(), Some("Invalid"));
        assert_eq!(
            status_of(&status.conditions, "SpecValid"),
            ("False", "ConflictingArguments")
        );
        assert_eq!(status.followers.as_deref(), Some("0/0"));
        let valid = desired_status(&cluster, &Observed::default(), &[], now());
        assert_eq!(valid.phase.as_deref(), Some("Pending"));
        assert_eq!(status_of(&valid.conditions, "SpecValid"), ("True", "Valid"));
        Ok(())
    }
}
