//! `imag.toml`: parsing and validation (`Config::parse`) of arbitrary text. Every rejection must
//! be a `ConfigError` whose problems render, and a configuration that validates must be usable
//! by what reads it first at attach (the DNS name table, each host's container spec).

#![no_main]

use imag_agent::{config::Config, dns::NameTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // the agent reads the file as UTF-8 and fails before parsing otherwise
    };
    match Config::parse(text, "fuzz.toml") {
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
});
