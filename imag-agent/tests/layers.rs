//! The agent's modules stand in layers, and imports only go down: a module may use the modules of
//! lower layers (and its own), never one above it, so there is no import circle and no import
//! running back up. This test reads the sources (no root needed) and fails naming the import
//! that breaks the rule. docs/ARCHITECTURE.md draws the same layers.

use std::{collections::BTreeSet, path::Path};

/// Bottom to top. Modules in one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["clock", "interfaces", "packets", "procnet", "firewall"],
    &["runtime"],
    &["config", "report"],
    &["datapath", "dns", "cluster"],
    &["readiness"],
    &["orchestrator"],
    &["ops"],
    &["agent"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules `text` imports through `crate::…` (comments and unit tests skipped).
fn imports(text: &str) -> BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::…, b, c::{…}}`: the first word of each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(first_word(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(first_word(&item));
        } else {
            found.extend(first_word(rest));
        }
    }
    found
}

fn first_word(text: &str) -> Option<String> {
    let word: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_only_go_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(module.as_str(), "lib" | "main") {
            continue; // the crate root and the binary stand above everything
        }
        // Unit-test files (`tests.rs`, `*_tests.rs`) may reach wherever a test needs.
        let name = relative.file_name().unwrap().to_string_lossy();
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{module} is in no layer: add it to LAYERS"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for import in imports(&text) {
            if import == module {
                continue;
            }
            match layer_of(&import) {
                Some(layer) if layer < own => {}
                Some(_) => problems.push(format!(
                    "{} imports crate::{import}, which is not below {module}",
                    relative.display()
                )),
                None => problems.push(format!(
                    "{} imports crate::{import}, which is in no layer",
                    relative.display()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_import_reader_finds_grouped_and_plain_imports() {
    let text = "use crate::{\n    clock::x,\n    runtime::{A, B},\n    report,\n};\n\
                fn f() { crate::config::load(); }\n// crate::agent in a comment\n";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["clock", "config", "report", "runtime"]);
}
