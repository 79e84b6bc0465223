//! Route53: an instance's names in the account's private hosted zone.
//!
//! dbctl never creates or deletes hosted zones: the private zone (e.g. `dbctl.internal`) belongs to
//! the account's network team. This layer only finds the zone by name, associates dbctl's VPC
//! with it (so instances resolve the names) and removes that association again, and writes and
//! removes simple A records (no alias, no routing policy).
//!
//! Every operation is idempotent, because a saga step runs it again after a lost journal write:
//! * records are written with UPSERT, so a re-run rewrites the same values;
//! * records are removed by reading them first and deleting only those that exist, with their
//!   current TTL and values (Route53 rejects a DELETE for a missing name, or with other values);
//! * VPC associations are read before they are changed, and read again when a change fails.
//!
//! Names are compared lowercase and without the trailing dot Route53 appends to every name.
//!
//! Not covered here, deliberately:
//! * Waiting for propagation: Route53 accepts a change as `PENDING` and applies it on all its
//!   servers within about a minute. A step that needs the name to resolve must wait for it.
//! * Fault injection (`DBCTL_AWS_FAULTS`): the injected responses are EC2's XML error bodies,
//!   which Route53's REST-XML parser would not read as the same errors.

use std::net::Ipv4Addr;

use aws_sdk_route53::error::BuildError;
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType, Vpc, VpcRegion,
};

use super::client;
use super::config::AwsSettings;
use super::error::{self, AwsError};

/// A hosted zone id, without the `/hostedzone/` prefix Route53 puts on ids in its responses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneId(String);

impl ZoneId {
    /// Accepts both the bare id (`Z0123...`) and Route53's `/hostedzone/Z0123...` form.
    pub fn new(id: &str) -> ZoneId {
        ZoneId(id.trim().trim_start_matches("/hostedzone/").to_string())
    }

    /// The bare id, as the API takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ZoneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Dns::associate_vpc`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Association {
    /// This call associated the VPC with the zone.
    Added,
    /// The VPC already was associated (by an earlier attempt, or by the network team).
    AlreadyPresent,
}

/// What [`Dns::disassociate_vpc`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disassociation {
    /// This call removed the association.
    Removed,
    /// The VPC was not associated with the zone (any more).
    NotAssociated,
    /// The VPC is the zone's only association and was left in place. Route53 refuses to remove
    /// the last VPC of a private zone (`LastVPCAssociation`); only deleting the zone could, and the
    /// zone is not dbctl's. Not an error, so a teardown can go on, but the caller should report it.
    KeptLastVpc,
}

/// A connected Route53 client. Cheap to clone (shared handle).
///
/// Route53 is a global service: the region of the configuration only selects the partition's
/// endpoint. The region of a VPC is passed explicitly where it matters.
#[derive(Debug, Clone)]
pub struct Dns {
    pub(crate) client: aws_sdk_route53::Client,
}

impl Dns {
    /// Connects using the standard AWS chain and `settings`, exactly like [`super::Ec2::connect`];
    /// the endpoint comes from `AWS_ENDPOINT_URL_ROUTE_53` or `AWS_ENDPOINT_URL`. Makes no request.
    pub async fn connect(settings: &AwsSettings) -> Result<Dns, AwsError> {
        let loaded = client::load(settings, "Route53 client").await?;
        Ok(Dns {
            client: aws_sdk_route53::Client::new(&loaded.sdk),
        })
    }

    /// The raw SDK client, for callers that need an operation this module does not wrap.
    pub fn sdk(&self) -> &aws_sdk_route53::Client {
        &self.client
    }

    /// The id of the private hosted zone named `zone_name` (with or without the trailing dot).
    ///
    /// Guarantees: public zones of the same name are ignored; `Permanent`, naming the zone, when
    /// no private zone has that name (dbctl does not create zones) or when several do (dbctl
    /// cannot tell which one is meant).
    pub async fn find_private_zone(&self, zone_name: &str) -> Result<ZoneId, AwsError> {
        const OP: &str = "ListHostedZonesByName";
        let name = normalize(zone_name);
        let resource = format!("private hosted zone {name}");
        if name.is_empty() {
            return Err(AwsError::invalid(OP, resource, "the zone name is empty"));
        }
        let mut private = Vec::new();
        let mut public = 0;
        let mut page_start: Option<String> = None;
        loop {
            let out = self
                .client
                .list_hosted_zones_by_name()
                .dns_name(format!("{name}."))
                .set_hosted_zone_id(page_start.take())
                .send()
                .await
                .map_err(error::fail(OP, &resource))?;
            // The listing starts at `name` and goes on with the names that sort after it, so
            // only its first entries can match.
            for zone in out.hosted_zones() {
                if normalize(zone.name()) != name {
                    continue;
                }
                if zone.config().is_some_and(|c| c.private_zone()) {
                    private.push(ZoneId::new(zone.id()));
                } else {
                    public += 1;
                }
            }
            match (out.next_dns_name(), out.next_hosted_zone_id()) {
                (Some(next), Some(id)) if out.is_truncated() && normalize(next) == name => {
                    page_start = Some(id.to_string());
                }
                _ => break,
            }
        }
        match private.as_slice() {
            [zone] => Ok(zone.clone()),
            [] => {
                let found = if public > 0 {
                    "only a public hosted zone has this name"
                } else {
                    "no hosted zone has this name in this account"
                };
                Err(AwsError::invalid(
                    OP,
                    resource,
                    format!(
                        "{found}; dbctl does not create hosted zones (they belong to the \
                         account's network team): ask them for a private zone {name}, or fix the \
                         configured zone name"
                    ),
                ))
            }
            many => {
                let ids: Vec<&str> = many.iter().map(ZoneId::as_str).collect();
                Err(AwsError::invalid(
                    OP,
                    resource,
                    format!(
                        "{} private hosted zones have this name ({}); dbctl cannot tell which one \
                         to use",
                        ids.len(),
                        ids.join(", ")
                    ),
                ))
            }
        }
    }

    /// Associates `vpc_id` (in `region`) with the private `zone`, so the VPC resolves its names.
    ///
    /// Guarantees: idempotent, an existing association is `AlreadyPresent` and no change is sent;
    /// when the change fails, the zone is read again and an association that appeared meanwhile
    /// (a concurrent attempt) also counts as `AlreadyPresent`.
    pub async fn associate_vpc(
        &self,
        zone: &ZoneId,
        vpc_id: &str,
        region: &str,
    ) -> Result<Association, AwsError> {
        let resource = format!("VPC {vpc_id} ({region}) in hosted zone {zone}");
        if self.is_associated(zone, vpc_id, region, &resource).await? {
            return Ok(Association::AlreadyPresent);
        }
        let sent = self
            .client
            .associate_vpc_with_hosted_zone()
            .hosted_zone_id(zone.as_str())
            .vpc(vpc(vpc_id, region))
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::info!(zone = %zone, vpc = vpc_id, region, "associated VPC with zone");
                Ok(Association::Added)
            }
            Err(e) => {
                let err = error::classify("AssociateVPCWithHostedZone", &resource, e);
                // Trust a fresh read over the error code: AWS reports an association that
                // already exists as `ConflictingDomainExists`, the same code as a conflict with
                // another zone of the same name.
                match self.is_associated(zone, vpc_id, region, &resource).await {
                    Ok(true) => Ok(Association::AlreadyPresent),
                    _ => Err(err),
                }
            }
        }
    }

    /// Removes the association of `vpc_id` (in `region`) with `zone`.
    ///
    /// Guarantees: idempotent, a missing association is `NotAssociated`; the zone's last VPC is
    /// never removed but reported as `KeptLastVpc` (see [`Disassociation::KeptLastVpc`]), also when
    /// Route53 itself refuses with `LastVPCAssociation` after a concurrent change.
    pub async fn disassociate_vpc(
        &self,
        zone: &ZoneId,
        vpc_id: &str,
        region: &str,
    ) -> Result<Disassociation, AwsError> {
        let resource = format!("VPC {vpc_id} ({region}) in hosted zone {zone}");
        let vpcs = self.zone_vpcs(zone, &resource).await?;
        if !vpcs.iter().any(|(id, r)| id == vpc_id && r == region) {
            return Ok(Disassociation::NotAssociated);
        }
        if vpcs.len() == 1 {
            tracing::warn!(
                zone = %zone,
                vpc = vpc_id,
                "not disassociating the last VPC of the hosted zone (Route53 does not allow it)"
            );
            return Ok(Disassociation::KeptLastVpc);
        }
        let sent = self
            .client
            .disassociate_vpc_from_hosted_zone()
            .hosted_zone_id(zone.as_str())
            .vpc(vpc(vpc_id, region))
            .send()
            .await;
        match sent {
            Ok(_) => {
                tracing::info!(zone = %zone, vpc = vpc_id, region, "disassociated VPC from zone");
                Ok(Disassociation::Removed)
            }
            Err(e) => {
                // Both mean the zone changed between the read and this call.
                let service = e.as_service_error();
                if service.is_some_and(|s| s.is_vpc_association_not_found()) {
                    Ok(Disassociation::NotAssociated)
                } else if service.is_some_and(|s| s.is_last_vpc_association()) {
                    Ok(Disassociation::KeptLastVpc)
                } else {
                    Err(error::classify(
                        "DisassociateVPCFromHostedZone",
                        &resource,
                        e,
                    ))
                }
            }
        }
    }

    /// Sets each `(fqdn, ipv4 addresses)` in `records` as a simple A record with `ttl` seconds,
    /// all in one change batch (applied by Route53 all or nothing).
    ///
    /// Guarantees: UPSERT, so names are created or their values replaced, and a re-run is
    /// harmless; addresses are deduplicated and sorted; `Permanent` without any request for an
    /// empty address list, an address that is not IPv4, or a name given twice. A name outside the
    /// zone is rejected by Route53 (`InvalidChangeBatch`, `Permanent`). Nothing is sent for an
    /// empty `records`.
    pub async fn upsert_a_records(
        &self,
        zone: &ZoneId,
        records: &[(String, Vec<String>)],
        ttl: u32,
    ) -> Result<(), AwsError> {
        const OP: &str = "ChangeResourceRecordSets";
        let resource = format!("A records in hosted zone {zone}");
        let sets = validate_records(records).map_err(|m| AwsError::invalid(OP, &resource, m))?;
        if sets.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(sets.len());
        for (name, addrs) in &sets {
            let mut set = ResourceRecordSet::builder()
                .name(format!("{name}."))
                .r#type(RrType::A)
                .ttl(i64::from(ttl));
            for addr in addrs {
                let record = ResourceRecord::builder().value(addr.to_string()).build();
                set = set.resource_records(built(OP, &resource, record)?);
            }
            changes.push((ChangeAction::Upsert, built(OP, &resource, set.build())?));
        }
        self.apply(zone, changes, &resource).await?;
        let names: Vec<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
        tracing::info!(zone = %zone, ?names, "upserted A records");
        Ok(())
    }

    /// Deletes the simple A records of `names`; returns how many record sets were deleted.
    ///
    /// Guarantees: the current record sets are read first and only the existing ones are
    /// deleted, each with its current TTL and values (what Route53 requires), all in one batch;
    /// names without an A record are skipped, so a re-run deletes nothing and succeeds. Other
    /// record types, alias and routing-policy records of the same names are left alone (this
    /// layer never writes them). When the records change between the read and the delete, the
    /// error is `Transient`: retrying the step reads them again.
    pub async fn delete_records(&self, zone: &ZoneId, names: &[String]) -> Result<usize, AwsError> {
        const OP: &str = "ChangeResourceRecordSets";
        let resource = format!("A records in hosted zone {zone}");
        let mut wanted: Vec<String> = names.iter().map(|n| normalize(n)).collect();
        wanted.sort();
        wanted.dedup();
        let mut changes = Vec::new();
        for name in wanted.iter().filter(|n| !n.is_empty()) {
            if let Some(set) = self.current_a_record(zone, name, &resource).await? {
                changes.push((ChangeAction::Delete, set));
            }
        }
        let count = changes.len();
        if count == 0 {
            return Ok(0);
        }
        self.client
            .change_resource_record_sets()
            .hosted_zone_id(zone.as_str())
            .change_batch(change_batch(changes, &resource)?)
            .send()
            .await
            .map_err(|e| {
                let stale = e
                    .as_service_error()
                    .is_some_and(|se| se.is_invalid_change_batch());
                match error::classify(OP, &resource, e) {
                    AwsError::Permanent {
                        op,
                        resource,
                        message,
                        code,
                    } if stale => AwsError::Transient {
                        op,
                        resource,
                        message: format!("{message} (changed since read; a retry reads again)"),
                        code,
                    },
                    other => other,
                }
            })?;
        tracing::info!(zone = %zone, count, "deleted A records");
        Ok(count)
    }

    /// The A records of `zone` whose name is `suffix` or ends with `.suffix` (all with an empty
    /// suffix), as `(name, addresses)` sorted by name, addresses sorted; names are lowercase
    /// without the trailing dot. Alias A records (no addresses) are left out.
    pub async fn list_records(
        &self,
        zone: &ZoneId,
        suffix: &str,
    ) -> Result<Vec<(String, Vec<String>)>, AwsError> {
        let suffix = normalize(suffix);
        let mut found = Vec::new();
        for set in self.record_sets(zone).await? {
            let name = normalize(set.name());
            if *set.r#type() != RrType::A
                || set.resource_records().is_empty()
                || !is_under(&name, &suffix)
            {
                continue;
            }
            let mut addrs: Vec<String> = set
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect();
            addrs.sort_by_key(|a| a.parse::<Ipv4Addr>().ok());
            found.push((name, addrs));
        }
        found.sort();
        Ok(found)
    }

    /// Sends `changes` to `zone` as one batch (Route53 applies all of it or none).
    pub(super) async fn apply(
        &self,
        zone: &ZoneId,
        changes: Vec<(ChangeAction, ResourceRecordSet)>,
        resource: &str,
    ) -> Result<(), AwsError> {
        self.client
            .change_resource_record_sets()
            .hosted_zone_id(zone.as_str())
            .change_batch(change_batch(changes, resource)?)
            .send()
            .await
            .map_err(error::fail("ChangeResourceRecordSets", resource))?;
        Ok(())
    }

    /// Every record set of `zone`, all pages.
    pub(super) async fn record_sets(
        &self,
        zone: &ZoneId,
    ) -> Result<Vec<ResourceRecordSet>, AwsError> {
        let resource = format!("records of hosted zone {zone}");
        let mut sets = Vec::new();
        let mut start: Option<(String, RrType, Option<String>)> = None;
        loop {
            let mut req = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone.as_str());
            if let Some((name, kind, id)) = start.take() {
                req = req
                    .start_record_name(name)
                    .start_record_type(kind)
                    .set_start_record_identifier(id);
            }
            let out = req
                .send()
                .await
                .map_err(error::fail("ListResourceRecordSets", &resource))?;
            sets.extend(out.resource_record_sets().iter().cloned());
            match (out.next_record_name(), out.next_record_type()) {
                (Some(name), Some(kind)) if out.is_truncated() => {
                    let id = out.next_record_identifier().map(str::to_string);
                    start = Some((name.to_string(), kind.clone(), id));
                }
                _ => break,
            }
        }
        Ok(sets)
    }

    /// The zone's associated VPCs as `(vpc id, region)`.
    async fn zone_vpcs(
        &self,
        zone: &ZoneId,
        resource: &str,
    ) -> Result<Vec<(String, String)>, AwsError> {
        let out = self
            .client
            .get_hosted_zone()
            .id(zone.as_str())
            .send()
            .await
            .map_err(error::fail("GetHostedZone", resource))?;
        Ok(out
            .vpcs()
            .iter()
            .map(|v| {
                let id = v.vpc_id().unwrap_or_default().to_string();
                let region = v.vpc_region().map(|r| r.as_str()).unwrap_or_default();
                (id, region.to_string())
            })
            .collect())
    }

    async fn is_associated(
        &self,
        zone: &ZoneId,
        vpc_id: &str,
        region: &str,
        resource: &str,
    ) -> Result<bool, AwsError> {
        let vpcs = self.zone_vpcs(zone, resource).await?;
        Ok(vpcs.iter().any(|(id, r)| id == vpc_id && r == region))
    }

    /// The simple A record set of `name` (normalized), exactly as Route53 holds it now.
    async fn current_a_record(
        &self,
        zone: &ZoneId,
        name: &str,
        resource: &str,
    ) -> Result<Option<ResourceRecordSet>, AwsError> {
        // Route53 lists sets sorted by name and type starting at the given pair, so the first
        // one is this name's A set if it has one. A name cannot mix a simple A set with
        // routing-policy ones, so one item is enough.
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone.as_str())
            .start_record_name(format!("{name}."))
            .start_record_type(RrType::A)
            .max_items(1)
            .send()
            .await
            .map_err(error::fail("ListResourceRecordSets", resource))?;
        Ok(out
            .resource_record_sets()
            .first()
            .filter(|set| {
                normalize(set.name()) == name
                    && *set.r#type() == RrType::A
                    && set.set_identifier().is_none()
                    && set.alias_target().is_none()
            })
            .cloned())
    }
}

/// `name` lowercase, trimmed, and without Route53's trailing dot.
pub(super) fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// True when `name` is `suffix` or a name below it (whole labels: `xdb.internal` is not under
/// `db.internal`). Everything is under the empty suffix.
fn is_under(name: &str, suffix: &str) -> bool {
    suffix.is_empty()
        || name == suffix
        || name
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.'))
}

/// Checks and normalizes upsert input: names normalized and unique, addresses IPv4, at least one
/// per name, deduplicated and sorted.
fn validate_records(
    records: &[(String, Vec<String>)],
) -> Result<Vec<(String, Vec<Ipv4Addr>)>, String> {
    let mut sets: Vec<(String, Vec<Ipv4Addr>)> = Vec::with_capacity(records.len());
    for (fqdn, addrs) in records {
        let name = normalize(fqdn);
        if name.is_empty() {
            return Err("a record name is empty".to_string());
        }
        if sets.iter().any(|(n, _)| *n == name) {
            return Err(format!(
                "{name} is given twice (one change batch takes a name once)"
            ));
        }
        let mut ips = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let ip = addr
                .trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("{name}: {addr:?} is not an IPv4 address"))?;
            ips.push(ip);
        }
        if ips.is_empty() {
            return Err(format!(
                "{name}: an A record needs at least one address (delete_records removes a name)"
            ));
        }
        // Route53 rejects a record set that lists the same value twice.
        ips.sort();
        ips.dedup();
        sets.push((name, ips));
    }
    Ok(sets)
}

/// One batch of `changes`, which Route53 applies all or nothing.
fn change_batch(
    changes: Vec<(ChangeAction, ResourceRecordSet)>,
    resource: &str,
) -> Result<ChangeBatch, AwsError> {
    const OP: &str = "ChangeResourceRecordSets";
    let mut batch = ChangeBatch::builder().comment("dbctl");
    for (action, set) in changes {
        let change = Change::builder()
            .action(action)
            .resource_record_set(set)
            .build();
        batch = batch.changes(built(OP, resource, change)?);
    }
    built(OP, resource, batch.build())
}

fn vpc(vpc_id: &str, region: &str) -> Vpc {
    Vpc::builder()
        .vpc_id(vpc_id)
        .vpc_region(VpcRegion::from(region))
        .build()
}

/// A builder result; the builders only fail on a missing required field, which would be a bug
/// here, reported as `Permanent` rather than a panic.
pub(super) fn built<T>(
    op: &str,
    resource: &str,
    result: Result<T, BuildError>,
) -> Result<T, AwsError> {
    result.map_err(|e| AwsError::invalid(op, resource, format!("building the request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_route53::error::SdkError;
    use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn owned(records: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        records
            .iter()
            .map(|(n, a)| (n.to_string(), a.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn zone_ids_and_names_are_normalized() {
        assert_eq!(ZoneId::new("/hostedzone/Z123").as_str(), "Z123");
        assert_eq!(ZoneId::new("Z123"), ZoneId::new("/hostedzone/Z123"));
        assert_eq!(normalize(" DB1.Dbctl.Internal. "), "db1.dbctl.internal");
        assert_eq!(normalize("."), "");
    }

    #[test]
    fn suffix_matches_whole_labels() {
        assert!(is_under("db1.prod.dbctl.internal", "prod.dbctl.internal"));
        assert!(is_under("prod.dbctl.internal", "prod.dbctl.internal"));
        assert!(!is_under("xprod.dbctl.internal", "prod.dbctl.internal"));
        assert!(!is_under("dbctl.internal", "prod.dbctl.internal"));
        assert!(is_under("anything.example", ""));
    }

    #[test]
    fn upsert_input_is_checked_and_normalized() {
        let sets = validate_records(&owned(&[(
            "DB1.dbctl.internal.",
            &["10.0.0.9", "10.0.0.10", "10.0.0.9"],
        )]))
        .unwrap();
        let ips: Vec<String> = sets[0].1.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(sets[0].0, "db1.dbctl.internal");
        // Numeric order, duplicates dropped.
        assert_eq!(ips, ["10.0.0.9", "10.0.0.10"]);

        let err = validate_records(&owned(&[("db1.x", &["10.0.0.256"])])).unwrap_err();
        assert!(err.contains("10.0.0.256"), "{err}");
        assert!(validate_records(&owned(&[("db1.x", &["fd00::1"])])).is_err());
        assert!(validate_records(&owned(&[("db1.x", &[])])).is_err());
        assert!(validate_records(&owned(&[("", &["10.0.0.1"])])).is_err());
        let twice = owned(&[("db1.x", &["10.0.0.1"]), ("DB1.x.", &["10.0.0.2"])]);
        assert!(validate_records(&twice).unwrap_err().contains("twice"));
    }

    fn route53_error(status: u16, code: &str) -> AwsError {
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        let err = SdkError::service_error(ChangeResourceRecordSetsError::generic(meta), raw);
        error::classify("ChangeResourceRecordSets", "zone Z1", err)
    }

    #[test]
    fn route53_codes_are_classified() {
        // Route53 sends throttling and "change in progress" as HTTP 400.
        assert!(route53_error(400, "Throttling").is_transient());
        assert!(route53_error(400, "PriorRequestNotComplete").is_transient());
        assert!(route53_error(503, "ServiceUnavailable").is_transient());
        assert!(route53_error(500, "InternalFailure").is_transient());
        for code in ["NoSuchHostedZone", "InvalidInput", "InvalidChangeBatch"] {
            let status = if code == "NoSuchHostedZone" { 404 } else { 400 };
            let err = route53_error(status, code);
            assert!(!err.is_transient(), "{code}");
            assert_eq!(err.code(), Some(code));
        }
    }
}
