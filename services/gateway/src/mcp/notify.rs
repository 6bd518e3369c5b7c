//! `notifications/*/list_changed` to every live session when the registry
//! changes.

use super::*;

impl McpGateway {
    /// Sends `notifications/tools/list_changed` to every live session each
    /// time the registry's tool list changes.
    pub(super) fn spawn_list_changed(&self) {
        self.spawn_notify_sessions(self.inner.registry.subscribe(), |peer| {
            Box::pin(async move { peer.notify_tool_list_changed().await })
        });
    }

    /// Sends `notifications/resources/list_changed` and
    /// `notifications/prompts/list_changed` to every live session each time
    /// the resources, templates or prompts on offer change.
    pub(super) fn spawn_offers_changed(&self) {
        self.spawn_notify_sessions(self.inner.registry.subscribe_offers(), |peer| {
            Box::pin(async move {
                peer.notify_resource_list_changed().await?;
                peer.notify_prompt_list_changed().await
            })
        });
    }

    /// Each time `changes` moves, runs `notify` for every live session.
    pub(super) fn spawn_notify_sessions(
        &self,
        mut changes: tokio::sync::watch::Receiver<u64>,
        notify: fn(Peer<RoleServer>) -> BoxFuture<'static, Result<(), rmcp::service::ServiceError>>,
    ) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                let peers: Vec<_> = {
                    let mut peers = inner.peers.lock();
                    peers.retain(|p| !p.is_transport_closed());
                    peers.clone()
                };
                tracing::debug!(
                    sessions = peers.len(),
                    "notifying sessions of a list change"
                );
                for peer in peers {
                    tokio::spawn(async move {
                        if let Err(e) = notify(peer).await {
                            tracing::debug!(cause = %e, "could not notify a session");
                        }
                    });
                }
            }
        });
    }
}

/// What a `subscriptions/listen` stream may carry: every list change the
/// gateway announces, and updates of the resources asked for (those the
/// caller may not read are left out when the stream starts).
pub(super) fn accepted(
    requested: &rmcp::model::SubscriptionFilter,
) -> rmcp::model::SubscriptionFilter {
    let mut accepted = rmcp::model::SubscriptionFilter::new();
    accepted.tools_list_changed = Some(true);
    accepted.prompts_list_changed = Some(true);
    accepted.resources_list_changed = Some(true);
    accepted.resource_subscriptions = requested.resource_subscriptions.clone();
    accepted
}

impl McpGateway {
    /// Serves one `subscriptions/listen` stream (MCP 2026-07-28, where there
    /// are no sessions to notify): list changes and resource updates go to
    /// it until the client closes it or the gateway stops.
    pub(super) async fn serve_subscription(
        &self,
        subscription: rmcp::service::SubscriptionContext,
    ) -> Result<(), McpError> {
        use rmcp::model::{
            PromptListChangedNotification, ResourceListChangedNotification,
            ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification,
            ToolListChangedNotification,
        };
        use rmcp::service::SubscriptionSendError;
        let caller = self.caller(subscription.request_context());
        let readable: Vec<String> = subscription
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| {
                self.resource_owner(uri).is_ok_and(|service| {
                    self.check_offers(&caller, &service, "resources/subscribe")
                        .is_ok()
                })
            })
            .cloned()
            .collect();
        let mut tools = self.inner.registry.subscribe();
        let mut offers = self.inner.registry.subscribe_offers();
        let mut updates = self.inner.updates.subscribe();
        let sink = subscription.sink().clone();
        loop {
            let notifications: Vec<ServerNotification> = tokio::select! {
                _ = subscription.cancelled() => return Ok(()),
                changed = tools.changed() => match changed {
                    Ok(()) => vec![ToolListChangedNotification::default().into()],
                    Err(_) => return Ok(()),
                },
                changed = offers.changed() => match changed {
                    Ok(()) => vec![
                        ResourceListChangedNotification::default().into(),
                        PromptListChangedNotification::default().into(),
                    ],
                    Err(_) => return Ok(()),
                },
                uri = updates.recv() => match uri {
                    Ok(uri) if readable.contains(&uri) => vec![ResourceUpdatedNotification::new(
                        ResourceUpdatedNotificationParam::new(uri),
                    )
                    .into()],
                    Ok(_) => continue,
                    // Missed updates: the client re-reads what it follows.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        vec![ResourceListChangedNotification::default().into()]
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            for notification in notifications {
                match sink.send(notification).await {
                    // Outside the stream's filter (a change of the offers
                    // is sent as both resources and prompts list_changed):
                    // left out, and the stream goes on.
                    Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                    Err(e) => {
                        tracing::debug!(cause = %e, "a subscriptions/listen stream closed");
                        return Ok(());
                    }
                }
            }
        }
    }
}
