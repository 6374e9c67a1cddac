//! `cargo xtask tidy`: the rules of docs/ARCHITECTURE.md and of the project's standards that a
//! compiler does not check, checked over the source tree. Every failure is printed as
//! `path:line: message`.
//!
//! Which dependency edges count: *normal* dependencies (not dev-dependencies, not
//! build-dependencies) of the product crates, the workspace members under `crates/`. The
//! end-to-end crate (`tests/`) and `xtask` are tooling: what they depend on only tests or builds
//! the product, so they may use hyper, reqwest and the rest; so may every crate's tests through
//! its dev-dependencies. "Layer 0 has no tokio" follows the resolved graph (a layer 0 crate must
//! not reach tokio through any chain of normal dependencies); "only X knows Y" is about direct
//! dependencies (a crate that depends on `flock-store` does not know sqlx).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Layer 0: plain data and pure functions.
const LAYER_0: &[&str] = &[
    "flock-models",
    "flock-signing",
    "flock-retry",
    "flock-schema",
];
/// What layer 0 must not reach.
const NOT_IN_LAYER_0: &[&str] = &["tokio"];
/// Third-party crates that only the named product crates may depend on.
const OWNED: &[(&str, &[&str])] = &[
    ("actix-web", &["flock-api"]),
    ("boon", &["flock-schema"]),
    ("hmac", &["flock-signing"]),
    ("reqwest", &["flock-llm"]),
    ("sqlx", &["flock-store"]),
];
/// Macros that must not be left in the code.
const LEFTOVERS: &[&str] = &["dbg", "todo", "unimplemented"];
/// Where the crates must be named.
const ARCHITECTURE: &str = "docs/ARCHITECTURE.md";

/// One broken rule, where it is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Relative to the workspace root, with `/` separators.
    path: String,
    /// From 1.
    line: usize,
    message: String,
}

impl Failure {
    fn new(path: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Failure {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// Runs every rule over the workspace at `root`, printing each rule's failures; true when none
/// failed.
pub(crate) fn run(root: &Path) -> bool {
    let metadata = match cargo_metadata(root) {
        Ok(metadata) => metadata,
        Err(err) => {
            eprintln!("tidy: {err}");
            return false;
        }
    };
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let architecture = read(&root.join(ARCHITECTURE)).unwrap_or_default();
    let mut sources = Vec::new();
    rust_files(root, &mut sources);
    sources.sort();
    let mut per_file: [Vec<Failure>; 3] = Default::default();
    let mut functions: HashSet<String> = HashSet::new();
    for path in &sources {
        let Some(text) = read(path) else {
            per_file[0].push(Failure::new(relative(root, path), 1, "cannot be read"));
            continue;
        };
        let shown = relative(root, path);
        per_file[0].extend(opens_with_doc(&shown, &text));
        let code = code_only(&text);
        per_file[1].extend(allows_have_reasons(&shown, &code));
        per_file[2].extend(no_leftovers(&shown, &code));
        functions.extend(function_names(&code));
    }
    let [docs, allows, leftovers] = per_file;
    let rules = [
        (
            "dependency rules of docs/ARCHITECTURE.md",
            dependency_rules(&metadata, read),
        ),
        (
            "every crate named in docs/ARCHITECTURE.md",
            crates_named(&metadata, &architecture, read),
        ),
        (
            "every test docs/ARCHITECTURE.md names exists",
            tests_named(&architecture, &functions),
        ),
        ("every .rs file opens with //!", docs),
        ("every #[allow] and #[expect] has a reason", allows),
        ("no dbg!, todo! or unimplemented! left", leftovers),
    ];
    let mut clean = true;
    for (rule, failures) in rules {
        if failures.is_empty() {
            eprintln!("tidy: ok: {rule}");
            continue;
        }
        clean = false;
        eprintln!("tidy: FAILED: {rule}");
        for failure in failures {
            eprintln!("{failure}");
        }
    }
    eprintln!(
        "tidy: {} .rs files, {} crates",
        sources.len(),
        metadata.members.len()
    );
    clean
}

/// Every `.rs` file under `dir`, skipping `target` and hidden directories (git worktrees of
/// other branches live under `.worktrees/`).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if !name.starts_with('.') && name != "target" {
                rust_files(&path, out);
            }
        } else if kind.is_file() && name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn relative(root: &Path, path: &Path) -> String {
    let path = path.strip_prefix(root).unwrap_or(path);
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Rule: the file's first line is a `//!` line saying what the file is for.
fn opens_with_doc(path: &str, text: &str) -> Option<Failure> {
    let first = text.lines().next().unwrap_or("");
    let said = first
        .strip_prefix("//!")
        .is_some_and(|rest| !rest.trim().is_empty());
    (!said).then(|| {
        Failure::new(
            path,
            1,
            "the file does not open with a `//!` line saying what it is for",
        )
    })
}

/// Rule: every `#[allow(...)]`, `#![allow(...)]`, `#[expect(...)]` and `#![expect(...)]` says
/// why with `reason = "..."`. `code` is the file with comments and literals blanked.
fn allows_have_reasons(path: &str, code: &str) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (start, word) in identifiers(code) {
        if word != "allow" && word != "expect" {
            continue;
        }
        let before = code[..start].trim_end();
        let Some(before) = before.strip_suffix('[') else {
            continue;
        };
        let before = before.trim_end();
        let before = before.strip_suffix('!').unwrap_or(before).trim_end();
        if !before.ends_with('#') {
            continue;
        }
        let after = code[start + word.len()..].trim_start();
        if !after.starts_with('(') {
            continue;
        }
        let args = balanced(after);
        let has_reason = identifiers(args)
            .any(|(at, w)| w == "reason" && args[at + w.len()..].trim_start().starts_with('='));
        if !has_reason {
            failures.push(Failure::new(
                path,
                line_of(code, start),
                format!("`#[{word}(...)]` without a reason: add `reason = \"...\"` saying why"),
            ));
        }
    }
    failures
}

/// Rule: no `dbg!`, `todo!` or `unimplemented!` in the code (comments and literals do not
/// count).
fn no_leftovers(path: &str, code: &str) -> Vec<Failure> {
    identifiers(code)
        .filter(|(at, word)| {
            LEFTOVERS.contains(word) && code[at + word.len()..].trim_start().starts_with('!')
        })
        .map(|(at, word)| {
            Failure::new(
                path,
                line_of(code, at),
                format!("`{word}!` left in the code"),
            )
        })
        .collect()
}

/// The identifiers of `code` (words of letters, digits and `_` not starting with a digit),
/// with their byte offsets.
fn identifiers(code: &str) -> impl Iterator<Item = (usize, &str)> {
    let bytes = code.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphabetic() || b == b'_' {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                return Some((start, &code[start..i]));
            }
            if b.is_ascii_digit() {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                continue;
            }
            i += 1;
        }
        None
    })
}

/// The text from `text`'s opening `(` to its matching `)`, both included (to the end when
/// unbalanced).
fn balanced(text: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[..=i];
                }
            }
            _ => {}
        }
    }
    text
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

/// `text` with comments and the insides of string and character literals replaced by spaces
/// (line breaks kept, so offsets and line numbers stay), so the rules see only code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    // Blanks chars[from..to] into `out`, keeping line breaks and byte lengths.
    let blank = |out: &mut String, chars: &[char]| {
        for &c in chars {
            if c == '\n' {
                out.push('\n');
            } else {
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev_ident = i > 0 && ident(chars[i - 1]);
        if c == '/' && next == Some('/') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n);
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &chars[i..j.min(chars.len())]);
            i = j;
        } else if !prev_ident && let Some((hashes, open)) = raw_string_start(&chars[i..]) {
            // r"...", r#"..."#, br"...", cr"...": ends at a quote followed by as many #.
            let body = i + open;
            let mut j = body;
            while j < chars.len() {
                if chars[j] == '"'
                    && chars[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&c| c == '#')
                        .count()
                        == hashes
                {
                    break;
                }
                j += 1;
            }
            let end = j.min(chars.len());
            out.extend(&chars[i..body]);
            blank(&mut out, &chars[body..end]);
            let close = (end + 1 + hashes).min(chars.len());
            out.extend(&chars[end..close]);
            i = close;
        } else if c == '"' {
            out.push('"');
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let j = j.min(chars.len());
            blank(&mut out, &chars[i + 1..j]);
            if j < chars.len() {
                out.push('"');
            }
            i = j + 1;
        } else if c == '\'' && (!prev_ident || byte_prefix(&chars[..i])) {
            // A character literal ('a', '\n', '\u{1F600}', b'x'); a lifetime ('a, 'static) is
            // code.
            let end = if next == Some('\\') {
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&c| c == '\''))
                    .map(|n| i + 3 + n)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    blank(&mut out, &chars[i + 1..end]);
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `before` ends with a `b` that starts a token (the prefix of `b'x'`).
fn byte_prefix(before: &[char]) -> bool {
    match before {
        [.., prev, 'b'] => !(prev.is_alphanumeric() || *prev == '_'),
        ['b'] => true,
        _ => false,
    }
}

/// At the start of a raw string literal (`r`, `br` or `cr`, then `#`s, then `"`): how many `#`
/// it has and how many chars its opening takes.
fn raw_string_start(chars: &[char]) -> Option<(usize, usize)> {
    let prefix = match chars {
        ['r', ..] => 1,
        ['b' | 'c', 'r', ..] => 2,
        _ => return None,
    };
    let hashes = chars[prefix..].iter().take_while(|&&c| c == '#').count();
    (chars.get(prefix + hashes) == Some(&'"')).then_some((hashes, prefix + hashes + 1))
}

/// The parts of `cargo metadata` the rules need.
#[derive(Debug)]
struct Metadata {
    root: PathBuf,
    packages: HashMap<String, Package>,
    members: Vec<String>,
    /// Normal-dependency edges of the resolved graph, by package id.
    normal: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Package {
    name: String,
    manifest: PathBuf,
    /// Declared normal dependencies: (package name, the key it is declared under).
    normal: Vec<(String, String)>,
}

fn cargo_metadata(root: &Path) -> Result<Metadata, String> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed something else than JSON: {e}"))?;
    Metadata::parse(&value)
}

impl Metadata {
    fn parse(value: &Value) -> Result<Self, String> {
        let text = |v: &Value, key: &str| -> Result<String, String> {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("cargo metadata: no `{key}`"))
        };
        let list = |v: &Value, key: &str| v[key].as_array().cloned().unwrap_or_default();
        let mut packages = HashMap::new();
        for p in list(value, "packages") {
            let normal = list(&p, "dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| {
                    let name = d["name"].as_str()?.to_owned();
                    let key = d["rename"].as_str().unwrap_or(&name).to_owned();
                    Some((name, key))
                })
                .collect();
            let package = Package {
                name: text(&p, "name")?,
                manifest: PathBuf::from(text(&p, "manifest_path")?),
                normal,
            };
            packages.insert(text(&p, "id")?, package);
        }
        let mut normal = HashMap::new();
        for node in list(&value["resolve"], "nodes") {
            let deps = list(&node, "deps")
                .iter()
                .filter(|d| list(d, "dep_kinds").iter().any(|k| k["kind"].is_null()))
                .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
                .collect();
            normal.insert(text(&node, "id")?, deps);
        }
        Ok(Metadata {
            root: PathBuf::from(text(value, "workspace_root")?),
            members: list(value, "workspace_members")
                .iter()
                .filter_map(|m| m.as_str().map(str::to_owned))
                .collect(),
            packages,
            normal,
        })
    }

    fn members(&self) -> impl Iterator<Item = (&str, &Package)> {
        self.members
            .iter()
            .filter_map(|id| Some((id.as_str(), self.packages.get(id)?)))
    }

    /// Whether a member is a product crate (its manifest is under `crates/`).
    fn is_product(&self, package: &Package) -> bool {
        package.manifest.starts_with(self.root.join("crates"))
    }
}

/// Rule: the dependency rules of docs/ARCHITECTURE.md (see the module's documentation for which
/// edges count). `read` gives a manifest's text, for line numbers.
fn dependency_rules(metadata: &Metadata, read: impl Fn(&Path) -> Option<String>) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (id, package) in metadata.members() {
        if !metadata.is_product(package) {
            continue;
        }
        let manifest_text = read(&package.manifest).unwrap_or_default();
        let manifest = relative(&metadata.root, &package.manifest);
        let at = |key: &str| dependency_line(&manifest_text, key);
        for (dep, key) in &package.normal {
            if let Some((_, owners)) = OWNED.iter().find(|(crate_, _)| crate_ == dep)
                && !owners.contains(&package.name.as_str())
            {
                let (verb, owners) = match owners {
                    [one] => ("knows", (*one).to_owned()),
                    [rest @ .., last] => ("know", format!("{} and {last}", rest.join(", "))),
                    [] => ("knows", "no crate".to_owned()),
                };
                failures.push(Failure::new(
                    &manifest,
                    at(key),
                    format!(
                        "{} depends on {dep}: only {owners} {verb} {dep} (docs/ARCHITECTURE.md)",
                        package.name
                    ),
                ));
            }
        }
        if LAYER_0.contains(&package.name.as_str()) {
            for (chain, forbidden) in reach(metadata, id, NOT_IN_LAYER_0) {
                let first = &chain[1];
                let key = package
                    .normal
                    .iter()
                    .find(|(name, _)| name == first)
                    .map_or(first.as_str(), |(_, key)| key.as_str());
                failures.push(Failure::new(
                    &manifest,
                    at(key),
                    format!(
                        "{} is layer 0 and must not reach {forbidden}, but does: {}",
                        package.name,
                        chain.join(" -> ")
                    ),
                ));
            }
        }
    }
    failures
}

/// The chains of normal dependencies from `from` to any package named in `targets`, shortest
/// first, one per target reached, as package names.
fn reach(metadata: &Metadata, from: &str, targets: &[&str]) -> Vec<(Vec<String>, String)> {
    let name = |id: &str| {
        metadata
            .packages
            .get(id)
            .map_or_else(|| id.to_owned(), |p| p.name.clone())
    };
    let mut parent: HashMap<&str, &str> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::from([from]);
    let mut queue = VecDeque::from([from]);
    let mut found = Vec::new();
    let mut reported = HashSet::new();
    while let Some(id) = queue.pop_front() {
        for dep in metadata.normal.get(id).into_iter().flatten() {
            if !seen.insert(dep) {
                continue;
            }
            parent.insert(dep, id);
            let dep_name = name(dep);
            if targets.contains(&dep_name.as_str()) && reported.insert(dep_name.clone()) {
                let mut chain = vec![dep_name.clone()];
                let mut at = id;
                while at != from {
                    chain.push(name(at));
                    at = parent[at];
                }
                chain.push(name(from));
                chain.reverse();
                found.push((chain, dep_name));
            }
            queue.push_back(dep);
        }
    }
    found
}

/// The line of `manifest` where the dependency `key` is declared in a normal dependency table
/// (`key = ...`, `key.workspace = true`, or a `[dependencies.key]` table); 1 when not found.
fn dependency_line(manifest: &str, key: &str) -> usize {
    let mut normal_table = false;
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']').trim();
            if header == format!("dependencies.{key}") {
                return n + 1;
            }
            normal_table = header == "dependencies"
                || (header.starts_with("target.") && header.ends_with(".dependencies"));
            continue;
        }
        if normal_table
            && let Some(rest) = line.strip_prefix(key)
            && rest.trim_start().starts_with(['=', '.'])
        {
            return n + 1;
        }
    }
    1
}

/// Rule: every workspace crate is named in docs/ARCHITECTURE.md, as `` `name` `` or
/// `` `crates/name` ``.
fn crates_named(
    metadata: &Metadata,
    architecture: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Vec<Failure> {
    let mut failures: Vec<Failure> = metadata
        .members()
        .filter(|(_, p)| {
            !architecture.contains(&format!("`{}`", p.name))
                && !architecture.contains(&format!("/{}`", p.name))
        })
        .map(|(_, p)| {
            let text = read(&p.manifest).unwrap_or_default();
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("name"))
                .map_or(1, |n| n + 1);
            Failure::new(
                relative(&metadata.root, &p.manifest),
                line,
                format!("crate `{}` is not named in {ARCHITECTURE}", p.name),
            )
        })
        .collect();
    failures.sort_by(|a, b| a.path.cmp(&b.path));
    failures
}

/// The names of the functions `code` (comments and literals blanked) defines.
fn function_names(code: &str) -> impl Iterator<Item = String> + '_ {
    let mut words = identifiers(code).map(|(_, word)| word).peekable();
    std::iter::from_fn(move || {
        loop {
            let word = words.next()?;
            if word == "fn"
                && let Some(name) = words.peek()
            {
                return Some((*name).to_owned());
            }
        }
    })
}

/// Rule: every test docs/ARCHITECTURE.md gives as the check of an invariant exists. The checks
/// are the italic parts of the invariants (`*... `module::test_name` ...*`); a name is any
/// backticked `snake_case` word with at least two underscores, optionally after `module::`.
fn tests_named(architecture: &str, functions: &HashSet<String>) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut in_check = false;
    let mut line = 1;
    // Code spans may wrap across lines, so the document is split at backticks as a whole.
    for (i, part) in architecture.split('`').enumerate() {
        let at = line;
        line += part.matches('\n').count();
        // Outside backticks (even parts), count the asterisks that open and close checks.
        if i % 2 == 0 {
            in_check ^= part.matches('*').count() % 2 == 1;
            continue;
        }
        if !in_check {
            continue;
        }
        let name = part.trim().rsplit("::").next().unwrap_or(part);
        let is_test_name = name.matches('_').count() >= 2
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if is_test_name && !functions.contains(name) {
            failures.push(Failure::new(
                ARCHITECTURE,
                at,
                format!("no test is called `{name}`, which is named as a check here"),
            ));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tests_architecture_names_must_exist() {
        let functions: HashSet<String> =
            function_names(&code_only("fn a_real_test() {}\nfn helper() {}\n")).collect();
        assert!(functions.contains("a_real_test"));
        let doc = "- **An invariant.** *crate `module::a_real_test` and\n  `a_missing_one_here`.*\n\
                   - **Another** *`cargo\n  xtask tidy`, wrapped.*\n\
                   - Prose about `some_function_name` outside a check.\n";
        let failures = tests_named(doc, &functions);
        assert_eq!(
            failures,
            [Failure::new(
                ARCHITECTURE,
                2,
                "no test is called `a_missing_one_here`, which is named as a check here"
            )]
        );
    }

    // The bad examples below are string literals: tidy, run over this file, blanks literals
    // before it looks, so it does not find them here.

    #[test]
    fn a_file_must_open_with_a_doc_line() {
        assert_eq!(
            opens_with_doc("a.rs", "//! What this is for.\nfn f() {}\n"),
            None
        );
        for bad in [
            "fn f() {}\n",
            "\n//! Too late.\n",
            "//!\n",
            "// A plain comment.\n",
            "",
        ] {
            let failure = opens_with_doc("src/a.rs", bad).expect(bad);
            assert_eq!(
                failure.to_string(),
                "src/a.rs:1: the file does not open with a `//!` line saying what it is for"
            );
        }
    }

    #[test]
    fn every_allow_and_expect_needs_a_reason() {
        let text = [
            "//! x",
            "#[allow(dead_code)]",
            "fn a() {}",
            "#[allow(unused, reason = \"kept for the test\")]",
            "#[expect(clippy::too_many_lines)]",
            "#![allow(unused)]",
            "# [ allow ( dead_code ) ]",
            "#[expect(",
            "    dead_code,",
            "    reason = \"only the tests use it\"",
            ")]",
            "struct S { reason: u8 }",
            "#[allow(dead_code)] // reason = \"in a comment is no reason\"",
        ]
        .join("\n");
        let failures = allows_have_reasons("src/lib.rs", &code_only(&text));
        let lines: Vec<usize> = failures.iter().map(|f| f.line).collect();
        assert_eq!(lines, [2, 5, 6, 7, 13], "{failures:#?}");
        assert_eq!(
            failures[0].to_string(),
            "src/lib.rs:2: `#[allow(...)]` without a reason: add `reason = \"...\"` saying why"
        );
        assert!(failures[1].message.contains("#[expect(...)]"));
        // In comments and strings it is no attribute, and a function called allow is none.
        let quoted = "// #[allow(x)]\nconst S: &str = \"#[allow(y)]\";\nfn allow(x: u8) {}\n";
        assert!(allows_have_reasons("q.rs", &code_only(quoted)).is_empty());
    }

    #[test]
    fn leftover_macros_are_refused_with_their_line() {
        let text = "//! x\nfn f() {\n    dbg!(1);\n    std::todo!();\n    unimplemented! {}\n}\n";
        let failures = no_leftovers("src/f.rs", &code_only(text));
        let shown: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "src/f.rs:3: `dbg!` left in the code",
                "src/f.rs:4: `todo!` left in the code",
                "src/f.rs:5: `unimplemented!` left in the code",
            ]
        );
        // Comments, strings, other macros and plain words are not leftovers.
        let fine = "// dbg!(x)\nlet s = \"todo!()\";\nlet c = '!';\nmy_dbg!(x);\nlet todo = 1;\nlet r = r#\"dbg!(\"#;\n/* todo!() */\n";
        assert!(no_leftovers("g.rs", &code_only(fine)).is_empty());
    }

    #[test]
    fn code_only_blanks_comments_and_literals_and_keeps_lines() {
        let text = "let a = \"x // y\"; // note\n/* a /* nested */ block\n*/ let b = 'c';\nfn f<'a>(x: &'a str) {}\nlet r = br##\"raw \"# still\"##; dbg\nlet e = '\\''; let q = b'\"'; todo\n";
        let code = code_only(text);
        assert_eq!(code.len(), text.len());
        let lines: Vec<&str> = code.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "let a = \"      \";",
                "",
                "   let b = ' ';",
                "fn f<'a>(x: &'a str) {}",
                "let r = br##\"            \"##; dbg",
                "let e = '  '; let q = b' '; todo",
            ]
        );
    }

    /// A workspace like the project's: `flock-models` (layer 0) reaches tokio through `bad-io`;
    /// `flock-signing` (layer 0) declares reqwest, which brings tokio; `flock-retry` has reqwest
    /// and tokio only as dev-dependencies; `flock-api` owns actix-web and may use tokio; the
    /// end-to-end crate (under `tests/`) uses reqwest and sqlx.
    fn metadata() -> Metadata {
        let id = |name: &str| format!("{name} 0.1.0");
        let package = |name: &str, manifest: &str, deps: &[(&str, Value)]| {
            json!({
                "name": name, "id": id(name), "manifest_path": manifest,
                "dependencies": deps.iter().map(|(d, kind)| json!({"name": d, "kind": kind, "rename": null})).collect::<Vec<_>>(),
            })
        };
        let node = |name: &str, deps: &[(&str, Value)]| {
            json!({"id": id(name), "deps": deps.iter().map(|(d, kind)| json!({
                "name": d, "pkg": id(d), "dep_kinds": [{"kind": kind, "target": null}],
            })).collect::<Vec<_>>()})
        };
        let normal = Value::Null;
        let dev = json!("dev");
        let models = [("serde", normal.clone()), ("bad-io", normal.clone())];
        let signing = [("reqwest", normal.clone())];
        let retry = [("reqwest", dev.clone()), ("tokio", dev)];
        let api = [("actix-web", normal.clone()), ("tokio", normal.clone())];
        let e2e = [("reqwest", normal.clone()), ("sqlx", normal.clone())];
        let mut packages = vec![
            package(
                "flock-models",
                "/ws/crates/flock-models/Cargo.toml",
                &models,
            ),
            package(
                "flock-signing",
                "/ws/crates/flock-signing/Cargo.toml",
                &signing,
            ),
            package("flock-retry", "/ws/crates/flock-retry/Cargo.toml", &retry),
            package("flock-api", "/ws/crates/flock-api/Cargo.toml", &api),
            package("flock-e2e", "/ws/tests/Cargo.toml", &e2e),
        ];
        for name in ["serde", "bad-io", "tokio", "reqwest", "actix-web", "sqlx"] {
            packages.push(package(name, &format!("/registry/{name}/Cargo.toml"), &[]));
        }
        let members = [
            "flock-models",
            "flock-signing",
            "flock-retry",
            "flock-api",
            "flock-e2e",
        ]
        .map(id);
        let value = json!({
            "workspace_root": "/ws",
            "workspace_members": members,
            "packages": packages,
            "resolve": {"nodes": [
                node("flock-models", &models),
                node("bad-io", &[("tokio", normal.clone())]),
                node("flock-signing", &signing),
                node("reqwest", &[("tokio", normal)]),
                node("flock-retry", &retry),
                node("flock-api", &api),
                node("flock-e2e", &e2e),
            ]},
        });
        Metadata::parse(&value).unwrap()
    }

    fn manifests(path: &Path) -> Option<String> {
        let text = match path.to_str()? {
            "/ws/crates/flock-models/Cargo.toml" => {
                "[package]\nname = \"flock-models\"\n\n[dependencies]\nserde.workspace = true\nbad-io = \"1\"\n"
            }
            "/ws/crates/flock-signing/Cargo.toml" => {
                "[package]\nname = \"flock-signing\"\n\n[dev-dependencies]\nreqwest = \"1\"\n\n[dependencies.reqwest]\nversion = \"1\"\n"
            }
            _ => "[package]\nname = \"other\"\n",
        };
        Some(text.to_owned())
    }

    #[test]
    fn dependency_rules_name_the_manifest_line_and_the_chain() {
        let failures = dependency_rules(&metadata(), manifests);
        let shown: Vec<String> = failures.iter().map(ToString::to_string).collect();
        // Dev-dependencies (flock-retry), the owner (flock-api) and the tooling crate
        // (flock-e2e) are fine.
        assert_eq!(
            shown,
            [
                "crates/flock-models/Cargo.toml:6: flock-models is layer 0 and must not reach tokio, but does: flock-models -> bad-io -> tokio",
                "crates/flock-signing/Cargo.toml:7: flock-signing depends on reqwest: only flock-llm knows reqwest (docs/ARCHITECTURE.md)",
                "crates/flock-signing/Cargo.toml:7: flock-signing is layer 0 and must not reach tokio, but does: flock-signing -> reqwest -> tokio",
            ]
        );
    }

    #[test]
    fn dependency_lines_are_found_in_normal_tables_only() {
        let manifest = "[package]\nname = \"x\"\n\n[dev-dependencies]\ntokio = \"1\"\n\n[dependencies]\ntokio-util = \"1\"\ntokio = { workspace = true }\n\n[target.'cfg(unix)'.dependencies]\nnix.workspace = true\n";
        assert_eq!(dependency_line(manifest, "tokio"), 9);
        assert_eq!(dependency_line(manifest, "nix"), 12);
        assert_eq!(dependency_line(manifest, "absent"), 1);
    }

    #[test]
    fn every_crate_must_be_named_in_the_architecture() {
        let architecture =
            "### `crates/flock-models`\n`flock-signing` and `flock-retry`, `flock-e2e`\n";
        let failures = crates_named(&metadata(), architecture, manifests);
        let shown: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "crates/flock-api/Cargo.toml:2: crate `flock-api` is not named in docs/ARCHITECTURE.md"
            ]
        );
        let all = "`flock-models` `flock-signing` `flock-retry` `flock-api` `flock-e2e`";
        assert!(crates_named(&metadata(), all, manifests).is_empty());
        // A name inside a longer one does not count.
        let longer = all.replace("`flock-api`", "`flock-api-extra`");
        assert_eq!(crates_named(&metadata(), &longer, manifests).len(), 1);
    }

    #[test]
    fn the_walk_skips_target_and_hidden_directories() {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for dir in [
            "src",
            "target/debug",
            ".worktrees/other/src",
            "crates/a/src",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for file in [
            "src/main.rs",
            "target/debug/gen.rs",
            ".worktrees/other/src/lib.rs",
            "crates/a/src/lib.rs",
            "crates/a/README.md",
        ] {
            std::fs::write(root.join(file), "//! x\n").unwrap();
        }
        let mut found = Vec::new();
        rust_files(&root, &mut found);
        let mut found: Vec<String> = found.iter().map(|p| relative(&root, p)).collect();
        found.sort();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, ["crates/a/src/lib.rs", "src/main.rs"]);
    }
}
