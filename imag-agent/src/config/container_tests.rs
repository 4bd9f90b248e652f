//! Unit tests of `container.rs`: each value type's syntax and message, and the `[[host]]` keys
//! end to end (mapped into the container spec, problems placed at line:column).

use std::time::Duration;

use super::*;
use crate::config::{Config, ReadyProbe, tests::problems};

fn err<T: FromStr<Err: std::fmt::Display> + std::fmt::Debug>(text: &str) -> String {
    text.parse::<T>().unwrap_err().to_string()
}

fn volume(source: MountSource, target: &str, read_only: bool) -> Mount {
    Mount {
        source,
        target: target.into(),
        read_only,
    }
}

#[test]
fn volumes_in_docker_syntax() {
    let named = |n: &str| MountSource::Volume(n.into());
    let bind = |p: &str| MountSource::Bind(p.into());
    assert_eq!(
        "data:/var/lib/data".parse(),
        Ok(Volume(volume(named("data"), "/var/lib/data", false)))
    );
    assert_eq!(
        "/etc/app:/config:ro".parse(),
        Ok(Volume(volume(bind("/etc/app"), "/config", true)))
    );
    assert_eq!(
        "db_1.x:/d:rw".parse(),
        Ok(Volume(volume(named("db_1.x"), "/d", false)))
    );
    assert_eq!(
        err::<Volume>("/data"),
        "volume \"/data\" has no name: write \"NAME:/data\" (an anonymous volume would lose its \
         data when the host sleeps with sleep = \"remove\")"
    );
    assert_eq!(
        err::<Volume>("data:var"),
        "mount \"data:var\": the path inside the container must be absolute (start with '/')"
    );
    assert!(err::<Volume>("./dir:/d").contains("must be an absolute host path"));
    assert!(err::<Volume>("-x:/d").contains("must be an absolute host path"));
    assert_eq!(
        err::<Volume>("data:/d:z"),
        "mount \"data:/d:z\": mode \"z\" is neither \"ro\" nor \"rw\""
    );
    assert!(err::<Volume>("a:/b:ro:x").starts_with("volume \"a:/b:ro:x\" is not"));
    assert!(err::<Volume>("data").starts_with("volume \"data\" is not"));
}

#[test]
fn tmpfs_capabilities_users_paths_labels() {
    assert_eq!(
        "/run".parse(),
        Ok(Tmpfs {
            target: "/run".into(),
            options: String::new()
        })
    );
    assert_eq!(
        "/tmp:size=64m,mode=1777".parse(),
        Ok(Tmpfs {
            target: "/tmp".into(),
            options: "size=64m,mode=1777".into()
        })
    );
    assert_eq!(
        err::<Tmpfs>("tmp"),
        "tmpfs \"tmp\" is not \"/path\" or \"/path:OPTIONS\" (like \"/tmp:size=64m\")"
    );
    assert!("/tmp:size=1 m".parse::<Tmpfs>().is_err());

    assert_eq!("NET_ADMIN".parse(), Ok(Capability("NET_ADMIN".into())));
    assert_eq!("cap_sys_time".parse(), Ok(Capability("SYS_TIME".into())));
    assert_eq!("all".parse(), Ok(Capability("ALL".into())));
    assert_eq!(
        err::<Capability>("net admin"),
        "\"net admin\" is not a capability name (like \"NET_ADMIN\" or \"ALL\")"
    );
    assert!("CAP_".parse::<Capability>().is_err());

    for good in ["1000", "1000:1000", "app", "app:staff"] {
        assert_eq!(good.parse(), Ok(User(good.into())));
    }
    for bad in ["", ":1", "1:", "a:b:c", "a b"] {
        assert!(bad.parse::<User>().is_err(), "{bad:?}");
    }
    assert_eq!("/srv".parse(), Ok(ContainerPath("/srv".into())));
    assert_eq!(
        err::<ContainerPath>("srv"),
        "\"srv\" is not an absolute path inside the container"
    );
    assert_eq!("app.tier".parse(), Ok(LabelKey("app.tier".into())));
    assert_eq!(
        err::<LabelKey>("imag.host"),
        "label \"imag.host\": keys starting with \"imag.\" are imag's own"
    );
    assert!("IMAG.spec".parse::<LabelKey>().is_err());
    assert!("imagine".parse::<LabelKey>().is_ok());
}

#[test]
fn numbers_and_health_values() {
    assert_eq!(Cpus::from_raw(&0.5), Ok(Cpus(500_000_000)));
    assert_eq!(Cpus::from_raw(&2.0), Ok(Cpus(2_000_000_000)));
    assert_eq!(
        Cpus::from_raw(&0.0).unwrap_err().to_string(),
        "0 is not a CPU count: give a number above zero, like 0.5 or 2"
    );
    assert!(Cpus::from_raw(&-1.0).is_err());
    assert!(Cpus::from_raw(&f64::NAN).is_err());
    assert_eq!(PidsLimit::from_raw(&100), Ok(PidsLimit(100)));
    assert!(PidsLimit::from_raw(&0).is_err());
    assert_eq!(
        PidsLimit::from_raw(&-1).unwrap_err().to_string(),
        "-1 is not a process limit: give a number from 1 to 4294967295 (or leave it out)"
    );
    let string = |s: &str| raw::StringOrList::String(s.into());
    let list = |l: &[&str]| {
        raw::StringOrList::List(l.iter().map(std::string::ToString::to_string).collect())
    };
    assert_eq!(
        HealthTest::from_raw(&string("curl -f localhost")),
        Ok(HealthTest(vec![
            "CMD-SHELL".into(),
            "curl -f localhost".into()
        ]))
    );
    assert_eq!(
        HealthTest::from_raw(&list(&["CMD", "/check"])),
        Ok(HealthTest(vec!["CMD".into(), "/check".into()]))
    );
    assert!(HealthTest::from_raw(&list(&["NONE"])).is_ok());
    for bad in [list(&["/check"]), list(&["CMD"]), list(&[]), string(" ")] {
        assert_eq!(HealthTest::from_raw(&bad), Err(BadHealthTest));
    }
    assert_eq!("2s".parse(), Ok(HealthDuration(Duration::from_secs(2))));
    assert_eq!(err::<HealthDuration>("500us"), "must be at least 1ms");
    assert_eq!(err::<HealthDuration>("0s"), "must be longer than zero");
}

const HOST: &str = "[network]\nsubnet = \"10.0.0.0/24\"\n[[host]]\nname = \"db\"\naddress = \
                    \"10.0.0.5\"\nimage = \"x\"\n";

#[test]
fn every_key_reaches_the_container_spec() {
    let text = HOST.to_string()
        + r#"volumes = ["data:/var/lib/db", "/etc/db:/etc/db:ro"]
mounts = [{ type = "volume", source = "logs", target = "/logs", read_only = true }]
user = "999:999"
working_dir = "/srv"
entrypoint = ["/bin/db", "--fast"]
memory = "256MiB"
cpus = 0.5
pids_limit = 100
cap_add = ["net_admin"]
cap_drop = ["ALL"]
tmpfs = ["/run", "/tmp:size=64m"]
labels = { "app.tier" = "data" }
ready = "healthy"
healthcheck = { test = ["CMD", "/bin/db", "--check"], interval = "1s", timeout = "500ms", retries = 3, start_period = "2s", start_interval = "50ms" }
"#;
    let config = Config::parse(&text, "t").unwrap();
    let host = &config.hosts[0];
    assert_eq!(host.ready, ReadyProbe::Healthy);
    let spec = host.container_spec("imag");
    assert_eq!(spec.options, host.container, "copied as it is");
    let o = &spec.options;
    assert_eq!(
        o.mounts,
        vec![
            volume(MountSource::Volume("data".into()), "/var/lib/db", false),
            volume(MountSource::Bind("/etc/db".into()), "/etc/db", true),
            volume(MountSource::Volume("logs".into()), "/logs", true),
        ]
    );
    assert_eq!(o.user.as_deref(), Some("999:999"));
    assert_eq!(o.working_dir.as_deref(), Some("/srv"));
    assert_eq!(
        o.entrypoint,
        Some(vec!["/bin/db".to_string(), "--fast".into()])
    );
    assert_eq!(o.memory, Some(256 << 20));
    assert_eq!(o.nano_cpus, Some(500_000_000));
    assert_eq!(o.pids_limit, Some(100));
    assert_eq!(o.cap_add, vec!["NET_ADMIN".to_string()]);
    assert_eq!(o.cap_drop, vec!["ALL".to_string()]);
    assert_eq!(
        o.tmpfs,
        BTreeMap::from([
            ("/run".to_string(), String::new()),
            ("/tmp".to_string(), "size=64m".to_string())
        ])
    );
    assert_eq!(
        o.labels,
        BTreeMap::from([("app.tier".to_string(), "data".to_string())])
    );
    assert_eq!(
        o.healthcheck,
        Some(Healthcheck {
            test: vec!["CMD".into(), "/bin/db".into(), "--check".into()],
            interval: Some(Duration::from_secs(1)),
            timeout: Some(Duration::from_millis(500)),
            retries: Some(3),
            start_period: Some(Duration::from_secs(2)),
            start_interval: Some(Duration::from_millis(50)),
        })
    );
}

#[test]
fn a_spec_without_options_keeps_its_fingerprint() {
    let config = Config::parse(HOST, "t").unwrap();
    let spec = config.hosts[0].container_spec("imag");
    assert_eq!(spec.options, ContainerOptions::default());
    // The JSON before container options existed: containers made by an older agent stay current.
    assert_eq!(
        spec.fingerprint(),
        r#"{"name":"imag-db","host":"db","network":"imag","address":"10.0.0.5","image":"x","command":null,"env":{}}"#
    );
    let with = |extra: &str| {
        let config = Config::parse(&(HOST.to_string() + extra), "t").unwrap();
        config.hosts[0].container_spec("imag").fingerprint()
    };
    let plain = spec.fingerprint();
    for extra in [
        "volumes = [\"d:/d\"]\n",
        "memory = \"1g\"\n",
        "cpus = 1.0\n",
        "labels = { a = \"b\" }\n",
        "healthcheck = { test = \"true\" }\n",
        "tmpfs = [\"/t\"]\n",
    ] {
        assert_ne!(with(extra), plain, "{extra}");
    }
    assert_ne!(with("memory = \"1g\"\n"), with("memory = \"2g\"\n"));
}

#[test]
fn problems_are_placed_at_their_values() {
    let text = HOST.to_string()
        + r#"volumes = ["/data", "ok:/ok"]
mounts = [{ type = "tmpfs", source = "x", target = "/x" }]
user = "a b"
working_dir = "srv"
entrypoint = []
memory = "lots"
cpus = 0
pids_limit = -1
cap_add = ["net admin"]
tmpfs = ["tmp"]
labels = { "imag.host" = "evil" }
healthcheck = { test = ["/check"], interval = "0s", retries = 0 }
"#;
    let found = problems(&text);
    let at = |line: usize| {
        found
            .iter()
            .filter(|p| p.0 == line)
            .map(|p| (p.1, p.2.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(found.len(), 14, "{found:?}");
    assert_eq!(at(7)[0].0, 12, "the bad item, not the list");
    assert!(at(7)[0].1.contains("has no name"));
    assert_eq!(
        at(8),
        vec![(
            20,
            "mount type \"tmpfs\" is neither \"volume\" nor \"bind\""
        )]
    );
    assert_eq!(
        at(9),
        vec![(
            8,
            "user \"a b\" is not \"USER\" or \"USER:GROUP\" (names or numbers, like \"1000:1000\")"
        )]
    );
    assert!(
        at(10)[0]
            .1
            .starts_with("working_dir \"srv\" is not an absolute path")
    );
    assert!(at(11)[0].1.starts_with("entrypoint is empty"));
    assert!(at(12)[0].1.starts_with("memory \"lots\" is not a size"));
    assert!(at(13)[0].1.starts_with("cpus 0 is not a CPU count"));
    assert!(
        at(14)[0]
            .1
            .starts_with("pids_limit -1 is not a process limit")
    );
    assert!(at(15)[0].1.contains("\"net admin\" is not a capability"));
    assert!(at(16)[0].1.starts_with("tmpfs \"tmp\""));
    assert_eq!(at(17)[0].0, 12);
    assert!(
        at(17)[0]
            .1
            .contains("keys starting with \"imag.\" are imag's own")
    );
    let health = at(18);
    assert_eq!(health.len(), 3, "{health:?}");
    assert!(
        health[0]
            .1
            .starts_with("healthcheck test must be a shell command")
    );
    assert_eq!(health[1].1, "healthcheck interval must be longer than zero");
    assert_eq!(health[2].1, "healthcheck retries must be at least 1");
}

#[test]
fn ready_healthy_needs_a_healthcheck_that_checks() {
    let ok = Config::parse(&(HOST.to_string() + "ready = \"healthy\"\n"), "t").unwrap();
    assert_eq!(
        ok.hosts[0].ready,
        ReadyProbe::Healthy,
        "the image's own healthcheck may serve: known only at wake"
    );
    let found = problems(
        &(HOST.to_string() + "ready = \"healthy\"\nhealthcheck = { test = [\"NONE\"] }\n"),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (7, 9));
    assert!(found[0].2.contains("its healthcheck is \"NONE\""));
}
