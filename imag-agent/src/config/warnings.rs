//! Settings that are valid but do not do what they seem to: `imag-agent validate` prints them
//! (with line and column) and `attach` logs them, but neither refuses the file.

use std::{ops::Range, time::Duration};

use super::{Config, Problem, ReadyProbe, field::span, raw};

/// The shortest `idle_timeout` that can put a host to sleep: twice the lag the agent allows the
/// datapath's activity stamps behind its own clock (`orchestrator::hosts::sleep_called_off`).
const SHORTEST_USEFUL_IDLE: Duration = Duration::from_nanos(2 * crate::clock::COARSE_CLOCK_LAG_NS);

/// Every warning for a configuration that passed validation; `locate` turns a span into a place.
pub(super) fn warnings(
    raw: &raw::Config,
    config: &Config,
    locate: &dyn Fn(Option<Range<usize>>, String) -> Problem,
) -> Vec<Problem> {
    let mut found = Vec::new();
    for (raw, host) in raw
        .host
        .iter()
        .map(toml::Spanned::get_ref)
        .zip(&config.hosts)
    {
        let name = &host.name;
        let place = |key: &Option<toml::Spanned<String>>| key.as_ref().and_then(span);
        idle_warnings(raw, host, locate, &mut found);
        if let ReadyProbe::Delay(delay) = host.ready
            && delay >= host.wake_timeout
        {
            found.push(locate(
                place(&raw.ready),
                format!(
                    "host {name:?}: ready = \"delay:{}\" is not shorter than wake_timeout {}: \
                     every wake will time out; shorten the delay or raise wake_timeout",
                    human(delay),
                    human(host.wake_timeout)
                ),
            ));
        }
        if config.cluster.is_none()
            && let Some(list) = &raw.nodes
        {
            found.push(locate(
                list.first().and_then(span).or_else(|| span(&raw.name)),
                format!(
                    "host {name:?}: nodes has no effect without a [cluster] section (this agent                      runs alone and serves every host)"
                ),
            ));
        }
        if host.ready_poll >= host.wake_timeout && !matches!(host.ready, ReadyProbe::Running) {
            found.push(locate(
                place(&raw.ready_poll),
                format!(
                    "host {name:?}: ready_poll {} is not shorter than wake_timeout {}: a \
                     service that is not ready at the first try is never probed again",
                    human(host.ready_poll),
                    human(host.wake_timeout)
                ),
            ));
        }
    }
    if let Some(addr) = config.agent.metrics
        && addr.ip().is_unspecified()
    {
        found.push(locate(
            raw.agent
                .as_ref()
                .and_then(|a| a.metrics.as_ref())
                .and_then(span),
            format!(
                "metrics = \"{addr}\" serves /metrics on every interface: whoever reaches this \
                 machine reads the hosts' names, addresses and activity; bind it to 127.0.0.1 or \
                 a management address unless that is meant"
            ),
        ));
    }
    found
}

/// What `idle_timeout` (and the keys that only matter with one) do not do as they seem to.
fn idle_warnings(
    raw: &raw::Host,
    host: &super::HostConfig,
    locate: &dyn Fn(Option<Range<usize>>, String) -> Problem,
    found: &mut Vec<Problem>,
) {
    let name = &host.name;
    let place = |key: &Option<toml::Spanned<String>>| key.as_ref().and_then(span);
    match host.idle_timeout {
        Some(idle) if idle < host.min_warm => found.push(locate(
            place(&raw.idle_timeout).or_else(|| span(&raw.name)),
            format!(
                "host {name:?}: idle_timeout {} is shorter than min_warm {}{}: the host \
                 sleeps {} after waking at the earliest; set min_warm to at most {} if \
                 that is meant",
                human(idle),
                human(host.min_warm),
                if raw.min_warm.is_none() {
                    " (the default)"
                } else {
                    ""
                },
                human(host.min_warm),
                human(idle),
            ),
        )),
        None => {
            if raw.min_warm.is_some() {
                found.push(locate(
                    place(&raw.min_warm),
                    format!(
                        "host {name:?}: min_warm has no effect with idle_timeout = \"never\" \
                         (the host never sleeps by itself)"
                    ),
                ));
            }
            if raw.idle_ignore.as_ref().is_some_and(|l| !l.is_empty()) {
                found.push(locate(
                    span(&raw.name),
                    format!(
                        "host {name:?}: idle_ignore has no effect with idle_timeout = \"never\" \
                         (the host never sleeps by itself)"
                    ),
                ));
            }
        }
        _ => {}
    }
    if let Some(idle) = host.idle_timeout
        && idle < SHORTEST_USEFUL_IDLE
    {
        found.push(locate(place(&raw.idle_timeout), too_short_idle(name, idle)));
    }
}

/// Why an `idle_timeout` shorter than [`SHORTEST_USEFUL_IDLE`] never puts its host to sleep.
fn too_short_idle(name: &str, idle: Duration) -> String {
    format!(
        "host {name:?}: idle_timeout {} is shorter than {}: the datapath stamps a host's packets \
         with the kernel's coarse clock (up to 20 ms behind), so a sleep decided sooner after the \
         last packet is called off again; use at least {}",
        human(idle),
        human(SHORTEST_USEFUL_IDLE),
        human(SHORTEST_USEFUL_IDLE),
    )
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn warnings(hosts: &str) -> Vec<String> {
        let text = format!("[network]\nsubnet = \"10.9.0.0/24\"\n\n{hosts}");
        Config::parse(&text, "t.toml")
            .expect("valid")
            .warnings
            .into_iter()
            .map(|p| format!("{}:{} {}", p.line, p.column, p.message))
            .collect()
    }

    const HOST: &str = "[[host]]\nname = \"web\"\naddress = \"10.9.0.10\"\nimage = \"i\"\n";

    #[test]
    fn idle_timeout_shorter_than_min_warm_is_pointed_out() {
        let found = warnings(&format!("{HOST}idle_timeout = \"10s\"\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "8:16 host \"web\": idle_timeout 10s is shorter than min_warm 30s (the default)"
            ),
            "{found:?}"
        );
        assert!(
            warnings(&format!(
                "{HOST}idle_timeout = \"10s\"\nmin_warm = \"5s\"\n"
            ))
            .is_empty()
        );
        assert!(warnings(&format!("{HOST}idle_timeout = \"1m\"\n")).is_empty());
    }

    #[test]
    fn an_idle_timeout_too_short_to_ever_sleep_is_pointed_out() {
        let found = warnings(&format!(
            "{HOST}idle_timeout = \"10ms\"\nmin_warm = \"0s\"\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("idle_timeout 10ms is shorter than 40ms")
                && found[0].contains("use at least 40ms"),
            "{found:?}"
        );
        let ok = format!("{HOST}idle_timeout = \"40ms\"\nmin_warm = \"0s\"\n");
        assert!(warnings(&ok).is_empty());
    }

    #[test]
    fn metrics_on_every_interface_are_pointed_out() {
        for all in ["0.0.0.0:9477", "[::]:9477"] {
            let text =
                format!("[network]\nsubnet = \"10.9.0.0/24\"\n[agent]\nmetrics = \"{all}\"\n");
            let config = Config::parse(&text, "t.toml").expect("accepted, with a warning");
            let found: Vec<_> = config
                .warnings
                .iter()
                .map(|p| (p.line, p.column, p.message.as_str()))
                .collect();
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!((found[0].0, found[0].1), (4, 11));
            assert!(found[0].2.contains("serves /metrics on every interface"));
        }
        assert!(warnings("[agent]\nmetrics = \"127.0.0.1:9477\"\n").is_empty());
    }

    #[test]
    fn settings_without_effect_are_pointed_out() {
        let found = warnings(&format!(
            "{HOST}min_warm = \"5s\"\nidle_timeout = \"never\"\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("min_warm has no effect with idle_timeout = \"never\""));
        let found = warnings(&format!("{HOST}ready = \"delay:40s\"\n"));
        assert!(
            found.iter().any(|w| w.contains("every wake will time out")),
            "{found:?}"
        );
        let found = warnings(&format!("{HOST}ports = [80]\nready_poll = \"40s\"\n"));
        assert!(
            found.iter().any(|w| w.contains("never probed again")),
            "{found:?}"
        );
    }
}
