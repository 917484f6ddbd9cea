// Pure logic of the token inspector: grid payload -> colours, layout, and pixel -> (row, col).
// No editor imports here, so `node --test tests/js/` can load it.
//
// Payload (node `ui` output, delivered as output.janus_grid): a list with one entry per image of the batch,
//   {index, rows, cols, ids: [rows*cols ints], rgb: [rows*cols*3 ints 0..255], model}

export const MODE_CODEBOOK = "codebook";
export const MODE_ID = "id";
export const MODES = Object.freeze([MODE_CODEBOOK, MODE_ID]);
export const MISSING_RGB = Object.freeze([96, 96, 96]); // a cell without data (same grey as the live preview)

/** Colour of a token id; matches janus_core.preview.id_palette: mixed = id * 2654435761 mod 2^32. */
export function idColor(id) {
  const mixed = Math.imul(id >>> 0, 2654435761) >>> 0;
  return [mixed & 255, (mixed >>> 8) & 255, (mixed >>> 16) & 255];
}

function isInt(x) {
  return typeof x === "number" && Number.isInteger(x);
}

/**
 * Check and normalise one grid entry. Returns {index, rows, cols, ids, rgb, model} or null when unusable.
 * rgb may be missing or of the wrong length: then it is null and only "id" colouring is available.
 */
export function normalizeEntry(entry, fallbackIndex = 0) {
  if (!entry || typeof entry !== "object") return null;
  const rows = entry.rows;
  const cols = entry.cols;
  if (!isInt(rows) || !isInt(cols) || rows <= 0 || cols <= 0 || rows * cols > 1 << 20) return null;
  const ids = entry.ids;
  if (!Array.isArray(ids) && !ArrayBuffer.isView(ids)) return null;
  if (ids.length !== rows * cols) return null;
  let rgb = entry.rgb;
  if (!(Array.isArray(rgb) || ArrayBuffer.isView(rgb)) || rgb.length !== rows * cols * 3) rgb = null;
  const index = isInt(entry.index) ? entry.index : fallbackIndex;
  const model = typeof entry.model === "string" ? entry.model : "";
  return { index, rows, cols, ids, rgb, model };
}

/** output (the node's ui output) -> list of normalised entries (malformed entries dropped). */
export function gridEntries(output) {
  const raw = output && typeof output === "object" ? output.janus_grid : null;
  if (!Array.isArray(raw)) return [];
  const out = [];
  raw.forEach((e, i) => {
    const n = normalizeEntry(e, i);
    if (n !== null) out.push(n);
  });
  return out;
}

function clampByte(v) {
  v = Math.round(Number(v));
  if (!Number.isFinite(v)) return 0;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Colour [r, g, b] of one cell (flat index) in the given mode. */
export function cellColor(entry, i, mode = MODE_CODEBOOK) {
  if (mode === MODE_CODEBOOK && entry.rgb) {
    return [clampByte(entry.rgb[3 * i]), clampByte(entry.rgb[3 * i + 1]), clampByte(entry.rgb[3 * i + 2])];
  }
  const id = entry.ids[i];
  if (!isInt(id) || id < 0) return [...MISSING_RGB];
  return idColor(id);
}

/**
 * entry -> RGBA bytes (rows*cols*4, row-major), ready for ImageData.
 * mode "codebook" uses the payload's rgb (falls back to id colours when the payload has none).
 */
export function gridColors(entry, mode = MODE_CODEBOOK) {
  const n = entry.rows * entry.cols;
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    const [r, g, b] = cellColor(entry, i, mode);
    out[4 * i] = r;
    out[4 * i + 1] = g;
    out[4 * i + 2] = b;
    out[4 * i + 3] = 255;
  }
  return out;
}

/** The mode actually used: "codebook" only when the entry has rgb. */
export function effectiveMode(entry, mode) {
  return mode === MODE_CODEBOOK && entry && entry.rgb ? MODE_CODEBOOK : MODE_ID;
}

/** Next mode in the toggle. */
export function nextMode(mode) {
  return mode === MODE_CODEBOOK ? MODE_ID : MODE_CODEBOOK;
}

/**
 * Square cells, as large as fit into width x height (minus pad on each side), centred.
 * Returns {x0, y0, cell, rows, cols, width: cols*cell, height: rows*cell}; cell may be fractional.
 */
export function gridLayout(width, height, rows, cols, pad = 0) {
  const w = Math.max(0, width - 2 * pad);
  const h = Math.max(0, height - 2 * pad);
  const cell = rows > 0 && cols > 0 ? Math.max(0, Math.min(w / cols, h / rows)) : 0;
  const gw = cell * cols;
  const gh = cell * rows;
  return { x0: (width - gw) / 2, y0: (height - gh) / 2, cell, rows, cols, width: gw, height: gh };
}

/**
 * Pixel (x, y) in the layout's coordinate system -> {row, col, index} or null when outside the grid.
 * The right and bottom edges belong to no cell (half-open intervals).
 */
export function hitTest(x, y, layout) {
  if (!layout || !(layout.cell > 0)) return null;
  if (!Number.isFinite(x) || !Number.isFinite(y)) return null;
  const dx = x - layout.x0;
  const dy = y - layout.y0;
  if (dx < 0 || dy < 0 || dx >= layout.width || dy >= layout.height) return null;
  const col = Math.min(layout.cols - 1, Math.floor(dx / layout.cell));
  const row = Math.min(layout.rows - 1, Math.floor(dy / layout.cell));
  return { row, col, index: row * layout.cols + col };
}

/** Text of the hover line: "row 3, col 17 · token 4093" (plain text, shown with textContent). */
export function hoverText(entry, hit) {
  if (!entry || !hit) return "";
  const id = entry.ids[hit.index];
  return `row ${hit.row}, col ${hit.col} \u00b7 token ${id}`;
}

/** Summary line: "image 2 / 4 · 24×24 · 311 distinct tokens · model-name". */
export function summaryText(entries, selected) {
  if (!entries.length) return "no tokens yet \u2013 run the graph";
  const e = entries[Math.max(0, Math.min(entries.length - 1, selected))];
  const distinct = new Set(Array.from(e.ids)).size;
  const parts = [`image ${selected + 1} / ${entries.length}`, `${e.rows}\u00d7${e.cols}`, `${distinct} distinct`];
  if (e.model) parts.push(e.model);
  return parts.join(" \u00b7 ");
}

/** Clamp a selection into the batch (0 when empty). */
export function clampSelection(selected, count) {
  if (!(count > 0)) return 0;
  const s = Math.trunc(Number(selected));
  if (!Number.isFinite(s) || s < 0) return 0;
  return Math.min(s, count - 1);
}
