// Formatting helpers: statuses, refs, commits, numbers, times and durations.

export const STATUSES = ["queued", "running", "succeeded", "failed", "skipped", "cancelled",
  "awaiting_approval", "gate_failed"];

const ACTIVE = new Set(["queued", "running", "awaiting_approval"]);
export const isActive = (status) => ACTIVE.has(status);

/** A CSS class for a status; anything unknown maps to a neutral class (never data in a class name). */
export const statusClass = (status) => (STATUSES.includes(status) ? `status-${status}` : "status-unknown");
export const statusLabel = (status) => String(status ?? "unknown").replaceAll("_", " ");

export function branchOf(ref) {
  if (typeof ref !== "string" || !ref) return "—";
  if (ref.startsWith("refs/heads/")) return ref.slice("refs/heads/".length);
  if (ref.startsWith("refs/tags/")) return `tag ${ref.slice("refs/tags/".length)}`;
  return ref;
}

export const shortSha = (value, n = 8) => (typeof value === "string" && value ? value.slice(0, n) : "—");

export function parseTime(iso) {
  if (typeof iso !== "string") return null;
  const t = Date.parse(iso);
  return Number.isFinite(t) ? t : null;
}

export function seconds(startIso, endIso, now = Date.now()) {
  const start = parseTime(startIso);
  if (start === null) return null;
  const end = endIso ? parseTime(endIso) : now;
  return end === null ? null : Math.max(0, (end - start) / 1000);
}

export function duration(secs) {
  if (typeof secs !== "number" || !Number.isFinite(secs)) return "—";
  if (secs < 1) return `${Math.round(secs * 1000)} ms`;
  if (secs < 10) return `${secs.toFixed(1)} s`;
  if (secs < 60) return `${Math.round(secs)} s`;
  const m = Math.floor(secs / 60);
  if (m < 60) return `${m}m ${String(Math.round(secs % 60)).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
}

export function ago(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (t === null) return "—";
  const secs = Math.round((now - t) / 1000);
  if (secs < 5) return "just now";
  if (secs < 60) return `${secs} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return `${Math.floor(secs / 86400)} d ago`;
}

const DATE_FMT = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
export function dateTime(iso) {
  const t = parseTime(iso);
  return t === null ? "—" : DATE_FMT.format(new Date(t));
}

export const isNumber = (v) => typeof v === "number" && Number.isFinite(v);

/** A size in bytes as a person reads it: "812 B", "3.4 MB". */
export function bytes(value) {
  if (!isNumber(value)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = value, i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function num(value) {
  if (!isNumber(value)) return value === null || value === undefined ? "—" : String(value);
  if (Number.isInteger(value)) return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(3);
  return String(Number(value.toPrecision(abs < 1 ? 4 : 6)));
}
