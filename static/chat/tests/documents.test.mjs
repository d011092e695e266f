import assert from "node:assert/strict";
import { test } from "node:test";

import { citationItems, progressLabel, refusalText } from "../documents.js";

test("progress says what the ingestion is doing", () => {
  assert.equal(progressLabel({ status: "processing", progress: 0.5 }), "processing 50%");
  assert.equal(progressLabel({ status: "ready", pages: 3 }), "ready · 3 pages");
  assert.equal(progressLabel({ status: "failed", error: "over budget" }), "failed: over budget");
  assert.equal(progressLabel({ status: "pending" }), "waiting to be processed");
});

test("citations become links to document pages only", () => {
  const items = citationItems([
    { n: 1, name: "hr.pdf", page: 2, url: "/documents/4/?chunk=9#chunk-9" },
    { n: 2, name: "evil", page: 1, url: "javascript:alert(1)" },
  ]);
  assert.deepEqual(items, [{ href: "/documents/4/?chunk=9#chunk-9", label: "[1] hr.pdf, p. 2" }]);
  assert.deepEqual(citationItems(undefined), []);
});

test("a refusal shows the server's reason", () => {
  assert.equal(
    refusalText(415, { error: { detail: "x.exe: this kind of file is not accepted" } }),
    "x.exe: this kind of file is not accepted",
  );
  assert.equal(refusalText(413, null), "This file is too large.");
});
