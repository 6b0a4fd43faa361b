# Sourced by e2e/testbed: `demo`, the whole fleet as pods on the real node.
#
# The operator installed with its Helm chart (charts/lotus-follower-operator) as
# pods of its image, in the demo's namespace and watching only it; a devnet
# leader pod; the test bed's Cassandra behind a Service (backing.yaml); a
# LotusFollowerCluster (fleet.yaml) whose ingester and followers are pods started
# with exactly what the operator generated. Its RPC Service is port-forwarded to
# the host until `e2e/testbed down`.

readonly DEMO_NAMESPACE=lotus-follower-demo DEMO_KEYSPACE=lotus_demo DEMO_RESOURCE=demo
readonly DEMO_INGESTER_ROLE=lotus_demo_ingester DEMO_FOLLOWER_ROLE=lotus_demo_follower
readonly DEMO_RELEASE=lotus-follower-operator

base64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# A Lotus API token (HS256, Lotus's claims) signed with a key given in hex.
lotus_token() { # key-hex permissions-json-array
  local header payload signature
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | base64url)
  payload=$(printf '{"Allow":%s}' "$2" | base64url)
  signature=$(printf '%s.%s' "$header" "$payload" |
    openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary | base64url)
  printf '%s.%s.%s' "$header" "$payload" "$signature"
}

demo_cql() { cql_as "$STATE/cassandra/credentials" "$1" >/dev/null; }

cmd_demo() {
  [[ $(running_components | wc -l) -eq ${#COMPONENTS[@]} ]] || die "the test bed is not up: run 'e2e/testbed up' first"
  local started=$SECONDS follower_image
  follower_image=$(sed -n 1p "$IMAGES_DIR/names")

  # A fresh demo each time: the previous one's namespace, keyspace and roles go.
  stop demo-port-forward
  kubectl_admin delete namespace "$DEMO_NAMESPACE" --ignore-not-found --wait=true --timeout=120s >/dev/null
  demo_cql "DROP KEYSPACE IF EXISTS $DEMO_KEYSPACE"
  demo_cql "DROP ROLE IF EXISTS $DEMO_INGESTER_ROLE"
  demo_cql "DROP ROLE IF EXISTS $DEMO_FOLLOWER_ROLE"

  # The database's owner makes the keyspace and the two roles: the ingester's
  # creates tables and writes, the followers' may only SELECT.
  # The leader's JWT key in Lotus's own keystore format, and a read token made from it.
  local ingester_password follower_password api_key api_secret
  ingester_password=$(openssl rand -hex 16) follower_password=$(openssl rand -hex 16)
  openssl rand 32 >"$STATE/demo-api-key"
  api_key=$(od -An -tx1 "$STATE/demo-api-key" | tr -d ' \n')
  api_secret=$(printf '{"Type":"jwt-hmac-secret","PrivateKey":"%s"}' "$(openssl base64 -A <"$STATE/demo-api-key")")
  rm -f "$STATE/demo-api-key"
  demo_cql "CREATE KEYSPACE $DEMO_KEYSPACE WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}"
  demo_cql "CREATE ROLE $DEMO_INGESTER_ROLE WITH LOGIN = true AND PASSWORD = '$ingester_password'"
  demo_cql "CREATE ROLE $DEMO_FOLLOWER_ROLE WITH LOGIN = true AND PASSWORD = '$follower_password'"
  demo_cql "GRANT CREATE ON KEYSPACE $DEMO_KEYSPACE TO $DEMO_INGESTER_ROLE"
  demo_cql "GRANT ALTER ON KEYSPACE $DEMO_KEYSPACE TO $DEMO_INGESTER_ROLE"
  demo_cql "GRANT MODIFY ON KEYSPACE $DEMO_KEYSPACE TO $DEMO_INGESTER_ROLE"
  demo_cql "GRANT SELECT ON KEYSPACE $DEMO_KEYSPACE TO $DEMO_INGESTER_ROLE"
  demo_cql "GRANT SELECT ON KEYSPACE $DEMO_KEYSPACE TO $DEMO_FOLLOWER_ROLE"

  log "demo: the operator (Helm release $DEMO_RELEASE), the leader, the database's Service and the fleet in namespace $DEMO_NAMESPACE"
  kubectl_admin create namespace "$DEMO_NAMESPACE" >"$LOGS/demo.log"
  KUBECONFIG=$ADMIN_KUBECONFIG PATH=$K8S_DIR/bin:$PATH \
    "$REPO_DIR/charts/adopt-cluster-objects.sh" "$DEMO_RELEASE" "$DEMO_NAMESPACE" >>"$LOGS/demo.log"
  "$HELM_DIR/bin/helm" --kubeconfig "$ADMIN_KUBECONFIG" install "$DEMO_RELEASE" "$REPO_DIR/charts/lotus-follower-operator" \
    --namespace "$DEMO_NAMESPACE" --values <(demo_fill "$TOOLS/demo/operator-values.yaml") >>"$LOGS/demo.log" ||
    component_failed demo "helm install of the operator failed"
  kubectl_admin wait crd/lotusfollowerclusters.lotus-follower.io --for condition=Established --timeout 30s >>"$LOGS/demo.log"
  { demo_fill "$TOOLS/demo/backing.yaml"; echo ---; demo_fill "$TOOLS/demo/fleet.yaml"; } |
    kubectl_admin apply --namespace "$DEMO_NAMESPACE" -f - >>"$LOGS/demo.log" ||
    component_failed demo "the demo's objects were refused"

  wait_for kube-apiserver 120 "the operator Available" kubectl_admin wait "deployment/$DEMO_RELEASE" \
    --namespace "$DEMO_NAMESPACE" --for condition=Available --timeout 2s
  wait_for kube-apiserver 180 "the demo fleet Ready" kubectl_admin wait "lfc/$DEMO_RESOURCE" \
    --namespace "$DEMO_NAMESPACE" --for condition=Ready --timeout 2s

  # The fleet's RPC Service on the host, until `down`.
  start demo-port-forward "$K8S_DIR/bin/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" port-forward \
    --namespace "$DEMO_NAMESPACE" "service/$DEMO_RESOURCE-rpc" :1234
  local port=
  wait_for demo-port-forward 30 "forwarding" grep -q 'Forwarding from 127.0.0.1:' "$LOGS/demo-port-forward.log"
  port=$(sed -n 's/^Forwarding from 127.0.0.1:\([0-9]*\) .*/\1/p' "$LOGS/demo-port-forward.log" | head -n 1)
  log "demo: fleet Ready in $((SECONDS - started))s; kubectl get lfc -n $DEMO_NAMESPACE"
  cat <<EOF
export LOTUS_FOLLOWER_DEMO_RPC='http://127.0.0.1:$port/rpc/v1'
export LOTUS_FOLLOWER_DEMO_NAMESPACE='$DEMO_NAMESPACE'
export LOTUS_FOLLOWER_DEMO_RESOURCE='$DEMO_RESOURCE'
export LOTUS_FOLLOWER_DEMO_LEADER_SERVICE='leader'
EOF
}

# A demo file with its @…@ filled in (the variables are cmd_demo's locals).
demo_fill() {
  sed -e "s#@NAMESPACE@#$DEMO_NAMESPACE#g" -e "s#@KEYSPACE@#$DEMO_KEYSPACE#g" \
    -e "s#@INGESTER_ROLE@#$DEMO_INGESTER_ROLE#g" -e "s#@INGESTER_PASSWORD@#$ingester_password#g" \
    -e "s#@FOLLOWER_ROLE@#$DEMO_FOLLOWER_ROLE#g" -e "s#@FOLLOWER_PASSWORD@#$follower_password#g" \
    -e "s#@API_SECRET@#$api_secret#g" -e "s#@READ_TOKEN@#$(lotus_token "$api_key" '["read"]')#g" \
    -e "s#@NODE_IP@#$NODE_IP#g" -e "s#@NODE_NAME@#$NODE_NAME#g" -e "s#@NODE_TAINT@#$NODE_TAINT#g" \
    -e "s#@FOLLOWER_IMAGE@#$follower_image#g" "$1"
}
