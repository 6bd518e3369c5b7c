//! One call relayed: the kit's call becomes the upstream server's
//! `tools/call`; its progress, log records and requests (sampling,
//! elicitation, roots) come back to the caller; a cancel or the deadline
//! becomes `notifications/cancelled` upstream.

use std::sync::Arc;

use futures::StreamExt;
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ServerResult};
use rmcp::service::{PeerRequestOptions, ServiceError};
use serde_json::{Value, json};
use sophia_kit::{Answer, Call, ErrorCode, ToolResult, WireError};
use tokio::sync::mpsc;

use crate::upstream::{Ask, Link, Question};

/// What a bridged tool's handler needs: the connection and the tool's
/// upstream name.
#[derive(Debug)]
pub struct ToolCtx {
    /// The connection to the server.
    pub link: Arc<Link>,
    /// The tool's name on the server.
    pub upstream: String,
}

/// What ended the wait for the server's answer (boxed: a result is large).
enum Outcome {
    Answered(
        Box<Result<Result<ServerResult, ServiceError>, tokio::sync::oneshot::error::RecvError>>,
    ),
    Cancelled,
    Deadline,
}

/// Runs one call on the upstream server.
pub async fn run(ctx: Arc<ToolCtx>, call: Call) -> ToolResult {
    let link = &ctx.link;
    let mut params = CallToolRequestParams::new(ctx.upstream.clone());
    match &call.args {
        Value::Object(args) => params = params.with_arguments(args.clone()),
        Value::Null => {}
        _ => {
            return Err(WireError::invalid_arguments(
                "the arguments must be a JSON object",
            ));
        }
    }
    let (tx, mut asks) = mpsc::channel(16);
    let _in_flight = link.shared.in_flight(call.id, tx);
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    let mut handle = link
        .peer
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .map_err(|_| server_gone(link))?;
    let mut progress = link
        .shared
        .progress
        .subscribe(handle.progress_token.clone())
        .await;
    let relay_side = async {
        loop {
            tokio::select! {
                Some(p) = progress.next() => call.progress(p.progress, p.total, p.message).await,
                Some(ask) = asks.recv() => answer(&call, ask).await,
                else => std::future::pending::<()>().await,
            }
        }
    };
    let deadline = tokio::time::Instant::from_std(call.deadline);
    let outcome = tokio::select! {
        r = &mut handle.rx => Outcome::Answered(Box::new(r)),
        _ = call.cancelled() => Outcome::Cancelled,
        _ = tokio::time::sleep_until(deadline) => Outcome::Deadline,
        _ = relay_side => Outcome::Cancelled,
    };
    let answered = match outcome {
        Outcome::Answered(r) => {
            relay_pending(&call, &mut progress, &mut asks).await;
            *r
        }
        Outcome::Cancelled => {
            let _ = handle.cancel(Some("cancelled by the caller".into())).await;
            return Err(WireError::new(
                ErrorCode::Cancelled,
                "the call was cancelled",
            ));
        }
        Outcome::Deadline => {
            let _ = handle
                .cancel(Some("the caller's deadline passed".into()))
                .await;
            let name = &link.server.name;
            return Err(WireError::new(
                ErrorCode::Timeout,
                format!("the MCP server {name} did not answer before the call's deadline"),
            ));
        }
    };
    match answered {
        Ok(Ok(ServerResult::CallToolResult(result))) => Ok(crate::convert::output(result)),
        Ok(Ok(_)) => Err(WireError::new(
            ErrorCode::Failed,
            format!(
                "the MCP server {} answered tools/call with something else than a tool result",
                link.server.name
            ),
        )),
        Ok(Err(e)) => Err(upstream_error(link, e)),
        Err(_) => Err(server_gone(link)),
    }
}

/// Relays the progress and log records the server sent before its answer.
/// rmcp hands each notification to the handler in a task of its own, so
/// some may still be on their way: those tasks run first, then what arrived
/// is relayed, so the client sees it before the result. A question now has
/// no call to ask for.
async fn relay_pending(
    call: &Call,
    progress: &mut (impl futures::Stream<Item = rmcp::model::ProgressNotificationParam> + Unpin),
    asks: &mut mpsc::Receiver<Ask>,
) {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
    while let Some(Some(p)) = futures::FutureExt::now_or_never(progress.next()) {
        call.progress(p.progress, p.total, p.message).await;
    }
    while let Ok(ask) = asks.try_recv() {
        if matches!(ask, Ask::Log(..)) {
            answer(call, ask).await;
        }
    }
}

/// The call ended because the server's connection closed.
pub(crate) fn server_gone(link: &Link) -> WireError {
    WireError::new(
        ErrorCode::Unavailable,
        format!(
            "the MCP server {} stopped during this call (its connection closed); the bridge \
             restarted it, or is restarting it: retry in a few seconds",
            link.server.name
        ),
    )
}

fn upstream_error(link: &Link, e: ServiceError) -> WireError {
    match e {
        ServiceError::McpError(data) => {
            let code = match data.code.0 {
                -32602 => ErrorCode::InvalidArguments,
                -32601 => ErrorCode::UnknownTool,
                _ => ErrorCode::Failed,
            };
            WireError::new(
                code,
                format!(
                    "the MCP server {} refused the call: {}",
                    link.server.name, data.message
                ),
            )
        }
        ServiceError::TransportClosed | ServiceError::TransportSend(_) => server_gone(link),
        other => WireError::new(
            ErrorCode::Failed,
            format!(
                "the call to the MCP server {} failed: {other}",
                link.server.name
            ),
        ),
    }
}

/// Puts what the server asked to this call's caller.
async fn answer(call: &Call, ask: Ask) {
    match ask {
        Ask::Log(level, data) => call.log(&level, data).await,
        // A client that answers in rounds (MCP 2026-07-28) could only be
        // asked by ending the call, and the upstream call would then run
        // again from its start: tell the server it cannot be asked.
        Ask::Question(_, reply) if call.answers_in_rounds() => {
            let _ = reply.send(Err(WireError::new(
                ErrorCode::Unavailable,
                "the caller's MCP client (2026-07-28, without a session) cannot be asked \
                 mid-call through the bridge",
            )));
        }
        Ask::Question(question, reply) => {
            let answer = match question {
                Question::Sample(params) => call.sample(params).await,
                Question::Roots => call.list_roots().await,
                Question::Elicit(message, schema) => {
                    call.elicit(message, schema).await.map(|a| match a {
                        Answer::Accepted(content) => {
                            json!({"action": "accept", "content": content})
                        }
                        Answer::Declined => json!({"action": "decline"}),
                        Answer::Cancelled => json!({"action": "cancel"}),
                    })
                }
            };
            let _ = reply.send(answer);
        }
    }
}
