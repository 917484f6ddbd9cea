import { test } from "node:test";
import assert from "node:assert/strict";

import {
  SAMPLER_EVENT, DOWNLOAD_EVENT, isTerminalState, nodeKey, formatDuration, formatRate, formatBytes,
  samplerStatus, samplerStatusText, downloadStatus, baseName, StatusBoard,
} from "../../web/js/janus_status.js";

const running = (over = {}) => ({
  node: "12", step: 312, total: 576, batch: 4, tokens_per_s: 41.3, eta_s: 6.4, state: "running", ...over,
});

test("event names are the contract of nodes/events.py", () => {
  assert.equal(SAMPLER_EVENT, "janus.sampler.status");
  assert.equal(DOWNLOAD_EVENT, "janus.download.progress");
});

test("the issue's example line", () => {
  assert.equal(samplerStatusText(running()), "token 312 / 576 \u00b7 41 tok/s \u00b7 ETA 6 s \u00b7 batch 4");
  assert.equal(samplerStatus(running()).fraction, 312 / 576);
});

test("terminal states clear the line", () => {
  for (const state of ["success", "cancelled", "error"]) {
    assert.equal(isTerminalState(state), true);
    assert.equal(samplerStatus(running({ state, step: null, tokens_per_s: null, eta_s: null })), null);
  }
  assert.equal(isTerminalState("running"), false);
  assert.equal(samplerStatus(running({ state: "weird" })), null);
});

test("missing pieces are left out, not shown as NaN/null", () => {
  assert.equal(samplerStatusText(running({ step: 0, tokens_per_s: 0, eta_s: null })), "token 0 / 576 \u00b7 batch 4");
  assert.equal(samplerStatusText(running({ step: null, tokens_per_s: null, eta_s: null, batch: 1 })),
    "starting\u2026 \u00b7 batch 1");
  assert.equal(samplerStatusText(running({ total: null, batch: undefined, eta_s: NaN })), "token 312 \u00b7 41 tok/s");
  assert.equal(samplerStatusText(running({ tokens_per_s: 7.46, eta_s: 75, batch: 0 })),
    "token 312 / 576 \u00b7 7.5 tok/s \u00b7 ETA 1 min 15 s");
  assert.equal(samplerStatus(running({ step: 700 })).fraction, 1);
  for (const text of [samplerStatusText(running({ step: "x", total: {}, batch: "4" }))]) {
    assert.doesNotMatch(text, /NaN|null|undefined|object/);
  }
});

test("malformed payloads give null", () => {
  assert.equal(samplerStatus(null), null);
  assert.equal(samplerStatus("running"), null);
  assert.equal(downloadStatus(null), null);
  assert.equal(downloadStatus({ node: "1", file: "a", done: -1, total: 5 }), null);
  assert.equal(downloadStatus({ node: "1", file: "a", done: "3", total: 5 }), null);
});

test("nodeKey", () => {
  assert.equal(nodeKey({ node: "5" }), "5");
  assert.equal(nodeKey({ node: 5 }), "5");
  assert.equal(nodeKey({ node: "3:7" }), "3:7");
  assert.equal(nodeKey({ node: "" }), null);
  assert.equal(nodeKey({}), null);
  assert.equal(nodeKey(null), null);
});

test("formatters", () => {
  assert.equal(formatDuration(0), "0 s");
  assert.equal(formatDuration(59.4), "59 s");
  assert.equal(formatDuration(65), "1 min 05 s");
  assert.equal(formatDuration(3725), "1 h 02 min");
  assert.equal(formatDuration(-1), null);
  assert.equal(formatDuration(null), null);
  assert.equal(formatDuration(Infinity), null);
  assert.equal(formatRate(41.3), "41");
  assert.equal(formatRate(9.96), "10.0");
  assert.equal(formatRate(0.25), "0.25");
  assert.equal(formatRate(undefined), null);
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(1500), "1.50 KB");
  assert.equal(formatBytes(7_270_000_000), "7.27 GB");
  assert.equal(formatBytes(123_400_000), "123 MB");
  assert.equal(formatBytes(null), null);
});

test("download status", () => {
  const d = downloadStatus({ node: "3", file: "deepseek/Janus-Pro-1B/pytorch_model.bin", done: 1_500_000_000,
    total: 4_000_000_000 });
  assert.equal(d.text, "downloading pytorch_model.bin \u00b7 1.50 GB / 4.00 GB \u00b7 37 %");
  assert.equal(d.fraction, 0.375);
  assert.equal(d.complete, false);
  const done = downloadStatus({ node: "3", file: "config.json", done: 10, total: 10 });
  assert.equal(done.complete, true);
  const unknown = downloadStatus({ node: "3", file: "a.bin", done: 2048, total: null });
  assert.equal(unknown.text, "downloading a.bin \u00b7 2.05 KB");
  assert.equal(unknown.fraction, null);
  assert.equal(baseName("C:\\models\\x.safetensors"), "x.safetensors");
  assert.equal(baseName(undefined), "");
});

test("StatusBoard keys by node and clears", () => {
  const b = new StatusBoard();
  assert.equal(b.applySampler(running({ node: "7" })), "7");
  assert.equal(b.applySampler(running({ node: 8 })), "8");
  assert.equal(b.applySampler({ step: 1 }), null);
  assert.match(b.get("7").sampler.text, /^token 312/);
  assert.match(b.get(8).sampler.text, /^token 312/);
  assert.equal(b.get("9").sampler, null);
  b.applySampler({ node: "7", state: "success" });
  assert.equal(b.get("7").sampler, null);
  b.applyDownload({ node: "1", file: "f", done: 1, total: 2 });
  assert.equal(b.get("1").download.fraction, 0.5);
  assert.deepEqual(b.clear("1"), ["1"]);
  assert.deepEqual(b.clear("1"), []);
  b.applyDownload({ node: "2", file: "f", done: 1, total: 2 });
  assert.deepEqual(b.clearAll().sort(), ["2", "8"]);
  assert.deepEqual(b.clearAll(), []);
});

test("a note (Janus Describe Image: a capped answer) follows the numbers; blank or non-string notes are left out", () => {
  const note = "answers capped at 285 tokens: the question and image take 739 of the model's 1024 context positions";
  assert.equal(samplerStatusText(running({ step: 12, total: 285, batch: 1, tokens_per_s: 8.1, eta_s: 34, note })),
    `token 12 / 285 \u00b7 8.1 tok/s \u00b7 ETA 34 s \u00b7 batch 1 \u00b7 ${note}`);
  assert.equal(samplerStatusText(running({ note: "  " })), samplerStatusText(running()));
  assert.equal(samplerStatusText(running({ note: 5 })), samplerStatusText(running()));
  assert.equal(samplerStatus(running({ state: "success", note })), null); // terminal: cleared all the same
});
