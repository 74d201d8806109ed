//! The crate's modules depend on each other without a cycle: in particular the pool types, the
//! NodeENI manifests and loading (`pool` ← `nodeeni` ← `load`), which used to import each other.
//! Read from the sources: every `crate::<module>` a module's code names (doc comments and `pub use`
//! re-exports, which are aliases rather than uses, aside).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the crate's modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        if path.extension().is_none_or(|e| e != "rs") || module == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let mut uses = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("//") || line.starts_with("pub use ") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let rest = &line[i + "crate::".len()..];
                // `crate::{a, b::c}` names a and b; `crate::a::…` names a.
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group.split([',', '}']).map(|p| p.trim().split("::").next().unwrap_or("")).collect(),
                    None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
                };
                uses.extend(names.into_iter().filter(|n| !n.is_empty() && *n != module).map(str::to_string));
            }
        }
        out.insert(module, uses);
    }
    out
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn loading_sits_above_the_types_it_fills() {
    let g = graph();
    let uses = |m: &str| g.get(m).unwrap_or_else(|| panic!("no module {m} in {g:?}"));
    assert!(uses("load").contains("pool") && uses("load").contains("nodeeni"), "{g:?}");
    assert!(uses("nodeeni").contains("pool"), "{g:?}");
    assert!(!uses("nodeeni").contains("load"), "nodeeni must not know loading: {g:?}");
    assert!(!uses("pool").contains("nodeeni") && !uses("pool").contains("load"), "pool uses neither: {g:?}");
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let g = graph();
    assert_eq!(find_cycle(&g), None, "{g:#?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let g: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(m, d)| (m.to_string(), BTreeSet::from([d.to_string()])))
        .collect();
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
