//! EC2's query protocol on the way out: reading the facts the twin needs from moto's XML
//! responses, and replacing one element's text in them.

use xmlparser::{ElementEnd, Token, Tokenizer};

/// What the twin needs to know of one instance in a RunInstances or DescribeInstances response.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub image_id: Option<String>,
    pub private_ip: Option<String>,
    /// The public address moto invented (never connected to: the twin replaces it).
    pub public_ip: Option<String>,
    pub vpc_id: Option<String>,
    pub state: Option<String>,
    pub instance_type: Option<String>,
    /// `placement/availabilityZone`.
    pub zone: Option<String>,
}

/// Every instance of an `instancesSet` (RunInstances: one set; DescribeInstances: one per
/// reservation), reading only each instance's own fields, not those of its nested interfaces.
pub fn instances(xml: &str) -> Vec<InstanceFacts> {
    let mut out = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    // Depth of the open instance `item` (its position in `stack`) and what was read of it.
    let mut open: Option<(usize, InstanceFacts)> = None;
    for token in Tokenizer::from(xml).flatten() {
        match token {
            Token::ElementStart { local, .. } => {
                if local.as_str() == "item"
                    && open.is_none()
                    && stack.last().is_some_and(|t| t == "instancesSet")
                {
                    open = Some((stack.len(), InstanceFacts::default()));
                }
                stack.push(local.as_str().to_string());
            }
            Token::ElementEnd { end, .. } => {
                let closes = matches!(end, ElementEnd::Close(..) | ElementEnd::Empty);
                if closes {
                    stack.pop();
                    if let Some((_, facts)) = open.take_if(|(d, _)| *d == stack.len()) {
                        out.push(facts);
                    }
                }
            }
            Token::Text { text } => {
                let Some((depth, facts)) = open.as_mut() else {
                    continue;
                };
                let value = text.as_str().trim().to_string();
                // A direct child of the instance item, or its instanceState's name.
                match (stack.len() - *depth, stack.last().map(String::as_str)) {
                    (2, Some("instanceId")) => facts.instance_id = value,
                    (2, Some("imageId")) => facts.image_id = Some(value),
                    (2, Some("privateIpAddress")) => facts.private_ip = Some(value),
                    (2, Some("ipAddress")) => facts.public_ip = Some(value),
                    (2, Some("vpcId")) => facts.vpc_id = Some(value),
                    (2, Some("instanceType")) => facts.instance_type = Some(value),
                    (3, Some("availabilityZone")) if stack[stack.len() - 2] == "placement" => {
                        facts.zone = Some(value)
                    }
                    (3, Some("name")) if stack[stack.len() - 2] == "instanceState" => {
                        facts.state = Some(value)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// The text of the first element named `tag` anywhere in `xml`.
pub fn first_text(xml: &str, tag: &str) -> Option<String> {
    let (start, end) = text_span(xml, tag)?;
    Some(xml[start..end].to_string())
}

/// `xml` with the text of the first element `tag` replaced by `text` (an empty element
/// `<tag/>` gets the text too); `None` when there is no such element.
pub fn replace_text(xml: &str, tag: &str, text: &str) -> Option<String> {
    if let Some((start, end)) = text_span(xml, tag) {
        return Some(format!("{}{text}{}", &xml[..start], &xml[end..]));
    }
    let empty = format!("<{tag}/>");
    let at = xml.find(&empty)?;
    Some(format!(
        "{}<{tag}>{text}</{tag}>{}",
        &xml[..at],
        &xml[at + empty.len()..]
    ))
}

fn text_span(xml: &str, tag: &str) -> Option<(usize, usize)> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like moto's RunInstances response: the interface's own addresses come first.
    const RUN: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<RunInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><instancesSet><item><networkInterfaceSet><item><association><publicIp>54.1.2.3</publicIp></association><privateIpAddress>10.1.2.3</privateIpAddress><vpcId>vpc-1</vpcId></item></networkInterfaceSet><instanceId>i-abc</instanceId><imageId>ami-1</imageId><instanceState><code>0</code><name>pending</name></instanceState><vpcId>vpc-1</vpcId><privateIpAddress>10.1.2.3</privateIpAddress><ipAddress>54.1.2.3</ipAddress><instanceType>t3.micro</instanceType><placement><availabilityZone>us-east-1a</availabilityZone><tenancy>default</tenancy></placement></item><item><instanceId>i-def</instanceId><groupSet/></item></instancesSet></RunInstancesResponse>"#;

    #[test]
    fn reads_each_instances_own_fields() {
        let all = instances(RUN);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(
            all[0],
            InstanceFacts {
                instance_id: "i-abc".into(),
                image_id: Some("ami-1".into()),
                private_ip: Some("10.1.2.3".into()),
                public_ip: Some("54.1.2.3".into()),
                vpc_id: Some("vpc-1".into()),
                state: Some("pending".into()),
                instance_type: Some("t3.micro".into()),
                zone: Some("us-east-1a".into()),
            }
        );
        assert_eq!(all[1].instance_id, "i-def");
        assert_eq!(all[1].public_ip, None);
    }

    #[test]
    fn replaces_element_text_full_or_empty() {
        let x = "<a><output>stub</output></a>";
        assert_eq!(
            replace_text(x, "output", "b64").unwrap(),
            "<a><output>b64</output></a>"
        );
        assert_eq!(
            replace_text("<a><output/></a>", "output", "").unwrap(),
            "<a><output></output></a>"
        );
        assert_eq!(first_text(x, "output").as_deref(), Some("stub"));
        assert!(replace_text(x, "nope", "").is_none());
    }
}
