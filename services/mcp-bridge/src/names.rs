//! Which upstream tools go on the mesh, under which names: the allow and
//! deny lists, the prefix, the checks gateways make, and no two servers'
//! tools under one name.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use sophia_kit::Tool;

use crate::config::ServerConfig;

/// A mesh name taken by another server's tool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "tool name {name} clashes: server {first_server}'s tool {first_tool} and server \
     {second_server}'s tool {second_tool} both become {name}; set a distinct `prefix` or \
     `deny` one of them"
)]
pub struct Clash {
    /// The mesh name.
    pub name: String,
    /// The server that has it.
    pub first_server: String,
    /// Its upstream tool.
    pub first_tool: String,
    /// The server that also wants it.
    pub second_server: String,
    /// Its upstream tool.
    pub second_tool: String,
}

/// The mesh names in use: name → (server, upstream tool).
#[derive(Clone, Debug, Default)]
pub struct Names(Arc<Mutex<HashMap<String, (String, String)>>>);

/// The tools of one server, as the mesh offers them.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// (upstream name, tool without handler), in upstream order.
    pub tools: Vec<(String, Tool)>,
    /// Upstream tools left out because of their name or schema, each with why.
    pub refused: Vec<String>,
    /// Upstream tools left out because another server has their name.
    pub clashes: Vec<Clash>,
    /// What the server offers besides tools (listed by the supervisor).
    pub offers: crate::offers::Offers,
}

impl Selection {
    /// The announced specs, to tell whether a new list differs.
    pub fn specs(&self) -> Vec<sophia_proto::ToolSpec> {
        self.tools.iter().map(|(_, t)| t.spec().clone()).collect()
    }
}

impl Names {
    /// Picks `server`'s tools from `upstream` and takes their names (giving
    /// back the names its previous list took).
    pub fn select(&self, server: &ServerConfig, upstream: &[rmcp::model::Tool]) -> Selection {
        let mut taken = self.0.lock();
        taken.retain(|_, (s, _)| *s != server.name);
        let mut sel = Selection::default();
        for t in upstream.iter().filter(|t| server.exposes(&t.name)) {
            let tool = match crate::convert::tool(server, t) {
                Ok(tool) => tool,
                Err(why) => {
                    sel.refused
                        .push(format!("tool {} is not offered: {why}", t.name));
                    continue;
                }
            };
            let name = tool.spec().name.clone();
            if let Some((first_server, first_tool)) = taken.get(&name) {
                sel.clashes.push(Clash {
                    name,
                    first_server: first_server.clone(),
                    first_tool: first_tool.clone(),
                    second_server: server.name.clone(),
                    second_tool: t.name.to_string(),
                });
                continue;
            }
            taken.insert(name, (server.name.clone(), t.name.to_string()));
            sel.tools.push((t.name.to_string(), tool));
        }
        for c in &sel.clashes {
            sel.refused.push(c.to_string());
        }
        sel
    }

    /// Gives back every name `server` took.
    pub fn release(&self, server: &str) {
        self.0.lock().retain(|_, (s, _)| s != server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sophia_kit::Category;

    fn tools(names: &[&str]) -> Vec<rmcp::model::Tool> {
        names
            .iter()
            .map(|n| {
                serde_json::from_value(json!({"name": n, "inputSchema": {"type": "object"}}))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn names_that_clash_after_prefixing_are_refused_naming_both() {
        let names = Names::default();
        let a = ServerConfig::stdio("a", Category::CodeGeneration, "x", &[]);
        let mut ab = ServerConfig::stdio("ab", Category::CodeGeneration, "x", &[]);
        ab.prefix = Some("a_b".into());
        assert!(names.select(&a, &tools(&["b_x", "y"])).clashes.is_empty());
        let sel = names.select(&ab, &tools(&["x", "z"]));
        assert_eq!(sel.tools.len(), 1);
        let line = sel.clashes[0].to_string();
        assert!(
            line.contains("a_b_x") && line.contains("server a's tool b_x"),
            "{line}"
        );
        assert!(line.contains("server ab's tool x"), "{line}");
    }

    #[test]
    fn an_empty_prefix_keeps_upstream_names_and_still_refuses_clashes() {
        let names = Names::default();
        let mut a = ServerConfig::stdio("a", Category::CodeGeneration, "x", &[]);
        a.prefix = Some(String::new());
        let mut b = ServerConfig::stdio("b", Category::CodeGeneration, "x", &[]);
        b.prefix = Some(String::new());
        let sel = names.select(&a, &tools(&["read", "write"]));
        let got: Vec<_> = sel
            .tools
            .iter()
            .map(|(_, t)| t.spec().name.clone())
            .collect();
        assert_eq!(got, ["read", "write"]);
        let sel = names.select(&b, &tools(&["read", "list"]));
        assert_eq!(sel.tools.len(), 1);
        let line = sel.clashes[0].to_string();
        assert!(
            line.contains("server a's tool read") && line.contains("server b's tool read"),
            "{line}"
        );
        let mut bad = ServerConfig::stdio("c", Category::CodeGeneration, "x", &[]);
        bad.prefix = Some(String::new());
        let sel = names.select(&bad, &tools(&["no spaces allowed"]));
        assert!(
            sel.tools.is_empty() && sel.refused.len() == 1,
            "{:?}",
            sel.refused
        );
    }

    #[test]
    fn deny_and_allow_apply_before_names() {
        let names = Names::default();
        let mut s = ServerConfig::stdio("s", Category::CodeGeneration, "x", &[]);
        s.deny = vec!["rm".into()];
        let sel = names.select(&s, &tools(&["ls", "rm"]));
        let got: Vec<_> = sel
            .tools
            .iter()
            .map(|(_, t)| t.spec().name.clone())
            .collect();
        assert_eq!(got, ["s_ls"]);
    }
}
