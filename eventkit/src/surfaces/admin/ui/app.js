// The eventkit console: a page over the admin API. No framework, no network beyond this
// service: every value comes from the JSON and metrics endpoints, with the token the operator
// gives (kept in this tab's session storage only).
"use strict";

const TOKEN_KEY = "eventkit-console-token";
let timer = null;
let previous = null; // the last overview sample, for rates

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    node.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
  }
  return node;
}

function say(text, error) {
  const m = document.getElementById("message");
  m.textContent = text || "";
  m.className = error ? "error" : "";
}

async function api(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* metrics are text */ }
  if (!response.ok) {
    const why = body && body.error ? body.error : text;
    throw new Error(response.status + ": " + why);
  }
  return body;
}

// A request whose refusal keeps its JSON body (the error and the field it names), for the
// pages that show a refusal beside what it refuses (explore.js, operate.js).
async function answer(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  return { status: response.status, ok: response.ok, body: body || {} };
}

// Sums of each metric's samples per group label, from the Prometheus text format.
function metricsByGroup(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith("eventkit_")) continue;
    const m = line.match(/^(eventkit_[a-z_]+)(\{(.*)\})? ([0-9.eE+-]+|NaN)$/);
    if (!m) continue;
    const g = /(?:^|,)group="((?:[^"\\]|\\.)*)"/.exec(m[3] || "");
    const group = g ? g[1] : "";
    out[group] = out[group] || {};
    out[group][m[1]] = (out[group][m[1]] || 0) + Number(m[4]);
  }
  return out;
}

function cell(value, cls) {
  return el("td", { class: cls || (typeof value === "number" ? "num" : "") }, value === null || value === undefined ? "–" : value);
}

async function overview(page) {
  const ready = await fetch("/health/ready").then((r) => r.json());
  const groups = await api("/groups");
  let metrics = {};
  try { metrics = metricsByGroup(await api("/metrics")); } catch (e) { /* metrics off or not readable */ }
  const fleet = await fleetOrNote();
  const now = Date.now();
  const rate = (group, name) => {
    if (!previous || !previous.metrics[group]) return null;
    const dt = (now - previous.at) / 1000;
    return dt > 0 ? Math.max(0, ((metrics[group] || {})[name] || 0) - (previous.metrics[group][name] || 0)) / dt : null;
  };
  const status = el("span", { class: ready.status === "up" ? "up" : "down", "data-testid": "health" }, ready.status === "up" ? "ready" : "not ready");
  page.replaceChildren(
    el("h2", {}, "Overview"),
    el("div", { class: "cards" },
      el("div", { class: "card" }, el("div", {}, "Health"), el("div", { class: "value" }, status)),
      el("div", { class: "card" }, el("div", {}, "Groups"), el("div", { class: "value" }, groups.groups.length))),
    (ready.reasons || []).length ? el("ul", {}, ready.reasons.map((r) => el("li", { class: "down" }, r))) : "",
    el("table", { "data-testid": "overview" },
      el("tr", {}, ["group", "handled", "handled/s", "failed/s", "dead-lettered/s", "lag", "in flight", "partitions", "held"].map((h) => el("th", {}, h))),
      groups.groups.map((g) => {
        const m = metrics[g.group] || {};
        const lag = g.partitions.reduce((sum, p) => sum + (p.lag || 0), 0);
        const fix = (v) => (v === null ? null : Number(v.toFixed(1)));
        return el("tr", { "data-group": g.group },
          cell(g.group),
          el("td", { class: "num", "data-testid": "handled" }, m.eventkit_records_handled_total || 0),
          cell(fix(rate(g.group, "eventkit_records_handled_total"))),
          cell(fix(rate(g.group, "eventkit_records_failed_total"))),
          cell(fix(rate(g.group, "eventkit_records_dead_lettered_total"))),
          cell(lag),
          cell(g.in_flight),
          cell(g.partitions.length),
          cell(g.partitions.filter((p) => p.held).length));
      })),
    fleetTable(fleet));
  previous = { at: now, metrics };
}

// The fleet, or (where /fleet is not readable: a deployment that opened only some endpoints)
// this page without it, saying why.
async function fleetOrNote() {
  try {
    return await api("/fleet");
  } catch (e) {
    return { instances: [], interval_s: 0, stale_after_s: 0, note: "the fleet is not shown: " + e.message };
  }
}

// Every instance of the service, from their status reports (GET /fleet).
function fleetTable(fleet) {
  const count = (i, f) => (i.groups || []).reduce((sum, g) => sum + f(g), 0);
  return el("div", {},
    el("h3", {}, "Fleet ", el("small", {}, fleet.instances.length + " instance(s); a report every " + fleet.interval_s + " s, not reporting after " + fleet.stale_after_s + " s")),
    fleet.note ? el("p", { class: "down", "data-testid": "fleet-note" }, fleet.note) : "",
    el("table", { "data-testid": "fleet" },
      el("tr", {}, ["instance", "state", "last report", "ready", "groups", "partitions", "in flight", "held", "errors"].map((h) => el("th", {}, h))),
      fleet.instances.map((i) => {
        const errors = (i.groups || []).filter((g) => g.stopped).map((g) => g.group + ": " + g.stopped);
        return el("tr", { "data-instance": i.instance },
          cell(i.instance + (i.this ? " (this one)" : "")),
          el("td", { "data-testid": "instance-state", class: i.state === "up" ? "up" : i.state === "stopped" ? "" : "down" }, i.state),
          cell(i.this ? "now" : Math.round(i.age_s) + " s ago"),
          cell(i.stopped ? "–" : i.ready ? "yes" : "no"),
          cell((i.groups || []).length),
          el("td", { class: "num", "data-testid": "instance-partitions" }, count(i, (g) => (g.partitions || []).length)),
          cell(count(i, (g) => g.in_flight || 0)),
          cell(count(i, (g) => (g.partitions || []).filter((p) => p.held).length)),
          el("td", { class: errors.length ? "down" : "" }, errors.join("; ")));
      })));
}

// One group's members across the fleet: which instance has which partitions.
function groupInstances(fleet, group) {
  const rows = [];
  for (const i of fleet.instances) {
    for (const g of i.groups || []) {
      if (g.group !== group) continue;
      const parts = (g.partitions || []).map((p) => p.topic + "[" + p.partition + "]" + (p.held ? " paused" : ""));
      rows.push(el("tr", { "data-instance": i.instance },
        cell(i.instance + (i.this ? " (this one)" : "")),
        el("td", { class: i.state === "up" ? "up" : "down" }, i.state),
        el("td", { "data-testid": "instance-partitions" }, parts.join(", ") || "none"),
        cell(g.in_flight || 0),
        cell(g.stopped || "")));
    }
  }
  return el("table", { "data-testid": "group-instances" },
    el("tr", {}, ["instance", "state", "partitions", "in flight", "error"].map((h) => el("th", {}, h))),
    rows);
}

async function hold(action, body) {
  try {
    const answer = await api("/groups/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ by: "console" }, body)),
    });
    say(action + (answer.changed ? " applied" : ": nothing to change") + " (" + body.group + (body.topic ? " " + body.topic : "") + (body.partition !== undefined ? "[" + body.partition + "]" : "") + ")");
  } catch (e) {
    say(action + " failed: " + e.message, true);
  }
  await render();
}

async function groupsPage(page) {
  const groups = await api("/groups");
  const fleet = await fleetOrNote();
  page.replaceChildren(el("h2", {}, "Consumer groups"), ...groups.groups.map((g) => {
    const members = Array.isArray(g.members) ? g.members : [];
    return el("div", { "data-group": g.group },
      el("h3", {}, g.group, " ", el("small", {}, (g.state || "") + " · " + members.length + " member(s)")),
      el("div", {},
        el("button", { "data-testid": "pause-group", onclick: () => hold("pause", { group: g.group }) }, "Pause group"), " ",
        el("button", { "data-testid": "resume-group", onclick: () => hold("resume", { group: g.group }) }, "Resume group")),
      typeof groupControls === "function" ? groupControls(g) : "",
      el("h4", {}, "Instances (the fleet)"),
      groupInstances(fleet, g.group),
      el("h4", {}, "Partitions of this instance"),
      (g.holds || []).length ? el("p", { class: "held" }, "Paused: " + g.holds.map((h) => (h.topic ? h.topic + (h.partition !== undefined ? "[" + h.partition + "]" : "") : "the whole group") + " by " + h.by + " at " + h.at).join("; ")) : "",
      el("table", {},
        el("tr", {}, ["topic", "partition", "position", "committed", "end", "lag", "in flight", "state", "waiting on", ""].map((h) => el("th", {}, h))),
        g.partitions.map((p) => el("tr", { "data-partition": p.topic + ":" + p.partition },
          cell(p.topic), cell(p.partition), cell(p.position), cell(p.committed), cell(p.high_watermark), cell(p.lag), cell(p.in_flight),
          el("td", { "data-testid": "state", class: p.held ? "held" : "" }, p.held ? "paused by operator" : p.paused ? "paused (backpressure)" : "running"),
          cell(p.waiting_on === null ? null : p.waiting_on + " for " + Math.round(p.waiting_for_s) + " s"),
          el("td", {}, p.held
            ? el("button", { "data-testid": "resume", onclick: () => hold("resume", { group: g.group, topic: p.topic, partition: p.partition }) }, "Resume")
            : el("button", { "data-testid": "pause", onclick: () => hold("pause", { group: g.group, topic: p.topic, partition: p.partition }) }, "Pause"))))));
  }));
}

async function topologyPage(page) {
  const t = await api("/topology");
  const events = t.events || [];
  const groups = t.groups || [];
  page.replaceChildren(
    el("h2", {}, "Topology"),
    el("h3", {}, "Events"),
    el("table", { "data-testid": "events" },
      el("tr", {}, ["type", "topic", "key", "version", "format"].map((h) => el("th", {}, h))),
      events.map((e) => el("tr", {}, cell(e.event_type || e.type), cell(e.topic), cell(e.key), cell(e.version), cell(e.format)))),
    el("h3", {}, "Groups and handlers"),
    el("table", { "data-testid": "handlers" },
      el("tr", {}, ["group", "topics", "handlers"].map((h) => el("th", {}, h))),
      groups.map((g) => el("tr", {}, cell(g.group), cell((g.topics || []).join(", ")), cell((g.handlers || []).map((h) => h.name || h.handler || JSON.stringify(h)).join(", "))))),
    await asyncapiSection());
}

// The AsyncAPI document, readable: channels, operations, and each message's fields.
async function asyncapiSection() {
  let doc;
  try {
    doc = await api("/asyncapi.json");
  } catch (e) {
    return el("p", { "data-testid": "asyncapi" }, "AsyncAPI: " + e.message);
  }
  const resolve = (node) => {
    for (let i = 0; node && node.$ref && i < 8; i++) {
      node = node.$ref.replace(/^#\//, "").split("/").reduce((at, part) => (at ? at[part.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), doc);
    }
    return node || {};
  };
  const typeOf = (schema) => {
    if (!schema) return "";
    if (schema.$ref) return schema.$ref.split("/").pop();
    const t = Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || (schema.anyOf || schema.oneOf ? "one of " + (schema.anyOf || schema.oneOf).map(typeOf).join(" | ") : "");
    if (t === "array") return "array of " + typeOf(schema.items);
    return t + (schema.format ? " (" + schema.format + ")" : "") + (schema.enum ? ": " + schema.enum.join(", ") : "");
  };
  // The event's own fields, under whatever envelope the wire format puts around them.
  const dataOf = (payload) => {
    payload = resolve(payload);
    const props = payload.properties || {};
    if (props.data && props.specversion) return resolve(props.data);
    if (props.payload && props.metadata) return resolve(props.payload);
    return payload;
  };
  const address = (ref) => resolve(ref).address || "";
  const channels = Object.values(doc.channels || {});
  const operations = Object.entries(doc.operations || {});
  const messages = Object.entries((doc.components || {}).messages || {});
  return el("div", { "data-testid": "asyncapi" },
    el("h3", {}, "AsyncAPI ", el("small", {}, (doc.info || {}).title + " · AsyncAPI " + doc.asyncapi + " · ", el("a", { href: "/asyncapi.json" }, "JSON"))),
    el("h4", {}, "Channels"),
    el("table", { "data-testid": "asyncapi-channels" },
      el("tr", {}, ["address", "messages"].map((h) => el("th", {}, h))),
      channels.map((c) => el("tr", {}, cell(c.address), cell(Object.keys(c.messages || {}).map((m) => resolve(c.messages[m]).name || m).join(", "))))),
    el("h4", {}, "Operations"),
    el("table", { "data-testid": "asyncapi-operations" },
      el("tr", {}, ["action", "channel", "summary"].map((h) => el("th", {}, h))),
      operations.map(([, o]) => el("tr", {}, cell(o.action), cell(address(o.channel)), cell(o.summary)))),
    el("h4", {}, "Messages"),
    messages.map(([key, m]) => {
      const data = dataOf(m.payload);
      const required = new Set(data.required || []);
      const kafkaKey = ((m.bindings || {}).kafka || {}).key || {};
      return el("div", { class: "message", "data-message": m.name || key },
        el("h5", {}, m.name || key, " ", el("small", {}, (m.summary || "") + " · " + (m.contentType || ""))),
        kafkaKey.description ? el("p", {}, "Key: " + kafkaKey.description) : "",
        el("table", {},
          el("tr", {}, ["field", "type", "required", "description"].map((h) => el("th", {}, h))),
          Object.entries(data.properties || {}).map(([name, schema]) =>
            el("tr", { "data-field": name }, cell(name), cell(typeOf(schema)), cell(required.has(name) ? "yes" : ""), cell(resolve(schema).description || schema.description || "")))));
    }));
}

// The dead letters page is operate.js's (it sets PAGES.dlq).
const PAGES = { overview, groups: groupsPage, topology: topologyPage };

async function render() {
  const name = (location.hash.replace(/^#\//, "") || "overview").split("?")[0];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === name);
  const page = document.getElementById("page");
  try {
    await (PAGES[name] || overview)(page);
    if (document.getElementById("message").className === "error" && /^\d{3}:/.test(document.getElementById("message").textContent)) say("");
  } catch (e) {
    say(e.message + (token() ? "" : " (give a token above)"), true);
  }
}

function schedule() {
  clearInterval(timer);
  timer = setInterval(render, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  const state = () => { document.getElementById("token-state").textContent = token() ? "token set" : "no token"; };
  document.getElementById("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
    document.getElementById("token").value = "";
    state();
    say("");
    previous = null;
    render();
  });
  window.addEventListener("hashchange", () => { previous = null; say(""); render(); });
  state();
  render();
  schedule();
});
