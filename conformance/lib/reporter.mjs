// A node:test reporter: one line per case as it finishes, the failures' details,
// then a last line "N passed, N failed, N skipped" that run.sh relies on.
export default async function* reporter(source) {
  let passed = 0, failed = 0, skipped = 0, todo = 0;
  const failures = [];
  for await (const event of source) {
    const { type, data } = event;
    if (type !== "test:pass" && type !== "test:fail") {
      if (type === "test:stderr" || type === "test:stdout") {
        // Output a case printed outside the reporter (e.g. a crash in a file).
        const msg = data.message || "";
        if (msg.trim()) yield `  | ${msg.trimEnd().split("\n").join("\n  | ")}\n`;
      }
      continue;
    }
    if (data.details && data.details.type === "suite") {
      // A describe() block: its cases are counted one by one; count the block only
      // when it failed on its own (e.g. a hook threw).
      if (type === "test:fail" && !(data.details.error && data.details.error.failureType === "subtestsFailed")) {
        failed += 1;
        failures.push({ name: data.name, file: data.file, error: data.details.error });
        yield `not ok - ${data.name} (suite)\n`;
      }
      continue;
    }
    const ms = data.details ? Math.round(data.details.duration_ms) : 0;
    if (data.skip !== undefined && data.skip !== false) {
      skipped += 1;
      yield `skip   - ${data.name}${typeof data.skip === "string" ? " # " + data.skip : ""}\n`;
    } else if (data.todo !== undefined && data.todo !== false) {
      todo += 1;
      yield `todo   - ${data.name}\n`;
    } else if (type === "test:pass") {
      passed += 1;
      yield `ok     - ${data.name} (${ms} ms)\n`;
    } else {
      failed += 1;
      failures.push({ name: data.name, file: data.file, error: data.details && data.details.error });
      yield `not ok - ${data.name} (${ms} ms)\n`;
    }
  }
  if (failures.length) {
    yield `\nFailures:\n`;
    for (const f of failures) {
      yield `\n* ${f.name}\n`;
      yield `${indent(describe(f.error))}\n`;
    }
  }
  // run.sh prints the final "N passed, N failed, N skipped" line from the per-case lines.
  yield `\nsummary: ${passed} passed, ${failed} failed, ${skipped} skipped${todo ? `, ${todo} todo` : ""}\n`;
}

function describe(err) {
  if (!err) return "(no error details)";
  const inner = err.cause && err.failureType === "testCodeFailure" ? err.cause : err.cause || err;
  let text = inner && inner.message ? inner.message : String(inner);
  if (err.failureType === "testTimeoutFailure") text = "case timed out: " + (err.message || "");
  if (inner && inner.code === "ERR_ASSERTION" && inner.actual !== undefined && !/\n/.test(text)) {
    text += `\nactual:   ${safe(inner.actual)}\nexpected: ${safe(inner.expected)}`;
  }
  return text;
}

function safe(v) {
  try { return JSON.stringify(v); } catch (_) { return String(v); }
}

function indent(s) {
  return String(s).split("\n").slice(0, 40).map((l) => "    " + l).join("\n");
}
