// Headless Chromium for the page tests: Debian's /usr/bin/chromium (or
// $CHROMIUM) driven by playwright-core, with the flags this machine's closed
// network needs (no background networking, no component updates, no sync).
// playwright-core gives every launch a fresh temporary user-data-dir.
const { chromium } = require("playwright-core");

function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

module.exports = { launchChromium };
