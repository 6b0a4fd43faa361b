//! The Kubernetes side: a client from the test bed's kubeconfig and a fresh
//! namespace per test.

use std::time::Duration;

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::{Check, TestBed, names, wait_until};

/// Label on every namespace a test creates, so leftovers are easy to find.
const TEST_LABEL: &str = "lotus-follower.io/e2e-test";

impl TestBed {
    /// The client configuration of the admin kubeconfig.
    pub async fn kube_config(&self) -> anyhow::Result<Config> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
    }

    /// A client acting as the test bed's admin.
    pub async fn kube_client(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.kube_config().await?)?)
    }

    /// A client acting as a ServiceAccount of `ns`, with a TokenRequest token:
    /// what a workload running as that account could do, and no more.
    pub async fn service_account_client(
        &self,
        ns: &TestNamespace,
        account: &str,
    ) -> anyhow::Result<Client> {
        let request = TokenRequest {
            spec: Some(TokenRequestSpec::default()),
            ..TokenRequest::default()
        };
        let token = ns
            .api::<ServiceAccount>()
            .create_token_request(account, &PostParams::default(), &request)
            .await?
            .status
            .and_then(|status| status.token)
            .ok_or_else(|| anyhow::anyhow!("no token for ServiceAccount {account}"))?;
        let mut config = self.kube_config().await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(Client::try_from(config)?)
    }
}

/// Applies a CRD (server-side, so every run and every test may) and waits
/// until the API server serves it.
pub async fn install_crd(client: &Client, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("lotus-follower-e2e").force(),
        &Patch::Apply(crd),
    )
    .await?;
    wait_until(
        &format!("CRD {name} established"),
        Duration::from_secs(30),
        || async {
            let conditions = crds
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default();
            let established = conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(Check::when(
                established,
                (),
                format!("{} conditions", conditions.len()),
            ))
        },
    )
    .await?;
    Ok(())
}

/// A namespace of one test's own. It is deleted by [`TestNamespace::delete`] when
/// the test passes and kept for inspection when it fails (`e2e/testbed down`
/// discards the whole cluster).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// Creates `<test>-<random>` and waits until its `default` ServiceAccount
    /// exists, since pods cannot be admitted before it does.
    pub async fn create(client: &Client, test: &str) -> anyhow::Result<Self> {
        let name = names::unique(test, '-');
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), test.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &name);
        wait_until(
            &format!("the default ServiceAccount of namespace {name}"),
            Duration::from_secs(30),
            || async {
                Ok(Check::when(
                    accounts.get_opt("default").await?.is_some(),
                    (),
                    "absent",
                ))
            },
        )
        .await?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    /// An API for namespaced objects of type `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn delete(self) -> anyhow::Result<()> {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await?;
        Ok(())
    }
}
