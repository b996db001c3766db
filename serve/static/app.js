// runfold serve's web view: the fleet panel, the runs table (filters, live updates) and a
// run's page (identity, counters, violations, timeline). Plain DOM, no build step, no
// request leaves this server. Data is always inserted as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { cursor: null, filters: {}, runId: null, lastChange: null, runSeq: 0 };

// ---------------------------------------------------------------- API access

function apiKey() { return sessionStorage.getItem("runfold-key") || ""; }

function headers() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

class ApiProblem extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  if (response.status === 401 || response.status === 403) askForKey(await response.json());
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new ApiProblem(`${response.status}: ${detail}`);
  }
  return response.json();
}

function askForKey(body) {
  $("keyform").hidden = false;
  $("keyerror").textContent = body && body.detail ? body.detail : "";
}

$("keyform").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("runfold-key", $("key").value.trim());
  $("key").value = "";
  $("keyform").hidden = true;
  route();
});

// ---------------------------------------------------------------- DOM helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function shortTime(text) { return text ? text.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

function statusBadge(status, stalled) {
  return el("span", { class: `status ${status}` + (stalled ? " stalled" : "") },
    status + (stalled ? " (stalled)" : ""));
}

// ---------------------------------------------------------------- the fleet panel

async function refreshFleet() {
  try {
    const fleet = await api("/v1/fleet");
    $("f-runs").textContent = fleet.runs;
    for (const status of ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]) {
      $(`f-${status}`).textContent = fleet.runs_by_status[status] || 0;
    }
    $("f-stalled").textContent = fleet.stalled;
    $("f-rate").textContent = Math.round(fleet.events_per_s);
    $("f-fold-lag").textContent = fleet.fold_lag === null ? "?" : fleet.fold_lag;
    const lags = Object.values(fleet.lag);
    $("f-lag").textContent = lags.length && lags.every((v) => v !== null)
      ? lags.reduce((a, b) => a + b, 0) : "?";
    const kinds = Object.entries(fleet.violations_by_kind).map(([k, n]) => `${k} ${n}`);
    $("f-violations").textContent = kinds.length ? `(${kinds.join(", ")})` : "(none)";
    $("recent-list").replaceChildren(...fleet.recent_violations.map((v) => el("li", {},
      el("a", { href: `#/runs/${v.run_id}` }, v.run_id.slice(0, 8)), ` ${v.kind} `,
      `seq ${v.first_seq}–${v.last_seq}: ${v.message}`)));
  } catch (e) { /* the panel keeps its last numbers */ }
}

// ---------------------------------------------------------------- the runs table

function runRow(run) {
  return el("tr", { "data-run-id": run.run_id },
    el("td", {}, el("a", { href: `#/runs/${run.run_id}`, class: "mono" }, run.run_id.slice(0, 8))),
    el("td", { "data-field": "status" }, statusBadge(run.status, run.stalled)),
    el("td", { class: "mono", title: run.agent_spec_digest }, run.agent_spec_digest.slice(0, 12)),
    el("td", {}, shortTime(run.started_at)),
    el("td", { "data-field": "finished" }, shortTime(run.finished_at)),
    el("td", { class: "num", "data-field": "events" }, run.events_applied),
    el("td", { "data-field": "violations" }, run.violation_kinds.join(", ")));
}

function readFilters() {
  const filters = {};
  for (const [name, value] of new FormData($("filters")).entries()) {
    if (String(value).trim()) filters[name] = String(value).trim();
  }
  return filters;
}

async function loadRuns(append) {
  const params = new URLSearchParams({ ...state.filters, limit: "50" });
  if (append && state.cursor) params.set("cursor", state.cursor);
  try {
    const page = await api(`/v1/runs?${params}`);
    $("runs-error").textContent = "";
    const body = $("runs").tBodies[0];
    const rows = page.runs.map(runRow);
    if (append) body.append(...rows); else body.replaceChildren(...rows);
    state.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
  } catch (e) {
    $("runs-error").textContent = e.message;
  }
}

function matches(run, filters) {
  if (filters.status && run.status !== filters.status) return false;
  if (filters.agent && run.agent_spec_digest !== filters.agent) return false;
  if (filters.violation && !run.violation_kinds.includes(filters.violation)) return false;
  if (filters.stalled && String(run.stalled) !== filters.stalled) return false;
  if (filters.started_after && run.started_at < filters.started_after) return false;
  if (filters.started_before && run.started_at >= filters.started_before) return false;
  return true;
}

function liveRow(run) {
  const body = $("runs").tBodies[0];
  const existing = body.querySelector(`tr[data-run-id="${CSS.escape(run.run_id)}"]`);
  const fits = matches(run, state.filters);
  if (existing) {
    if (fits) existing.replaceWith(runRow(run)); else existing.remove();
  } else if (fits) {
    // Newest first: a run started after the first row's goes on top; older ones are on
    // later pages, which are read when asked for.
    const first = body.rows[0];
    const firstStarted = first ? first.cells[3].textContent : "";
    if (!first || shortTime(run.started_at) >= firstStarted) body.prepend(runRow(run));
  }
}

$("filters").addEventListener("change", () => { state.filters = readFilters(); loadRuns(false); });
$("filters").addEventListener("submit", (e) => { e.preventDefault(); });
$("more").addEventListener("click", () => loadRuns(true));

// ---------------------------------------------------------------- a run's page

function kvRows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

async function loadRun(runId) {
  const seq = ++state.runSeq;
  try {
    const [run, events, digest] = await Promise.all([
      api(`/v1/runs/${runId}`), api(`/v1/runs/${runId}/events`), api(`/v1/runs/${runId}/digest`),
    ]);
    if (seq !== state.runSeq) return; // a newer load started meanwhile
    $("run-error").textContent = "";
    $("r-id").textContent = run.run_id;
    $("r-status").replaceChildren(statusBadge(run.status, run.stalled));
    const r = run.run;
    kvRows($("r-identity"), [
      ["agent_spec_digest", r.agent_spec_digest], ["git_sha", r.git_sha],
      ["started_at", r.started_at], ["finished_at", r.finished_at || "–"],
      ["last_seq", run.last_seq], ["pending", run.pending ? String(run.pending) : "–"],
      ["inputs", JSON.stringify(r.inputs)], ["outputs", r.outputs === null ? "–" : JSON.stringify(r.outputs)],
    ]);
    kvRows($("r-counters"), Object.entries(run.counters).filter(([, v]) => v));
    $("r-violations").tBodies[0].replaceChildren(...(run.violation_records.length
      ? run.violation_records.map((v) => el("tr", {}, el("td", {}, v.kind),
          el("td", {}, v.first_seq === v.last_seq ? v.first_seq : `${v.first_seq}–${v.last_seq}`),
          el("td", {}, v.message)))
      : [el("tr", {}, el("td", { colspan: 3 }, "none"))]));
    $("r-digest").textContent = digest.digest + (digest.complete ? "" : " (events incomplete)");
    const width = Math.min(1400, document.body.clientWidth - 40);
    window.runfoldTimeline.drawTimeline($("timeline"), events.events, width);
  } catch (e) {
    if (seq === state.runSeq) $("run-error").textContent = e.message;
  }
}

// ---------------------------------------------------------------- live changes (SSE)

// Server-Sent Events read with fetch, so that the API key goes in a header (EventSource
// cannot send one, and a key in the URL would end up in logs).
async function followChanges() {
  for (;;) {
    try {
      const after = state.lastChange === null ? "" : `?after=${state.lastChange}`;
      const response = await fetch(`/v1/stream${after}`, { headers: headers() });
      if (!response.ok) throw new ApiProblem(String(response.status));
      $("live").className = "live on";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          onMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (e) { /* reconnect below */ }
    $("live").className = "live off";
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

let fleetTimer = null;

function onMessage(block) {
  let type = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) type = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const message = JSON.parse(data);
  if (type === "hello" && state.lastChange === null) state.lastChange = message.change;
  if (type !== "run") return;
  state.lastChange = message.change;
  if (!$("runs-view").hidden) liveRow(message);
  if (!$("run-view").hidden && message.run_id === state.runId) loadRun(state.runId);
  if (!fleetTimer) fleetTimer = setTimeout(() => { fleetTimer = null; refreshFleet(); }, 500);
}

// ---------------------------------------------------------------- routing

function route() {
  const match = /^#\/runs\/([0-9a-fA-F-]{36})$/.exec(location.hash);
  $("runs-view").hidden = Boolean(match);
  $("run-view").hidden = !match;
  if (match) {
    state.runId = match[1].toLowerCase();
    loadRun(state.runId);
  } else {
    state.runId = null;
    state.filters = readFilters();
    loadRuns(false);
  }
  refreshFleet();
}

window.addEventListener("hashchange", route);
route();
setInterval(refreshFleet, 5000);
followChanges();
