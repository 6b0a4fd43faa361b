//! What a fleet on the real node needs before its `LotusFollowerCluster`, made
//! exactly as `e2e/testbed demo` makes it, from the same file
//! (`e2e/tools/demo/backing.yaml`): a keyspace and the two CQL roles (the
//! ingester's writes, the followers' may only SELECT) with their Secrets, the
//! test bed's Cassandra as the Service `cassandra`, a devnet leader as the
//! Service `leader`, and a read token for it. Then [`Backing::place`] puts a
//! fleet's pods on the real node.

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use lotus_follower::{devnet::api_secret, rpc::auth::Perm};
use lotus_follower_operator::build::DEFAULT_IMAGE;
use serde_json::{Value, json};

use crate::{TestBed, TestKeyspace, TestNamespace, TestRole, repo_root};

/// The test bed's real node: where pods run for real.
#[derive(Debug, Clone)]
pub struct RealNode {
    pub name: String,
    pub taint: String,
    /// Its address in the test bed's network namespace, where netns-bridge
    /// forwards to the host's Cassandra.
    pub ip: String,
}

impl RealNode {
    pub async fn get(client: &Client) -> anyhow::Result<Self> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                anyhow::anyhow!("{name} is not set: eval \"$(e2e/testbed env)\" first")
            })
        };
        let name = var("LOTUS_FOLLOWER_TESTBED_NODE")?;
        let taint = var("LOTUS_FOLLOWER_TESTBED_NODE_TAINT")?;
        let node = Api::<Node>::all(client.clone()).get(&name).await?;
        let ip = node
            .status
            .and_then(|status| status.addresses)
            .unwrap_or_default()
            .into_iter()
            .find(|address| address.type_ == "InternalIP")
            .map(|address| address.address)
            .ok_or_else(|| anyhow::anyhow!("node {name} has no InternalIP"))?;
        Ok(Self { name, taint, ip })
    }

    /// A fleet's or the operator's pods on this node: its taint tolerated, its
    /// hostname selected.
    pub fn placement(&self) -> Value {
        json!({
            "nodeSelector": {"kubernetes.io/hostname": self.name},
            "tolerations": [{"key": self.taint, "operator": "Exists", "effect": "NoSchedule"}],
        })
    }
}

#[derive(Debug)]
pub struct Backing {
    pub namespace: String,
    pub node: RealNode,
    pub keyspace: TestKeyspace,
    ingester: TestRole,
    follower: TestRole,
    api_secret: String,
    read_token: String,
}

impl Backing {
    pub async fn create(
        bed: &TestBed,
        client: &Client,
        ns: &TestNamespace,
    ) -> anyhow::Result<Self> {
        let node = RealNode::get(client).await?;
        let session = bed.cql_superuser_session().await?;
        let keyspace = TestKeyspace::create(&session, "fleet").await?;
        let ingester = TestRole::create(&session, "ingester").await?;
        let follower = TestRole::create(&session, "follower").await?;
        for (permission, role) in [
            ("CREATE", &ingester),
            ("ALTER", &ingester),
            ("MODIFY", &ingester),
            ("SELECT", &ingester),
            ("SELECT", &follower),
        ] {
            session
                .query_unpaged(
                    format!(
                        "GRANT {permission} ON KEYSPACE {} TO {}",
                        keyspace.name, role.name
                    ),
                    (),
                )
                .await?;
        }
        // The leader's key, written by the devnet's own code in Lotus's keystore
        // format, and a read token signed with it.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("api-secret");
        let secret = api_secret::load_or_create(&path)?;
        let read_token = secret.auth().token(Perm::Read)?;
        let backing = Self {
            namespace: ns.name.clone(),
            node,
            keyspace,
            ingester,
            follower,
            api_secret: std::fs::read_to_string(&path)?,
            read_token,
        };
        let manifest = backing.fill_file("e2e/tools/demo/backing.yaml")?;
        bed.kubectl_with(&["apply", "--namespace", &ns.name, "-f", "-"], &manifest)?;
        Ok(backing)
    }

    /// A file of the repository with the demo's `@…@` placeholders filled in.
    pub fn fill_file(&self, path: &str) -> anyhow::Result<String> {
        Ok(self.fill(&std::fs::read_to_string(repo_root().join(path))?))
    }

    pub fn fill(&self, template: &str) -> String {
        [
            ("@NAMESPACE@", self.namespace.as_str()),
            ("@KEYSPACE@", &self.keyspace.name),
            ("@INGESTER_ROLE@", &self.ingester.name),
            ("@INGESTER_PASSWORD@", &self.ingester.password),
            ("@FOLLOWER_ROLE@", &self.follower.name),
            ("@FOLLOWER_PASSWORD@", &self.follower.password),
            ("@API_SECRET@", &self.api_secret),
            ("@READ_TOKEN@", &self.read_token),
            ("@NODE_IP@", &self.node.ip),
            ("@NODE_NAME@", &self.node.name),
            ("@NODE_TAINT@", &self.node.taint),
            ("@FOLLOWER_IMAGE@", DEFAULT_IMAGE),
        ]
        .iter()
        .fold(template.to_owned(), |text, (placeholder, value)| {
            text.replace(placeholder, value)
        })
    }

    /// An example fleet made to run here: on this backing's keyspace, its pods
    /// on the real node, and Cassandra's self-reported 127.0.0.1 mapped to the
    /// node's address, where netns-bridge forwards to it (as the demo's fleet).
    pub fn place(&self, fleet: &mut Value) {
        fleet["spec"]["database"]["external"]["keyspace"] = self.keyspace.name.clone().into();
        let map = format!("--cql-address-map=127.0.0.1:9042={}:9042", self.node.ip);
        for component in ["ingester", "followers"] {
            let spec = &mut fleet["spec"][component];
            if spec.is_null() {
                *spec = json!({});
            }
            if let (Some(spec), Value::Object(placement)) =
                (spec.as_object_mut(), self.node.placement())
            {
                spec.extend(placement);
                spec.insert("extraArgs".into(), json!([map]));
            }
        }
    }

    /// Drops the keyspace and the roles (the namespace goes with its test).
    pub async fn drop(self, bed: &TestBed) -> anyhow::Result<()> {
        let session = bed.cql_superuser_session().await?;
        self.keyspace.drop(&session).await?;
        self.ingester.drop(&session).await?;
        self.follower.drop(&session).await
    }
}
