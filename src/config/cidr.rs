//! Client networks written as CIDR blocks (`127.0.0.0/8`, `::1/128`, or a
//! bare address meaning one host). Invariant: a parsed [`Cidr`] has its
//! host bits cleared, so equality and display are canonical, and an IPv4
//! block also matches the IPv4-mapped IPv6 form of its addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` lies inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u32::from(a).into(), 32, self.prefix) == u32::from(n).into()
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                mask(u128::from(a), 128, self.prefix) == u128::from(n)
            }
            _ => false,
        }
    }

    /// True when every address of the block is a loopback address.
    pub fn is_loopback(&self) -> bool {
        match self.net {
            IpAddr::V4(n) => self.prefix >= 8 && n.octets()[0] == 127,
            IpAddr::V6(n) => self.prefix == 128 && n.is_loopback(),
        }
    }
}

/// `bits` keeps its top `prefix` bits out of `width`.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (width - prefix)) & (u128::MAX >> (128 - width))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not a CIDR block like \"10.0.0.0/8\" or \"::1/128\"");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(bad)?,
            None => width,
        };
        let net = match net {
            IpAddr::V4(n) => IpAddr::V4((mask(u32::from(n).into(), 32, prefix) as u32).into()),
            IpAddr::V6(n) => IpAddr::V6(mask(u128::from(n), 128, prefix).into()),
        };
        Ok(Cidr { net, prefix })
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn membership_follows_the_prefix() {
        let table = [
            ("127.0.0.1/32", "127.0.0.1", true),
            ("127.0.0.1/32", "127.0.0.2", false),
            ("127.0.0.0/8", "127.255.0.9", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("::1/128", "::1", true),
            ("::1/128", "::2", false),
            ("fd00::/8", "fd12:3456::1", true),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "fd00::1", false),
            ("::/0", "10.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
        ];
        for (block, ip, want) in table {
            assert_eq!(
                cidr(block).contains(ip.parse().unwrap()),
                want,
                "{block} {ip}"
            );
        }
    }

    #[test]
    fn host_bits_are_cleared_and_bad_blocks_refused() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("fd00::1/8").to_string(), "fd00::/8");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_blocks_are_recognised() {
        assert!(cidr("127.0.0.0/8").is_loopback());
        assert!(cidr("127.0.0.1/32").is_loopback());
        assert!(cidr("::1/128").is_loopback());
        assert!(!cidr("0.0.0.0/0").is_loopback());
        assert!(!cidr("::/0").is_loopback());
        assert!(!cidr("10.0.0.0/8").is_loopback());
    }
}
