// Drives the console's Dead letters page and a group's reset and replay-by-time controls in
// Chromium (Debian's, through Playwright), as an operator would: tests/operate.rs starts a
// service whose handler fails the jobs 3 and 6 (permanent) and 5 (retries exhausted) until
// the file GATE exists, publishes the jobs 1 to 6 and runs this.
//
//   BASE, TOKEN, GROUP (the group id), TOPIC (on the wire), HANDLER (the failing handler),
//   GATE (the file that makes the handler succeed), RELEASE (the file that lets job 99 end), BEFORE (ms: a whole second before job 1),
//   FROM and TO (ms: whole seconds around jobs 4 to 6),
//   CHROMIUM (default /usr/bin/chromium), SHOTS (a directory for screenshots; optional)
//
// Exits 0 when every step held; otherwise prints the step that failed and exits 1.
import { writeFileSync } from "node:fs";
import { TIMEOUT, drive, shot, until } from "./kit.mjs";

const env = process.env;
const { BASE, TOKEN, GROUP, TOPIC, HANDLER, GATE, RELEASE } = env;
const [BEFORE, FROM, TO] = [env.BEFORE, env.FROM, env.TO].map(Number);


// The group's handled records (successes), from the metrics.
async function handled() {
  const text = await (await fetch(`${BASE}/metrics`, { headers: { Authorization: `Bearer ${TOKEN}` } })).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("eventkit_records_handled_total{") && line.includes(`group="${GROUP}"`)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

// A datetime-local input's value (local time, to the second).
function localInput(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

// Answers the next confirmation: accepted or dismissed; what it asked.
function answerNext(page, accept) {
  return new Promise((resolve, reject) => {
    const none = setTimeout(() => reject(new Error("no confirmation was asked")), TIMEOUT);
    page.once("dialog", async (d) => {
      clearTimeout(none);
      const asked = d.message();
      await (accept ? d.accept() : d.dismiss());
      if (d.type() !== "confirm") reject(new Error(`a ${d.type()}, not a confirmation: ${asked}`));
      else resolve(asked);
    });
  });
}

// The count the Dead letters page shows, reloading until it is `n`.
async function dlqCount(page, n, what) {
  await until(`${what}: ${n} dead letter(s) shown`, async () => {
    await page.click("[data-testid=dlq-reload]");
    const count = page.locator("[data-testid=dlq-count]:not([data-loading])");
    await count.waitFor();
    return (await count.getAttribute("data-count")) === String(n);
  });
}

// Nothing was handled for a while (after a dismissed confirmation).
async function stillHandled(n, what) {
  await new Promise((r) => setTimeout(r, 1500));
  const now = await handled();
  if (now !== n) throw new Error(`${what}: handled ${now}, want still ${n}`);
}

await drive({ viewport: { width: 1400, height: 1000 }, expected: /status of 4(01|03|04|09|22)/ }, async (page, run) => {

  run.step = "the admin token";
  await page.goto(`${BASE}/ui`);
  await page.fill("#token", TOKEN);
  await page.click("#token-form button");
  await page.waitForSelector("#token-state:has-text('token set')");
  const base = await handled();
  if (base !== 3) throw new Error(`handled before the dead letters: ${base}, want 3 (jobs 1, 2 and 4)`);

  run.step = "the dead letters of the topic: three";
  await page.click("nav a[data-page=dlq]");
  await page.waitForSelector("[data-view=dlq]");
  await page.selectOption("[data-testid=dlq-topic]", TOPIC);
  await dlqCount(page, 3, "all kinds");

  run.step = "filtered by kind: the two permanent ones";
  await page.selectOption("[data-testid=dlq-kind]", "permanent");
  await dlqCount(page, 2, "kind permanent");
  await page.fill("[data-testid=dlq-handler]", HANDLER);
  await dlqCount(page, 2, "kind permanent, the handler");
  await page.fill("[data-testid=dlq-handler]", "operate::nobody");
  await dlqCount(page, 0, "a handler that failed nothing");
  await page.fill("[data-testid=dlq-handler]", HANDLER);
  await dlqCount(page, 2, "the handler again");

  run.step = "an entry opens with its error, value and origin";
  const row = page.locator("[data-testid=dlq-entries] tr[data-entry]").first();
  const entry = await row.getAttribute("data-entry");
  await row.click();
  await page.waitForSelector("[data-testid=dlq-error]:has-text('job 3 is a multiple of three')");
  const value = JSON.parse(await page.locator("[data-testid=dlq-value]").textContent());
  const data = value.data || value;
  if (data.n !== 3 || data.id !== "job-3") throw new Error(`the value shown: ${JSON.stringify(value)}`);
  const original = await page.locator("[data-testid=dlq-original]").textContent();
  if (original !== `${TOPIC}[0]@2`) throw new Error(`the original: ${original}`);
  if ((await page.locator("[data-testid=dlq-attempts]").textContent()) !== "1") throw new Error("attempts: not 1 (retries 0)");
  await page.waitForSelector("[data-testid=dlq-headers] td:has-text('ce_type')");
  await shot(page, "dead-letters");

  run.step = "replay this one, dismissed: nothing replayed";
  const dismissed = answerNext(page, false);
  await page.click("[data-testid=dlq-replay-one]");
  const asked = await dismissed;
  if (!asked.includes(`Replay 1 dead letter of ${TOPIC}: entry ${entry}`) || !asked.includes(HANDLER)) throw new Error(`the confirmation said: ${asked}`);
  await stillHandled(3, "after the dismissed replay");
  await dlqCount(page, 2, "after the dismissed replay");

  run.step = "the fix is out; replay this one: the handler gets job 3";
  writeFileSync(GATE, "open");
  await page.locator(`[data-testid=dlq-entries] tr[data-entry="${entry}"]`).click();
  const one = answerNext(page, true);
  await page.click("[data-testid=dlq-replay-one]");
  await one;
  await page.waitForSelector("#message:has-text('replayed 1 · already replayed 0 · skipped 0')");
  await until("job 3 handled", async () => (await handled()) === 4);
  await dlqCount(page, 1, "kind permanent, after the replay");

  run.step = "replay all matching the filters: job 6";
  const all = answerNext(page, true);
  await page.click("[data-testid=dlq-replay-all]");
  const allAsked = await all;
  if (!allAsked.includes(`Replay all 1 dead letter(s) of ${TOPIC} matching kind permanent, handler ${HANDLER}`)) throw new Error(`the confirmation said: ${allAsked}`);
  await page.waitForSelector("#message:has-text('replayed 1 · already replayed 0 · skipped 0')");
  await until("job 6 handled", async () => (await handled()) === 5);
  await dlqCount(page, 0, "kind permanent, after replaying all");

  run.step = "the rest (job 5) selected: dismissed, then replayed";
  await page.selectOption("[data-testid=dlq-kind]", "");
  await dlqCount(page, 1, "any kind");
  await page.locator("[data-testid=dlq-entries] input[data-select]").first().check();
  const notSelected = answerNext(page, false);
  await page.click("[data-testid=dlq-replay-selected]");
  const selectedAsked = await notSelected;
  if (!selectedAsked.includes(`Replay 1 selected dead letter(s) of ${TOPIC}`)) throw new Error(`the confirmation said: ${selectedAsked}`);
  await stillHandled(5, "after the dismissed selection");
  await dlqCount(page, 1, "after the dismissed selection");
  if (!(await page.locator("[data-testid=dlq-entries] input[data-select]").first().isChecked())) throw new Error("the selection was lost when the list reloaded");
  const selected = answerNext(page, true);
  await page.click("[data-testid=dlq-replay-selected]");
  await selected;
  await page.waitForSelector("#message:has-text('replayed 1 · already replayed 0 · skipped 0')");
  await until("job 5 handled", async () => (await handled()) === 6);
  await dlqCount(page, 0, "after the selection");
  await page.check("[data-testid=dlq-include-replayed]");
  await dlqCount(page, 3, "the replayed ones too");

  run.step = "the groups page shows the group's controls";
  await page.click("nav a[data-page=groups]");
  const group = page.locator(`div[data-group="${GROUP}"]`);
  await group.locator("[data-testid=group-controls]").waitFor();
  await group.locator(`tr[data-partition="${TOPIC}:0"]`).waitFor();
  const controls = group.locator("[data-testid=group-controls]");

  run.step = "reset the group to a time before job 1, dismissed: nothing moves";
  await controls.locator("[data-testid=reset-scope]").selectOption("group");
  await controls.locator("[data-testid=reset-to]").selectOption("time");
  await controls.locator("[data-testid=reset-time]").fill(localInput(BEFORE));
  const notReset = answerNext(page, false);
  await controls.locator("[data-testid=reset-go]").click();
  const resetAsked = await notReset;
  if (!resetAsked.includes(`Reset group ${GROUP}, all its topics (${TOPIC})`) || !resetAsked.includes(new Date(BEFORE).toISOString())) throw new Error(`the confirmation said: ${resetAsked}`);
  await stillHandled(6, "after the dismissed reset");

  run.step = "reset the group to a time before job 1: everything handled again";
  if ((await controls.locator("[data-testid=reset-time]").inputValue()) !== localInput(BEFORE)) throw new Error("the time typed was lost when the page redrew");
  const reset = answerNext(page, true);
  await controls.locator("[data-testid=reset-go]").click();
  await reset;
  await page.waitForSelector(`#message:has-text('reset ${GROUP}: ${TOPIC}[0] → 0 reset')`);
  await controls.locator("[data-testid=reset-result] [data-testid=reset-status]:has-text('reset')").waitFor();
  // The six jobs and the three copies the dead letter replays put on the topic.
  await until("the topic handled again", async () => (await handled()) === 15);

  run.step = "replay by time: jobs 4 to 6 again";
  await controls.locator("[data-testid=replay-topic]").selectOption(TOPIC);
  await controls.locator("[data-testid=replay-from]").fill(localInput(FROM));
  await controls.locator("[data-testid=replay-to]").fill(localInput(TO));
  const replay = answerNext(page, true);
  await controls.locator("[data-testid=replay-go]").click();
  const replayAsked = await replay;
  if (!replayAsked.includes(`Deliver again to group ${GROUP} the records topic ${TOPIC} received from`)) throw new Error(`the confirmation said: ${replayAsked}`);
  await page.waitForSelector(`#message:has-text('replayed 3 record(s) of ${TOPIC} to ${GROUP}')`);
  await until("the window handled again", async () => (await handled()) === 18);
  await shot(page, "group-controls");

  run.step = "the same replay again: done before, nothing replayed";
  const repeated = answerNext(page, true);
  await controls.locator("[data-testid=replay-go]").click();
  await repeated;
  await page.waitForSelector("#message:has-text('replayed 0: the same replay was done before')");
  await controls.locator("[data-testid=replay-result]:has-text('Done before')").waitFor();
  await stillHandled(18, "after the repeated replay");

  run.step = "a reset over a record in flight: refused (409) with a hint, then forced";
  const published = await fetch(`${BASE}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ type: "OperateJob", data: { id: "job-99", n: 99 } }),
  });
  if (published.status !== 201) throw new Error(`publish job 99: ${published.status} ${await published.text()}`);
  await until("job 99 in flight", async () => {
    const g = await (await fetch(`${BASE}/groups`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
    return (g.groups || []).some((x) => x.group === GROUP && x.in_flight > 0);
  });
  await controls.locator("[data-testid=reset-scope]").selectOption("partition");
  await controls.locator("[data-testid=reset-topic]").selectOption(TOPIC);
  await controls.locator("[data-testid=reset-partition]").fill("0");
  await controls.locator("[data-testid=reset-to]").selectOption("latest");
  const refused = answerNext(page, true);
  await controls.locator("[data-testid=reset-go]").click();
  const refusedAsked = await refused;
  if (!refusedAsked.includes(`Reset group ${GROUP} on ${TOPIC}[0] to the latest offset`)) throw new Error(`the confirmation said: ${refusedAsked}`);
  await page.waitForSelector("#message.error:has-text('reset refused (409)')");
  if (!(await page.locator("#message").textContent()).includes("tick force")) throw new Error("no hint to force");
  await controls.locator("[data-testid=reset-result] [data-testid=reset-status]:has-text('refused')").waitFor();
  await controls.locator("[data-testid=reset-force]").check();
  const forced = answerNext(page, true);
  await controls.locator("[data-testid=reset-go]").click();
  if (!(await forced).includes("Forced")) throw new Error("the forced reset's confirmation does not say so");
  await page.waitForSelector(`#message:not(.error):has-text('reset ${GROUP}: ${TOPIC}[0] →')`);
  await controls.locator("[data-testid=reset-result] [data-testid=reset-status]:has-text('reset')").waitFor();
  await shot(page, "reset-refused-then-forced");
  writeFileSync(RELEASE, "go");

  return `ok: dead letters filtered, opened and replayed (one, all matching, a selection); ${GROUP} reset to ${new Date(BEFORE).toISOString()} and replayed from ${new Date(FROM).toISOString()}`;
});
