// The console's operating controls: the Dead letters page (GET /dlq, POST /dlq/replay) and a
// group's reset and replay-by-time controls (POST /groups/reset, POST /groups/replay). A classic
// script loaded after app.js: it uses app.js's `el`, `cell`, `say`, `token`, `api` and `PAGES`,
// replaces `PAGES.dlq`, and app.js's Groups page adds `groupControls(g)` to each group.
//
// Every replay and reset asks first (`confirm`), naming exactly what moves; a dismissed
// question sends nothing. The answers are shown as the API gives them.
"use strict";

const DLQ_TOPIC_KEY = "eventkit-console-dlq";
const DLQ_FILTERS_KEY = "eventkit-console-dlq-filters";
const DLQ_KINDS = ["handler-error", "permanent", "panic", "extract", "deserialization", "unknown-type", "envelope", "foreign"];
const DLQ_FILTER_NAMES = ["kind", "handler", "event_type", "group"];

function operatePost(path, body) {
  return answer(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function refusal(a) {
  return a.status + " " + (a.body.error || "") + (a.body.field ? " (" + a.body.field + ")" : "");
}

function dlqSaved() {
  try { return JSON.parse(sessionStorage.getItem(DLQ_FILTERS_KEY) || "{}"); } catch (_) { return {}; }
}

// A listed key, value or header value: `{"text": ..}` or `{"base64": ..}`.
function dlqData(d) {
  if (d === null || d === undefined) return null;
  return d.text !== undefined ? d.text : "base64: " + d.base64;
}

// The record's value as pretty JSON when it is JSON, else its text (or base64).
function dlqValue(e) {
  if (e.masked) return "masked (payloads are masked on this service: EVENTKIT_ADMIN_PAYLOADS=masked)";
  if (e.value_omitted) return "(the value, " + e.value_omitted + " bytes, was left out of the dead letter)";
  if (e.value === null || e.value === undefined) return "(no value)";
  if (e.value.text === undefined) return "(not UTF-8; base64)\n" + e.value.base64;
  try { return JSON.stringify(JSON.parse(e.value.text), null, 2); } catch (_) { return e.value.text; }
}

function dlqWhen(e) {
  return e.last_failure || (e.timestamp_ms ? new Date(e.timestamp_ms).toISOString() : "");
}

// The filters as given (the non-empty ones), for the API and for the confirmation.
function dlqFilterText(filters) {
  const named = DLQ_FILTER_NAMES.filter((n) => filters[n]).map((n) => n.replace("_", " ") + " " + filters[n]);
  return named.length ? named.join(", ") : "no filter";
}

// The answers of one or more replays, summed: replayed, already replayed, skipped with why.
function dlqAnswer(answers, failures) {
  let replayed = 0, already = 0;
  const skipped = [];
  for (const a of answers) {
    replayed += a.replayed || 0;
    already += a.already_replayed || 0;
    skipped.push(...(a.skipped || []));
  }
  let text = "replayed " + replayed + " · already replayed " + already + " · skipped " + skipped.length;
  if (skipped.length) text += " (" + skipped.map((s) => s.entry + ": " + s.reason).join("; ") + ")";
  if (failures.length) text += " · refused: " + failures.join("; ");
  return text;
}

function dlqDetail(box, topic, e, replayOne) {
  const headers = e.headers || [];
  box.replaceChildren(
    el("h3", {}, "Dead letter " + e.partition + ":" + e.offset, " ", el("small", {}, (e.event_type || "no event type") + (e.replayed ? " · replayed" : ""))),
    el("table", { class: "facts", "data-testid": "dlq-facts" },
      el("tr", {}, el("th", {}, "error"), el("td", { "data-testid": "dlq-error" }, el("pre", { class: "error-text" }, e.error || ""))),
      el("tr", {}, el("th", {}, "kind"), cell(e.kind)),
      el("tr", {}, el("th", {}, "attempts"), el("td", { "data-testid": "dlq-attempts" }, e.attempts)),
      el("tr", {}, el("th", {}, "group / handler"), cell(e.group + " / " + e.handler)),
      el("tr", {}, el("th", {}, "original"), el("td", { "data-testid": "dlq-original" }, e.topic + "[" + e.original_partition + "]@" + e.original_offset)),
      el("tr", {}, el("th", {}, "event id"), cell(e.event_id)),
      el("tr", {}, el("th", {}, "key"), cell(e.masked && e.key === undefined ? "masked" : dlqData(e.key))),
      el("tr", {}, el("th", {}, "first failure"), cell(e.first_failure)),
      el("tr", {}, el("th", {}, "last failure"), cell(e.last_failure)),
      el("tr", {}, el("th", {}, "record time"), cell(e.timestamp_ms ? new Date(e.timestamp_ms).toISOString() : null))),
    el("h4", {}, "Value"),
    el("pre", { class: "json", "data-testid": "dlq-value" }, dlqValue(e)),
    el("h4", {}, "Headers", e.masked ? el("small", {}, " (secret-looking ones masked)") : ""),
    el("table", { "data-testid": "dlq-headers" },
      el("tr", {}, el("th", {}, "header"), el("th", {}, "value")),
      headers.map((h) => el("tr", {}, cell(h.name), cell(dlqData(h.value))))),
    e.replayed ? el("p", { class: "held" }, "Replayed already: replaying it again is skipped.") : "",
    el("button", { "data-testid": "dlq-replay-one", onclick: () => replayOne(e) }, "Replay this one"));
}

async function deadLettersPage(page) {
  const first = page.firstElementChild;
  if (first && first.dataset.view === "dlq") return; // built: refreshed when the operator asks
  const t = await api("/topology");
  const topics = [...new Set((t.groups || []).flatMap((g) => g.topics || []))].sort();
  const saved = dlqSaved();
  const remembered = sessionStorage.getItem(DLQ_TOPIC_KEY);
  const chosen = topics.includes(remembered) ? remembered : topics[0] || "";
  const option = (value, label, selected) => { const o = el("option", { value }, label); if (selected) o.selected = true; return o; };
  const topic = el("select", { "data-testid": "dlq-topic" }, topics.map((name) => option(name, name, name === chosen)));
  const kind = el("select", { "data-testid": "dlq-kind" }, option("", "any kind"), DLQ_KINDS.map((k) => option(k, k, k === saved.kind)));
  const group = el("select", { "data-testid": "dlq-group" }, option("", "any group"), (t.groups || []).map((g) => option(g.group, g.group, g.group === saved.group)));
  const handlerNames = [...new Set((t.groups || []).flatMap((g) => (g.handlers || []).map((h) => h.name)))].sort();
  const eventTypes = [...new Set((t.events || []).map((e) => e.event_type || e.type))].sort();
  const handler = el("input", { type: "text", list: "dlq-handlers", placeholder: "any handler", value: saved.handler || "", "data-testid": "dlq-handler" });
  const eventType = el("input", { type: "text", list: "dlq-event-types", placeholder: "any event type", value: saved.event_type || "", "data-testid": "dlq-event-type" });
  const replayed = el("input", { type: "checkbox", "data-testid": "dlq-include-replayed" });
  replayed.checked = !!saved.include_replayed;
  const count = el("p", { "data-testid": "dlq-count" }, "");
  const table = el("table", { "data-testid": "dlq-entries" });
  const box = el("div", { class: "detail", "data-testid": "dlq-detail" });
  let entries = [];
  let loads = 0;
  let typing = null; // a load waiting for the typing to pause

  const filters = () => ({ kind: kind.value, handler: handler.value.trim(), event_type: eventType.value.trim(), group: group.value });
  const selected = () => [...table.querySelectorAll("input[data-select]:checked")].map((c) => c.dataset.select);

  const load = async () => {
    clearTimeout(typing);
    const f = filters();
    sessionStorage.setItem(DLQ_TOPIC_KEY, topic.value);
    sessionStorage.setItem(DLQ_FILTERS_KEY, JSON.stringify(Object.assign({ include_replayed: replayed.checked }, f)));
    if (!topic.value) { count.textContent = "No topic."; return; }
    const q = new URLSearchParams({ topic: topic.value, limit: "200" });
    for (const n of DLQ_FILTER_NAMES) if (f[n]) q.set(n, f[n]);
    if (replayed.checked) q.set("include_replayed", "true");
    const mine = ++loads;
    count.dataset.loading = "true";
    const a = await answer("/dlq?" + q);
    if (mine !== loads) return; // a later load (the filters changed meanwhile) answers instead
    delete count.dataset.loading;
    const ticked = new Set(selected()); // kept ticked where still listed
    entries = [];
    table.replaceChildren();
    if (!a.ok) {
      count.dataset.count = "0";
      count.textContent = a.status === 404 ? "0 dead letter(s): the queue does not exist yet" : "";
      if (a.status !== 404) say("dead letters: " + refusal(a), true);
      return;
    }
    const d = a.body;
    entries = d.entries || [];
    const masked = entries.some((e) => e.masked);
    count.dataset.count = String(d.count);
    count.textContent = d.count + " dead letter(s) in " + d.dlq_topic + " (" + dlqFilterText(f) + (replayed.checked ? ", replayed ones too" : "") + ")"
      + (entries.length < d.count ? " · showing the first " + entries.length : "") + (masked ? " · payloads masked" : "");
    table.append(
      el("tr", {}, ["", "entry", "original", "kind", "attempts", "group", "handler", "event type", "when", "error"].map((h) => el("th", {}, h))),
      ...entries.map((e) => {
        const address = e.partition + ":" + e.offset;
        const tick = el("input", { type: "checkbox", "data-select": address, "aria-label": "select " + address });
        tick.checked = ticked.has(address);
        return el("tr", { class: "record" + (e.replayed ? " replayed" : ""), "data-entry": address, onclick: (ev) => {
          if (ev.target instanceof HTMLInputElement) return; // the checkbox selects, it does not open
          for (const row of table.querySelectorAll("tr.selected")) row.classList.remove("selected");
          ev.currentTarget.classList.add("selected");
          dlqDetail(box, topic.value, e, replayOne);
        } },
        el("td", {}, tick), cell(address), cell(e.topic + "[" + e.original_partition + "]@" + e.original_offset), cell(e.kind), cell(e.attempts),
        cell(e.group), cell(e.handler), cell(e.event_type), cell(dlqWhen(e)),
        el("td", { class: "error-text" }, (e.error || "").length > 120 ? e.error.slice(0, 120) + "…" : e.error || ""));
      }));
    if (!entries.length) table.append(el("tr", {}, el("td", { colspan: "10" }, "No dead letters match.")));
  };

  // One POST per entry ("P:O"); the answers summed.
  const replayEntries = async (addresses) => {
    const answers = [], failures = [];
    for (const address of addresses) {
      const a = await operatePost("/dlq/replay", { topic: topic.value, offset: address });
      if (a.ok) answers.push(a.body);
      else failures.push(address + ": " + refusal(a));
    }
    say(dlqAnswer(answers, failures), failures.length > 0);
    box.replaceChildren();
    await load();
  };

  async function replayOne(e) {
    const address = e.partition + ":" + e.offset;
    if (!confirm("Replay 1 dead letter of " + topic.value + ": entry " + address + " (" + (e.event_type || "no event type") + ", originally " + e.topic + "[" + e.original_partition + "]@" + e.original_offset + ") to group " + e.group + ", handler " + e.handler + "?")) return;
    await replayEntries([address]);
  }

  const replaySelected = async () => {
    const addresses = selected();
    if (!addresses.length) { say("select dead letters first (the boxes in the first column)", true); return; }
    if (!confirm("Replay " + addresses.length + " selected dead letter(s) of " + topic.value + ": entries " + addresses.join(", ") + "? Each goes back to the group and handler that failed it.")) return;
    await replayEntries(addresses);
  };

  // Everything the filters match that was not replayed yet (what the API replays), counted afresh.
  const replayAll = async () => {
    const f = filters();
    const q = new URLSearchParams({ topic: topic.value, limit: "1" });
    for (const n of DLQ_FILTER_NAMES) if (f[n]) q.set(n, f[n]);
    const counted = await answer("/dlq?" + q);
    if (!counted.ok) { say("dead letters: " + refusal(counted), true); return; }
    const n = counted.body.count;
    if (!n) { say("nothing to replay: no dead letter of " + topic.value + " matches " + dlqFilterText(f) + " that was not replayed already"); return; }
    if (!confirm("Replay all " + n + " dead letter(s) of " + topic.value + " matching " + dlqFilterText(f) + " (those not replayed yet)? Each goes back to the group and handler that failed it.")) return;
    const body = { topic: topic.value, all: true };
    for (const name of DLQ_FILTER_NAMES) if (f[name]) body[name] = f[name];
    const a = await operatePost("/dlq/replay", body);
    if (a.ok) say(dlqAnswer([a.body], []));
    else say("replay refused: " + refusal(a), true);
    box.replaceChildren();
    await load();
  };

  const later = () => { clearTimeout(typing); typing = setTimeout(load, 300); };
  const now = () => { box.replaceChildren(); load(); };
  topic.addEventListener("change", now);
  kind.addEventListener("change", now);
  group.addEventListener("change", now);
  replayed.addEventListener("change", now);
  handler.addEventListener("input", later);
  eventType.addEventListener("input", later);

  page.replaceChildren(el("div", { "data-view": "dlq" },
    el("h2", {}, "Dead letters"),
    el("datalist", { id: "dlq-handlers" }, handlerNames.map((h) => el("option", { value: h }))),
    el("datalist", { id: "dlq-event-types" }, eventTypes.map((e) => el("option", { value: e }))),
    el("div", { class: "controls" },
      el("label", {}, "Topic ", topic), " ",
      el("label", {}, "Kind ", kind), " ",
      el("label", {}, "Handler ", handler), " ",
      el("label", {}, "Event type ", eventType), " ",
      el("label", {}, "Group ", group), " ",
      el("label", {}, replayed, " include replayed"), " ",
      el("button", { "data-testid": "dlq-reload", onclick: now }, "Reload")),
    count,
    el("div", { class: "controls" },
      el("button", { "data-testid": "dlq-replay-selected", onclick: replaySelected }, "Replay selected"), " ",
      el("button", { "data-testid": "dlq-replay-all", onclick: replayAll }, "Replay all matching")),
    table, box));
  await load();
}

PAGES.dlq = deadLettersPage;

// --- A group's reset and replay by time (on the Groups page) ---

// Milliseconds from a datetime-local input (local time), or null.
function operateTime(input) {
  if (!input.value) return null;
  const ms = new Date(input.value).getTime();
  return Number.isFinite(ms) ? ms : null;
}

function operateWhen(ms) {
  return new Date(ms).toLocaleString() + " (" + new Date(ms).toISOString() + ")";
}

let operateTopology = null; // the handlers of each group, asked once

// One group's controls, built once and kept: app.js redraws the Groups page every two seconds,
// and the same node (with what the operator typed) is put back each time.
const GROUP_CONTROLS = new Map();

function groupControls(g) {
  let c = GROUP_CONTROLS.get(g.group);
  if (!c) {
    c = buildGroupControls(g.group);
    GROUP_CONTROLS.set(g.group, c);
  }
  c.update(g);
  // Redrawing moves the node, which takes the focus away: give it back once it is in place.
  const active = document.activeElement;
  if (active && active !== document.body && c.node.contains(active)) queueMicrotask(() => { if (document.activeElement !== active) active.focus(); });
  return c.node;
}

function buildGroupControls(group) {
  const option = (value, label) => el("option", { value }, label);
  const show = (node, on) => { if (on) node.removeAttribute("hidden"); else node.setAttribute("hidden", ""); };

  // Reset.
  const scope = el("select", { "data-testid": "reset-scope" }, option("group", "the whole group"), option("topic", "one topic"), option("partition", "one partition"));
  const resetTopic = el("select", { "data-testid": "reset-topic" });
  const partition = el("input", { type: "number", min: "0", value: "0", class: "short", "data-testid": "reset-partition" });
  const to = el("select", { "data-testid": "reset-to" }, option("earliest", "earliest"), option("latest", "latest"), option("offset", "offset"), option("time", "time"));
  const offset = el("input", { type: "number", min: "0", class: "short", placeholder: "offset", "data-testid": "reset-offset" });
  const time = el("input", { type: "datetime-local", step: "1", "data-testid": "reset-time" });
  const force = el("input", { type: "checkbox", "data-testid": "reset-force" });
  const resetResult = el("div", { class: "result", "data-testid": "reset-result" });
  const topicLabel = el("label", {}, " topic ", resetTopic);
  const partitionLabel = el("label", {}, " partition ", partition);
  const sync = () => {
    show(topicLabel, scope.value !== "group");
    show(partitionLabel, scope.value === "partition");
    show(offset, to.value === "offset");
    show(time, to.value === "time");
  };
  scope.addEventListener("change", sync);
  to.addEventListener("change", sync);

  // Replay by time.
  const replayTopic = el("select", { "data-testid": "replay-topic" });
  const from = el("input", { type: "datetime-local", step: "1", "data-testid": "replay-from" });
  const until = el("input", { type: "datetime-local", step: "1", "data-testid": "replay-to" });
  const listId = "handlers-" + group.replace(/[^A-Za-z0-9_-]/g, "_");
  const handlers = el("datalist", { id: listId });
  const handler = el("input", { type: "text", list: listId, placeholder: "every handler", "data-testid": "replay-handler" });
  const again = el("input", { type: "checkbox", "data-testid": "replay-again" });
  const replayResult = el("div", { class: "result", "data-testid": "replay-result" });

  const reset = async () => {
    const body = { group, by: "console", force: force.checked };
    let where = "group " + group + ", all its topics (" + [...resetTopic.options].map((o) => o.value).join(", ") + ")";
    if (scope.value !== "group") {
      if (!resetTopic.value) { say("choose a topic", true); return; }
      body.topic = resetTopic.value;
      where = "group " + group + " on topic " + resetTopic.value;
    }
    if (scope.value === "partition") {
      if (!/^\d+$/.test(partition.value)) { say("a partition is a whole number", true); return; }
      body.partition = Number(partition.value);
      where = "group " + group + " on " + resetTopic.value + "[" + body.partition + "]";
    }
    let target;
    if (to.value === "earliest" || to.value === "latest") {
      body.to = to.value;
      target = to.value === "earliest" ? "the earliest offset (everything still on the topic is handled again)" : "the latest offset (everything not handled yet is skipped)";
    } else if (to.value === "offset") {
      if (!/^\d+$/.test(offset.value)) { say("an offset is a whole number", true); return; }
      body.offset = Number(offset.value);
      target = "offset " + body.offset;
    } else {
      const ms = operateTime(time);
      if (ms === null) { say("choose a time to reset to", true); return; }
      body.time = ms;
      target = "the first record at or after " + operateWhen(ms);
    }
    if (!confirm("Reset " + where + " to " + target + "?" + (body.force ? " Forced: records fetched and not yet settled are skipped too." : " Refused where it would skip records not settled yet."))) return;
    const a = await operatePost("/groups/reset", body);
    const parts = (a.body.partitions || []);
    resetResult.replaceChildren(parts.length ? el("table", {},
      el("tr", {}, ["topic", "partition", "new offset", "status", "reason", "member"].map((h) => el("th", {}, h))),
      parts.map((p) => el("tr", { "data-partition": p.topic + ":" + p.partition, class: p.status === "refused" ? "down" : "" },
        cell(p.topic), cell(p.partition), cell(p.offset), el("td", { "data-testid": "reset-status" }, p.status), cell(p.reason), cell(p.member)))) : "");
    if (a.status === 409) say("reset refused (409): " + parts.filter((p) => p.status === "refused").map((p) => p.topic + "[" + p.partition + "]: " + (p.reason || "refused")).join("; ") + ". To skip those records anyway, tick force and reset again.", true);
    else if (!a.ok) say("reset refused: " + refusal(a), true);
    else say("reset " + group + ": " + parts.map((p) => p.topic + "[" + p.partition + "] → " + p.offset + " " + p.status).join(", ") + (a.body.direct ? " (no members: committed directly)" : ""), a.status !== 200);
  };

  const replay = async () => {
    if (!replayTopic.value) { say("choose a topic", true); return; }
    const fromMs = operateTime(from), toMs = operateTime(until);
    if (fromMs === null || toMs === null) { say("choose the window's start and end", true); return; }
    const body = { group, topic: replayTopic.value, from: fromMs, to: toMs, by: "console", again: again.checked };
    const only = handler.value.trim();
    if (only) body.handler = only;
    if (!confirm("Deliver again to group " + group + (only ? " (handler " + only + " only)" : "") + " the records topic " + replayTopic.value + " received from " + operateWhen(fromMs) + " up to " + operateWhen(toMs) + "? They are copied onto the topic, addressed to this group; its offsets do not move." + (again.checked ? " Even if this replay was done before." : ""))) return;
    const a = await operatePost("/groups/replay", body);
    if (!a.ok) {
      replayResult.replaceChildren();
      say("replay refused: " + refusal(a), true);
      return;
    }
    const d = a.body;
    if (d.before) {
      const b = d.before;
      replayResult.replaceChildren(el("p", { class: "held" }, "Done before" + (b.by ? " by " + b.by : "") + (b.at ? " at " + b.at : "") + ": nothing replayed. Tick “again” to replay once more."));
      say("replayed 0: the same replay was done before (tick again to replay once more)");
      return;
    }
    replayResult.replaceChildren(el("table", {},
      el("tr", {}, ["partition", "from offset", "to offset"].map((h) => el("th", {}, h))),
      (d.partitions || []).map((p) => el("tr", {}, cell(p.partition), cell(p.from_offset), cell(p.to_offset)))));
    say("replayed " + d.replayed + " record(s) of " + replayTopic.value + " to " + group + (only ? " (" + only + ")" : "") + (d.skipped_replays ? " · " + d.skipped_replays + " copies of earlier replays not copied again" : ""));
  };

  const node = el("div", { class: "operate", "data-testid": "group-controls" },
    el("fieldset", { "data-testid": "reset" },
      el("legend", {}, "Reset offsets"),
      el("label", {}, "Scope ", scope), topicLabel, partitionLabel, " ",
      el("label", {}, " to ", to), " ", offset, time, " ",
      el("label", {}, force, " force"), " ",
      el("button", { "data-testid": "reset-go", onclick: reset }, "Reset…"),
      resetResult),
    el("fieldset", { "data-testid": "replay" },
      el("legend", {}, "Replay by time"),
      el("label", {}, "Topic ", replayTopic), " ",
      el("label", {}, " from ", from), " ",
      el("label", {}, " to ", until), " ",
      el("label", {}, " handler ", handler), handlers, " ",
      el("label", {}, again, " again"), " ",
      el("button", { "data-testid": "replay-go", onclick: replay }, "Replay…"),
      replayResult));
  sync();

  let topics = "";
  const update = (g) => {
    const names = (g.topics || []).slice().sort();
    if (names.join("\n") !== topics) {
      topics = names.join("\n");
      for (const select of [resetTopic, replayTopic]) {
        const was = select.value;
        select.replaceChildren(...names.map((n) => option(n, n)));
        if (names.includes(was)) select.value = was;
      }
    }
    if (!operateTopology) operateTopology = api("/topology").catch(() => { operateTopology = null; return {}; });
    if (!handlers.childElementCount) {
      operateTopology.then((t) => {
        const mine = (t.groups || []).find((x) => x.group === group);
        if (mine && !handlers.childElementCount) handlers.replaceChildren(...(mine.handlers || []).map((h) => option(h.name, h.name)));
      });
    }
  };
  return { node, update };
}
