//! The policy file's format (TOML), read with spans so that every problem
//! names its line and column.

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sophia_proto::Category;

use super::Rule;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    #[serde(default)]
    pub(super) roles: BTreeMap<String, RoleFile>,
    #[serde(default)]
    pub(super) profiles: BTreeMap<String, ProfileFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoleFile {
    #[serde(default)]
    pub(super) allow: Vec<toml::Spanned<RuleFile>>,
    #[serde(default)]
    pub(super) deny: Vec<toml::Spanned<RuleFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    pub(super) tools: Option<Vec<String>>,
    pub(super) services: Option<Vec<String>>,
    pub(super) categories: Option<Vec<Category>>,
    pub(super) read_only: Option<bool>,
    pub(super) destructive: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileFile {
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) include: Vec<toml::Spanned<RuleFile>>,
    pub(super) budget: Option<usize>,
    #[serde(default)]
    pub(super) confirm_destructive: bool,
    pub(super) pin: Option<Vec<String>>,
}

/// A glob problem at `span`.
pub(super) struct BadGlob {
    pub(super) span: std::ops::Range<usize>,
    pub(super) message: String,
}

pub(super) fn globs(
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

pub(super) fn rule(spanned: &toml::Spanned<RuleFile>) -> Result<Rule, BadGlob> {
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

pub(super) fn rules(list: &[toml::Spanned<RuleFile>]) -> Result<Vec<Rule>, BadGlob> {
    list.iter().map(rule).collect()
}

/// Where a byte offset of `text` is, as 1-based line and column.
pub(super) fn place(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
