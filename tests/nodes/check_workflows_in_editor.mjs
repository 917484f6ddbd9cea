// Manual check (not part of CI): loads each example UI workflow into a running ComfyUI page and compares the
// editor's own API conversion (app.graphToPrompt) with example_workflows/api/*.json.
//   COMFY_URL=http://127.0.0.1:8188 node tests/nodes/check_workflows_in_editor.mjs   (needs playwright-core + chromium)
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const COMFY_URL = process.env.COMFY_URL ?? "http://127.0.0.1:8188";
const ROOT = process.env.JANUS_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"] });
const page = await browser.newPage({ viewport: { width: 1500, height: 800 } });
await page.goto(COMFY_URL, { waitUntil: "domcontentloaded" });
await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph, null, { timeout: 90000 });
await page.waitForTimeout(3000);
let failed = 0;
for (const name of ["text_to_image", "masked_regeneration", "save_reload_tokens"]) {
  const wf = JSON.parse(fs.readFileSync(`${ROOT}/example_workflows/${name}.json`, "utf8"));
  const api = JSON.parse(fs.readFileSync(`${ROOT}/example_workflows/api/${name}.json`, "utf8"));
  const got = await page.evaluate(async (wf) => {
    const { app } = window.comfyAPI.app;
    await app.loadGraphData(wf, true, true, "check");
    return (await app.graphToPrompt()).output;
  }, wf);
  const diffs = [];
  for (const [id, node] of Object.entries(api)) {
    if (!got[id]) { diffs.push(`${id} missing`); continue; }
    if (got[id].class_type !== node.class_type) diffs.push(`${id} class ${got[id].class_type}`);
    for (const [k, v] of Object.entries(node.inputs)) {
      if (JSON.stringify(got[id].inputs[k]) !== JSON.stringify(v)) diffs.push(`${id}.${k}: ${JSON.stringify(got[id].inputs[k])}`);
    }
    for (const k of Object.keys(got[id].inputs)) if (!(k in node.inputs)) diffs.push(`${id}.${k} extra`);
  }
  for (const id of Object.keys(got)) if (!api[id]) diffs.push(`${id} extra node`);
  failed += diffs.length > 0;
  console.log(name, diffs.length ? `DIFF ${diffs.join("; ")}` : "same API prompt as the file");
}
await browser.close();
process.exit(failed ? 1 : 0);
