//! The layering of `src/` (issue 19): the infrastructure in `src/core/` imports no feature, and
//! no part of the crate imports a part that imports it back. And every table has one owner: one
//! module runs the queries on it, the rest call that module (the second test, at the end).
//!
//! The parts are the top-level modules under `src/` (`auth`, `fynd`, `media`, `messaging`, `ops`,
//! `providers`, `realtime`, `users`, `otp`, …, each folder one part) and, inside core, each
//! module file (`core::db`, `core::auth::session`, `core::realtime::hub`, …), so core's own
//! pieces are layered too (`core::state` on top, nothing in core importing it back). `lib.rs`
//! and `main.rs` assemble everything and are not parts.
//!
//! Every path written in the source counts, in `use` trees and in expressions: `crate::…`,
//! `$crate::…`, `super::…`, `self::…`, a child module's bare name, and a string that is such a
//! path (serde's `with = "…"`). Comments and other strings do not (the source is read with
//! `proc-macro2`'s lexer). A module and the modules
//! inside it are one unit: `core::db` using its own `core::db::group_commit` is not an edge.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    str::FromStr,
};

use proc_macro2::{Delimiter, TokenStream, TokenTree};

/// A module path, `["core", "auth", "session"]`.
type ModPath = Vec<String>;

/// Where an edge was seen, for the failure message.
#[derive(Debug, Clone)]
struct Seen {
    file: String,
    path: String,
}

#[derive(Default)]
struct Graph {
    /// The module path of every file under `src/` (except the crate root files).
    modules: BTreeSet<ModPath>,
    tops: BTreeSet<String>,
    edges: BTreeMap<String, BTreeMap<String, Vec<Seen>>>,
}

#[test]
fn core_imports_no_feature_and_no_part_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    let sources: Vec<(ModPath, String, String)> = files
        .iter()
        .filter_map(|f| {
            let m = module_of(&src, f)?;
            let text = std::fs::read_to_string(f).unwrap();
            Some((m, f.strip_prefix(&src).unwrap().display().to_string(), text))
        })
        .collect();
    let graph = build(&sources);

    // The scan sees the imports at all (a parser that found nothing would pass everything).
    for (from, to) in [("messaging", "core::db"), ("core::state", "core::auth::session"), ("ops", "messaging")] {
        assert!(graph.edge(from, to).is_some(), "the scan missed the import {from} -> {to}");
    }

    let upward = graph.core_to_features();
    assert!(
        upward.is_empty(),
        "core imports feature modules (move the shared part into core, or pass it in):\n{}",
        upward.join("\n")
    );
    let cycles = graph.cycles();
    assert!(cycles.is_empty(), "import cycles between parts of src/:\n{}", cycles.join("\n"));
}

/// The checker itself finds what it is meant to find.
#[test]
fn the_checker_finds_cycles_and_upward_imports() {
    let files = vec![
        (m("core::state"), "core/state.rs".into(), "use crate::{core::db::Pool, messaging::Row};".into()),
        (m("core::db"), "core/db/mod.rs".into(), "mod group_commit; pub struct Pool(group_commit::Committer);".into()),
        (m("core::db::group_commit"), "core/db/group_commit.rs".into(), "use super::Pool; pub struct Committer;".into()),
        (m("core"), "core/mod.rs".into(), "pub mod db; pub mod state;".into()),
        (
            m("messaging"),
            "messaging/mod.rs".into(),
            "pub mod routes; fn f() { let _ = crate::ops::x(); } // crate::fynd::y\nconst S: &str = \"see crate::users\";"
                .into(),
        ),
        (m("messaging::routes"), "messaging/routes.rs".into(), "use super::super::core::state::AppState;".into()),
        (m("ops"), "ops/mod.rs".into(), "mod tests { use super::*; use crate::messaging as m; }".into()),
        (m("fynd"), "fynd/mod.rs".into(), "#[serde(with = \"crate::core::db::x\")] struct A;".into()),
        (m("users"), "users/mod.rs".into(), String::new()),
    ];
    let g = build(&files);
    assert!(g.edge("core::state", "core::db").is_some());
    assert!(g.edge("core::db", "core::db::group_commit").is_none(), "a module contains its children");
    assert!(g.edge("core::db::group_commit", "core::db").is_some());
    assert!(g.edge("messaging", "core::state").is_some(), "super::super from a child file");
    assert!(g.edge("messaging", "fynd").is_none(), "comments do not count");
    assert!(g.edge("messaging", "users").is_none(), "strings do not count");
    assert!(g.edge("fynd", "core::db").is_some(), "a string that is a path does");
    assert!(g.edge("ops", "ops").is_none());
    assert_eq!(g.core_to_features().len(), 1, "{:?}", g.core_to_features());
    let cycles = g.cycles();
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(cycles[0].contains("messaging") && cycles[0].contains("ops"), "{cycles:?}");
}

fn m(path: &str) -> ModPath {
    path.split("::").map(str::to_owned).collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`; the crate root files are not parts.
fn module_of(src: &Path, file: &Path) -> Option<ModPath> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: ModPath = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
        return None;
    }
    Some(parts)
}

fn build(sources: &[(ModPath, String, String)]) -> Graph {
    let mut g = Graph::default();
    for (module, _, _) in sources {
        g.tops.insert(module[0].clone());
        g.modules.insert(module.clone());
    }
    for (module, file, text) in sources {
        let tokens = TokenStream::from_str(text).unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let children = declared_children(tokens.clone());
        let mut paths = Vec::new();
        collect(tokens, module, &children, &mut paths);
        let from = g.part(module).expect("a file is a part");
        for path in paths {
            let Some(to) = g.part(&path) else { continue };
            // A module and the modules inside it are one unit.
            if to == from || to.starts_with(&format!("{from}::")) {
                continue;
            }
            g.edges
                .entry(from.clone())
                .or_default()
                .entry(to)
                .or_default()
                .push(Seen { file: file.clone(), path: path.join("::") });
        }
    }
    g
}

impl Graph {
    /// The part a module path belongs to: its top-level module, or in core the longest
    /// prefix that is a module file. `None` for items of the crate root.
    fn part(&self, path: &[String]) -> Option<String> {
        let top = path.first()?;
        if !self.tops.contains(top) {
            return None;
        }
        if top != "core" {
            return Some(top.clone());
        }
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| self.modules.contains(p)).map(|p| p.join("::"))
    }

    fn edge(&self, from: &str, to: &str) -> Option<&Vec<Seen>> {
        self.edges.get(from)?.get(to)
    }

    fn core_to_features(&self) -> Vec<String> {
        let is_core = |p: &str| p == "core" || p.starts_with("core::");
        let mut out = Vec::new();
        for (from, tos) in self.edges.iter().filter(|(from, _)| is_core(from)) {
            for (to, seen) in tos.iter().filter(|(to, _)| !is_core(to)) {
                out.push(format!("  {from} -> {to}: {}", describe(seen)));
            }
        }
        out
    }

    /// Every strongly connected component of more than one part (Tarjan), with the edges
    /// inside it.
    fn cycles(&self) -> Vec<String> {
        let nodes: BTreeSet<&String> = self.edges.keys().chain(self.edges.values().flat_map(|t| t.keys())).collect();
        let nodes: Vec<&String> = nodes.into_iter().collect();
        let index_of: BTreeMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let succ: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| self.edges.get(*n).map(|t| t.keys().map(|k| index_of[k]).collect()).unwrap_or_default())
            .collect();
        let mut t =
            Tarjan { succ: &succ, index: vec![None; nodes.len()], low: vec![0; nodes.len()], ..Default::default() };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        t.components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let members: BTreeSet<&String> = c.iter().map(|i| nodes[*i]).collect();
                let mut lines = vec![format!("  cycle through {members:?}:")];
                for from in &members {
                    for (to, seen) in self.edges[*from].iter().filter(|(to, _)| members.contains(to)) {
                        lines.push(format!("    {from} -> {to}: {}", describe(seen)));
                    }
                }
                lines.join("\n")
            })
            .collect()
    }
}

fn describe(seen: &[Seen]) -> String {
    let mut shown: Vec<String> = seen.iter().map(|s| format!("{} ({})", s.path, s.file)).collect();
    shown.dedup();
    let more = shown.len().saturating_sub(3);
    shown.truncate(3);
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    shown.join(", ")
}

#[derive(Default)]
struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    next: usize,
    stack: Vec<usize>,
    on_stack: BTreeSet<usize>,
    components: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack.insert(v);
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(i) if self.on_stack.contains(&w) => self.low[v] = self.low[v].min(i),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(&w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

// ---- reading paths out of the tokens ----

/// `mod name;` declarations at the top of a file: bare `name::…` paths there are relative.
fn declared_children(tokens: TokenStream) -> BTreeSet<String> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = BTreeSet::new();
    for w in tokens.windows(3) {
        if let (TokenTree::Ident(kw), TokenTree::Ident(name), TokenTree::Punct(semi)) = (&w[0], &w[1], &w[2])
            && kw == "mod"
            && semi.as_char() == ';'
        {
            out.insert(name.to_string());
        }
    }
    out
}

fn is_ident(t: Option<&TokenTree>, name: &str) -> bool {
    matches!(t, Some(TokenTree::Ident(i)) if i == name)
}

fn is_punct(t: Option<&TokenTree>, c: char) -> bool {
    matches!(t, Some(TokenTree::Punct(p)) if p.as_char() == c)
}

/// `::` at `tokens[i]`.
fn is_path_sep(tokens: &[TokenTree], i: usize) -> bool {
    is_punct(tokens.get(i), ':') && is_punct(tokens.get(i + 1), ':')
}

/// Every absolute module path written in `tokens`, which are in module `module` (whose
/// declared children are `children`); inline `mod name { … }` blocks are entered with their
/// own path.
fn collect(tokens: TokenStream, module: &ModPath, children: &BTreeSet<String>, out: &mut Vec<ModPath>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < tokens.len() {
        // `mod name { … }`: a module of its own.
        if is_ident(tokens.get(i), "mod")
            && let (Some(TokenTree::Ident(name)), Some(TokenTree::Group(body))) = (tokens.get(i + 1), tokens.get(i + 2))
            && body.delimiter() == Delimiter::Brace
        {
            let mut inner = module.clone();
            inner.push(name.to_string());
            collect(body.stream(), &inner, &BTreeSet::new(), out);
            i += 3;
            continue;
        }
        // The start of a path: not preceded by `::` (or by `$`, handled with `crate`).
        let after_sep = i >= 2 && is_path_sep(&tokens, i - 2);
        if !after_sep && let TokenTree::Ident(id) = &tokens[i] {
            let name = id.to_string();
            let base: Option<ModPath> = match name.as_str() {
                "crate" => Some(Vec::new()),
                "self" => Some(module.clone()),
                "super" => Some(module[..module.len().saturating_sub(1)].to_vec()),
                _ if children.contains(&name) => Some([module.clone(), vec![name.clone()]].concat()),
                _ => None,
            };
            if let Some(mut base) = base
                && is_path_sep(&tokens, i + 1)
            {
                let mut j = i + 3;
                // Further `super::`.
                while name == "super" && is_ident(tokens.get(j), "super") && is_path_sep(&tokens, j + 1) {
                    base.pop();
                    j += 3;
                }
                j = path_rest(&tokens, j, base, out);
                i = j;
                continue;
            }
        }
        match &tokens[i] {
            TokenTree::Group(g) => collect(g.stream(), module, children, out),
            // A path in a string, as serde's `with = "crate::core::types::rfc3339"` takes it.
            TokenTree::Literal(lit) => {
                let text = lit.to_string();
                let inner = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or_default();
                let is_path = ["crate::", "super::", "self::"].iter().any(|p| inner.starts_with(p))
                    && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
                if is_path && let Ok(path) = TokenStream::from_str(inner) {
                    collect(path, module, children, out);
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// Reads `a::b::{c, d::e}` from `tokens[j]` on, prefixed with `base`; returns the index after.
fn path_rest(tokens: &[TokenTree], mut j: usize, mut base: ModPath, out: &mut Vec<ModPath>) -> usize {
    loop {
        match tokens.get(j) {
            Some(TokenTree::Ident(id)) => {
                let name = id.to_string();
                if name != "self" {
                    base.push(name);
                }
                if is_path_sep(tokens, j + 1) {
                    j += 3;
                    continue;
                }
                out.push(base);
                return j + 1;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                use_tree(g.stream(), &base, out);
                return j + 1;
            }
            _ => {
                // `*`, or the path ends after a `::` (turbofish and the like): what was read.
                out.push(base);
                return j;
            }
        }
    }
}

/// The items of a `{…}` use tree, each prefixed with `base`.
fn use_tree(tokens: TokenStream, base: &ModPath, out: &mut Vec<ModPath>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    for item in tokens.split(|t| is_punct(Some(t), ',')) {
        if !item.is_empty() {
            path_rest(item, 0, base.clone(), out);
        }
    }
}

// ---- one owner per table ----

/// The module that queries each table (a module and the modules inside it are one owner).
/// `users`: every file in `src/users/` is a store over the people tables (`model`, `store`,
/// `customer`, `group`, `application`); the routes that use them live in `auth` and `fynd`.
const OWNERS: &[(&str, &[&str])] = &[
    ("bootstrap", &["instance"]),
    ("codes", &["otp_challenges"]),
    ("core::auth::jwt", &["signing_keys"]),
    ("core::auth::lockout", &["login_failures"]),
    ("core::auth::session", &["sessions", "refresh_tokens"]),
    ("core::outbox", &["outbox"]),
    ("core::realtime::presence", &["agent_presence"]),
    ("auth::arc", &["auth_codes"]),
    ("auth::clients", &["auth_clients"]),
    ("auth::oauth", &["oauth_states"]),
    ("auth::saml", &["saml_assertions"]),
    ("auth::totp", &["totp_secrets", "recovery_codes"]),
    ("campaigns::store", &["campaigns", "campaign_recipients"]),
    ("hooks::store", &["webhook_subscriptions", "webhook_deliveries", "webhook_attempts"]),
    ("media::db", &["attachments"]),
    ("messaging::canned", &["canned_responses"]),
    ("messaging::teams", &["teams", "team_members"]),
    (
        "messaging::store",
        &[
            "channels",
            "conversations",
            "messages",
            "events",
            "mentions",
            "message_reactions",
            "pending_statuses",
            "templates",
        ],
    ),
    ("providers::webhooks", &["webhook_receipts"]),
    (
        "users",
        &[
            "companies",
            "users",
            "user_emails",
            "user_phones",
            "applications",
            "invites",
            "oauth_identities",
            "audit_log",
            "user_groups",
            "user_group_members",
        ],
    ),
];

/// The queries outside a table's owner that stay, and why: (table, module, reason).
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("users", "core::auth::session", "the session guard joins the user; core imports no feature"),
    ("users", "fynd::store", "the storefront's session and user in one statement, on every request"),
    ("sessions", "fynd::store", "the same statement"),
    (
        "users",
        "messaging::store",
        "a webhook batch's customers with their conversations in one statement (issue 21: a round trip per batch)",
    ),
    ("user_phones", "messaging::store", "the same statement, for customers known by phone"),
    (
        "webhook_subscriptions",
        "messaging::store",
        "PostgreSQL: the events INSERT reads their companies' subscriptions in the same statement (issue 21); \
         hooks::store matches them",
    ),
    (
        "campaign_recipients",
        "messaging::store",
        "a type only: the subquery campaigns::store builds is passed by its concrete type",
    ),
];

#[test]
fn every_table_is_queried_by_its_owner_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let schema = std::fs::read_to_string(src.join("core/db/schema.rs")).unwrap();
    let tables = declared_tables(&schema);
    assert!(tables.len() > 30 && tables.contains("messages"), "the schema scan found {tables:?}");

    let owner_of: BTreeMap<&str, &str> =
        OWNERS.iter().flat_map(|(owner, ts)| ts.iter().map(move |t| (*t, *owner))).collect();
    let unowned: Vec<&String> = tables.iter().filter(|t| !owner_of.contains_key(t.as_str())).collect();
    assert!(unowned.is_empty(), "tables with no owner in OWNERS: {unowned:?}");

    let mut misplaced = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    let mut seen_owner = BTreeSet::new();
    for file in rust_files(&src) {
        let Some(module) = module_of(&src, &file) else { continue };
        if module == m("core::db::schema") {
            continue;
        }
        let module = module.join("::");
        let text = std::fs::read_to_string(&file).unwrap();
        let tokens = TokenStream::from_str(&text).unwrap_or_else(|e| panic!("{}: {e:?}", file.display()));
        for table in tables_used(tokens, &tables) {
            let owner = owner_of[table.as_str()];
            if module == owner || module.starts_with(&format!("{owner}::")) {
                seen_owner.insert(table);
            } else if let Some(e) = EXCEPTIONS.iter().find(|(t, m, _)| *t == table && *m == module) {
                used_exceptions.insert(*e);
            } else {
                misplaced.push(format!("  {table} in {module} (owner: {owner})"));
            }
        }
    }
    assert!(
        misplaced.is_empty(),
        "tables queried outside their owner (call the owner's function instead):\n{}",
        misplaced.join("\n")
    );
    // The scan sees queries at all, and no exception outlives its reason.
    assert!(seen_owner.contains("messages") && seen_owner.contains("outbox"), "the scan missed {seen_owner:?}");
    let stale: Vec<_> = EXCEPTIONS.iter().filter(|e| !used_exceptions.contains(*e)).collect();
    assert!(stale.is_empty(), "exceptions no longer needed: {stale:?}");
}

/// The scanner itself: diesel paths and SQL in strings count, comments and longer names do not.
#[test]
fn the_table_scan_finds_diesel_paths_and_sql_strings() {
    let tables: BTreeSet<String> = ["messages", "users", "outbox"].map(String::from).into();
    let src = r#"
        // users::table in a comment
        fn f() { messages::table.find(1); crate::core::db::schema::users::table.count(); }
        const Q: &str = "SELECT id FROM outbox WHERE x";
        const R: &str = "FROM messages_fts JOIN messages_fts2 ON 1";
    "#;
    let used = tables_used(TokenStream::from_str(src).unwrap(), &tables);
    assert_eq!(used, tables);
    let only_fts = tables_used(TokenStream::from_str("const R: &str = \"FROM messages_fts\";").unwrap(), &tables);
    assert!(only_fts.is_empty(), "{only_fts:?}");
}

/// The tables `diesel::table! { name (key) { … } }` declares.
fn declared_tables(schema: &str) -> BTreeSet<String> {
    let tokens: Vec<TokenTree> = TokenStream::from_str(schema).unwrap().into_iter().collect();
    let mut out = BTreeSet::new();
    for w in tokens.windows(3) {
        if let (TokenTree::Ident(t), TokenTree::Punct(bang), TokenTree::Group(body)) = (&w[0], &w[1], &w[2])
            && t == "table"
            && bang.as_char() == '!'
            && let Some(TokenTree::Ident(name)) = body.stream().into_iter().next()
        {
            out.insert(name.to_string());
        }
    }
    out
}

/// The tables a file queries: `name::table` in code, or `FROM|JOIN|INTO|UPDATE name` in a
/// string (hand-written SQL).
fn tables_used(tokens: TokenStream, tables: &BTreeSet<String>) -> BTreeSet<String> {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut out = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        match t {
            TokenTree::Ident(id)
                if tables.contains(&id.to_string())
                    && is_path_sep(&tokens, i + 1)
                    && is_ident(tokens.get(i + 3), "table") =>
            {
                out.insert(id.to_string());
            }
            TokenTree::Group(g) => out.extend(tables_used(g.stream(), tables)),
            TokenTree::Literal(lit) => {
                let text = lit.to_string();
                let words: Vec<&str> =
                    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
                for w in words.windows(2) {
                    if ["FROM", "JOIN", "INTO", "UPDATE"].contains(&w[0]) && tables.contains(w[1]) {
                        out.insert(w[1].to_owned());
                    }
                }
            }
            _ => {}
        }
    }
    out
}
