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
