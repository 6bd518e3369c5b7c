// The Sophia Mesh console. Plain JavaScript, no build step, nothing fetched
// from elsewhere. It follows /console/api/events (the whole state each
// second) and renders it. Everything from the mesh is set as text
// (textContent), never parsed as HTML. The event log keeps a window of
// EVENT_WINDOW entries, so a flood does not grow the page's memory.
"use strict";
(() => {
  const EVENT_WINDOW = 200;
  const S = (window.sophiaConsole = {
    events: [], // the event log's window, newest last
    seen: 0, // events ever logged
    state: null,
    csrf: null,
    errorSeq: null, // the last error seq logged
    replicas: null, // instance -> service, as last seen
    decisions: new Map(), // seq -> state, as last seen
    bus: null,
  });

  // ---- building DOM from data, as text only ----
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "onclick") node.addEventListener("click", v);
      else node.setAttribute(k, String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === undefined || kid === null) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  function fill(tbodyOwner, rows, cols, empty) {
    const body = $(tbodyOwner).tBodies[0];
    const trs = rows.length
      ? rows.map((r) => el("tr", {}, cols.map((c) => c(r))))
      : [el("tr", { class: "empty" }, el("td", { colspan: 9 }, empty))];
    body.replaceChildren(...trs);
  }
  const td = (text, cls) => el("td", { class: cls }, text);
  const num = (n) => td(n, "num");

  // ---- formats ----
  function ago(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    const h = Math.floor(s / 3600);
    return h < 48 ? `${h}h ${Math.floor((s % 3600) / 60)}m` : `${Math.floor(h / 24)}d`;
  }
  const when = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
  const ms = (v) => (v === undefined || v === null ? "" : `${Number(v).toFixed(1)} ms`);
  const short = (id) => String(id || "").slice(0, 8);
  const str = (v) => (v === undefined || v === null ? "" : typeof v === "string" ? v : JSON.stringify(v, null, 2));

  // ---- the event log ----
  function logEvent(kind, text) {
    const entry = { at: Date.now(), kind, text };
    S.events.push(entry);
    S.seen += 1;
    while (S.events.length > EVENT_WINDOW) S.events.shift();
    const list = $("events");
    list.prepend(el("li", { class: kind }, `${when(entry.at)} ${text}`));
    while (list.children.length > EVENT_WINDOW) list.lastElementChild.remove();
    $("events-count").textContent = `(last ${S.events.length} of ${S.seen})`;
  }

  function noteChanges(state) {
    const now = new Map();
    for (const s of state.services) for (const r of s.replicas) now.set(r.instance, r.service);
    if (S.replicas) {
      for (const [id, service] of now) if (!S.replicas.has(id)) logEvent("ok", `replica ${short(id)} of ${service} joined`);
      for (const [id, service] of S.replicas) if (!now.has(id)) logEvent("bad", `replica ${short(id)} of ${service} left`);
    }
    S.replicas = now;
    const t = state.traffic;
    if (S.errorSeq !== null) {
      for (const e of [...t.errors].reverse()) {
        if (e.seq > S.errorSeq) logEvent("bad", `${e.tool} failed (${e.code}): ${e.message}`);
      }
    }
    S.errorSeq = t.error_count;
    if (S.bus !== null && S.bus !== state.bus.connected) {
      logEvent(state.bus.connected ? "ok" : "bad", state.bus.connected ? "NATS link is back" : `NATS link down: ${state.bus.problem || ""}`);
    }
    S.bus = state.bus.connected;
    for (const d of state.decisions) {
      const before = S.decisions.get(d.seq);
      if (before !== d.state && d.state !== "running") logEvent(d.state === "done" ? "ok" : "bad", `${d.decision} of ${d.kind} ${short(d.id)} by ${d.by}: ${d.state}`);
      S.decisions.set(d.seq, d.state);
    }
    while (S.decisions.size > 100) S.decisions.delete(S.decisions.keys().next().value);
  }

  // ---- the views ----
  function renderMesh(state) {
    const b = state.bus;
    const facts = [
      ["Link", b.connected ? "connected" : `down: ${b.problem || "disconnected"}`],
      ["Server", `${b.server_name || "?"} (${b.version || "?"})`],
      ["Address", `${b.host}:${b.port}`],
      ["Cluster", b.cluster || "none (a single server)"],
      ["Cluster URLs", (b.cluster_urls || []).join(", ") || "none"],
      ["JetStream", b.jetstream ? "yes" : "no"],
      ["Gateway", `${short(state.gateway.instance)} v${state.gateway.version}, up ${ago(state.gateway.uptime_s * 1000)}`],
    ];
    $("bus").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { class: k === "Link" ? (b.connected ? "ok" : "bad") : null }, v)]));
    const rows = state.services.flatMap((s) => s.replicas);
    fill("replicas", rows, [
      (r) => td(r.service),
      (r) => td(short(r.instance)),
      (r) => td(r.version),
      (r) => td(r.host || "unknown"),
      (r) => td(r.started_at_ms ? ago(state.at_ms - r.started_at_ms) : ago(r.known_for_ms)),
      (r) => td(`${ago(r.last_heartbeat_ms)} ago`),
      (r) => num(r.tools),
      (r) => td(r.categories.join(", ")),
      (r) => td(r.degraded.length ? r.degraded.join("; ") : "ok", r.degraded.length ? "warn" : "ok"),
    ], "No worker replica is announcing tools.");
    fill("refused", state.refused || [], [
      (r) => td(r.service || ""), (r) => td(r.what), (r) => td(r.why, "msg"),
    ], "Everything announced is offered.");
    $("categories").replaceChildren(...state.categories.map((c) =>
      el("div", { class: "card" }, el("h3", {}, `${c.category} (${c.tools.length})`),
        c.tools.length ? el("ul", {}, c.tools.map((t) => el("li", {}, t))) : el("p", { class: "warn" }, "no live worker"))));
  }

  function renderTraffic(state) {
    const t = state.traffic;
    $("window").textContent = `(last ${Math.round(t.window_s / 60)} minutes)`;
    fill("tools", t.tools, [
      (r) => td(r.category), (r) => td(r.tool), (r) => num(r.calls), (r) => num(r.errors),
      (r) => num(r.calls ? `${((100 * r.errors) / r.calls).toFixed(1)}%` : ""),
      (r) => num(ms(r.p50_ms)), (r) => num(ms(r.p99_ms)),
    ], "No calls yet.");
    fill("minutes", t.minutes.map((m, i) => ({ ...m, i })), [
      (m) => td(m.i === 0 ? "this minute" : `${m.i} min ago`), (m) => num(m.calls), (m) => num(m.errors),
    ], "");
    $("in-flight-count").textContent = `(${t.in_flight_count})`;
    fill("in-flight", t.in_flight, [
      (c) => td(c.tool), (c) => td(c.category), (c) => td(c.principal), (c) => num(ago(c.age_ms)),
    ], "Nothing in flight.");
    fill("errors", t.errors, [
      (e) => td(when(e.at_ms)), (e) => td(e.tool), (e) => td(e.code, "bad"), (e) => td(e.message, "msg"),
      (e) => td(e.principal),
      (e) => el("td", {}, e.trace_url ? el("a", { href: e.trace_url, rel: "noopener noreferrer", target: "_blank" }, short(e.trace_id))
        : short(e.trace_id)),
    ], "No errors.");
  }

  function decideButtons(kind, id, what) {
    const approve = el("button", { type: "button", class: "approve", "data-id": id, "aria-label": `Approve ${what}` }, "Approve");
    const reject = el("button", { type: "button", class: "reject", "data-id": id, "aria-label": `Reject ${what}` }, "Reject");
    approve.addEventListener("click", () => decide(kind, id, "approve", [approve, reject]));
    reject.addEventListener("click", () => decide(kind, id, "reject", [approve, reject]));
    return el("div", { class: "actions" }, approve, reject);
  }

  function listOf(work, key) {
    const list = work && work[key];
    return { items: (list && list.items) || [], problem: list && list.problem };
  }

  function renderWork(state) {
    const work = state.work;
    const previews = listOf(work, "previews");
    const pending = listOf(work, "agent_pending");
    const cards = [
      ...previews.items.map((p) => el("article", { class: "card preview", "data-id": p.preview_id },
        el("h3", {}, `Pulumi ${p.operation}: ${p.project}/${p.stack}`),
        el("p", {}, `Preview ${short(p.preview_id)} by ${p.previewed_by || "unknown"}`),
        el("p", {}, p.changes || ""),
        el("pre", {}, str((p.summary && p.summary.resource_changes) || p.summary)),
        decideButtons("preview", p.preview_id, `${p.operation} of ${p.project}/${p.stack}`))),
      ...pending.items.map((a) => el("article", { class: "card action", "data-id": a.action_id },
        el("h3", {}, `${a.agent_type || "agent"} wants to run ${a.tool}`),
        el("pre", {}, str(a.arguments)),
        a.plan ? el("p", {}, `Plan: ${str(a.plan)}`) : null,
        decideButtons("action", a.action_id, `${a.tool} for ${a.agent_type || "agent"}`))),
    ];
    const problems = [previews.problem, pending.problem].filter(Boolean);
    if (!work) cards.push(el("p", {}, "Reading the work lists…"));
    else if (!cards.length) cards.push(el("p", {}, "Nothing waits for a decision."));
    for (const p of problems) cards.push(el("p", { class: "problem" }, p));
    $("pending").replaceChildren(...cards);
    const waiting = previews.items.length + pending.items.length;
    $("pending-count").textContent = waiting ? String(waiting) : "";
    fill("decisions", state.decisions, [
      (d) => td(when(d.at_ms)), (d) => td(d.by), (d) => td(`${d.kind} ${short(d.id)} (${d.tool})`),
      (d) => td(d.decision), (d) => td(d.state, d.state === "failed" ? "bad" : d.state === "done" ? "ok" : null),
      (d) => td(d.outcome, "msg"),
    ], "No decisions yet.");
    const jobs = listOf(work, "pulumi_jobs");
    $("jobs-problem").textContent = jobs.problem || "";
    fill("jobs", jobs.items, [
      (j) => td(short(j.job_id)), (j) => td(j.operation), (j) => td(`${j.project}/${j.stack}`),
      (j) => td(j.state, j.state === "succeeded" ? "ok" : j.state === "failed" ? "bad" : null),
      (j) => td(str(Array.isArray(j.progress) ? j.progress.slice(-3).join("\n") : j.progress), "msg"),
      (j) => td(j.confirmed_by || ""),
    ], "No Pulumi jobs.");
    const runs = listOf(work, "agent_runs");
    $("runs-problem").textContent = runs.problem || "";
    $("runs").replaceChildren(...(runs.items.length ? runs.items.map((r) => el("article", { class: "card run", "data-id": r.run_id },
      el("h3", {}, `${r.agent_type || "agent"} run ${short(r.run_id)}: ${r.state || r.phase || ""}`),
      r.question ? el("p", { class: "warn" }, str(r.question.message || r.question)) : null,
      r.message ? el("p", {}, str(r.message)) : null,
      el("ol", {}, (r.steps || []).map((s) => el("li", {}, typeof s === "string" ? s : `${s.tool || ""} ${s.outcome || ""}`.trim()))))) : [el("p", {}, "No agent runs.")]));
  }

  function render(state) {
    S.state = state;
    noteChanges(state);
    $("who").textContent = `Signed in as ${state.gateway.viewer}`;
    renderMesh(state);
    renderTraffic(state);
    renderWork(state);
  }

  // ---- acting ----
  async function decide(kind, id, decision, buttons) {
    for (const b of buttons) b.disabled = true;
    const notice = $("notice");
    try {
      const r = await fetch("/console/api/decide", {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Sophia-Csrf": S.csrf },
        body: JSON.stringify({ kind, id, decision }),
      });
      const body = await r.json().catch(() => ({}));
      notice.textContent = r.ok ? `${decision === "approve" ? "Approved" : "Rejected"} ${kind} ${short(id)}: in progress.` : `Could not ${decision}: ${body.error || r.status}`;
    } catch (e) {
      notice.textContent = `Could not ${decision}: ${e}`;
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  async function signOut() {
    await fetch("/console/logout", { method: "POST", headers: { "X-Sophia-Csrf": S.csrf } });
    location.assign("/console");
  }

  // ---- tabs ----
  function select(name) {
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      const on = tab.getAttribute("aria-controls") === name;
      tab.setAttribute("aria-selected", String(on));
      // One tab stop for the tab list; arrows move within it.
      tab.tabIndex = on ? 0 : -1;
      $(tab.getAttribute("aria-controls")).hidden = !on;
    }
  }

  // Left/Right (and Home/End) move between tabs, as the WAI-ARIA tabs pattern has it.
  function onTabKey(event) {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    const at = tabs.indexOf(event.target);
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    const tab = tabs[(to + tabs.length) % tabs.length];
    tab.focus();
    tab.click();
  }

  // ---- live ----
  function follow() {
    const live = $("live");
    const source = new EventSource("/console/api/events");
    source.addEventListener("state", (m) => {
      live.dataset.state = "live";
      live.textContent = "Live";
      try { render(JSON.parse(m.data)); } catch (e) { live.textContent = `Live (could not show an update: ${e})`; }
    });
    source.addEventListener("signed_out", () => {
      // The credential expired or was removed: back to the login form.
      source.close();
      location.reload();
    });
    source.onerror = () => {
      live.dataset.state = "down";
      live.textContent = "Reconnecting to the gateway…";
      if (source.readyState === EventSource.CLOSED) {
        // The gateway refused the stream (signed out, or restarted with other keys).
        setTimeout(() => location.reload(), 3000);
      }
    };
  }

  async function start() {
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      tab.addEventListener("click", () => { history.replaceState(null, "", `#${tab.getAttribute("aria-controls")}`); select(tab.getAttribute("aria-controls")); });
    }
    document.querySelector('[role="tablist"]').addEventListener("keydown", onTabKey);
    const wanted = location.hash.slice(1);
    select(["mesh", "traffic", "work"].includes(wanted) ? wanted : "mesh");
    $("sign-out").addEventListener("click", signOut);
    const r = await fetch("/console/api/session");
    if (r.status === 401) return location.reload();
    const session = await r.json();
    S.csrf = session.csrf;
    follow();
  }
  document.addEventListener("DOMContentLoaded", start);
})();
