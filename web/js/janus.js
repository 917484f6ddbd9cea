// Editor-side extension of the Janus node pack:
//   - socket colours of JANUS_LM / JANUS_VQ / JANUS_COND / JANUS_TOKENS
//   - a live status line under Janus Token Sampler and Describe Image nodes ("token 312 / 576 · 41 tok/s · ETA 6 s ·
//     batch 4")
//   - a download bar under Janus Model Loader nodes while a checkpoint is fetched
//   - a token inspector (24×24 grid, hover, colour toggle, batch selector) on Janus Token Map / Tokens Info
//   - the answers of Janus Describe Image, shown on the node after a run (read-only text box)
// Every editor hook is feature-detected: an editor without one of them just misses that feature.
// Strings from the server (file names, model names) are only ever written with textContent / fillText.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { SOCKET_COLORS, applySocketColors, hasSocketColors } from "./janus_colors.js";
import { SAMPLER_EVENT, DOWNLOAD_EVENT, StatusBoard, nodeKey } from "./janus_status.js";
import {
  MODE_CODEBOOK, MODE_ID, effectiveMode, nextMode, gridEntries, gridColors, gridLayout, hitTest, hoverText,
  summaryText, clampSelection,
} from "./janus_grid.js";

const EXT_NAME = "janus_ar.web";
const INSPECTOR_CLASSES = new Set(["JanusARTokenMap", "JanusARTokensInfo"]);
const ANSWER_CLASSES = new Set(["JanusARDescribe"]);
const DOWNLOAD_LINGER_MS = 1500;
const STRIP_H = 20;

const board = new StatusBoard();
const touched = new Map(); // key -> node, for redraws when a status is cleared

// ---------------------------------------------------------------------------------------------- helpers

function safe(fn, ...args) {
  try {
    return fn(...args);
  } catch (err) {
    console.warn(`[${EXT_NAME}]`, err);
    return undefined;
  }
}

function classOf(node) {
  return node?.comfyClass ?? node?.constructor?.comfyClass ?? node?.type ?? null;
}

function rootGraph() {
  return app?.rootGraph ?? app?.graph ?? null;
}

function lookup(graph, id) {
  if (!graph || typeof graph.getNodeById !== "function") return null;
  const asNum = Number(id);
  return (Number.isInteger(asNum) ? graph.getNodeById(asNum) : null) ?? graph.getNodeById(id) ?? null;
}

/** The node of an execution id: "12" in the root graph, "5:12" inside subgraph node 5, and so on. */
function findNode(key) {
  if (key === null || key === undefined) return null;
  const parts = String(key).split(":");
  let graph = rootGraph();
  let node = null;
  for (const part of parts) {
    node = lookup(graph, part);
    if (!node) return null;
    graph = node.subgraph ?? null;
  }
  return node;
}

function redraw(node) {
  if (node && typeof node.setDirtyCanvas === "function") node.setDirtyCanvas(true, false);
  else if (app?.canvas && typeof app.canvas.setDirty === "function") app.canvas.setDirty(true, false);
  else if (rootGraph() && typeof rootGraph().setDirtyCanvas === "function") rootGraph().setDirtyCanvas(true, false);
}

function keyOfNode(node) {
  return node?.__janusKey ?? String(node?.id);
}

// ------------------------------------------------------------------------------------------ socket colours

function colourTables() {
  const canvasClass = globalThis.LGraphCanvas ?? app?.canvas?.constructor;
  return [
    canvasClass?.link_type_colors,
    app?.canvas?.default_connection_color_byType,
    app?.canvas?.default_connection_color_byTypeOff,
  ];
}

/** (Re)apply the socket colours when a table lacks them (a colour-palette change may replace the tables). */
function ensureSocketColors() {
  const tables = colourTables().filter((t) => t && typeof t === "object" && !hasSocketColors(t, SOCKET_COLORS));
  if (tables.length && applySocketColors(tables, SOCKET_COLORS) > 0) {
    // drawn with the old colours in this frame: draw again
    if (app?.canvas && typeof app.canvas.setDirty === "function") app.canvas.setDirty(true, true);
  }
}

// ------------------------------------------------------------------------------------------- status strip

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  if (typeof ctx.roundRect === "function") ctx.roundRect(x, y, w, h, r);
  else ctx.rect(x, y, w, h);
}

function fitText(ctx, text, maxWidth) {
  if (ctx.measureText(text).width <= maxWidth) return text;
  let t = text;
  while (t.length > 1 && ctx.measureText(`${t}\u2026`).width > maxWidth) t = t.slice(0, -1);
  return `${t}\u2026`;
}

/** Draw one status strip under the node body: a progress fill and the text. */
function drawStrip(ctx, node, y, status, colour) {
  ctx.save();
  ctx.font = "12px sans-serif";
  const nodeWidth = Math.max(60, node.size?.[0] ?? 200);
  // as wide as the node, or wider (up to 460 px) when the text needs it
  const w = Math.max(nodeWidth, Math.min(460, ctx.measureText(status.text).width + 14));
  roundRect(ctx, 0, y, w, STRIP_H, 4);
  ctx.fillStyle = "rgba(20, 20, 24, 0.85)";
  ctx.fill();
  if (typeof status.fraction === "number") {
    ctx.save();
    roundRect(ctx, 0, y, w, STRIP_H, 4);
    ctx.clip();
    ctx.fillStyle = colour;
    ctx.globalAlpha = 0.55;
    ctx.fillRect(0, y, w * status.fraction, STRIP_H);
    ctx.restore();
  }
  ctx.fillStyle = "#f2f2f2";
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  ctx.fillText(fitText(ctx, status.text, w - 12), 6, y + STRIP_H / 2 + 0.5);
  ctx.restore();
}

function drawStatus(node, ctx) {
  const { sampler, download } = board.get(keyOfNode(node));
  if (!sampler && !download) return;
  let y = node.flags?.collapsed ? 4 : (node.size?.[1] ?? 0) + 6;
  if (download) {
    drawStrip(ctx, node, y, download, SOCKET_COLORS.JANUS_VQ);
    y += STRIP_H + 3;
  }
  if (sampler) drawStrip(ctx, node, y, sampler, SOCKET_COLORS.JANUS_TOKENS);
}

function hookForeground(node) {
  const previous = node.onDrawForeground;
  node.onDrawForeground = function (ctx, ...rest) {
    const r = previous?.apply(this, [ctx, ...rest]);
    safe(ensureSocketColors); // cheap check; the editor's palette loader may have reset the colours
    safe(drawStatus, this, ctx);
    return r;
  };
}

// ---------------------------------------------------------------------------------------- live messages

function onSamplerStatus(event) {
  const payload = event?.detail;
  const key = board.applySampler(payload);
  if (key === null) return;
  const node = findNode(key);
  if (node) {
    node.__janusKey = key;
    touched.set(key, node);
  }
  redraw(node);
}

const downloadTimers = new Map();

function onDownloadProgress(event) {
  const payload = event?.detail;
  const key = board.applyDownload(payload);
  if (key === null) return;
  const node = findNode(key);
  if (node) {
    node.__janusKey = key;
    touched.set(key, node);
  }
  clearTimeout(downloadTimers.get(key));
  downloadTimers.delete(key);
  if (board.get(key).download?.complete) {
    downloadTimers.set(key, setTimeout(() => {
      board.download.delete(key);
      downloadTimers.delete(key);
      redraw(touched.get(key));
    }, DOWNLOAD_LINGER_MS));
  }
  redraw(node);
}

function clearAll() {
  for (const key of board.clearAll()) redraw(touched.get(key));
  for (const t of downloadTimers.values()) clearTimeout(t);
  downloadTimers.clear();
  touched.clear();
  redraw(null);
}

function onExecuting(event) {
  // Older servers mark the end of a prompt with executing(node = null).
  const d = event?.detail;
  if (d === null || d === undefined || (typeof d === "object" && d.node === null)) clearAll();
}

// ------------------------------------------------------------------------------------------ the inspector

function makeButton(label, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.title = title;
  Object.assign(b.style, {
    font: "11px sans-serif", padding: "1px 6px", cursor: "pointer", borderRadius: "4px", whiteSpace: "nowrap",
    flex: "0 0 auto",
    border: "1px solid var(--border-color, #555)", background: "var(--comfy-input-bg, #222)",
    color: "var(--input-text, #ddd)",
  });
  return b;
}

function createInspectorDom(state) {
  const root = document.createElement("div");
  root.className = "janus-inspector";
  Object.assign(root.style, {
    display: "flex", flexDirection: "column", gap: "3px", width: "100%", height: "100%",
    boxSizing: "border-box", font: "11px sans-serif", color: "var(--input-text, #ddd)",
  });

  const bar = document.createElement("div");
  Object.assign(bar.style, { display: "flex", alignItems: "center", gap: "4px", flex: "0 0 auto" });
  const prev = makeButton("\u25c0", "previous image of the batch");
  const label = document.createElement("span");
  Object.assign(label.style, { flex: "1 1 auto", overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" });
  const next = makeButton("\u25b6", "next image of the batch");
  const mode = makeButton("", "colour: by codebook vector (the model's preview palette) or by token id; click to switch");
  bar.append(prev, label, next, mode);

  const canvas = document.createElement("canvas");
  Object.assign(canvas.style, { flex: "1 1 auto", width: "100%", minHeight: "0", display: "block", cursor: "crosshair" });

  const hover = document.createElement("div");
  Object.assign(hover.style, { flex: "0 0 auto", minHeight: "14px", whiteSpace: "nowrap", overflow: "hidden" });

  root.append(bar, canvas, hover);

  prev.addEventListener("click", () => state.select(state.selected - 1));
  next.addEventListener("click", () => state.select(state.selected + 1));
  mode.addEventListener("click", () => state.toggleMode());
  canvas.addEventListener("mousemove", (e) => state.hoverAt(e.offsetX, e.offsetY, canvas.clientWidth, canvas.clientHeight));
  canvas.addEventListener("mouseleave", () => state.hoverAt(NaN, NaN, 0, 0));
  canvas.addEventListener("wheel", (e) => {
    if (e.shiftKey) {
      state.select(state.selected + (e.deltaY > 0 ? 1 : -1));
      e.preventDefault();
    }
  }, { passive: false });

  return { root, canvas, label, hover, prev, next, mode };
}

function paintGrid(ctx, entry, mode, width, height, hit, pad = 2) {
  const layout = gridLayout(width, height, entry?.rows ?? 24, entry?.cols ?? 24, pad);
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "rgba(0,0,0,0.35)";
  ctx.fillRect(layout.x0, layout.y0, layout.width, layout.height);
  if (!entry || !(layout.cell > 0)) return layout;
  const colours = gridColors(entry, effectiveMode(entry, mode));
  if (typeof ImageData === "function" && typeof document !== "undefined") {
    const off = document.createElement("canvas");
    off.width = entry.cols;
    off.height = entry.rows;
    off.getContext("2d").putImageData(new ImageData(colours, entry.cols, entry.rows), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, layout.x0, layout.y0, layout.width, layout.height);
  } else {
    for (let i = 0; i < entry.rows * entry.cols; i++) {
      ctx.fillStyle = `rgb(${colours[4 * i]},${colours[4 * i + 1]},${colours[4 * i + 2]})`;
      ctx.fillRect(layout.x0 + (i % entry.cols) * layout.cell, layout.y0 + Math.floor(i / entry.cols) * layout.cell,
        Math.ceil(layout.cell), Math.ceil(layout.cell));
    }
  }
  if (hit) {
    ctx.lineWidth = Math.max(1, layout.cell / 8);
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(layout.x0 + hit.col * layout.cell, layout.y0 + hit.row * layout.cell, layout.cell, layout.cell);
    ctx.strokeStyle = "#000000";
    ctx.lineWidth = Math.max(1, layout.cell / 16);
    ctx.strokeRect(layout.x0 + hit.col * layout.cell - ctx.lineWidth * 2, layout.y0 + hit.row * layout.cell - ctx.lineWidth * 2,
      layout.cell + ctx.lineWidth * 4, layout.cell + ctx.lineWidth * 4);
  }
  return layout;
}

class InspectorState {
  constructor(node) {
    this.node = node;
    this.entries = [];
    this.selected = 0;
    this.hit = null;
    this.dom = null;
    this.raw = null;
    if (!node.properties || typeof node.properties !== "object") node.properties = {};
  }

  get mode() {
    return this.node.properties.janus_colour_mode === MODE_ID ? MODE_ID : MODE_CODEBOOK;
  }

  get entry() {
    return this.entries[this.selected] ?? null;
  }

  setOutput(output) {
    const raw = output?.janus_grid;
    if (raw === undefined || raw === this.raw) return; // the same message twice (onExecuted + executed event)
    this.raw = raw;
    this.entries = gridEntries(output);
    this.selected = clampSelection(this.selected, this.entries.length);
    this.hit = null;
    this.update();
  }

  select(i) {
    const n = this.entries.length;
    if (!n) return;
    this.selected = ((Math.trunc(i) % n) + n) % n;
    this.hit = null;
    this.update();
  }

  toggleMode() {
    this.node.properties.janus_colour_mode = nextMode(this.mode);
    this.update();
  }

  hoverAt(x, y, w, h) {
    const e = this.entry;
    const hit = e ? hitTest(x, y, gridLayout(w, h, e.rows, e.cols, 2)) : null;
    const same = (hit === null && this.hit === null) || (hit && this.hit && hit.index === this.hit.index);
    this.hit = hit;
    if (!same) this.update();
  }

  /** Refresh the DOM widget (textContent only) and the canvas. */
  update() {
    const d = this.dom;
    if (d) {
      const e = this.entry;
      d.label.textContent = summaryText(this.entries, this.selected);
      d.label.title = d.label.textContent; // attribute, not HTML
      d.prev.disabled = d.next.disabled = this.entries.length < 2;
      const m = e ? effectiveMode(e, this.mode) : this.mode;
      d.mode.textContent = m === MODE_CODEBOOK ? "by codebook" : "by token id";
      d.hover.textContent = this.hit ? hoverText(e, this.hit) : e ? "hover a cell for (row, col, token id)" : "";
      this.paintDom();
    }
    redraw(this.node);
  }

  paintDom() {
    const c = this.dom?.canvas;
    if (!c) return;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!(w > 0 && h > 0)) return;
    const dpr = globalThis.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    paintGrid(ctx, this.entry, this.mode, w, h, this.hit);
  }
}

/** DOM widget (current editors). Returns true when it worked. */
function addDomInspector(node, state) {
  if (typeof node.addDOMWidget !== "function" || typeof document === "undefined") return false;
  const dom = createInspectorDom(state);
  state.dom = dom;
  const widget = node.addDOMWidget("janus_inspector", "janus_inspector", dom.root, {
    serialize: false, // never part of widgets_values or the API prompt: saved workflows keep their widget order
    hideOnZoom: false,
    getMinHeight: () => 160,
    getValue: () => undefined,
    setValue: () => {},
  });
  if (widget) widget.serialize = false;
  if (typeof ResizeObserver === "function") {
    const ro = new ResizeObserver(() => state.paintDom());
    ro.observe(dom.canvas);
    const removed = node.onRemoved;
    node.onRemoved = function (...args) {
      ro.disconnect();
      return removed?.apply(this, args);
    };
  }
  state.update();
  return true;
}

/** Canvas-drawn fallback for editors without DOM widgets: draw + click to toggle, shift-click for next image. */
function addCanvasInspector(node, state) {
  if (typeof node.addCustomWidget !== "function") return false;
  const widget = {
    name: "janus_inspector",
    type: "janus_inspector",
    value: undefined,
    serialize: false,
    options: { serialize: false },
    layout: null,
    y: 0,
    computeSize(width) {
      return [width, Math.max(160, width)];
    },
    draw(ctx, n, width, y) {
      this.y = y;
      const h = Math.max(160, width) - 20;
      ctx.save();
      ctx.translate(0, y);
      this.layout = paintGrid(ctx, state.entry, state.mode, width, h, state.hit, 6);
      ctx.fillStyle = "#ddd";
      ctx.font = "11px sans-serif";
      ctx.textBaseline = "middle";
      const text = state.hit ? hoverText(state.entry, state.hit) : summaryText(state.entries, state.selected);
      ctx.fillText(fitText(ctx, text, width - 12), 6, h + 10);
      ctx.restore();
    },
    mouse(event, pos) {
      const type = event?.type;
      if (type !== "pointerdown" && type !== "mousedown") return false;
      if (event.shiftKey) state.select(state.selected + 1);
      else state.toggleMode();
      return true;
    },
  };
  node.addCustomWidget(widget);
  const move = node.onMouseMove;
  node.onMouseMove = function (e, pos, ...rest) {
    const r = move?.apply(this, [e, pos, ...rest]);
    if (Array.isArray(pos) && widget.layout) {
      const hit = state.entry ? hitTest(pos[0], pos[1] - widget.y, widget.layout) : null;
      if ((hit?.index ?? -1) !== (state.hit?.index ?? -1)) {
        state.hit = hit;
        redraw(this);
      }
    }
    return r;
  };
  return true;
}

function setupInspector(node) {
  const state = new InspectorState(node);
  node.__janusInspector = state;
  const ok = addDomInspector(node, state) || addCanvasInspector(node, state);
  if (!ok) return;
  if (Array.isArray(node.size) && typeof node.setSize === "function") {
    node.setSize([Math.max(node.size[0], 260), Math.max(node.size[1], 300)]);
  }
  const executed = node.onExecuted;
  node.onExecuted = function (output, ...rest) {
    const r = executed?.apply(this, [output, ...rest]);
    safe(() => state.setOutput(output));
    return r;
  };
}

function onExecuted(event) {
  const d = event?.detail;
  if (!d || typeof d !== "object" || !d.output || d.output.janus_grid === undefined) return;
  const node = findNode(d.display_node ?? d.node);
  node?.__janusInspector?.setOutput(d.output);
}

// ------------------------------------------------------------------------------------------ answers

/** The text a describe node shows: one answer, or each answer under "image i" when the batch had several; then
 * the run's notes (e.g. "answers capped at 285 tokens: ..."), each on a line starting "note:". */
export function answerText(texts, notes) {
  if (!Array.isArray(texts)) return "";
  const parts = texts.map((t) => String(t ?? ""));
  const body = parts.length <= 1 ? parts[0] ?? "" : parts.map((t, i) => `[image ${i + 1}]\n${t}`).join("\n\n");
  const extra = Array.isArray(notes) ? notes.filter((n) => typeof n === "string" && n.trim()) : [];
  return extra.length ? `${body}\n\n${extra.map((n) => `note: ${n.trim()}`).join("\n")}` : body;
}

/** A read-only box under the widgets holding the last answers (value only: nothing is parsed as HTML). */
function setupAnswerView(node) {
  let box = null;
  let drawn = "";
  if (typeof node.addDOMWidget === "function" && typeof document !== "undefined") {
    box = document.createElement("textarea");
    box.readOnly = true;
    box.placeholder = "the answers appear here after a run";
    Object.assign(box.style, { width: "100%", boxSizing: "border-box", font: "12px sans-serif", resize: "none" });
    const widget = node.addDOMWidget("janus_answer", "janus_answer", box, {
      serialize: false, // never part of widgets_values: saved workflows keep their widget order
      getMinHeight: () => 90,
      getValue: () => undefined,
      setValue: () => {},
    });
    if (widget) widget.serialize = false;
  } else if (typeof node.addCustomWidget === "function") {
    node.addCustomWidget({
      name: "janus_answer", type: "janus_answer", value: undefined, serialize: false, options: { serialize: false },
      computeSize: (width) => [width, 60],
      draw(ctx, n, width, y) {
        ctx.fillStyle = "#ddd";
        ctx.font = "12px sans-serif";
        ctx.textBaseline = "top";
        drawn.split("\n").slice(0, 4).forEach((line, i) => ctx.fillText(fitText(ctx, line, width - 12), 6, y + 4 + 14 * i));
      },
    });
  }
  const executed = node.onExecuted;
  node.onExecuted = function (output, ...rest) {
    const r = executed?.apply(this, [output, ...rest]);
    safe(() => {
      if (!Array.isArray(output?.text)) return;
      drawn = answerText(output.text, output.janus_notes);
      if (box) box.value = drawn;
      node.__janusAnswer = drawn;
      this.setDirtyCanvas?.(true, true);
    });
    return r;
  };
}

// ------------------------------------------------------------------------------------------ registration

function onNodeCreated(node) {
  const cls = classOf(node);
  if (typeof cls === "string" && cls.startsWith("JanusAR")) hookForeground(node);
  if (INSPECTOR_CLASSES.has(cls)) setupInspector(node);
  if (ANSWER_CLASSES.has(cls)) setupAnswerView(node);
}

function listen(type, handler) {
  if (api && typeof api.addEventListener === "function") {
    api.addEventListener(type, (e) => safe(handler, e));
  }
}

const extension = {
  name: EXT_NAME,
  setup() {
    safe(ensureSocketColors);
    listen(SAMPLER_EVENT, onSamplerStatus);
    listen(DOWNLOAD_EVENT, onDownloadProgress);
    listen("executed", onExecuted);
    listen("executing", onExecuting);
    for (const type of ["execution_start", "execution_success", "execution_error", "execution_interrupted"]) {
      listen(type, clearAll);
    }
  },
  nodeCreated(node) {
    safe(onNodeCreated, node);
  },
};

if (app && typeof app.registerExtension === "function") {
  app.registerExtension(extension);
}

// For the browser check and for other extensions: read-only hooks into the state (no editor needed).
export const janusDebug = { board, findNode, nodeKey, ensureSocketColors };
