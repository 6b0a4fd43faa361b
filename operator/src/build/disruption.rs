//! The followers' PodDisruptionBudget: at most one follower down at a time for
//! voluntary disruptions, which never blocks draining a single-replica fleet
//! (`minAvailable: 1` with one replica, or `maxUnavailable: 0`, would).

use k8s_openapi::{
    api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{
    common::{child_metadata, selector_labels},
    followers::COMPONENT,
};
use crate::crd::LotusFollowerCluster;

pub fn followers_pdb(cluster: &LotusFollowerCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_metadata(cluster, "followers", COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster, COMPONENT)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
