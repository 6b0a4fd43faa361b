//! The operator's library: the `LotusFollowerCluster` resource (`crd`), pure
//! builders of its children (`build`), the reconcile pipeline (`reconcile`:
//! observe, validate, apply, prune, status), `render` (the children printed
//! for review), and the process around it (`run`, `metrics`).

pub mod build;
pub mod crd;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod run;

/// The CRD as `crdgen` prints it, and as `crds/` and the Helm chart hold it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&crd::LotusFollowerCluster::crd())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_crd_is_the_generated_one() -> anyhow::Result<()> {
        let committed = include_str!("../../crds/lotusfollowerclusters.lotus-follower.io.yaml");
        assert!(
            committed == super::crd_yaml()?,
            "crds/ is stale: run `cargo run -p lotus-follower-operator -- crdgen > crds/lotusfollowerclusters.lotus-follower.io.yaml`"
        );
        Ok(())
    }

    #[test]
    fn the_charts_crd_is_the_generated_one() -> anyhow::Result<()> {
        let committed = include_str!(
            "../../charts/lotus-follower-operator/files/lotusfollowerclusters.lotus-follower.io.yaml"
        );
        assert!(
            committed == super::crd_yaml()?,
            "the chart's CRD is stale: run `cargo run -p lotus-follower-operator -- crdgen > charts/lotus-follower-operator/files/lotusfollowerclusters.lotus-follower.io.yaml`"
        );
        Ok(())
    }
}
