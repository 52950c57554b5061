// Herald console: regions that refresh themselves, and line charts drawn as inline SVG. No library, nothing fetched
// but this console's own pages.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2f6fde", "#e0782f", "#2f9e5b", "#b03fa8", "#c2452f", "#6b6b6b", "#1b9aaa", "#8c6d1f"];

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function hhmm(seconds) {
  const d = new Date(seconds * 1000);
  return d.toISOString().slice(11, 19);
}

function drawChart(svg) {
  let data;
  try { data = JSON.parse(svg.dataset.chart); } catch (e) { return; }
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 720, H = 220, L = 48, R = 12, T = 28, B = 26;
  const xs = data.x || [];
  const series = data.series || [];
  if (!xs.length) return;
  let max = 1;
  for (const s of series) for (const v of s.values) max = Math.max(max, v);
  const x0 = xs[0], x1 = xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1;
  const px = (x) => L + (W - L - R) * (x - x0) / (x1 - x0 || 1);
  const py = (y) => H - B - (H - T - B) * y / max;
  for (const frac of [0, 0.5, 1]) {
    const y = py(max * frac);
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, class: "grid"}));
    svg.appendChild(el("text", {x: L - 6, y: y + 4, "text-anchor": "end", class: "axis"}, String(Math.round(max * frac))));
  }
  [[0, "start"], [Math.floor((xs.length - 1) / 2), "middle"], [xs.length - 1, "end"]].forEach(([i, anchor]) => {
    svg.appendChild(el("text", {x: px(xs[i]), y: H - 8, "text-anchor": anchor, class: "axis"}, hhmm(xs[i])));
  });
  svg.appendChild(el("text", {x: L, y: 14, class: "axis"}, data.unit || ""));
  series.forEach((s, n) => {
    const colour = COLOURS[n % COLOURS.length];
    const points = s.values.map((v, i) => `${px(xs[i]).toFixed(1)},${py(v).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", {points, fill: "none", stroke: colour, "stroke-width": 2}));
    const lx = W - R - 170, ly = 14 + 14 * n;
    svg.appendChild(el("rect", {x: lx, y: ly - 9, width: 10, height: 10, fill: colour}));
    svg.appendChild(el("text", {x: lx + 14, y: ly, class: "legend"}, `${s.name}: ${s.values[s.values.length - 1]}`));
  });
}

function drawCharts(root) {
  root.querySelectorAll("svg.chart[data-chart]").forEach(drawChart);
}

function refresh(region) {
  const every = Math.max(0.5, parseFloat(region.dataset.every || "5")) * 1000;
  const until = region.dataset.until;
  const tick = async () => {
    if (until && region.querySelector(until)) return;   // finished: nothing more will change
    try {
      const r = await fetch(region.dataset.src, {credentials: "same-origin", cache: "no-store"});
      if (r.status === 401) { window.location.reload(); return; }   // the session ended: the sign-in page
      if (r.ok) {
        region.innerHTML = await r.text();
        drawCharts(region);
        region.dataset.refreshed = String(Date.now());
      }
    } catch (e) { /* the API restarting: try again next time */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts(document);
  document.querySelectorAll(".refresh[data-src]").forEach(refresh);
  document.querySelectorAll("form[data-confirm]").forEach((f) => f.addEventListener("submit", (ev) => {
    if (!window.confirm(f.dataset.confirm)) ev.preventDefault();
  }));
});
