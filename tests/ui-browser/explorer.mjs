// Drives the console's Explorer and Publish pages in Chromium (Debian's, through Playwright), as
// an operator would: tests/explorer.rs starts a service and runs this with its address and token.
//
//   BASE, TOKEN, GROUP (the group id), TOPIC (on the wire), EVENT_TYPE,
//   CHROMIUM (default /usr/bin/chromium), SHOTS (a directory for screenshots; optional)
//
// Exits 0 when every step held; otherwise prints the step that failed and exits 1.
import { TIMEOUT, drive, shot, until } from "./kit.mjs";

const env = process.env;
const { BASE, TOKEN, GROUP, TOPIC, EVENT_TYPE } = env;


// Publishes through the admin API; the record's partition and offset.
async function publish(id, amount) {
  const response = await fetch(`${BASE}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ type: EVENT_TYPE, data: { order_id: id, amount, note: `order ${id}` } }),
  });
  const body = await response.json();
  if (response.status !== 201) throw new Error(`publish ${id}: ${response.status} ${JSON.stringify(body)}`);
  return body.published[0];
}

async function handled(page) {
  await page.click("nav a[data-page=overview]");
  const cell = page.locator(`[data-testid=overview] tr[data-group="${GROUP}"] [data-testid=handled]`);
  await cell.waitFor({ timeout: TIMEOUT });
  return Number(await cell.textContent());
}

// A datetime-local input's value (local time, to the second).
function localInput(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}T${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

await drive({ viewport: { width: 1400, height: 900 }, expected: /status of 4(01|03|04|22)/ }, async (page, run) => {

  run.step = "the admin token";
  await page.goto(`${BASE}/ui`);
  await page.fill("#token", TOKEN);
  await page.click("#token-form button");
  await page.waitForSelector("#token-state:has-text('token set')");

  run.step = "two orders, a whole second between them";
  const first = await publish("o-1", 1);
  // The time to jump to: the next whole second (a datetime-local input's precision), then the second order after it.
  const at = Math.ceil((Date.now() + 1) / 1000) * 1000;
  await new Promise((r) => setTimeout(r, at - Date.now() + 100));
  const second = await publish("o-1", 2);
  if (second.partition !== first.partition) throw new Error("one key, two partitions");
  await until("both handled", async () => (await handled(page)) === 2);

  run.step = "the explorer jumps to the time between them";
  await page.click("nav a[data-page=explorer]");
  await page.selectOption("[data-testid=explore-topic]", TOPIC);
  await page.fill("[data-testid=explore-partition]", String(second.partition));
  await page.fill("[data-testid=explore-time]", localInput(at));
  await page.click("[data-testid=explore-jump]");
  const firstRow = page.locator("[data-testid=records] tr[data-offset]").first();
  await until(`the first record shown is offset ${second.offset}`, async () => (await firstRow.getAttribute("data-offset").catch(() => null)) === String(second.offset));

  run.step = "a record opens with its headers and decoded event";
  await firstRow.click();
  await page.waitForSelector(`[data-testid=record-headers] td:has-text('${EVENT_TYPE}')`);
  const shown = JSON.parse(await page.locator("[data-testid=record-json]").textContent());
  if (shown.amount !== 2 || shown.order_id !== "o-1") throw new Error(`decoded: ${JSON.stringify(shown)}`);
  await shot(page, "explorer");

  run.step = "republish after the confirmation: the handler gets it again";
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept(); });
  await page.click("[data-testid=republish]");
  await page.waitForSelector(`#message:has-text('republished ${TOPIC}[${second.partition}]@${second.offset} as offset')`);
  if (!/again/.test(asked)) throw new Error(`the confirmation said: ${asked}`);
  const message = await page.locator("#message").textContent();
  if (!message.includes(`as offset ${second.offset + 1}`)) throw new Error(`republished where? ${message}`);
  await until("the republished order handled", async () => (await handled(page)) === 3);

  run.step = "a page of one record, then the next page: the republished copy";
  await page.click("nav a[data-page=explorer]");
  await page.selectOption("[data-testid=explore-topic]", TOPIC);
  await page.fill("[data-testid=explore-partition]", String(second.partition));
  await page.fill("[data-testid=explore-limit]", "1");
  await page.fill("[data-testid=explore-offset]", String(second.offset));
  await page.click("[data-testid=explore-go]");
  const onlyRow = page.locator("[data-testid=records] tr[data-offset]");
  await until(`one record, offset ${second.offset}`, async () => (await onlyRow.count()) === 1 && (await onlyRow.first().getAttribute("data-offset")) === String(second.offset));
  await page.click("[data-testid=explore-next]");
  await until(`the next page starts at ${second.offset + 1}`, async () => (await onlyRow.count()) === 1 && (await onlyRow.first().getAttribute("data-offset")) === String(second.offset + 1));

  run.step = "the publish page refuses a missing required field";
  await page.click("nav a[data-page=publish]");
  await page.selectOption("[data-testid=publish-type]", EVENT_TYPE);
  const form = page.locator(`[data-testid=publish-form][data-type="${EVENT_TYPE}"]`);
  await form.waitFor();
  await page.waitForSelector(`[data-field=order_id] .required`);
  if (await page.locator("[data-field=note] .required").count()) throw new Error("an optional field marked required");
  await form.locator("[name=amount]").fill("3");
  await page.click("[data-testid=publish-submit]");
  await page.waitForSelector("[data-error-for=order_id]:has-text('required')");
  await page.waitForSelector("#message.error:has-text('not sent')");

  run.step = "the publish page refuses a number that is not one";
  await form.locator("[name=order_id]").fill("o-9");
  await form.locator("[name=amount]").fill("three");
  await page.click("[data-testid=publish-submit]");
  await page.waitForSelector("[data-error-for=amount]:has-text('not an integer')");

  run.step = "the server's refusal shows next to its field";
  await form.locator("[name=amount]").fill("5000000000");
  await page.click("[data-testid=publish-submit]");
  await page.waitForSelector("#message.error:has-text('422')");
  if (!(await page.locator("[data-error-for=amount]").textContent())) throw new Error("the 422 names no field on the page");
  await shot(page, "publish");

  run.step = "a valid event is published and handled";
  await form.locator("[name=amount]").fill("3");
  await form.locator("[name=note]").fill("from the console");
  await page.click("[data-testid=publish-submit]");
  await page.waitForSelector(`#message:has-text('published ${EVENT_TYPE} to ${TOPIC}')`);
  await until("the published order handled", async () => (await handled(page)) === 4);

  return `ok: jumped to ${TOPIC}[${second.partition}]@${second.offset}, republished it, published from the form`;
});
