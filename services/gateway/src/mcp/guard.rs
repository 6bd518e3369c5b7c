//! Who may call what, at the gateway: the policy filters `tools/list` and
//! refuses calls before they reach the bus; a profile (`/mcp/<profile>`)
//! narrows the list to a Cursor mode's subset within a tool budget, with
//! `find_tools` for the rest; per-principal limits turn a flood into
//! `busy`. See `docs/security.md`.

use std::collections::BTreeSet;

use sophia_kit::policy::{Item, Profile};

use super::*;
use crate::access::{Who, audit};
use crate::registry::{ToolEntry, ToolView};

/// The gateway's own tool on a profile with more tools than its budget.
pub(super) const FIND_TOOLS: &str = "find_tools";

/// How many tools one `find_tools` call adds at most.
const FIND_LIMIT: usize = 10;

/// What a session of a profile has been shown: the tools of its last
/// `tools/list` and those `find_tools` found.
#[derive(Default)]
pub(super) struct Shown {
    /// Listed within the budget (`None` until the first `tools/list`).
    listed: Option<BTreeSet<String>>,
    /// Found with `find_tools`.
    found: BTreeSet<String>,
    /// A stateless (2026-07-28) request: no session remembers what was
    /// shown, so any tool of the profile may be called by name; the budget
    /// shapes only `tools/list`.
    pub(super) stateless: bool,
}

/// The tools a caller sees on this endpoint.
pub(super) struct Visible {
    /// Listed, sorted by name.
    pub(super) listed: Vec<Arc<ToolEntry>>,
    /// Allowed and in the profile, but past the budget: `find_tools` finds
    /// them.
    pub(super) hidden: Vec<Arc<ToolEntry>>,
}

/// The policy's view of a tool.
pub(super) fn item(entry: &ToolEntry) -> Item<'_> {
    Item::tool(&entry.spec.name, entry.spec.category, entry.spec.hints)
}

impl McpGateway {
    /// This endpoint's profile, if it serves one.
    pub(super) fn profile(&self) -> Option<&Profile> {
        self.profile.as_deref()
    }

    /// Who `caller` is, for audit records.
    pub(super) fn who<'a>(&'a self, caller: &'a Caller) -> Who<'a> {
        Who {
            principal: &caller.principal,
            roles: &caller.roles,
            profile: self.profile().map(|p| p.name.as_str()),
            via: if caller.via.contains("(REST)") {
                "rest"
            } else if caller.via.contains("(console)") {
                "console"
            } else if self.results.is_none() {
                "stdio"
            } else {
                "mcp"
            },
        }
    }

    /// The tools `roles` may call and this endpoint offers, split at the
    /// profile's budget: pinned tools first, then the most used on this
    /// gateway, then by name; `find_tools` takes one place.
    pub(super) fn visible(&self, roles: &[String], view: &ToolView) -> Visible {
        let access = &self.inner.access;
        let mut offered: Vec<Arc<ToolEntry>> = view
            .tools
            .values()
            .filter(|e| access.allows(roles, &item(e)))
            .filter(|e| self.profile().is_none_or(|p| p.offers(&item(e))))
            .cloned()
            .collect();
        let Some(profile) = self.profile().filter(|p| offered.len() > p.budget) else {
            return Visible {
                listed: offered,
                hidden: Vec::new(),
            };
        };
        let found = self.shown.lock().found.clone();
        offered.sort_by_cached_key(|e| {
            let name = &e.spec.name;
            (
                !found.contains(name),
                !profile.pinned(name),
                std::cmp::Reverse(access.usage(name)),
                name.clone(),
            )
        });
        let keep = (profile.budget.saturating_sub(1)).max(found.len());
        let hidden = offered.split_off(keep.min(offered.len()));
        offered.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        Visible {
            listed: offered,
            hidden,
        }
    }

    /// Remembers what this session was shown, so that a call of a tool
    /// past the budget must be found first.
    pub(super) fn remember_listed(&self, visible: &Visible) {
        if visible.hidden.is_empty() {
            return;
        }
        self.shown.lock().listed =
            Some(visible.listed.iter().map(|e| e.spec.name.clone()).collect());
    }

    /// Whether a call of `name` with `args` needs nothing of its own SSE
    /// stream, so the fast path ([`crate::fast`]) may answer it: it is not
    /// the profile's `find_tools`, and no one is asked to confirm it (a
    /// tool that is not known is left to the usual path, too).
    pub fn answers_alone(&self, name: &str, args: Option<&serde_json::Map<String, Value>>) -> bool {
        let Some(profile) = self.profile() else {
            return true;
        };
        if name == FIND_TOOLS {
            return false;
        }
        if !profile.confirm_destructive || args.is_some_and(|a| a.contains_key("preview_id")) {
            return true;
        }
        self.inner
            .registry
            .get(name)
            .is_some_and(|e| !e.spec.hints.destructive)
    }

    /// Whether `caller` may call `name` here: the policy, the profile, the
    /// budget. Under a policy, a tool that does not exist gets the same
    /// answer as one the caller may not call, so refusals reveal nothing.
    /// `entry` is the registry's tool of that name, if any.
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        name: &str,
        entry: Option<&Arc<ToolEntry>>,
    ) -> Result<(), Refusal> {
        let access = &self.inner.access;
        if let Some(policy) = &access.policy {
            let decision = match &entry {
                Some(e) => policy.decide(&caller.roles, &item(e)),
                None => Err(sophia_kit::policy::Denied::NoRule),
            };
            if let Err(why) = decision {
                if let sophia_kit::policy::Denied::DeniedBy(role) = &why {
                    tracing::info!(tool = %sophia_kit::vetting::shown(name), principal = %caller.principal, %role, "a deny rule refused a call");
                }
                let shown = Item {
                    tool: Some(name),
                    ..Item::offer("")
                };
                // Both reasons read the same to the caller.
                let text = sophia_kit::policy::refusal(
                    &caller.principal,
                    &caller.roles,
                    &shown,
                    &sophia_kit::policy::Denied::NoRule,
                );
                return Err(Refusal::Forbidden(text));
            }
        }
        let (Some(profile), Some(entry)) = (self.profile(), entry) else {
            return Ok(());
        };
        if !profile.offers(&item(entry)) {
            return Err(Refusal::Forbidden(format!(
                "the `{}` profile does not offer `{}` ({}). Use the endpoint of a profile that \
                 does, e.g. /mcp/agent",
                profile.name, entry.spec.name, profile.description
            )));
        }
        let mut shown = self.shown.lock();
        if shown.stateless || shown.found.contains(name) {
            return Ok(());
        }
        let listed = match &shown.listed {
            Some(listed) => listed.contains(name),
            None => {
                drop(shown);
                let visible = self.visible(&caller.roles, &self.inner.registry.view());
                self.remember_listed(&visible);
                shown = self.shown.lock();
                visible.hidden.is_empty() || shown.listed.as_ref().is_some_and(|l| l.contains(name))
            }
        };
        if listed {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "`{}` is past this profile's budget of {} tools and not yet in this session: \
                 call {FIND_TOOLS} with words describing it first",
                entry.spec.name, profile.budget
            )))
        }
    }

    /// `find_tools {query}`: the hidden tools matching the query's words
    /// (in name, title or description), added to this session's tools.
    pub(super) async fn find_tools(
        &self,
        args: &serde_json::Map<String, Value>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let Some(query) = args.get("query").and_then(Value::as_str) else {
            return Ok(convert::error_result(
                ErrorCode::InvalidArguments,
                "find_tools needs `query`: words describing the tool you need, e.g. \"hubspot contacts\"".into(),
                None,
            ));
        };
        let words: Vec<String> = query
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .take(32)
            .collect();
        let caller = self.caller(context);
        let visible = self.visible(&caller.roles, &self.inner.registry.view());
        let mut scored: Vec<(usize, &Arc<ToolEntry>)> = visible
            .hidden
            .iter()
            .map(|e| {
                let text = format!(
                    "{} {} {}",
                    e.spec.name,
                    e.spec.title.as_deref().unwrap_or_default(),
                    e.spec.description
                )
                .to_lowercase();
                let score = words.iter().filter(|w| text.contains(w.as_str())).count()
                    + words
                        .iter()
                        .filter(|w| e.spec.name.to_lowercase().contains(w.as_str()))
                        .count();
                (score, e)
            })
            .filter(|(score, _)| *score > 0)
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.spec.name.cmp(&b.1.spec.name)));
        scored.truncate(FIND_LIMIT);
        let found: Vec<Value> = scored
            .iter()
            .map(|(_, e)| json!({"name": e.spec.name, "description": e.spec.description}))
            .collect();
        if !scored.is_empty() {
            let mut shown = self.shown.lock();
            shown
                .found
                .extend(scored.iter().map(|(_, e)| e.spec.name.clone()));
        }
        let stateless = is_stateless(context);
        if !found.is_empty()
            && !stateless
            && let Err(e) = context.peer.notify_tool_list_changed().await
        {
            tracing::debug!(cause = %e, "could not say the session's tools changed");
        }
        let names: Vec<&str> = scored.iter().map(|(_, e)| e.spec.name.as_str()).collect();
        let text = found_text(query, &names, stateless);
        let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
        result.structured_content = Some(json!({ "tools": found }));
        Ok(result)
    }

    /// On a profile that puts destructive tools behind confirmation (the
    /// `agent` profile), asks the person before `entry` runs; `Some` is the
    /// call's answer when they do not say yes. A call applying a reviewed
    /// preview (`preview_id`) was confirmed already. A stateless client
    /// (`rounds`) is asked through `input_required`
    /// ([`McpGateway::confirm_in_rounds`]).
    pub(super) async fn confirm_destructive(
        &self,
        entry: &ToolEntry,
        args: &Value,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
        rounds: Option<&mut super::rounds::Rounds>,
    ) -> Option<CallToolResponse> {
        let asks = self.profile().is_some_and(|p| p.confirm_destructive);
        if !asks || !entry.spec.hints.destructive || args.get("preview_id").is_some() {
            return None;
        }
        let tool = &entry.spec.name;
        let profile = self.profile().map_or("", |p| p.name.as_str());
        let can_elicit = match &rounds {
            Some(rounds) => rounds.can.elicit,
            None => relay::client_can(&context.peer).elicit,
        };
        if !can_elicit {
            self.audit(
                sophia_proto::audit::AuditKind::Refusal,
                caller,
                tool,
                "confirmation_impossible",
                AuditDetail::default(),
            );
            return Some(
                convert::error_result(
                    ErrorCode::PermissionDenied,
                    format!(
                        "the `{profile}` profile runs destructive tools such as `{tool}` only once \
                     you confirm, and this client cannot be asked (it does not support MCP \
                     elicitation). Use a client that does, pass the preview_id of a preview \
                     you reviewed, or use a profile without confirmation"
                    ),
                    None,
                )
                .into(),
            );
        }
        let question = confirm_question(tool, args);
        if let Some(rounds) = rounds {
            return self.confirm_in_rounds(tool, caller, rounds, question);
        }
        let answer =
            relay::relay_question(&context.peer, &question, self.inner.limits.default_timeout)
                .await;
        let yes = answer.as_ref().is_ok_and(confirmed);
        self.confirmation_given(tool, caller, yes)
    }

    /// Audits the person's answer to the profile's confirmation of `tool`;
    /// `Some` is the call's answer when it is not yes.
    pub(super) fn confirmation_given(
        &self,
        tool: &str,
        caller: &Caller,
        yes: bool,
    ) -> Option<CallToolResponse> {
        let outcome = if yes { "accepted" } else { "declined" };
        self.audit(
            sophia_proto::audit::AuditKind::Confirmation,
            caller,
            tool,
            outcome,
            AuditDetail::default(),
        );
        if yes {
            return None;
        }
        Some(
            convert::error_result(
                ErrorCode::Cancelled,
                format!("`{tool}` did not run: you did not confirm it. Nothing was changed"),
                None,
            )
            .into(),
        )
    }

    /// Whether `caller` may use the resources and prompts of `service` here
    /// (the policy and the profile).
    pub(super) fn offers_allowed(&self, caller: &Caller, service: &str) -> bool {
        let item = Item::offer(service);
        self.inner.access.allows(&caller.roles, &item)
            && self.profile().is_none_or(|p| p.offers(&item))
    }

    /// Refuses `caller` the offers of `service` if it may not use them.
    pub(super) fn check_offers(
        &self,
        caller: &Caller,
        service: &str,
        what: &str,
    ) -> Result<(), McpError> {
        if self.offers_allowed(caller, service) {
            return Ok(());
        }
        self.audit(
            sophia_proto::audit::AuditKind::Refusal,
            caller,
            what,
            ErrorCode::PermissionDenied.as_str(),
            AuditDetail::default(),
        );
        Err(McpError::invalid_params(
            sophia_kit::policy::refusal(
                &caller.principal,
                &caller.roles,
                &Item::offer(service),
                &sophia_kit::policy::Denied::NoRule,
            ),
            None,
        ))
    }

    /// Records `kind` for `caller` in the audit trail.
    pub(super) fn audit(
        &self,
        kind: sophia_proto::audit::AuditKind,
        caller: &Caller,
        tool: &str,
        outcome: &str,
        detail: AuditDetail,
    ) {
        let mut record = audit::record(kind, &self.who(caller), tool, outcome);
        record.duration_ms = detail.started.map_or(0, |s| s.elapsed().as_millis() as u64);
        record.trace_id = detail.trace_id;
        record.args_sha256 = detail.args_sha256;
        self.inner.access.audit.record(record);
    }
}

/// What an audit record adds when known.
#[derive(Default)]
pub(super) struct AuditDetail {
    pub(super) started: Option<Instant>,
    pub(super) trace_id: Option<String>,
    pub(super) args_sha256: Option<String>,
}

/// The `find_tools` tool as `tools/list` shows it.
pub(super) fn find_tools_tool(profile: &Profile, hidden: usize) -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "words describing the tool you need, e.g. \"hubspot contacts\""}
        },
        "required": ["query"],
    });
    let mut tool = Tool::new(
        FIND_TOOLS,
        format!(
            "The `{}` profile offers {hidden} more tools than it lists (its budget is {}). \
             Search them by words; the tools found are added to this session's list and \
             can then be called.",
            profile.name, profile.budget
        ),
        Arc::new(schema.as_object().cloned().unwrap_or_default()),
    );
    tool.annotations = Some(rmcp::model::ToolAnnotations::new().read_only(true));
    tool
}

/// The agent profile's question before a destructive `tool` runs.
fn confirm_question(tool: &str, args: &Value) -> sophia_proto::Question {
    let mut shown_args: String = args.to_string().chars().take(600).collect();
    if shown_args.len() < args.to_string().len() {
        shown_args.push('…');
    }
    sophia_proto::Question::Elicit {
        message: format!(
            "Run `{tool}`? It may destroy or overwrite things. Arguments: {shown_args}"
        ),
        schema: json!({
            "type": "object",
            "properties": {"confirm": {"type": "boolean", "description": format!("run {tool}")}},
            "required": ["confirm"],
        }),
    }
}

/// Whether an elicitation result says yes to a `confirm` question.
pub(super) fn confirmed(answer: &Value) -> bool {
    answer.get("action").and_then(Value::as_str) == Some("accept")
        && answer.pointer("/content/confirm").and_then(Value::as_bool) == Some(true)
}

/// What `find_tools` says it found.
fn found_text(query: &str, names: &[&str], stateless: bool) -> String {
    if names.is_empty() {
        return format!(
            "no tool you may call matches {:?}; try other words",
            sophia_kit::vetting::shown(query)
        );
    }
    format!(
        "found {} tool(s), {}: {}",
        names.len(),
        if stateless {
            "callable by name"
        } else {
            "now in this session's tools/list and callable"
        },
        names.join(", ")
    )
}
