//! The mesh's models: every replica answers `sophia.v1.infer.models` with
//! its models and their providers' health, and the `list_models` tool
//! gathers the answers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use sophia_kit::{Call, Category, ErrorCode, Tool, ToolOutput, ToolResult, WireError};
use sophia_proto::subject;

use crate::router::{BreakerState, Router};

/// How long `list_models` waits for replicas to answer.
const GATHER_WINDOW: Duration = Duration::from_millis(300);

/// `list_models`.
pub(crate) fn list_models_tool() -> Tool {
    Tool::new(
        "list_models",
        Category::Inference,
        "Lists the models and aliases the mesh can serve, with the replicas serving each and \
         their providers' health (circuit breaker state).",
    )
    .read_only()
    .idempotent()
    .handler(run_list_models)
}

async fn run_list_models(call: Call) -> ToolResult {
    let replicas = gather(call.bus().client()).await?;
    let mut models: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for replica in &replicas {
        for m in replica["models"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default().to_owned();
            models.entry(name).or_default().push(json!({
                    "instance": replica["instance"], "providers": m["providers"], "healthy": m["healthy"]}));
        }
    }
    let list: Vec<Value> = models
            .into_iter()
            .map(|(name, served_by)| {
                let healthy = served_by.iter().any(|s| s["healthy"] == true);
                json!({"name": name, "healthy": healthy, "replicas": served_by.len(), "served_by": served_by})
            })
            .collect();
    let text = if list.is_empty() {
        "no models: no intelligence replica has a provider configured (set SOPHIA_INTELLIGENCE_CONFIG)".to_owned()
    } else {
        list.iter()
            .map(|m| {
                format!(
                    "{} ({}, {} replicas)",
                    m["name"].as_str().unwrap_or(""),
                    if m["healthy"] == true {
                        "healthy"
                    } else {
                        "unhealthy"
                    },
                    m["replicas"]
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = ToolOutput::text(text);
    out.structured = Some(json!({ "models": list }));
    Ok(out)
}

/// Asks every replica for its models; gathers answers for a short window.
async fn gather(client: &async_nats::Client) -> Result<Vec<Value>, WireError> {
    let inbox = client.new_inbox();
    let unavailable = |e: String| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("cannot ask replicas for models: {e}"),
        )
    };
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    client
        .publish_with_reply(subject::INFERENCE_MODELS, inbox, bytes::Bytes::new())
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let mut out = Vec::new();
    let window = tokio::time::sleep(GATHER_WINDOW);
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            Some(msg) = replies.next() => match sophia_proto::decode::<Value>(&msg.payload) {
                Ok(v) => out.push(v),
                Err(e) => tracing::debug!(cause = %e, "ignoring a malformed models reply"),
            },
        }
    }
    Ok(out)
}

/// This replica's models and their health, as `sophia.v1.infer.models` answers.
pub fn models_report(router: &Router, instance: &str) -> Value {
    let models: Vec<Value> = router
        .config()
        .model_names()
        .into_iter()
        .filter_map(|name| {
            let providers: Vec<Value> = router
                .targets_now(&name)
                .into_iter()
                .map(|t| {
                    let state = router.breaker(&t.provider);
                    json!({"provider": t.provider, "model": t.model,
                        "breaker": format!("{state:?}").to_lowercase(),
                        "healthy": state != Some(BreakerState::Open)})
                })
                .collect();
            let healthy = providers.iter().any(|p| p["healthy"] == true);
            (!providers.is_empty())
                .then(|| json!({"name": name, "providers": providers, "healthy": healthy}))
        })
        .collect();
    json!({"instance": instance, "models": models})
}

/// Answers `sophia.v1.infer.models` until the client closes.
pub async fn answer_model_queries(
    client: async_nats::Client,
    router: Arc<Router>,
    instance: String,
) -> Result<(), async_nats::SubscribeError> {
    let mut sub = client.subscribe(subject::INFERENCE_MODELS).await?;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            if let Ok(bytes) = sophia_proto::encode(&models_report(&router, &instance)) {
                let _ = client.publish(reply, bytes.into()).await;
            }
        }
    });
    Ok(())
}
