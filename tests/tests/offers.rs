//! Resources, resource templates, prompts and completions that workers
//! offer, reached by a real MCP client (rmcp's) through the gateway and the
//! bus: listed when the worker joins (with `list_changed`), read from the
//! owning service, and refused clearly when unknown or incomplete.

use rmcp::model::{CompleteRequestParams, GetPromptRequestParams, ReadResourceRequestParams};
use serde_json::{Value, json};
use sophia_kit::Worker;
use sophia_kit::offers::Contents;
use sophia_tests::tools::WAIT;
use sophia_tests::{Mesh, eventually};

fn docs_worker() -> Worker {
    Worker::new("docs-worker", "1.0.0")
        .resource(
            json!({"uri": "docs://readme", "name": "readme", "description": "The README",
                "mimeType": "text/markdown"}),
            |_| async { Ok(Contents::text("# Sophia Mesh")) },
        )
        .resource_template(
            json!({"uriTemplate": "docs://adr/{number}", "name": "adr", "description": "A decision record",
                "mimeType": "text/plain"}),
            |uri, vars| async move { Ok(Contents::text(format!("ADR {} at {uri}", vars["number"]))) },
        )
        .prompt(
            json!({"name": "review", "description": "Review a change",
                "arguments": [{"name": "language", "required": true}]}),
            |args| async move {
                Ok(json!({"messages": [{"role": "user", "content": {"type": "text",
                    "text": format!("Review this {} change", args["language"].as_str().unwrap_or(""))}}]}))
            },
        )
        .completions(|params| async move {
            let typed = params["argument"]["value"].as_str().unwrap_or("").to_owned();
            Ok(["rust", "ruby", "python"]
                .into_iter()
                .filter(|l| l.starts_with(&typed))
                .map(str::to_owned)
                .collect())
        })
}

fn json_of<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap()
}

#[tokio::test]
// resources/subscribe is what the 2025 revisions (and Cursor) use; rmcp marks
// it legacy in favour of 2026-07-28's `listen`.
#[allow(deprecated)]
async fn a_workers_resources_prompts_and_completions_reach_the_client() {
    let mut mesh = Mesh::start().await;
    let client = mesh.client().await;
    let mut changes = client.service().offers_changed.subscribe();
    let docs = mesh.worker(docs_worker()).await;
    tokio::time::timeout(WAIT, changes.wait_for(|n| *n >= 2))
        .await
        .expect("resources and prompts list_changed are sent when the worker joins")
        .unwrap();
    eventually("the readme is listed", WAIT, || async {
        let r = client.list_all_resources().await.ok()?;
        r.iter().any(|r| r.uri == "docs://readme").then_some(())
    })
    .await;

    let read = client
        .read_resource(ReadResourceRequestParams::new("docs://readme"))
        .await
        .unwrap();
    let read = json_of(&read);
    assert_eq!(read["contents"][0]["text"], "# Sophia Mesh");
    assert_eq!(read["contents"][0]["mimeType"], "text/markdown");

    let templated = json_of(
        &client
            .read_resource(ReadResourceRequestParams::new("docs://adr/7"))
            .await
            .unwrap(),
    );
    assert_eq!(templated["contents"][0]["text"], "ADR 7 at docs://adr/7");

    let unknown = client
        .read_resource(ReadResourceRequestParams::new("docs://nothing/here/at/all"))
        .await
        .unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("no live worker offers resource"),
        "{unknown}"
    );

    let prompts = client.list_all_prompts().await.unwrap();
    assert_eq!(prompts[0].name, "review");
    let args = json!({"language": "rust"}).as_object().cloned().unwrap();
    let prompt = json_of(
        &client
            .get_prompt(GetPromptRequestParams::new("review").with_arguments(args))
            .await
            .unwrap(),
    );
    assert_eq!(
        prompt["messages"][0]["content"]["text"],
        "Review this rust change"
    );
    assert_eq!(prompt["description"], "Review a change");
    let missing = client
        .get_prompt(GetPromptRequestParams::new("review"))
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("needs the argument"),
        "{missing}"
    );

    let completion: CompleteRequestParams = serde_json::from_value(json!({
        "ref": {"type": "ref/prompt", "name": "review"},
        "argument": {"name": "language", "value": "ru"}}))
    .unwrap();
    let done = json_of(&client.complete(completion).await.unwrap());
    assert_eq!(done["completion"]["values"], json!(["rust", "ruby"]));

    // A subscribed session hears when the worker says the resource changed;
    // after unsubscribing, it does not.
    client
        .subscribe(rmcp::model::SubscribeRequestParams::new("docs://readme"))
        .await
        .unwrap();
    let mut updated = client.service().updated.subscribe();
    mesh.worker_handle(docs)
        .resource_updated("docs://readme")
        .await
        .unwrap();
    tokio::time::timeout(
        WAIT,
        updated.wait_for(|u| u == &["docs://readme".to_owned()]),
    )
    .await
    .expect("notifications/resources/updated arrives")
    .unwrap();
    client
        .unsubscribe(rmcp::model::UnsubscribeRequestParams::new("docs://readme"))
        .await
        .unwrap();
    mesh.worker_handle(docs)
        .resource_updated("docs://readme")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        client.service().updated.borrow().len(),
        1,
        "no update after unsubscribing"
    );
}

#[tokio::test]
async fn structured_content_with_its_output_schema_and_resource_links_survive_the_round_trip() {
    use sophia_kit::{Category, Content, Tool, ToolOutput};
    let mut mesh = Mesh::start().await;
    let schema = json!({"type": "object", "properties": {"count": {"type": "integer"}},
        "required": ["count"]});
    mesh.worker(
        Worker::new("links-worker", "1.0.0").tool(
            Tool::new("find_docs", Category::CodeGeneration, "Finds documents.")
                .output_schema(schema.clone())
                .read_only()
                .handler(|_| async {
                    Ok(ToolOutput {
                        content: vec![
                            Content::text("1 document"),
                            Content::ResourceLink {
                                uri: "docs://readme".into(),
                                name: "readme".into(),
                                mime_type: Some("text/markdown".into()),
                                description: Some("The README".into()),
                            },
                        ],
                        structured: Some(json!({"count": 1})),
                        is_error: false,
                    })
                }),
        ),
    )
    .await;
    let client = mesh.client().await;
    sophia_tests::tools::wait_for_tool(&client, "find_docs").await;
    let tools = client.list_all_tools().await.unwrap();
    let listed = tools.iter().find(|t| t.name == "find_docs").unwrap();
    assert_eq!(json_of(&listed.output_schema), schema);

    let r = sophia_tests::tools::call(&client, "find_docs", json!({})).await;
    let r = json_of(&r);
    assert_eq!(r["structuredContent"], json!({"count": 1}));
    assert_eq!(
        r["content"][1],
        json!({"type": "resource_link", "uri": "docs://readme", "name": "readme",
            "mimeType": "text/markdown", "description": "The README"})
    );
}

/// Sends the read of `uri` as a request that can be cancelled.
async fn start_read(
    client: &sophia_tests::client::McpClient,
    uri: &str,
) -> rmcp::service::RequestHandle<rmcp::RoleClient> {
    use rmcp::model::{ClientRequest, ReadResourceRequest};
    client
        .send_request_with_option(
            ClientRequest::ReadResourceRequest(ReadResourceRequest::new(
                ReadResourceRequestParams::new(uri),
            )),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resource_read_travels_on_its_services_own_subjects_and_is_cancelled_there() {
    use futures::{FutureExt, StreamExt};
    use tokio::sync::watch;

    let mut mesh = Mesh::start().await;
    let nats = mesh.nats_client().await;
    // Watchers beside the worker's queue group: plain subscriptions see
    // every message on these subjects.
    let mut reads = nats
        .subscribe("sophia.v1.mcp.slow-docs.resources_read")
        .await
        .unwrap();
    let mut service_cancels = nats
        .subscribe("sophia.v1.mcp.slow-docs.cancel")
        .await
        .unwrap();
    let mut category_cancels = nats.subscribe("sophia.v1.cancel.>").await.unwrap();
    nats.flush().await.unwrap();

    // A read that waits until it is stopped, and says when it starts and
    // when it is dropped.
    let (started, mut started_rx) = watch::channel(false);
    let (stopped, mut stopped_rx) = watch::channel(false);
    struct Stopped(watch::Sender<bool>);
    impl Drop for Stopped {
        fn drop(&mut self) {
            self.0.send_replace(true);
        }
    }
    let worker = Worker::new("slow-docs", "1.0.0").resource(
        json!({"uri": "docs://slow", "name": "slow"}),
        move |_| {
            let started = started.clone();
            let stopped = Stopped(stopped.clone());
            async move {
                let _stopped = stopped;
                started.send_replace(true);
                std::future::pending::<()>().await;
                Ok(Contents::text("never"))
            }
        },
    );
    mesh.worker(worker).await;

    let client = mesh.client().await;
    eventually("the slow resource is listed", WAIT, || async {
        let r = client.list_all_resources().await.ok()?;
        r.iter().any(|r| r.uri == "docs://slow").then_some(())
    })
    .await;
    // The service's offers are their own endpoint group, in no category
    // (asked once the worker has announced, so it has subscribed).
    let info = nats
        .request("$SRV.INFO.slow-docs", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let endpoints = info["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{info}");
    assert_eq!(
        endpoints[0]["subject"],
        "sophia.v1.mcp.slow-docs.resources_read"
    );
    assert_eq!(endpoints[0]["queue_group"], "sophia");
    assert_eq!(endpoints[0]["metadata"]["mcp_method"], "resources/read");
    assert!(endpoints[0]["metadata"].get("category").is_none(), "{info}");

    let handle = start_read(&client, "docs://slow").await;
    let request = tokio::time::timeout(WAIT, reads.next())
        .await
        .expect("the read goes to sophia.v1.mcp.slow-docs.resources_read")
        .unwrap();
    let request: sophia_proto::ToolRequest = sophia_proto::decode(&request.payload).unwrap();
    assert_eq!(request.args["uri"], "docs://slow");
    tokio::time::timeout(WAIT, started_rx.wait_for(|s| *s))
        .await
        .expect("the worker starts reading")
        .unwrap();

    handle.cancel(Some("changed my mind".into())).await.unwrap();
    let cancel = tokio::time::timeout(WAIT, service_cancels.next())
        .await
        .expect("the cancel goes to sophia.v1.mcp.slow-docs.cancel")
        .unwrap();
    let cancel: sophia_proto::Cancel = sophia_proto::decode(&cancel.payload).unwrap();
    assert_eq!(cancel.id, request.id, "the cancel names the read");
    tokio::time::timeout(WAIT, stopped_rx.wait_for(|s| *s))
        .await
        .expect("the worker stops the read")
        .unwrap();
    // The gateway publishes from one connection, and NATS keeps one
    // publisher's order: a category cancel sent with this one would be here.
    nats.flush().await.unwrap();
    assert!(
        category_cancels.next().now_or_never().is_none(),
        "no category hears the cancel of a resource read"
    );
}

/// Whether `tools/list` offers `name` now.
async fn tool_listed(client: &sophia_tests::McpClient, name: &str) -> bool {
    let tools = client.list_all_tools().await.unwrap_or_default();
    tools.iter().any(|t| t.name == name)
}

#[tokio::test]
async fn a_running_worker_withdraws_and_offers_again_its_tools_and_prompts() {
    use sophia_kit::{Category, Tool, ToolOutput};
    let mut mesh = Mesh::start().await;
    let worker = docs_worker().tool(
        Tool::new("export", Category::CodeGeneration, "Exports the docs.")
            .handler(|_| async { Ok(ToolOutput::text("exported")) }),
    );
    let listing = worker.listing();
    listing.withdraw_tool("export");
    let client = mesh.client().await;
    mesh.worker(worker).await;
    eventually("the prompt is listed", WAIT, || async {
        let prompts = client.list_all_prompts().await.ok()?;
        prompts.iter().any(|p| p.name == "review").then_some(())
    })
    .await;
    assert!(
        !tool_listed(&client, "export").await,
        "withdrawn before start"
    );

    // Offered: announced at once, and the client is told.
    let mut tools_changed = client.service().list_changed.subscribe();
    let seen = *tools_changed.borrow_and_update();
    assert!(listing.offer_tool("export"));
    tokio::time::timeout(WAIT, tools_changed.wait_for(|n| *n > seen))
        .await
        .expect("tools/list_changed is sent when a worker offers a tool")
        .unwrap();
    sophia_tests::tools::wait_for_tool(&client, "export").await;
    let r = sophia_tests::tools::call(&client, "export", json!({})).await;
    assert_eq!(sophia_tests::tools::text_of(&r), "exported");

    // A prompt withdrawn: prompts/list_changed, and it is gone.
    let mut offers_changed = client.service().offers_changed.subscribe();
    let seen = *offers_changed.borrow_and_update();
    assert!(listing.withdraw_prompt("review"));
    tokio::time::timeout(WAIT, offers_changed.wait_for(|n| *n > seen))
        .await
        .expect("prompts/list_changed is sent when a worker withdraws a prompt")
        .unwrap();
    eventually("the prompt is gone", WAIT, || async {
        let prompts = client.list_all_prompts().await.ok()?;
        prompts.iter().all(|p| p.name != "review").then_some(())
    })
    .await;
    let args = json!({"language": "rust"}).as_object().cloned().unwrap();
    let refused = client
        .get_prompt(GetPromptRequestParams::new("review").with_arguments(args))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown prompt"), "{refused}");

    // The tool withdrawn again: gone from the list, its calls refused.
    assert!(listing.withdraw_tool("export"));
    eventually("the tool is gone", WAIT, || async {
        (!tool_listed(&client, "export").await).then_some(())
    })
    .await;
    let params = rmcp::model::CallToolRequestParams::new("export");
    let refused = client.call_tool(params).await.unwrap_err();
    assert!(refused.to_string().contains("unknown tool"), "{refused}");
}
