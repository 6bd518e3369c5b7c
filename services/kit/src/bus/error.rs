//! How a call failed, in terms of what the caller can do.

use super::*;

/// How a tool call failed, from the gateway's point of view.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No worker subscribes to the tool's subject (NATS "no responders").
    #[error(
        "no worker is serving `{tool}` ({target}) right now; start a worker \
         for it or retry once one has joined"
    )]
    NoWorker {
        /// The tool.
        tool: String,
        /// Where it was sent.
        target: Target,
    },
    /// The worker did not answer in time.
    #[error(
        "tool `{tool}` did not answer within {timeout:?}{}. The call was cancelled on the \
         worker; retry later{}",
        match replica {
            Some(r) => format!(
                "; replica {r} took it and still answers liveness checks, so it is stuck on it"
            ),
            None => "; the worker may be overloaded or stuck".to_owned(),
        },
        if replica.is_some() {
            ", and if it keeps happening read that replica's logs or restart it \
             (the gateway's /health lists stuck replicas)"
        } else {
            ""
        }
    )]
    Timeout {
        /// The tool.
        tool: String,
        /// How long the gateway waited.
        timeout: Duration,
        /// The replica that acknowledged the call and stayed alive, if any.
        replica: Option<String>,
    },
    /// The bus is not reachable.
    #[error(
        "the message bus (NATS) is unreachable ({0}); the gateway is reconnecting, retry shortly"
    )]
    BusDown(String),
    /// The worker answered with something that is not a valid reply.
    #[error(
        "the worker serving `{tool}` sent a malformed reply ({cause}); this is a bug in that worker"
    )]
    BadReply {
        /// The tool.
        tool: String,
        /// What was wrong.
        cause: String,
    },
    /// Our own request could not be encoded (its arguments hold something
    /// MessagePack cannot carry).
    #[error("the call to `{tool}` could not be encoded ({cause}); this is a bug in the caller")]
    Encode {
        /// The tool.
        tool: String,
        /// What failed.
        cause: String,
    },
    /// The payload could not be carried.
    #[error("{0}")]
    Payload(#[from] sophia_proto::payload::PayloadError),
    /// The worker ran the call and returned a typed error.
    #[error("{0}")]
    Worker(WireError),
    /// The caller cancelled.
    #[error("the call was cancelled")]
    Cancelled,
    /// The replica running the call died, froze, or the bus went away,
    /// before it answered.
    #[error(
        "the worker running `{tool}` was lost before it answered: {loss}. The call may or may \
         not have run; check its effect before retrying{}",
        if *.pulumi { " (for Pulumi, see pulumi_job or pulumi_history)" } else { "" }
    )]
    WorkerLost {
        /// The tool.
        tool: String,
        /// What happened to the replica.
        loss: Loss,
        /// Whether the tool is Pulumi's (the message says where to check).
        pulumi: bool,
    },
}

/// How the replica running a call was lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Loss {
    /// The caller's own bus link went down.
    #[error("the connection to the bus (NATS) was lost while it ran")]
    Link,
    /// No replica acknowledged the request: the one the queue group chose
    /// is gone, or takes requests and drops them.
    #[error("no replica acknowledged the request within {0:?}")]
    Unacknowledged(Duration),
    /// The replica that acknowledged it died or froze.
    #[error("replica {replica}: {why}")]
    Replica {
        /// Its instance id.
        replica: String,
        /// What happened to it.
        why: String,
    },
}

impl CallError {
    /// The wire error code that best describes this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            CallError::NoWorker { .. } | CallError::BusDown(_) => ErrorCode::Unavailable,
            CallError::Timeout { .. } => ErrorCode::Timeout,
            CallError::BadReply { .. } => ErrorCode::BadEnvelope,
            CallError::Encode { .. } => ErrorCode::Internal,
            CallError::Payload(_) => ErrorCode::TooLarge,
            CallError::Worker(e) => e.code,
            CallError::Cancelled => ErrorCode::Cancelled,
            CallError::WorkerLost { .. } => ErrorCode::WorkerLost,
        }
    }
}
