//! Structural check of the kernel's table (`nft -j list table`) against what the firewall applied:
//! the same chains (base chains still hooked), the same number of rules in each, and the same
//! veth → chain maps. That catches a deleted or flushed table, deleted chains, rules deleted from
//! or inserted into our chains, and map elements removed or added. It does not compare rule
//! expressions: a rule rewritten in place by someone with root on the host goes unnoticed.
use super::Expected;
use serde_json::Value;
use std::collections::BTreeMap;

/// Human-readable differences (empty: the table is as expected).
pub(crate) fn differences(table: &str, expected: &Expected, listing_json: &[u8]) -> Vec<String> {
    let Ok(doc) = serde_json::from_slice::<Value>(listing_json) else {
        return vec!["the table listing is not JSON".into()];
    };
    let items = doc.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
    let ours = |obj: &Value| {
        obj.get("table").and_then(Value::as_str) == Some(table)
            && obj.get("family").and_then(Value::as_str) == Some("inet")
    };

    let mut chains: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut rule_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut maps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut table_seen = false;
    for item in &items {
        if let Some(t) = item.get("table") {
            table_seen |= t.get("name").and_then(Value::as_str) == Some(table);
        } else if let Some(c) = item.get("chain").filter(|c| ours(c)) {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            chains.insert(name, c.get("hook").and_then(Value::as_str).map(str::to_string));
        } else if let Some(r) = item.get("rule").filter(|r| ours(r)) {
            let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default().to_string();
            *rule_counts.entry(chain).or_default() += 1;
        } else if let Some(m) = item.get("map").filter(|m| ours(m)) {
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            maps.insert(name, map_elements(m));
        }
    }
    if !table_seen {
        return vec![format!("table inet {table} is gone")];
    }

    let mut problems = Vec::new();
    for chain in &expected.chains {
        let Some(hook) = chains.remove(&chain.name) else {
            problems.push(format!("chain {} is missing", chain.name));
            continue;
        };
        let wanted_hook = chain.hook.as_deref().and_then(hook_name);
        if hook.as_deref() != wanted_hook {
            problems.push(format!("chain {} is hooked at {hook:?}, expected {wanted_hook:?}", chain.name));
        }
        let found = rule_counts.get(&chain.name).copied().unwrap_or(0);
        if found != chain.rules.len() {
            problems.push(format!("chain {} has {found} rules, expected {}", chain.name, chain.rules.len()));
        }
    }
    for extra in chains.keys() {
        problems.push(format!("unexpected chain {extra}"));
    }
    for (name, wanted) in &expected.maps {
        match maps.get(name) {
            None => problems.push(format!("map {name} is missing")),
            Some(found) if found != wanted => {
                let missing = wanted.keys().filter(|k| !found.contains_key(*k)).count();
                let extra = found.keys().filter(|k| !wanted.contains_key(*k)).count();
                problems.push(format!(
                    "map {name} differs ({missing} sandboxes missing, {extra} unexpected, or changed targets)"
                ));
            }
            Some(_) => {}
        }
    }
    problems
}

/// `type filter hook forward priority -10; …` → `forward`.
fn hook_name(decl: &str) -> Option<&str> {
    let mut words = decl.split_whitespace();
    words.by_ref().find(|w| *w == "hook")?;
    words.next().map(|w| w.trim_end_matches(';'))
}

/// The map's elements as veth → jump target.
fn map_elements(map: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for elem in map.get("elem").and_then(Value::as_array).into_iter().flatten() {
        let Some(pair) = elem.as_array().filter(|p| p.len() == 2) else {
            continue;
        };
        let key = pair[0].as_str().unwrap_or_default().to_string();
        let target = pair[1].pointer("/jump/target").and_then(Value::as_str).unwrap_or_default().to_string();
        out.insert(key, target);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::ChainRules;
    use super::*;

    fn expected() -> Expected {
        Expected {
            chains: vec![
                ChainRules {
                    name: "forward".into(),
                    hook: Some("type filter hook forward priority -10; policy accept;".into()),
                    rules: vec!["a".into(), "b".into()],
                },
                ChainRules { name: "sb_x".into(), hook: None, rules: vec!["accept".into()] },
            ],
            maps: [("sb_out".to_string(), [("tqx".to_string(), "sb_x".to_string())].into())].into(),
        }
    }

    fn listing(rules_in_forward: usize, with_map_elem: bool) -> Vec<u8> {
        let mut items = vec![
            serde_json::json!({"metainfo": {"version": "1.0.6"}}),
            serde_json::json!({"table": {"family": "inet", "name": "t", "handle": 1}}),
            serde_json::json!({"chain": {"family": "inet", "table": "t", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": -10, "policy": "accept"}}),
            serde_json::json!({"chain": {"family": "inet", "table": "t", "name": "sb_x", "handle": 2}}),
            serde_json::json!({"rule": {"family": "inet", "table": "t", "chain": "sb_x", "handle": 9, "expr": [{"accept": null}]}}),
        ];
        let elem = if with_map_elem {
            serde_json::json!([["tqx", {"jump": {"target": "sb_x"}}]])
        } else {
            serde_json::json!([])
        };
        items.push(serde_json::json!({"map": {"family": "inet", "name": "sb_out", "table": "t", "type": "ifname", "map": "verdict", "elem": elem}}));
        for h in 0..rules_in_forward {
            items.push(serde_json::json!({"rule": {"family": "inet", "table": "t", "chain": "forward", "handle": 10 + h, "expr": []}}));
        }
        serde_json::to_vec(&serde_json::json!({"nftables": items})).unwrap()
    }

    #[test]
    fn intact_table_has_no_differences() {
        assert_eq!(differences("t", &expected(), &listing(2, true)), Vec::<String>::new());
    }

    #[test]
    fn flushed_or_edited_tables_are_noticed() {
        assert_eq!(differences("t", &expected(), &listing(0, true)), vec!["chain forward has 0 rules, expected 2"]);
        assert_eq!(differences("t", &expected(), &listing(3, true)), vec!["chain forward has 3 rules, expected 2"]);
        assert!(differences("t", &expected(), &listing(2, false))[0].starts_with("map sb_out differs"));
        let gone = serde_json::to_vec(&serde_json::json!({"nftables": [{"metainfo": {}}]})).unwrap();
        assert_eq!(differences("t", &expected(), &gone), vec!["table inet t is gone"]);
    }
}
