// Charts: uPlot (vendored from npm: uPlot.esm.js, MIT, see uPlot.LICENSE.txt), sized to their box.
// Each chart also carries its numbers as text (a caption and an sr-only table), for screen
// readers and for people who want the exact values.
import uPlot from "./uPlot.esm.js";
import { h } from "./dom.js";
import { num } from "./format.js";

export const COLORS = ["#2459d6", "#d9480f", "#2f9e44", "#7048e8", "#c2255c", "#0c8599"];
const THRESHOLD = "#b42318";

const alive = new Set();
const observer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const plot = entry.target._plot;
    const width = Math.floor(entry.contentRect.width);
    if (plot && width > 0 && Math.abs(plot.width - width) > 1) plot.setSize({ width, height: plot.height });
  }
});

/** Forget charts whose box left the page (their observers and canvases). */
function sweep() {
  for (const box of alive) {
    if (!box.isConnected) { observer.unobserve(box); box._plot?.destroy(); box._plot = null; alive.delete(box); }
  }
}

/**
 * A line chart.
 * @param {object} o
 * @param {string} o.title  what it shows (the caption)
 * @param {number[]} o.x  x values (epoch seconds when o.time, else plain numbers)
 * @param {{label: string, values: (number|null)[], color?: string, dash?: boolean}[]} o.series
 * @param {{label: string, value: number, color?: string}[]} [o.thresholds]  horizontal lines (limits)
 * @param {boolean} [o.time]  x is a time axis
 * @param {string} [o.xLabel]
 * @param {(v: number) => string} [o.format]  how y values read
 * @param {string} [o.id]  the chart box's id (tests and links find it by that)
 * @param {string[]} [o.names]  a bar chart: x is 0…n-1, labelled with these names
 */
export function lineChart({ title, x, series, thresholds = [], time = false, xLabel = "", format = num, id = null, height = 200, integerX = false, zero = true, names = null }) {
  sweep();
  const box = h("div", { class: "uchart", id, role: "img", "aria-label": title });
  const lines = [
    ...series.map((s, i) => ({ label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: names ? 1 : 2,
      ...(names ? { fill: `${s.color || COLORS[i % COLORS.length]}99`, paths: uPlot.paths.bars({ size: [0.6, 48] }), points: { show: false } } : {}), dash: s.dash ? [6, 4] : undefined, points: { size: 5 }, spanGaps: false, value: (_u, v) => (v == null ? "—" : format(v)) })),
    ...thresholds.map((t) => ({ label: t.label, stroke: t.color || THRESHOLD, width: 1.5, dash: [4, 4], points: { show: false }, value: () => format(t.value) })),
  ];
  const data = [x, ...series.map((s) => s.values), ...thresholds.map((t) => x.map(() => t.value))];
  const opts = {
    width: 600, height,
    scales: { x: names ? { time: false, range: [-0.5, names.length - 0.5] } : { time }, y: { range: (_u, lo, hi) => yRange(lo, hi, thresholds, zero) } },
    axes: [
      { label: xLabel || undefined, stroke: "#5d6877", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e2e6ec" },
        incrs: names ? [1] : integerX ? [1, 2, 5, 10, 20, 50, 100] : undefined,
        values: names ? (_u, ticks) => ticks.map((v) => names[v] ?? "") : time ? undefined : (_u, ticks) => ticks.map((v) => num(v)) },
      { stroke: "#5d6877", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e2e6ec" }, size: 56, values: (_u, ticks) => ticks.map((v) => format(v)) },
    ],
    series: [{ label: time ? "time" : (xLabel || "x"), value: time ? undefined : (_u, v) => (v == null ? "—" : names ? (names[v] ?? "—") : num(v)) }, ...lines],
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
  };
  const figure = h("figure", { class: "chart-figure" }, h("figcaption", { class: "chart-title" }, title), box,
    numbersTable(title, names || x, series, time, format));
  requestAnimationFrame(() => {
    if (!box.isConnected) return;
    opts.width = Math.max(240, Math.floor(box.clientWidth || 600));
    box._plot = new uPlot(opts, data, box);
    alive.add(box);
    observer.observe(box);
  });
  return figure;
}

/** The y range: every value and limit in view, from 0 unless ``zero`` is false (metrics). */
function yRange(lo, hi, thresholds, zero) {
  const values = [lo, hi, ...thresholds.map((t) => t.value)].filter((v) => v != null && Number.isFinite(v));
  if (!values.length) return [0, 1];
  let min = zero ? Math.min(...values, 0) : Math.min(...values), max = Math.max(...values);
  if (max === min) { max += Math.abs(max) * 0.05 || 1; if (!zero) min -= Math.abs(min) * 0.05 || 1; }
  const pad = (max - min) * 0.08;
  return [zero ? min : min - pad, max + pad];
}

function numbersTable(title, x, series, time, format) {
  const label = (v) => (time ? new Date(v * 1000).toLocaleTimeString() : typeof v === "string" ? v : num(v));
  return h("div", { class: "sr-only" }, h("table", {},
    h("caption", {}, `${title}: the numbers`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, time ? "time" : "x"), series.map((s) => h("th", { scope: "col" }, s.label)))),
    h("tbody", {}, x.map((xv, i) => h("tr", {}, h("th", { scope: "row" }, label(xv)),
      series.map((s) => h("td", {}, s.values[i] == null ? "—" : format(s.values[i]))))))));
}
