//! Agent templates: what kind of agent does what, with which model and
//! tools. Built-in defaults follow the seed's categories; a TOML file
//! (`SOPHIA_AGNO_TEMPLATES`) adds templates or replaces them by type.
//!
//! ```toml
//! [[agent]]
//! type = "gong_agent"
//! category = "business_intelligence"
//! description = "Analyzes sales calls recorded in Gong"
//! instructions = "You analyze sales calls..."
//! model = "default"            # an alias the intelligence-worker resolves
//! tools = ["gong_list_calls"]  # mesh tools the agent may call
//! max_steps = 8
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sophia_kit::Category;

/// One kind of agent. Shared (behind an `Arc`) by every agent made from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// The type name, e.g. `gong_agent`.
    #[serde(rename = "type")]
    pub agent_type: String,
    /// The category whose replicas run it.
    pub category: Category,
    /// What the agent is for.
    pub description: String,
    /// The system prompt.
    pub instructions: String,
    /// The model alias, resolved by the intelligence-worker.
    #[serde(default = "default_model")]
    pub model: String,
    /// The mesh tools the agent may call.
    #[serde(default)]
    pub tools: Vec<String>,
    /// The most model turns in one run.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// A JSON Schema the final answer must fit, if any (passed to the model
    /// as `response_format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
}

fn default_model() -> String {
    "default".into()
}

fn default_max_steps() -> u32 {
    8
}

/// Why templates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("could not read agent templates from {path}: {cause}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        cause: String,
    },
    /// The file is not valid.
    #[error("invalid agent templates in {path}: {cause}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        cause: String,
    },
}

/// The built-in templates: type, category, description, instructions, tools.
type Builtin = (
    &'static str,
    Category,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const BUILTIN: [Builtin; 7] = {
    use Category::*;
    [
        (
            "gong_agent",
            BusinessIntelligence,
            "Analyzes sales calls recorded in Gong: topics, objections, next steps.",
            "You analyze sales calls from Gong. Use the Gong tools to find calls and read \
             their transcripts, then answer with concrete findings and the calls they come from.",
            &["gong_list_calls", "gong_get_transcript"],
        ),
        (
            "snowflake_agent",
            BusinessIntelligence,
            "Answers business questions with SQL on Snowflake.",
            "You answer business questions with read-only SQL on Snowflake. Inspect the \
             schema first, run the smallest query that answers, and show the numbers.",
            &["snowflake_list_objects", "snowflake_run_snowflake_query"],
        ),
        (
            "hubspot_agent",
            BusinessIntelligence,
            "Looks up deals, contacts and pipelines in HubSpot.",
            "You work with HubSpot CRM data: deals, contacts, companies and pipelines. \
             Cite the records you used.",
            &["hubspot-search-objects", "hubspot-batch-read-objects"],
        ),
        (
            "pulumi_agent",
            Infrastructure,
            "Inspects, previews and deploys Pulumi stacks.",
            "You manage infrastructure with Pulumi. Always preview before changing anything, \
             explain the changes the preview shows, and apply only that preview (pass its \
             preview_id). A person confirms every change before it runs.",
            &[
                "pulumi_list_stacks",
                "pulumi_preview",
                "pulumi_up",
                "pulumi_outputs",
                "pulumi_history",
                "pulumi_job",
            ],
        ),
        (
            "docker_agent",
            Infrastructure,
            "Builds and inspects container images and running containers.",
            "You work with Docker images and containers. Inspect before you change, and \
             say what each command will do.",
            &["docker_list_containers", "docker_container_logs"],
        ),
        (
            "code_agent",
            CodeGeneration,
            "Writes, reviews and explains code.",
            "You write and review code. Prefer small, tested changes, and explain them.",
            // No tools: the agent a first run can use with nothing but a
            // model (README); the catalog's git tools are there to add.
            &[],
        ),
        (
            "memory_agent",
            CodeGeneration,
            "Remembers and recalls facts about the codebase and the team's decisions.",
            "You keep and recall facts about the codebase and the team's decisions. \
             Say where each fact came from. Search the memory before adding to it.",
            &[
                "memory_search_nodes",
                "memory_open_nodes",
                "memory_create_entities",
                "memory_add_observations",
            ],
        ),
    ]
};

/// The templates a replica knows, by type.
#[derive(Clone, Debug, Default)]
pub struct Templates {
    by_type: BTreeMap<String, Arc<Template>>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    agent: Vec<Template>,
}

impl Templates {
    /// The built-in templates.
    pub fn builtin() -> Self {
        let mut out = Self::default();
        for (agent_type, category, description, instructions, tools) in BUILTIN {
            out.insert(Template {
                agent_type: agent_type.into(),
                category,
                description: description.into(),
                instructions: instructions.into(),
                model: default_model(),
                tools: tools.iter().map(|s| (*s).to_owned()).collect(),
                max_steps: default_max_steps(),
                output_schema: None,
            });
        }
        out
    }

    /// The built-in templates, with those in `path` added or replacing
    /// built-ins of the same type.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        Self::builtin()
            .merge_toml(&text)
            .map_err(|cause| TemplateError::Invalid {
                path: path.display().to_string(),
                cause,
            })
    }

    /// Adds the templates of a TOML text.
    pub fn merge_toml(mut self, text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        for template in file.agent {
            if template.agent_type.is_empty() {
                return Err("an agent template has an empty `type`".into());
            }
            if template.category == Category::Inference || template.category == Category::Agents {
                return Err(format!(
                    "template {}: category must be business_intelligence, infrastructure or \
                     code_generation",
                    template.agent_type
                ));
            }
            if template.max_steps == 0 {
                return Err(format!(
                    "template {}: max_steps must be at least 1",
                    template.agent_type
                ));
            }
            self.insert(template);
        }
        Ok(self)
    }

    fn insert(&mut self, template: Template) {
        self.by_type
            .insert(template.agent_type.clone(), Arc::new(template));
    }

    /// A template by type.
    pub fn get(&self, agent_type: &str) -> Option<&Arc<Template>> {
        self.by_type.get(agent_type)
    }

    /// Every template, by type name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Template>> {
        self.by_type.values()
    }

    /// The type names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.by_type.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtins_cover_the_seeds_categories() {
        let t = Templates::builtin();
        for (ty, cat) in [
            ("gong_agent", Category::BusinessIntelligence),
            ("snowflake_agent", Category::BusinessIntelligence),
            ("hubspot_agent", Category::BusinessIntelligence),
            ("pulumi_agent", Category::Infrastructure),
            ("docker_agent", Category::Infrastructure),
            ("code_agent", Category::CodeGeneration),
            ("memory_agent", Category::CodeGeneration),
        ] {
            assert_eq!(t.get(ty).map(|t| t.category), Some(cat), "{ty}");
        }
    }

    #[test]
    fn a_file_adds_and_replaces_templates_and_bad_ones_are_refused() {
        let t = Templates::builtin()
            .merge_toml(
                r#"
[[agent]]
type = "gong_agent"
category = "business_intelligence"
description = "mine"
instructions = "do it"
model = "fast"
tools = ["x"]
max_steps = 3

[[agent]]
type = "sql_agent"
category = "code_generation"
description = "writes SQL"
instructions = "write SQL"
"#,
            )
            .unwrap();
        let gong = t.get("gong_agent").unwrap();
        assert_eq!((gong.model.as_str(), gong.max_steps), ("fast", 3));
        assert_eq!(t.get("sql_agent").unwrap().max_steps, 8);
        let bad = Templates::builtin().merge_toml(
            "[[agent]]\ntype = \"x\"\ncategory = \"inference\"\ndescription = \"\"\ninstructions = \"\"\n",
        );
        assert!(bad.unwrap_err().contains("category must be"));
        let unknown = Templates::builtin().merge_toml(
            "[[agent]]\ntype = \"x\"\ncategory = \"marketing\"\ndescription = \"\"\ninstructions = \"\"\n",
        );
        assert!(unknown.is_err());
    }
}
