import { test } from "node:test";
import assert from "node:assert/strict";

import { SOCKET_COLORS, applySocketColors, hasSocketColors } from "../../web/js/janus_colors.js";

test("the four Janus types have distinct colours", () => {
  assert.deepEqual(Object.keys(SOCKET_COLORS).sort(), ["JANUS_COND", "JANUS_LM", "JANUS_TOKENS", "JANUS_VQ"]);
  assert.equal(new Set(Object.values(SOCKET_COLORS)).size, 4);
  for (const c of Object.values(SOCKET_COLORS)) assert.match(c, /^#[0-9A-F]{6}$/i);
});

test("applySocketColors fills missing / emptied entries only, skips unusable tables", () => {
  const a = { IMAGE: "#64B5F6", JANUS_LM: "" }; // "" = what the editor's palette loader writes for every type
  const custom = { JANUS_VQ: "#123456" }; // a user's palette colour is kept
  const frozen = Object.freeze({});
  const n = applySocketColors([a, undefined, null, "x", [], frozen, custom]);
  assert.equal(n, 4 + 3);
  assert.equal(a.IMAGE, "#64B5F6");
  assert.equal(a.JANUS_LM, SOCKET_COLORS.JANUS_LM);
  assert.equal(a.JANUS_TOKENS, SOCKET_COLORS.JANUS_TOKENS);
  assert.equal(custom.JANUS_VQ, "#123456");
  assert.equal(hasSocketColors(a), true);
  assert.equal(hasSocketColors(frozen), false);
  assert.equal(applySocketColors([a]), 0); // idempotent
  assert.equal(hasSocketColors({ ...a, JANUS_COND: "" }), false);
  assert.equal(hasSocketColors(null), false);
});
