//! Finding and removing everything a run created, by its `dbctl:run` tag alone.
//!
//! This is the safety net under the saga: if the journal is lost entirely, `dbctl` can still list
//! and remove what a run left behind, because every resource was tagged at creation.

use super::Ec2;
use super::error::AwsError;
use super::instance::LIVE_INSTANCE_STATES;
use super::tags::{TAG_INSTANCE, TAG_OWNER, TAG_RUN, TAG_STEP, filter, tag_filter, tag_value};
use aws_sdk_ec2::types::{Filter, Tag};

/// The kinds of resource dbctl creates on EC2, in the order `sweep_run` deletes them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ResourceKind {
    Instance,
    Volume,
    KeyPair,
    SecurityGroup,
    RouteTable,
    InternetGateway,
    Subnet,
    Vpc,
}

/// A live resource carrying a run's tag.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaggedResource {
    pub kind: ResourceKind,
    /// The resource id; for key pairs the key *name* (what `DeleteKeyPair` and `RunInstances`
    /// use).
    pub id: String,
    /// The run it belongs to (`dbctl:run`).
    pub run: Option<String>,
    pub step: Option<String>,
    pub instance: Option<String>,
    /// EC2's state where the kind has one (instances, volumes, VPCs).
    pub state: Option<String>,
}

fn tagged(
    kind: ResourceKind,
    id: Option<&str>,
    tags: &[Tag],
    state: Option<&str>,
) -> Option<TaggedResource> {
    Some(TaggedResource {
        kind,
        id: id?.to_string(),
        run: tag_value(tags, TAG_RUN).map(str::to_string),
        step: tag_value(tags, TAG_STEP).map(str::to_string),
        instance: tag_value(tags, TAG_INSTANCE).map(str::to_string),
        state: state.map(str::to_string),
    })
}

impl Ec2 {
    /// Every live resource tagged `dbctl:run=<run_id>`: VPCs, subnets, internet gateways, route
    /// tables, security groups, instances (not terminated), volumes (not deleting/deleted) and
    /// key pairs, sorted in sweep order.
    pub async fn tagged_resources(&self, run_id: &str) -> Result<Vec<TaggedResource>, AwsError> {
        let label = format!("resources of run {run_id}");
        self.tagged_where(tag_filter(TAG_RUN, run_id), &label).await
    }

    /// Every live resource dbctl made for the state directory `owner` names (tag
    /// `dbctl:owner`, see [`crate::provider::leftovers::owner_id`]), of any run: what `gc`
    /// compares with the journal. Resources of other dbctl installations sharing the account
    /// carry another owner and are never returned.
    pub async fn owned_resources(&self, owner: &str) -> Result<Vec<TaggedResource>, AwsError> {
        let label = format!("resources of dbctl owner {owner}");
        self.tagged_where(tag_filter(TAG_OWNER, owner), &label)
            .await
    }

    /// The live resources of every kind dbctl creates that match `tag`, in sweep order.
    async fn tagged_where(
        &self,
        tag: Filter,
        label: &str,
    ) -> Result<Vec<TaggedResource>, AwsError> {
        use super::error::fail;
        use ResourceKind as K;
        let run = || vec![tag.clone()];
        let mut all = Vec::new();

        let mut f = run();
        f.push(filter("instance-state-name", LIVE_INSTANCE_STATES));
        for i in self.find_instances(f, label).await? {
            let state = i.state().and_then(|s| s.name()).map(|n| n.as_str());
            all.extend(tagged(K::Instance, i.instance_id(), i.tags(), state));
        }
        let mut f = run();
        f.push(filter(
            "status",
            &["creating", "available", "in-use", "error"],
        ));
        for v in self.find_volumes(f, label).await? {
            let state = v.state().map(|s| s.as_str());
            all.extend(tagged(K::Volume, v.volume_id(), v.tags(), state));
        }
        for k in self.find_keys(run(), label).await? {
            all.extend(tagged(K::KeyPair, k.key_name(), k.tags(), None));
        }
        for g in self.find_groups(run(), label).await? {
            all.extend(tagged(K::SecurityGroup, g.group_id(), g.tags(), None));
        }
        let out = self
            .client
            .describe_route_tables()
            .set_filters(Some(run()))
            .send()
            .await;
        for t in out
            .map_err(fail("DescribeRouteTables", label))?
            .route_tables()
        {
            all.extend(tagged(K::RouteTable, t.route_table_id(), t.tags(), None));
        }
        let out = self
            .client
            .describe_internet_gateways()
            .set_filters(Some(run()))
            .send()
            .await;
        for g in out
            .map_err(fail("DescribeInternetGateways", label))?
            .internet_gateways()
        {
            all.extend(tagged(
                K::InternetGateway,
                g.internet_gateway_id(),
                g.tags(),
                None,
            ));
        }
        let out = self
            .client
            .describe_subnets()
            .set_filters(Some(run()))
            .send()
            .await;
        for s in out.map_err(fail("DescribeSubnets", label))?.subnets() {
            let state = s.state().map(|s| s.as_str());
            all.extend(tagged(K::Subnet, s.subnet_id(), s.tags(), state));
        }
        let out = self
            .client
            .describe_vpcs()
            .set_filters(Some(run()))
            .send()
            .await;
        for v in out.map_err(fail("DescribeVpcs", label))?.vpcs() {
            let state = v.state().map(|s| s.as_str());
            all.extend(tagged(K::Vpc, v.vpc_id(), v.tags(), state));
        }
        all.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        Ok(all)
    }

    /// Deletes everything tagged with `run_id`, dependents first: instances (waiting until
    /// terminated), volumes, key pairs, security groups, route tables, gateways, subnets, VPCs.
    ///
    /// Guarantees: on `Ok`, `tagged_resources(run_id)` is empty (checked, `Transient` if not, e.g.
    /// a resource created concurrently); stops at the first error, and is safe to call again.
    pub async fn sweep_run(&self, run_id: &str) -> Result<(), AwsError> {
        use ResourceKind as K;
        let found = self.tagged_resources(run_id).await?;
        let ids = |kind: ResourceKind| -> Vec<String> {
            found
                .iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.id.clone())
                .collect()
        };
        tracing::info!(run_id, count = found.len(), "sweeping run");

        self.terminate_and_wait(&ids(K::Instance)).await?;
        // Root volumes tagged at launch usually went with their instance: gone = success.
        for id in ids(K::Volume) {
            self.delete_volume_by_id(&id).await?;
        }
        for name in ids(K::KeyPair) {
            self.delete_key_by_name(&name).await?;
        }
        for id in ids(K::SecurityGroup) {
            self.delete_group_by_id(&id).await?;
        }
        for id in ids(K::RouteTable) {
            self.delete_route_table(&id).await?;
        }
        for id in ids(K::InternetGateway) {
            self.delete_internet_gateway(&id).await?;
        }
        for id in ids(K::Subnet) {
            self.delete_subnet(&id).await?;
        }
        for id in ids(K::Vpc) {
            self.delete_vpc_tree(&id).await?;
        }

        let left = self.tagged_resources(run_id).await?;
        if !left.is_empty() {
            let names: Vec<String> = left
                .iter()
                .map(|r| format!("{:?} {}", r.kind, r.id))
                .collect();
            return Err(AwsError::not_yet(
                "SweepRun",
                format!("run {run_id}"),
                format!("still present after sweep: {}", names.join(", ")),
            ));
        }
        Ok(())
    }
}
