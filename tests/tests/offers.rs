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
async fn a_workers_resources_prompts_and_completions_reach_the_client() {
    let mut mesh = Mesh::start().await;
    let client = mesh.client().await;
    let mut changes = client.service().offers_changed.subscribe();
    mesh.worker(docs_worker()).await;
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
}
