//! One compose service becomes one imag host (`raw::Host`, validated like a `[[host]]`): its name
//! is the service's name, its address `networks.<imag network>.ipv4_address` or one that
//! `address.rs` assigns. Which keys mean what:
//!
//! - mapped: `image`, `command` (a string is split as compose does, `words.rs`), `environment`
//!   (map or list; a name without a value takes the agent's variable), `env_file`, `ports` and
//!   `expose` (their container ports: the first is the default ready probe, `tcp:` or `udp:`),
//!   `depends_on` (list, or `condition: service_started|service_healthy`), `extra_hosts`,
//!   `networks` (the imag network only; `ipv4_address`), `x-imag` (imag's per-host settings,
//!   over the top-level `x-imag.hosts` defaults), and the container options of `options.rs`
//!   (volumes, user, `working_dir`, entrypoint, limits, capabilities, tmpfs, labels,
//!   healthcheck). A healthcheck does not change the ready probe by itself (as in imag.toml):
//!   `x-imag: { ready: healthy }` makes it the signal.
//! - accepted with a warning, because imag owns what they would control: `restart` (imag starts
//!   and stops the container; it is created with Docker's "no" restart policy), published host
//!   ports (an imag host has its own address), `container_name` and `hostname` (both are the
//!   service name), `stop_grace_period`, `init`, `logging`, `pull_policy`, `platform`,
//!   `stdin_open`, `tty`, `build` next to `image`, `deploy.restart_policy`.
//! - refused with the key named: everything else, `networks.*.aliases` included (imag's names
//!   are the service names).

use std::{
    collections::{BTreeMap, HashSet},
    net::Ipv4Addr,
};

use toml::Spanned;

use super::{
    Cx,
    address::{self, Assigned},
    interpolate, options, spanned,
    top::keys,
    words,
    yaml::{Node, Value},
};
use crate::config::{raw, values::Subnet};

/// imag's own per-host settings, in a service's `x-imag` or the top-level `x-imag.hosts`.
const IMAG_KEYS: [&str; 16] = [
    "ready",
    "wake_timeout",
    "idle_timeout",
    "sleep",
    "stop_after",
    "swap_after",
    "swap_prefetch",
    "min_warm",
    "idle_ignore",
    "allow_from",
    "ready_poll",
    "proxy_arp",
    "answer_ping",
    "priority",
    "wakes_with",
    "nodes",
];

/// Keys accepted and ignored, with why.
const IGNORED: [(&str, &str); 11] = [
    (
        "restart",
        "imag owns the container's lifecycle: it starts it on the first packet and stops it when \
         idle, and creates it with no restart policy",
    ),
    (
        "container_name",
        "imag names the container <network>-<service>",
    ),
    ("hostname", "the container's hostname is the service name"),
    (
        "stop_grace_period",
        "imag stops containers with the engine's default timeout",
    ),
    ("init", "imag always runs a tiny init as PID 1"),
    ("logging", "the engine's default logging is used"),
    ("pull_policy", "imag never pulls: the image must be there"),
    ("platform", "the engine's platform is used"),
    ("stdin_open", "imag containers have no terminal"),
    ("tty", "imag containers have no terminal"),
    (
        "build",
        "imag runs the image named by `image`; build it first",
    ),
];

/// Every service as a raw host, in the file's order.
pub(super) fn hosts(
    doc: &Node,
    net_key: &str,
    net: &raw::Network,
    defaults: Option<&Node>,
    cx: &mut Cx<'_>,
) -> Vec<Spanned<raw::Host>> {
    let Some(services) = doc.get("services") else {
        return Vec::new();
    };
    let Some(services) = cx.mapping(services, "services") else {
        return Vec::new();
    };
    let mut hosts: Vec<(usize, raw::Host, bool)> = Vec::new();
    for (key, def) in services {
        let mut host = empty_host(spanned(key.at, key.name.clone()), key.at);
        if let Some(defaults) = defaults {
            imag_settings(defaults, "x-imag.hosts", &mut host, cx);
        }
        let address = service(def, &key.name, net_key, doc.get("volumes"), &mut host, cx);
        hosts.push((key.at, host, address.is_some()));
        if let Some(address) = address {
            hosts.last_mut().expect("just pushed").1.address = address;
        }
    }
    assign(&mut hosts, net, net_key, cx);
    hosts
        .into_iter()
        .map(|(at, host, _)| spanned(at, host))
        .collect()
}

fn empty_host(name: Spanned<String>, at: usize) -> raw::Host {
    raw::Host {
        name,
        address: spanned(at, String::new()),
        image: spanned(at, String::new()),
        command: None,
        env: BTreeMap::new(),
        ports: Vec::new(),
        ready: None,
        wake_timeout: None,
        idle_timeout: None,
        sleep: None,
        stop_after: None,
        swap_after: None,
        swap_prefetch: None,
        min_warm: None,
        priority: None,
        idle_ignore: None,
        allow_from: None,
        ready_poll: None,
        proxy_arp: None,
        answer_ping: None,
        depends_on: None,
        wakes_with: None,
        extra_hosts: None,
        nodes: None,
        volumes: Vec::new(),
        mounts: Vec::new(),
        user: None,
        working_dir: None,
        entrypoint: None,
        memory: None,
        cpus: None,
        pids_limit: None,
        cap_add: Vec::new(),
        cap_drop: Vec::new(),
        tmpfs: Vec::new(),
        labels: BTreeMap::new(),
        healthcheck: None,
    }
}

/// Gives an address to every host without one (see `address.rs`).
fn assign(hosts: &mut [(usize, raw::Host, bool)], net: &raw::Network, net_key: &str, cx: &mut Cx) {
    let Ok(Subnet(subnet)) = net.subnet.get_ref().parse::<Subnet>() else {
        return; // reported by the network's validation
    };
    let gateway = match &net.gateway {
        Some(g) => match g.get_ref().parse::<Ipv4Addr>() {
            Ok(g) => g,
            Err(_) => return,
        },
        None => match subnet.hosts().next() {
            Some(g) => g,
            None => return,
        },
    };
    let fixed: HashSet<Ipv4Addr> = hosts
        .iter()
        .filter(|(_, _, given)| *given)
        .filter_map(|(_, h, _)| h.address.get_ref().parse().ok())
        .collect();
    let names: Vec<String> = hosts
        .iter()
        .filter(|(_, _, given)| !given)
        .map(|(_, h, _)| h.name.get_ref().clone())
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let assigned = address::assign(&names, &address::usable(subnet, gateway), &fixed);
    for (at, host, given) in hosts.iter_mut().filter(|(_, _, given)| !*given) {
        let name = host.name.get_ref().clone();
        match assigned.get(&name).copied().flatten() {
            Some(found) => {
                if let Assigned::Displaced(addr) = found {
                    cx.warn(
                        *at,
                        format!(
                            "service {name} was given {addr}, not its first-choice address \
                             (taken): adding services may move it; pin it with \
                             networks.{net_key}.ipv4_address: {addr}"
                        ),
                    );
                }
                host.address = spanned(*at, found.address().to_string());
                *given = true;
            }
            None => cx.problem(
                *at,
                format!("no free address in {subnet} is left for service {name}"),
            ),
        }
    }
}

/// Reads one service into `host`; returns its `ipv4_address` when it gives one.
fn service(
    def: &Node,
    name: &str,
    net_key: &str,
    volumes: Option<&Node>,
    host: &mut raw::Host,
    cx: &mut Cx<'_>,
) -> Option<Spanned<String>> {
    let entries = cx.mapping(def, "a service")?;
    let mut address = None;
    let mut env_files = BTreeMap::new();
    let mut first_port_udp = None;
    let mut expose_ports = Vec::new();
    for (key, value) in entries {
        let k = key.name.as_str();
        match k {
            "image" => {
                if let Some(image) = cx.string(value, "image") {
                    host.image = image;
                }
            }
            "command" => host.command = command(value, cx),
            "environment" => environment(value, &mut host.env, cx),
            "env_file" => env_file(value, &mut env_files, cx),
            "ports" | "expose" => {
                for item in value.seq().unwrap_or(std::slice::from_ref(value)) {
                    let (ports, udp) = port(item, k == "expose", name, cx);
                    if first_port_udp.is_none() && !ports.is_empty() {
                        first_port_udp = Some(udp);
                    }
                    match k {
                        "ports" => host.ports.extend(ports),
                        _ => expose_ports.extend(ports),
                    }
                }
            }
            "depends_on" => host.depends_on = depends_on(value, cx),
            "extra_hosts" => host.extra_hosts = extra_hosts(value, cx),
            "networks" => address = networks(value, name, net_key, cx),
            "x-imag" => imag_settings(value, "x-imag", host, cx),
            k if k.starts_with("x-") => {}
            k if options::KEYS.contains(&k) => {
                options::apply(k, value, volumes, host, cx);
            }
            k => match IGNORED.iter().find(|(i, _)| *i == k) {
                Some(("build", _)) if def.get("image").is_none() => cx.problem(
                    key.at,
                    format!("service {name} has `build` but no `image`: imag runs images; build it and name it with `image`"),
                ),
                Some((_, why)) => cx.warn(key.at, format!("`{k}` is ignored: {why}")),
                None => cx.problem(
                    key.at,
                    format!("service key `{k}` is not supported by imag"),
                ),
            },
        }
    }
    if def.get("image").is_none() && def.get("build").is_none() {
        let at = host.name.span().start;
        cx.problem(at, format!("service {name} has no `image`"));
        // Reported once: the shared validation would also call it empty.
        host.image = spanned(at, "(none)".to_string());
    }
    host.ports.extend(expose_ports);
    // env_file first, `environment` over it, as compose does.
    for (k, v) in env_files {
        host.env.entry(k).or_insert(v);
    }
    if host.ready.is_none()
        && first_port_udp == Some(true)
        && let Some(first) = host.ports.first()
    {
        host.ready = Some(spanned(
            first.span().start,
            format!("udp:{}", first.get_ref()),
        ));
    }
    address
}

fn command(node: &Node, cx: &mut Cx<'_>) -> Option<Vec<String>> {
    match &node.value {
        Value::Null => None,
        Value::Scalar(s) => match words::split(&s.text) {
            Ok(words) => Some(words),
            Err(at) => {
                cx.problem(s.text_at + at, "this quote is never closed".into());
                None
            }
        },
        _ => Some(
            cx.strings(node, "command", false)?
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        ),
    }
}

fn environment(node: &Node, env: &mut BTreeMap<Spanned<String>, String>, cx: &mut Cx<'_>) {
    let set = |at: usize,
               name: &str,
               value: Option<String>,
               env: &mut BTreeMap<Spanned<String>, String>| {
        // A name without a value passes the agent's variable through, if it has one.
        if let Some(value) = value.or_else(|| cx.vars.0.get(name).cloned()) {
            env.insert(spanned(at, name.to_string()), value);
        }
    };
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                let text = value.text().map(str::to_string);
                if text.is_none() && !value.is_null() {
                    cx.problem(
                        value.at,
                        format!("environment {} must be a single value", key.name),
                    );
                    continue;
                }
                set(key.at, &key.name, text, env);
            }
        }
        Value::Seq(items) => {
            for item in items {
                match item.text() {
                    Some(text) => match text.split_once('=') {
                        Some((k, v)) => set(item.at, k, Some(v.to_string()), env),
                        None => set(item.at, text, None, env),
                    },
                    None => cx.problem(item.at, "an environment entry is NAME=VALUE".into()),
                }
            }
        }
        _ => cx.problem(node.at, "environment must be a mapping or a list".into()),
    }
}

fn env_file(node: &Node, out: &mut BTreeMap<Spanned<String>, String>, cx: &mut Cx<'_>) {
    for item in node.seq().unwrap_or(std::slice::from_ref(node)) {
        let (path, required) = match item.map() {
            Some(_) => (
                item.get("path"),
                item.get("required").and_then(Node::boolean),
            ),
            None => (Some(item), None),
        };
        let Some(path) = path.and_then(|p| cx.string(p, "env_file path")) else {
            cx.problem(item.at, "an env_file entry needs a path".into());
            continue;
        };
        let file = cx.dir.join(path.get_ref());
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(_) if required == Some(false) => continue,
            Err(err) => {
                cx.problem(
                    item.at,
                    format!("cannot read env_file {}: {err}", file.display()),
                );
                continue;
            }
        };
        match interpolate::dotenv(&text, cx.vars) {
            // Later files win over earlier ones.
            Ok(vars) => out.extend(vars.into_iter().map(|(k, v)| (spanned(item.at, k), v))),
            Err(bad) => cx.problem(
                item.at,
                format!("{}:{}: {}", file.display(), bad.line, bad.message),
            ),
        }
    }
}

/// The container ports of one `ports` (or `expose`) entry, and whether they are UDP.
fn port(item: &Node, expose: bool, name: &str, cx: &mut Cx<'_>) -> (Vec<Spanned<u16>>, bool) {
    let (target, published, protocol) = if item.map().is_some() {
        let allowed = [
            "target",
            "published",
            "protocol",
            "host_ip",
            "mode",
            "name",
            "app_protocol",
        ];
        let found = keys(cx, item, "a port", &allowed);
        let get = |k: &str| {
            found
                .iter()
                .find(|(key, _)| *key == k)
                .and_then(|(_, n)| n.text())
        };
        let Some(target) = get("target") else {
            cx.problem(
                item.at,
                "a port needs a `target` (the container's port)".into(),
            );
            return (Vec::new(), false);
        };
        (
            target.to_string(),
            get("published").map(str::to_string),
            get("protocol").unwrap_or("tcp").to_string(),
        )
    } else {
        let Some(text) = item.text() else {
            cx.problem(
                item.at,
                "a port is a number or text like \"8080:80/tcp\"".into(),
            );
            return (Vec::new(), false);
        };
        let (spec, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        let (published, target) = match spec.rsplit_once(':') {
            Some((published, target)) => (Some(published.to_string()), target),
            None => (None, spec),
        };
        (target.to_string(), published, protocol.to_string())
    };
    if protocol != "tcp" && protocol != "udp" {
        cx.problem(
            item.at,
            format!("port protocol {protocol:?} is neither tcp nor udp"),
        );
    }
    let ports = match target.split_once('-') {
        Some((a, b)) => a
            .parse::<u16>()
            .ok()
            .zip(b.parse::<u16>().ok())
            .filter(|(a, b)| a <= b && b - a < 1024)
            .map(|(a, b)| (a..=b).collect()),
        None => target.parse::<u16>().ok().map(|p| vec![p]),
    };
    let Some(ports) = ports else {
        cx.problem(
            item.at,
            format!("{target:?} is not a container port (or a range of up to 1024)"),
        );
        return (Vec::new(), false);
    };
    if let Some(published) = published
        && !expose
    {
        cx.warn(
            item.at,
            format!(
                "port {published}:{target} is not published: an imag host has an address of its \
                 own; clients reach service {name} at its address, port {target}"
            ),
        );
    }
    (
        ports.into_iter().map(|p| spanned(item.at, p)).collect(),
        protocol == "udp",
    )
}

fn depends_on(node: &Node, cx: &mut Cx<'_>) -> Option<Vec<Spanned<String>>> {
    if node.seq().is_some() {
        return cx.strings(node, "depends_on", false);
    }
    let mut out = Vec::new();
    for (key, value) in cx.mapping(node, "depends_on")? {
        let mut healthy = false;
        if !value.is_null() {
            for (k, v) in keys(
                cx,
                value,
                "a dependency",
                &["condition", "restart", "required"],
            ) {
                match (k, v.text()) {
                    ("condition", Some("service_started")) => {}
                    ("condition", Some("service_healthy")) => healthy = true,
                    ("condition", other) => cx.problem(
                        v.at,
                        format!(
                            "condition {:?} is not supported: imag wakes dependencies and waits \
                             for service_started or service_healthy",
                            other.unwrap_or_default()
                        ),
                    ),
                    _ => {}
                }
            }
        }
        let text = if healthy {
            format!("{}:healthy", key.name)
        } else {
            key.name.clone()
        };
        out.push(spanned(key.at, text));
    }
    Some(out)
}

fn extra_hosts(node: &Node, cx: &mut Cx<'_>) -> Option<Vec<Spanned<String>>> {
    if node.seq().is_some() {
        return cx.strings(node, "extra_hosts", false);
    }
    let mut out = Vec::new();
    for (key, value) in cx.mapping(node, "extra_hosts")? {
        let addr = cx.string(value, "an extra host's address")?;
        out.push(spanned(
            value.at,
            format!("{}={}", key.name, addr.get_ref()),
        ));
    }
    Some(out)
}

/// The service's `networks`: only the imag network; its `ipv4_address` if given.
fn networks(node: &Node, name: &str, net_key: &str, cx: &mut Cx<'_>) -> Option<Spanned<String>> {
    let other = |cx: &mut Cx<'_>, at: usize, net: &str| {
        cx.problem(
            at,
            format!(
                "service {name} joins network {net:?}: imag hosts join only the imag network \
                 ({net_key:?})"
            ),
        );
    };
    if let Some(items) = node.seq() {
        for item in items {
            if item.text() != Some(net_key) {
                other(cx, item.at, item.text().unwrap_or_default());
            }
        }
        return None;
    }
    let mut address = None;
    for (key, value) in cx.mapping(node, "networks")? {
        if key.name != net_key {
            other(cx, key.at, &key.name);
            continue;
        }
        if value.is_null() {
            continue;
        }
        for (k, v) in keys(
            cx,
            value,
            "a service's network",
            &["ipv4_address", "aliases"],
        ) {
            match k {
                "ipv4_address" => address = cx.string(v, "ipv4_address"),
                _ => cx.problem(
                    v.at,
                    "network aliases are not supported: imag answers each host's service name"
                        .into(),
                ),
            }
        }
    }
    address
}

/// imag's per-host settings from a service's `x-imag` (or the `x-imag.hosts` defaults).
fn imag_settings(node: &Node, what: &str, host: &mut raw::Host, cx: &mut Cx<'_>) {
    for (key, value) in keys(cx, node, what, &IMAG_KEYS) {
        match key {
            "proxy_arp" => host.proxy_arp = cx.boolean(value, key),
            "answer_ping" => host.answer_ping = cx.boolean(value, key),
            "swap_prefetch" => host.swap_prefetch = cx.boolean(value, key),
            "idle_ignore" => host.idle_ignore = cx.strings(value, key, true),
            "allow_from" => host.allow_from = cx.strings(value, key, true),
            "wakes_with" => host.wakes_with = cx.strings(value, key, true),
            "nodes" => host.nodes = cx.strings(value, key, true),
            "priority" => host.priority = super::top::integer(cx, value, key),
            _ => {
                let text = cx.string(value, key);
                let slot = match key {
                    "ready" => &mut host.ready,
                    "wake_timeout" => &mut host.wake_timeout,
                    "idle_timeout" => &mut host.idle_timeout,
                    "sleep" => &mut host.sleep,
                    "stop_after" => &mut host.stop_after,
                    "swap_after" => &mut host.swap_after,
                    "min_warm" => &mut host.min_warm,
                    _ => &mut host.ready_poll,
                };
                *slot = text;
            }
        }
    }
}
