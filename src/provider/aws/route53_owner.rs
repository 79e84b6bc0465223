//! Who published a Route53 name: a TXT record beside each A record dbctl writes, naming the
//! dbctl installation (the `dbctl:owner` id EC2 resources are tagged with) and the run that
//! made it: the registry external-dns keeps the same way. Route53 records carry no tags, and
//! the zone is the network team's, full of names that are not dbctl's; this is how `gc` finds
//! the names a run left once its journal cannot say (a crash between the change and the journal
//! write, a deleted journal) and removes those and nothing else.
//!
//! Order, so a crash never leaves a name nobody can attribute: the TXT record is written
//! before the A record and deleted after it.

use aws_sdk_route53::types::{ChangeAction, ResourceRecord, ResourceRecordSet, RrType};

use super::error::AwsError;
use super::route53::{Dns, ZoneId, built, normalize};

const OWNER: &str = "dbctl-owner=";
const RUN: &str = "dbctl-run=";

/// The installation and run a name belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub owner: String,
    pub run_id: String,
}

impl Ownership {
    /// The TXT value (Route53 wants it quoted).
    pub fn txt(&self) -> String {
        format!("\"{OWNER}{} {RUN}{}\"", self.owner, self.run_id)
    }

    /// The ownership a TXT value states, if it is one of dbctl's.
    pub fn parse(value: &str) -> Option<Ownership> {
        let mut owner = None;
        let mut run_id = None;
        for part in value.trim().trim_matches('"').split_whitespace() {
            if let Some(o) = part.strip_prefix(OWNER) {
                owner = Some(o.to_string());
            } else if let Some(r) = part.strip_prefix(RUN) {
                run_id = Some(r.to_string());
            }
        }
        Some(Ownership {
            owner: owner?,
            run_id: run_id?,
        })
    }
}

/// A name's ownership TXT set, if it has one of dbctl's.
fn ownership_of(set: &ResourceRecordSet) -> Option<Ownership> {
    if *set.r#type() != RrType::Txt || set.set_identifier().is_some() {
        return None;
    }
    set.resource_records()
        .iter()
        .find_map(|r| Ownership::parse(r.value()))
}

impl Dns {
    /// Writes (UPSERT) the ownership TXT record of every name in `names`, in one batch.
    pub async fn claim(
        &self,
        zone: &ZoneId,
        names: &[String],
        ttl: u32,
        who: &Ownership,
    ) -> Result<(), AwsError> {
        const OP: &str = "ChangeResourceRecordSets";
        let resource = format!("ownership records in hosted zone {zone}");
        let mut changes = Vec::new();
        for name in names {
            let record = built(
                OP,
                &resource,
                ResourceRecord::builder().value(who.txt()).build(),
            )?;
            let set = ResourceRecordSet::builder()
                .name(format!("{}.", normalize(name)))
                .r#type(RrType::Txt)
                .ttl(i64::from(ttl))
                .resource_records(record)
                .build();
            changes.push((ChangeAction::Upsert, built(OP, &resource, set)?));
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.apply(zone, changes, &resource).await
    }

    /// Deletes the ownership TXT records of `names` that exist (a name without one is
    /// skipped), with their current values, in one batch; returns how many.
    pub async fn release(&self, zone: &ZoneId, names: &[String]) -> Result<usize, AwsError> {
        let resource = format!("ownership records in hosted zone {zone}");
        let wanted: Vec<String> = names.iter().map(|n| normalize(n)).collect();
        let changes: Vec<(ChangeAction, ResourceRecordSet)> = self
            .record_sets(zone)
            .await?
            .into_iter()
            .filter(|s| wanted.contains(&normalize(s.name())) && ownership_of(s).is_some())
            .map(|s| (ChangeAction::Delete, s))
            .collect();
        let count = changes.len();
        if count == 0 {
            return Ok(0);
        }
        self.apply(zone, changes, &resource).await?;
        Ok(count)
    }

    /// The names of `zone` that installation `owner` published, with the run that did, sorted.
    pub async fn owned_names(
        &self,
        zone: &ZoneId,
        owner: &str,
    ) -> Result<Vec<(String, String)>, AwsError> {
        let mut found: Vec<(String, String)> = self
            .record_sets(zone)
            .await?
            .iter()
            .filter_map(|s| {
                let who = ownership_of(s)?;
                (who.owner == owner).then(|| (normalize(s.name()), who.run_id))
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_round_trips_and_foreign_text_is_not_ours() {
        let who = Ownership {
            owner: "0123abcd".into(),
            run_id: "run-42".into(),
        };
        assert_eq!(who.txt(), "\"dbctl-owner=0123abcd dbctl-run=run-42\"");
        assert_eq!(Ownership::parse(&who.txt()), Some(who));
        assert_eq!(
            Ownership::parse("\"v=spf1 include:_spf.example.com ~all\""),
            None
        );
        assert_eq!(
            Ownership::parse("\"dbctl-owner=x\""),
            None,
            "no run: not ours"
        );
    }
}
