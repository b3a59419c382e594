// What the console's browser scripts share: Chromium (Debian's, through Playwright), steps
// named for the failure report, bounded waits, screenshots.
import { chromium } from "playwright-core";

// The bound of each wait (so that a script always ends), in ms.
export const TIMEOUT = 30000;

// Saves the page as SHOTS/NAME.png when SHOTS names a directory.
export async function shot(page, name) {
  if (process.env.SHOTS) await page.screenshot({ path: `${process.env.SHOTS}/${name}.png`, fullPage: true });
}

// Asks `check` until it answers something truthy (returned), for TIMEOUT at most.
export async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// Opens one page in Chromium (CHROMIUM, default /usr/bin/chromium) and runs `steps(page, run)`;
// `run.step` names the step a failure reports. A console error is a script error (the run then
// fails at its end) unless `expected` matches it: the refusals the steps provoke show as failed
// loads. Exits 0 when every step held and printed what `steps` returned; otherwise prints the
// failing step and what the page showed, and exits 1.
export async function drive({ viewport, expected }, steps) {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  const run = { step: "start", errors: [] };
  let page = null;
  try {
    page = await browser.newPage({ viewport });
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (e) => run.errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error" && !expected.test(m.text())) run.errors.push(m.text());
    });
    const done = await steps(page, run);
    run.step = "no script error";
    if (run.errors.length) throw new Error(run.errors.join("; "));
    console.log(done);
  } catch (e) {
    console.error(`FAIL at "${run.step}": ${e.message}`);
    if (page) {
      const shown = await page.evaluate(() => `message: ${document.getElementById("message").textContent}\npage: ${document.getElementById("page").innerText.slice(0, 2000)}`).catch(() => "");
      console.error(shown);
      if (run.errors.length) console.error(`script errors: ${run.errors.join("; ")}`);
    }
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
