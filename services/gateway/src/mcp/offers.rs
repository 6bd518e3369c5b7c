//! Resources, prompts, completions and subscriptions: what workers offer
//! besides tools, listed from the registry and asked of the owning service
//! over the bus.

use super::*;

impl McpGateway {
    /// The service offering `uri`, or an error that says where to look.
    pub(super) fn resource_owner(&self, uri: &str) -> Result<String, McpError> {
        self.inner
            .registry
            .view()
            .resource_owner(uri)
            .map(str::to_owned)
            .ok_or_else(|| {
                McpError::resource_not_found(
                    format!(
                        "no live worker offers resource {}: see resources/list and resources/templates/list",
                        sophia_kit::vetting::shown(uri)
                    ),
                    // The URI asked for, as MCP 2026-07-28 recommends.
                    Some(json!({ "uri": uri })),
                )
            })
    }

    /// Relays workers' `ResourceUpdated` to the sessions subscribed to the
    /// resource, as `notifications/resources/updated`.
    pub(super) fn spawn_resource_updates(&self) {
        let weak = Arc::downgrade(&self.inner);
        let client = self.inner.bus.client().clone();
        tokio::spawn(async move {
            let Ok(mut updates) = client
                .subscribe(sophia_proto::subject::RESOURCE_UPDATED)
                .await
            else {
                tracing::warn!("could not subscribe to resource updates");
                return;
            };
            while let Some(msg) = futures::StreamExt::next(&mut updates).await {
                let Some(inner) = weak.upgrade() else { break };
                let Ok(update) =
                    sophia_proto::decode::<sophia_proto::ResourceUpdated>(&msg.payload)
                else {
                    continue;
                };
                // Stateless clients' `subscriptions/listen` streams.
                let _ = inner.updates.send(update.uri.clone());
                let peers: Vec<Peer<RoleServer>> = {
                    let mut subs = inner.subscriptions.lock();
                    let Some(list) = subs.get_mut(&update.uri) else {
                        continue;
                    };
                    list.retain(|(_, p)| !p.is_transport_closed());
                    list.iter().map(|(_, p)| p.clone()).collect()
                };
                for peer in peers {
                    let uri = update.uri.clone();
                    tokio::spawn(async move {
                        let param = serde_json::from_value(json!({ "uri": uri }));
                        if let Ok(param) = param
                            && let Err(e) = peer.notify_resource_updated(param).await
                        {
                            tracing::debug!(cause = %e, "could not relay a resource update");
                        }
                    });
                }
            }
        });
    }

    /// Asks the worker service that owns a resource, prompt or completion,
    /// over the bus; its MCP result as JSON.
    pub(super) async fn ask_service(
        &self,
        service: &str,
        method: McpMethod,
        params: Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        let asking = (ClientCan::default(), None);
        let outcome = self
            .offer_call(service, method, params, context, asking)
            .await?;
        offer_result(service, outcome)
    }

    /// The call behind [`McpGateway::ask_service`]; `(can, round)` let the
    /// worker ask the client (`prompts/get`): what it answers (on its
    /// session, relayed, or in rounds) and its answers to the previous
    /// round. Refused (`Err`) before the bus if the policy says no.
    async fn offer_call(
        &self,
        service: &str,
        method: McpMethod,
        params: Value,
        context: &RequestContext<RoleServer>,
        (can, round): (ClientCan, Option<sophia_proto::Round>),
    ) -> Result<Result<sophia_kit::bus::Reply, CallError>, McpError> {
        let caller = self.caller(context);
        self.check_offers(&caller, service, method.mcp_name())?;
        let span = server_span(method.mcp_name(), None, context, vec![]);
        let timeout = self.inner.limits.default_timeout;
        let spec = CallSpec {
            tool: method.mcp_name(),
            target: Target::Offer {
                service: service.to_owned(),
                method,
            },
            args: params,
            timeout,
            caller,
            trace: span.trace(),
            // Reads of resources and prompts have no side effect.
            liveness: sophia_kit::bus::Liveness {
                acked: false,
                retry: true,
            },
        };
        let relay = Relay::open(self, context, can);
        let attempt = sophia_kit::bus::Attempt {
            round,
            detached: false,
        };
        let call = self
            .inner
            .bus
            .call_with(spec, relay.target(), attempt, &context.ct);
        let outcome = relay.run_until(call, &context.peer, timeout).await;
        if let Err(e) = &outcome {
            span.fail_code(e.code());
        }
        Ok(outcome)
    }

    pub(super) async fn offer_list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourcesResult, McpError> {
        let caller = self.caller(&context);
        let allowed = |service: &str| self.offers_allowed(&caller, service);
        offers_list(
            "resources",
            &self.inner.registry.view().resources,
            request,
            allowed,
        )
    }

    pub(super) async fn offer_list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, McpError> {
        let caller = self.caller(&context);
        let allowed = |service: &str| self.offers_allowed(&caller, service);
        offers_list(
            "resourceTemplates",
            &self.inner.registry.view().templates,
            request,
            allowed,
        )
    }

    pub(super) async fn offer_read_resource(
        &self,
        request: rmcp::model::ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ReadResourceResponse, McpError> {
        if let Some(results) = self
            .results
            .as_ref()
            .filter(|_| crate::results::is_part(&request.uri))
        {
            let reader = self.caller(&context).principal;
            return Ok(results.read(&request.uri, &reader).await?.into());
        }
        let service = self.resource_owner(&request.uri)?;
        let result = self
            .ask_service(
                &service,
                McpMethod::ReadResource,
                json!({"uri": request.uri}),
                &context,
            )
            .await?;
        Ok(result_from_json::<rmcp::model::ReadResourceResult>(result)?.into())
    }

    pub(super) async fn offer_subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let service = self.resource_owner(&request.uri)?;
        self.check_offers(&self.caller(&context), &service, "resources/subscribe")?;
        let mut subs = self.inner.subscriptions.lock();
        let list = subs.entry(request.uri).or_default();
        if !list.iter().any(|(k, _)| *k == self.session_key) {
            list.push((self.session_key, context.peer));
        }
        Ok(())
    }

    pub(super) async fn offer_unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.resource_owner(&request.uri)?;
        let mut subs = self.inner.subscriptions.lock();
        if let Some(list) = subs.get_mut(&request.uri) {
            list.retain(|(k, _)| *k != self.session_key);
        }
        Ok(())
    }

    pub(super) async fn offer_list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, McpError> {
        let caller = self.caller(&context);
        let allowed = |service: &str| self.offers_allowed(&caller, service);
        offers_list(
            "prompts",
            &self.inner.registry.view().prompts,
            request,
            allowed,
        )
    }

    /// `prompts/get`. The prompt's worker may ask the client questions,
    /// as a tool does: on its session, or (a stateless client) as an
    /// `input_required` result, answered in a retry (`rounds.rs`).
    pub(super) async fn offer_get_prompt(
        &self,
        mut request: rmcp::model::GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, McpError> {
        let view = self.inner.registry.view();
        let Some((service, _)) = view.prompts.get(&request.name) else {
            return Err(McpError::invalid_params(
                format!(
                    "unknown prompt {:?}: see prompts/list",
                    sophia_kit::vetting::shown(&request.name)
                ),
                None,
            ));
        };
        let caller = self.caller(&context);
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let rounds = self.prompt_rounds_of(&mut request, &args, &caller, &context)?;
        let can = rounds
            .as_ref()
            .map_or_else(|| relay::client_can(&context.peer), |r| r.can);
        let asking = (can, rounds.as_ref().and_then(rounds::Rounds::round));
        let params = serde_json::to_value(&request).unwrap_or_default();
        let outcome = self
            .offer_call(service, McpMethod::GetPrompt, params, &context, asking)
            .await?;
        if let (Err(CallError::Worker(w)), Some(rounds)) = (&outcome, &rounds)
            && let Some(asked) = self.worker_asked(rounds, w)
        {
            return asked
                .map(Into::into)
                .map_err(|e| McpError::internal_error(format!("{e} (worker {service})"), None));
        }
        let result = offer_result(service, outcome)?;
        Ok(result_from_json::<rmcp::model::GetPromptResult>(result)?.into())
    }

    pub(super) async fn offer_complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        let params = serde_json::to_value(&request).unwrap_or_default();
        let view = self.inner.registry.view();
        let owner = match params["ref"]["type"].as_str() {
            Some("ref/prompt") => params["ref"]["name"]
                .as_str()
                .and_then(|n| view.prompts.get(n))
                .map(|(s, _)| s.clone()),
            Some("ref/resource") => params["ref"]["uri"].as_str().and_then(|u| {
                view.templates
                    .get(u)
                    .map(|(s, _)| s.clone())
                    .or_else(|| view.resource_owner(u).map(str::to_owned))
            }),
            _ => None,
        };
        let Some(service) = owner.filter(|s| view.completers.contains(s)) else {
            // Nothing to suggest is a valid answer, not an error.
            return result_from_json(
                json!({"completion": {"values": [], "total": 0, "hasMore": false}}),
            );
        };
        let result = self
            .ask_service(&service, McpMethod::Complete, params, &context)
            .await?;
        result_from_json(result)
    }
}

/// A worker service's answer to an offer's request as its MCP result
/// (JSON), or the JSON-RPC error to answer with.
fn offer_result(
    service: &str,
    outcome: Result<sophia_kit::bus::Reply, CallError>,
) -> Result<Value, McpError> {
    match outcome {
        Ok(reply) if !reply.output.is_error => reply.output.structured.ok_or_else(|| {
            McpError::internal_error(format!("worker {service} answered without a result"), None)
        }),
        Ok(reply) => Err(McpError::internal_error(
            format!("worker {service} failed: {:?}", reply.output.content),
            None,
        )),
        Err(CallError::Worker(e)) if e.code == ErrorCode::InvalidArguments => {
            Err(McpError::invalid_params(e.message, None))
        }
        Err(CallError::Worker(e)) if e.code == ErrorCode::MissingCapability => {
            Err(rounds::missing_capability(&e)
                .unwrap_or_else(|| McpError::invalid_params(e.message, None)))
        }
        Err(e) => Err(McpError::internal_error(
            format!("{e} (worker {service})"),
            None,
        )),
    }
}

/// One page of an MCP list result (`{"<key>": [...], "nextCursor"?}`) of
/// the offers in `offers`, as their workers announced them.
pub(super) fn offers_list<T: serde::de::DeserializeOwned>(
    key: &str,
    offers: &std::collections::BTreeMap<String, (String, Value)>,
    request: Option<PaginatedRequestParams>,
    allowed: impl Fn(&str) -> bool,
) -> Result<T, McpError> {
    let cursor = request.and_then(|r| r.cursor);
    let (items, next) = crate::paging::page(
        offers
            .iter()
            .filter(|(_, (service, _))| allowed(service))
            .map(|(k, (_, item))| (k.as_str(), item)),
        cursor.as_deref(),
    )?;
    let mut list = json!({ key: items });
    if let Some(next) = next {
        list["nextCursor"] = json!(next);
    }
    result_from_json(list)
}
