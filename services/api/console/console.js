// The Sift console: every figure comes from the public HTTP API, called with the signed-in key, so
// the API's scopes and tenants apply. No framework, no build step, nothing fetched from elsewhere.
"use strict";

const KEY = "sift.key";
const POLL_MS = 3000; // one round of requests per open page every few seconds: a bounded cost
const state = { who: null, stop: [] };

// ---- small helpers ---------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
  return node;
}

const $ = (id) => document.getElementById(id);
const can = (scope) => !!state.who && (state.who.scopes.includes(scope) || state.who.scopes.includes("admin"));
const fmt = (n, d = 0) => (n === null || n === undefined || Number.isNaN(n) ? "–" : Number(n).toFixed(d));
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
const q = (params) => {
  const s = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) s.append(k, v);
  const text = s.toString();
  return text ? `?${text}` : "";
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 && path !== "/v1/whoami") signOut("The key is no longer valid; sign in again.");
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function badge(text, cls) {
  return el("span", { class: `badge ${cls || text}` }, text);
}

function notice(root, error) {
  root.append(el("p", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error)));
}

// Run fn now and every POLL_MS while this page is open and the tab is visible.
function poll(fn, ms = POLL_MS) {
  let timer = null, stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try { await fn(); } catch (e) { if (!(e instanceof ApiError)) console.warn(e); }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  state.stop.push(() => { stopped = true; clearTimeout(timer); });
}

function table(headers, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function tile(label, value, extra) {
  return el("div", { class: "tile" }, el("div", { class: "tile-label" }, label), el("div", { class: "tile-value" }, value), extra || "");
}

// ---- sign-in and navigation ------------------------------------------------------------------

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    state.who = await api("GET", "/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw e;
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  state.who = null;
  stopPage();
  showSignIn(message || "");
}

function showSignIn(message) {
  for (const id of ["nav", "who", "signout"]) $(id).hidden = true;
  $("page").replaceChildren();
  $("signin").hidden = false;
  $("signin-error").textContent = message;
  $("key").focus();
}

function showShell() {
  $("signin").hidden = true;
  for (const id of ["nav", "who", "signout"]) $(id).hidden = false;
  $("who").textContent = `tenant ${state.who.tenant} · ${state.who.scopes.join(", ")}`;
  route();
}

function stopPage() {
  state.stop.forEach((f) => f());
  state.stop = [];
}

const PAGES = {};

function route() {
  if (!state.who) return;
  stopPage();
  const name = (location.hash || "#pipeline").slice(1).split("/")[0];
  const page = PAGES[name] ? name : "pipeline";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  const root = el("section", { id: `page-${page}`, class: "page" });
  $("page").replaceChildren(root);
  PAGES[page](root).catch((e) => notice(root, e));
}

// ---- Pipeline --------------------------------------------------------------------------------

PAGES.pipeline = async (root) => {
  const tiles = el("div", { class: "tiles", id: "pipeline-tiles" });
  const rateChart = el("div", { class: "card" });
  const serving = el("div", { class: "card", id: "serving" });
  const kind = el("select", { id: "filter-kind" }, ["", "ticket", "news", "product"].map((k) => el("option", { value: k }, k || "any kind")));
  const status = el("select", { id: "filter-status" }, ["", "queued", "processing", "done", "failed"].map((s) => el("option", { value: s }, s || "any status")));
  const events = el("div", { id: "events" });
  root.append(el("h1", {}, "Pipeline"), tiles, rateChart, serving);
  if (can("ingest")) root.append(ingestForm());
  root.append(el("div", { class: "card" }, el("div", { class: "row" }, el("h2", {}, "Latest events"), kind, status), events));
  const history = [];
  let last = null;
  const refreshEvents = async () => {
    const data = await api("GET", `/v1/events${q({ kind: kind.value, status: status.value, limit: 25 })}`);
    events.replaceChildren(eventsTable(data.events));
  };
  kind.addEventListener("change", refreshEvents);
  status.addEventListener("change", refreshEvents);
  poll(async () => {
    const [snap] = await Promise.all([api("GET", "/v1/pipeline"), refreshEvents()]);
    const now = Date.parse(snap.at);
    const rate = last && now > last.t ? (snap.finished - last.finished) / ((now - last.t) / 1000) : null;
    const batch = last ? delta(snap.batches, last.batches) : null;
    const enc = last ? delta(snap.encode, last.encode) : null;
    last = { t: now, finished: snap.finished, batches: snap.batches, encode: snap.encode };
    if (rate !== null) history.push([now, Math.max(0, rate)]);
    if (history.length > 100) history.shift();
    tiles.replaceChildren(...pipelineTiles(snap, rate, batch, enc));
    rateChart.replaceChildren(el("h2", {}, "Events finished per second"), Charts.line([{ name: "events/s", cls: "a", points: history }], { label: "events per second", empty: "measuring…" }));
    serving.replaceChildren(servingTable(snap));
  });
};

function delta(now, before) {
  const count = now.count - before.count;
  return count > 0 ? (now.sum - before.sum) / count : null;
}

function pipelineTiles(snap, rate, batch, enc) {
  const by = (s) => Object.values(snap.events).reduce((n, k) => n + (k[s] || 0), 0);
  const failed = Object.entries(snap.events).filter(([, k]) => k.failed).map(([kind, k]) => `${kind} ${k.failed}`);
  const mean = (t) => (t.count ? t.sum / t.count : null);
  return [
    tile("events/s", el("span", { id: "rate" }, rate === null ? "…" : fmt(rate, 1))),
    tile("done last minute", fmt(snap.processed_last_minute)),
    tile("queued · processing", `${by("queued")} · ${by("processing")}`),
    tile("done", el("span", { id: "done-count" }, fmt(by("done")))),
    tile("failed", el("span", { id: "failed-count", class: by("failed") ? "bad" : "" }, fmt(by("failed"))), el("div", { class: "tile-sub" }, failed.join(", ") || "none")),
    tile("queue depth", Object.entries(snap.queues).map(([k, v]) => `${k} ${v ?? "?"}`).join(" · ")),
    tile("batch size", fmt(batch ?? mean(snap.batches), 1), el("div", { class: "tile-sub" }, `${fmt(snap.batches.count)} batches`)),
    tile("encode time", `${fmt((enc ?? mean(snap.encode) ?? NaN) * 1000, 0)} ms`, el("div", { class: "tile-sub" }, "per call")),
  ];
}

function servingTable(snap) {
  const rows = snap.serving.length ? snap.serving : snap.active;
  const title = snap.serving.length ? "Models serving (this process)" : "Active versions (registry)";
  return el("div", {}, el("h2", {}, title), rows.length
    ? table(["task", "kind", "version", "encoder"], rows.map((r) => el("tr", {}, el("td", {}, r.task), el("td", {}, r.kind), el("td", { class: "mono" }, r.version), el("td", { class: "mono" }, r.encoder))))
    : el("p", { class: "muted" }, "no model loaded yet"));
}

function predictionsText(e) {
  return Object.entries(e.predictions || {}).filter(([, p]) => p && p.label).map(([task, p]) => `${task}: ${p.label}`).join(" · ");
}

function eventsTable(events) {
  if (!events.length) return el("p", { class: "muted" }, "no events");
  const rows = events.flatMap((e) => {
    const row = el("tr", { "data-event": e.id, "data-status": e.status },
      el("td", { class: "mono" }, e.id), el("td", {}, e.kind), el("td", {}, badge(e.status)),
      el("td", { class: "text" }, e.title ? `${e.title} — ${e.text}` : e.text), el("td", {}, predictionsText(e)),
      el("td", { class: "mono small" }, e.model_version || ""));
    return e.error ? [row, el("tr", { class: "error-row" }, el("td", { colspan: 6, class: "error" }, `error: ${e.error}`))] : [row];
  });
  return table(["id", "kind", "status", "text", "predictions", "model"], rows, { class: "events" });
}

function ingestForm() {
  const kind = el("select", { id: "ingest-kind" }, ["ticket", "news", "product"].map((k) => el("option", { value: k }, k)));
  const text = el("input", { id: "ingest-text", placeholder: "an event's text", required: true });
  const out = el("span", { class: "muted", id: "ingest-result" });
  const form = el("form", { class: "card row", id: "ingest" }, el("h2", {}, "Send an event"), kind, text, el("button", { type: "submit" }, "Send"), out);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("POST", "/v1/events", { events: [{ kind: kind.value, text: text.value }] });
      out.textContent = `accepted ${r.ids.join(", ")}`;
      text.value = "";
    } catch (e) { out.textContent = e.message; }
  });
  return form;
}

// ---- Answers ---------------------------------------------------------------------------------

PAGES.answers = async (root) => {
  const faqs = (await api("GET", "/v1/faqs?limit=1000")).faqs;
  const byId = Object.fromEntries(faqs.map((f) => [f.id, f]));
  const text = el("textarea", { id: "match-text", rows: 2, placeholder: "a customer's question, e.g. my card has not arrived" });
  const result = el("div", { id: "match-result" });
  const tryForm = el("form", { class: "card", id: "match" }, el("h2", {}, "Try a ticket"), text, el("button", { type: "submit" }, "Match"), result);
  tryForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { result.replaceChildren(matchView(await api("POST", "/v1/match", { text: text.value, top_k: 3 }))); } catch (e) { result.replaceChildren(); notice(result, e); }
  });
  const tickets = el("div", { id: "tickets" });
  const search = el("input", { id: "faq-search", type: "search", placeholder: "search questions, answers, paraphrases" });
  const faqList = el("div", { id: "faq-list" });
  root.append(el("h1", {}, "Answers"), tryForm, el("div", { class: "card" }, el("h2", {}, "Recent tickets"), tickets),
    el("div", { class: "card" }, el("div", { class: "row" }, el("h2", {}, `FAQ base (${faqs.length})`), search), faqList));
  const showFaqs = () => {
    const needle = search.value.trim().toLowerCase();
    const hits = faqs.filter((f) => !needle || [f.id, f.question, f.answer, ...f.paraphrases].some((s) => s.toLowerCase().includes(needle)));
    faqList.replaceChildren(table(["id", "question", "answer", "paraphrases"], hits.slice(0, 200).map((f) =>
      el("tr", {}, el("td", { class: "mono" }, f.id), el("td", {}, f.question), el("td", {}, f.answer), el("td", { class: "small" }, f.paraphrases.join(" · "))))));
  };
  search.addEventListener("input", showFaqs);
  showFaqs();
  const data = await api("GET", "/v1/events?kind=ticket&limit=20");
  tickets.replaceChildren(data.events.length ? ticketsTable(data.events, byId, faqs) : el("p", { class: "muted" }, "no tickets yet"));
};

function matchView(m) {
  return el("div", {},
    el("p", {}, "confidence ", el("strong", { id: "match-confidence" }, fmt(m.confidence, 2)), " ", m.abstain ? badge("abstain", "failed") : badge("answer", "done")),
    table(["faq", "question", "answer", "score"], m.matches.map((x) =>
      el("tr", {}, el("td", { class: "mono" }, x.faq_id), el("td", {}, x.question), el("td", {}, x.answer), el("td", {}, fmt(x.score, 3))))));
}

function ticketsTable(events, byId, faqs) {
  const rows = events.map((e) => {
    const actions = el("td", { class: "actions" });
    const suggested = (e.suggestions || []).map((s) => el("div", {}, el("span", { class: "mono" }, s.faq_id), ` ${fmt(s.score, 2)} `,
      byId[s.faq_id] ? el("span", { class: "muted small" }, byId[s.faq_id].question) : ""));
    if (can("label") && e.status === "done") {
      const top = (e.suggestions || [])[0];
      const status = el("span", { class: "muted small" });
      const send = async (label, outcome) => {
        try {
          await api("POST", "/v1/labels", { labels: [{ event_id: e.id, task: "intent", label, outcome }] });
          status.textContent = outcome === "accepted" ? `accepted ${label}` : `corrected to ${label}`;
        } catch (err) { status.textContent = err.message; }
      };
      const pick = el("select", { "aria-label": "correct answer" }, faqs.map((f) => el("option", { value: f.id }, f.id)));
      if (top) actions.append(el("button", { class: "small accept", onclick: () => send(top.faq_id, "accepted") }, "Accept"));
      if (faqs.length) actions.append(pick, el("button", { class: "small correct", onclick: () => send(pick.value, "manual") }, "Correct"));
      actions.append(status);
    }
    return el("tr", { "data-event": e.id }, el("td", { class: "text" }, e.text), el("td", {}, badge(e.status)),
      el("td", {}, suggested.length ? suggested : el("span", { class: "muted" }, "none")), el("td", {}, e.abstain ? badge("abstain", "failed") : e.abstain === false ? badge("answer", "done") : ""), actions);
  });
  return table(["ticket", "status", "suggestions", "", can("label") ? "label" : ""], rows, { class: "tickets" });
}

// ---- Alerts ----------------------------------------------------------------------------------

PAGES.alerts = async (root) => {
  const watched = (await api("GET", "/v1/watchlist")).entities;
  root.append(el("h1", {}, "Alerts"));
  if (!watched.length) return root.append(el("p", { class: "muted" }, "Nothing watched yet: PUT /v1/watchlist/{entity} adds a company."));
  const picker = el("select", { id: "entity" }, watched.map((w) => el("option", { value: w.entity }, `${w.entity} — ${w.name}`)));
  const width = el("select", { id: "width" });
  const chart = el("div", { id: "sentiment-chart" });
  const detail = el("div", { id: "alert-detail" });
  const list = el("div", { id: "alert-list" });
  root.append(el("div", { class: "card" }, el("div", { class: "row" }, el("h2", {}, "Sentiment over time"), picker, width), chart, detail), el("div", { class: "card" }, el("h2", {}, "Alerts"), list));
  const hooks = el("div", { id: "deliveries" });
  if (can("admin")) root.append(el("div", { class: "card" }, el("h2", {}, "Webhook deliveries"), hooks));
  let alerts = [];
  const showAlert = async (id) => {
    const a = alerts.find((x) => x.id === id);
    if (!a) return;
    detail.replaceChildren(el("h3", {}, `Alert ${a.id}: ${a.rule} (${a.severity}, ${a.state})`), el("p", { class: "small mono" }, JSON.stringify(a.figures)));
    const evidence = await Promise.all(a.event_ids.slice(0, 12).map((id) => api("GET", `/v1/events/${encodeURIComponent(id)}`).catch(() => null)));
    detail.append(el("ul", { class: "evidence" }, evidence.filter(Boolean).map((e) =>
      el("li", {}, el("span", { class: "mono" }, e.id), " ", badge(e.predictions.sentiment?.label || "–", e.predictions.sentiment?.label), " ", e.title || "", e.text ? ` — ${e.text}` : ""))));
  };
  const load = async () => {
    const s = await api("GET", `/v1/watchlist/${encodeURIComponent(picker.value)}/sentiment${q({ width_s: width.value, limit: 96 })}`);
    if (!width.options.length) width.replaceChildren(...s.widths_s.map((w) => el("option", { value: w }, w >= 3600 ? `${w / 3600} h buckets` : `${w / 60} min buckets`)));
    alerts = (await api("GET", `/v1/alerts${q({ entity: picker.value, limit: 50 })}`)).alerts;
    const buckets = s.buckets.map((b) => ({ ...b, start: Date.parse(b.start) }));
    const marks = alerts.map((a) => ({ id: a.id, start: Date.parse(a.window_start), end: Date.parse(a.window_end), short: a.rule, label: `${a.rule} (${a.severity}, ${a.state}): click for evidence` }));
    chart.replaceChildren(Charts.sentiment(buckets, s.width_s * 1000, marks, showAlert));
    list.replaceChildren(alertsTable(alerts, showAlert, load));
  };
  picker.addEventListener("change", () => { detail.replaceChildren(); load(); });
  width.addEventListener("change", load);
  await load();
  if (can("admin")) await loadDeliveries(hooks);
};

function alertsTable(alerts, showAlert, reload) {
  if (!alerts.length) return el("p", { class: "muted" }, "no alerts for this company");
  return table(["id", "rule", "severity", "state", "window", "evidence", ""], alerts.map((a) => el("tr", { "data-alert": a.id },
    el("td", {}, a.id), el("td", {}, a.rule), el("td", {}, badge(a.severity)), el("td", {}, badge(a.state)),
    el("td", { class: "small" }, `${when(a.window_start)} → ${when(a.window_end)}`),
    el("td", {}, el("button", { class: "small link evidence-link", onclick: () => showAlert(a.id) }, `${a.event_ids.length} articles`)),
    el("td", {}, can("label") && a.state === "open" ? el("button", { class: "small ack", onclick: async () => { await api("POST", `/v1/alerts/${a.id}/ack`); reload(); } }, "Acknowledge") : ""))));
}

async function loadDeliveries(root) {
  const hooks = (await api("GET", "/v1/webhooks")).webhooks;
  if (!hooks.length) return root.replaceChildren(el("p", { class: "muted" }, "no webhooks: PUT /v1/webhooks/{id} adds one"));
  const parts = await Promise.all(hooks.map(async (h) => {
    const log = (await api("GET", `/v1/webhooks/${encodeURIComponent(h.id)}/deliveries?limit=20`)).deliveries;
    return el("div", {}, el("h3", {}, `${h.id} → `, el("span", { class: "mono" }, h.url)), log.length
      ? table(["alert", "type", "status", "attempts", "HTTP", "error", "delivered"], log.map((d) => el("tr", {},
        el("td", {}, d.alert_id), el("td", {}, d.event_type), el("td", {}, badge(d.status)), el("td", {}, d.attempts),
        el("td", {}, d.last_status ?? "–"), el("td", { class: "small" }, d.last_error || ""), el("td", { class: "small" }, when(d.delivered_at)))))
      : el("p", { class: "muted" }, "no deliveries yet"));
  }));
  root.replaceChildren(...parts);
}

// ---- Feeds -----------------------------------------------------------------------------------

PAGES.feeds = async (root) => {
  const users = (await api("GET", "/v1/users?limit=100")).users;
  const user = el("input", { id: "user", list: "users", placeholder: "user id", value: users[0]?.user_id || "" });
  const kind = el("select", { id: "feed-kind" }, ["", "product", "news"].map((k) => el("option", { value: k }, k || "kind of the latest")));
  const category = el("input", { id: "feed-category", placeholder: "category" });
  const inStock = el("select", { id: "feed-stock" }, el("option", { value: "" }, "in stock or not"), el("option", { value: "true" }, "in stock"));
  const feed = el("div", { id: "feed" });
  const similar = el("div", { id: "similar" });
  const form = el("form", { class: "row" }, user, el("datalist", { id: "users" }, users.map((u) => el("option", { value: u.user_id }, `${u.interactions} interactions`))),
    kind, category, inStock, el("button", { type: "submit" }, "Show feed"));
  root.append(el("h1", {}, "Feeds"), el("div", { class: "card" }, form, feed), el("div", { class: "card" }, el("h2", {}, "Similar items"), similar));
  const filters = () => ({ category: category.value, in_stock: inStock.value });
  const showSimilar = async (item) => {
    const data = await api("GET", `/v1/items/${encodeURIComponent(item)}/similar${q({ limit: 10, ...filters() })}`);
    similar.replaceChildren(el("p", {}, "like ", el("strong", { class: "mono" }, item)), await itemsTable(data.items, showSimilar));
  };
  const show = async () => {
    if (!user.value) return feed.replaceChildren(el("p", { class: "muted" }, "no user has interacted yet"));
    try {
      const data = await api("GET", `/v1/users/${encodeURIComponent(user.value)}/feed${q({ limit: 10, kind: kind.value, ...filters() })}`);
      feed.replaceChildren(el("h2", {}, `Feed of ${user.value}`), await itemsTable(data.items, showSimilar));
    } catch (e) { feed.replaceChildren(); notice(feed, e); }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); show(); });
  await show();
};

async function itemsTable(items, onPick) {
  if (!items.length) return el("p", { class: "muted" }, "no items");
  const events = await Promise.all(items.map((i) => api("GET", `/v1/events/${encodeURIComponent(i.item_id)}`).catch(() => null)));
  return table(["item", "text", "score", "reason"], items.map((i, n) => el("tr", { "data-item": i.item_id },
    el("td", {}, el("button", { class: "link mono", onclick: () => onPick(i.item_id) }, i.item_id)),
    el("td", { class: "text" }, events[n] ? (events[n].title || "") + (events[n].title ? " — " : "") + (events[n].text || "") : ""),
    el("td", {}, fmt(i.score, 3)), el("td", { class: "reason" }, i.reason || ""))), { class: "items" });
}

// ---- Models ----------------------------------------------------------------------------------

PAGES.models = async (root) => {
  const tasks = (await api("GET", "/v1/tasks")).tasks;
  const runs = el("div", { id: "runs" });
  const versions = el("div", { id: "versions" });
  root.append(el("h1", {}, "Models"), versions, el("div", { class: "card" }, el("h2", {}, "Training runs"), runs));
  const load = async () => {
    const models = (await api("GET", "/v1/models")).models;
    versions.replaceChildren(...tasks.map((t) => taskCard(t, models.filter((m) => m.task === t.name), load)));
  };
  await load();
  let seen = "";
  poll(async () => {
    const data = (await api("GET", "/v1/training/runs?limit=20")).runs;
    runs.replaceChildren(runsTable(data));
    const finished = data.filter((r) => r.finished_at).map((r) => r.run_id).join();
    if (seen && finished !== seen) await load(); // a run ended: its version appears above
    seen = finished || " ";
  });
};

function taskCard(task, models, reload) {
  const ordered = [...models].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  const series = ["macro_f1", "accuracy"].map((m, i) => ({ name: m, cls: i ? "b" : "a",
    points: ordered.filter((v) => typeof v.metrics[m] === "number").map((v) => [Date.parse(v.created_at), v.metrics[m], v.version]) }));
  const active = models.find((m) => m.active);
  const card = el("div", { class: "card", "data-task": task.name },
    el("div", { class: "row" }, el("h2", {}, `${task.name} `, el("span", { class: "muted small" }, `(${task.kind})`)),
      el("span", {}, "active: ", el("span", { class: "mono active-version" }, active ? active.version : "zero-shot")),
      can("admin") ? el("button", { class: "small train", onclick: async (ev) => { ev.target.disabled = true; await api("POST", "/v1/training/runs", { task: task.name }); } }, "Train now") : ""));
  if (!models.length) return card.append(el("p", { class: "muted" }, "no trained version yet")), card;
  card.append(Charts.line(series, { yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2), label: `${task.name} metrics by version` }));
  card.append(table(["version", "status", "created", "macro F1", "accuracy", ""], models.map((v) => el("tr", { "data-version": v.version },
    el("td", { class: "mono" }, v.version), el("td", {}, badge(v.status)), el("td", { class: "small" }, when(v.created_at)),
    el("td", {}, fmt(v.metrics.macro_f1, 3)), el("td", {}, fmt(v.metrics.accuracy, 3)),
    el("td", {}, can("admin") && !v.active ? el("button", { class: "small activate", onclick: async () => { await api("POST", `/v1/models/${encodeURIComponent(v.version)}/activate`); reload(); } }, active && Date.parse(v.created_at) < Date.parse(active.created_at) ? "Roll back to this" : "Activate") : "")))));
  return card;
}

function runsTable(runs) {
  if (!runs.length) return el("p", { class: "muted" }, "no runs yet");
  return table(["run", "task", "status", "stage", "progress", "labels", "result", "started"], runs.map((r) => el("tr", { "data-run": r.run_id, "data-status": r.status },
    el("td", { class: "mono small" }, r.run_id.slice(0, 8)), el("td", {}, r.task), el("td", {}, badge(r.status)), el("td", {}, r.stage),
    el("td", {}, el("progress", { max: 1, value: r.progress }), ` ${fmt(r.progress * 100)}%`), el("td", {}, r.label_count),
    el("td", { class: "small" }, r.error || (r.model_version ? `${r.model_version}${r.promoted ? " (promoted)" : ""}` : "")),
    el("td", { class: "small" }, when(r.created_at)))));
}

// ---- start -----------------------------------------------------------------------------------

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    await signIn($("key").value.trim());
    $("key").value = "";
    showShell();
  } catch (e) {
    $("signin-error").textContent = e.status === 401 ? "That key is not valid." : e.status === 403 ? "This key has no read scope." : e.message;
  }
});
$("signout").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);

(async () => {
  if (!sessionStorage.getItem(KEY)) return showSignIn("");
  try {
    state.who = await api("GET", "/v1/whoami");
    showShell();
  } catch (e) {
    signOut("");
  }
})();
