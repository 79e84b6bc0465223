//! EC2's query protocol on the way in: a form-encoded POST body (`Action=RunInstances&...`),
//! list members numbered from 1 (`InstanceId.1=i-…&InstanceId.2=…`).

/// One request's parameters, in the order they came.
#[derive(Debug, Default, Clone)]
pub struct Query {
    params: Vec<(String, String)>,
}

impl Query {
    /// Parses a form-encoded body; anything else (S3, moto's own API) parses to no parameters.
    pub fn parse(body: &[u8]) -> Query {
        Query {
            params: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `Action`, the operation the request names.
    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }

    /// The members of list `name` (`name.1`, `name.2`, …) in their numbered order.
    pub fn list(&self, name: &str) -> Vec<&str> {
        let prefix = format!("{name}.");
        let mut members: Vec<(u32, &str)> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                let n = k.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, v.as_str()))
            })
            .collect();
        members.sort_by_key(|(n, _)| *n);
        members.into_iter().map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_values_and_numbered_lists() {
        let q = Query::parse(
            b"Action=TerminateInstances&InstanceId.2=i-b&InstanceId.1=i-a&UserData=aGk%3D",
        );
        assert_eq!(q.action(), Some("TerminateInstances"));
        assert_eq!(q.list("InstanceId"), vec!["i-a", "i-b"]);
        assert_eq!(q.get("UserData"), Some("aGk="));
        assert_eq!(Query::parse(b"").action(), None);
    }
}
