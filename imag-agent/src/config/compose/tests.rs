//! The compose front end end to end: the example application as compose and as TOML, problems
//! with their line and column, interpolation and `.env`, and address stability.

use std::{fmt::Write as _, net::Ipv4Addr, path::Path};

use super::{Vars, parse};
use crate::config::{Config, Format, ReadyProbe, Tier};

fn vars(pairs: &[(&str, &str)]) -> Vars {
    Vars(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn compose(text: &str) -> Result<Config, Vec<(usize, usize, String)>> {
    parse(text, "compose.yml", &Vars::default(), Path::new(".")).map_err(|e| {
        e.problems
            .into_iter()
            .map(|p| (p.line, p.column, p.message))
            .collect()
    })
}

fn problems(text: &str) -> Vec<(usize, usize, String)> {
    compose(text).expect_err("the file should be refused")
}

const NET: &str = "networks:\n  imag:\n    ipam:\n      config:\n        - subnet: 10.9.0.0/24\n";

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/compose")
}

#[test]
fn the_example_as_compose_and_as_toml_is_the_same_application() {
    let from_compose =
        Config::load_as(&examples().join("docker-compose.yml"), Format::Compose).unwrap();
    let from_toml = Config::load_as(&examples().join("imag.toml"), Format::Toml).unwrap();
    assert_eq!(from_compose.network, from_toml.network);
    assert_eq!(from_compose.hold, from_toml.hold);
    assert_eq!(from_compose.wake, from_toml.wake);
    assert_eq!(from_compose.agent, from_toml.agent);
    assert_eq!(from_compose.dns, from_toml.dns);
    assert_eq!(from_compose.hosts.len(), 3);
    for (c, t) in from_compose.hosts.iter().zip(&from_toml.hosts) {
        assert_eq!(
            c.container_spec(&from_compose.network.name),
            t.container_spec(&from_toml.network.name),
            "container of {}",
            c.name
        );
        assert_eq!(c, t, "host {}", c.name);
    }
    let db = from_compose.host("db").unwrap();
    assert_eq!(
        db.ready,
        ReadyProbe::Tcp(8080),
        "the first port, as in TOML"
    );
    assert_eq!(db.container.mounts[0].to_bind(), "dbdata:/data");
    assert_eq!(db.container.memory, Some(64 << 20));
    let backend = from_compose.host("backend").unwrap();
    assert!(!backend.depends_on[0].healthy, "condition: service_started");
    assert_eq!(from_compose.host("backend").unwrap().sleep, Tier::Paused);
    // The one warning: `restart` is ignored.
    assert_eq!(
        from_compose.warnings.len(),
        1,
        "{:?}",
        from_compose.warnings
    );
    assert!(
        from_compose.warnings[0]
            .message
            .contains("`restart` is ignored")
    );
}

#[test]
fn a_minimal_service_gets_defaults_and_an_address() {
    let config = compose(&format!("{NET}services:\n  web:\n    image: i\n")).unwrap();
    let web = config.host("web").unwrap();
    assert_eq!(config.network.name, "imag");
    assert!(config.network.subnet.contains(&web.address));
    assert_eq!(web.ready, ReadyProbe::Running);
    assert_eq!(web.command, None);
}

#[test]
fn x_imag_network_without_a_networks_section() {
    let text = "x-imag:\n  network:\n    subnet: 10.3.0.0/24\n    name: lab\n    bridge: lab0\n\
                services:\n  a:\n    image: i\n";
    let config = compose(text).unwrap();
    assert_eq!(
        (config.network.name.as_str(), config.network.bridge.as_str()),
        ("lab", "lab0")
    );
    assert_eq!(config.dns.domain, "lab.internal");
}

#[test]
fn ports_environment_lists_and_udp_readiness() {
    let text = format!(
        "{NET}services:\n  dns:\n    image: i\n    ports: [\"127.0.0.1:5353:53/udp\", 9000]\n    \
         environment: [A=1, B]\n    extra_hosts: [\"gw=10.9.0.1\"]\n    depends_on:\n      \
         web: {{condition: service_healthy}}\n  web:\n    image: i\n"
    );
    let config = Compose::with(&text, &[("B", "from-env")]);
    let dns = config.host("dns").unwrap();
    assert_eq!(dns.ports, vec![53, 9000]);
    assert_eq!(dns.ready, ReadyProbe::Udp(53));
    assert_eq!(dns.env.get("B").map(String::as_str), Some("from-env"));
    assert_eq!(dns.extra_hosts, vec!["gw:10.9.0.1".to_string()]);
    assert!(dns.depends_on[0].healthy);
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.line == 9 && w.message.contains("5353:53 is not published")),
        "{:?}",
        config.warnings
    );
}

struct Compose;

impl Compose {
    fn with(text: &str, pairs: &[(&str, &str)]) -> Config {
        parse(text, "c.yml", &vars(pairs), Path::new(".")).unwrap()
    }
}

#[test]
fn problems_have_lines_and_columns() {
    let text = format!(
        "{NET}services:\n  web:\n    image: i\n    privileged: true\n    networks:\n      imag:\n        \
         ipv4_address: 10.8.0.5\n    x-imag:\n      idle_timeout: soon\n  db:\n    command: \
         \"a 'b\"\n"
    );
    let found = problems(&text);
    let places: Vec<(usize, usize)> = found.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        places,
        vec![(9, 5), (12, 23), (14, 21), (15, 3), (16, 17)],
        "{found:#?}"
    );
    assert!(
        found[0]
            .2
            .contains("service key `privileged` is not supported")
    );
    assert!(found[1].2.contains("outside the subnet 10.9.0.0/24"));
    assert!(
        found[2]
            .2
            .contains("idle_timeout \"soon\" is not a duration")
    );
    assert!(found[3].2.contains("service db has no `image`"));
    assert!(found[4].2.contains("quote is never closed"));
}

#[test]
fn yaml_errors_and_missing_subnets_are_placed() {
    let found = problems("services:\n  a:\n    image: [i\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].0 >= 3, "{found:?}");
    let found = problems("services:\n  a:\n    image: i\n");
    assert!(found[0].2.contains("no subnet"), "{found:?}");
    let found = problems(&format!("{NET}  other: {{}}\nservices: {{}}\n"));
    assert!(found[0].2.contains("several networks"), "{found:?}");
    let found = problems(&format!("{NET}secrets: {{}}\nservices: {{}}\n"));
    assert_eq!((found[0].0, found[0].1), (6, 1), "{found:?}");
}

#[test]
fn interpolation_from_the_environment_with_defaults_and_errors() {
    let text = format!(
        "{NET}services:\n  web:\n    image: ${{IMAGE:-hello}}:$TAG\n    environment:\n      \
         PRICE: $$5\n"
    );
    let config = Compose::with(&text, &[("TAG", "v2")]);
    let web = config.host("web").unwrap();
    assert_eq!(web.image, "hello:v2");
    assert_eq!(web.env.get("PRICE").map(String::as_str), Some("$5"));

    let text = format!("{NET}services:\n  web:\n    image: x-${{IMAGE:?set IMAGE}}\n");
    let found = problems(&text);
    assert_eq!(
        found,
        vec![(
            8,
            14,
            "variable IMAGE must be set and not empty: set IMAGE".to_string()
        )]
    );
    let found = problems(&format!(
        "{NET}services:\n  web:\n    image: ${{IMAGE/a/b}}\n"
    ));
    assert_eq!((found[0].0, found[0].1), (8, 12));
    assert!(found[0].2.contains("not a supported interpolation"));

    let config = Compose::with(&format!("{NET}services:\n  web:\n    image: i$NOPE\n"), &[]);
    assert!(
        config.warnings[0]
            .message
            .contains("variable NOPE is not set")
    );
}

#[test]
fn dotenv_and_env_file_next_to_the_compose_file() {
    let dir = std::env::temp_dir().join(format!("imag-compose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "IMAGE=from-dotenv\nSUBNET=10.4.0.0/24\n").unwrap();
    std::fs::write(dir.join("web.env"), "A=1\nB=${IMAGE}\n").unwrap();
    let path = dir.join("compose.yml");
    std::fs::write(
        &path,
        "x-imag:\n  network:\n    subnet: ${SUBNET}\nservices:\n  web:\n    image: $IMAGE\n    \
         env_file: web.env\n    environment:\n      A: 2\n",
    )
    .unwrap();
    let config = Config::load_compose(&path).unwrap();
    let web = config.host("web").unwrap();
    assert_eq!(web.image, "from-dotenv");
    assert_eq!(
        web.env.get("A").map(String::as_str),
        Some("2"),
        "environment wins"
    );
    assert_eq!(web.env.get("B").map(String::as_str), Some("from-dotenv"));
    std::fs::write(dir.join("web.env"), "A=1\nnot a line\n").unwrap();
    let err = Config::load_compose(&path).unwrap_err().to_string();
    assert!(err.contains("compose.yml:7:15: "), "{err}");
    assert!(
        err.contains("web.env:2: \"not a line\" is not KEY=VALUE"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn addresses_are_stable_when_services_are_added() {
    let file = |names: &[&str]| {
        let mut text = format!("{NET}services:\n");
        for name in names {
            write!(text, "  {name}:\n    image: i\n").unwrap();
        }
        compose(&text).unwrap()
    };
    let names = [
        "web", "api", "db", "cache", "queue", "worker", "auth", "search",
    ];
    let mut before = file(&names[..1]);
    for n in 2..=names.len() {
        let after = file(&names[..n]);
        for host in &before.hosts {
            assert_eq!(
                after.host(&host.name).unwrap().address,
                host.address,
                "{} moved when {} was added",
                host.name,
                names[n - 1]
            );
        }
        before = after;
    }
    // The order in the file does not matter.
    let mut reversed = names;
    reversed.reverse();
    let again = file(&reversed);
    for host in &before.hosts {
        assert_eq!(again.host(&host.name).unwrap().address, host.address);
    }
    // A fixed address is never given to another service.
    let taken = before.host("web").unwrap().address;
    let text = format!(
        "{NET}services:\n  other:\n    image: i\n    networks:\n      imag:\n        \
         ipv4_address: {taken}\n  web:\n    image: i\n"
    );
    let config = compose(&text).unwrap();
    assert_ne!(config.host("web").unwrap().address, taken);
    assert!(config.warnings[0].message.contains("pin it with"));
    assert_ne!(taken, Ipv4Addr::UNSPECIFIED);
}

#[test]
fn container_options_in_compose_syntax() {
    let text = format!(
        "{NET}volumes:\n  data:\n    name: shared-data\nservices:\n  db:\n    image: i\n    \
         volumes:\n      - data:/var/lib/db\n      - /etc/db:/etc/db:ro\n      - type: volume\n        \
         source: data\n        target: /backup\n        read_only: true\n      - type: tmpfs\n        \
         target: /run\n    entrypoint: /bin/db --serve\n    user: \"1000:1000\"\n    \
         working_dir: /srv\n    cap_drop: [ALL]\n    labels: [team=data]\n    deploy:\n      \
         resources:\n        limits: {{memory: 128m, cpus: '0.5', pids: 64}}\n    healthcheck:\n      \
         disable: true\n"
    );
    let config = compose(&text).unwrap();
    let db = &config.host("db").unwrap().container;
    let binds: Vec<String> = db
        .mounts
        .iter()
        .map(crate::runtime::Mount::to_bind)
        .collect();
    assert_eq!(
        binds,
        [
            "shared-data:/var/lib/db",
            "/etc/db:/etc/db:ro",
            "shared-data:/backup:ro"
        ]
    );
    assert_eq!(db.tmpfs.get("/run").map(String::as_str), Some(""));
    assert_eq!(
        db.entrypoint.as_deref(),
        Some(&["/bin/db".to_string(), "--serve".into()][..])
    );
    assert_eq!(db.user.as_deref(), Some("1000:1000"));
    assert_eq!(db.working_dir.as_deref(), Some("/srv"));
    assert_eq!(db.cap_drop, ["ALL"]);
    assert_eq!(db.labels.get("team").map(String::as_str), Some("data"));
    assert_eq!(db.memory, Some(128 << 20));
    assert_eq!(db.nano_cpus, Some(500_000_000));
    assert_eq!(db.pids_limit, Some(64));
    assert!(db.healthcheck.as_ref().unwrap().disables());
}

#[test]
fn option_problems_are_placed() {
    let text = format!(
        "{NET}services:\n  db:\n    image: i\n    volumes: [\"nope:/d\", \"/only\"]\n    \
         mem_limit: 1g\n    deploy:\n      resources:\n        limits:\n          memory: 2g\n    \
         cap_add: [NET_ADMIN]\n    memswap_limit: 1g\n"
    );
    let found = problems(&text);
    let places: Vec<(usize, usize)> = found.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        places,
        vec![(9, 15), (9, 26), (14, 19), (16, 5)],
        "{found:#?}"
    );
    assert!(
        found[0]
            .2
            .contains("\"nope\" is not declared under the top-level `volumes:`")
    );
    assert!(found[1].2.contains("has no name"), "{found:?}");
    assert!(found[2].2.contains("set twice"));
    assert!(found[3].2.contains("`memswap_limit` is not supported"));
}

#[test]
fn allow_from_per_service_and_as_the_network_default() {
    let text = "x-imag:\n  network:\n    subnet: 10.3.0.0/24\n    allow_from: [10.50.0.0/16]\n\
                services:\n  web:\n    image: i\n    x-imag:\n      allow_from: [frontend]\n  \
                frontend:\n    image: i\n";
    let config = compose(text).unwrap();
    let frontend = config.host("frontend").unwrap();
    let gateway = ipnet::Ipv4Net::from(config.network.gateway);
    assert_eq!(
        config.host("web").unwrap().allow_from,
        Some(vec![gateway, ipnet::Ipv4Net::from(frontend.address)]),
        "a service name is that host's address; the gateway is always allowed"
    );
    assert_eq!(
        frontend.allow_from,
        Some(vec![gateway, "10.50.0.0/16".parse().unwrap()]),
        "the network default"
    );
    let bad = text.replace("[frontend]", "[backend]");
    let found = problems(&bad);
    assert_eq!((found[0].0, found[0].1), (9, 20), "{found:?}");
    assert!(found[0].2.contains("names \"backend\""), "{found:?}");
}

#[test]
fn limits_and_priority_come_from_x_imag() {
    let text = format!(
        "{NET}x-imag:\n  limits:\n    max_warm: 2\n    memory_budget: 1GiB\n    \
         wakes_per_source: 5/min\n    evict_busy: true\nservices:\n  web:\n    image: img\n    \
         x-imag:\n      priority: -3\n      idle_timeout: never\n"
    );
    let config = compose(&text).unwrap();
    assert_eq!(config.limits.max_warm, Some(2));
    assert_eq!(config.limits.memory_budget, Some(1 << 30));
    assert_eq!(config.limits.wakes_per_source.unwrap().count, 5);
    assert!(config.limits.evict_busy);
    let web = config.host("web").unwrap();
    assert_eq!((web.priority, web.idle_timeout), (-3, None));
    let found = problems(&format!("{NET}x-imag:\n  limits:\n    max_warm: lots\n"));
    assert_eq!(found[0].2, "max_warm must be a whole number", "{found:?}");
}

/// Found by fuzzing (`fuzz/corpus/config_compose/crash-unset-variable-offset`): the warning
/// for an unset variable was placed at the variable's offset inside its value, counted from the
/// start of the file (line 1), and panicked when that offset fell inside a wide character there.
/// Inside a multi-line plain scalar the offset is counted in the folded text, so it can still
/// fall inside a character of the file (here the first `→`): that must place, not panic.
#[test]
fn an_unset_variable_is_placed_on_its_own_line() {
    let text = format!("{NET}services:\n  web:\n    image: x\n    command: [\"${{NOPE}}\"]\n");
    let config = compose(&text).expect("valid apart from the unset variable");
    let unset = &config.warnings[0];
    assert!(unset.message.contains("NOPE"), "{unset:?}");
    assert_eq!((unset.line, unset.column), (9, 16), "at its $: {unset:?}");

    let text =
        format!("{NET}services:\n  web:\n    image: x\n    command: x\n       →→→${{NOPE}}\n");
    let config = compose(&text).expect("valid apart from the unset variable");
    let unset = &config.warnings[0];
    assert!(unset.message.contains("NOPE"), "{unset:?}");
    assert_eq!(unset.line, 10, "{unset:?}");
}

#[test]
fn wakes_with_and_prewake_come_from_x_imag_and_depends_on_keeps_its_order() {
    let text = format!(
        "{NET}x-imag:\n  wake:\n    prewake: learn\nservices:\n  web:\n    image: img\n    \
         depends_on: [db]\n    x-imag:\n      wakes_with: [api]\n  api:\n    image: img\n  \
         db:\n    image: img\n"
    );
    let config = compose(&text).unwrap();
    assert_eq!(config.wake.prewake, crate::config::PrewakeMode::Learn);
    let web = config.host("web").unwrap();
    assert_eq!(web.wakes_with, ["api"]);
    assert_eq!(
        web.depends_on[0].host, "db",
        "depends_on is still a dependency"
    );
    let found = problems(&format!(
        "{NET}services:\n  web:\n    image: img\n    x-imag:\n      wakes_with: [nope]\n"
    ));
    assert!(
        found[0]
            .2
            .contains("wakes with \"nope\", which is not a configured host"),
        "{found:?}"
    );
    assert_eq!(
        (found[0].0, found[0].1),
        (10, 20),
        "placed in the compose file: {found:?}"
    );
}

#[test]
fn bad_environment_names_and_overlong_durations_are_placed_in_compose_too() {
    let text = format!(
        "{NET}services:\n  web:\n    image: i\n    environment:\n      - \"=x\"\n      - A=1\n    \
         x-imag:\n      wake_timeout: 2h\n"
    );
    let found = problems(&text);
    assert_eq!(
        found,
        vec![
            (
                10,
                9,
                "environment variable name \"\" of host \"web\" is empty".to_string()
            ),
            (
                13,
                21,
                "wake_timeout 2h is longer than its maximum 1h".to_string()
            ),
        ]
    );
}
