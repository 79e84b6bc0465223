//! Tags: how dbctl marks what it created, and how it finds it again without the journal.
//!
//! Every create call carries the full tag set in `TagSpecifications`, so a resource is never
//! visible untagged (a crash between "create" and "tag" would otherwise leak it). Lookups use
//! `dbctl:run` + `dbctl:step`: that pair names exactly one logical resource of a run.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};

pub const TAG_MANAGED: &str = "dbctl:managed";
pub const TAG_RUN: &str = "dbctl:run";
pub const TAG_PROJECT: &str = "dbctl:project";
pub const TAG_INSTANCE: &str = "dbctl:instance";
pub const TAG_STEP: &str = "dbctl:step";
pub const TAG_GENERATION: &str = "dbctl:generation";
/// Which dbctl state directory (host + directory of the journal) made the resource, so `gc`
/// sweeps only its own leaks in an account other installations share.
pub const TAG_OWNER: &str = "dbctl:owner";
/// When the instance's `--ttl` runs out (RFC 3339, UTC), so account-wide cleanup tools can see it.
pub const TAG_EXPIRES_AT: &str = "dbctl:expires-at";

/// Identifies what a resource belongs to; every create call tags with all of these plus `step`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunTags {
    /// The saga run; `sweep_run` deletes everything carrying it.
    pub run_id: String,
    pub project: String,
    /// The dbctl instance (PostgreSQL server) name, used in `Name` tags and resource names.
    pub instance: String,
    /// Bumped when an instance is rebuilt, so old and new resources can be told apart.
    pub generation: u32,
    /// The user's `--tag`s and `dbctl:expires-at`: put on every resource beside dbctl's own.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl RunTags {
    /// The full tag list for a resource created by `step`, `Name` included.
    pub fn tags_for(&self, step: &str) -> Vec<Tag> {
        let pairs = [
            (TAG_MANAGED, "true".to_string()),
            (TAG_RUN, self.run_id.clone()),
            (TAG_PROJECT, self.project.clone()),
            (TAG_INSTANCE, self.instance.clone()),
            (TAG_STEP, step.to_string()),
            (TAG_GENERATION, self.generation.to_string()),
            ("Name", self.name_for(step)),
        ];
        let own: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        // A user tag never replaces one of dbctl's (validation reserves `dbctl:`; `Name` is ours).
        let extra = self
            .extra
            .iter()
            .filter(|(k, _)| !own.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.clone()));
        pairs
            .into_iter()
            .chain(extra)
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect()
    }

    /// `dbctl-<instance>-<step>`: what the console shows in the Name column.
    pub fn name_for(&self, step: &str) -> String {
        format!("dbctl-{}-{}", self.instance, step)
    }

    /// A `TagSpecifications` entry for `kind`, to pass on the create call itself.
    pub(crate) fn spec(&self, kind: ResourceType, step: &str) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(self.tags_for(step)))
            .build()
    }

    /// Filters matching resources of this run created by `step` (used before every create and
    /// by `delete_*` when the journal lost the output).
    pub(crate) fn step_filters(&self, step: &str) -> Vec<Filter> {
        vec![
            tag_filter(TAG_RUN, &self.run_id),
            tag_filter(TAG_STEP, step),
        ]
    }

    /// A short human label for error messages: `<what> for step <step>`.
    pub(crate) fn label(&self, what: &str, step: &str) -> String {
        format!("{what} for step {step} of run {}", self.run_id)
    }
}

/// `tag:<key>=<value>` filter.
pub(crate) fn tag_filter(key: &str, value: &str) -> Filter {
    filter(&format!("tag:{key}"), &[value])
}

/// A Describe* filter with one or more accepted values.
pub(crate) fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Reads one tag's value from a resource's tag list.
pub(crate) fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_carry_run_step_and_name() {
        let t = RunTags {
            run_id: "r1".into(),
            project: "p".into(),
            instance: "db1".into(),
            generation: 3,
            extra: [
                ("team".to_string(), "payments".to_string()),
                ("Name".to_string(), "mine".to_string()),
                (
                    TAG_EXPIRES_AT.to_string(),
                    "2026-12-02T16:00:00Z".to_string(),
                ),
            ]
            .into(),
        };
        let tags = t.tags_for("network");
        assert_eq!(tag_value(&tags, "team"), Some("payments"));
        assert_eq!(
            tag_value(&tags, TAG_EXPIRES_AT),
            Some("2026-12-02T16:00:00Z")
        );
        assert_eq!(tags.iter().filter(|t| t.key() == Some("Name")).count(), 1);
        assert_eq!(tag_value(&tags, TAG_RUN), Some("r1"));
        assert_eq!(tag_value(&tags, TAG_STEP), Some("network"));
        assert_eq!(tag_value(&tags, TAG_GENERATION), Some("3"));
        assert_eq!(tag_value(&tags, TAG_MANAGED), Some("true"));
        assert_eq!(tag_value(&tags, "Name"), Some("dbctl-db1-network"));
    }
}
