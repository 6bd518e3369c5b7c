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

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, RoleFile>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleFile {
    #[serde(default)]
    allow: Vec<toml::Spanned<RuleFile>>,
    #[serde(default)]
    deny: Vec<toml::Spanned<RuleFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    tools: Option<Vec<String>>,
    services: Option<Vec<String>>,
    categories: Option<Vec<Category>>,
    read_only: Option<bool>,
    destructive: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    include: Vec<toml::Spanned<RuleFile>>,
    budget: Option<usize>,
    #[serde(default)]
    confirm_destructive: bool,
    pin: Option<Vec<String>>,
}

/// A glob problem at `span`.
struct BadGlob {
    span: std::ops::Range<usize>,
    message: String,
}

fn globs(
    patterns: &Option<Vec<String>>,
    span: &std::ops::Range<usize>,
) -> Result<Option<GlobSet>, BadGlob> {
    let Some(patterns) = patterns else {
        return Ok(None);
    };
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        set.add(Glob::new(p).map_err(|e| BadGlob {
            span: span.clone(),
            message: format!("bad pattern {p:?}: {}", e.kind()),
        })?);
    }
    set.build().map(Some).map_err(|e| BadGlob {
        span: span.clone(),
        message: e.to_string(),
    })
}

fn rule(spanned: &toml::Spanned<RuleFile>) -> Result<Rule, BadGlob> {
    let span = spanned.span();
    let r = spanned.get_ref();
    let empty = r.tools.is_none()
        && r.services.is_none()
        && r.categories.is_none()
        && r.read_only.is_none()
        && r.destructive.is_none();
    if empty {
        return Err(BadGlob {
            span,
            message: "an empty rule matches everything; write `tools = [\"*\"]` if that is meant"
                .into(),
        });
    }
    Ok(Rule {
        tools: globs(&r.tools, &span)?,
        services: globs(&r.services, &span)?,
        categories: r.categories.clone(),
        read_only: r.read_only,
        destructive: r.destructive,
    })
}

fn rules(list: &[toml::Spanned<RuleFile>]) -> Result<Vec<Rule>, BadGlob> {
    list.iter().map(rule).collect()
}

/// Where a byte offset of `text` is, as 1-based line and column.
fn place(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Policy {
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

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[roles.analyst]
allow = [{ categories = ["business_intelligence"] }, { read_only = true }]
deny = [{ destructive = true }]

[roles.operator]
allow = [{ tools = ["pulumi_*"] }]

[roles."*"]
allow = [{ tools = ["echo"] }]
"#;

    fn hints(read_only: bool, destructive: bool) -> Hints {
        Hints {
            read_only,
            destructive,
            ..Hints::default()
        }
    }

    #[test]
    fn roles_allow_by_category_annotation_and_name_and_deny_wins() {
        let p = Policy::parse(POLICY, "test").unwrap();
        let analyst = ["analyst".to_owned()];
        let bi = Item::tool(
            "gong_calls",
            Category::BusinessIntelligence,
            hints(false, false),
        );
        let preview = Item::tool(
            "pulumi_preview",
            Category::Infrastructure,
            hints(true, false),
        );
        let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
        assert_eq!(p.decide(&analyst, &bi), Ok(()));
        assert_eq!(p.decide(&analyst, &preview), Ok(()));
        assert_eq!(
            p.decide(&analyst, &up),
            Err(Denied::DeniedBy("analyst".into()))
        );
        // The operator may; a principal with both roles may not (deny wins).
        assert_eq!(p.decide(&["operator".into()], &up), Ok(()));
        assert!(
            p.decide(&["operator".into(), "analyst".into()], &up)
                .is_err()
        );
        // Everyone may echo; nobody else may do anything by default.
        let echo = Item::tool("echo", Category::CodeGeneration, hints(false, false));
        assert_eq!(p.decide(&[], &echo), Ok(()));
        assert_eq!(p.decide(&[], &bi), Err(Denied::NoRule));
        // Offers are read-only: the analyst reads resources, the operator does not.
        assert_eq!(p.decide(&analyst, &Item::offer("docs")), Ok(()));
        assert_eq!(
            p.decide(&["operator".into()], &Item::offer("docs")),
            Err(Denied::NoRule)
        );
    }

    #[test]
    fn a_typo_is_one_line_naming_the_place() {
        let bad = "[roles.analyst]\nallow = [{ categroies = [\"business_intelligence\"] }]\n";
        let e = Policy::parse(bad, "policy.toml").unwrap_err().to_string();
        assert!(e.starts_with("policy file policy.toml:2:"), "{e}");
        assert!(e.contains("categroies"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let bad = "[roles.a]\nallow = [{ categories = [\"finance\"] }]\n";
        let e = Policy::parse(bad, "p").unwrap_err().to_string();
        assert!(e.contains("p:2:") && e.contains("finance"), "{e}");
        let bad = "[roles.a]\nallow = [{ tools = [\"a[\"] }]\n";
        assert!(
            Policy::parse(bad, "p")
                .unwrap_err()
                .to_string()
                .contains("p:2:")
        );
        let bad = "[roles.a]\nallow = [{}]\n";
        assert!(
            Policy::parse(bad, "p")
                .unwrap_err()
                .to_string()
                .contains("empty rule")
        );
    }

    #[test]
    fn the_refusal_names_the_permission_and_nothing_else() {
        let p = Policy::parse(POLICY, "test").unwrap();
        let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
        let why = p.decide(&[], &up).unwrap_err();
        let text = refusal("alice", &[], &up, &why);
        assert!(text.contains("may not call `pulumi_up`"), "{text}");
        assert!(
            !text.contains("pulumi_preview") && !text.contains("operator"),
            "{text}"
        );
    }

    #[test]
    fn the_example_policy_parses() {
        let text = include_str!("../../../ops/policy/example.toml");
        let p = Policy::parse(text, "ops/policy/example.toml").unwrap();
        let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
        assert!(p.decide(&["analyst".into()], &up).is_err());
        assert_eq!(p.decide(&["operator".into()], &up), Ok(()));
        assert!(p.profile("sales").is_some() && p.profile("ask").is_some());
    }

    #[test]
    fn default_profiles_are_ask_agent_and_background() {
        let p = Policy::parse("", "empty").unwrap();
        let ask = p.profile("ask").unwrap();
        let up = Item::tool("pulumi_up", Category::Infrastructure, hints(false, true));
        let list = Item::tool(
            "pulumi_stacks",
            Category::Infrastructure,
            hints(true, false),
        );
        assert!(!ask.offers(&up) && ask.offers(&list));
        assert!(p.profile("agent").unwrap().confirm_destructive);
        assert!(p.profile("background").unwrap().offers(&up));
    }
}
