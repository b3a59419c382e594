// Drives the eventkit console in Chromium (Debian's, through Playwright), as an operator would:
// tests/console.rs starts a service and runs this with its address and tokens.
//
//   BASE, TOKEN, READ_TOKEN, GROUP (the group id), TOPIC (on the wire), EVENT_TYPE,
//   CHROMIUM (default /usr/bin/chromium), SHOTS (a directory for screenshots; optional)
//
// Exits 0 when every step held; otherwise prints the step that failed and exits 1.
import { TIMEOUT, drive, shot, until } from "./kit.mjs";

const env = process.env;
const { BASE, TOKEN, READ_TOKEN, GROUP, TOPIC, EVENT_TYPE } = env;


// Publishes through the admin API (as the console's future Publish page would).
async function publish(n) {
  const response = await fetch(`${BASE}/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ type: EVENT_TYPE, data: { id: `job-${n}`, n } }),
  });
  const body = await response.json();
  if (response.status !== 201) throw new Error(`publish ${n}: ${response.status} ${JSON.stringify(body)}`);
  return body.published[0].partition;
}

async function useToken(page, token) {
  await page.fill("#token", token);
  await page.click("#token-form button");
  await page.waitForSelector("#token-state:has-text('token set')");
}

async function handled(page) {
  await page.click("nav a[data-page=overview]");
  const cell = page.locator(`[data-testid=overview] tr[data-group="${GROUP}"] [data-testid=handled]`);
  await cell.waitFor({ timeout: TIMEOUT });
  return Number(await cell.textContent());
}

async function partitionState(page, partition) {
  return page.locator(`div[data-group="${GROUP}"] tr[data-partition="${TOPIC}:${partition}"] [data-testid=state]`).textContent();
}

await drive({ viewport: { width: 1400, height: 900 }, expected: /status of 40[134]/ }, async (page, run) => {

  run.step = "without a token, the page says what it needs";
  await page.goto(`${BASE}/ui`);
  await page.waitForSelector("#message.error:has-text('401')");

  run.step = "a read token: the overview shows the group";
  await useToken(page, READ_TOKEN);
  await page.waitForSelector(`[data-testid=overview] tr[data-group="${GROUP}"]`);
  await page.waitForSelector("[data-testid=health]:has-text('ready')");

  run.step = "the fleet table shows this instance up, with the group's two partitions";
  await page.waitForSelector("[data-testid=fleet] tr[data-instance] [data-testid=instance-state]:has-text('up')");
  await until("this instance's two partitions", async () => (await page.locator("[data-testid=fleet] tr[data-instance] [data-testid=instance-partitions]").first().textContent()) === "2");

  run.step = "a read token cannot pause";
  await page.click("nav a[data-page=groups]");
  await page.waitForSelector(`div[data-group="${GROUP}"] tr[data-partition="${TOPIC}:0"] [data-testid=pause]`);
  await page.click(`div[data-group="${GROUP}"] tr[data-partition="${TOPIC}:0"] [data-testid=pause]`);
  await page.waitForSelector("#message.error:has-text('403')");
  if ((await partitionState(page, 0)) !== "running") throw new Error("a refused pause paused");

  run.step = "the admin token pauses partition 0";
  await useToken(page, TOKEN);
  await page.click("nav a[data-page=groups]");
  await page.click(`div[data-group="${GROUP}"] tr[data-partition="${TOPIC}:0"] [data-testid=pause]`);
  await until("partition 0 shown paused", async () => (await partitionState(page, 0)) === "paused by operator");
  await page.waitForSelector(`div[data-group="${GROUP}"] .held:has-text('by console')`);
  await page.waitForSelector(`div[data-group="${GROUP}"] [data-testid=group-instances] [data-testid=instance-partitions]:has-text('${TOPIC}[0] paused')`);
  await shot(page, "groups");

  run.step = "events stop being handled on the paused partition only";
  const before = await handled(page);
  const sent = [];
  for (let n = 1; sent.filter((p) => p === 0).length < 2 || sent.filter((p) => p === 1).length < 2; n++) {
    sent.push(await publish(n));
    if (n > 60) throw new Error("keys never reached both partitions");
  }
  const on0 = sent.filter((p) => p === 0).length;
  const on1 = sent.length - on0;
  await until(`partition 1's ${on1} events handled`, async () => (await handled(page)) >= before + on1);
  await new Promise((r) => setTimeout(r, 2000));
  const paused = await handled(page);
  if (paused !== before + on1) throw new Error(`handled ${paused - before} while partition 0 was paused; want ${on1}`);
  await shot(page, "overview");

  run.step = "resume: the waiting events are handled";
  await page.click("nav a[data-page=groups]");
  await page.click(`div[data-group="${GROUP}"] tr[data-partition="${TOPIC}:0"] [data-testid=resume]`);
  await until("partition 0 shown running", async () => (await partitionState(page, 0)) === "running");
  await until(`all ${sent.length} events handled`, async () => (await handled(page)) === before + sent.length);

  run.step = "the topology page lists the event and the handler";
  await page.click("nav a[data-page=topology]");
  await page.waitForSelector(`[data-testid=events] td:has-text('${EVENT_TYPE}')`);
  await page.waitForSelector(`[data-testid=handlers] td:has-text('${GROUP}')`);
  run.step = "the topology page renders the AsyncAPI document: the topic, both operations, the event's fields";
  await page.waitForSelector(`[data-testid=asyncapi-channels] td:has-text('${TOPIC}')`);
  await page.waitForSelector(`[data-testid=asyncapi-operations] td:text-is('send')`);
  await page.waitForSelector(`[data-testid=asyncapi-operations] td:text-is('receive')`);
  const field = page.locator(`[data-testid=asyncapi] [data-message="${EVENT_TYPE}"] tr[data-field=n] td`);
  await until("the field n shown as a required integer", async () => (await field.count()) >= 3 && /integer/.test(await field.nth(1).textContent()) && (await field.nth(2).textContent()) === "yes");
  await shot(page, "topology");

  run.step = "the dead letters page reads the topic's queue";
  await page.click("nav a[data-page=dlq]");
  await page.waitForSelector("[data-testid=dlq-count]");
  await shot(page, "dead-letters");

  return `ok: ${sent.length} events (${on0} on the paused partition)`;
});
