//! The house rules of ARCHITECTURE.md, checked on the source text of `src/`:
//!
//! - `http/` and `web/` reach storage and the audit log only through
//!   `service/`, and pages call services, not JSON handlers;
//! - the top-level modules form no cycle, and the lower ones import only
//!   what the code map lets them.
//!
//! An integration test rather than a `#[cfg(test)]` one: it reads files,
//! not the crate's items, so it needs nothing from inside `src/`, and it
//! does not sit in one of the modules it polices.
//!
//! The scan is lexical: comments and string literals are blanked first, then
//! the rules match tokens. It knows Rust's paths (`crate::`, `$crate::`,
//! `super::`, `use crate::{…}` groups, `lib.rs`'s re-exports), not types: a
//! rule is written so that a miss is unlikely and a false hit is visible.
//!
//! While the refactor of issue 20 is under way, two allowlists hold today's
//! known breaches. They may only shrink: the test fails when a breach is
//! added, and also when a listed one is gone, so that the list is kept
//! exact.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Today's breaches of the `http/`/`web/` rules, per file and rule, with
/// their exact number. May only shrink: remove a line (or lower its count)
/// when a file is moved onto services; never add one.
const KNOWN_VIOLATIONS: &[(&str, Rule, usize)] = &[];

/// Today's dependencies between top-level modules that close a cycle or
/// break a direction rule (`from`, `to`, why). `lib` is `lib.rs`'s own items
/// (`AppState`, `serve`); its `mod` declarations and `pub use` re-exports
/// are not dependencies. Each entry is the edge that goes against the code
/// map's direction, the one to remove to break its cycle (for `http` ↔ `web`
/// either would do: pages may keep using http's extractors once the router
/// is assembled elsewhere). May only shrink; the test fails when a listed
/// edge no longer exists, or no longer closes a cycle nor breaks a rule.
const KNOWN_BAD_EDGES: &[(&str, &str, &str)] = &[];

/// What a lower module may import besides itself (ARCHITECTURE.md's code
/// map, as data). A module not named here is not restricted this way.
const MAY_ONLY_IMPORT: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("crypto", &["domain"]),
    ("storage", &["domain", "config"]),
    ("audit", &["domain", "storage", "crypto"]),
    ("clock", &["domain"]),
    ("config", &[]),
];

/// What a module must never import.
const MUST_NOT_IMPORT: &[(&str, &[&str])] = &[
    ("service", &["http", "web", "cli", "demo", "seed"]),
    ("lib", &["http", "web", "cli"]),
    ("http", &["cli", "seed"]),
    ("web", &["cli", "seed", "storage"]),
];

/// A rule for files under `src/http/` and `src/web/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// `.store`: the store, reached directly.
    Store,
    /// `.audit`: the audit log, written or read directly.
    AuditLog,
    /// `AuditRecord`: an audit record built outside `service/`.
    AuditRecord,
    /// `storage::…`: a storage type named outside `service/`.
    StoragePath,
    /// `crate::http::<module>::<handler>` from `web/`: a page calling a
    /// JSON handler.
    HandlerCall,
    /// `json_of` / `api_json` in `web/`: a JSON round trip between a page
    /// and a handler.
    JsonRoundTrip,
}

impl Rule {
    fn what(self) -> &'static str {
        match self {
            Rule::Store => "calls the store (`.store`); call a service/ use case",
            Rule::AuditLog => "uses the audit log (`.audit`); service/ writes and reads it",
            Rule::AuditRecord => "builds an `AuditRecord`; service/ builds audit records",
            Rule::StoragePath => {
                "names a storage type (`storage::`); services return their own types"
            }
            Rule::HandlerCall => "calls a JSON handler; call the service it calls",
            Rule::JsonRoundTrip => {
                "JSON round trip (`json_of`/`api_json`); render the service's typed view"
            }
        }
    }
}

#[test]
fn http_and_web_reach_storage_and_the_log_only_through_services() {
    let src = src_dir();
    let handlers = handlers(&src);
    let mut found: BTreeMap<(String, Rule), Vec<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let rel = relative(&file);
        let layer = if rel.starts_with("src/http/") {
            Layer::Http
        } else if rel.starts_with("src/web/") {
            Layer::Web
        } else {
            continue;
        };
        let text = read(&file);
        for (line, rule, detail) in violations(&text, layer, &handlers) {
            found
                .entry((rel.clone(), rule))
                .or_default()
                .push(format!("{rel}:{line}: {detail}"));
        }
    }
    let report = compare_violations(&found, KNOWN_VIOLATIONS);
    assert!(
        report.is_empty(),
        "http/ and web/ must reach storage and the audit log through service/ only \
         (ARCHITECTURE.md, Code map). KNOWN_VIOLATIONS in tests/api/architecture.rs \
         may only shrink.\n{report}"
    );
}

#[test]
fn top_level_modules_form_no_cycle_and_keep_their_direction() {
    let graph = module_graph(&src_dir());
    let report = check_graph(&graph, KNOWN_BAD_EDGES);
    assert!(
        report.is_empty(),
        "top-level modules of src/ (ARCHITECTURE.md, Code map). KNOWN_BAD_EDGES in \
         tests/api/architecture.rs may only shrink.\n{report}"
    );
}

/// The scanner on small pieces of source: what it must see and what it must
/// not be fooled by.
#[test]
fn the_scanner_sees_through_comments_strings_and_line_breaks() {
    let handlers = BTreeMap::from([(
        "mandates".to_string(),
        BTreeSet::from(["get_mandate".to_string()]),
    )]);
    let text = r####"
//! A doc comment may say `state.store.ping()` and `state.audit.record(x)`.
/* a block /* nested */ state.store.ping() */
fn f(state: &AppState, ctx: Ctx) {
    let s = "state.store.ping() and crate::storage::X";
    let r = r#"ctx.state.audit.record("x")"#;
    let c = '"'; let e = '\''; let l: &'static str = "";
    state
        .store
        .ping();
    ctx.state.audit.checkpoint();
    let x = crate::http::mandates::get_mandate(state);
    let y = crate::http::session::same(a, b);
    let z: crate::storage::MandateRow = json_of(x);
    let restore = state.store_less; // not `.store`
    let entry = Entry { action, ..audit }; // not the log
}
"####;
    let found: Vec<(usize, Rule)> = violations(text, Layer::Web, &handlers)
        .into_iter()
        .map(|(line, rule, _)| (line, rule))
        .collect();
    assert_eq!(
        found,
        vec![
            (9, Rule::Store),
            (11, Rule::AuditLog),
            (12, Rule::HandlerCall),
            (14, Rule::StoragePath),
            (14, Rule::JsonRoundTrip),
        ]
    );
    // In http/, a page-only rule does not apply.
    let http: Vec<Rule> = violations(text, Layer::Http, &handlers)
        .into_iter()
        .map(|(_, rule, _)| rule)
        .collect();
    assert_eq!(http, vec![Rule::Store, Rule::AuditLog, Rule::StoragePath]);
}

#[test]
fn the_graph_resolves_crate_super_groups_and_reexports() {
    let tops: BTreeSet<String> = ["audit", "clock", "domain", "http", "service", "storage"]
        .map(String::from)
        .into();
    let aliases = BTreeMap::from([
        ("Clock".to_string(), "clock".to_string()),
        ("app".to_string(), "http".to_string()),
    ]);
    let refs = |module: &[&str], text: &str| -> BTreeSet<String> {
        let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
        references(text, &module, &tops, &aliases)
            .into_iter()
            .map(|(target, _)| target)
            .collect()
    };
    // `crate::`, `$crate::`, groups, and a re-export resolved to its module.
    assert_eq!(
        refs(
            &["service", "rights"],
            "use crate::{AppState, Clock, domain::Role};\n\
             fn f() { $crate::storage::X; crate::app(); }\n\
             // crate::http::x\n"
        ),
        BTreeSet::from(["lib", "clock", "domain", "storage", "http"].map(String::from))
    );
    // `super::` from a file, and from an inline module inside it.
    assert_eq!(
        refs(
            &["audit", "log"],
            "pub(super) fn f() {}\nuse super::entry::X;"
        ),
        BTreeSet::from(["audit".to_string()])
    );
    assert_eq!(
        refs(
            &["audit", "log"],
            "mod tests { use super::super::entry::X; }\nuse super::super::http::Y;"
        ),
        BTreeSet::from(["audit", "http"].map(String::from))
    );
    // The crate root names its children without `crate::`, but not when
    // another crate's path goes through a name like theirs.
    assert_eq!(
        refs(
            &[],
            "pub mod http;\nuse axum::http::StatusCode;\nuse storage::DynStore;\npub use http::app;\n"
        ),
        BTreeSet::from(["storage".to_string()])
    );
}

#[test]
fn a_cycle_is_named_and_a_stale_allowance_is_reported() {
    let mut graph = Graph::default();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("domain", "a")] {
        graph
            .edges
            .entry((from.to_string(), to.to_string()))
            .or_default()
            .push(format!("src/{from}.rs:1"));
    }
    let report = check_graph(&graph, &[("x", "y", "gone")]);
    assert!(report.contains("cycle: a → b → c → a"), "{report}");
    assert!(report.contains("domain → a"), "{report}");
    assert!(report.contains("x → y"), "{report}");
    assert!(check_graph(&graph, &[("c", "a", "known"), ("domain", "a", "known")]).is_empty());
}

// ---------------------------------------------------------------------------
// Files

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `src/…` as the report names it.
fn relative(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file of `src/`: `src/lib.rs` → `[]`,
/// `src/http/mod.rs` → `[http]`, `src/http/partner.rs` → `[http, partner]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

/// The tokens of a Rust source: identifiers (and numbers) and punctuation,
/// `::` as one token; comments, string and character literals dropped (a
/// string leaves one `""` token, so `"a".len()` stays an expression).
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let newlines = |from: usize, to: usize| chars[from..to].iter().filter(|&&c| c == '\n').count();
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let start = i;
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            line += newlines(start, i);
        } else if let Some(end) = raw_string_end(&chars, i) {
            out.push(Token {
                text: "\"\"".into(),
                line,
            });
            line += newlines(i, end);
            i = end;
        } else if c == '"' || (c == 'b' && next == Some('"')) {
            let start = i;
            i += if c == 'b' { 2 } else { 1 };
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token {
                text: "\"\"".into(),
                line,
            });
            line += newlines(start, i.min(chars.len()));
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{e9}'), or a lifetime.
            if next == Some('\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(Token {
                    text: "'".into(),
                    line,
                });
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        } else if c == ':' && next == Some(':') {
            out.push(Token {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                text: c.to_string(),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br#"…"#`) starting at `i` ends.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

fn is_ident(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The identifiers at the first level of a `{ … }` group whose `{` is at
/// `open`: the first segment of each path in a `use` group.
fn group_heads(toks: &[Token], open: usize) -> Vec<usize> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.text.as_str() {
            "{" => {
                depth += 1;
                if depth == 1 {
                    expect_head = true;
                    continue;
                }
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," if depth == 1 => {
                expect_head = true;
                continue;
            }
            _ => {}
        }
        if depth == 1 && expect_head && is_ident(&t.text) {
            heads.push(k);
        }
        expect_head = false;
    }
    heads
}

// ---------------------------------------------------------------------------
// Rule (a): http/ and web/

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layer {
    Http,
    Web,
}

/// The JSON handlers of `src/http/`, by module: functions with an
/// `#[utoipa::path]` attribute or an axum `State<…>` parameter.
fn handlers(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src.join("http")) {
        let module = module_path(src, &file);
        let [_, name] = module.as_slice() else {
            continue;
        };
        let toks = tokens(&read(&file));
        let mut documented = false;
        for (i, t) in toks.iter().enumerate() {
            if t.text == "utoipa" && toks.get(i + 2).is_some_and(|p| p.text == "path") {
                documented = true;
            }
            if t.text != "fn" {
                continue;
            }
            let Some(fn_name) = toks.get(i + 1).filter(|n| is_ident(&n.text)) else {
                continue;
            };
            let takes_state = toks[i..]
                .iter()
                .take_while(|p| p.text != "{" && p.text != ";")
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0].text == "State" && w[1].text == "<");
            if documented || takes_state {
                out.entry(name.clone())
                    .or_default()
                    .insert(fn_name.text.clone());
            }
            documented = false;
        }
    }
    out
}

/// Breaches of rule (a) in one file: (line, rule, what was seen).
fn violations(
    source: &str,
    layer: Layer,
    handlers: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(usize, Rule, String)> {
    let toks = tokens(source);
    let text = |k: usize| toks.get(k).map(|t| t.text.as_str()).unwrap_or("");
    // `x.field`, not `..base` (struct update) nor a range.
    let member = |k: usize| k >= 1 && text(k - 1) == "." && (k < 2 || text(k - 2) != ".");
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.text.as_str() {
            "store" if member(i) => {
                out.push((t.line, Rule::Store, Rule::Store.what().to_string()));
            }
            "audit" if member(i) => {
                out.push((t.line, Rule::AuditLog, Rule::AuditLog.what().to_string()));
            }
            "AuditRecord" => {
                out.push((
                    t.line,
                    Rule::AuditRecord,
                    Rule::AuditRecord.what().to_string(),
                ));
            }
            "storage" if text(i + 1) == "::" || (text(i.wrapping_sub(1)) == "::" && i > 0) => {
                out.push((
                    t.line,
                    Rule::StoragePath,
                    Rule::StoragePath.what().to_string(),
                ));
            }
            "json_of" | "api_json" if layer == Layer::Web => {
                out.push((
                    t.line,
                    Rule::JsonRoundTrip,
                    format!("`{}`: {}", t.text, Rule::JsonRoundTrip.what()),
                ));
            }
            "http"
                if layer == Layer::Web
                    && i >= 2
                    && text(i - 1) == "::"
                    && text(i - 2) == "crate"
                    && text(i + 1) == "::"
                    && text(i + 3) == "::" =>
            {
                let module = text(i + 2);
                let Some(module_handlers) = handlers.get(module) else {
                    continue;
                };
                let called: Vec<usize> = if text(i + 4) == "{" {
                    group_heads(&toks, i + 4)
                } else {
                    vec![i + 4]
                };
                for k in called {
                    if module_handlers.contains(text(k)) {
                        out.push((
                            toks[k].line,
                            Rule::HandlerCall,
                            format!(
                                "`http::{module}::{}`: {}",
                                text(k),
                                Rule::HandlerCall.what()
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The differences between what was found and what is allowlisted, one
/// paragraph per (file, rule); empty when they match exactly.
fn compare_violations(
    found: &BTreeMap<(String, Rule), Vec<String>>,
    known: &[(&str, Rule, usize)],
) -> String {
    let mut allowed: BTreeMap<(String, Rule), usize> = BTreeMap::new();
    for &(file, rule, count) in known {
        *allowed.entry((file.to_string(), rule)).or_default() += count;
    }
    let keys: BTreeSet<&(String, Rule)> = found.keys().chain(allowed.keys()).collect();
    let mut report = String::new();
    for key in keys {
        let (file, rule) = key;
        let lines = found.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let allowed = allowed.get(key).copied().unwrap_or(0);
        if lines.len() > allowed {
            let _ = writeln!(
                report,
                "\n{file}: {} × {rule:?} where {allowed} are allowlisted; one of these is new:",
                lines.len()
            );
            for l in lines {
                let _ = writeln!(report, "  {l}");
            }
        } else if lines.len() < allowed {
            let _ = writeln!(
                report,
                "\n{file}: {rule:?} allowlisted {allowed} times, found {}: lower its count \
                 in KNOWN_VIOLATIONS (or remove the line at 0).",
                lines.len()
            );
        }
    }
    report
}

// ---------------------------------------------------------------------------
// Rule (b): the graph of top-level modules

#[derive(Default, Debug)]
struct Graph {
    /// (from, to) → where (file:line), in order found.
    edges: BTreeMap<(String, String), Vec<String>>,
}

impl Graph {
    fn successors(&self, node: &str, skip: &BTreeSet<(String, String)>) -> Vec<&str> {
        self.edges
            .keys()
            .filter(|e| e.0 == node && !skip.contains(*e))
            .map(|e| e.1.as_str())
            .collect()
    }

    /// The shortest path `from` → … → `to` not using `skip`, if any.
    fn path(&self, from: &str, to: &str, skip: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(n) = queue.pop_front() {
            for s in self.successors(n, skip) {
                if s == to {
                    let mut path = vec![to.to_string(), n.to_string()];
                    let mut at = n;
                    while at != from {
                        at = came_from[at];
                        path.push(at.to_string());
                    }
                    path.reverse();
                    return Some(path);
                }
                if s != from && !came_from.contains_key(s) {
                    came_from.insert(s, n);
                    queue.push_back(s);
                }
            }
        }
        None
    }
}

/// The top-level modules (`lib.rs`'s `mod`s), and `lib.rs`'s re-exports
/// (`pub use clock::Clock` → `Clock` is `clock`'s).
fn crate_root(src: &Path) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let toks = tokens(&read(&src.join("lib.rs")));
    let text = |k: usize| toks.get(k).map(|t| t.text.as_str()).unwrap_or("");
    let mut tops = BTreeSet::new();
    let mut aliases = BTreeMap::new();
    for (i, t) in toks.iter().enumerate() {
        if t.text == "mod" && text(i + 2) == ";" {
            tops.insert(text(i + 1).to_string());
        }
        if t.text == "use" && text(i.wrapping_sub(1)) == "pub" && i > 0 {
            let from = text(i + 1).to_string();
            let end = (i..toks.len())
                .find(|&k| text(k) == ";")
                .unwrap_or(toks.len());
            // The name re-exported: the last identifier before `;` or `,`
            // at the end of each path.
            for k in i + 1..end {
                if is_ident(text(k)) && matches!(text(k + 1), ";" | "," | "}") {
                    aliases.insert(text(k).to_string(), from.clone());
                }
            }
        }
    }
    (tops, aliases)
}

/// The top-level modules a file's text refers to, with the line of each
/// reference. `module` is the file's module path (`[]` for `lib.rs`).
fn references(
    source: &str,
    module: &[String],
    tops: &BTreeSet<String>,
    aliases: &BTreeMap<String, String>,
) -> Vec<(String, usize)> {
    let toks = tokens(source);
    let text = |k: usize| toks.get(k).map(|t| t.text.as_str()).unwrap_or("");
    let resolve_root = |name: &str| -> String {
        if tops.contains(name) {
            name.to_string()
        } else if let Some(m) = aliases.get(name) {
            m.clone()
        } else {
            "lib".to_string()
        }
    };
    let mut out = Vec::new();
    // Inline modules (`mod tests { … }`) deepen `super::`.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    // A path segment follows `::` or `.`; these start a path.
    let starts_path = |k: usize| k == 0 || !matches!(text(k - 1), "::" | ".");
    while i < toks.len() {
        let t = &toks[i];
        match t.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if is_ident(text(i + 1)) && text(i + 2) == "{" => {
                inline.push(depth);
            }
            _ => {}
        }
        // In lib.rs, `pub mod x;` declares and `pub use x::Y;` re-exports:
        // neither is a dependency of lib.rs's own items.
        if module.is_empty() && t.text == "use" && text(i.wrapping_sub(1)) == "pub" && i > 0 {
            while i < toks.len() && text(i) != ";" {
                i += 1;
            }
            continue;
        }
        let root_names: Vec<usize> = if t.text == "crate" && starts_path(i) && text(i + 1) == "::" {
            if text(i + 2) == "{" {
                group_heads(&toks, i + 2)
            } else {
                vec![i + 2]
            }
        } else if t.text == "super" && starts_path(i) && text(i + 1) == "::" {
            let mut ups = 0;
            let mut k = i;
            while text(k) == "super" && text(k + 1) == "::" {
                ups += 1;
                k += 2;
            }
            let here = module.len() + inline.len();
            if ups < here {
                // Still inside a top-level module: the file's own, unless
                // the file is lib.rs and an inline module went up to it.
                if let Some(top) = module.first() {
                    out.push((top.clone(), t.line));
                }
                i = k;
                continue;
            }
            if text(k) == "{" {
                group_heads(&toks, k)
            } else {
                vec![k]
            }
        } else if module.is_empty()
            && tops.contains(t.text.as_str())
            && starts_path(i)
            && text(i + 1) == "::"
            && text(i.wrapping_sub(1)) != "mod"
        {
            vec![i]
        } else {
            Vec::new()
        };
        for k in root_names {
            if is_ident(text(k)) {
                out.push((resolve_root(text(k)), toks[k].line));
            }
        }
        i += 1;
    }
    out
}

/// The graph of references between top-level modules of `src/` (`lib` is
/// `lib.rs`'s own items: `AppState`, `serve`…). `main.rs` is the binary's
/// crate, not a module of the library.
fn module_graph(src: &Path) -> Graph {
    let (tops, aliases) = crate_root(src);
    let mut graph = Graph::default();
    for file in rust_files(src) {
        let rel = relative(&file);
        if rel == "src/main.rs" {
            continue;
        }
        let module = module_path(src, &file);
        let from = module.first().cloned().unwrap_or_else(|| "lib".to_string());
        for (to, line) in references(&read(&file), &module, &tops, &aliases) {
            if to != from {
                graph
                    .edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push(format!("{rel}:{line}"));
            }
        }
    }
    graph
}

/// Whether the edge `from → to` breaks a direction rule.
fn breaks_rule(from: &str, to: &str) -> Option<String> {
    for &(module, allowed) in MAY_ONLY_IMPORT {
        if module == from && !allowed.contains(&to) {
            return Some(format!("{from} may only import {allowed:?}"));
        }
    }
    for &(module, banned) in MUST_NOT_IMPORT {
        if module == from && banned.contains(&to) {
            return Some(format!("{from} must never import {to}"));
        }
    }
    None
}

/// Cycles, direction breaches and stale allowances; empty when clean.
fn check_graph(graph: &Graph, known: &[(&str, &str, &str)]) -> String {
    let mut report = String::new();
    let none = BTreeSet::new();
    let skip: BTreeSet<(String, String)> = known
        .iter()
        .map(|&(a, b, _)| (a.to_string(), b.to_string()))
        .collect();
    let at = |a: &str, b: &str| {
        graph
            .edges
            .get(&(a.to_string(), b.to_string()))
            .and_then(|w| w.first())
            .cloned()
            .unwrap_or_default()
    };
    // Cycles, once the known edges are set aside. The modules caught in one
    // tangle (a strongly connected component) are reported together, with
    // the shortest cycle among them, which names the edge to look at first.
    let mut reported: BTreeSet<String> = BTreeSet::new();
    for (a, b) in graph.edges.keys() {
        if skip.contains(&(a.clone(), b.clone())) || reported.contains(a) {
            continue;
        }
        if graph.path(b, a, &skip).is_none() {
            continue;
        }
        let tangle: BTreeSet<String> = graph
            .edges
            .keys()
            .flat_map(|(x, y)| [x, y])
            .filter(|n| {
                *n == a || (graph.path(a, n, &skip).is_some() && graph.path(n, a, &skip).is_some())
            })
            .cloned()
            .collect();
        let shortest = graph
            .edges
            .keys()
            .filter(|(x, y)| {
                tangle.contains(x) && tangle.contains(y) && !skip.contains(&(x.clone(), y.clone()))
            })
            .filter_map(|(x, y)| {
                graph.path(y, x, &skip).map(|mut back| {
                    back.insert(0, x.clone());
                    back
                })
            })
            .min_by_key(Vec::len)
            .unwrap_or_default();
        let hops: Vec<String> = shortest
            .windows(2)
            .map(|w| format!("{} → {} ({})", w[0], w[1], at(&w[0], &w[1])))
            .collect();
        let _ = writeln!(
            report,
            "
cycle: {}
  {}
  modules caught in it: {}",
            shortest.join(" → "),
            hops.join("\n  "),
            tangle.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        reported.extend(tangle);
    }
    // Direction rules.
    for (a, b) in graph.edges.keys() {
        if skip.contains(&(a.clone(), b.clone())) {
            continue;
        }
        if let Some(rule) = breaks_rule(a, b) {
            let _ = writeln!(report, "\n{a} → {b} ({}): {rule}", at(a, b));
        }
    }
    // Allowances that no longer hold.
    for &(a, b, why) in known {
        let key = (a.to_string(), b.to_string());
        if !graph.edges.contains_key(&key) {
            let _ = writeln!(
                report,
                "\n{a} → {b} ({why}) is gone: remove it from KNOWN_BAD_EDGES."
            );
        } else if graph.path(b, a, &none).is_none() && breaks_rule(a, b).is_none() {
            let _ = writeln!(
                report,
                "\n{a} → {b} ({why}) no longer closes a cycle nor breaks a rule: remove it \
                 from KNOWN_BAD_EDGES."
            );
        }
    }
    report
}
