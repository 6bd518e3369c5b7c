//! The REST shortcuts the seed's clients call, each mapped onto a tool
//! call through [`McpGateway::call_direct`], so the same checks, limits and
//! confirmations apply as over MCP. The table in [`router`] is the one
//! place the gateway names a worker's tools.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::mcp::{DirectCallError, Identity, McpGateway, Refusal};

/// The shortcuts: route → handler (each names the tool it calls).
pub fn router(gateway: McpGateway) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/mcp/pulumi/deploy", post(pulumi_deploy))
        .route("/mcp/agno/create_agent", post(agno_create_agent))
        .route("/api/v1/agents/status", get(agents_status))
        .with_state(gateway)
}

/// `POST /mcp/pulumi/deploy`, the seed's shortcut: `{"stack": "...",
/// "operation": "up"}` previews the stack and answers with a `preview_id` to
/// confirm; the same body with that `preview_id` applies exactly that
/// preview. `"operation": "destroy"` works the same way; `"refresh"` runs at
/// once (it changes only Pulumi's state). It maps onto the `pulumi_preview`,
/// `pulumi_up`, `pulumi_destroy` and `pulumi_refresh` tools, so the
/// confirmation rules are the same as over MCP.
async fn pulumi_deploy(
    State(gateway): State<McpGateway>,
    axum::Extension(principal): axum::Extension<Identity>,
    body: axum::body::Bytes,
) -> Response {
    use serde_json::{Value, json};
    let bad =
        |msg: String| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response();
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(&body) else {
        return bad(
            "the body must be a JSON object like {\"stack\": \"dev\", \"operation\": \"up\"}"
                .into(),
        );
    };
    let operation = body.remove("operation");
    let operation = match operation.as_ref().and_then(Value::as_str) {
        Some(op @ ("up" | "destroy" | "refresh")) => op.to_owned(),
        other => {
            return bad(format!(
                "operation must be \"up\", \"destroy\" or \"refresh\" (got {}); other operations are MCP tools",
                other
                    .map(|o| format!("{o:?}"))
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
    };
    let confirming = body.contains_key("preview_id") || operation == "refresh";
    let tool = match (confirming, operation.as_str()) {
        (true, "up") => "pulumi_up",
        (true, "destroy") => "pulumi_destroy",
        (true, _) => "pulumi_refresh",
        (false, _) => "pulumi_preview",
    };
    let mut args = body.clone();
    if !confirming {
        args.insert("operation".into(), json!(operation));
    }
    let args = Value::Object(args);
    match gateway.call_direct(tool, args, &principal).await {
        Ok(out) => {
            let result = out.structured.unwrap_or(Value::Null);
            if out.is_error {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({"error": result})),
                )
                    .into_response();
            }
            if confirming {
                axum::Json(json!({"status": result["state"], "job": result})).into_response()
            } else {
                let mut confirm = body;
                confirm.insert("operation".into(), json!(operation));
                confirm.insert("preview_id".into(), result["preview_id"].clone());
                axum::Json(json!({
                    "status": "confirmation_required",
                    "preview": result,
                    "confirm": {"method": "POST", "path": "/mcp/pulumi/deploy", "body": confirm},
                }))
                .into_response()
            }
        }
        Err(e) => direct_error(e),
    }
}

/// A direct call's failure as an HTTP answer: 400 bad request, 409
/// conflict, 503 no worker, 504 timeout, 502 otherwise.
fn direct_error(e: DirectCallError) -> Response {
    let status = match &e {
        DirectCallError::Refused(r) => match r {
            Refusal::UnknownTool(_) | Refusal::BusDown(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::InvalidArguments { .. } => StatusCode::BAD_REQUEST,
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
        },
        DirectCallError::Call(c) => match c.code() {
            // A REST caller cannot be asked anything: a tool that asks
            // cannot be called this way.
            sophia_proto::ErrorCode::InvalidArguments
            | sophia_proto::ErrorCode::MissingCapability => StatusCode::BAD_REQUEST,
            sophia_proto::ErrorCode::Conflict => StatusCode::CONFLICT,
            sophia_proto::ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            sophia_proto::ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            sophia_proto::ErrorCode::Busy => StatusCode::TOO_MANY_REQUESTS,
            sophia_proto::ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        },
    };
    (
        status,
        axum::Json(serde_json::json!({"error": e.to_string()})),
    )
        .into_response()
}

/// `POST /mcp/agno/create_agent`, the seed's shortcut: the body of
/// `agno_create_agent` (`{"agent_type": "gong_agent", "task": "analyze
/// recent calls"}`), answered with that tool's structured result.
async fn agno_create_agent(
    State(gateway): State<McpGateway>,
    axum::Extension(principal): axum::Extension<Identity>,
    body: axum::body::Bytes,
) -> Response {
    use serde_json::{Value, json};
    let Ok(args @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "the body must be a JSON object like {\"agent_type\": \"gong_agent\", \"task\": \"analyze recent calls\"}"})),
        )
            .into_response();
    };
    direct_json(&gateway, "agno_create_agent", args, &principal).await
}

/// `GET /api/v1/agents/status`: agents and runs in progress per category
/// (the `agno_agent_stats` tool).
async fn agents_status(
    State(gateway): State<McpGateway>,
    axum::Extension(principal): axum::Extension<Identity>,
) -> Response {
    direct_json(
        &gateway,
        "agno_agent_stats",
        serde_json::json!({}),
        &principal,
    )
    .await
}

/// A tool called directly, its structured result as the JSON body (a tool
/// error is a 422 with the error).
async fn direct_json(
    gateway: &McpGateway,
    tool: &str,
    args: serde_json::Value,
    principal: &Identity,
) -> Response {
    use serde_json::{Value, json};
    match gateway.call_direct(tool, args, principal).await {
        Ok(out) if out.is_error => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": out.structured.unwrap_or(Value::Null)})),
        )
            .into_response(),
        Ok(out) => axum::Json(out.structured.unwrap_or(Value::Null)).into_response(),
        Err(e) => direct_error(e),
    }
}
