//! Pulumi operations as the tools see them: a span per CLI run, and
//! running one in the request with its engine events relayed as progress.

use std::path::Path;

use opentelemetry::KeyValue;
use sophia_kit::telemetry::{Span, SpanKind};
use sophia_kit::{Call, TraceContext, WireError};

use super::{Ctx, cli_error, cli_error_code};
use crate::cli::{CliError, Operation};
use crate::events::Summary;

/// The span of one Pulumi operation (the CLI run), a child of `trace`.
pub(super) fn operation_span(
    dir: &Path,
    stack: &str,
    op: &Operation,
    trace: &TraceContext,
) -> Span {
    let project = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Span::start(
        format!("pulumi {}", op.name()),
        SpanKind::Internal,
        trace,
        vec![
            KeyValue::new("pulumi.operation", op.name()),
            KeyValue::new("pulumi.project", project),
            KeyValue::new("pulumi.stack", stack.to_owned()),
        ],
    )
}

/// Records an operation's outcome on its span: the resource changes by
/// kind, or the failure's code.
pub(super) fn end_operation_span(span: &Span, result: &Result<Summary, CliError>) {
    match result {
        Ok(summary) => {
            for (kind, n) in &summary.resource_changes {
                span.set(KeyValue::new(
                    format!("pulumi.resource_changes.{kind}"),
                    *n as i64,
                ));
            }
            if !summary.succeeded() {
                span.fail("failed", "the operation failed");
            }
        }
        Err(e) => span.fail_code(cli_error_code(e)),
    }
}

/// Runs an operation in the request, relaying its engine events as
/// progress; returns its summary.
pub(super) async fn relay_operation(
    c: &Ctx,
    call: &Call,
    dir: &Path,
    stack: &str,
    op: &Operation,
) -> Result<Summary, WireError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let cancel = call.cancellation();
    let span = operation_span(dir, stack, op, &call.trace);
    let run = c.cli.operation(
        dir,
        stack,
        op,
        move |e| {
            if let Some(l) = e.describe() {
                let _ = tx.send(l);
            }
        },
        &cancel,
    );
    tokio::pin!(run);
    let mut step = 0.0;
    let summary = loop {
        tokio::select! {
            r = &mut run => {
                end_operation_span(&span, &r);
                break r.map_err(cli_error)?
            }
            Some(line) = rx.recv() => { step += 1.0; call.progress(step, None, Some(line)).await; }
        }
    };
    while let Ok(line) = rx.try_recv() {
        step += 1.0;
        call.progress(step, None, Some(line)).await;
    }
    Ok(summary)
}
