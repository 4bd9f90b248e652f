//! The machine a run measured on (every report's first line).

use std::{path::Path, process::Command};

use serde::Serialize;

use crate::cmd_output;

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub docker: String,
    pub date: String,
    pub revision: String,
}

pub fn machine(root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        kernel: cmd_output(Command::new("uname").arg("-r")).unwrap_or_default(),
        docker: cmd_output(Command::new("docker").args([
            "version",
            "--format",
            "{{.Server.Version}} (API {{.Server.APIVersion}})",
        ]))
        .unwrap_or_default(),
        date: cmd_output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .unwrap_or_default(),
        revision: cmd_output(Command::new("git").current_dir(root).args([
            "rev-parse",
            "--short=12",
            "HEAD",
        ]))
        .unwrap_or_default(),
    }
}
