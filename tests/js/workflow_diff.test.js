// The comparison behind tests/nodes/check_workflows_in_editor.mjs (a manual check against a real editor).
import { test } from "node:test";
import assert from "node:assert/strict";

import { declaredDefault, optionalDefaults, diffPrompt } from "../nodes/workflow_diff.mjs";

const OBJECT_INFO = { // the shape of the editor's /object_info, cut to what the comparison reads
  JanusARLoader: { input: {
    required: { model: [["deepseek-ai/Janus-Pro-1B", "tiny"], {}], dtype: [["auto", "float32"], { default: "auto" }] },
    optional: { quantize: [["none", "int8", "int4"], { default: "none" }] },
  } },
  JanusARSampler: { input: {
    required: { seed: ["INT", { default: 0 }] },
    optional: { init_tokens: ["JANUS_TOKENS", {}], mode: ["COMBO", { options: ["auto", "jacobi"] }] },
  } },
};
const saved = () => ({
  1: { class_type: "JanusARLoader", inputs: { model: "deepseek-ai/Janus-Pro-1B", dtype: "auto" } },
  3: { class_type: "JanusARSampler", inputs: { seed: 42, lm: ["1", 0] } },
});

test("declared defaults: explicit, else a combo's first choice (both combo forms), else none", () => {
  assert.equal(declaredDefault([["none", "int8"], { default: "int8" }]), "int8");
  assert.equal(declaredDefault([["none", "int8"], {}]), "none");
  assert.equal(declaredDefault(["COMBO", { options: ["auto", "jacobi"] }]), "auto");
  assert.equal(declaredDefault(["JANUS_TOKENS", {}]), undefined);
  assert.equal(declaredDefault(null), undefined);
  assert.deepEqual([...optionalDefaults(OBJECT_INFO, "JanusARLoader")], [["quantize", "none"]]);
  assert.deepEqual([...optionalDefaults(OBJECT_INFO, "Unknown")], []);
});

test("what a real editor sends for an example saved before quantize existed is the same prompt", () => {
  const got = saved();
  got[1].inputs.quantize = "none"; // the editor fills the optional widget with its default
  got[3].inputs.mode = "auto";
  assert.deepEqual(diffPrompt(saved(), got, OBJECT_INFO), []);
  const withIt = saved();
  withIt[1].inputs.quantize = "none"; // and a saved copy that has it matches an editor that leaves it out
  assert.deepEqual(diffPrompt(withIt, saved(), OBJECT_INFO), []);
});

test("every real difference is still reported", () => {
  const got = saved();
  got[1].inputs.quantize = "int8"; // an optional input away from its default
  got[1].inputs.device = "cpu"; // an input the saved copy does not know
  got[3].inputs.seed = 7;
  delete got[3].inputs.lm;
  got[9] = { class_type: "SaveImage", inputs: {} };
  assert.deepEqual(diffPrompt(saved(), got, OBJECT_INFO),
    ["1.quantize extra", "1.device extra", "3.seed: 7", "3.lm missing", "9 extra node"]);
  const renamed = saved();
  renamed[1].class_type = "JanusModelLoader";
  delete renamed[3];
  assert.deepEqual(diffPrompt(saved(), renamed, OBJECT_INFO), ["1 class JanusModelLoader", "3 missing"]);
  // without /object_info nothing counts as a default: the old strict comparison
  const got2 = saved();
  got2[1].inputs.quantize = "none";
  assert.deepEqual(diffPrompt(saved(), got2), ["1.quantize extra"]);
});
