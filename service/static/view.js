// Shared view helpers: in-page links that keep the URL-hash state, badges, times, facts, errors.
import { ApiError } from "./api.js";
import { h } from "./dom.js";
import * as f from "./format.js";

export function hrefWith(changes) {
  const p = new URLSearchParams(location.hash.slice(1));
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "") p.delete(key);
    else p.set(key, String(value));
  }
  return `#${p.toString()}`;
}

export function navigate(changes) {
  const target = hrefWith(changes);
  if (target !== location.hash && !(target === "#" && !location.hash)) location.hash = target;
}

/** An in-page link that keeps the rest of the state (filters, model) when followed. */
export function link(changes, props, ...children) {
  return h("a", {
    ...props, href: hrefWith(changes),
    onclick: (event) => {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      navigate(changes);
    },
  }, ...children);
}

export const badge = (status) => h("span", { class: `badge ${f.statusClass(status)}` }, f.statusLabel(status));
export const chips = (items) => (Array.isArray(items) && items.length
  ? h("span", { class: "chips" }, items.map((k) => h("span", { class: "chip" }, String(k))))
  : h("span", { class: "muted" }, "—"));
export const code = (text, title) => h("code", { title: title || null }, text);
export const time = (iso) => (f.parseTime(iso) === null ? h("span", { class: "muted" }, "—")
  : h("time", { datetime: iso, title: f.dateTime(iso), dataset: { ago: iso } }, f.ago(iso)));

/** A run's or stage's duration; a running one ticks (see tick()). */
export function elapsed(start, end, status) {
  if (!end && start && (status === "running" || status === "awaiting_approval")) {
    return h("span", { class: "elapsed", dataset: { since: start } }, f.duration(f.seconds(start, null)));
  }
  return h("span", { class: "elapsed" }, f.duration(f.seconds(start, end)));
}

export function errorBox(err, what) {
  if (!err) return null;
  const code_ = err instanceof ApiError ? err.code : "error";
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, `Could not load ${what}`), " ", h("code", {}, code_), " — ", String(err.message || err));
}

export function empty(text, hint) {
  return h("div", { class: "empty" }, h("p", {}, text), hint ? h("p", { class: "muted" }, hint) : null);
}

export function facts(entries) {
  return entries.filter(Boolean).map(([term, value, wide]) =>
    h("div", { class: wide ? "wide" : null }, h("dt", {}, term), h("dd", {}, value)));
}
