//! Imports run downward only. Every module of `src/` belongs to one layer (its folder, or its
//! file at the top); a layer may name only the layers the table below gives it. The test
//! reads every `crate::<layer>` path outside comments — `use` lines and paths written out in
//! code alike — and fails naming the file, the line and the layer it should not reach.
//! `ARCHITECTURE.md` shows the same table; a test below keeps the two equal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each layer and the layers it may import, top to bottom.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "api",
            "node",
            "domain",
            "engine",
            "log",
            "storage",
            "config",
            "metrics",
            "telemetry",
            "model",
            "security",
            "pg",
        ],
    ),
    ("api", &["node", "domain", "engine", "storage", "config", "metrics", "telemetry", "model", "security"]),
    ("node", &["domain", "engine", "storage", "config", "metrics", "model", "security"]),
    ("domain", &["storage", "config", "telemetry", "model", "security"]),
    ("engine", &["storage", "metrics", "telemetry", "model", "security"]),
    ("log", &["storage", "telemetry", "model", "security", "pg"]),
    ("storage", &["model", "security"]),
    ("telemetry", &["config"]),
    ("config", &["model", "security", "pg"]),
    ("metrics", &["model"]),
    ("model", &["security"]),
    ("security", &[]),
    ("pg", &[]),
];

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file of `src/` is in: its first folder, or its name at the top.
fn layer_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// Every `crate::<name>` in `line` outside a comment.
fn named_layers(line: &str) -> Vec<String> {
    let code = match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    };
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        // `$crate::` in a macro, or a word ending in "crate", is not a path of ours.
        let before = rest[..i].chars().last();
        if !name.is_empty() && !before.is_some_and(|c| c == '$' || c.is_ascii_alphanumeric() || c == '_') {
            found.push(name);
        }
        rest = after;
    }
    found
}

/// (file, line number, from, to) of every import the table does not allow.
fn violations(src: &Path) -> Vec<(String, usize, String, String)> {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    source_files(src, &mut files);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let Some(layer) = layer_of(src, &file) else { continue };
        let may = allowed
            .get(layer.as_str())
            .unwrap_or_else(|| panic!("{}: layer {layer} is not in the table", file.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for to in named_layers(line) {
                if to != layer && !may.contains(&to.as_str()) {
                    out.push((file.display().to_string(), n + 1, layer.clone(), to));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_names_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let shown: Vec<String> =
        found.iter().map(|(f, n, from, to)| format!("{f}:{n}: {from} may not name {to}")).collect();
    assert!(found.is_empty(), "imports that run upward or sideways:\n{}", shown.join("\n"));
}

/// Only the log knows how it stores: no code above it names sled, a key, a row version or
/// the codec (the log's modules are private, so the compiler refuses the paths; sled is a
/// crate anyone could name, so this looks).
#[test]
fn nothing_outside_the_log_names_sled() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    for file in files.iter().filter(|f| !f.starts_with(src.join("log"))) {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            assert!(!code.contains("sled::"), "{}:{}: names sled: {line}", file.display(), n + 1);
        }
    }
}

#[test]
fn every_folder_and_top_file_of_src_is_a_layer_in_the_table() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known: Vec<&str> = ALLOWED.iter().map(|(l, _)| *l).collect();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let Some(layer) =
            layer_of(&src, &path.join("x.rs")).filter(|_| path.is_dir()).or_else(|| layer_of(&src, &path))
        else {
            continue;
        };
        assert!(known.contains(&layer.as_str()), "src/{layer} is in no layer of the table");
    }
}

#[test]
fn the_table_allows_no_circle_and_only_downward_imports() {
    // Downward: a layer may name only layers listed after it.
    let order: Vec<&str> = ALLOWED.iter().map(|(l, _)| *l).collect();
    for (i, (layer, may)) in ALLOWED.iter().enumerate() {
        for to in *may {
            let j = order.iter().position(|l| l == to).unwrap_or_else(|| panic!("{to} is not a layer"));
            assert!(j > i, "{layer} may name {to}, which is not below it");
        }
    }
}

#[test]
fn the_checker_finds_an_upward_import_and_ignores_comments() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("domain")).unwrap();
    std::fs::write(
        src.join("domain/x.rs"),
        "//! see [`crate::api`]\nuse crate::storage::Ledger;\nfn f() { crate::engine::go(); } // crate::api\n",
    )
    .unwrap();
    std::fs::write(src.join("model.rs"), "use crate::security::seal;\n").unwrap();
    let found = violations(src);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1, found[0].3.as_str()), (3, "engine"));
}

#[test]
fn architecture_md_shows_the_same_table() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    for (layer, may) in ALLOWED {
        let may = if may.is_empty() { "—".to_owned() } else { may.join(", ") };
        let row = format!("| `{layer}` | {may} |");
        assert!(doc.contains(&row), "ARCHITECTURE.md lacks the row {row}");
    }
}
