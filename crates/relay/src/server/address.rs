//! Connections per source address: one address (an IPv6 /64, the usual single-customer
//! allocation) may hold only its share of the relay's connection slots.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key an address is counted under: IPv4 as is (IPv4-mapped IPv6 included), IPv6 by /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Live connections per address key.
#[derive(Debug, Clone)]
pub(super) struct PerAddress {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's slot; released on drop.
#[derive(Debug)]
pub(super) struct AddressSlot {
    key: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for a connection from `ip`, or `None` when the address holds `max` already.
    pub(super) fn try_acquire(&self, ip: IpAddr) -> Option<AddressSlot> {
        let key = key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            key,
            counts: Arc::clone(&self.counts),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: OPS-CONN-2
    #[test]
    fn an_address_holds_at_most_its_share_and_ipv6_counts_by_slash_64() {
        let p = PerAddress::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let s1 = p.try_acquire(a).unwrap();
        let _s2 = p.try_acquire(a).unwrap();
        assert!(p.try_acquire(a).is_none());
        // The same address as IPv4-mapped IPv6 is the same address.
        assert!(p.try_acquire("::ffff:192.0.2.1".parse().unwrap()).is_none());
        assert!(p.try_acquire("192.0.2.2".parse().unwrap()).is_some());
        drop(s1);
        assert!(p.try_acquire(a).is_some());
        // Two addresses of one /64 share a budget; another /64 has its own.
        let _x = p.try_acquire("2001:db8:0:1::1".parse().unwrap()).unwrap();
        let _y = p
            .try_acquire("2001:db8:0:1::ffff".parse().unwrap())
            .unwrap();
        assert!(
            p.try_acquire("2001:db8:0:1:1::7".parse().unwrap())
                .is_none()
        );
        assert!(p.try_acquire("2001:db8:0:2::1".parse().unwrap()).is_some());
        assert!(p.counts.lock().unwrap().len() <= 4);
    }
}
