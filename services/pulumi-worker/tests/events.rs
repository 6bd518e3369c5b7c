//! Reading Pulumi engine event logs recorded from the real CLI
//! (`tests/fixtures/`, see its README), finished or while being written.

use std::io::Write;
use std::time::Duration;

use pulumi_worker::events::{EngineEvent, EventKind, EventLogTail, Summary, parse_all};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn summarize(text: &str) -> (Summary, Vec<EngineEvent>) {
    let events = parse_all(text);
    let mut summary = Summary::default();
    for e in &events {
        summary.add(e);
    }
    (summary, events.into_iter().filter_map(Result::ok).collect())
}

#[test]
fn a_successful_up_is_summarised_from_its_events() {
    let (summary, events) = summarize(&fixture("not-truncated--up.json"));
    assert_eq!(events.len(), 15);
    assert_eq!(summary.malformed, 0);
    assert_eq!(summary.resource_changes.get("create"), Some(&1));
    assert_eq!(summary.resource_changes.get("same"), Some(&5));
    assert_eq!(summary.duration_seconds, 609);
    assert!(summary.complete && summary.succeeded());
    // Progress shows the one change, before and after, and the totals.
    let lines: Vec<String> = events.iter().filter_map(EngineEvent::describe).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("creating "), "{lines:?}");
    assert!(lines[1].starts_with("created "), "{lines:?}");
    assert_eq!(lines[2], "done in 609s: 1 create, 5 same");
}

#[test]
fn a_failed_step_makes_the_operation_fail() {
    let (summary, events) = summarize(&fixture(
        "not-truncated--failed-stacks-dont-rewrite-operations.json",
    ));
    assert_eq!(summary.failed.len(), 1);
    assert!(!summary.succeeded());
    let failed = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ResOpFailed(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(summary.failed[0], failed.urn);
    assert!(
        events
            .iter()
            .filter_map(EngineEvent::describe)
            .any(|l| l.starts_with("failed to "))
    );
}

#[test]
fn replacements_deletes_and_pretty_printed_logs_are_read() {
    let (summary, _) = summarize(&fixture("not-truncated--webserver-userdata.json"));
    assert_eq!(summary.resource_changes.get("replace"), Some(&1));
    let (summary, _) = summarize(&fixture("not-truncated--destroy-with-deep-hierarchy.json"));
    assert_eq!(summary.resource_changes.get("delete"), Some(&3));
    // The same events, pretty-printed over many lines.
    let (summary, events) = summarize(&fixture("json-yaml--json.json"));
    assert_eq!((events.len(), summary.malformed), (4, 0));
    assert_eq!(summary.resource_changes.get("update"), Some(&1));
}

#[test]
fn an_interrupted_up_reports_what_the_engine_counted() {
    let (summary, events) = summarize(&fixture("not-truncated--up-interrupted.json"));
    let started = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ResourcePre(s) if s.op == "create"))
        .count();
    assert_eq!(started, 3, "three creates were started");
    assert_eq!(
        summary.resource_changes.get("create"),
        Some(&1),
        "one finished"
    );
}

#[test]
fn diagnostics_in_the_documented_shape_are_read_and_errors_fail_the_operation() {
    // apitype.DiagnosticEvent: urn, prefix, message, color, severity, ...
    let log = concat!(
        r#"{"sequence":1,"timestamp":1,"diagnosticEvent":{"urn":"urn:pulumi:dev::p::aws:s3/bucket:Bucket::b","prefix":"error: ","message":"creating bucket: AccessDenied\n","color":"never","severity":"error"}}"#,
        "\n",
        r#"{"sequence":2,"timestamp":2,"cancelEvent":{}}"#,
        "\n"
    );
    let (summary, events) = summarize(log);
    assert_eq!(summary.errors, ["creating bucket: AccessDenied"]);
    assert!(summary.complete && !summary.succeeded());
    assert_eq!(
        events[0].describe().unwrap(),
        "error: creating bucket: AccessDenied"
    );
}

#[test]
fn a_malformed_line_is_counted_and_the_rest_still_read() {
    let text = fixture("not-truncated--up.json");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(3, "{\"sequence\": 99, oops");
    let (summary, events) = summarize(&lines.join("\n"));
    assert_eq!(summary.malformed, 1);
    assert_eq!(events.len(), 15);
    assert!(summary.succeeded());
}

#[test]
fn progress_never_includes_inputs_outputs_or_config() {
    // The fixture's config and resource inputs hold values like the region.
    let (_, events) = summarize(&fixture("not-truncated--up.json"));
    for line in events.iter().filter_map(EngineEvent::describe) {
        assert!(!line.contains("us-west-2"), "{line}");
    }
}

#[tokio::test]
async fn a_log_is_followed_while_the_cli_writes_it() {
    let text = fixture("not-truncated--up.json");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.json");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let writer = {
        let (path, text) = (path.clone(), text.clone());
        tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            for line in text.lines() {
                // Each line lands in two writes, as a real writer's buffers may split it.
                let (a, b) = line.split_at(line.len() / 2);
                f.write_all(a.as_bytes()).unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
                f.write_all(b.as_bytes()).unwrap();
                f.write_all(b"\n").unwrap();
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = done_tx.send(());
        })
    };
    let mut seen = Vec::new();
    EventLogTail::new(&path)
        .follow(
            async {
                let _ = done_rx.await;
            },
            |e| seen.push(e.unwrap()),
        )
        .await;
    writer.await.unwrap();
    let whole: Vec<EngineEvent> = parse_all(&text).into_iter().map(Result::unwrap).collect();
    assert_eq!(seen, whole, "every event, once, in order");
}
