// The demo page in headless Chromium (playwright-core, the system browser),
// opened at an address: does it say that the origin check refuses it?
// Usage: node origin_notice.cjs URL refused|allowed SCREENSHOT [TEXT...]
// refused: the notice is visible at once, names the address, the address
//   that works and the flag (the TEXTs), and stays after the socket failed; the page
//   never connects.
// allowed: the page connects and no notice is shown.
// Prints "ok ..." per check and the notice's text; exits 0 when all passed.
const { launchChromium } = require("./chromium.cjs");

const [url, expect, screenshot] = process.argv.slice(2);
const fail = (why) => { console.error("FAIL", why); process.exit(1); };
setTimeout(() => fail("timed out"), 60000).unref();

(async () => {
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    await page.goto(url);
    const notice = page.locator("#origin-notice");
    if (expect === "refused") {
      await notice.waitFor({ state: "visible", timeout: 10000 });
      const text = await notice.textContent();
      console.log("notice: " + text);
      const host = new URL(url).host;
      for (const part of ["refused by the server's origin check", "http://" + host]) {
        if (!text.includes(part)) fail("the notice does not say " + JSON.stringify(part) + ": " + text);
      }
      console.log("ok the notice says the address is refused by the origin check");
      const extra = process.argv.slice(5);
      for (const part of extra) {
        if (!text.includes(part)) fail("the notice does not name " + JSON.stringify(part) + ": " + text);
      }
      console.log("ok the notice names what works: " + extra.join(" / "));
      // The socket tries and fails, before ever opening: the notice stays.
      await page.waitForFunction(() => document.querySelector("#connection").textContent === "refused",
        null, { timeout: 15000 });
      if (!(await notice.isVisible())) fail("the notice went away after the socket failed");
      console.log("ok after the socket failed the page says refused and keeps the notice");
    } else {
      await page.waitForFunction(() => document.querySelector("#connection").textContent === "connected",
        null, { timeout: 15000 });
      console.log("ok the page connects");
      if (await notice.isVisible()) fail("a notice is shown: " + (await notice.textContent()));
      console.log("ok no notice is shown");
    }
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log("screenshot " + screenshot);
    console.log("all checks passed");
  } catch (e) {
    fail(e.stack || String(e));
  } finally {
    await browser.close();
  }
})();
