//! The module graph follows `docs/ARCHITECTURE.md`: each module of `src/`
//! imports only the modules its row in the layout table lists under "may
//! depend on", so the graph stays acyclic and the composition root (`node`)
//! is imported by nothing but the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Module → what its row says it may depend on, from the layout table.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/ARCHITECTURE.md")).unwrap();
    let header = "| module | owns | must never | may depend on |";
    let table = doc.split(header).nth(1).expect("the layout table");
    let mut rows = BTreeMap::new();
    for line in table.lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        let name = cells[0].trim();
        let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        let deps = cells.last().unwrap();
        let deps = deps
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        rows.insert(name.to_owned(), deps);
    }
    rows
}

/// The source files of the library's top-level module `name`.
fn files_of(name: &str) -> Vec<PathBuf> {
    let src = Path::new(ROOT).join("src");
    let single = src.join(format!("{name}.rs"));
    if single.exists() {
        return vec![single];
    }
    let mut out = Vec::new();
    let mut stack = vec![src.join(name)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The top-level modules of the library, from `src/lib.rs`.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

/// The crate modules `text` names (`crate::x::…` and `crate::{x, y}`).
fn imports(text: &str, modules: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or_default()
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for name in names {
            let name: String = name
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_what_its_row_allows() {
    let allowed = allowed();
    let modules = modules();
    let mut wrong = Vec::new();
    for module in &modules {
        if module == "proto" {
            continue; // generated code, used by all
        }
        let Some(may) = allowed.get(module) else {
            wrong.push(format!(
                "{module} has no row in docs/ARCHITECTURE.md's layout table"
            ));
            continue;
        };
        for file in files_of(module) {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            // Unit tests at the end of a file may reach further.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for used in imports(code, &modules) {
                if used != *module && used != "proto" && !may.contains(&used) {
                    wrong.push(format!(
                        "{} ({module}) uses {used}, which its row does not allow",
                        file.strip_prefix(ROOT).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_check_sees_an_import_that_breaks_the_rule() {
    let modules: Vec<String> = ["node", "model", "engine"].map(String::from).to_vec();
    let text = "use crate::{model::OrgId, engine};\nfn f() { crate::node::x(); }";
    assert_eq!(
        imports(text, &modules),
        ["engine", "model", "node"].map(String::from).into()
    );
    let allowed = allowed();
    assert!(
        !allowed["engine"].contains("node"),
        "{:?}",
        allowed["engine"]
    );
    assert!(allowed["node"].contains("engine"));
}
