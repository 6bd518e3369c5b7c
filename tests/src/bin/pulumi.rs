//! A stand-in `pulumi` executable for tests: the Pulumi CLI cannot be
//! installed in CI, so this speaks the part of its documented contract that
//! the pulumi-worker uses, the way Pulumi's Automation API drives the CLI.
//!
//! What it does:
//! - `version`; `stack ls --json`; `stack select NAME` (exit 255 with
//!   "error: no stack named 'NAME' found" if missing); `stack init NAME`;
//!   `stack output --json [--show-secrets]` (secrets print `"[secret]"`
//!   without `--show-secrets`); `cancel --yes` (removes the lock).
//! - `preview`, `up`, `refresh` and `destroy [--preview-only]` with
//!   `--event-log FILE` (an error unless `PULUMI_DEBUG_COMMANDS=true`, as in
//!   the real CLI), `--save-plan FILE` / `--plan FILE`, `--non-interactive`,
//!   `--yes`, `--skip-preview`, `--stack`: they replay a real engine event
//!   log (JSON lines) into the event log file, one event every `delay_ms`.
//! - While an `up`, `refresh` or `destroy` runs, the stack is locked; a
//!   second one fails with the real CLI's message ("the stack is currently
//!   locked by 1 lock(s)..."). Each finished one adds an update to the
//!   stack's history (`stack history --json [--page-size N]`, newest first,
//!   in the CLI's `updateInfoJSON` shape, with the `--message`/`-m` it was
//!   given); a destroy clears the outputs.
//! - `config --json [--show-secrets]` prints `{"ns:key": {"value", "secret"}}`
//!   and, like the CLI, leaves secrets' values out without `--show-secrets`;
//!   `config set KEY [VALUE] [--secret|--plaintext] [--path]` reads the
//!   value from stdin when none is given (as the CLI does when
//!   non-interactive). A bare key gets the project's namespace.
//! - SIGINT during an operation stops the replay, writes a cancel event and
//!   exits 255 with "error: update canceled", as the CLI does on ^C.
//!
//! Limits: no real resources, no encryption (secrets are stored in clear in
//! the test's backend directory), one project per directory; the project
//! directory's `standin.json` chooses what runs:
//! `{"preview": "<fixture>", "up": "<fixture>", "refresh": "<fixture>",
//!   "destroy": "<fixture>", "delay_ms": 10, "outputs": {...},
//!   "secret_outputs": ["name"], "malformed_line": 3, "hold_file": "<path>"}`.
//! With `hold_file`, an `up`, `refresh` or `destroy` holds before its
//! summary until that file exists (or SIGINT), so a test can see it
//! running and cancel it without racing its end.
//! State lives under `PULUMI_BACKEND_URL` (`file://DIR`), with every
//! command line it was given appended to `DIR/command-lines.log`. No
//! recorded refresh log is among the fixtures, so `refresh` replays
//! whichever log `standin.json` names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(255);
}

/// Flags that take a value (the rest are switches).
const VALUE_FLAGS: &[&str] = &[
    "--stack",
    "-s",
    "--event-log",
    "--plan",
    "--save-plan",
    "--page-size",
    "--page",
    "--message",
    "-m",
];

/// The arguments that are not flags or flag values.
fn positionals(args: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a == "--" {
            continue;
        } else if VALUE_FLAGS.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            out.push(a.as_str());
        }
    }
    out
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn backend() -> PathBuf {
    let url = std::env::var("PULUMI_BACKEND_URL")
        .unwrap_or_else(|_| fail("PULUMI_BACKEND_URL is not set"));
    PathBuf::from(
        url.strip_prefix("file://")
            .unwrap_or_else(|| fail("only file:// backends are supported")),
    )
}

fn state_path() -> PathBuf {
    backend().join("standin-state.json")
}

fn load_state() -> Value {
    std::fs::read_to_string(state_path())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| json!({"stacks": {}, "current": null}))
}

fn save_state(state: &Value) {
    std::fs::write(state_path(), state.to_string()).unwrap();
}

fn lock_path(stack: &str) -> PathBuf {
    backend().join(format!("{stack}.lock"))
}

fn scenario() -> Value {
    std::fs::read_to_string("standin.json")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_else(|| fail("no Pulumi project here (standin.json missing)"))
}

fn current_stack(args: &[String], state: &Value) -> String {
    flag(args, "--stack")
        .or_else(|| flag(args, "-s"))
        .or_else(|| state["current"].as_str().map(str::to_owned))
        .unwrap_or_else(|| fail("no stack selected; use `pulumi stack select`"))
}

/// Replays `fixture` into the event log; returns false if interrupted.
async fn replay(
    fixture: &Path,
    log: &Path,
    delay: Duration,
    malformed_line: Option<usize>,
    hold: Option<&Path>,
) -> bool {
    let text = std::fs::read_to_string(fixture)
        .unwrap_or_else(|e| fail(&format!("fixture {}: {e}", fixture.display())));
    let mut out = std::fs::File::create(log).unwrap();
    let mut sigint =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).unwrap();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if malformed_line == Some(i) {
            writeln!(out, "{{\"sequence\": oops").unwrap();
            out.flush().unwrap();
        }
        let is_last_two = line.contains("\"summaryEvent\"") || line.contains("\"cancelEvent\"");
        let held = is_last_two && hold.is_some_and(|h| !h.exists());
        if !is_last_two || held {
            let wait = async {
                tokio::time::sleep(delay).await;
                while let Some(h) = hold.filter(|_| held)
                    && !h.exists()
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = sigint.recv() => {
                    eprintln!("^C received; cancelling. If you would like to terminate immediately, press ^C again.");
                    writeln!(out, "{}", json!({"sequence": 10_000, "timestamp": 0, "cancelEvent": {}})).unwrap();
                    return false;
                }
            }
        }
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
    true
}

async fn operation(op: &str, args: &[String]) {
    if flag(args, "--event-log").is_some()
        && std::env::var("PULUMI_DEBUG_COMMANDS").as_deref() != Ok("true")
    {
        fail("unknown flag: --event-log");
    }
    let log = PathBuf::from(flag(args, "--event-log").unwrap_or_else(|| "/dev/null".into()));
    let state = load_state();
    let stack = current_stack(args, &state);
    if state["stacks"].get(&stack).is_none() {
        fail(&format!("no stack named '{stack}' found"));
    }
    let sc = scenario();
    let delay = Duration::from_millis(sc["delay_ms"].as_u64().unwrap_or(10));
    let malformed = sc["malformed_line"].as_u64().map(|n| n as usize);
    let fixture = PathBuf::from(
        sc[op]
            .as_str()
            .unwrap_or_else(|| fail(&format!("standin.json has no {op} fixture"))),
    );
    let preview_only = op == "preview" || args.iter().any(|a| a == "--preview-only");
    if preview_only {
        replay(&fixture, &log, delay, malformed, None).await;
        if let Some(plan) = flag(args, "--save-plan") {
            std::fs::write(
                plan,
                json!({"stack": stack, "fixture": fixture}).to_string(),
            )
            .unwrap();
        }
        return;
    }
    if let Some(plan) = flag(args, "--plan") {
        let plan: Value = std::fs::read_to_string(&plan)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_else(|| fail(&format!("could not read the update plan {plan}")));
        if plan["stack"] != json!(stack) {
            fail("the update plan was made for another stack");
        }
    }
    let lock = lock_path(&stack);
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .is_err()
    {
        fail(
            "the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end \
             or delete the lock file with `pulumi cancel`.",
        );
    }
    let started = now();
    let hold = sc["hold_file"].as_str().map(PathBuf::from);
    let finished = replay(&fixture, &log, delay, malformed, hold.as_deref()).await;
    let _ = std::fs::remove_file(&lock);
    if !finished {
        fail("update canceled");
    }
    let mut state = load_state();
    let entry = &mut state["stacks"][&stack];
    match op {
        "up" => {
            entry["outputs"] = sc["outputs"].clone();
            entry["secret_outputs"] = sc["secret_outputs"].clone();
        }
        "destroy" => {
            entry["outputs"] = json!({});
            entry["secret_outputs"] = json!([]);
        }
        _ => {}
    }
    let version = entry["history"].as_array().map_or(0, Vec::len) + 1;
    let kind = if op == "up" { "update" } else { op };
    let update = json!({"version": version, "kind": kind, "startTime": started, "endTime": now(),
        "message": flag(args, "--message").or_else(|| flag(args, "-m")).unwrap_or_default(),
        "environment": {"exec.kind": "auto.local"},
        "config": config_json(&entry["config"], args.iter().any(|a| a == "--show-secrets")),
        "result": "succeeded", "resourceChanges": {}});
    if !entry["history"].is_array() {
        entry["history"] = json!([]);
    }
    entry["history"].as_array_mut().unwrap().insert(0, update);
    save_state(&state);
}

fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!("@{secs}")
}

/// A stack's config as `config --json` prints it: secrets without their
/// values unless `show_secrets`.
fn config_json(config: &Value, show_secrets: bool) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in config.as_object().into_iter().flatten() {
        let secret = v["secret"].as_bool().unwrap_or(false);
        let mut shown = json!({"secret": secret});
        if !secret || show_secrets {
            shown["value"] = v["value"].clone();
        }
        out.insert(k.clone(), shown);
    }
    Value::Object(out)
}

/// The project's name, from `Pulumi.yaml`.
fn project_name() -> String {
    std::fs::read_to_string("Pulumi.yaml")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("name:").map(|n| n.trim().to_owned()))
        })
        .unwrap_or_else(|| fail("no Pulumi project here (Pulumi.yaml missing)"))
}

fn config_set(args: &[String], key: &str, value: Option<&str>) {
    use std::io::Read;
    let value = match value {
        Some(v) => v.to_owned(),
        None => {
            let mut v = String::new();
            std::io::stdin().read_to_string(&mut v).unwrap();
            v
        }
    };
    let mut state = load_state();
    let stack = current_stack(args, &state);
    if state["stacks"].get(&stack).is_none() {
        fail(&format!("no stack named '{stack}' found"));
    }
    let key = if key.contains(':') {
        key.to_owned()
    } else {
        format!("{}:{key}", project_name())
    };
    let secret = args.iter().any(|a| a == "--secret");
    state["stacks"][&stack]["config"][&key] = json!({"value": value, "secret": secret});
    save_state(&state);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Every command line, so tests can check what reached the process list
    // (values for `config set` must come on stdin, not here).
    if let Ok(url) = std::env::var("PULUMI_BACKEND_URL")
        && let Some(dir) = url.strip_prefix("file://")
        && let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(dir).join("command-lines.log"))
    {
        let _ = writeln!(log, "{}", args.join(" "));
    }
    match positionals(&args).as_slice() {
        ["version", ..] => println!("v3.200.0-standin"),
        ["stack", "ls", ..] => {
            let state = load_state();
            let current = state["current"].as_str().unwrap_or("");
            let list: Vec<Value> = state["stacks"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| {
                    json!({"name": name, "current": name == current,
                    "updateInProgress": lock_path(name).exists()})
                })
                .collect();
            println!("{}", Value::Array(list));
        }
        ["stack", "select", name, ..] => {
            let mut state = load_state();
            if state["stacks"].get(*name).is_none() {
                fail(&format!("no stack named '{name}' found"));
            }
            state["current"] = json!(name);
            save_state(&state);
        }
        ["stack", "init", name, ..] => {
            let mut state = load_state();
            if state["stacks"].get(*name).is_some() {
                fail(&format!("stack '{name}' already exists"));
            }
            state["stacks"][*name] = json!({"outputs": {}});
            state["current"] = json!(name);
            save_state(&state);
        }
        ["stack", "output", ..] => {
            let state = load_state();
            let stack = current_stack(&args, &state);
            if state["stacks"].get(&stack).is_none() {
                fail(&format!("no stack named '{stack}' found"));
            }
            let mut outputs = state["stacks"][&stack]["outputs"].clone();
            if !args.iter().any(|a| a == "--show-secrets") {
                for s in state["stacks"][&stack]["secret_outputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let (Some(o), Some(k)) = (outputs.as_object_mut(), s.as_str()) {
                        o.insert(k.to_owned(), json!("[secret]"));
                    }
                }
            }
            println!(
                "{}",
                if outputs.is_null() {
                    json!({})
                } else {
                    outputs
                }
            );
        }
        ["cancel", ..] => {
            let state = load_state();
            let _ = std::fs::remove_file(lock_path(&current_stack(&args, &state)));
        }
        ["stack", "history", ..] => {
            let state = load_state();
            let stack = current_stack(&args, &state);
            if state["stacks"].get(&stack).is_none() {
                fail(&format!("no stack named '{stack}' found"));
            }
            let size = flag(&args, "--page-size")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            let history: Vec<Value> = state["stacks"][&stack]["history"]
                .as_array()
                .into_iter()
                .flatten()
                .take(size)
                .cloned()
                .collect();
            println!("{}", Value::Array(history));
        }
        ["config", "set", key, value @ ..] => config_set(&args, key, value.first().copied()),
        ["config"] => {
            let state = load_state();
            let stack = current_stack(&args, &state);
            if state["stacks"].get(&stack).is_none() {
                fail(&format!("no stack named '{stack}' found"));
            }
            let show = args.iter().any(|a| a == "--show-secrets");
            println!("{}", config_json(&state["stacks"][&stack]["config"], show));
        }
        [op @ ("preview" | "up" | "refresh" | "destroy"), ..] => operation(op, &args).await,
        _ => fail(&format!("unknown command: {}", args.join(" "))),
    }
}
