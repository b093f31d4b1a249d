// The person page: draws what /people/{id}.json answers; computes nothing of its own.
// The read token is asked once and kept in this tab's sessionStorage; every fetch sends
// it as an Authorization header. The forget token is asked at the confirmation, never kept.
"use strict";

const TOKEN_KEY = "streams.people.token";
const $ = (sel) => document.querySelector(sel);
const SVG_NS = "http://www.w3.org/2000/svg";
const LANE_COLORS = { web: "#1c6dd0", mobile: "#2b8a3e", smartwatch: "#e67700", facebook: "#3b5998",
  instagram: "#c13584", twitter: "#1d9bf0", linkedin: "#0a66c2" };
const state = { id: null, next: null, events: [] };

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) node.setAttribute(k, v);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function banner(text, kind) {
  const b = $("#banner");
  b.textContent = text || "";
  b.className = "banner" + (kind ? " " + kind : "");
  b.hidden = !text;
}

function showAuth() {
  const auth = $("#auth");
  auth.replaceChildren();
  if (token()) {
    const forget = el("button", { type: "button", id: "drop-token" }, "forget token");
    forget.addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showAuth(); });
    auth.append("read token set ", forget);
    $("#token-panel").hidden = true;
  } else {
    auth.append("no token");
    $("#token-panel").hidden = false;
  }
}

async function api(path, options) {
  const headers = { Authorization: "Bearer " + (options && options.token || token() || "") };
  const resp = await fetch(path, { ...(options || {}), headers });
  let body = null;
  try { body = await resp.json(); } catch (_) { body = null; }
  if (resp.status === 401 && !(options && options.token)) {
    sessionStorage.removeItem(TOKEN_KEY);
    showAuth();
  }
  return { status: resp.status, body };
}

function cell(value) { return el("td", {}, value === null || value === undefined ? "—" : String(value)); }
function row(...values) { return el("tr", {}, ...values.map((v) => (v instanceof Node ? v : cell(v)))); }
function fill(sel, rows, empty) {
  const body = $(sel + " tbody");
  body.replaceChildren(...(rows.length ? rows : [row(empty || "none")]));
}
function lane(name) { return el("span", { class: "lane " + (name || "unknown") }, name || "unknown"); }
function statusCell(status) { return el("td", { class: "status " + status }, status); }
function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$|\+00:00$/, "") : "—"; }
function tile(k, v) { return el("div", { class: "tile" }, el("div", { class: "v" }, String(v)), el("div", { class: "k" }, k)); }

async function search(q) {
  banner("");
  const { status, body } = await api("/people/search?q=" + encodeURIComponent(q));
  if (status !== 200) { banner(status === 401 ? "A read token is needed." : (body && body.error) || "search failed"); return; }
  await load(body.followed_from || body.id, body.matched);
}

async function load(id, matched) {
  const { status, body } = await api("/people/" + encodeURIComponent(id) + ".json");
  if (status !== 200) {
    $("#person").hidden = true;
    banner(status === 401 ? "A read token is needed." : (body && body.error) || "could not load");
    return;
  }
  history.replaceState(null, "", "/people?id=" + encodeURIComponent(body.id));
  render(body, matched);
}

function render(p, matched) {
  state.id = p.id;
  $("#person").hidden = false;
  $("#pid").textContent = p.id;
  const followed = $("#followed");
  followed.hidden = p.requested === p.id;
  followed.textContent = p.requested === p.id ? "" : "merged-away id " + p.requested + " → its survivor";
  const url = "/people/" + p.id + ".json";
  $("#json-link").setAttribute("href", url);
  $("#curl").textContent = "curl -H 'Authorization: Bearer $TOKEN' " + location.origin + url;
  const did = p.did;
  $("#facts").replaceChildren(tile("found by", matched || "profile id"), tile("first seen", when(did.first_seen)),
    tile("last seen", when(did.last_seen)), tile("events", did.counts.total), tile("merges", p.identity.merges.length),
    tile("time zone", p.told.timezone || "unknown"));
  renderGraph(p.identity);
  renderTold(p.told);
  renderDid(did);
  state.events = [];
  appendTimeline(p.timeline);
  renderMessages(p.messages);
  $("#forget-id").textContent = p.id;
  $("#forget-panel").hidden = true;
  $("#forget-result").textContent = "";
}

function renderGraph(identity) {
  const svg = $("#graph");
  const d = identity.drawing;
  svg.replaceChildren();
  svg.setAttribute("width", d.width);
  svg.setAttribute("height", d.height);
  svg.setAttribute("viewBox", `0 0 ${d.width} ${d.height}`);
  const pos = {};
  const W = { event: 205, identifier: 190, merge: 190 };  // logic.py spaces columns 205 apart
  for (const n of d.nodes) pos[n.id] = n;
  for (const e of d.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b) continue;
    const x1 = a.x + W.event, y1 = a.y + 15, x2 = b.x, y2 = b.y + 15, mx = (x1 + x2) / 2;
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`);
    path.setAttribute("class", e.status);
    path.dataset.from = e.from;
    path.dataset.to = e.to;
    svg.append(path);
  }
  for (const n of d.nodes) {
    const g = document.createElementNS(SVG_NS, "g");
    g.setAttribute("class", `node ${n.kind} ${n.status || ""}`);
    g.dataset.id = n.id;
    if (n.kind !== "header") {
      const rect = document.createElementNS(SVG_NS, "rect");
      for (const [k, v] of Object.entries({ x: n.x, y: n.y, width: W[n.kind], height: 30, rx: 6 })) rect.setAttribute(k, v);
      g.append(rect);
    }
    const label = document.createElementNS(SVG_NS, "text");
    label.setAttribute("x", n.x + 6);
    label.setAttribute("y", n.kind === "header" ? n.y + 14 : n.y + 13);
    label.setAttribute("class", n.kind === "header" ? "header" : "label");
    label.textContent = n.label.length > 28 ? n.label.slice(0, 27) + "…" : n.label;
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `${n.label} ${n.sub || ""}`.trim();
    g.append(title, label);
    if (n.sub) {
      const sub = document.createElementNS(SVG_NS, "text");
      sub.setAttribute("x", n.x + 6);
      sub.setAttribute("y", n.y + 26);
      sub.setAttribute("class", "sub");
      sub.textContent = n.sub;
      g.append(sub);
    }
    svg.append(g);
  }
  const rows = [];
  for (const group of identity.groups) {
    for (const i of group.identifiers) {
      rows.push(el("tr", { "data-key": i.key }, cell(i.type), el("td", {}, el("code", {}, i.value)),
        statusCell(i.status), cell(i.rule), cell(i.first_event)));
    }
  }
  fill("#identifiers", rows);
  fill("#merges", identity.merges.map((m) => el("tr", { "data-merged": m.merged },
    el("td", {}, el("code", {}, m.merged)), el("td", {}, el("code", {}, m.message_id)), cell(when(m.event_time)), cell(m.rule))),
  "no merges");
}

function pairs(sel, obj) {
  fill(sel, Object.entries(obj).sort().map(([k, v]) => row(k, typeof v === "object" ? JSON.stringify(v) : v)), "nothing told");
}

function renderTold(told) {
  pairs("#traits", told.traits);
  pairs("#preferences", told.preferences);
  fill("#consent", told.consent.map((c) => el("tr", { "data-channel": c.channel }, cell(c.channel),
    el("td", { class: "status " + c.state.replace(" ", "-") }, c.state))));
}

const PLOT_CONFIG = { displayModeBar: false, responsive: true, staticPlot: false };
const PLOT_LAYOUT = { margin: { l: 40, r: 10, t: 8, b: 32 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" };

function renderDid(did) {
  const c = did.counts;
  const tiles = [tile("events", c.total)];
  for (const [k, v] of Object.entries(c.source)) tiles.push(tile(k, v));
  for (const [k, v] of Object.entries(c.channel)) tiles.push(tile(k, v));
  $("#counts").replaceChildren(...tiles);
  $("#hours-caption").textContent = "Active hours (" + did.hours_zone + ")";
  Plotly.react("chart-hours", [{ type: "bar", x: [...Array(24).keys()], y: did.active_hours, marker: { color: "#1c6dd0" } }],
    { ...PLOT_LAYOUT, xaxis: { title: { text: "hour of day" }, dtick: 3 } }, PLOT_CONFIG);
  const aff = [...did.categories.map((a) => ({ n: "category: " + a.name, s: a.score })),
    ...did.items.map((a) => ({ n: "item: " + a.name, s: a.score }))];
  Plotly.react("chart-affinity", [{ type: "bar", orientation: "h", y: aff.map((a) => a.n).reverse(),
    x: aff.map((a) => a.s).reverse(), marker: { color: "#6f42c1" } }],
  { ...PLOT_LAYOUT, margin: { ...PLOT_LAYOUT.margin, l: 160 } }, PLOT_CONFIG);
  $("#recent").replaceChildren(...(did.recently_viewed.length
    ? did.recently_viewed.map((r) => el("li", {}, el("code", {}, r.item), " " + when(r.at))) : [el("li", {}, "nothing viewed")]));
  fill("#devices", did.devices.map((d) => row(d.key, [d.type, d.manufacturer, d.model, d.os].filter(Boolean).join(" "),
    when(d.first) + " → " + when(d.last))), "no devices");
}

function appendTimeline(page) {
  state.events.push(...page.events);
  state.next = page.next;
  const body = $("#timeline tbody");
  if (!state.events.length) body.replaceChildren(row("no events"));
  else if (state.events.length === page.events.length) body.replaceChildren();
  for (const e of page.events) {
    body.append(el("tr", { "data-message-id": e.message_id, "data-lane": e.lane }, cell(when(e.time)),
      el("td", {}, lane(e.lane), e.channel ? " " + e.source : ""), cell(e.kind), cell(e.device),
      cell(e.item ? e.item + (e.category ? " (" + e.category + ")" : "") : null)));
  }
  $("#more").hidden = !state.next;
  const ordered = [...state.events].reverse();
  Plotly.react("chart-journey", [{ type: "scatter", mode: "lines+markers", x: ordered.map((e) => e.time),
    y: ordered.map((e) => e.lane), text: ordered.map((e) => e.kind), line: { color: "#adb5bd", shape: "hv" },
    marker: { size: 9, color: ordered.map((e) => LANE_COLORS[e.lane] || "#868e96") } }],
  { ...PLOT_LAYOUT, margin: { ...PLOT_LAYOUT.margin, l: 90 }, yaxis: { type: "category" } }, PLOT_CONFIG);
}

async function older() {
  if (!state.next || !state.id) return;
  const { status, body } = await api(`/people/${state.id}/timeline.json?before=${encodeURIComponent(state.next)}`);
  if (status === 200) appendTimeline(body);
  else banner((body && body.error) || "could not read older events");
}

function whyCell(why) {
  // The sent message's own summary when there is one, else what triggered the plan.
  const facts = Object.entries(why.facts || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${v}`);
  const line = why.summary || [(why.triggerEvents || []).length ? "after " + why.triggerEvents.join(", ") : "",
    why.originChannel ? "from " + why.originChannel : "", ...facts].filter(Boolean).join(" · ");
  const details = el("details", {}, el("summary", {}, "details"), el("pre", {}, JSON.stringify(why, null, 2)));
  return el("td", { class: "why" }, el("div", {}, line || "—"), details);
}

function renderMessages(m) {
  const counts = Object.entries(m.counts).map(([k, v]) => `${k}: ${v}`).join(" · ");
  $("#message-counts").textContent = m.available ? (counts || "no messages for this person")
    : "the trigger stage's schedule is not in this database";
  fill("#messages", m.messages.map((x) => el("tr", { "data-message-id": x.message_id, "data-status": x.status },
    statusCell(x.status), cell(x.rule), cell(x.channel || (x.planned_channel ? "(" + x.planned_channel + ")" : null)),
    cell(when(x.due_at)), cell(x.reason), whyCell(x.why))), "no messages");
}

async function forget() {
  const forgetToken = $("#forget-token").value.trim();
  const result = $("#forget-result");
  if (!forgetToken) { result.textContent = "A forget token is needed."; return; }
  const { status, body } = await api("/people/" + state.id, { method: "DELETE", token: forgetToken });
  if (status === 200) {
    $("#person").hidden = true;
    banner(`Forgotten: ${body.forgotten.profile_id} (${body.forgotten.identifiers} identifiers, ${body.forgotten.events} events).`, "info");
    history.replaceState(null, "", "/people");
    state.id = null;
  } else {
    result.textContent = status === 403 ? "That token may not forget (it needs the forget scope)."
      : status === 401 ? "That token is not valid." : (body && body.error) || "forget failed";
  }
}

async function openJson(event) {
  event.preventDefault();
  const { status, body } = await api($("#json-link").getAttribute("href"));
  if (status !== 200) { banner((body && body.error) || "could not read JSON"); return; }
  const blob = new Blob([JSON.stringify(body, null, 2)], { type: "application/json" });
  window.open(URL.createObjectURL(blob), "_blank");
}

function start() {
  showAuth();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("#token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("#token").value = "";
    showAuth();
    const q = $("#q").value.trim();
    if (q) search(q);
  });
  $("#search").addEventListener("submit", (e) => { e.preventDefault(); const q = $("#q").value.trim(); if (q) search(q); });
  $("#more").addEventListener("click", older);
  $("#json-link").addEventListener("click", openJson);
  $("#forget-open").addEventListener("click", () => { $("#forget-panel").hidden = false; $("#forget-token").focus(); });
  $("#forget-cancel").addEventListener("click", () => { $("#forget-panel").hidden = true; $("#forget-token").value = ""; });
  $("#forget-confirm").addEventListener("click", forget);
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {  // a link with ?token= (pages accept it): keep it, drop it from the URL
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    history.replaceState(null, "", "/people" + (params.toString() ? "?" + params : ""));
    showAuth();
  }
  const q = params.get("identifier") || params.get("q") || params.get("id");
  if (q) { $("#q").value = q; if (token()) search(q); }
}

start();
