// Loopline dashboard: polls the JSON API and renders runs, stages, logs, models and lineage.
// Everything from the API is rendered as text (see dom.js); the page state lives in the URL hash.
import { ApiError, getJSON, getLog, seg } from "./api.js";
import {
  metricKeys, renderAliases, renderConsumers, renderData, renderMetricChart, renderServingSummary, renderTimeline, renderTraffic,
} from "./releases.js";
import * as session from "./session.js";
import { h, renderIfChanged, replace } from "./dom.js";
import * as f from "./format.js";
import { badge, chips, code, elapsed, empty, errorBox, facts, link, navigate, time } from "./view.js";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

const state = {
  route: { run: null, stage: null, model: null, repo: "", status: "", metric: null },
  live: true,
  runs: null, runsError: null, repos: new Set(),
  run: null, runError: null,
  log: null, logError: null, logKey: null,
  models: null, modelsError: null,
  timeline: null, modelState: null, traffic: null, data: null, attention: null,
  lineage: null, lineageError: null,
  lastOk: null, offline: false,
};

// ---------------------------------------------------------------- routing (the URL hash)

function readRoute() {
  const p = new URLSearchParams(location.hash.slice(1));
  const run = p.get("run");
  return {
    run: run && /^\d{1,12}$/.test(run) ? Number(run) : null,
    stage: p.get("stage") || null,
    model: p.get("model") || null,
    repo: p.get("repo") || "",
    status: p.get("status") || "",
    branch: p.get("branch") || "",
    trigger: p.get("trigger") || "",
    metric: p.get("metric") || null,
  };
}

// ---------------------------------------------------------------- runs list

function renderRunFilters() {
  const repoSelect = $("filter-repo");
  const repos = [...state.repos].sort();
  if (state.route.repo && !state.repos.has(state.route.repo)) repos.unshift(state.route.repo);
  renderIfChanged(repoSelect, JSON.stringify(repos), () => {
    replace(repoSelect, h("option", { value: "" }, "All repositories"),
      repos.map((r) => h("option", { value: r }, r)));
  });
  repoSelect.value = state.route.repo;
  $("filter-status").value = state.route.status;
  $("filter-trigger").value = state.route.trigger;
  if (document.activeElement !== $("filter-branch")) $("filter-branch").value = state.route.branch;
}

/** Links between a run and the runs that superseded it, retried it, or that it retries. */
function runLinks(run) {
  const out = [];
  if (run.superseded_by != null) out.push(["superseded by ", link({ run: run.superseded_by, stage: null }, {}, `#${run.superseded_by}`)]);
  if (run.retry_of != null) out.push([`attempt ${run.attempt ?? 2}, retry of `, link({ run: run.retry_of, stage: null }, {}, `#${run.retry_of}`)]);
  return out.length ? h("span", { class: "run-links small" }, out.map((x, i) => [i ? " · " : "", x])) : null;
}

const FAILED = new Set(["failed", "gate_failed", "cancelled"]);

function runRow(run) {
  const selected = run.id === state.route.run;
  const select = () => navigate({ run: run.id, stage: null });
  return h("tr", {
    class: selected ? "selected" : null, dataset: { key: String(run.id) },
    onclick: (event) => { if (!event.target.closest("a, button")) select(); },
  },
  h("td", { class: "num" }, link({ run: run.id, stage: null },
    { "aria-current": selected ? "true" : null, "aria-label": `Run ${run.id}`, dataset: { focusKey: `run-${run.id}` } },
    `#${run.id}`)),
  h("td", { class: "change" },
    h("span", { class: "commit-msg" }, run.message ? run.message.split("\n")[0] : h("span", { class: "muted" }, run.trigger === "data" ? "new data" : "(no message)")),
    h("span", { class: "sub" }, run.author ? `${run.author} · ` : "", code(f.shortSha(run.commit), run.commit), " ", chips(run.kinds))),
  h("td", {}, h("span", { class: "repo" }, run.repository ?? "—"), h("span", { class: "sub" }, h("span", { class: "branch" }, f.branchOf(run.ref)))),
  h("td", {}, run.trigger ?? "—"),
  h("td", { class: "status-cell" }, badge(run.status),
    FAILED.has(run.status) && (run.failure || run.reason) ? h("span", { class: "sub failure", title: run.failure || run.reason }, run.failure || run.reason) : null,
    runLinks(run)),
  h("td", {}, time(run.created_at)),
  h("td", { class: "num" }, elapsed(run.started_at, run.finished_at, run.status)));
}

/** Rows keyed by run id: unchanged rows are kept, so focus and hover survive polling. */
function renderRunRows(tbody, runs) {
  const active = document.activeElement;
  const focusKey = active && tbody.contains(active) ? active.dataset.focusKey : undefined;
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const sigs = tbody._sigs || (tbody._sigs = new Map());
  runs.forEach((run, i) => {
    const key = String(run.id);
    const sig = JSON.stringify([run, run.id === state.route.run]);
    let row = existing.get(key);
    if (!row || sigs.get(key) !== sig) {
      const fresh = runRow(run);
      if (row) row.replaceWith(fresh);
      row = fresh;
      sigs.set(key, sig);
    }
    existing.delete(key);
    if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
  });
  for (const [key, row] of existing) { row.remove(); sigs.delete(key); }
  if (focusKey && !tbody.contains(document.activeElement)) {
    [...tbody.querySelectorAll("[data-focus-key]")].find((el) => el.dataset.focusKey === focusKey)?.focus({ preventScroll: true });
  }
}

let revealed = null;

/** Keep the selected run's row visible inside the scrolling runs table (not the page). */
function revealSelectedRun() {
  const wrap = $("runs-wrap");
  const row = $("runs-body").querySelector("tr.selected");
  if (!row) return;
  const top = row.offsetTop - $("runs-table").tHead.offsetHeight;
  if (top < wrap.scrollTop) wrap.scrollTop = top;
  else if (row.offsetTop + row.offsetHeight > wrap.scrollTop + wrap.clientHeight) {
    wrap.scrollTop = row.offsetTop + row.offsetHeight - wrap.clientHeight;
  }
}

function renderRuns() {
  renderRunFilters();
  const filtered = Boolean(state.route.repo || state.route.status || state.route.branch || state.route.trigger);
  renderIfChanged($("runs-error"), state.runsError ? state.runsError.message : "", () =>
    replace($("runs-error"), errorBox(state.runsError, "runs")));
  const runs = state.runs || [];
  $("runs-table").hidden = runs.length === 0;
  $("runs-wrap").hidden = runs.length === 0;
  renderRunRows($("runs-body"), runs);
  const emptyBox = $("runs-empty");
  const none = state.runs !== null && runs.length === 0;
  emptyBox.hidden = !none;
  renderIfChanged(emptyBox, `${none}|${filtered}`, () => replace(emptyBox, none ? (filtered
    ? empty("No runs match these filters.", "Clear the filters to see every run.")
    : empty("No runs yet.", "Push to a registered repository, or drop data into a watched bucket, and the run appears here within seconds."))
    : null));
  $("runs-count").textContent = state.runs === null ? "" : `${runs.length} shown`;
  if (revealed !== state.route.run && $("runs-body").querySelector("tr.selected")) {
    revealed = state.route.run;
    revealSelectedRun();
  }
}

// ---------------------------------------------------------------- needs attention

async function loadAttention() {
  const err = await attempt(async () => {
    const [waiting, failed, gate] = await Promise.all(["awaiting_approval", "failed", "gate_failed"].map((status) =>
      getJSON("runs", { status, limit: status === "awaiting_approval" ? 20 : 5 })));
    const day = Date.now() - 86400e3;
    const retried = new Set((state.runs || []).map((r) => r.retry_of).filter((x) => x != null));
    state.attention = {
      waiting: waiting.runs || [],
      failed: [...(failed.runs || []), ...(gate.runs || [])]
        .filter((r) => (f.parseTime(r.finished_at || r.created_at) ?? 0) > day && r.superseded_by == null && !retried.has(r.id))
        .sort((a, b) => b.id - a.id).slice(0, 5),
    };
  });
  return err;
}

function renderAttention() {
  const a = state.attention || { waiting: [], failed: [] };
  $("attention").hidden = !a.waiting.length && !a.failed.length;
  renderIfChanged($("attention-list"), JSON.stringify(a), () => replace($("attention-list"),
    a.waiting.map((r) => h("li", { class: "att att-approval" },
      h("span", { class: "att-kind" }, "Approval needed"), " ",
      link({ run: r.id, stage: null }, { class: "att-link" }, `Run #${r.id}`), " ",
      h("span", {}, r.repository, " · ", r.approval?.model_version != null ? `${r.approval.model ?? "model"} v${r.approval.model_version}` : f.branchOf(r.ref)),
      " ", h("span", { class: "muted small" }, "waiting since ", time(r.approval?.requested_at || r.created_at)))),
    a.failed.map((r) => h("li", { class: "att att-failed" },
      h("span", { class: "att-kind" }, f.statusLabel(r.status)), " ",
      link({ run: r.id, stage: null }, { class: "att-link" }, `Run #${r.id}`), " ",
      h("span", {}, r.repository, " · ", f.branchOf(r.ref)), " — ",
      h("span", { class: "failure" }, r.failure || r.reason || ""), " ", h("span", { class: "muted small" }, time(r.finished_at || r.created_at))))));
}

// ---------------------------------------------------------------- run detail

/** The stage whose log is shown: the chosen one, else the running or first failing one. */
function currentStage(run) {
  const stages = Array.isArray(run?.stages) ? run.stages : [];
  if (state.route.stage) return stages.find((st) => st.name === state.route.stage) || null;
  return stages.find((st) => st.status === "running")
    || stages.find((st) => st.status === "failed" || st.status === "gate_failed") || null;
}

/** The gate's verdict without its "passed: "/"failed: " lead (the page says that with ✓/✗). */
const verdictText = (verdict) => verdict.replace(/^(passed|failed): /, "");

function gateSummary(run) {
  const evaluate = (run.stages || []).find((st) => st.name === "evaluate");
  const d = evaluate?.detail;
  if (!d || typeof d !== "object" || d.passed === undefined) return null;
  return ["Gate", [h("span", { class: d.passed ? "gate-pass" : "gate-fail" }, d.passed ? "✓ passed" : "✗ failed"),
    typeof d.verdict === "string" ? h("span", { class: "verdict-line" }, verdictText(d.verdict)) : null], "wide"];
}

function renderRunSummary(run) {
  replace($("run-facts"), facts([
    ["Repository", run.repository ?? "—"],
    ["Branch", h("span", { class: "branch" }, f.branchOf(run.ref))],
    ["Commit", code(typeof run.commit === "string" ? run.commit : "—"), "wide"],
    run.before ? ["Compared with", code(f.shortSha(run.before), run.before)] : null,
    ["Trigger", run.trigger ?? "—"],
    ["Kinds", chips(run.kinds)],
    ["Created", time(run.created_at)],
    ["Started", time(run.started_at)],
    ["Finished", time(run.finished_at)],
    ["Duration", elapsed(run.started_at, run.finished_at, run.status)],
    run.model_version != null ? ["Model version", `v${run.model_version}`] : null,
    gateSummary(run),
  ]));
  replace($("run-reason"), run.reason ? [h("span", { class: "label" }, "Reason"), " ", String(run.reason)] : null);
  $("run-reason").hidden = !run.reason;
}

// ---------------------------------------------------------------- approval

/** Approve or reject exactly what the page shows: the request names its commit and model version. */
async function decide(run, action) {
  const status = $("approval-status");
  const a = run.approval || {};
  const body = { comment: $("approval-comment").value.trim() || undefined };
  if (action === "approve") Object.assign(body, { commit: a.commit ?? undefined, model_version: a.model_version ?? undefined });
  status.textContent = `${action === "approve" ? "Approving" : "Rejecting"} as ${session.user()?.name}…`;
  const err = await attempt(async () => { state.run = await session.act(`runs/${run.id}/${action}`, body); });
  status.textContent = err ? `${action} failed: ${err.code} — ${err.message}` : "";
  renderAll();
  refresh();
}

/** Retry or cancel the run shown; a retry opens the new run. */
async function runAction(run, action) {
  const status = $("run-action-status");
  status.textContent = `${action === "retry" ? "Retrying" : "Cancelling"}…`;
  let answer = null;
  const err = await attempt(async () => { answer = await session.act(`runs/${run.id}/${action}`, {}); });
  status.textContent = err ? `${action} failed: ${err.code} — ${err.message}` : "";
  if (!err && action === "retry" && answer?.id != null) navigate({ run: answer.id, stage: null });
  refresh();
}

function renderRunActions(run) {
  const retry = ["failed", "gate_failed", "cancelled"].includes(run.status);
  const cancel = ["queued", "running", "awaiting_approval"].includes(run.status);
  replace($("run-actions"),
    retry && session.may("retry") ? h("button", { id: "retry-btn", type: "button", class: "btn", onclick: () => runAction(run, "retry") }, "Retry") : null,
    cancel && session.may("cancel") ? h("button", { id: "cancel-btn", type: "button", class: "btn btn-reject", onclick: () => runAction(run, "cancel") }, "Cancel run") : null,
    (retry || cancel) && !session.user() ? h("button", { type: "button", class: "btn btn-quiet", onclick: openSignIn }, `Sign in to ${retry ? "retry" : "cancel"}`) : null,
    h("span", { id: "run-action-status", class: "muted small", role: "status", "aria-live": "polite" }));
}

function approvalNames(a) {
  return [code(f.shortSha(a.commit), a.commit),
    a.model_version != null ? [" and ", h("span", { class: "strong" }, `${a.model ?? "model"} v${a.model_version}`),
      a.sha256 ? [" ", h("span", { class: "muted small" }, "sha256 "), code(f.shortSha(a.sha256, 12), a.sha256)] : null] : null];
}

function renderApproval(run) {
  const box = $("approval");
  const a = run.approval;
  box.hidden = !a;
  if (!a) { replace(box); return; }
  if (run.status === "awaiting_approval") {
    replace(box, h("h3", { id: "approval-title" }, "Approval needed"),
      h("p", {}, "Deploying ", ...approvalNames(a),
        a.expires_at ? [" · expires ", h("time", { datetime: a.expires_at }, f.dateTime(a.expires_at))] : null),
      session.may("approve") ? [
        h("label", { for: "approval-comment" }, `Comment (recorded with your decision, ${session.user().name})`),
        h("textarea", { id: "approval-comment", rows: "2", maxlength: "2000" }),
        h("div", { class: "approval-actions" },
          h("button", { id: "approve-btn", class: "btn btn-approve", type: "button", onclick: () => decide(run, "approve") }, "Approve"),
          h("button", { id: "reject-btn", class: "btn btn-reject", type: "button", onclick: () => decide(run, "reject") }, "Reject"))]
        : session.user() ? h("p", { class: "muted" }, `${session.user().name} is a ${session.user().role}: approving needs the approver role.`)
          : h("button", { id: "signin-to-approve", class: "btn btn-primary", type: "button", onclick: openSignIn }, "Sign in to approve or reject"),
      h("p", { id: "approval-status", class: "muted small", role: "status", "aria-live": "polite" }));
    return;
  }
  replace(box, h("h3", { id: "approval-title" }, "Approval"),
    a.decision ? h("p", {}, h("span", { class: "strong" }, String(a.decision)),
      a.by ? ` by ${a.by}` : null, a.at ? [" · ", time(a.at)] : null,
      a.comment ? [": ", h("q", {}, String(a.comment))] : null)
      : h("p", { class: "muted" }, f.statusLabel(a.status)),
    h("p", { class: "small" }, "Names ", ...approvalNames(a)));
}

function renderPipeline(run, chosen) {
  const stages = Array.isArray(run.stages) ? run.stages : [];
  if (!stages.length) {
    replace($("pipeline"), h("li", { class: "muted no-stages" }, "This run has no stages."));
    return;
  }
  replace($("pipeline"), stages.map((st, i) => {
    const selected = chosen && chosen.name === st.name;
    return h("li", { class: `stage ${f.statusClass(st.status)}${selected ? " selected" : ""}` },
      h("button", {
        type: "button", "aria-pressed": selected ? "true" : "false", dataset: { focusKey: `stage-${i}` },
        "aria-label": `Stage ${i + 1}: ${st.name}, ${f.statusLabel(st.status)}. Show its log.`,
        onclick: () => navigate({ stage: st.name }),
      },
      h("span", { class: "stage-name" }, st.name),
      h("span", { class: "stage-meta" }, badge(st.status),
        h("span", { class: "stage-time" }, elapsed(st.started_at, st.finished_at, st.status)))));
  }));
}

function detailValue(value, depth = 0) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value === "boolean") return h("span", { class: value ? "gate-pass" : "gate-fail" }, value ? "yes" : "no");
  if (typeof value === "number") return h("span", { class: "num" }, f.num(value));
  if (typeof value !== "object") return String(value);
  if (depth > 3) return code(JSON.stringify(value));
  if (Array.isArray(value)) {
    if (!value.length) return h("span", { class: "muted" }, "none");
    if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) {
      const cols = [...new Set(value.flatMap((v) => Object.keys(v)))];
      return h("div", { class: "table-wrap" }, h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, value.map((row) => h("tr", {}, cols.map((c) => h("td", {}, detailValue(row[c], depth + 1))))))));
    }
    return h("span", {}, value.map((v, i) => [i ? ", " : "", detailValue(v, depth + 1)]));
  }
  const keys = Object.keys(value);
  if (!keys.length) return h("span", { class: "muted" }, "—");
  return h("dl", { class: "kv" }, keys.map((k) => h("div", {}, h("dt", {}, k), h("dd", {}, detailValue(value[k], depth + 1)))));
}

/** The evaluate stage's verdict and every number the gate compared. */
function gateDetail(d) {
  const checks = Array.isArray(d.checks) ? d.checks : [];
  const metrics = d.metrics && typeof d.metrics === "object" ? Object.entries(d.metrics) : [];
  const prod = d.production?.source === "same_data" && d.production.metrics && typeof d.production.metrics === "object"
    ? d.production.metrics : null;
  return h("div", { class: "gate" },
    h("p", { class: `verdict ${d.passed ? "pass" : "fail"}` },
      h("strong", {}, d.passed ? "✓ Gate passed" : "✗ Gate failed"), " ",
      typeof d.verdict === "string" ? verdictText(d.verdict) : ""),
    h("dl", { class: "facts" }, facts([
      ["Gate metric", d.metric != null ? code(String(d.metric)) : "—"],
      ["Candidate value", detailValue(d.value)],
      ["Production version", d.production_version != null ? `v${d.production_version}` : "none yet"],
      d.production?.source ? ["Production scored", d.production.source === "same_data" ? "on this run's held-out data" : "recorded metrics"] : null,
    ])),
    checks.length ? h("div", { class: "table-wrap" }, h("table", { class: "compact checks" },
      h("caption", {}, "Checks"),
      h("thead", {}, h("tr", {}, ["Check", "Metric", "Candidate", "Production", "Δ", "Threshold", "Result"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, checks.map((c) => h("tr", {},
        h("td", {}, String(c?.check ?? "—")),
        h("td", {}, c?.metric != null ? code(String(c.metric)) : "—"),
        h("td", { class: "num" }, f.num(c?.value)),
        h("td", { class: "num" }, c?.production === undefined ? "—" : f.num(c.production)),
        h("td", { class: "num" }, c?.delta === undefined ? "—" : f.num(c.delta)),
        h("td", { class: "num" }, f.num(c?.threshold)),
        h("td", {}, c?.passed ? h("span", { class: "gate-pass" }, "✓ pass") : h("span", { class: "gate-fail" }, "✗ fail"))))))) : null,
    metrics.length ? h("div", { class: "table-wrap" }, h("table", { class: "compact metrics" },
      h("caption", {}, prod ? "Metrics, both scored on this run's held-out data" : "Candidate metrics"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col" }, prod ? "Candidate" : "Value"),
        prod ? h("th", { scope: "col" }, `Production v${d.production_version}`) : null)),
      h("tbody", {}, metrics.map(([k, v]) => h("tr", { class: k === d.metric ? "hl" : null },
        h("td", {}, k), h("td", { class: "num" }, f.num(v)), prod ? h("td", { class: "num" }, f.num(prod[k])) : null))))) : null);
}

/** The stage's Celery task in Flower (``LOOPLINE_FLOWER_URL``): the id of its last message
 * (store/schedule.py; the first is ``loopline-run<id>-<stage>``). */
function flowerLink(run, stage) {
  const base = document.body.dataset.flowerUrl;
  if (!base || stage.status === "skipped") return null;
  const id = typeof stage.task_id === "string" && stage.task_id ? stage.task_id : `loopline-run${run.id}-${stage.name}`;
  return h("a", { href: `${base}/task/${encodeURIComponent(id)}`, rel: "noopener noreferrer", target: "_blank", id: "flower-link" }, "task in Flower ↗");
}

function renderStagePanel(run, stage) {
  const panel = $("stage-panel");
  panel.hidden = !stage;
  if (!stage) return;
  replace($("stage-title"), "Stage ", h("code", {}, stage.name));
  replace($("stage-meta"), badge(stage.status),
    h("span", {}, "duration ", elapsed(stage.started_at, stage.finished_at, stage.status)),
    stage.exit_code != null ? h("span", {}, "exit code ", code(String(stage.exit_code))) : null,
    stage.started_at ? h("span", {}, "started ", time(stage.started_at)) : null,
    flowerLink(run, stage));
  const d = stage.detail;
  const hasDetail = d && typeof d === "object" && Object.keys(d).length > 0;
  replace($("stage-detail"), hasDetail
    ? (stage.name === "evaluate" && "passed" in d ? gateDetail(d) : h("div", { class: "detail" }, detailValue(d)))
    : null);
  $("stage-detail").hidden = !hasDetail;
}

function renderLog(stage) {
  const pre = $("stage-log");
  const status = $("log-state");
  if (!stage) return;
  if (state.logError) {
    status.textContent = `could not load the log: ${state.logError.message}`;
    status.className = "log-state error-text";
  } else {
    status.className = "log-state";
    status.textContent = stage.status === "running" ? "live — following the worker's output"
      : stage.status === "queued" ? "waiting to start" : "";
  }
  const text = state.log ?? "";
  const shown = text || (stage.status === "queued" ? "(not started yet)" : "(empty log)");
  if (pre.textContent !== shown) {
    const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    pre.textContent = shown;
    pre.classList.toggle("empty-log", !text);
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
}

/** Rows shown at once: a push can change 100,000 files; the API has them all. */
const MAX_FILE_ROWS = 500;

/** Why the run has its kinds: every changed file, its git status, the rule that matched and its kind. */
function renderClassification(run) {
  const c = run.classification;
  const files = c && Array.isArray(c.files) ? c.files : [];
  const counts = new Map();
  for (const file of files) {
    const kind = String(file?.kind ?? "—");
    counts.set(kind, (counts.get(kind) || 0) + 1);
  }
  const shown = files.slice(0, MAX_FILE_ROWS);
  replace($("classification"),
    h("p", { class: "kinds-line" }, h("span", { class: "label" }, "Kinds"), " ", chips(c?.kinds ?? run.kinds)),
    files.length ? h("p", { class: "muted small files-summary" },
      `${files.length} changed file${files.length === 1 ? "" : "s"}: `,
      [...counts].map(([kind, n]) => `${n} ${kind}`).join(", "),
      run.before && run.trigger !== "data" ? [" · compared with ", code(f.shortSha(run.before), run.before)] : null) : null,
    files.length ? h("div", { class: "table-wrap scroll-y" }, h("table", { class: "compact files" },
      h("caption", { class: "sr-only" }, "Changed files and how they were classified"),
      h("thead", {}, h("tr", {}, ["Path", "Status", "Kind", "Rule"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, shown.map((file) => h("tr", {},
        h("td", {}, h("code", { class: "path" }, String(file?.path ?? "—"))),
        h("td", {}, String(file?.status ?? "—")),
        h("td", {}, h("span", { class: "chip" }, String(file?.kind ?? "—"))),
        h("td", {}, file?.rule ? code(String(file.rule)) : h("span", { class: "muted" }, "—")))))))
      : h("p", { class: "muted" }, c ? "No changed files." : "No classification recorded for this run."),
    files.length > shown.length
      ? h("p", { class: "muted small" }, `… and ${files.length - shown.length} more: every file is in `,
        code(`GET /api/runs/${run.id}`))
      : null);
}

function renderRunDetail() {
  const run = state.run;
  const id = state.route.run;
  $("run-detail").hidden = id === null;
  if (id === null) return;
  replace($("run-title"), `Run #${id}`);
  replace($("run-status"), run && run.id === id ? badge(run.status) : null);
  renderIfChanged($("run-error"), state.runError ? state.runError.message : "", () =>
    replace($("run-error"), errorBox(state.runError, `run #${id}`)));
  const body = $("run-body");
  const ready = Boolean(run && run.id === id);
  body.hidden = !ready;
  $("run-loading").hidden = ready || Boolean(state.runError);
  if (!ready) return;
  const stage = currentStage(run);
  const sig = JSON.stringify([run, stage?.name ?? null, location.hash, session.user()]);
  renderIfChanged(body, sig, () => {
    renderRunActions(run);
    renderRunSummary(run);
    renderApproval(run);
    renderPipeline(run, stage);
    renderStagePanel(run, stage);
    renderClassification(run);
  });
  renderLog(stage);
}

// ---------------------------------------------------------------- models, versions, chart, lineage

function selectedModel() {
  const models = state.models || [];
  return models.find((m) => m.name === state.route.model)?.name
    ?? models.find((m) => m.production_version != null)?.name ?? models[0]?.name ?? null;
}

function renderModelPicker() {
  const models = state.models || [];
  const chosen = selectedModel();
  replace($("model-picker"), models.map((m, i) => h("button", {
    type: "button", class: "model-tab", "aria-pressed": m.name === chosen ? "true" : "false",
    dataset: { focusKey: `model-${i}` }, onclick: () => navigate({ model: m.name, metric: null }),
  },
  h("span", { class: "model-name" }, m.name),
  h("span", { class: "model-sub" }, `${m.versions} version${m.versions === 1 ? "" : "s"}`,
    m.production_version != null ? ` · v${m.production_version} in production` : " · not deployed"))));
}

function chosenMetric(keys) {
  if (state.route.metric && keys.includes(state.route.metric)) return state.route.metric;
  return keys.find((k) => k === "accuracy") || keys.find((k) => /acc|f1|auc|score/i.test(k)) || keys[0] || null;
}

function lineageNode(title, cls, ...content) {
  return h("li", { class: `lineage-node ${cls}` }, h("h4", {}, title), ...content);
}

function renderLineage(lin) {
  const dep = lin.deployment || {};
  const mv = lin.model_version;
  const run = lin.run;
  const deliveries = Array.isArray(lin.deliveries) ? lin.deliveries : [];
  const data = mv && mv.data_version && typeof mv.data_version === "object" ? mv.data_version : {};
  const dataFiles = Object.entries(data).filter(([k]) => k !== "_stages");
  const dvcStages = Array.isArray(data._stages) ? data._stages : [];
  const objects = deliveries.flatMap((d) => (Array.isArray(d.event?.objects) ? d.event.objects : []));
  const depHref = typeof dep.url === "string" && /^https?:\/\//i.test(dep.url) ? dep.url : null;
  replace($("serving"), h("ol", { class: "lineage", "aria-label": "Lineage of the serving model" },
    lineageNode("Delivery", "n-delivery", deliveries.length
      ? h("ul", { class: "plain" }, deliveries.map((d) => h("li", {},
        h("span", { class: "strong" }, String(d.provider ?? "?")), " ", String(d.event?.type ?? "event"),
        d.event?.ref ? [" ", h("span", { class: "branch" }, f.branchOf(d.event.ref))] : null,
        h("div", { class: "muted small" }, code(f.shortSha(String(d.delivery_id ?? d.id ?? ""), 18), String(d.delivery_id ?? "")),
          " · ", time(d.received_at)))))
      : h("p", { class: "muted" }, "no delivery recorded (manual run)")),
    lineageNode("Commit", "n-commit",
      h("p", {}, String(mv?.repository ?? run?.repository ?? "—")),
      h("p", {}, h("span", { class: "branch" }, f.branchOf(mv?.ref ?? run?.ref)), " ",
        code(f.shortSha(dep.commit ?? mv?.commit ?? run?.commit), dep.commit ?? mv?.commit ?? run?.commit)),
      dep.commit && mv?.commit && dep.commit !== mv.commit
        ? h("p", { class: "muted small" }, "app release; model trained at ", code(f.shortSha(mv.commit), mv.commit)) : null),
    lineageNode("Data", "n-data",
      dataFiles.length || objects.length ? h("ul", { class: "plain data-list" },
        dataFiles.map(([path, md5]) => h("li", {}, h("code", { class: "path" }, path), " ",
          h("span", { class: "muted" }, "md5 "), code(f.shortSha(String(md5), 10), String(md5)))),
        objects.map((o) => h("li", {}, h("code", { class: "path" }, `${o?.bucket ?? ""}/${o?.key ?? ""}`),
          o?.version ? [" ", h("span", { class: "muted" }, `@${o.version}`)] : null)))
        : h("p", { class: "muted" }, "no data version recorded"),
      dvcStages.length ? h("p", { class: "muted small" }, `DVC stages: ${dvcStages.join(", ")}`) : null),
    lineageNode("Run", "n-run", run
      ? [h("p", {}, link({ run: run.id, stage: null }, {}, `Run #${run.id}`), " ", badge(run.status)),
        h("p", { class: "muted small" }, `${run.trigger ?? ""} · `, time(run.created_at))]
      : h("p", { class: "muted" }, `run #${dep.run_id ?? "?"}`)),
    lineageNode("Model version", "n-model", mv
      ? [h("p", {}, h("span", { class: "strong" }, `${mv.name} v${mv.version}`)),
        h("p", { class: "small" }, h("span", { class: "muted" }, "sha256 "), code(f.shortSha(mv.sha256, 12), mv.sha256)),
        Object.entries(mv.metrics || {}).filter(([, v]) => f.isNumber(v)).slice(0, 3)
          .map(([k, v]) => h("p", { class: "small" }, h("span", { class: "muted" }, `${k} `), f.num(v)))]
      : h("p", {}, `v${dep.version ?? "?"}`)),
    lineageNode("Deployment", "n-deploy",
      h("p", {}, depHref ? h("a", { href: depHref, rel: "noopener noreferrer", target: "_blank" }, depHref)
        : code(String(dep.url ?? "no URL"))),
      h("p", { class: "muted small" }, `${dep.target ?? ""} · ${dep.status ?? ""} · since `, time(dep.created_at)),
      dep.moved ? h("p", { class: "muted small" }, String(dep.moved)) : null)));
}

/** What the release buttons need: the user's rights and a way to act, then refresh. */
const releaseHandlers = {
  allowed: (kind) => session.may(kind),
  signedIn: () => Boolean(session.user()),
  signIn: () => openSignIn(),
  act: (kind, payload, button) => releaseAction(kind, payload, button),
};

async function releaseAction(kind, { version }, button) {
  const name = selectedModel();
  const status = $("release-actions-status");
  const path = kind === "promote" ? `models/${seg(name)}/versions/${seg(version)}/promote` : `models/${seg(name)}/rollback`;
  if (button) button.disabled = true;
  status.textContent = kind === "promote" ? `Promoting v${version}…` : "Rolling back…";
  const err = await attempt(async () => { await session.act(path, {}); });
  status.textContent = err ? `${kind} failed: ${err.code} — ${err.message}`
    : kind === "promote" ? `v${version} promoted by ${session.user()?.name}` : `rolled back by ${session.user()?.name}`;
  refresh();
}

function renderModels() {
  renderIfChanged($("models-error"), state.modelsError ? state.modelsError.message : "", () =>
    replace($("models-error"), errorBox(state.modelsError, "models")));
  const models = state.models;
  const none = models !== null && models.length === 0;
  $("models-empty").hidden = !none;
  $("model-body").hidden = !models || none;
  if (!models || none) return;
  const name = selectedModel();
  renderIfChanged($("model-picker"), JSON.stringify([models, name]), renderModelPicker);
  $("model-heading").textContent = name;
  const tl = state.timeline && state.timeline.name === name ? state.timeline : null;
  const who = JSON.stringify(session.user());

  renderIfChanged($("serving-summary"), JSON.stringify([tl?.versions?.map((v) => [v.version, v.releases, v.approval, v.gate?.passed]), who]),
    () => renderServingSummary($("serving-summary"), tl, releaseHandlers));
  const lSig = JSON.stringify([state.lineage, state.lineageError?.message, state.lineageError?.status, location.hash]);
  renderIfChanged($("serving"), lSig, () => {
    const err = state.lineageError;
    if (err && err.status === 404) {
      replace($("serving"), empty(`${name} is not deployed.`, "Promote a version, or push to a deploy branch, to serve it."));
    } else if (err) {
      replace($("serving"), errorBox(err, "the current deployment"));
    } else if (state.lineage) {
      renderLineage(state.lineage);
    }
  });
  const traffic = state.traffic && state.traffic.name === name ? state.traffic : null;
  renderIfChanged($("traffic"), JSON.stringify(traffic?.releases ?? null), () => renderTraffic($("traffic"), traffic));
  renderIfChanged($("consumers"), JSON.stringify(traffic?.applications ?? null), () => renderConsumers($("consumers"), traffic));
  renderIfChanged($("aliases"), JSON.stringify(state.modelState), () => renderAliases($("aliases"), state.modelState));
  const data = state.data && state.data.name === name ? state.data : null;
  renderIfChanged($("data"), JSON.stringify(data), () => renderData($("data"), data));
  if (!tl) return;
  const keys = metricKeys(tl.versions);
  const metric = chosenMetric(keys);
  const select = $("metric-select");
  renderIfChanged(select, JSON.stringify(keys), () => replace(select, keys.map((k) => h("option", { value: k }, k))));
  select.value = metric ?? "";
  select.disabled = keys.length === 0;
  renderIfChanged($("chart"), JSON.stringify([metric, tl.aliases, tl.versions.map((v) => [v.version, v.metrics, v.gate?.checks])]),
    () => renderMetricChart($("chart"), tl, metric));
  renderIfChanged($("timeline"), JSON.stringify([tl, who]), () => renderTimeline($("timeline"), tl, releaseHandlers));
}

// ---------------------------------------------------------------- loading

async function attempt(fn) {
  try {
    await fn();
    return null;
  } catch (err) {
    return err instanceof ApiError ? err : new ApiError(0, "client_error", String(err?.message || err));
  }
}

async function loadRuns() {
  const err = await attempt(async () => {
    const { repo, status, branch, trigger } = state.route;
    const data = await getJSON("runs", { repo, status, branch, trigger, limit: 100 });
    state.runs = Array.isArray(data.runs) ? data.runs : [];
    for (const r of state.runs) if (typeof r.repository === "string") state.repos.add(r.repository);
  });
  state.runsError = err;
  return err;
}

async function loadRun() {
  const id = state.route.run;
  if (id === null) { state.run = null; state.runError = null; return null; }
  const err = await attempt(async () => { state.run = await getJSON(`runs/${id}`); });
  state.runError = err;
  if (err && err.status === 404) state.run = null;
  const stage = currentStage(state.run);
  if (!state.run || state.run.id !== id || !stage) { state.log = null; state.logKey = null; return err; }
  if (stage.status === "running" || stage.status === "queued") { follow(id, stage.name); return err; }
  const key = `${id}|${stage.name}|${stage.status}|${stage.finished_at}`;
  if (key !== state.logKey) {
    following = null;
    const logErr = await attempt(async () => { state.log = (await getLog(`runs/${id}/stages/${seg(stage.name)}/log`)).text; });
    state.logError = logErr;
    if (!logErr) state.logKey = key;
  }
  return err;
}

let following = null;

/** Follow a running stage's log: a long poll (``?after=<offset>&wait=15``) appends what the
 * worker writes as soon as it writes it, until the stage ends or another is shown. */
async function follow(runId, stageName) {
  const key = `${runId}|${stageName}`;
  if (following === key) return;
  following = key;
  state.log = ""; state.logKey = null; state.logError = null;
  let offset = 0;
  while (following === key) {
    let chunk;
    const err = await attempt(async () => { chunk = await getLog(`runs/${runId}/stages/${seg(stageName)}/log`, { after: offset, wait: 15 }); });
    if (following !== key) return;
    state.logError = err;
    if (err) { renderAll(); await new Promise((r) => setTimeout(r, POLL_MS)); continue; }
    offset = chunk.offset ?? offset;
    state.log = (state.log || "") + chunk.text;
    renderAll();
    const stage = currentStage(state.run);
    if (!stage || stage.name !== stageName || (stage.status !== "running" && stage.status !== "queued" && !chunk.text)) break;
    if (!state.live || document.hidden) await new Promise((r) => setTimeout(r, POLL_MS));
  }
  if (following === key) following = null;
}

async function loadModels() {
  let err = await attempt(async () => {
    const data = await getJSON("models");
    state.models = Array.isArray(data.models) ? data.models : [];
  });
  state.modelsError = err;
  const name = selectedModel();
  if (!name) return err;
  const [tErr, lErr, mErr, trErr, dErr] = await Promise.all([
    attempt(async () => { state.timeline = await getJSON(`models/${seg(name)}/timeline`); }),
    attempt(async () => { state.lineage = await getJSON("deployments/current", { model: name }); }),
    attempt(async () => { state.modelState = await getJSON(`models/${seg(name)}`); }),
    attempt(async () => { state.traffic = await getJSON(`models/${seg(name)}/traffic`, { minutes: $("traffic-range").value }); }),
    attempt(async () => { state.data = await getJSON(`models/${seg(name)}/data`); }),
  ]);
  state.lineageError = lErr;
  if (lErr) state.lineage = null;
  err = err || [tErr, lErr, mErr, trErr, dErr].find((e) => e && e.status !== 404) || null;
  return err;
}

function renderConnection() {
  const el = $("conn");
  el.classList.toggle("offline", state.offline);
  el.classList.toggle("paused", !state.live);
  const when = state.lastOk ? new Date(state.lastOk).toLocaleTimeString() : null;
  el.textContent = state.offline ? "Server unreachable — retrying"
    : !state.live ? `Paused${when ? ` · updated ${when}` : ""}`
      : when ? `Live · updated ${when}` : "Connecting…";
}

function renderAll() {
  // One section failing to render (unexpected data) must not blank the others.
  for (const render of [renderAttention, renderRuns, renderRunDetail, renderModels, renderConnection]) {
    try {
      render();
    } catch (err) {
      console.error(`dashboard: ${render.name} failed`, err);
    }
  }
}

let timer = null;
let inflight = null;
let again = false;

async function refresh() {
  if (inflight) { again = true; return inflight; }
  inflight = (async () => {
    do {
      again = false;
      const errors = await Promise.all([loadRuns(), loadRun(), loadModels(), loadAttention()]);
      state.offline = errors.some((e) => e && e.status === 0 && e.code === "network_error");
      if (!state.offline) state.lastOk = Date.now();
      renderAll();
    } while (again);
  })().finally(() => { inflight = null; });
  return inflight;
}

async function poll() {
  clearTimeout(timer);
  if (state.live && !document.hidden) await refresh();
  if (state.live) timer = setTimeout(poll, POLL_MS);
}

/** Running durations and "n min ago" labels tick without re-rendering anything. */
function tick() {
  const now = Date.now();
  for (const el of document.querySelectorAll("[data-since]")) el.textContent = f.duration(f.seconds(el.dataset.since, null, now));
  for (const el of document.querySelectorAll("[data-ago]")) el.textContent = f.ago(el.dataset.ago, now);
}

function onRoute() {
  const before = state.route;
  state.route = readRoute();
  if (before.run !== state.route.run) { state.run = null; state.runError = null; state.log = null; state.logKey = null; following = null; }
  if (before.stage !== state.route.stage) { state.log = null; state.logKey = null; following = null; }
  if (["repo", "status", "branch", "trigger"].some((k) => before[k] !== state.route[k])) state.runs = null;
  renderAll();
  if (before.run !== state.route.run && state.route.run !== null) {
    $("run-detail").scrollIntoView({ block: "nearest", behavior: "smooth" });
  }
  refresh();
}

// ---------------------------------------------------------------- signing in

function openSignIn() {
  const dialog = $("signin-dialog");
  $("signin-error").textContent = "";
  $("signin-token").value = "";
  if (!dialog.open) dialog.showModal();
  $("signin-token").focus();
}

async function submitSignIn(event) {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  if (!token) return;
  $("signin-submit").disabled = true;
  const err = await attempt(async () => { await session.signIn(token); });
  $("signin-submit").disabled = false;
  if (err) {
    $("signin-error").textContent = err.status === 401 ? "That token is not valid (or its user was removed)."
      : `Could not sign in: ${err.code} — ${err.message}`;
    return;
  }
  $("signin-dialog").close();
}

function renderWho() {
  const me = session.user();
  replace($("who"), me
    ? [h("span", { class: "who-name", id: "who-name" }, me.name, " ", h("span", { class: "role" }, me.role)),
      h("button", { id: "signout-btn", type: "button", class: "btn btn-quiet", onclick: () => session.signOut() }, "Sign out")]
    : h("button", { id: "signin-btn", type: "button", class: "btn btn-primary", onclick: openSignIn }, "Sign in"));
}

function init() {
  state.route = readRoute();
  $("signin-form").addEventListener("submit", submitSignIn);
  $("signin-cancel").addEventListener("click", () => $("signin-dialog").close());
  session.onChange(() => { renderWho(); renderAll(); });
  renderWho();
  $("traffic-range").addEventListener("change", () => refresh());
  $("filter-branch").addEventListener("change", (e) => navigate({ branch: e.target.value.trim(), run: null, stage: null }));
  $("filter-trigger").addEventListener("change", (e) => navigate({ trigger: e.target.value, run: null, stage: null }));
  $("filter-repo").addEventListener("change", (e) => navigate({ repo: e.target.value, run: null, stage: null }));
  $("filter-status").addEventListener("change", (e) => navigate({ status: e.target.value, run: null, stage: null }));
  $("run-filters").addEventListener("submit", (e) => e.preventDefault());
  $("metric-select").addEventListener("change", (e) => navigate({ metric: e.target.value }));
  $("run-close").addEventListener("click", () => navigate({ run: null, stage: null }));
  const toggle = $("live-toggle");
  toggle.addEventListener("click", () => {
    state.live = !state.live;
    toggle.textContent = state.live ? "Pause updates" : "Resume updates";
    renderConnection();
    if (state.live) poll(); else clearTimeout(timer);
  });
  window.addEventListener("hashchange", onRoute);
  document.addEventListener("visibilitychange", () => { if (!document.hidden && state.live) poll(); });
  setInterval(tick, 1000);
  renderAll();
  poll();
}

init();
