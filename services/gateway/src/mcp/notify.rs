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
