//! Public addresses: each instance with a public IP gets its own loopback address, 127.77.x.y,
//! where QEMU forwards the instance's open ports. The address moto invented is only ever
//! replaced, never connected to: nothing outside 127.0.0.0/8 is reachable from this machine.

use std::collections::BTreeMap;

/// The `n`-th loopback address handed out (n from 0): 127.77.0.2, 127.77.0.3, … 127.77.0.251,
/// 127.77.1.2, … (the .0, .1 and high addresses of each /24 are left alone).
pub fn address(n: u32) -> String {
    format!("127.77.{}.{}", n / 250, n % 250 + 2)
}

/// moto's public address → the instance's loopback address, for rewriting responses.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rewrites {
    map: BTreeMap<String, String>,
}

impl Rewrites {
    pub fn insert(&mut self, moto_ip: &str, loopback: &str) {
        self.map.insert(moto_ip.to_string(), loopback.to_string());
    }

    pub fn get(&self, moto_ip: &str) -> Option<&str> {
        self.map.get(moto_ip).map(String::as_str)
    }

    /// `xml` with every element whose whole text is one of moto's public addresses carrying
    /// the loopback address instead (`ipAddress`, `publicIp`, association fields: any element).
    pub fn apply(&self, xml: &str) -> String {
        let mut out = xml.to_string();
        for (moto, loopback) in &self.map {
            out = out.replace(&format!(">{moto}<"), &format!(">{loopback}<"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_and_distinct() {
        assert_eq!(address(0), "127.77.0.2");
        assert_eq!(address(249), "127.77.0.251");
        assert_eq!(address(250), "127.77.1.2");
    }

    #[test]
    fn every_element_carrying_the_address_is_rewritten_and_nothing_else() {
        let mut r = Rewrites::default();
        r.insert("54.1.2.3", "127.77.0.2");
        let xml = "<ipAddress>54.1.2.3</ipAddress><publicIp>54.1.2.3</publicIp>\
                   <dnsName>ec2-54-1-2-3.compute-1.amazonaws.com</dnsName><x>54.1.2.33</x>";
        assert_eq!(
            r.apply(xml),
            "<ipAddress>127.77.0.2</ipAddress><publicIp>127.77.0.2</publicIp>\
             <dnsName>ec2-54-1-2-3.compute-1.amazonaws.com</dnsName><x>54.1.2.33</x>"
        );
    }
}
