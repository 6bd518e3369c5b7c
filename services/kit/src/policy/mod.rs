//! Who may call what: roles mapped to the tools, resources and prompts they
//! may use, and the gateway's profiles (one MCP endpoint per Cursor mode).
//!
//! One TOML file (`SOPHIA_POLICY`) is read by the gateway, which filters
//! `tools/list` and refuses calls before they reach the bus, and by every
//! worker, which checks again the caller's roles carried in the request
//! envelope (a call forged straight onto the bus is refused there too).
//!
//! ```toml
//! [roles.analyst]
//! allow = [{ categories = ["business_intelligence"] }, { read_only = true }]
//! deny = [{ destructive = true }]
//!
//! [roles.operator]
//! allow = [{ tools = ["pulumi_*", "agno_*"] }]
//!
//! [profiles.ask]
//! include = [{ read_only = true }]
//! budget = 40
//! ```
//!
//! A call is allowed when an `allow` rule of one of the caller's roles (or of
//! the role `"*"`, which everyone has) matches it and no `deny` rule of those
//! roles does. With no matching rule the answer is no. Without a policy file
//! the mesh has no policy: every authenticated caller may call everything
//! (the quick start).

use std::collections::BTreeMap;
use std::path::Path;

use file::{BadGlob, PolicyFile, globs, place, rules};
use globset::{Glob, GlobSet, GlobSetBuilder};
use sophia_proto::{Category, Hints};

/// The role every caller has.
pub const EVERYONE: &str = "*";

/// The tool budget of a profile that does not set one (Cursor works best
/// with about 40 tools).
pub const DEFAULT_BUDGET: usize = 40;

/// What a rule or a profile is matched against: a tool, or a service's
/// resources and prompts.
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    /// The tool's name; `None` for a resource, prompt or completion.
    pub tool: Option<&'a str>,
    /// The tool's category (a resource's service's category, if known).
    pub category: Option<Category>,
    /// The service that offers it.
    pub service: Option<&'a str>,
    /// The tool's annotations; resources and prompts are read-only.
    pub hints: Hints,
}

impl<'a> Item<'a> {
    /// A tool.
    pub fn tool(name: &'a str, category: Category, hints: Hints) -> Self {
        Item {
            tool: Some(name),
            category: Some(category),
            service: None,
            hints,
        }
    }

    /// A resource, prompt or completion of `service`: read-only.
    pub fn offer(service: &'a str) -> Self {
        Item {
            tool: None,
            category: None,
            service: Some(service),
            hints: Hints {
                read_only: true,
                ..Hints::default()
            },
        }
    }

    /// How the refusal names it.
    fn shown(&self) -> String {
        match (self.tool, self.service) {
            (Some(tool), _) => format!("call `{}`", crate::vetting::shown(tool)),
            (None, Some(service)) => format!(
                "use the resources and prompts of `{}`",
                crate::vetting::shown(service)
            ),
            (None, None) => "do this".into(),
        }
    }
}

/// One rule: every condition it sets must hold.
#[derive(Clone, Debug)]
pub struct Rule {
    tools: Option<GlobSet>,
    services: Option<GlobSet>,
    categories: Option<Vec<Category>>,
    read_only: Option<bool>,
    destructive: Option<bool>,
}

impl Rule {
    /// Whether the rule matches `item`.
    pub fn matches(&self, item: &Item<'_>) -> bool {
        if let Some(tools) = &self.tools {
            // A tool-name rule says nothing about resources and prompts.
            match item.tool {
                Some(name) if tools.is_match(name) => {}
                _ => return false,
            }
        }
        if let Some(services) = &self.services {
            match item.service {
                Some(service) if services.is_match(service) => {}
                _ => return false,
            }
        }
        if let Some(categories) = &self.categories {
            match item.category {
                Some(c) if categories.contains(&c) => {}
                _ => return false,
            }
        }
        if self
            .read_only
            .is_some_and(|want| item.hints.read_only != want)
        {
            return false;
        }
        if self
            .destructive
            .is_some_and(|want| item.hints.destructive != want)
        {
            return false;
        }
        true
    }
}

/// A role's rules.
#[derive(Clone, Debug, Default)]
struct RoleRules {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// A named subset of the tools, served at `/mcp/<name>`.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The profile's name (its path).
    pub name: String,
    /// What it is for, shown to people.
    pub description: String,
    /// What it offers (any rule matching); empty: everything.
    include: Vec<Rule>,
    /// The most tools `tools/list` shows; past it, `find_tools` finds the rest.
    pub budget: usize,
    /// Whether destructive tools need the person's yes (MCP elicitation)
    /// before they run.
    pub confirm_destructive: bool,
    /// Tools listed first when over budget.
    pin: Option<GlobSet>,
}

impl Profile {
    /// Whether the profile offers `item`.
    pub fn offers(&self, item: &Item<'_>) -> bool {
        self.include.is_empty() || self.include.iter().any(|r| r.matches(item))
    }

    /// Whether `tool` is pinned (listed first when over budget).
    pub fn pinned(&self, tool: &str) -> bool {
        self.pin.as_ref().is_some_and(|p| p.is_match(tool))
    }
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No allow rule of the caller's roles matches.
    NoRule,
    /// A deny rule of this role matches.
    DeniedBy(String),
}

/// The policy: roles and profiles.
#[derive(Clone, Debug)]
pub struct Policy {
    roles: BTreeMap<String, RoleRules>,
    profiles: BTreeMap<String, Profile>,
}

/// A policy file that cannot be used. Its `Display` is one line naming the
/// file and the place.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("policy file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("policy file {path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl Policy {
    /// The policy file `SOPHIA_POLICY` names, if any; a file that cannot be
    /// used is a configuration error naming the place, in one line.
    pub fn from_config(
        path: Option<&Path>,
    ) -> Result<Option<std::sync::Arc<Policy>>, crate::KitError> {
        path.map(|path| {
            Policy::load(path)
                .map(std::sync::Arc::new)
                .map_err(|e| crate::KitError::Config {
                    key: "SOPHIA_POLICY",
                    message: e.to_string(),
                })
        })
        .transpose()
    }

    /// Reads the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// Parses a policy from `text` (named `origin` in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let invalid = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = place(text, span.map_or(0, |s| s.start));
            PolicyError::Invalid {
                path: origin.to_owned(),
                line,
                column,
                message: message.replace('\n', " "),
            }
        };
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_owned()))?;
        let bad = |b: BadGlob| invalid(Some(b.span), b.message);
        let mut roles = BTreeMap::new();
        for (name, role) in &file.roles {
            roles.insert(
                name.clone(),
                RoleRules {
                    allow: rules(&role.allow).map_err(bad)?,
                    deny: rules(&role.deny).map_err(bad)?,
                },
            );
        }
        let mut profiles = default_profiles();
        for (name, p) in &file.profiles {
            if !valid_profile_name(name) {
                return Err(invalid(
                    None,
                    format!(
                        "profile name {name:?} must be 1-32 of a-z, 0-9, '-' or '_', and not \
                         {RESERVED_PROFILES:?} (paths the gateway serves)"
                    ),
                ));
            }
            let pin_span = p.include.first().map(|s| s.span()).unwrap_or(0..0);
            profiles.insert(
                name.clone(),
                Profile {
                    name: name.clone(),
                    description: p.description.clone(),
                    include: rules(&p.include).map_err(bad)?,
                    budget: p.budget.unwrap_or(DEFAULT_BUDGET).max(1),
                    confirm_destructive: p.confirm_destructive,
                    pin: globs(&p.pin, &pin_span).map_err(bad)?,
                },
            );
        }
        Ok(Policy { roles, profiles })
    }

    /// Whether `roles` may use `item`, and if not, why.
    pub fn decide(&self, roles: &[String], item: &Item<'_>) -> Result<(), Denied> {
        let mine = roles
            .iter()
            .map(String::as_str)
            .chain([EVERYONE])
            .filter_map(|r| self.roles.get(r).map(|rules| (r, rules)));
        let mut allowed = false;
        for (name, rules) in mine {
            if rules.deny.iter().any(|r| r.matches(item)) {
                return Err(Denied::DeniedBy(name.to_owned()));
            }
            allowed = allowed || rules.allow.iter().any(|r| r.matches(item));
        }
        if allowed { Ok(()) } else { Err(Denied::NoRule) }
    }

    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// The profiles when there is no policy file: `ask`, `agent`,
    /// `background`.
    pub fn default_profiles() -> Vec<Profile> {
        default_profiles().into_values().collect()
    }
}

/// The sentence refusing `principal` (with `roles`) `item`. It names the
/// permission that is missing and nothing about tools the caller cannot see.
pub fn refusal(principal: &str, roles: &[String], item: &Item<'_>, why: &Denied) -> String {
    let roles = if roles.is_empty() {
        "no roles".to_owned()
    } else {
        format!("roles: {}", roles.join(", "))
    };
    let principal = crate::vetting::shown(principal);
    let what = item.shown();
    match why {
        Denied::NoRule => format!(
            "permission denied: {principal} ({roles}) may not {what}: no rule of the mesh's \
             policy allows it. Ask an administrator for a role that does, or call tools/list \
             for what you may call"
        ),
        Denied::DeniedBy(role) => format!(
            "permission denied: {principal} ({roles}) may not {what}: the policy's role \
             `{role}` denies it. Ask an administrator if you need it"
        ),
    }
}

/// Paths under `/mcp/` the gateway serves already (its REST shortcuts).
const RESERVED_PROFILES: [&str; 2] = ["pulumi", "agno"];

fn valid_profile_name(name: &str) -> bool {
    !RESERVED_PROFILES.contains(&name)
        && (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn default_profiles() -> BTreeMap<String, Profile> {
    let tools = |patterns: &[&str]| {
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            set.add(Glob::new(p).expect("built-in pattern"));
        }
        set.build().expect("built-in patterns")
    };
    let only = |read_only| Rule {
        tools: None,
        services: None,
        categories: None,
        read_only: Some(read_only),
        destructive: None,
    };
    let profiles = [
        Profile {
            name: "ask".into(),
            description: "Cursor's Ask mode: read-only tools only".into(),
            include: vec![only(true)],
            budget: DEFAULT_BUDGET,
            confirm_destructive: false,
            pin: None,
        },
        Profile {
            name: "agent".into(),
            description: "Cursor's Agent mode: everything your policy allows; destructive \
                          tools ask you first"
                .into(),
            include: Vec::new(),
            budget: DEFAULT_BUDGET,
            confirm_destructive: true,
            pin: None,
        },
        Profile {
            name: "background".into(),
            description: "background agents: the agent runtime and long-running jobs".into(),
            include: vec![
                Rule {
                    tools: None,
                    services: None,
                    categories: Some(vec![Category::Agents]),
                    read_only: None,
                    destructive: None,
                },
                Rule {
                    tools: Some(tools(&["pulumi_*"])),
                    services: None,
                    categories: None,
                    read_only: None,
                    destructive: None,
                },
            ],
            budget: DEFAULT_BUDGET,
            confirm_destructive: false,
            pin: None,
        },
    ];
    profiles.into_iter().map(|p| (p.name.clone(), p)).collect()
}

mod file;
#[cfg(test)]
mod tests;
