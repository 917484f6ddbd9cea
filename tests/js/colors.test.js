import { test } from "node:test";
import assert from "node:assert/strict";

import { SOCKET_COLORS, applySocketColors, hasSocketColors } from "../../web/js/janus_colors.js";

test("the four Janus types have distinct colours", () => {
  assert.deepEqual(Object.keys(SOCKET_COLORS).sort(), ["JANUS_COND", "JANUS_LM", "JANUS_TOKENS", "JANUS_VQ"]);
  assert.equal(new Set(Object.values(SOCKET_COLORS)).size, 4);
  for (const c of Object.values(SOCKET_COLORS)) assert.match(c, /^#[0-9A-F]{6}$/i);
});

test("applySocketColors writes only into usable tables", () => {
  const a = { IMAGE: "#64B5F6" };
  const frozen = Object.freeze({});
  const n = applySocketColors([a, undefined, null, "x", [], frozen]);
  assert.equal(n, 1); // the frozen one throws in strict mode and is skipped
  assert.equal(a.IMAGE, "#64B5F6");
  assert.equal(a.JANUS_TOKENS, SOCKET_COLORS.JANUS_TOKENS);
  assert.equal(hasSocketColors(a), true);
  assert.equal(hasSocketColors({}), false);
  assert.equal(hasSocketColors(null), false);
});
