//! The tool view: the announcements of every live replica merged into
//! what the gateway offers (one description per tool, conflicts refused,
//! resources, templates and prompts by owner).

use super::*;

pub(super) fn same_tools(a: &ToolView, b: &ToolView) -> bool {
    a.tools.len() == b.tools.len()
        && a.tools
            .iter()
            .zip(b.tools.iter())
            .all(|((na, ea), (nb, eb))| na == nb && ea.spec == eb.spec)
}

/// Orders versions like semver for the numeric parts, so that during a
/// rolling upgrade the newest replica's description of a tool wins.
pub(super) fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The view of `instances`. A tool whose announcement is unchanged since
/// `previous` keeps its compiled schema and MCP form: with thousands of
/// tools, a replica joining must not recompile every one.
pub(super) fn build_view(instances: &HashMap<String, Instance>, previous: &ToolView) -> ToolView {
    // A tool's schema is the one of the replica that has served it longest:
    // a later announcement with another schema does not displace it (it is
    // a conflict, shown on /health). Among replicas with that schema, the
    // newest version describes the tool (ties: smallest instance id).
    let mut incumbent: BTreeMap<&str, (Instant, &str, &ToolSpec)> = BTreeMap::new();
    for (id, inst) in instances {
        for spec in &inst.tools {
            let e = incumbent
                .entry(spec.name.as_str())
                .or_insert((inst.since, id, spec));
            if (inst.since, id.as_str()) < (e.0, e.1) {
                *e = (inst.since, id, spec);
            }
        }
    }
    let mut conflicts = BTreeMap::new();
    let mut chosen: BTreeMap<String, (Vec<u64>, &str, &ToolSpec, usize, bool)> = BTreeMap::new();
    for (id, inst) in instances {
        for spec in &inst.tools {
            let (_, _, first) = incumbent[spec.name.as_str()];
            if !same_schema(first, spec) {
                conflicts.insert(spec.name.clone(), inst.service.clone());
                continue;
            }
            let key = version_key(&inst.version);
            chosen
                .entry(spec.name.clone())
                .and_modify(|c| {
                    c.3 += 1;
                    c.4 &= inst.acks;
                    if (&key, std::cmp::Reverse(id.as_str())) > (&c.0, std::cmp::Reverse(c.1)) {
                        c.0 = key.clone();
                        c.1 = id;
                        c.2 = spec;
                    }
                })
                .or_insert((key, id, spec, 1, inst.acks));
        }
    }
    let mut view = ToolView {
        conflicts,
        ..Default::default()
    };
    for (name, (_, id, spec, replicas, acked)) in chosen {
        let service = instances[id].service.clone();
        let same = previous.tools.get(&name).filter(|e| e.spec == *spec);
        if let Some(e) =
            same.filter(|e| e.replicas == replicas && e.acked == acked && e.service == service)
        {
            view.tools.insert(name, e.clone());
            continue;
        }
        let built = match same {
            Some(e) => Ok(ToolEntry {
                spec: e.spec.clone(),
                mcp: e.mcp.clone(),
                validator: e.validator.clone(),
                replicas,
                acked,
                service,
            }),
            None => entry(spec.clone(), replicas, acked, service),
        };
        match built {
            Ok(e) => {
                view.tools.insert(name, Arc::new(e));
            }
            Err(why) => {
                tracing::error!(tool = %name, %why, "not offering a tool with an invalid schema")
            }
        }
    }
    add_offers(&mut view, instances);

    view
}

/// Whether two announcements of a tool take the same arguments and give
/// the same results (descriptions may differ, as in a rolling upgrade).
pub(super) fn same_schema(a: &ToolSpec, b: &ToolSpec) -> bool {
    a.category == b.category
        && a.input_schema == b.input_schema
        && a.output_schema == b.output_schema
}

pub(super) fn entry(
    spec: ToolSpec,
    replicas: usize,
    acked: bool,
    service: String,
) -> Result<ToolEntry, String> {
    let validator = jsonschema::validator_for(&spec.input_schema).map_err(|e| e.to_string())?;
    let schema: rmcp::model::JsonObject = match &spec.input_schema {
        serde_json::Value::Object(o) => o.clone(),
        _ => return Err("the input schema is not a JSON object".into()),
    };
    let mut tool = rmcp::model::Tool::new(spec.name.clone(), spec.description.clone(), schema);
    if let Some(t) = &spec.title {
        tool = tool.with_title(t.clone());
    }
    if let Some(serde_json::Value::Object(o)) = &spec.output_schema {
        tool = tool.with_raw_output_schema(Arc::new(o.clone()));
    }
    let mut annotations = rmcp::model::ToolAnnotations::new()
        .read_only(spec.hints.read_only)
        .destructive(spec.hints.destructive)
        .idempotent(spec.hints.idempotent)
        .open_world(spec.hints.open_world);
    annotations.title = spec.title.clone();
    tool = tool.with_annotations(annotations);
    Ok(ToolEntry {
        spec,
        mcp: tool,
        validator: Arc::new(validator),
        replicas,
        acked,
        service,
    })
}

/// Resources, templates and prompts: keyed by URI, template or name; with
/// several services offering the same key, the smallest service name wins,
/// so the choice does not depend on announcement order.
fn add_offers(view: &mut ToolView, instances: &HashMap<String, Instance>) {
    let mut sorted: Vec<&Instance> = instances.values().collect();
    sorted.sort_by(|a, b| b.service.cmp(&a.service));
    for inst in sorted {
        let service = &inst.service;
        for r in &inst.offers.resources {
            if let Some(uri) = r["uri"].as_str() {
                view.resources
                    .insert(uri.to_owned(), (service.clone(), r.clone()));
            }
        }
        for t in &inst.offers.resource_templates {
            if let Some(uri) = t["uriTemplate"].as_str() {
                view.templates
                    .insert(uri.to_owned(), (service.clone(), t.clone()));
            }
        }
        for p in &inst.offers.prompts {
            if let Some(name) = p["name"].as_str() {
                view.prompts
                    .insert(name.to_owned(), (service.clone(), p.clone()));
            }
        }
        if inst.offers.completions {
            view.completers.insert(service.clone());
        }
    }
}
