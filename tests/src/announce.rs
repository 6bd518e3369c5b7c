//! Announcements published straight onto the bus, as a (fake) worker would:
//! tools no kit worker would announce (bad schemas, thousands of them),
//! with nobody behind them to serve a call.

use serde_json::{Value, json};
use sophia_proto::{Announce, Category, Hints, PROTOCOL_VERSION, ToolSpec, subject};

use crate::Mesh;

/// A tool `name` with input schema `schema`.
pub fn spec(name: &str, schema: Value) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        title: None,
        description: format!("{name}, announced by the test"),
        category: Category::CodeGeneration,
        input_schema: schema,
        output_schema: None,
        hints: Hints::default(),
        timeout_ms: None,
        jobs: None,
    }
}

/// A schema `levels` deep through `key`, with `"type": "object"` at its root.
pub fn deep(key: &str, levels: usize) -> Value {
    let mut v = json!({"type": "string"});
    for _ in 0..levels {
        v = json!({ key: v });
    }
    v["type"] = json!("object");
    v
}

/// The announcement of `instance` with `tools`; it stays live for a minute
/// without heartbeats.
fn announcement(instance: &str, tools: Vec<ToolSpec>, offers: Value) -> Announce {
    Announce {
        v: PROTOCOL_VERSION,
        instance: instance.into(),
        service: format!("fake-{instance}"),
        version: "999.0.0".into(),
        tools,
        heartbeat_ms: 60_000,
        offers: serde_json::from_value(offers).unwrap(),
        degraded: vec![],
        acks: false,
        host: String::new(),
        started_at_ms: 0,
    }
}

/// Publishes the announcement of `instance` with `tools` and `offers` (the
/// JSON of its prompts, resources and templates).
pub async fn announce(mesh: &Mesh, instance: &str, tools: Vec<ToolSpec>, offers: Value) {
    let a = announcement(instance, tools, offers);
    announce_bytes(mesh, sophia_proto::encode(&a).unwrap()).await;
}

/// Publishes raw bytes on the announcement subject.
pub async fn announce_bytes(mesh: &Mesh, bytes: Vec<u8>) {
    let nats = mesh.nats_client().await;
    nats.publish(subject::REGISTRY_ANNOUNCE, bytes.into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
}

/// The encoded announcement of `instance` with tools `deep_not` and
/// `deep_items`, schemas 1,000 levels deep: more than the gateway decodes,
/// so the whole envelope is refused. Built and encoded on a thread with
/// room for it.
pub fn abyss(instance: &str) -> Vec<u8> {
    let instance = instance.to_owned();
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let tools = vec![
                spec("deep_not", deep("not", 1_000)),
                spec("deep_items", deep("items", 1_000)),
            ];
            let a = announcement(&instance, tools, json!({}));
            let bytes = sophia_proto::encode(&a).unwrap();
            std::mem::forget(a); // dropping it would recurse 1,000 deep too
            bytes
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The bad announcements the hostile-input tests make, beside one good
/// tool, `fine`: the 1,000-deep envelope (`abyss`, refused whole), and
/// `junk` with a 100-deep schema, a string root, no type and a nullable
/// root (each refused alone). Five refusals in all.
pub async fn announce_junk_beside_fine(mesh: &Mesh) {
    announce_bytes(mesh, abyss("abyss")).await;
    announce(
        mesh,
        "junk",
        vec![
            spec("deep_100", deep("not", 100)),
            spec("string_root", json!({"type": "string"})),
            spec("no_type", json!({"properties": {}})),
            spec("nullable_root", json!({"type": ["object", "null"]})),
            spec(
                "fine",
                json!({"type": "object", "properties": {"x": {"type": "string"}}}),
            ),
        ],
        json!({}),
    )
    .await;
}
