// Small SVG charts for the console: no library, no network. Every function returns an <svg> element.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 1100, H = 250, PAD = { l: 48, r: 16, t: 18, b: 26 };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function frame(label) {
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
    return root;
  }

  function scale(d0, d1, r0, r1) {
    const span = d1 - d0 || 1;
    return (v) => r0 + ((v - d0) / span) * (r1 - r0);
  }

  function niceTime(ms, spanMs) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return spanMs > 36 * 3600e3 ? `${d.getMonth() + 1}/${d.getDate()} ${hm}` : spanMs < 600e3 ? `${hm}:${pad(d.getSeconds())}` : hm;
  }

  function axes(root, x, y, xs, ys, yFormat) {
    const [x0, x1] = xs, [y0, y1] = ys;
    for (let i = 0; i <= 4; i++) {
      const v = y0 + ((y1 - y0) * i) / 4;
      root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
      root.append(svg("text", { x: PAD.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, yFormat(v)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + ((x1 - x0) * i) / 4;
      const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
      root.append(svg("text", { x: x(v), y: H - 6, class: "tick", "text-anchor": anchor }, niceTime(v, x1 - x0)));
    }
  }

  // series: [{name, cls, points: [[ms, value], ...]}]; opts: {yMin, yMax, yFormat, label}
  function line(series, opts = {}) {
    const root = frame(opts.label || "chart");
    const pts = series.flatMap((s) => s.points);
    if (!pts.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, opts.empty || "no data yet"));
      return root;
    }
    let xMin = Math.min(...pts.map((p) => p[0])), xMax = Math.max(...pts.map((p) => p[0]));
    if (xMin === xMax) { xMin -= 30e3; xMax += 30e3; }
    const yMin = opts.yMin ?? Math.min(0, ...pts.map((p) => p[1]));
    const yMax = opts.yMax ?? Math.max(1e-9, ...pts.map((p) => p[1])) * 1.1;
    const x = scale(xMin, xMax, PAD.l, W - PAD.r), y = scale(yMin, yMax, H - PAD.b, PAD.t);
    axes(root, x, y, [xMin, xMax], [yMin, yMax], opts.yFormat || ((v) => v.toFixed(1)));
    series.forEach((s) => {
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
      root.append(svg("path", { d, class: `line ${s.cls || ""}` }));
      s.points.forEach((p) => {
        const dot = svg("circle", { cx: x(p[0]), cy: y(p[1]), r: s.points.length > 40 ? 1.5 : 3.5, class: `dot ${s.cls || ""}` });
        dot.append(svg("title", {}, `${s.name}: ${p[1].toFixed(3)}${p[2] ? " — " + p[2] : ""}`));
        root.append(dot);
      });
    });
    legend(root, series);
    return root;
  }

  function legend(root, series) {
    series.forEach((s, i) => {
      root.append(svg("rect", { x: PAD.l + 8 + i * 130, y: 2, width: 10, height: 10, class: `swatch ${s.cls || ""}` }));
      root.append(svg("text", { x: PAD.l + 22 + i * 130, y: 11, class: "legend" }, s.name));
    });
  }

  // buckets: [{start(ms), negative, neutral, positive, mean_score}], widthMs; alerts: [{id, start, end, label}]
  function sentiment(buckets, widthMs, alerts, onAlert) {
    const root = frame("sentiment over time");
    if (!buckets.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, class: "empty", "text-anchor": "middle" }, "no linked news yet"));
      return root;
    }
    const xMin = Math.min(buckets[0].start, ...alerts.map((a) => a.start));
    const xMax = Math.max(buckets[buckets.length - 1].start + widthMs, ...alerts.map((a) => a.end));
    const yMax = Math.ceil((Math.max(1, ...buckets.map((b) => b.negative + b.neutral + b.positive)) * 1.15) / 4) * 4;
    const x = scale(xMin, xMax, PAD.l, W - PAD.r), y = scale(0, yMax, H - PAD.b, PAD.t);
    axes(root, x, y, [xMin, xMax], [0, yMax], (v) => v.toFixed(0));
    const bw = Math.max(2, x(xMin + widthMs) - x(xMin) - 2);
    buckets.forEach((b) => {
      let base = 0;
      for (const part of ["negative", "neutral", "positive"]) {
        if (!b[part]) continue;
        const bar = svg("rect", { x: x(b.start) + 1, y: y(base + b[part]), width: bw, height: y(base) - y(base + b[part]), class: `bar ${part}` });
        bar.append(svg("title", {}, `${new Date(b.start).toLocaleString()}: ${b[part]} ${part}, mean score ${b.mean_score ?? "–"}`));
        root.append(bar);
        base += b[part];
      }
    });
    // drawn over the bars: anywhere in an alert's window opens it
    alerts.forEach((a) => {
      const band = svg("rect", {
        x: x(a.start), y: PAD.t, width: Math.max(3, x(a.end) - x(a.start)), height: H - PAD.t - PAD.b,
        class: "alert-band", "data-alert": a.id, tabindex: 0,
      });
      band.append(svg("title", {}, a.label));
      band.addEventListener("click", () => onAlert(a.id));
      root.append(band);
      const flag = svg("text", { x: x(a.start) + 3, y: PAD.t + 12, class: "alert-flag", "data-alert": a.id }, `⚠ ${a.short}`);
      flag.addEventListener("click", () => onAlert(a.id));
      root.append(flag);
    });
    legend(root, [{ name: "negative", cls: "negative" }, { name: "neutral", cls: "neutral" }, { name: "positive", cls: "positive" }, { name: "alert window", cls: "alert" }]);
    return root;
  }

  return { line, sentiment };
})();
