//! Compose files as the configuration (`Config::parse_compose`): YAML, interpolation, the
//! services' translation and the shared validation, on arbitrary text. The same text is also read
//! as the `.env` file beside it, which goes through compose's own `.env` syntax.
//!
//! The variables stand in for the agent's environment; `env_file` paths start in a directory that
//! does not exist, so a fuzzed file never reads the machine's files through a relative path.

#![no_main]

use std::path::Path;

use imag_agent::{config::Config, dns::NameTable};
use libfuzzer_sys::fuzz_target;

fn env() -> Vec<(String, String)> {
    [
        ("TAG", "1.2"),
        ("PORT", "8080"),
        ("SUBNET", "10.77.0.0/24"),
        ("EMPTY", ""),
        ("HOST", "web"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
    .collect()
}

fn check(result: Result<Config, imag_agent::config::ConfigError>) {
    match result {
        Ok(config) => {
            for warning in &config.warnings {
                assert!(!warning.message.is_empty(), "a warning says nothing");
            }
            let names = NameTable::from_config(&config, &config.dns.domain);
            assert!(names.len() <= config.hosts.len());
            // What attach builds from every host: its container spec and the fingerprint of it.
            for host in &config.hosts {
                let _ = host.container_spec(&config.network.name).fingerprint();
            }
        }
        Err(err) => {
            assert!(!err.problems.is_empty(), "a rejection names no problem");
            let _ = err.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // compose files are read as UTF-8
    };
    let dir = Path::new("/nonexistent/imag-fuzz");
    check(Config::parse_compose(text, "compose.yml", env(), None, dir));
    let compose = "services:\n  web:\n    image: hello:${TAG}\n    ports: [\"${PORT}\"]\n";
    check(Config::parse_compose(
        compose,
        "compose.yml",
        env(),
        Some((Path::new(".env"), text)),
        dir,
    ));
});
