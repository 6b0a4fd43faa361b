#!/usr/bin/env bash
# Lets a Helm release take over the chart's two cluster-wide objects when they
# exist already (installed from manifests/install.yaml, by another release, or
# with `kubectl apply`): the LotusFollowerCluster CRD and the ClusterRole
# lotus-follower-ingester. Helm refuses to install over objects it does not
# own, and adopts them once they carry the release's labels and annotations.
#   charts/adopt-cluster-objects.sh <release> <namespace>
# Both keep `helm.sh/resource-policy: keep`: no release deletes them.
set -euo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 <release> <namespace>" >&2; exit 2; }
for object in crd/lotusfollowerclusters.lotus-follower.io clusterrole/lotus-follower-ingester; do
  kubectl get "$object" >/dev/null 2>&1 || continue
  kubectl label --overwrite "$object" app.kubernetes.io/managed-by=Helm >/dev/null
  kubectl annotate --overwrite "$object" "meta.helm.sh/release-name=$1" "meta.helm.sh/release-namespace=$2" >/dev/null
  echo "$object: adopted by release $1 in namespace $2"
done
