// A small inline-SVG line chart: one numeric metric per model version.
import { s } from "./dom.js";
import { num } from "./format.js";

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
}

let chartSeq = 0;

/**
 * @param {{x: number, y: number}[]} points  versions (x) and values (y), any order
 * @param {{metric: string, production: number|null}} options
 */
export function lineChart(points, { metric, production = null }) {
  const W = 640, H = 260, M = { top: 28, right: 40, bottom: 44, left: 60 };
  const id = `chart-${++chartSeq}`;
  const data = [...points].sort((a, b) => a.x - b.x);
  let lo = Math.min(...data.map((p) => p.y));
  let hi = Math.max(...data.map((p) => p.y));
  if (lo === hi) { const pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
  const step = niceStep(hi - lo, 4);
  lo = Math.floor(lo / step) * step;
  hi = Math.ceil(hi / step) * step;
  const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
  const x = (i) => M.left + (data.length === 1 ? plotW / 2 : (i * plotW) / (data.length - 1));
  const y = (v) => M.top + plotH - ((v - lo) / (hi - lo)) * plotH;

  const grid = [];
  for (let v = lo, i = 0; v <= hi + step / 2 && i < 20; v += step, i++) {
    const value = Number(v.toPrecision(12));
    grid.push(s("line", { class: "grid", x1: M.left, x2: W - M.right, y1: y(value), y2: y(value) }));
    grid.push(s("text", { class: "tick", x: M.left - 8, y: y(value) + 4, "text-anchor": "end" }, num(value)));
  }
  const every = Math.ceil(data.length / 12);
  const xLabels = data.map((p, i) => (i % every === 0 || i === data.length - 1)
    ? s("text", { class: "tick", x: x(i), y: H - M.bottom + 18, "text-anchor": "middle" }, `v${p.x}`) : null);
  const path = data.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ");
  const area = `${path} L${x(data.length - 1).toFixed(1)},${y(lo)} L${x(0).toFixed(1)},${y(lo)} Z`;
  const dots = data.map((p, i) => {
    const prod = p.x === production;
    return s("g", { class: prod ? "point production" : "point" },
      s("title", {}, `v${p.x}: ${metric} = ${num(p.y)}${prod ? " (production)" : ""}`),
      prod ? s("circle", { class: "halo", cx: x(i), cy: y(p.y), r: 9 }) : null,
      s("circle", { cx: x(i), cy: y(p.y), r: prod ? 5.5 : 4 }),
      prod ? s("text", {
        class: "prod-label", x: x(i) + (i === data.length - 1 && data.length > 1 ? 8 : 0), y: y(p.y) - 14,
        "text-anchor": i === data.length - 1 && data.length > 1 ? "end" : "middle",
      }, "production") : null);
  });
  const values = data.map((p) => `v${p.x} ${num(p.y)}`).join(", ");
  return s("svg", {
    class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d`,
    preserveAspectRatio: "xMidYMid meet",
  },
  s("title", { id: `${id}-t` }, `${metric} per model version`),
  s("desc", { id: `${id}-d` }, values),
  grid,
  s("line", { class: "axis", x1: M.left, x2: W - M.right, y1: M.top + plotH, y2: M.top + plotH }),
  s("text", { class: "axis-label", x: M.left + plotW / 2, y: H - 6, "text-anchor": "middle" }, "model version"),
  data.length > 1 ? s("path", { class: "area", d: area }) : null,
  data.length > 1 ? s("path", { class: "line", d: path }) : null,
  xLabels,
  dots);
}
