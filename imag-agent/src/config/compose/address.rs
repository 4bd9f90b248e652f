//! Addresses for services that do not name one (`networks.<net>.ipv4_address`).
//!
//! Each service has a *home*: an address of the subnet picked by a hash of its name (FNV-1a,
//! fixed here so that no compiler or library update moves anything), and behind it the
//! addresses that follow (wrapping around). Assignment goes in rounds: in round `i` every
//! service still without an address proposes the `i`-th address of its sequence; a proposal of
//! a free address succeeds, and when several services propose the same one, the name that sorts
//! first gets it. Addresses named in the file, the gateway and the subnet's network and
//! broadcast addresses are never free.
//!
//! What this guarantees, precisely:
//! - The same file (same names, same subnet, same fixed addresses) always yields the same
//!   addresses: nothing depends on the order of the services in the file.
//! - A service that got its home address (round 0) keeps it when services are added, unless an
//!   added service has the same home and a name that sorts first, or is given that address
//!   explicitly. No scheme can do better from the file alone: when two names share a home, one
//!   of them must lose, whichever file came first.
//! - A service that lost its home (to a fixed address or to another name with the same home)
//!   may move when services are added. `validate` warns about each such service, so that the
//!   operator can pin it with `ipv4_address`.
//!
//! With a /24 and 20 services, a new service shares a home with one of them with a probability
//! of about 8 %, and half of those times it sorts first.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

/// Where a service's address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assigned {
    /// Its home: stable as described in the module documentation.
    Home(Ipv4Addr),
    /// Not its home: may move when services are added.
    Displaced(Ipv4Addr),
}

impl Assigned {
    pub fn address(self) -> Ipv4Addr {
        match self {
            Assigned::Home(a) | Assigned::Displaced(a) => a,
        }
    }
}

/// The addresses a service may be given: the subnet's hosts but the gateway.
pub fn usable(subnet: Ipv4Net, gateway: Ipv4Addr) -> Vec<Ipv4Addr> {
    subnet.hosts().filter(|a| *a != gateway).collect()
}

/// Assigns an address to each of `names`; `None` for those that found no free address.
pub fn assign(
    names: &[&str],
    usable: &[Ipv4Addr],
    fixed: &HashSet<Ipv4Addr>,
) -> BTreeMap<String, Option<Assigned>> {
    let mut out: BTreeMap<String, Option<Assigned>> =
        names.iter().map(|n| (n.to_string(), None)).collect();
    if usable.is_empty() {
        return out;
    }
    let mut taken: HashSet<Ipv4Addr> = fixed.clone();
    let mut waiting: BTreeSet<&str> = names.iter().copied().collect();
    for round in 0..usable.len() {
        if waiting.is_empty() {
            break;
        }
        // BTreeMap and BTreeSet: the first proposer of an address is the name that sorts first.
        let mut proposals: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for name in &waiting {
            let slot = (home(name, usable.len()) + round) % usable.len();
            let addr = usable[slot];
            if !taken.contains(&addr) {
                proposals.entry(addr).or_insert(name);
            }
        }
        for (addr, name) in proposals {
            taken.insert(addr);
            waiting.remove(name);
            let assigned = if round == 0 {
                Assigned::Home(addr)
            } else {
                Assigned::Displaced(addr)
            };
            out.insert(name.to_string(), Some(assigned));
        }
    }
    out
}

/// The index of a name's home among `len` usable addresses.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the remainder is below `len`, itself a usize"
)]
fn home(name: &str, len: usize) -> usize {
    // FNV-1a, 64 bits: written out so that it can never change under us.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % len as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Vec<Ipv4Addr> {
        usable("10.5.0.0/24".parse().unwrap(), Ipv4Addr::new(10, 5, 0, 1))
    }

    #[test]
    fn the_usable_range_leaves_out_the_gateway() {
        let u = net();
        assert_eq!(u.len(), 253);
        assert!(!u.contains(&Ipv4Addr::new(10, 5, 0, 1)));
        assert_eq!(u[0], Ipv4Addr::new(10, 5, 0, 2));
    }

    #[test]
    fn the_same_names_give_the_same_addresses_in_any_order() {
        let a = assign(&["web", "db", "cache"], &net(), &HashSet::new());
        let b = assign(&["cache", "web", "db"], &net(), &HashSet::new());
        assert_eq!(a, b);
        // Pinned: a change of the hash would move every deployed service.
        assert_eq!(
            home("web", 253),
            usize::try_from(0x5ea0_e119_4872_1ef1_u64 % 253).unwrap()
        );
    }

    #[test]
    fn adding_services_moves_no_service_at_its_home() {
        let names: Vec<String> = (0..120).map(|i| format!("svc-{i}")).collect();
        let mut moves_allowed = 0;
        for n in 1..names.len() {
            let before: Vec<&str> = names[..n].iter().map(String::as_str).collect();
            let mut after = before.clone();
            after.push(&names[n]);
            let old = assign(&before, &net(), &HashSet::new());
            let new = assign(&after, &net(), &HashSet::new());
            let added_home = new[&names[n]];
            for (name, was) in &old {
                let Some(Assigned::Home(addr)) = was else {
                    continue;
                };
                if new[name].map(Assigned::address) != Some(*addr) {
                    // The one documented exception: the new name has the same home and sorts
                    // first.
                    assert_eq!(added_home, Some(Assigned::Home(*addr)), "{name} moved");
                    assert!(names[n].as_str() < name.as_str());
                    moves_allowed += 1;
                }
            }
        }
        // Most additions move nothing at all.
        assert!(moves_allowed < 20, "{moves_allowed}");
    }

    #[test]
    fn collisions_fixed_addresses_and_a_full_network() {
        let u = net();
        let web = u[home("web", u.len())];
        let got = assign(&["web"], &u, &HashSet::from([web]));
        assert!(matches!(got["web"], Some(Assigned::Displaced(a)) if a != web));
        let tiny = usable("10.5.0.0/30".parse().unwrap(), Ipv4Addr::new(10, 5, 0, 1));
        assert_eq!(tiny.len(), 1);
        let got = assign(&["a", "b"], &tiny, &HashSet::new());
        assert_eq!(got.values().filter(|a| a.is_none()).count(), 1);
    }
}
