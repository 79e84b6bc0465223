//! The Route53 layer against moto_server: finding the private zone, A record upsert/delete
//! idempotency, VPC association idempotency and error classification. Every effect is read back
//! through the raw SDK, never through the layer's own listing alone.
//!
//! What moto does not emulate (so these tests cannot cover it): it accepts any VPC id without
//! asking EC2 (no `InvalidVPCId`), appends an association that already exists instead of
//! answering `ConflictingDomainExists`, never answers `VPCAssociationNotFound` (it refuses any
//! disassociation from a one-VPC zone as `LastVPCAssociation`, even of a VPC that is not
//! associated), checks a DELETE's values against the zone's change history rather than the current
//! record set, applies changes at once (no `PENDING` phase), and ignores pagination of
//! `ListHostedZonesByName`.

mod support;

use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, HostedZoneConfig, ResourceRecord, ResourceRecordSet, RrType,
    Vpc, VpcRegion,
};
use dbctl::provider::aws::{Association, AwsSettings, Disassociation, Dns, Ec2, ZoneId};
use support::moto::session;

const REGION: &str = "us-east-1";
const ZONE: &str = "dbctl.internal";

async fn clients() -> (Dns, Ec2) {
    let settings = AwsSettings::default();
    let dns = Dns::connect(&settings).await.unwrap();
    let ec2 = Ec2::connect(&settings).await.unwrap();
    (dns, ec2)
}

/// A VPC created through EC2, as the network step would.
async fn vpc(ec2: &Ec2, cidr: &str) -> String {
    let out = ec2
        .sdk()
        .create_vpc()
        .cidr_block(cidr)
        .send()
        .await
        .unwrap();
    out.vpc().unwrap().vpc_id().unwrap().to_string()
}

/// Creates a hosted zone the way the network team would (dbctl itself never does).
async fn create_zone(dns: &Dns, name: &str, private_vpc: Option<&str>) -> ZoneId {
    let reference = format!("{name}-{}", private_vpc.unwrap_or("public"));
    let mut req = dns
        .sdk()
        .create_hosted_zone()
        .name(name)
        .caller_reference(reference)
        .hosted_zone_config(
            HostedZoneConfig::builder()
                .private_zone(private_vpc.is_some())
                .build(),
        );
    if let Some(vpc_id) = private_vpc {
        req = req.vpc(
            Vpc::builder()
                .vpc_id(vpc_id)
                .vpc_region(VpcRegion::from(REGION))
                .build(),
        );
    }
    ZoneId::new(req.send().await.unwrap().hosted_zone().unwrap().id())
}

/// The zone's private zone with one VPC, the usual starting point.
async fn zone_with_vpc(dns: &Dns, ec2: &Ec2) -> (ZoneId, String) {
    let vpc_id = vpc(ec2, "10.42.0.0/16").await;
    (create_zone(dns, ZONE, Some(&vpc_id)).await, vpc_id)
}

/// Every record set of `kind` as Route53 holds it: `(name with trailing dot, TTL, values)`,
/// values sorted as strings, sets sorted by name.
async fn raw_sets(dns: &Dns, zone: &ZoneId, kind: RrType) -> Vec<(String, i64, Vec<String>)> {
    let out = dns
        .sdk()
        .list_resource_record_sets()
        .hosted_zone_id(zone.as_str())
        .send()
        .await
        .unwrap();
    assert!(!out.is_truncated(), "test zones fit in one page");
    let mut sets: Vec<_> = out
        .resource_record_sets()
        .iter()
        .filter(|s| *s.r#type() == kind)
        .map(|s| {
            let mut values: Vec<String> = s
                .resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect();
            values.sort();
            (s.name().to_string(), s.ttl().unwrap_or(-1), values)
        })
        .collect();
    sets.sort();
    sets
}

fn set(name: &str, ttl: i64, values: &[&str]) -> (String, i64, Vec<String>) {
    let mut values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    values.sort();
    (name.to_string(), ttl, values)
}

fn records(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    list.iter()
        .map(|(n, ips)| (n.to_string(), ips.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// Writes a record set behind dbctl's back (the network team, or a half-finished earlier run).
async fn raw_upsert(dns: &Dns, zone: &ZoneId, name: &str, kind: RrType, ttl: i64, values: &[&str]) {
    let mut rrs = ResourceRecordSet::builder()
        .name(name)
        .r#type(kind)
        .ttl(ttl);
    for v in values {
        rrs = rrs.resource_records(ResourceRecord::builder().value(*v).build().unwrap());
    }
    let change = Change::builder()
        .action(ChangeAction::Upsert)
        .resource_record_set(rrs.build().unwrap())
        .build()
        .unwrap();
    dns.sdk()
        .change_resource_record_sets()
        .hosted_zone_id(zone.as_str())
        .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
        .send()
        .await
        .unwrap();
}

/// The zone's VPC associations as `(vpc id, region)`, duplicates kept.
async fn raw_vpcs(dns: &Dns, zone: &ZoneId) -> Vec<(String, String)> {
    let out = dns
        .sdk()
        .get_hosted_zone()
        .id(zone.as_str())
        .send()
        .await
        .unwrap();
    let mut vpcs: Vec<_> = out
        .vpcs()
        .iter()
        .map(|v| {
            let id = v.vpc_id().unwrap_or_default().to_string();
            let region = v.vpc_region().map(|r| r.as_str()).unwrap_or_default();
            (id, region.to_string())
        })
        .collect();
    vpcs.sort();
    vpcs
}

#[tokio::test]
async fn finds_the_private_zone_by_name_only() {
    let _s = session().await;
    let (dns, ec2) = clients().await;
    let vpc_a = vpc(&ec2, "10.42.0.0/16").await;
    // A public namesake (split-horizon DNS is common) and another private zone must be ignored.
    create_zone(&dns, ZONE, None).await;
    let private = create_zone(&dns, ZONE, Some(&vpc_a)).await;
    create_zone(&dns, "other.internal", Some(&vpc_a)).await;

    assert_eq!(dns.find_private_zone(ZONE).await.unwrap(), private);
    // Route53 spells zone names with a trailing dot and lowercase; configs may not.
    assert_eq!(
        dns.find_private_zone("DBCTL.Internal.").await.unwrap(),
        private
    );

    create_zone(&dns, "public.example", None).await;
    let err = dns.find_private_zone("public.example").await.unwrap_err();
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("only a public hosted zone"),
        "{err}"
    );

    // Two private zones of one name (for different VPCs) are ambiguous: refuse to guess.
    let vpc_b = vpc(&ec2, "10.43.0.0/16").await;
    let second = create_zone(&dns, ZONE, Some(&vpc_b)).await;
    let err = dns.find_private_zone(ZONE).await.unwrap_err();
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(
        text.contains(private.as_str()) && text.contains(second.as_str()),
        "{text}"
    );
}

#[tokio::test]
async fn missing_zone_is_a_clear_permanent_error() {
    let _s = session().await;
    let (dns, ec2) = clients().await;
    zone_with_vpc(&dns, &ec2).await;

    let err = dns.find_private_zone("nope.internal").await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.resource(), "private hosted zone nope.internal");
    let text = err.to_string();
    assert!(
        text.contains("nope.internal") && text.contains("does not create hosted zones"),
        "{text}"
    );

    // A zone id that does not exist (deleted by its owners after it was journaled).
    let gone = ZoneId::new("/hostedzone/Z0000000000GONE");
    let upsert = dns
        .upsert_a_records(
            &gone,
            &records(&[("db1.dbctl.internal", &["10.42.0.10"])]),
            60,
        )
        .await
        .unwrap_err();
    let delete = dns
        .delete_records(&gone, &["db1.dbctl.internal".to_string()])
        .await
        .unwrap_err();
    let list = dns.list_records(&gone, "").await.unwrap_err();
    let associate = dns
        .associate_vpc(&gone, "vpc-12345678", REGION)
        .await
        .unwrap_err();
    for err in [upsert, delete, list, associate] {
        assert!(!err.is_transient(), "{err}");
        assert_eq!(err.code(), Some("NoSuchHostedZone"), "{err}");
        assert!(err.resource().contains("Z0000000000GONE"), "{err}");
    }
}

#[tokio::test]
async fn upsert_creates_then_replaces_a_records() {
    let _s = session().await;
    let (dns, ec2) = clients().await;
    let (zone, _) = zone_with_vpc(&dns, &ec2).await;
    let first = records(&[
        ("db1.prod.dbctl.internal", &["10.42.0.10"]),
        (
            "db1-primary.prod.dbctl.internal.",
            &["10.42.16.11", "10.42.0.10"],
        ),
    ]);

    dns.upsert_a_records(&zone, &first, 60).await.unwrap();
    let expected = vec![
        set(
            "db1-primary.prod.dbctl.internal.",
            60,
            &["10.42.0.10", "10.42.16.11"],
        ),
        set("db1.prod.dbctl.internal.", 60, &["10.42.0.10"]),
    ];
    assert_eq!(raw_sets(&dns, &zone, RrType::A).await, expected);

    // A re-run after a lost journal write changes nothing (and does not fail like CREATE would).
    dns.upsert_a_records(&zone, &first, 60).await.unwrap();
    assert_eq!(raw_sets(&dns, &zone, RrType::A).await, expected);

    // New addresses and TTL replace the old ones; nothing is appended.
    let second = records(&[
        ("db1.prod.dbctl.internal", &["10.42.0.20"]),
        ("db1-primary.prod.dbctl.internal", &["10.42.16.11"]),
    ]);
    dns.upsert_a_records(&zone, &second, 30).await.unwrap();
    assert_eq!(
        raw_sets(&dns, &zone, RrType::A).await,
        vec![
            set("db1-primary.prod.dbctl.internal.", 30, &["10.42.16.11"]),
            set("db1.prod.dbctl.internal.", 30, &["10.42.0.20"]),
        ]
    );

    // The layer's own listing agrees, filtered by whole labels.
    dns.upsert_a_records(
        &zone,
        &records(&[("xprod.dbctl.internal", &["10.42.0.99"])]),
        60,
    )
    .await
    .unwrap();
    let listed = dns
        .list_records(&zone, "prod.dbctl.internal.")
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![
            (
                "db1-primary.prod.dbctl.internal".to_string(),
                vec!["10.42.16.11".to_string()]
            ),
            (
                "db1.prod.dbctl.internal".to_string(),
                vec!["10.42.0.20".to_string()]
            ),
        ]
    );
    assert_eq!(dns.list_records(&zone, "").await.unwrap().len(), 3);

    // A bad address fails the whole call before anything is sent.
    let bad = records(&[
        ("db2.prod.dbctl.internal", &["10.42.0.30"]),
        ("db3.prod.dbctl.internal", &["10.42.0.300"]),
    ]);
    let err = dns.upsert_a_records(&zone, &bad, 60).await.unwrap_err();
    assert!(!err.is_transient() && err.to_string().contains("10.42.0.300"));
    assert_eq!(raw_sets(&dns, &zone, RrType::A).await.len(), 3);

    // A name outside the zone is Route53's to reject, and permanently so.
    let outside = records(&[("db1.elsewhere.example", &["10.42.0.10"])]);
    let err = dns.upsert_a_records(&zone, &outside, 60).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.code(), Some("InvalidChangeBatch"));
}

#[tokio::test]
async fn delete_removes_only_existing_a_records_and_is_idempotent() {
    let _s = session().await;
    let (dns, ec2) = clients().await;
    let (zone, _) = zone_with_vpc(&dns, &ec2).await;
    dns.upsert_a_records(
        &zone,
        &records(&[
            ("db1.dbctl.internal", &["10.42.0.10"]),
            ("db1-primary.dbctl.internal", &["10.42.0.10"]),
            ("keep.dbctl.internal", &["10.42.0.50"]),
        ]),
        60,
    )
    .await
    .unwrap();
    // Changed behind dbctl's back: the delete must send these values, not the ones it wrote.
    raw_upsert(
        &dns,
        &zone,
        "db1.dbctl.internal",
        RrType::A,
        300,
        &["10.42.0.11", "10.42.0.12"],
    )
    .await;
    // Another record type on the same name is not this layer's to remove.
    raw_upsert(
        &dns,
        &zone,
        "db1.dbctl.internal",
        RrType::Txt,
        60,
        &["\"owner=network\""],
    )
    .await;

    let names: Vec<String> = [
        "db1.dbctl.internal",
        "DB1-primary.dbctl.internal.",
        "never-created.dbctl.internal",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(dns.delete_records(&zone, &names).await.unwrap(), 2);
    assert_eq!(
        raw_sets(&dns, &zone, RrType::A).await,
        vec![set("keep.dbctl.internal.", 60, &["10.42.0.50"])]
    );
    assert_eq!(raw_sets(&dns, &zone, RrType::Txt).await.len(), 1);

    // Re-run: nothing left to delete, and no error for the missing names.
    assert_eq!(dns.delete_records(&zone, &names).await.unwrap(), 0);
    assert_eq!(raw_sets(&dns, &zone, RrType::A).await.len(), 1);
    assert_eq!(dns.delete_records(&zone, &[]).await.unwrap(), 0);
}

#[tokio::test]
async fn vpc_association_is_idempotent_and_keeps_the_last_vpc() {
    let _s = session().await;
    let (dns, ec2) = clients().await;
    let (zone, team_vpc) = zone_with_vpc(&dns, &ec2).await;
    let run_vpc = vpc(&ec2, "10.50.0.0/16").await;
    let both = {
        let mut v = vec![
            (team_vpc.clone(), REGION.to_string()),
            (run_vpc.clone(), REGION.to_string()),
        ];
        v.sort();
        v
    };

    assert_eq!(
        dns.associate_vpc(&zone, &run_vpc, REGION).await.unwrap(),
        Association::Added
    );
    // moto would list the VPC twice if the association were sent again.
    assert_eq!(
        dns.associate_vpc(&zone, &run_vpc, REGION).await.unwrap(),
        Association::AlreadyPresent
    );
    assert_eq!(raw_vpcs(&dns, &zone).await, both);
    // The team's own VPC counts as already associated too.
    assert_eq!(
        dns.associate_vpc(&zone, &team_vpc, REGION).await.unwrap(),
        Association::AlreadyPresent
    );

    assert_eq!(
        dns.disassociate_vpc(&zone, &run_vpc, REGION).await.unwrap(),
        Disassociation::Removed
    );
    assert_eq!(
        raw_vpcs(&dns, &zone).await,
        vec![(team_vpc.clone(), REGION.to_string())]
    );
    // moto would refuse this call with LastVPCAssociation if it were sent.
    assert_eq!(
        dns.disassociate_vpc(&zone, &run_vpc, REGION).await.unwrap(),
        Disassociation::NotAssociated
    );

    // The last VPC stays (Route53 cannot remove it), reported rather than failed.
    assert_eq!(
        dns.disassociate_vpc(&zone, &team_vpc, REGION)
            .await
            .unwrap(),
        Disassociation::KeptLastVpc
    );
    assert_eq!(
        raw_vpcs(&dns, &zone).await,
        vec![(team_vpc, REGION.to_string())]
    );
}
