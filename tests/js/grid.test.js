import { test } from "node:test";
import assert from "node:assert/strict";

import {
  MODE_CODEBOOK, MODE_ID, MISSING_RGB, idColor, normalizeEntry, gridEntries, cellColor, gridColors,
  effectiveMode, nextMode, gridLayout, hitTest, hoverText, summaryText, clampSelection,
} from "../../web/js/janus_grid.js";

function entry(rows = 24, cols = 24, withRgb = true) {
  const n = rows * cols;
  const ids = Array.from({ length: n }, (_, i) => (i * 37) % 16384);
  const rgb = withRgb ? Array.from({ length: n * 3 }, (_, i) => i % 256) : undefined;
  return { index: 0, rows, cols, ids, rgb, model: "tiny" };
}

test("idColor matches janus_core.preview.id_palette (BigInt reference)", () => {
  for (const id of [0, 1, 2, 255, 4095, 16383, 16384, 65535, 123456, 2 ** 31 - 1]) {
    const mixed = (BigInt(id) * 2654435761n) % 2n ** 32n;
    const want = [Number(mixed & 255n), Number((mixed >> 8n) & 255n), Number((mixed >> 16n) & 255n)];
    assert.deepEqual(idColor(id), want, `id ${id}`);
  }
});

test("idColor known values", () => {
  assert.deepEqual(idColor(0), [0, 0, 0]);
  // 2654435761 = 0x9E3779B1
  assert.deepEqual(idColor(1), [0xb1, 0x79, 0x37]);
});

test("normalizeEntry accepts the payload and rejects bad shapes", () => {
  const e = normalizeEntry(entry());
  assert.equal(e.rows, 24);
  assert.equal(e.cols, 24);
  assert.equal(e.ids.length, 576);
  assert.equal(e.rgb.length, 576 * 3);
  assert.equal(e.model, "tiny");
  assert.equal(normalizeEntry(null), null);
  assert.equal(normalizeEntry({ rows: 24, cols: 24, ids: [1, 2, 3] }), null);
  assert.equal(normalizeEntry({ rows: 0, cols: 24, ids: [] }), null);
  assert.equal(normalizeEntry({ rows: 2.5, cols: 2, ids: [1, 2, 3, 4, 5] }), null);
  assert.equal(normalizeEntry({ rows: 2, cols: 2, ids: "abcd" }), null);
  const noRgb = normalizeEntry({ rows: 2, cols: 2, ids: [1, 2, 3, 4], rgb: [1, 2] }, 7);
  assert.equal(noRgb.rgb, null);
  assert.equal(noRgb.index, 7);
  assert.equal(noRgb.model, "");
});

test("gridEntries keeps good entries, drops bad ones, tolerates missing output", () => {
  assert.deepEqual(gridEntries(undefined), []);
  assert.deepEqual(gridEntries({}), []);
  assert.deepEqual(gridEntries({ janus_grid: "x" }), []);
  const out = gridEntries({ janus_grid: [entry(), { rows: 1 }, { ...entry(), index: 2 }] });
  assert.equal(out.length, 2);
  assert.deepEqual(out.map((e) => e.index), [0, 2]);
});

test("gridColors by codebook uses payload rgb; by id uses idColor", () => {
  const e = normalizeEntry(entry(2, 3));
  const cb = gridColors(e, MODE_CODEBOOK);
  assert.equal(cb.length, 2 * 3 * 4);
  for (let i = 0; i < 6; i++) {
    assert.deepEqual([...cb.slice(4 * i, 4 * i + 4)], [(3 * i) % 256, (3 * i + 1) % 256, (3 * i + 2) % 256, 255]);
  }
  const byId = gridColors(e, MODE_ID);
  for (let i = 0; i < 6; i++) {
    assert.deepEqual([...byId.slice(4 * i, 4 * i + 3)], idColor(e.ids[i]));
    assert.equal(byId[4 * i + 3], 255);
  }
});

test("gridColors falls back to id colours without rgb; clamps rgb; grey for bad ids", () => {
  const e = normalizeEntry({ rows: 1, cols: 3, ids: [5, -1, 7], rgb: null });
  assert.equal(effectiveMode(e, MODE_CODEBOOK), MODE_ID);
  const c = gridColors(e, MODE_CODEBOOK);
  assert.deepEqual([...c.slice(0, 3)], idColor(5));
  assert.deepEqual([...c.slice(4, 7)], [...MISSING_RGB]);
  const e2 = normalizeEntry({ rows: 1, cols: 1, ids: [0], rgb: [-5, 300, 12.6] });
  assert.deepEqual(cellColor(e2, 0, MODE_CODEBOOK), [0, 255, 13]);
  assert.equal(effectiveMode(e2, MODE_CODEBOOK), MODE_CODEBOOK);
  assert.equal(effectiveMode(e2, MODE_ID), MODE_ID);
});

test("nextMode toggles", () => {
  assert.equal(nextMode(MODE_CODEBOOK), MODE_ID);
  assert.equal(nextMode(MODE_ID), MODE_CODEBOOK);
  assert.equal(nextMode("junk"), MODE_CODEBOOK);
});

test("gridLayout fits square cells and centres them", () => {
  const l = gridLayout(300, 240, 24, 24);
  assert.equal(l.cell, 10);
  assert.equal(l.x0, 30);
  assert.equal(l.y0, 0);
  assert.equal(l.width, 240);
  const p = gridLayout(100, 100, 24, 24, 2);
  assert.equal(p.cell, 4);
  assert.equal(p.x0, 2);
  const z = gridLayout(0, 0, 24, 24);
  assert.equal(z.cell, 0);
  assert.equal(hitTest(0, 0, z), null);
});

test("hitTest maps pixels to row/col, edges included/excluded correctly", () => {
  const l = gridLayout(240, 240, 24, 24);
  assert.deepEqual(hitTest(0, 0, l), { row: 0, col: 0, index: 0 });
  assert.deepEqual(hitTest(9.99, 9.99, l), { row: 0, col: 0, index: 0 });
  assert.deepEqual(hitTest(10, 0, l), { row: 0, col: 1, index: 1 });
  assert.deepEqual(hitTest(0, 10, l), { row: 1, col: 0, index: 24 });
  assert.deepEqual(hitTest(239.9, 239.9, l), { row: 23, col: 23, index: 575 });
  assert.equal(hitTest(240, 5, l), null);
  assert.equal(hitTest(5, 240, l), null);
  assert.equal(hitTest(-0.1, 5, l), null);
  assert.equal(hitTest(NaN, 5, l), null);
  assert.equal(hitTest(5, 5, null), null);
});

test("hitTest with letterboxing and non-square grids", () => {
  const l = gridLayout(300, 240, 24, 24); // x0 = 30
  assert.equal(hitTest(29, 100, l), null);
  assert.deepEqual(hitTest(30, 0, l), { row: 0, col: 0, index: 0 });
  assert.deepEqual(hitTest(155, 125, l), { row: 12, col: 12, index: 12 * 24 + 12 });
  const r = gridLayout(40, 20, 2, 4); // cell 10, exact
  assert.deepEqual(hitTest(35, 15, r), { row: 1, col: 3, index: 7 });
  // every cell centre round-trips
  const g = gridLayout(333, 333, 24, 24, 3);
  for (let row = 0; row < 24; row++) {
    for (let col = 0; col < 24; col++) {
      const x = g.x0 + (col + 0.5) * g.cell;
      const y = g.y0 + (row + 0.5) * g.cell;
      assert.deepEqual(hitTest(x, y, g), { row, col, index: row * 24 + col });
    }
  }
});

test("hover and summary texts", () => {
  const e = normalizeEntry(entry());
  assert.equal(hoverText(e, { row: 1, col: 2, index: 26 }), `row 1, col 2 \u00b7 token ${(26 * 37) % 16384}`);
  assert.equal(hoverText(e, null), "");
  assert.match(summaryText([], 0), /no tokens/);
  const s = summaryText([e, e], 1);
  assert.match(s, /^image 2 \/ 2/);
  assert.match(s, /24\u00d724/);
  assert.match(s, /tiny$/);
});

test("clampSelection", () => {
  assert.equal(clampSelection(3, 2), 1);
  assert.equal(clampSelection(-1, 2), 0);
  assert.equal(clampSelection("1", 4), 1);
  assert.equal(clampSelection(NaN, 4), 0);
  assert.equal(clampSelection(2, 0), 0);
});
