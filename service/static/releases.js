// A model at a glance: what serves and from what, its traffic and callers, its aliases, and the
// release timeline (one row per version: trigger, diff, gate against production, approval, trial).
import { lineChart } from "./charts.js";
import { h, replace } from "./dom.js";
import * as f from "./format.js";
import { code, empty, link, time } from "./view.js";

const pct = (v) => (f.isNumber(v) ? `${Number((v * 100).toFixed(2))}%` : "—");
const ms = (v) => (f.isNumber(v) ? `${f.num(Number(v.toFixed(1)))} ms` : "—");
const firstLine = (text) => (typeof text === "string" ? text.split("\n")[0] : "");
const bytes = (n) => (!f.isNumber(n) ? "" : n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} kB` : `${(n / 1048576).toFixed(1)} MB`);

/** Release buttons call ``act(kind, payload)``; ``allowed(kind)`` says whether the user may. */
function actionButton(label, kind, payload, { act, allowed }, cls = "btn") {
  if (!allowed(kind)) return null;
  return h("button", { type: "button", class: cls, dataset: { action: kind, version: String(payload.version ?? "") },
    onclick: (e) => act(kind, payload, e.currentTarget) }, label);
}

// ---------------------------------------------------------------- serving now

export function renderServingSummary(el, tl, handlers) {
  const releases = (tl?.versions || []).flatMap((v) => v.releases.map((r) => ({ ...r, entry: v })));
  const live = releases.filter((r) => ["active", "canary", "standby"].includes(r.status));
  const active = live.find((r) => r.status === "active");
  if (!active) { replace(el); return; }
  const v = active.entry;
  const appOnly = active.commit && v.commit && active.commit !== v.commit;
  const approval = active.approval || v.approval;
  const t = active.telemetry || {};
  const split = live.filter((r) => r.status !== "standby").sort((a, b) => b.traffic_percent - a.traffic_percent);
  const standby = live.find((r) => r.status === "standby");
  const canary = live.find((r) => r.status === "canary");
  replace(el, h("dl", { class: "facts summary" },
    fact("Version", h("span", { class: "strong big" }, `v${v.version}`)),
    fact("Code", [code(f.shortSha(active.commit), active.commit),
      appOnly ? h("span", { class: "muted small" }, " app release · model trained at ", code(f.shortSha(v.commit), v.commit)) : null]),
    fact("Data", dataLine(v)),
    fact(`Against v${v.diff?.from_version ?? "—"}`, gateLine(v.gate)),
    fact("Approved", approval?.decision === "approved" ? [h("span", { class: "strong" }, approval.by ?? "?"), " ", time(approval.at)]
      : h("span", { class: "muted" }, approval ? f.statusLabel(approval.decision || approval.status) : "no approval step")),
    fact("Traffic", split.map((r, i) => [i ? " · " : "", h("span", { class: `traffic-chip ${r.status}` }, `v${r.version} ${r.traffic_percent}%${r.status === "canary" ? " canary" : ""}`)])),
    fact("Requests", [f.num(t.requests ?? 0), h("span", { class: "muted small" }, ` · ${pct(t.error_rate)} errors · p99 ${ms(t.latency_ms?.p99)}`)])),
  h("div", { class: "release-buttons" },
    canary ? actionButton(`Promote canary v${canary.version}`, "promote", { version: canary.version }, handlers, "btn btn-approve") : null,
    canary ? actionButton(`Roll back canary v${canary.version}`, "rollback", { version: canary.version }, handlers, "btn btn-reject")
      : standby ? actionButton(`Roll back to v${standby.version}`, "rollback", { version: standby.version }, handlers, "btn btn-reject") : null,
    !handlers.signedIn() ? h("button", { type: "button", class: "btn btn-quiet", onclick: handlers.signIn }, "Sign in to promote or roll back") : null));
}

function fact(term, value) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, value));
}

function dataLine(v) {
  const ds = v.trigger?.dataset_version;
  const dvc = v.diff?.data || [];
  if (ds != null) return [`dataset v${ds}`, dvc.length ? h("span", { class: "muted small" }, " · changed") : null];
  if (v.trigger?.kind === "data") return `new data: ${(v.trigger.data_files || []).join(", ") || "dropped files"}`;
  return dvc.length ? `${dvc.length} data file(s) changed` : "same data as before";
}

function gateLine(gate) {
  if (!gate || typeof gate !== "object") return h("span", { class: "muted" }, "no gate");
  return [h("span", { class: gate.passed ? "gate-pass" : "gate-fail" }, gate.passed ? "✓ " : "✗ "),
    h("span", { class: "small" }, String(gate.verdict || "").replace(/^(passed|failed): /, ""))];
}

// ---------------------------------------------------------------- traffic and callers

export function renderTraffic(el, traffic) {
  const rels = traffic?.releases || [];
  const withPoints = rels.filter((r) => r.points.length);
  if (!withPoints.length) {
    replace(el, empty("No requests in this window.",
      "Requests to /serve/<model>/… are counted per release; send an X-Loopline-App header to be named below."));
    return;
  }
  const xs = [...new Set(withPoints.flatMap((r) => r.points.map((p) => p.t)))].sort((a, b) => a - b);
  const col = (r, key, scale = 1) => {
    const at = new Map(r.points.map((p) => [p.t, p[key]]));
    return xs.map((x) => (at.has(x) && at.get(x) != null ? at.get(x) * scale : null));
  };
  const label = (r) => `v${r.version} (${r.status}${r.traffic_percent ? ` ${r.traffic_percent}%` : ""})`;
  replace(el, 
    lineChart({ id: "chart-rate", title: "Requests per second", time: true, x: xs, series: withPoints.map((r) => ({ label: label(r), values: col(r, "rate_per_s") })) }),
    lineChart({ id: "chart-latency", title: "Latency p99 (ms)", time: true, x: xs, series: withPoints.map((r) => ({ label: label(r), values: col(r, "p99_ms") })), format: (v) => f.num(Number(v.toFixed(1))) }),
    lineChart({ id: "chart-errors", title: "Error rate (%)", time: true, x: xs, series: withPoints.map((r) => ({ label: label(r), values: col(r, "error_rate", 100) })), format: (v) => `${f.num(Number(v.toFixed(2)))}%` }));
}

export function renderConsumers(el, traffic) {
  const apps = traffic?.applications || [];
  if (!apps.length) { replace(el, h("p", { class: "muted" }, "No calls yet.")); return; }
  const versions = [...new Set(apps.flatMap((a) => Object.keys(a.versions)))].sort((a, b) => Number(b) - Number(a));
  replace(el, h("div", { class: "table-wrap" }, h("table", { class: "compact consumers", id: "consumers-table" },
    h("caption", { class: "sr-only" }, "Requests per calling application and model version"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Application"), versions.map((v) => h("th", { scope: "col", class: "num" }, `v${v}`)),
      h("th", { scope: "col", class: "num" }, "Requests"), h("th", { scope: "col", class: "num" }, "Errors"))),
    h("tbody", {}, apps.map((a) => h("tr", {},
      h("th", { scope: "row" }, a.application === "(none)" ? h("span", { class: "muted" }, "(no X-Loopline-App header)") : a.application),
      versions.map((v) => h("td", { class: "num" }, f.num(a.versions[v] ?? 0))),
      h("td", { class: "num" }, f.num(a.requests)), h("td", { class: "num" }, f.num(a.errors))))))));
}

// ---------------------------------------------------------------- aliases

export function renderAliases(el, modelState) {
  const aliases = modelState?.aliases || {};
  const history = modelState?.history || [];
  replace(el, 
    h("ul", { class: "alias-list" }, Object.entries(aliases).map(([alias, v]) =>
      h("li", {}, h("span", { class: `alias alias-${["candidate", "staging", "production"].includes(alias) ? alias : "other"}` }, alias), " → ",
        v == null ? h("span", { class: "muted" }, "none") : h("strong", {}, `v${v}`)))),
    history.length ? h("div", { class: "table-wrap scroll-y" }, h("table", { class: "compact", id: "alias-history" },
      h("caption", {}, "History (newest first)"),
      h("thead", {}, h("tr", {}, ["When", "Alias", "Move", "By", "Why"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, history.slice(0, 30).map((m) => h("tr", {},
        h("td", {}, time(m.at)), h("td", {}, m.alias),
        h("td", {}, m.from_version != null ? `v${m.from_version} → v${m.to_version}` : `→ v${m.to_version}`),
        h("td", {}, String(m.actor ?? "").replace(/^user:/, "")), h("td", { class: "small" }, m.reason ?? "")))))) : null);
}

// ---------------------------------------------------------------- metric per version

export function metricKeys(versions) {
  const keys = new Set();
  for (const v of versions) for (const [k, value] of Object.entries(v.metrics || {})) if (f.isNumber(value)) keys.add(k);
  return [...keys].sort();
}

export function renderMetricChart(el, tl, metric) {
  const versions = [...(tl?.versions || [])].reverse().filter((v) => f.isNumber(v.metrics?.[metric]));
  if (!metric || !versions.length) { replace(el, empty("No numeric metrics recorded yet.")); return; }
  const prodVersion = tl.aliases?.production;
  const prod = versions.find((v) => v.version === prodVersion);
  const minimum = versions.map((v) => (v.gate?.checks || []).find((c) => c.check === "min" && c.metric === metric)?.threshold).find(f.isNumber);
  replace(el, lineChart({
    id: "chart-metric", title: `${metric} per model version`, xLabel: "model version", x: versions.map((v) => v.version), integerX: true,
    series: [{ label: metric, values: versions.map((v) => v.metrics[metric]) }],
    thresholds: [
      ...(f.isNumber(minimum) ? [{ label: "gate minimum", value: minimum }] : []),
      ...(prod ? [{ label: `production v${prod.version}`, value: prod.metrics[metric], color: "#16803c" }] : []),
    ],
    zero: false,
  }));
}

// ---------------------------------------------------------------- the timeline

export function renderTimeline(el, tl, handlers) {
  const versions = tl?.versions || [];
  if (!versions.length) { replace(el, h("li", { class: "muted" }, "No versions yet.")); return; }
  replace(el, ...versions.map((v) => timelineRow(v, handlers)));
}

function flags(v) {
  const out = [];
  for (const alias of v.aliases) out.push(h("span", { class: `alias alias-${alias}` }, alias));
  for (const r of v.releases) {
    if (r.status === "active") out.push(h("span", { class: "flag serving" }, `serving ${r.traffic_percent}%`));
    if (r.status === "canary") out.push(h("span", { class: "flag canary" }, `canary ${r.traffic_percent}%`));
    if (r.status === "standby") out.push(h("span", { class: "flag" }, "standby"));
  }
  if (!v.deployable && v.branch) out.push(h("span", { class: "flag muted-flag" }, `branch ${v.branch} · not deployable`));
  if (v.gate && v.gate.passed === false) out.push(h("span", { class: "flag bad" }, "gate failed"));
  if (v.approval?.decision === "rejected") out.push(h("span", { class: "flag bad" }, `rejected by ${v.approval.by ?? "?"}`));
  return out;
}

function triggerLine(v) {
  const t = v.trigger || {};
  const sha = code(f.shortSha(v.commit), v.commit);
  const where = v.branch ? [" on ", h("span", { class: "branch" }, v.branch)] : null;
  const run = v.run_id != null ? [" · ", link({ run: v.run_id, stage: null }, {}, `run #${v.run_id}`)] : null;
  if (t.kind === "data") {
    const items = t.objects?.length ? t.objects.map((o) => `${o.key}${o.size ? ` (${bytes(o.size)})` : ""}`) : t.data_files || [];
    return h("p", { class: "trigger" }, h("span", { class: "label" }, "data"), items.length ? items.join(", ") : "new data",
      t.dataset_version != null ? ` → dataset v${t.dataset_version}` : null, " · ", sha, run);
  }
  const message = firstLine(t.message || v.commit_message);
  return h("p", { class: "trigger" }, h("span", { class: "label" }, t.kind || "push"),
    message ? h("span", { class: "commit-msg" }, message) : h("span", { class: "muted" }, "(no commit message)"),
    t.author ? h("span", { class: "muted" }, ` by ${t.author}`) : null, " · ", sha, where, run);
}

function diffLine(v) {
  const d = v.diff;
  if (!d) return h("p", { class: "diff muted small" }, "first version");
  const parts = [
    ...d.params.map((c) => [code(c.key), ` ${f.num(c.from)} → ${f.num(c.to)}`]),
    ...d.data.map((c) => [code(c.key), ` ${f.shortSha(String(c.from ?? "—"), 7)} → ${f.shortSha(String(c.to ?? "—"), 7)}`]),
    d.commit ? ["code ", code(f.shortSha(d.commit.from, 7), d.commit.from), " → ", code(f.shortSha(d.commit.to, 7), d.commit.to)] : null,
  ].filter(Boolean);
  return h("p", { class: "diff small" }, h("span", { class: "label" }, `vs v${d.from_version}`),
    parts.length ? parts.map((p, i) => [i ? " · " : "", p]) : h("span", { class: "muted" }, "same params, data and code"));
}

function metricsTable(v) {
  const g = v.gate && typeof v.gate === "object" ? v.gate : null;
  const metrics = Object.entries(v.metrics || {}).filter(([, x]) => f.isNumber(x));
  if (!metrics.length) return null;
  const prod = g?.production?.metrics || null;
  const checks = new Map((g?.checks || []).map((c) => [`${c.metric}|${c.check}`, c]));
  return h("table", { class: "compact metrics-vs" },
    h("caption", { class: "sr-only" }, `Metrics of v${v.version} against production`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Metric"), h("th", { scope: "col", class: "num" }, `v${v.version}`),
      h("th", { scope: "col", class: "num" }, prod ? `prod v${g.production_version} (same data)` : "production"),
      h("th", { scope: "col", class: "num" }, "Δ"), h("th", { scope: "col" }, "Gate"))),
    h("tbody", {}, metrics.slice(0, 6).map(([k, x]) => {
      const p = prod && f.isNumber(prod[k]) ? prod[k] : null;
      const min = checks.get(`${k}|min`);
      const drop = checks.get(`${k}|max_drop_vs_production`);
      const gate = [min, drop].filter(Boolean);
      return h("tr", { class: k === g?.metric ? "hl" : null }, h("td", {}, k), h("td", { class: "num" }, f.num(x)),
        h("td", { class: "num" }, p == null ? "—" : f.num(p)),
        h("td", { class: `num ${p == null ? "" : x - p >= 0 ? "up" : "down"}` }, p == null ? "—" : `${x - p >= 0 ? "+" : ""}${f.num(Number((x - p).toFixed(4)))}`),
        h("td", { class: "small" }, gate.length ? gate.map((c, i) => [i ? " · " : "",
          h("span", { class: c.passed ? "gate-pass" : "gate-fail" }, c.passed ? "✓" : "✗"),
          ` ≥ ${f.num(c.threshold)}`, h("span", { class: "muted" }, c.check === "min" ? " min" : " vs prod")]) : h("span", { class: "muted" }, "—")));
    })));
}

function approvalLine(v) {
  const a = v.releases.find((r) => r.approval)?.approval || v.approval;
  if (!a) return null;
  if (a.decision) {
    return h("p", { class: "approval-line" }, h("span", { class: "label" }, "approval"),
      h("span", { class: a.decision === "approved" ? "gate-pass" : "gate-fail" }, a.decision), " by ",
      h("strong", {}, a.by ?? "?"), " ", time(a.at), a.comment ? [": ", h("q", {}, a.comment)] : null);
  }
  return h("p", { class: "approval-line" }, h("span", { class: "label" }, "approval"), f.statusLabel(a.status));
}

function trialWords(r) {
  const t = r.trial;
  if (!t) return null;
  if (t.verdict === "promote") return h("p", { class: "verdict pass" }, h("strong", {}, "Canary promoted. "), t.reason || "");
  if (t.verdict === "rollback") return h("p", { class: "verdict fail" }, h("strong", {}, "Canary rolled back. "), t.reason || "");
  return h("p", { class: "verdict" }, h("strong", {}, "Canary on trial: "), `${r.traffic_percent}% of requests; watching…`);
}

function trialCharts(r) {
  const series = r.trial?.series || [];
  if (!series.length) return null;
  const x = series.map((p) => p.t);
  const limits = r.trial.limits || {};
  const pick = (who, key, scale = 1) => series.map((p) => (p[who] && p[who][key] != null ? p[who][key] * scale : null));
  return h("div", { class: "chart-grid trial-charts", dataset: { release: String(r.id) } },
    lineChart({ id: `trial-errors-${r.id}`, title: `Canary trial of v${r.version}: error rate (%)`, xLabel: "seconds into the trial", x, height: 170,
      series: [{ label: `canary v${r.version}`, values: pick("canary", "error_rate", 100), color: "#d9480f" }, { label: "stable", values: pick("stable", "error_rate", 100), color: "#2459d6" }],
      thresholds: f.isNumber(limits.max_error_rate) ? [{ label: "max error rate", value: limits.max_error_rate * 100 }] : [],
      format: (v) => `${f.num(Number(v.toFixed(2)))}%` }),
    lineChart({ id: `trial-p99-${r.id}`, title: `Canary trial of v${r.version}: p99 latency (ms)`, xLabel: "seconds into the trial", x, height: 170,
      series: [{ label: `canary v${r.version}`, values: pick("canary", "p99_ms"), color: "#d9480f" }, { label: "stable", values: pick("stable", "p99_ms"), color: "#2459d6" }],
      thresholds: f.isNumber(limits.max_p99_ms) ? [{ label: "max p99", value: limits.max_p99_ms }] : [],
      format: (v) => f.num(Number(v.toFixed(1))) }));
}

function releaseBlock(v, r, handlers) {
  const appOnly = r.commit && v.commit && r.commit !== v.commit;
  return h("div", { class: "release", dataset: { release: String(r.id) } },
    h("p", { class: "release-head" }, h("span", { class: "strong" }, `Release #${r.id}`), " · ",
      h("span", { class: `rel-status rel-${["active", "canary", "standby", "retired", "failed"].includes(r.status) ? r.status : "other"}` }, r.status),
      r.traffic_percent ? ` · ${r.traffic_percent}% of traffic` : null, " · ", time(r.created_at),
      appOnly ? [" · app code ", code(f.shortSha(r.commit), r.commit)] : null,
      " · ", link({ run: r.run_id, stage: "deploy" }, {}, `deploy of run #${r.run_id}`),
      r.telemetry?.requests ? h("span", { class: "muted small" }, ` · ${f.num(r.telemetry.requests)} requests, ${pct(r.telemetry.error_rate)} errors, p99 ${ms(r.telemetry.latency_ms?.p99)}`) : null),
    trialWords(r), trialCharts(r),
    h("div", { class: "release-buttons" },
      r.status === "canary" ? actionButton("Promote now", "promote", { version: r.version }, handlers, "btn btn-approve") : null,
      r.status === "canary" ? actionButton("Roll back canary", "rollback", { version: r.version }, handlers, "btn btn-reject") : null,
      r.status === "standby" ? actionButton(`Roll back to v${r.version}`, "rollback", { version: r.version }, handlers, "btn btn-reject") : null));
}

function timelineRow(v, handlers) {
  return h("li", { class: "tl-row", id: `version-${v.version}`, dataset: { version: String(v.version) } },
    h("div", { class: "tl-head" }, h("h4", { class: "tl-version" }, `v${v.version}`), flags(v), h("span", { class: "tl-time" }, time(v.created_at))),
    triggerLine(v), diffLine(v),
    h("div", { class: "table-wrap" }, metricsTable(v)),
    v.gate?.verdict ? h("p", { class: "small" }, h("span", { class: "label" }, "gate"), gateLine(v.gate)) : null,
    approvalLine(v),
    v.releases.map((r) => releaseBlock(v, r, handlers)));
}

// ---------------------------------------------------------------- data batches and drift

function renderDatasets(versions) {
  if (!versions.length) return h("p", { class: "muted" }, "Nothing has landed yet: runs train on the repository's own files (dataset version 0).");
  const change = (v) => [["added", "+"], ["replaced", "~"], ["removed", "−"]]
    .filter(([key]) => Array.isArray(v.trigger?.[key]) && v.trigger[key].length)
    .map(([key, sign]) => `${sign}${v.trigger[key].length} ${v.trigger[key].length === 1 ? "file" : "files"}`).join(" ") || "no change";
  return h("div", { class: "table-wrap" }, h("table", { class: "compact", id: "data-versions" },
    h("caption", {}, "Dataset versions (the data ledger), newest first"),
    h("thead", {}, h("tr", {}, ["Version", "Landed", "Files", "Size", "Rows", "Change", "Run"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, versions.map((v) => h("tr", {},
      h("td", {}, h("strong", {}, `v${v.version}`), " ", h("code", { class: "muted", title: `manifest sha256 ${v.manifest_sha256}` }, String(v.manifest_sha256 ?? "").slice(0, 10))),
      h("td", {}, time(v.created_at)),
      h("td", { class: "num" }, f.num(v.files)),
      h("td", { class: "num" }, f.bytes(v.bytes)),
      h("td", { class: "num" }, f.num(v.rows)),
      h("td", {}, `${v.trigger?.kind ?? "data"}: ${change(v)}`),
      h("td", {}, v.run_id ? link({ run: v.run_id }, {}, `#${v.run_id}`) : h("span", { class: "muted" }, "—")))))));
}

export function renderData(el, data) {
  const batches = data?.batches || [];
  const datasets = renderDatasets(Array.isArray(data?.datasets) ? data.datasets : []);
  if (!batches.length) {
    replace(el, datasets, h("p", { class: "muted" }, "No data batches checked yet: files dropped into the data lake are validated and profiled by the validate_data stage."));
    return;
  }
  const latest = batches.flatMap((b) => b.files.map((file) => ({ b, file }))).find(({ file }) => file.drift && Object.keys(file.drift).length);
  let chart = null;
  if (latest) {
    const entries = Object.entries(latest.file.drift).sort((a, b) => b[1] - a[1]).slice(0, 24);
    const limit = latest.b.drift_limit;
    chart = lineChart({
      id: "chart-drift", title: `Drift per feature: ${latest.file.file} (run #${latest.b.run_id}) against the data before it`,
      x: entries.map((_e, i) => i), names: entries.map(([k]) => k), xLabel: "feature", height: 220,
      series: [{ label: "PSI", values: entries.map(([, v]) => v), color: "#7048e8" }],
      thresholds: f.isNumber(limit) ? [{ label: "drift limit", value: limit }] : [],
    });
  }
  replace(el, datasets, chart,
    h("div", { class: "table-wrap" }, h("table", { class: "compact", id: "data-batches" },
      h("caption", {}, "Data batches, newest first"),
      h("thead", {}, h("tr", {}, ["Run", "When", "File", "Rows", "Columns", "Drifted features", "Problems"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, batches.flatMap((b) => b.files.map((file) => h("tr", {},
        h("td", {}, link({ run: b.run_id, stage: "validate_data" }, {}, `#${b.run_id}`)),
        h("td", {}, time(b.created_at)),
        h("td", {}, h("code", { class: "path" }, String(file.file ?? "—"))),
        h("td", { class: "num" }, f.num(file.rows)),
        h("td", { class: "num" }, f.num(file.columns)),
        h("td", {}, file.drifted?.length ? h("span", { class: "gate-fail" }, file.drifted.join(", ")) : h("span", { class: "gate-pass" }, "none")),
        h("td", { class: "small" }, file.problems?.length ? h("span", { class: "failure" }, file.problems.join("; ")) : h("span", { class: "muted" }, "none")))))))));
}
