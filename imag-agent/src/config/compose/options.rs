//! A service's container options — `volumes` (short and long syntax), `user`, `working_dir`,
//! `entrypoint`, `mem_limit`, `cpus`, `pids_limit`, `deploy.resources.limits`, `cap_add`,
//! `cap_drop`, `tmpfs`, `labels`, `healthcheck` — into the raw host's options, which
//! `config/container.rs` checks for both front ends. Compose's syntax is mostly Docker's, so the
//! strings pass through; what differs is translated here: relative bind sources start at the
//! compose file's folder, a named volume must be declared under the top-level `volumes:` (whose
//! `name:` is the engine's name for it), `healthcheck.disable` is the test `["NONE"]`.
//!
//! A named volume is the engine's volume of that name as it is: compose would prefix it with the
//! project name, imag does not (give it `name:` to share compose's volume).

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Cx, spanned, top::keys, words, yaml::Node};
use crate::config::raw;

/// The compose keys this file reads.
pub(super) const KEYS: [&str; 13] = [
    "volumes",
    "user",
    "working_dir",
    "entrypoint",
    "mem_limit",
    "cpus",
    "pids_limit",
    "cap_add",
    "cap_drop",
    "tmpfs",
    "labels",
    "healthcheck",
    "deploy",
];

/// Reads option `key` of a service into `host`; `volumes` are the top-level declarations.
pub(super) fn apply(
    key: &str,
    value: &Node,
    volumes: Option<&Node>,
    host: &mut raw::Host,
    cx: &mut Cx<'_>,
) {
    match key {
        "volumes" => {
            for item in value.seq().unwrap_or(std::slice::from_ref(value)) {
                volume(item, volumes, host, cx);
            }
        }
        "user" => host.user = cx.string(value, key),
        "working_dir" => host.working_dir = cx.string(value, key),
        "entrypoint" => host.entrypoint = entrypoint(value, cx),
        "mem_limit" => set_once(&mut host.memory, cx.string(value, key), cx),
        "cpus" => set_once(&mut host.cpus, cpus(value, cx), cx),
        "pids_limit" => set_once(&mut host.pids_limit, pids(value, cx), cx),
        "cap_add" => host.cap_add = cx.strings(value, key, false).unwrap_or_default(),
        "cap_drop" => host.cap_drop = cx.strings(value, key, false).unwrap_or_default(),
        "tmpfs" => host
            .tmpfs
            .extend(cx.strings(value, key, true).unwrap_or_default()),
        "labels" => labels(value, host, cx),
        "healthcheck" => host.healthcheck = healthcheck(value, cx),
        _ => deploy(value, host, cx),
    }
}

/// `mem_limit` and `deploy.resources.limits.memory` (and the like) say the same: once only.
fn set_once<T>(slot: &mut Option<Spanned<T>>, value: Option<Spanned<T>>, cx: &mut Cx<'_>) {
    if let Some(value) = value {
        if slot.is_some() {
            cx.problem(
                value.span().start,
                "this limit is set twice (as a service key and under deploy.resources.limits): \
                 keep one"
                    .into(),
            );
        }
        *slot = Some(value);
    }
}

fn cpus(node: &Node, cx: &mut Cx<'_>) -> Option<Spanned<f64>> {
    let value = node.text().and_then(|t| t.parse::<f64>().ok());
    if value.is_none() {
        cx.problem(node.at, "cpus must be a number (like 0.5)".into());
    }
    value.map(|v| spanned(node.at, v))
}

fn pids(node: &Node, cx: &mut Cx<'_>) -> Option<Spanned<i64>> {
    let value = node.text().and_then(|t| t.parse::<i64>().ok());
    if value.is_none() {
        cx.problem(node.at, "pids_limit must be a whole number".into());
    }
    value.map(|v| spanned(node.at, v))
}

fn entrypoint(node: &Node, cx: &mut Cx<'_>) -> Option<Spanned<Vec<String>>> {
    let words = match node.text() {
        Some(text) => {
            if let Ok(words) = words::split(text) {
                words
            } else {
                cx.problem(node.at, "entrypoint: a quote is never closed".into());
                return None;
            }
        }
        None if node.is_null() => return None,
        None => cx
            .strings(node, "entrypoint", false)?
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
    };
    Some(spanned(node.at, words))
}

/// One `volumes` entry, short (`data:/var/lib/db:ro`, `./conf:/etc/app`) or long syntax.
fn volume(item: &Node, declared: Option<&Node>, host: &mut raw::Host, cx: &mut Cx<'_>) {
    if item.map().is_none() {
        let Some(text) = cx.string(item, "a volume") else {
            return;
        };
        let mut parts: Vec<String> = text.get_ref().split(':').map(str::to_string).collect();
        if parts.len() >= 2 {
            match source(&parts[0], declared, item.at, cx) {
                Some(source) => parts[0] = source,
                None => return,
            }
        }
        host.volumes.push(spanned(item.at, parts.join(":")));
        return;
    }
    let allowed = [
        "type",
        "source",
        "target",
        "read_only",
        "volume",
        "bind",
        "tmpfs",
        "consistency",
    ];
    let found = keys(cx, item, "a volume", &allowed);
    let get = |k: &str| found.iter().find(|(key, _)| *key == k).map(|(_, n)| *n);
    let kind = get("type").and_then(Node::text).unwrap_or("volume");
    let Some(target) = get("target").and_then(|t| cx.string(t, "a volume's target")) else {
        cx.problem(
            item.at,
            "a volume needs a `target` (the path inside the container)".into(),
        );
        return;
    };
    if kind == "tmpfs" {
        let size = get("tmpfs")
            .and_then(|t| t.get("size"))
            .and_then(Node::text);
        let text = match size {
            Some(size) => format!("{}:size={size}", target.get_ref()),
            None => target.get_ref().clone(),
        };
        host.tmpfs.push(spanned(item.at, text));
        return;
    }
    let Some(source_node) = get("source") else {
        cx.problem(
            item.at,
            "a volume needs a `source`: an anonymous volume would lose its data when the host \
             sleeps with sleep: remove"
                .into(),
        );
        return;
    };
    let Some(source_text) = cx.string(source_node, "a volume's source") else {
        return;
    };
    let Some(source) = source(source_text.get_ref(), declared, source_node.at, cx) else {
        return;
    };
    let read_only = get("read_only").and_then(|r| cx.boolean(r, "read_only"));
    host.mounts.push(spanned(
        item.at,
        raw::Mount {
            kind: spanned(get("type").map_or(item.at, |t| t.at), kind.to_string()),
            source: spanned(source_node.at, source),
            target,
            read_only: read_only.unwrap_or(false),
        },
    ));
}

/// A volume's source for the engine: relative host paths made absolute from the compose file's
/// folder; a volume name checked against the top-level `volumes:` (and renamed by its `name:`).
fn source(text: &str, declared: Option<&Node>, at: usize, cx: &mut Cx<'_>) -> Option<String> {
    if text.starts_with('/') {
        return Some(text.to_string());
    }
    if text.starts_with('.') || text.starts_with('~') {
        let path = match text.strip_prefix("~/") {
            Some(rest) => {
                std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(rest)
            }
            None => std::path::absolute(cx.dir.join(text)).unwrap_or_else(|_| cx.dir.join(text)),
        };
        return Some(path.display().to_string());
    }
    let Some(def) = declared.and_then(|d| d.get(text)) else {
        cx.problem(
            at,
            format!("volume {text:?} is not declared under the top-level `volumes:`"),
        );
        return None;
    };
    Some(
        def.get("name")
            .and_then(Node::text)
            .unwrap_or(text)
            .to_string(),
    )
}

fn labels(node: &Node, host: &mut raw::Host, cx: &mut Cx<'_>) {
    let mut set = |key: &str, at: usize, value: String| {
        host.labels.insert(spanned(at, key.to_string()), value);
    };
    match (node.map(), node.seq()) {
        (Some(entries), _) => {
            for (key, value) in entries {
                let text = value.text().unwrap_or_default().to_string();
                set(&key.name, key.at, text);
            }
        }
        (_, Some(items)) => {
            for item in items {
                let text = item.text().unwrap_or_default();
                let (k, v) = text.split_once('=').unwrap_or((text, ""));
                set(k, item.at, v.to_string());
            }
        }
        _ => cx.problem(node.at, "labels must be a mapping or a list".into()),
    }
}

fn healthcheck(node: &Node, cx: &mut Cx<'_>) -> Option<Spanned<raw::Healthcheck>> {
    let allowed = [
        "test",
        "interval",
        "timeout",
        "start_period",
        "start_interval",
        "retries",
        "disable",
    ];
    let found: BTreeMap<&str, &Node> = keys(cx, node, "healthcheck", &allowed)
        .into_iter()
        .collect();
    let disabled = match found.get("disable") {
        Some(d) => cx.boolean(d, "healthcheck disable")?,
        None => false,
    };
    let test = if disabled {
        raw::StringOrList::List(vec!["NONE".into()])
    } else {
        let Some(given) = found.get("test") else {
            cx.problem(
                node.at,
                "a healthcheck needs a `test` (or `disable: true`)".into(),
            );
            return None;
        };
        match given.text() {
            Some(text) => raw::StringOrList::String(text.to_string()),
            None => raw::StringOrList::List(
                cx.strings(given, "healthcheck test", false)?
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect(),
            ),
        }
    };
    let string = |k: &str, cx: &mut Cx<'_>| found.get(k).and_then(|n| cx.string(n, k));
    let retries = match found.get("retries") {
        Some(n) => {
            let r = n.text().and_then(|t| t.parse::<u32>().ok());
            if r.is_none() {
                cx.problem(n.at, "healthcheck retries must be a whole number".into());
            }
            r.map(|r| spanned(n.at, r))
        }
        None => None,
    };
    let check = raw::Healthcheck {
        test: spanned(found.get("test").map_or(node.at, |t| t.at), test),
        interval: string("interval", cx),
        timeout: string("timeout", cx),
        start_period: string("start_period", cx),
        start_interval: string("start_interval", cx),
        retries,
    };
    Some(spanned(node.at, check))
}

/// `deploy`: its resource limits are options; an imag host is one container, so replicas and
/// placement mean nothing; the restart policy is imag's.
fn deploy(node: &Node, host: &mut raw::Host, cx: &mut Cx<'_>) {
    let allowed = [
        "resources",
        "restart_policy",
        "replicas",
        "mode",
        "labels",
        "placement",
        "update_config",
        "rollback_config",
        "endpoint_mode",
    ];
    for (k, v) in keys(cx, node, "deploy", &allowed) {
        match k {
            "restart_policy" => cx.warn(
                v.at,
                "`deploy.restart_policy` is ignored: imag owns the container's lifecycle".into(),
            ),
            "replicas" if v.text() == Some("1") => {}
            "resources" => {
                for (k, v) in keys(cx, v, "deploy.resources", &["limits", "reservations"]) {
                    if k == "reservations" {
                        cx.warn(
                            v.at,
                            "deploy.resources.reservations are ignored: imag sets limits only"
                                .into(),
                        );
                        continue;
                    }
                    let limits = ["memory", "cpus", "pids", "devices"];
                    for (k, v) in keys(cx, v, "deploy.resources.limits", &limits) {
                        match k {
                            "memory" => set_once(&mut host.memory, cx.string(v, k), cx),
                            "cpus" => set_once(&mut host.cpus, cpus(v, cx), cx),
                            "pids" => set_once(&mut host.pids_limit, pids(v, cx), cx),
                            _ => cx.problem(v.at, "device limits are not supported".into()),
                        }
                    }
                }
            }
            _ => cx.problem(
                v.at,
                format!("`deploy.{k}` is not supported: an imag host is one container"),
            ),
        }
    }
}
