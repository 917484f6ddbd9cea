// Loads the real extension entry (web/js/janus.js) against a minimal editor stub that lacks most hooks
// (no DOM, no addDOMWidget, no colour tables): it must register, survive, and still route the messages.
import { test } from "node:test";
import assert from "node:assert/strict";
import { register } from "node:module";

register(new URL("./stubs/hooks.mjs", import.meta.url));

class FakeApi {
  constructor() {
    this.handlers = new Map();
  }
  addEventListener(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
  }
  emit(type, detail) {
    for (const fn of this.handlers.get(type) ?? []) fn({ type, detail });
  }
}

class FakeNode {
  constructor(id, comfyClass) {
    this.id = id;
    this.comfyClass = comfyClass;
    this.size = [400, 120];
    this.properties = {};
    this.dirty = 0;
  }
  setDirtyCanvas() {
    this.dirty += 1;
  }
}

/** An editor node that has canvas custom widgets (and no DOM widgets). */
function withCustomWidgets(node) {
  node.widgets = [];
  node.addCustomWidget = (w) => {
    node.widgets.push(w);
    return w;
  };
  return node;
}

function recordingCtx() {
  const calls = [];
  const handler = {
    get(target, prop) {
      if (prop === "calls") return calls;
      if (prop === "measureText") return (t) => ({ width: String(t).length * 6 });
      if (prop in target) return target[prop];
      return (...args) => calls.push([prop, ...args]);
    },
    set(target, prop, value) {
      target[prop] = value;
      return true;
    },
  };
  return new Proxy({}, handler);
}

const registered = [];
const nodes = new Map();
const fakeApi = new FakeApi();
globalThis.__janusTestApi = fakeApi;
globalThis.__janusTestApp = {
  registerExtension: (ext) => registered.push(ext),
  graph: { getNodeById: (id) => nodes.get(String(id)) ?? null },
};

const mod = await import("../../web/js/janus.js");

test("registers exactly one extension with setup and nodeCreated", () => {
  assert.equal(registered.length, 1);
  assert.equal(typeof registered[0].setup, "function");
  assert.equal(typeof registered[0].nodeCreated, "function");
  registered[0].setup(); // no colour tables, no LGraphCanvas: must not throw
});

test("sampler status reaches the node and is drawn with fillText, then cleared on success", () => {
  const ext = registered[0];
  const node = new FakeNode(12, "JanusARSampler");
  nodes.set("12", node);
  ext.nodeCreated(node);
  assert.equal(typeof node.onDrawForeground, "function");
  fakeApi.emit("janus.sampler.status", {
    node: "12", step: 312, total: 576, batch: 4, tokens_per_s: 41.2, eta_s: 6.4, state: "running",
  });
  assert.ok(node.dirty > 0);
  const ctx = recordingCtx();
  node.onDrawForeground(ctx);
  const texts = ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
  assert.deepEqual(texts, ["token 312 / 576 \u00b7 41 tok/s \u00b7 ETA 6 s \u00b7 batch 4"]);
  fakeApi.emit("janus.sampler.status", { node: "12", step: null, total: 576, batch: 4, state: "success" });
  const ctx2 = recordingCtx();
  node.onDrawForeground(ctx2);
  assert.equal(ctx2.calls.filter((c) => c[0] === "fillText").length, 0);
});

test("execution_interrupted / execution_error clear every status line", () => {
  const node = new FakeNode(13, "JanusARSampler");
  nodes.set("13", node);
  registered[0].nodeCreated(node);
  for (const ev of ["execution_interrupted", "execution_error"]) {
    fakeApi.emit("janus.sampler.status", { node: "13", step: 5, total: 576, batch: 1, state: "running" });
    assert.ok(mod.janusDebug.board.get("13").sampler);
    fakeApi.emit(ev, { prompt_id: "p" });
    assert.equal(mod.janusDebug.board.get("13").sampler, null);
  }
});

test("download progress on the loader; malformed events are ignored without throwing", () => {
  const node = new FakeNode(3, "JanusARLoader");
  nodes.set("3", node);
  registered[0].nodeCreated(node);
  fakeApi.emit("janus.download.progress", { node: "3", file: "x/model.safetensors", done: 5e8, total: 2e9 });
  const ctx = recordingCtx();
  node.onDrawForeground(ctx);
  const texts = ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
  assert.deepEqual(texts, ["downloading model.safetensors \u00b7 500 MB / 2.00 GB \u00b7 25 %"]);
  fakeApi.emit("janus.download.progress", null);
  fakeApi.emit("janus.sampler.status", "garbage");
  fakeApi.emit("janus.sampler.status", { node: "999", step: 1, total: 576, state: "running" }); // unknown node
  fakeApi.emit("executing", null);
  assert.equal(mod.janusDebug.board.get("3").download, null);
});

test("inspector nodes survive an editor without DOM or custom widgets; other nodes are untouched", () => {
  const node = new FakeNode(7, "JanusARTokenMap");
  registered[0].nodeCreated(node);
  assert.ok(node.__janusInspector);
  node.onExecuted?.({ janus_grid: [{ index: 0, rows: 24, cols: 24, ids: new Array(576).fill(1), rgb: [] }] });
  const other = new FakeNode(8, "KSampler");
  registered[0].nodeCreated(other);
  assert.equal(other.onDrawForeground, undefined);
  assert.equal(other.onExecuted, undefined);
});

test("inspector uses a canvas custom widget when addCustomWidget exists, never serialized", () => {
  const node = withCustomWidgets(new FakeNode(9, "JanusARTokensInfo"));
  registered[0].nodeCreated(node);
  assert.equal(node.widgets.length, 1);
  const w = node.widgets[0];
  assert.equal(w.serialize, false);
  assert.equal(w.options.serialize, false);
  const ids = Array.from({ length: 576 }, (_, i) => i);
  node.onExecuted({ janus_grid: [{ index: 0, rows: 24, cols: 24, ids, rgb: new Array(576 * 3).fill(9), model: "m" }] });
  assert.equal(node.__janusInspector.entries.length, 1);
  const ctx = recordingCtx();
  w.draw(ctx, node, 240, 30);
  assert.ok(ctx.calls.some((c) => c[0] === "fillRect"));
  // hover via node.onMouseMove: the cell under (x, y) relative to the widget
  const layout = w.layout;
  node.onMouseMove({}, [layout.x0 + 2.5 * layout.cell, 30 + layout.y0 + 1.5 * layout.cell]);
  assert.deepEqual(node.__janusInspector.hit, { row: 1, col: 2, index: 26 });
  // click toggles the colour mode, stored in node properties
  w.mouse({ type: "pointerdown" }, [0, 0], node);
  assert.equal(node.properties.janus_colour_mode, "id");
});

test("describe answers show on the node (canvas fallback), one block per image, never serialized", () => {
  const node = withCustomWidgets(new FakeNode(21, "JanusARDescribe"));
  registered[0].nodeCreated(node);
  assert.equal(node.widgets.length, 1);
  assert.equal(node.widgets[0].serialize, false);
  node.onExecuted({ text: ["a red <b>chair</b>"] });
  assert.equal(node.__janusAnswer, "a red <b>chair</b>"); // plain text, drawn with fillText
  const ctx = recordingCtx();
  node.widgets[0].draw(ctx, node, 300, 10);
  assert.deepEqual(ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]), ["a red <b>chair</b>"]);
  node.onExecuted({ text: ["one", "two"] });
  assert.equal(node.__janusAnswer, "[image 1]\none\n\n[image 2]\ntwo");
  node.onExecuted({ text: ["short"], janus_notes: ["answers capped at 285 tokens: the question and image take 739 "
    + "of the model's 1024 context positions (max_new_tokens was 512)."] });
  assert.equal(node.__janusAnswer, "short\n\nnote: answers capped at 285 tokens: the question and image take 739 of "
    + "the model's 1024 context positions (max_new_tokens was 512).");
  node.onExecuted({ janus_grid: [] }); // another output shape: ignored
  assert.equal(mod.answerText(null), "");
  assert.equal(mod.answerText(["a"], [null, " ", 3]), "a");
});
