//! `depends_on` across hosts: every dependency names another configured host, and no host
//! depends on itself through a chain (a cycle could never finish waking). `wakes_with` likewise
//! names other configured hosts, which must accept the host's traffic (`allow_from`): a host
//! woken for one that cannot reach it would only hold memory. Cycles are fine there (nothing
//! waits for anything).

use std::collections::HashMap;

use super::{HostConfig, field::Report, raw, span, values::HostName};

/// The valid hosts by name, and every name the file gives (valid or not), which both checks
/// need to tell "not configured" from "configured but invalid".
fn names<'a>(
    raw: &'a raw::Config,
    hosts: &'a [HostConfig],
) -> (HashMap<&'a str, &'a HostConfig>, Vec<&'a str>) {
    let known = hosts.iter().map(|h| (h.name.as_str(), h)).collect();
    let all_names = raw
        .host
        .iter()
        .map(|h| h.get_ref().name.get_ref().as_str())
        .collect();
    (known, all_names)
}

/// Reports unknown, self and circular dependencies at the entry that introduces them.
pub(super) fn check(raw: &raw::Config, hosts: &[HostConfig], report: &mut Report<'_>) {
    let (known, all_names) = names(raw, hosts);
    for raw_host in &raw.host {
        let raw_host = raw_host.get_ref();
        let name = raw_host.name.get_ref().as_str();
        let Some(entries) = &raw_host.depends_on else {
            continue;
        };
        let Some(host) = known.get(name) else {
            continue; // its own problems are reported already
        };
        for (entry, dep) in entries.iter().zip(&host.depends_on) {
            if dep.host == name {
                report(
                    span(entry),
                    format!("host {name:?} depends on itself: remove it from depends_on"),
                );
            } else if !all_names.contains(&dep.host.as_str()) {
                report(
                    span(entry),
                    format!(
                        "host {name:?} depends on {:?}, which is not a configured host",
                        dep.host
                    ),
                );
            } else if let Some(path) = cycle_through(&known, &dep.host, name) {
                report(
                    span(entry),
                    format!(
                        "depends_on makes a cycle: {name} → {}: no host of it could ever start \
                         first",
                        path.join(" → ")
                    ),
                );
            }
        }
    }
}

/// Reports `wakes_with` entries that name no configured host, the host itself, a host named
/// twice, or a host whose `allow_from` refuses this one's traffic, at the entry.
pub(super) fn check_wakes_with(raw: &raw::Config, hosts: &[HostConfig], report: &mut Report<'_>) {
    let (known, all_names) = names(raw, hosts);
    for raw_host in &raw.host {
        let raw_host = raw_host.get_ref();
        let name = raw_host.name.get_ref().as_str();
        let Some(entries) = &raw_host.wakes_with else {
            continue;
        };
        let mut seen = Vec::new();
        for entry in entries {
            let other = entry.get_ref().as_str();
            if other.parse::<HostName>().is_err() {
                continue; // reported with the host
            }
            if other == name {
                report(
                    span(entry),
                    format!("host {name:?} wakes with itself: remove it from wakes_with"),
                );
            } else if !all_names.contains(&other) {
                report(
                    span(entry),
                    format!(
                        "host {name:?} wakes with {other:?}, which is not a configured host: \
                         name one of {}",
                        all_names.join(", ")
                    ),
                );
            } else if seen.contains(&other) {
                report(
                    span(entry),
                    format!("host {name:?} names {other:?} twice in wakes_with"),
                );
            } else if let (Some(me), Some(target)) = (known.get(name), known.get(other))
                && let Some(allowed) = &target.allow_from
                && !allowed.iter().any(|p| p.contains(&me.address))
            {
                report(
                    span(entry),
                    format!(
                        "host {name:?} wakes with {other:?}, whose allow_from refuses {name:?}'s \
                         address {}: add {name:?} to {other:?}'s allow_from or remove it from \
                         wakes_with",
                        me.address
                    ),
                );
            }
            seen.push(other);
        }
    }
}

/// The chain of dependencies from `from` back to `target`, if there is one.
fn cycle_through(
    hosts: &HashMap<&str, &HostConfig>,
    from: &str,
    target: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(from.to_string(), vec![from.to_string()])];
    let mut seen = std::collections::HashSet::new();
    while let Some((at, path)) = stack.pop() {
        if at == target {
            return Some(path);
        }
        if !seen.insert(at.clone()) {
            continue;
        }
        for dep in hosts.get(at.as_str()).map_or(&[][..], |h| &h.depends_on) {
            let mut next = path.clone();
            next.push(dep.host.clone());
            stack.push((dep.host.clone(), next));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use crate::config::{Config, tests::problems};

    fn config(hosts: &[(&str, &str)]) -> String {
        let mut text = String::from("[network]\nsubnet = \"10.9.0.0/24\"\n");
        for (i, (name, deps)) in hosts.iter().enumerate() {
            write!(
                text,
                "\n[[host]]\nname = \"{name}\"\naddress = \"10.9.0.{}\"\nimage = \"i\"\ndepends_on = [{deps}]\n",
                10 + i
            )
            .unwrap();
        }
        text
    }

    #[test]
    fn dependencies_parse_with_their_condition() {
        let c = Config::parse(
            &config(&[("web", "\"api\""), ("api", "\"db:healthy\""), ("db", "")]),
            "t",
        )
        .unwrap();
        let deps = |h: &str| c.host(h).unwrap().depends_on.clone();
        assert_eq!(deps("web")[0].host, "api");
        assert!(!deps("web")[0].healthy);
        assert!(deps("api")[0].healthy);
        assert!(deps("db").is_empty());
    }

    #[test]
    fn unknown_self_and_circular_dependencies_are_reported_where_written() {
        let found = problems(&config(&[("web", "\"nope\", \"web\"")]));
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (8, 15));
        assert!(
            found[0]
                .2
                .contains("\"nope\", which is not a configured host")
        );
        assert!(found[1].2.contains("depends on itself"));
        let found = problems(&config(&[("a", "\"b\""), ("b", "\"c\""), ("c", "\"a\"")]));
        assert_eq!(found.len(), 3, "every host of the cycle: {found:?}");
        assert!(found[0].2.contains("a → b → c → a"), "{found:?}");
        let found = problems(&config(&[("a", "\"b:sometime\""), ("b", "")]));
        assert!(
            found[0].2.contains("\"b:sometime\" is not a host name"),
            "{found:?}"
        );
    }

    fn with_wakes(hosts: &[(&str, &str)], extra: &str) -> String {
        let mut text = String::from("[network]\nsubnet = \"10.9.0.0/24\"\n");
        for (i, (name, with)) in hosts.iter().enumerate() {
            write!(
                text,
                "\n[[host]]\nname = \"{name}\"\naddress = \"10.9.0.{}\"\nimage = \"i\"\nwakes_with = [{with}]\n{extra}",
                10 + i
            )
            .unwrap();
        }
        text
    }

    #[test]
    fn wakes_with_names_other_hosts_and_may_form_cycles() {
        let c = Config::parse(
            &with_wakes(
                &[("web", "\"api\", \"db\""), ("api", "\"web\""), ("db", "")],
                "",
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.host("web").unwrap().wakes_with, ["api", "db"]);
        assert_eq!(c.host("api").unwrap().wakes_with, ["web"]);
        assert!(c.host("db").unwrap().wakes_with.is_empty());
    }

    #[test]
    fn bad_wakes_with_entries_are_reported_where_written() {
        let found = problems(&with_wakes(
            &[
                ("web", "\"nope\", \"web\", \"db\", \"db\", \"Bad Name\""),
                ("db", ""),
            ],
            "",
        ));
        assert_eq!(found.len(), 4, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (8, 15), "{found:?}");
        assert!(
            found[0]
                .2
                .contains("wakes with \"nope\", which is not a configured host"),
            "{found:?}"
        );
        assert!(found[1].2.contains("wakes with itself"), "{found:?}");
        assert!(found[2].2.contains("names \"db\" twice"), "{found:?}");
        assert!(
            found[3].2.contains("\"Bad Name\" must be letters"),
            "{found:?}"
        );
        let found = problems(&with_wakes(
            &[("web", "\"db\""), ("db", "")],
            "allow_from = [\"10.9.0.99\"]\n",
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].2.contains("whose allow_from refuses"), "{found:?}");
    }
}
