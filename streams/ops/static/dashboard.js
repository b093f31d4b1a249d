// The /ops dashboard: polls /ops/lag.json and renders it. Charts use Plotly (served by
// our own server from the plotly package, so the page needs no internet). Every value
// from the server goes into the page through textContent, never as HTML.
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const severity = { OK: 0, WARNING: 1, REWIND: 2, STALL: 3, STOP: 4 };
  const opened = new Map();  // group -> whether its partition detail is open (kept across refreshes)
  let lastReport = null;
  let lastFetchOk = null;

  if (token) {
    // Keep the token on the JSON and metrics links, so they open too.
    for (const id of ["json-link", "metrics-link"]) {
      const a = document.getElementById(id);
      a.href = a.getAttribute("href") + "?token=" + encodeURIComponent(token);
    }
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "title") node.title = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmtInt = (v) => (v === null || v === undefined ? "—" : Number(v).toLocaleString("en-US"));
  const fmtRate = (v) => {
    if (v === null || v === undefined) return "—";
    if (v >= 100) return Math.round(v).toLocaleString("en-US") + "/s";
    return v.toFixed(1) + "/s";
  };
  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds <= 0) return "0s";
    if (seconds < 60) return seconds.toFixed(seconds < 10 ? 1 : 0) + "s";
    const s = Math.round(seconds);
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    return m + "m " + String(r).padStart(2, "0") + "s";
  }
  const ago = (iso) => (Date.now() - new Date(iso).getTime()) / 1000;
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });
  const badge = (status) => el("span", { class: "badge s-" + status }, status);

  function renderGroups(report) {
    const box = document.getElementById("groups");
    box.replaceChildren();
    if (!report.groups.length) {
      box.append(el("p", { class: "empty" }, "No consumer groups found."));
      return;
    }
    for (const g of report.groups) {
      const lagging = g.partitions.filter((p) => p.status !== "OK").length;
      const card = el("div", { class: "card s-" + g.status, "data-group": g.group, "data-status": g.status },
        el("div", { class: "top" }, el("span", { class: "name" }, g.group), badge(g.status)),
        el("div", { class: "since" },
          g.status + " since " + clock(g.status_since) + " (" + fmtDuration(ago(g.status_since)) + ")"),
        el("div", { class: "stats" },
          el("div", { class: "stat" }, el("div", { class: "v" }, fmtInt(g.lag)), el("div", { class: "k" }, "lag, messages")),
          el("div", { class: "stat" }, el("div", { class: "v" }, fmtDuration(g.lag_seconds)), el("div", { class: "k" }, "oldest unconsumed")),
          el("div", { class: "stat" }, el("div", { class: "v" }, fmtRate(g.consume_rate)), el("div", { class: "k" }, "consumed"))),
        el("div", { class: "foot" },
          g.state + " · " + g.members + (g.members === 1 ? " member" : " members") + " · " +
          g.partitions.length + " partitions" + (lagging ? " · " + lagging + " not OK" : "")));
      box.append(card);
    }
  }

  function renderFigures(report) {
    const box = document.getElementById("figures");
    box.replaceChildren();
    const dlq = el("div", { class: "tile", "data-figure": "dlq_rate" },
      el("div", { class: "v" }, fmtRate(report.dlq_rate)),
      el("div", { class: "k" }, "Dead letters (" + report.dlq_topic + ")"));
    box.append(dlq);
    for (const f of report.figures) {
      const tile = el("div", { class: "tile" + (f.value === null ? " unavailable" : ""), "data-figure": f.name },
        el("div", { class: "v" }, f.value === null ? "n/a" : fmtInt(f.value)),
        el("div", { class: "k" }, f.label),
        f.value === null ? el("div", { class: "why" }, f.unavailable) : null);
      box.append(tile);
    }
  }

  const sum = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);
  const reasons = (counts) => Object.entries(counts || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([reason, n]) => reason + " " + fmtInt(n)).join(", ");
  const pct = (n, of) => (of ? (100 * n / of).toFixed(1) + "%" : "—");

  function renderTriggers(report) {
    const box = document.getElementById("triggers");
    box.replaceChildren();
    const t = report.triggers || { rules: [], unavailable: "not reported" };
    if (t.unavailable) {
      box.append(el("p", { class: "empty" }, "Trigger figures unavailable: " + t.unavailable));
      return;
    }
    if (!t.rules.length) {
      box.append(el("p", { class: "empty" }, "No trigger rules loaded."));
      return;
    }
    const head = ["Rule", "Scheduled", "Pending", "Sent", "Held out", "Suppressed", "Cancelled",
      "Converted (sent)", "Converted (held out)", "Lift"];
    const table = el("table", { class: "triggers" }, el("thead", {}, el("tr", {},
      ...head.map((h, i) => el("th", { class: i === 0 || i === 5 || i === 6 ? "l" : "" }, h)))));
    const body = el("tbody", {});
    for (const r of t.rules) {
      const suppressed = sum(r.suppressed), cancelled = sum(r.cancelled);
      body.append(el("tr", { "data-rule": r.rule },
        el("td", { class: "l" }, r.rule), el("td", {}, fmtInt(r.scheduled)), el("td", {}, fmtInt(r.pending)),
        el("td", {}, fmtInt(r.sent)), el("td", {}, fmtInt(r.heldOut)),
        el("td", { class: "l", title: reasons(r.suppressed) }, fmtInt(suppressed) + (suppressed ? " (" + reasons(r.suppressed) + ")" : "")),
        el("td", { class: "l", title: reasons(r.cancelled) }, fmtInt(cancelled) + (cancelled ? " (" + reasons(r.cancelled) + ")" : "")),
        el("td", {}, fmtInt(r.convertedSent) + " · " + pct(r.convertedSent, r.sent)),
        el("td", {}, fmtInt(r.convertedHeldOut) + " · " + pct(r.convertedHeldOut, r.heldOut)),
        el("td", {}, r.lift === null ? "—" : (r.lift >= 0 ? "+" : "") + (100 * r.lift).toFixed(1) + " pts")));
    }
    table.append(body);
    box.append(el("div", { class: "panel" }, table));
  }

  function renderPartitions(report) {
    const box = document.getElementById("partitions");
    box.replaceChildren();
    for (const g of report.groups) {
      const rows = [...g.partitions].sort((a, b) =>
        severity[b.status] - severity[a.status] || a.topic.localeCompare(b.topic) || a.partition - b.partition);
      const table = el("table", {},
        el("thead", {}, el("tr", {},
          el("th", { class: "l" }, "Topic"), el("th", {}, "Partition"), el("th", {}, "Committed"),
          el("th", {}, "End"), el("th", {}, "Lag"), el("th", {}, "Oldest unconsumed"),
          el("th", { class: "l" }, "Status"), el("th", { class: "l" }, "Since"), el("th", { class: "l" }, "Consumer"))));
      const body = el("tbody", {});
      for (const p of rows) {
        const cls = p.status === "OK" ? "" : p.status === "WARNING" ? "warn" : "bad";
        body.append(el("tr", { class: cls, "data-status": p.status },
          el("td", { class: "l" }, p.topic), el("td", {}, p.partition),
          el("td", {}, p.committed === null ? "never committed" : fmtInt(p.committed)),
          el("td", {}, fmtInt(p.end)), el("td", {}, fmtInt(p.lag)), el("td", {}, fmtDuration(p.lag_seconds)),
          el("td", { class: "l" }, badge(p.status)),
          el("td", { class: "l" }, clock(p.status_since) + " (" + fmtDuration(ago(p.status_since)) + ")"),
          el("td", { class: "l consumer", title: p.consumer_id || "" },
            p.client_id ? p.client_id + " " + p.host : "no consumer")));
      }
      table.append(body);
      const isOpen = opened.has(g.group) ? opened.get(g.group) : g.status !== "OK";
      const details = el("details", { class: "group" },
        el("summary", {}, el("span", { class: "name" }, g.group), badge(g.status),
          el("span", { class: "muted" }, fmtInt(g.lag) + " behind · " + g.partitions.length + " partitions")),
        table);
      details.open = isOpen;
      details.addEventListener("toggle", () => opened.set(g.group, details.open));
      box.append(details);
    }
  }

  const layout = (yTitle) => ({
    margin: { l: 56, r: 12, t: 6, b: 28 },
    height: 240,
    xaxis: { type: "date", showgrid: false, tickformat: "%H:%M:%S", nticks: 6, tickangle: 0 },
    yaxis: { title: { text: yTitle, font: { size: 11 } }, rangemode: "tozero", gridcolor: "#eef1f4" },
    legend: { orientation: "h", x: 0, y: -0.16, yanchor: "top", font: { size: 11 } },
    showlegend: true,
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    font: { family: "system-ui, sans-serif", size: 12, color: "#1d2430" },
  });
  const config = { displayModeBar: false, responsive: true };

  function traces(times, series) {
    return Object.entries(series).map(([name, values]) => ({
      x: times, y: values, name, type: "scatter", mode: "lines", line: { width: 2 },
      connectgaps: false,
    }));
  }

  function renderCharts(report) {
    if (typeof Plotly === "undefined") return;
    const h = report.history;
    const times = h.at.map((iso) => new Date(iso));
    Plotly.react("chart-lag", traces(times, h.lag), layout("messages"), config);
    Plotly.react("chart-lag-seconds", traces(times, h.lag_seconds), layout("seconds"), config);
    // Topics that had no traffic at all over the history would only crowd the legend.
    const active = Object.fromEntries(Object.entries(h.produce_rate).filter(
      ([, values]) => values.some((v) => v)));
    const produce = Object.keys(active).length ? active : h.produce_rate;
    Plotly.react("chart-produce", traces(times, produce), layout("messages/s"), config);
    Plotly.react("chart-consume", traces(times, h.consume_rate), layout("messages/s"), config);
    const dlq = {};
    dlq[report.dlq_topic] = h.dlq_rate;
    Plotly.react("chart-dlq", traces(times, dlq), layout("messages/s"), config);
  }

  function renderTriggerCharts(report) {
    if (typeof Plotly === "undefined") return;
    const rules = ((report.triggers || {}).rules || []);
    const names = rules.map((r) => r.rule);
    const parts = [["sent", (r) => r.sent], ["held out", (r) => r.heldOut], ["pending", (r) => r.pending],
      ["suppressed", (r) => sum(r.suppressed)], ["cancelled", (r) => sum(r.cancelled)]];
    const bars = parts.map(([name, get]) => ({ x: names, y: rules.map(get), name, type: "bar" }));
    const barLayout = Object.assign(layout("messages"), { barmode: "stack", xaxis: { type: "category" } });
    Plotly.react("chart-triggers", bars, barLayout, config);
    const rate = (n, of) => (of ? 100 * n / of : null);
    const conv = [
      { x: names, y: rules.map((r) => rate(r.convertedSent, r.sent)), name: "sent", type: "bar" },
      { x: names, y: rules.map((r) => rate(r.convertedHeldOut, r.heldOut)), name: "held out", type: "bar" },
    ];
    const convLayout = Object.assign(layout("% converted"), { barmode: "group", xaxis: { type: "category" } });
    Plotly.react("chart-conversions", conv, convLayout, config);
  }

  function renderMeta() {
    const meta = document.getElementById("meta");
    if (!lastReport) return;
    const r = lastReport;
    meta.textContent = "updated " + fmtDuration(ago(r.generated_at)) + " ago · window " +
      fmtDuration(r.window_seconds) + " · sample every " + fmtDuration(r.interval_seconds);
    const banner = document.getElementById("banner");
    let message = null;
    if (lastFetchOk === false) message = "Cannot reach the server; showing the last figures received.";
    else if (r.error) message = r.error;
    else if (ago(r.generated_at) > 3 * r.interval_seconds + 5) message = "The figures are stale: no new sample for " + fmtDuration(ago(r.generated_at)) + ".";
    banner.hidden = !message;
    banner.className = "banner" + (lastFetchOk === false || (r.error && r.error.startsWith("cannot")) ? " error" : "");
    banner.textContent = message || "";
  }

  async function refresh() {
    let delay = 5000;
    try {
      const response = await fetch("/ops/lag.json", { headers, cache: "no-store" });
      if (response.status === 401) throw new Error("unauthorized: open /ops?token=...");
      if (!response.ok) throw new Error("HTTP " + response.status);
      const report = await response.json();
      lastReport = report;
      lastFetchOk = true;
      renderGroups(report);
      renderFigures(report);
      renderTriggers(report);
      renderPartitions(report);
      renderCharts(report);
      renderTriggerCharts(report);
      document.body.dataset.samples = String(report.history.at.length);
      delay = Math.min(10000, Math.max(1000, report.interval_seconds * 1000));
    } catch (err) {
      lastFetchOk = false;
      if (!lastReport) document.getElementById("meta").textContent = String(err.message || err);
    }
    renderMeta();
    setTimeout(refresh, delay);
  }

  setInterval(renderMeta, 1000);
  refresh();
})();
