// The console's Explorer and Publish pages, over GET /explore, POST /explore/republish, the
// AsyncAPI document's JSON Schemas and POST /publish. A classic script loaded after app.js: it
// uses app.js's `el`, `api`, `cell`, `say`, `token` and adds its pages to `PAGES`.
//
// app.js renders the current page every two seconds; these pages are forms, so they build
// once when opened and then refresh only when the operator asks.
"use strict";

const EXPLORE_KEY = "eventkit-console-explorer";

// The page is already this view (built, with the operator's input in it).
function built(page, view) {
  const first = page.firstElementChild;
  return first && first.dataset.view === view;
}

function explorerState() {
  try { return JSON.parse(sessionStorage.getItem(EXPLORE_KEY) || "{}"); } catch (_) { return {}; }
}

// `YYYY-MM-DDTHH:MM:SS` in local time (a datetime-local input's value) from milliseconds.
function localInput(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" + two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
}

function summary(r) {
  if (r.masked) return "(masked)";
  const text = r.decoded ? JSON.stringify(r.value) : r.payload === null || r.payload === undefined ? "(null)" : (r.payload_encoding === "base64" ? "base64: " : "") + r.payload;
  return text.length > 100 ? text.slice(0, 100) + "…" : text;
}

function detail(box, topic, r) {
  const shown = r.masked ? "(payloads are masked on this service: EVENTKIT_ADMIN_PAYLOADS=masked)"
    : r.decoded ? JSON.stringify(r.value, null, 2)
    : (r.payload_encoding === "base64" ? "(not UTF-8; base64)\n" : "") + (r.payload === null || r.payload === undefined ? "(null)" : r.payload);
  const republish = async () => {
    if (!confirm("Publish the record at " + topic + "[" + r.partition + "]@" + r.offset + " again, as it is (same key, value and headers)? Its consumers get it once more.")) return;
    const a = await answer("/explore/republish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic, partition: r.partition, offset: r.offset }),
    });
    if (a.ok) say("republished " + topic + "[" + r.partition + "]@" + r.offset + " as offset " + a.body.offset + " (partition " + a.body.partition + ")");
    else say("republish refused: " + a.status + " " + (a.body.error || ""), true);
  };
  box.replaceChildren(
    el("h3", {}, "Record " + r.partition + ":" + r.offset, " ", el("small", {}, (r.event_type || "no event type") + (r.decoded ? " · decoded" : r.masked ? "" : " · raw"))),
    el("p", {}, "Key: ", el("code", { "data-testid": "record-key" }, r.key === null ? "(none)" : r.key), " · time: ", r.time || "–", r.decode_error ? " · " : "", r.decode_error ? el("span", { class: "down" }, r.decode_error) : ""),
    el("table", { "data-testid": "record-headers" },
      el("tr", {}, el("th", {}, "header"), el("th", {}, "value")),
      (r.headers || []).map((h) => el("tr", {}, cell(h.name), cell(h.value)))),
    el("pre", { class: "json", "data-testid": "record-json" }, shown),
    el("button", { "data-testid": "republish", onclick: republish }, "Republish"));
}

async function explorerPage(page) {
  if (built(page, "explorer")) return;
  const t = await api("/topology");
  const topics = [...new Set([...(t.events || []).map((e) => e.topic), ...(t.groups || []).flatMap((g) => g.topics || [])])].sort();
  const state = explorerState();
  const topic = el("select", { "data-testid": "explore-topic" },
    topics.map((name) => { const o = el("option", { value: name }, name); if (name === state.topic) o.selected = true; return o; }));
  const partition = el("input", { type: "number", min: "0", value: state.partition || "0", "data-testid": "explore-partition", class: "short" });
  const offset = el("input", { type: "number", min: "0", placeholder: "last records", "data-testid": "explore-offset", class: "short" });
  const time = el("input", { type: "datetime-local", step: "1", "data-testid": "explore-time" });
  const limit = el("input", { type: "number", min: "1", max: "200", value: "20", "data-testid": "explore-limit", class: "short" });
  const range = el("p", { "data-testid": "explore-range" }, "");
  const table = el("table", { "data-testid": "records" });
  const box = el("div", { class: "detail", "data-testid": "record-detail" });
  const more = el("p", {});

  // Only the latest read shows: an earlier one answering later (the first page's read of the
  // last records, overtaken by a jump) must not overwrite it.
  let reads = 0;
  const load = async (from) => {
    const mine = ++reads;
    sessionStorage.setItem(EXPLORE_KEY, JSON.stringify({ topic: topic.value, partition: partition.value }));
    const q = new URLSearchParams({ topic: topic.value, partition: partition.value || "0", limit: limit.value || "20" });
    if (from.offset !== undefined) q.set("offset", from.offset);
    if (from.time !== undefined) q.set("time", from.time);
    const a = await answer("/explore?" + q);
    if (mine !== reads) return;
    box.replaceChildren();
    if (!a.ok) {
      say("explore: " + a.status + " " + (a.body.error || "") + (a.body.field ? " (" + a.body.field + ")" : ""), true);
      return;
    }
    say("");
    const d = a.body;
    range.textContent = d.topic + "[" + d.partition + "]: offsets " + d.low + " to " + d.high + " · " + d.records.length + " record(s) from " + d.from + (d.masked ? " · payloads masked" : "");
    range.dataset.from = d.from;
    table.replaceChildren(
      el("tr", {}, ["offset", "time", "key", "type", d.masked ? "" : "value / payload"].map((h) => el("th", {}, h))),
      ...d.records.map((r) => el("tr", { "data-offset": r.offset, class: "record", onclick: (e) => {
        for (const row of table.querySelectorAll("tr.selected")) row.classList.remove("selected");
        e.currentTarget.classList.add("selected");
        detail(box, d.topic, r);
      } }, cell(r.offset), cell(r.time), cell(r.key), cell(r.event_type), el("td", { class: r.decoded ? "" : "raw" }, summary(r)))));
    if (d.records.length === 0) table.append(el("tr", {}, el("td", { colspan: "5" }, "No records there.")));
    // The following page starts where this one ended (`next`); none past the partition's end.
    more.replaceChildren(d.next < d.high
      ? el("button", { "data-testid": "explore-next", onclick: () => { offset.value = String(d.next); load({ offset: String(d.next) }); } }, "Next page (from offset " + d.next + ")")
      : "");
  };

  const go = () => load(offset.value === "" ? {} : { offset: offset.value });
  const jump = () => {
    if (!time.value) { say("choose a time to jump to", true); return; }
    const ms = new Date(time.value).getTime();
    if (!Number.isFinite(ms)) { say("not a time: " + time.value, true); return; }
    load({ time: String(ms) });
  };
  page.replaceChildren(el("div", { "data-view": "explorer" },
    el("h2", {}, "Explorer"),
    el("div", { class: "controls" },
      el("label", {}, "Topic ", topic), " ",
      el("label", {}, "Partition ", partition), " ",
      el("label", {}, "Limit ", limit)),
    el("div", { class: "controls" },
      el("label", {}, "From offset ", offset), " ",
      el("button", { "data-testid": "explore-go", onclick: go }, "Read"), " · ",
      el("label", {}, "Jump to time ", time), " ",
      el("button", { "data-testid": "explore-jump", onclick: jump }, "Jump")),
    range, table, more, box));
  if (topic.value) await load({});
}

// A property's schema, resolved against the document's schemas (`$ref`, a lone `allOf`).
function resolve(doc, schema) {
  let s = schema || {};
  for (let i = 0; i < 10; i++) {
    if (s.$ref) {
      const name = decodeURIComponent(s.$ref.split("/").pop());
      s = ((doc.components || {}).schemas || {})[name] || {};
    } else if (Array.isArray(s.allOf) && s.allOf.length === 1 && Object.keys(s).length === 1) {
      s = s.allOf[0];
    } else break;
  }
  return s;
}

// The event's data schema from its message: the payload, or the data inside its envelope.
function dataSchema(doc, message) {
  const payload = resolve(doc, message.payload);
  const props = payload.properties || {};
  if (props.specversion && props.data) return resolve(doc, props.data);
  if (props.metadata && props.payload) return resolve(doc, props.payload);
  return payload;
}

// The input kind of a property: string, number, integer, boolean, enum, or json (the rest).
function kindOf(s) {
  const types = (Array.isArray(s.type) ? s.type : [s.type]).filter((x) => x && x !== "null");
  if (Array.isArray(s.enum) && s.enum.every((v) => typeof v === "string" || v === null)) return "enum";
  if (types.length === 1 && ["string", "number", "integer", "boolean"].includes(types[0])) return types[0];
  return "json";
}

function publishForm(doc, message, holder) {
  const schema = dataSchema(doc, message);
  const required = new Set(schema.required || []);
  const fields = Object.entries(schema.properties || {}).map(([name, raw]) => {
    const s = resolve(doc, raw);
    const kind = kindOf(s);
    let input;
    if (kind === "boolean") input = el("input", { type: "checkbox", name });
    else if (kind === "enum") input = el("select", { name }, (required.has(name) ? [] : [el("option", { value: "" }, "")]).concat(s.enum.filter((v) => v !== null).map((v) => el("option", { value: v }, v))));
    else if (kind === "json") input = el("textarea", { name, rows: "3", placeholder: "JSON" });
    else input = el("input", { type: "text", name, inputmode: kind === "string" ? "text" : "decimal" });
    const error = el("span", { class: "field-error", "data-error-for": name });
    const row = el("div", { class: "field", "data-field": name },
      el("label", {}, name, required.has(name) ? el("span", { class: "required", title: "required" }, " *") : "", " ", el("small", {}, kind === "json" ? "JSON" : kind)),
      input, error);
    return { name, kind, s, input, error, row, required: required.has(name) };
  });

  // The data, or the errors by field (checked here before the server sees it).
  const collect = () => {
    const data = {};
    const errors = {};
    for (const f of fields) {
      if (f.kind === "boolean") { data[f.name] = f.input.checked; continue; }
      const text = f.input.value;
      if (text.trim() === "") {
        if (f.required) errors[f.name] = "required";
        continue;
      }
      if (f.kind === "string" || f.kind === "enum") data[f.name] = text;
      else if (f.kind === "integer") {
        if (!/^\s*-?\d+\s*$/.test(text)) errors[f.name] = "not an integer";
        else if (typeof f.s.minimum === "number" && Number(text) < f.s.minimum) errors[f.name] = "at least " + f.s.minimum;
        else data[f.name] = Number(text);
      } else if (f.kind === "number") {
        const n = Number(text);
        if (!Number.isFinite(n)) errors[f.name] = "not a number";
        else data[f.name] = n;
      } else {
        try { data[f.name] = JSON.parse(text); } catch (e) { errors[f.name] = "not JSON: " + e.message; }
      }
    }
    return { data, errors };
  };

  const submit = async (e) => {
    e.preventDefault();
    for (const f of fields) { f.error.textContent = ""; f.row.classList.remove("invalid"); }
    const { data, errors } = collect();
    const wrong = Object.keys(errors);
    if (wrong.length) {
      for (const f of fields) if (errors[f.name]) { f.error.textContent = errors[f.name]; f.row.classList.add("invalid"); }
      say("not sent: " + wrong.map((n) => n + " " + errors[n]).join(", "), true);
      return;
    }
    const a = await answer("/publish", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ type: message.name, data }) });
    if (a.ok) {
      const p = (a.body.published || [])[0] || {};
      say("published " + message.name + " to " + p.topic + "[" + p.partition + "]@" + p.offset + " (event id " + p.event_id + ")");
      return;
    }
    const field = (a.body.field || "").replace(/^data\.?/, "").split(".")[0];
    const f = fields.find((x) => x.name === field);
    if (f) { f.error.textContent = a.body.error || ("refused: " + a.status); f.row.classList.add("invalid"); }
    say("publish refused: " + a.status + " " + (a.body.error || ""), true);
  };

  holder.replaceChildren(el("form", { "data-testid": "publish-form", "data-type": message.name, onsubmit: submit },
    fields.length ? fields.map((f) => f.row) : el("p", {}, "This event has no fields."),
    el("button", { type: "submit", "data-testid": "publish-submit" }, "Publish")));
}

async function publishPage(page) {
  if (built(page, "publish")) return;
  const doc = await api("/asyncapi.json");
  const messages = Object.values((doc.components || {}).messages || {}).sort((a, b) => (a.name < b.name ? -1 : 1));
  const holder = el("div", {});
  const chosen = sessionStorage.getItem("eventkit-console-publish");
  const select = el("select", { "data-testid": "publish-type", onchange: (e) => {
    sessionStorage.setItem("eventkit-console-publish", e.target.value);
    publishForm(doc, messages.find((m) => m.name === e.target.value), holder);
  } }, messages.map((m) => { const o = el("option", { value: m.name }, m.name); if (m.name === chosen) o.selected = true; return o; }));
  page.replaceChildren(el("div", { "data-view": "publish" },
    el("h2", {}, "Publish"),
    el("p", {}, "Publishes one event through this service's publisher (required fields are marked *)."),
    el("label", {}, "Event type ", select),
    holder));
  const first = messages.find((m) => m.name === select.value);
  if (first) publishForm(doc, first, holder);
  else holder.replaceChildren(el("p", {}, "This service declares no events."));
}

PAGES.explorer = explorerPage;
PAGES.publish = publishPage;
