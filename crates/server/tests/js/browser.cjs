// The demo page in real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): two browser contexts on one record.
// Usage: node browser.cjs http://127.0.0.1:PORT ARTIFACT_DIR PSQL DATABASE_URL
// (PSQL and DATABASE_URL: the test's PostgreSQL, changed directly for the
// external-change step). Prints "ok <step>" per step, saves a screenshot per
// step, ends with "<n> passed, 0 failed" and exits 0 when all passed.
const { launchChromium } = require("./chromium.cjs");
const path = require("node:path");
const fs = require("node:fs");
const { execFileSync } = require("node:child_process");

const [base, artifacts, psql, databaseUrl] = process.argv.slice(2);
const sql = (statement) => execFileSync(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", databaseUrl, "-c", statement]);
fs.mkdirSync(artifacts, { recursive: true });
const fail = (why) => { console.error("FAIL", why); process.exit(1); };
let passed = 0;
const ok = (what) => { passed += 1; console.log("ok " + what); };
setTimeout(() => fail("timed out"), 60000).unref();

(async () => {
  const browser = await launchChromium();
  try {
    const shot = async (page, name) => {
      const file = path.join(artifacts, name + ".png");
      await page.screenshot({ path: file, fullPage: true });
      console.log("screenshot " + file);
    };
    const url = base + "/#/edit/entity/1";
    const viewport = { width: 1100, height: 720 };
    const first = await browser.newContext({ viewport });
    const second = await browser.newContext({ viewport });
    const logs = [];
    for (const ctx of [first, second]) ctx.on("page", (p) => p.on("console", (m) => logs.push(m.text())));

    const owner = await first.newPage();
    owner.on("console", (m) => logs.push("owner: " + m.text()));
    await owner.goto(url);
    await owner.waitForSelector("#role.owner");
    if (await owner.isDisabled("#title")) fail("the owner's inputs are disabled");
    await owner.waitForFunction(() => document.querySelectorAll("#editors li").length === 1);
    await shot(owner, "1-owner");
    ok("the first context is owner with enabled inputs");

    const watcher = await second.newPage();
    await watcher.goto(url);
    await watcher.waitForSelector("#role.spectator");
    for (const sel of ["#title", "#body", "#save", "#delete"]) {
      if (!(await watcher.isDisabled(sel))) fail(sel + " is enabled for the spectator");
    }
    await watcher.waitForFunction(() => document.querySelectorAll("#editors li").length === 2);
    await owner.waitForFunction(() => document.querySelectorAll("#editors li").length === 2);
    await shot(watcher, "2-spectator");
    ok("the second context is spectator with disabled inputs and sees both editors");

    const typed = "Acme Corporation — typed live";
    await owner.fill("#title", "");
    await owner.type("#title", typed, { delay: 15 });
    await owner.fill("#body", "Edited in the first window.");
    await watcher.waitForFunction((t) => document.querySelector("#title").value === t, typed);
    await watcher.waitForFunction(() => document.querySelector("#body").value === "Edited in the first window.");
    await shot(watcher, "3-spectator-sees-typing");
    ok("the owner types and the spectator sees it");

    await owner.close();
    await watcher.waitForSelector("#role.owner");
    await watcher.waitForSelector("#notice:not([hidden])");
    if (await watcher.isDisabled("#title")) fail("the promoted spectator's inputs are still disabled");
    if ((await watcher.inputValue("#title")) !== typed) fail("the unsaved form was not kept");
    await watcher.waitForFunction(() => document.querySelectorAll("#editors li").length === 1);
    await shot(watcher, "4-promoted");
    ok("the owner's page closes and the spectator is promoted, keeping the unsaved form");

    await watcher.fill("#title", "Acme Corporation (saved by the second window)");
    await watcher.click("#save");
    await watcher.waitForFunction(() => document.querySelector("#status").textContent.startsWith("Saved"));
    await watcher.waitForFunction(() => [...document.querySelectorAll("#records a")].some((a) => a.textContent.includes("saved by the second window")));
    await shot(watcher, "5-promoted-edits-and-saves");
    ok("the promoted spectator edits and saves; the list updates live");
    await watcher.waitForFunction(() => document.querySelector("#version").textContent.startsWith("Version 2"));

    // ---- a change made in the database itself arrives live ----
    const third = await first.newPage();
    await third.goto(url);
    await third.waitForSelector("#role.spectator");
    await watcher.fill("#body", "The owner's unsaved body.");
    await third.waitForFunction(() => document.querySelector("#body").value === "The owner's unsaved body.");
    sql(`UPDATE phx_records SET record = record || '{"title": "Renamed in psql"}' WHERE kind = 'entity' AND id = '1'`);
    await third.waitForFunction(() => document.querySelector("#title").value === "Renamed in psql");
    await third.waitForFunction(() => document.querySelector("#version").textContent.startsWith("Version 3"));
    await watcher.waitForFunction(() => document.querySelector("#notice").textContent.includes("Changed outside the editor"));
    if ((await watcher.inputValue("#body")) !== "The owner's unsaved body.") fail("the owner's unsaved form was lost");
    await watcher.waitForFunction(() => [...document.querySelectorAll("#records a")].some((a) => a.textContent.includes("Renamed in psql")));
    await shot(third, "6-external-change");
    ok("an UPDATE in psql reaches the spectator's form and the list live; the owner keeps the unsaved form and is told");

    // ---- the owner's save is now a conflict: reload or overwrite ----
    await watcher.click("#save");
    await watcher.waitForSelector("#conflict:not([hidden])");
    const says = await watcher.textContent("#conflict");
    if (!says.includes("Changed by someone else — reload or overwrite")) fail("conflict message: " + says);
    await shot(watcher, "7-conflict");
    await watcher.click("#overwrite");
    await watcher.waitForSelector("#conflict", { state: "hidden" });
    await watcher.waitForFunction(() => document.querySelector("#version").textContent.startsWith("Version 4"));
    await third.waitForFunction(() => document.querySelector("#body").value === "The owner's unsaved body.");
    await third.waitForFunction(() => document.querySelector("#version").textContent.startsWith("Version 4"));
    await shot(watcher, "8-overwritten");
    ok("a stale save shows the conflict; overwrite saves version 4, seen by the spectator");
    console.log(passed + " passed, 0 failed");
  } catch (err) {
    fail(err && err.stack ? err.stack : String(err));
  } finally {
    await browser.close();
  }
  process.exit(0);
})();
