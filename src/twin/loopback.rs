//! Public addresses: each instance with a public IP gets its own loopback address, 127.B.x.y,
//! where QEMU forwards the instance's open ports. The address moto invented is only ever
//! replaced, never connected to: nothing outside 127.0.0.0/8 is reachable from this machine.
//!
//! Each twin process takes a block of its own, 127.B.0.0/16 (B from 77), and holds it with
//! an `flock` for as long as it lives: two twins on one machine (two test binaries at once,
//! a test beside `scripts/ec2-twin start`) never hand out the same address, where the second
//! one's QEMU could not bind its forwards.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

/// The blocks a twin may take: 127.77.0.0/16 … 127.126.0.0/16.
const BLOCKS: std::ops::RangeInclusive<u8> = 77..=126;

/// This twin's address block, held until the process ends (the lock dies with it).
pub struct Block {
    pub octet: u8,
    _lock: File,
}

impl Block {
    /// The first block no other live twin holds.
    pub fn take() -> std::io::Result<Block> {
        for octet in BLOCKS {
            let path = std::env::temp_dir().join(format!("dbctl-ec2-twin-127.{octet}.lock"));
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            // SAFETY: flock(2) on a descriptor this function owns; released when it closes.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Block { octet, _lock: lock });
            }
        }
        Err(std::io::Error::other(format!(
            "every loopback block 127.{}-{}.0.0/16 is held by another EC2 twin",
            BLOCKS.start(),
            BLOCKS.end()
        )))
    }

    /// The `n`-th address handed out (n from 0): 127.B.0.2, 127.B.0.3, … 127.B.0.251,
    /// 127.B.1.2, … (the .0, .1 and high addresses of each /24 are left alone).
    pub fn address(&self, n: u32) -> String {
        address(self.octet, n)
    }
}

fn address(octet: u8, n: u32) -> String {
    format!("127.{octet}.{}.{}", n / 250, n % 250 + 2)
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
        assert_eq!(address(77, 0), "127.77.0.2");
        assert_eq!(address(77, 249), "127.77.0.251");
        assert_eq!(address(78, 250), "127.78.1.2");
    }

    #[test]
    fn two_twins_hold_two_blocks() {
        let a = Block::take().unwrap();
        let b = Block::take().unwrap();
        assert_ne!(a.octet, b.octet);
        assert_ne!(a.address(0), b.address(0));
        drop(a);
        // A block is free again once its twin is gone; b's is still held.
        let c = Block::take().unwrap();
        assert_ne!(c.octet, b.octet);
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
