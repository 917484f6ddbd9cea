// Manual check against a real editor (not part of CI, which has none): loads every example UI workflow
// (example_workflows/*.json that has an api/ copy) into a running ComfyUI page, converts it with the editor's own
// app.graphToPrompt() and compares the result with example_workflows/api/<name>.json. Optional inputs the editor
// fills with their declared default (the loader's quantize: "none") count as equal (tests/nodes/workflow_diff.mjs;
// the defaults come from the editor's /object_info).
//
//   COMFY_URL=http://127.0.0.1:8188 node tests/nodes/check_workflows_in_editor.mjs
//
// Needs: a running editor with this pack in custom_nodes/ (docs/WEB.md "Trying it in a real editor"), playwright-core
// (resolvable from here, or from PW_DIR=/path/with/node_modules) and a Chromium: CHROMIUM=/path, else
// /usr/bin/chromium when it exists, else playwright's own browser. Prints one line per workflow; exit 1 on a
// difference, 2 when the editor cannot be reached.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

import { diffPrompt } from "./workflow_diff.mjs";

const COMFY_URL = (process.env.COMFY_URL ?? "http://127.0.0.1:8188").replace(/\/+$/, "");
const ROOT = process.env.JANUS_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

async function playwright() {
  if (process.env.PW_DIR) return createRequire(`${process.env.PW_DIR.replace(/\/+$/, "")}/`)("playwright-core");
  try {
    return await import("playwright-core");
  } catch {
    console.error("playwright-core not found: npm install playwright-core (anywhere) and set PW_DIR to that folder");
    process.exit(2);
  }
}

const names = fs.readdirSync(path.join(ROOT, "example_workflows"))
  .filter((f) => f.endsWith(".json") && fs.existsSync(path.join(ROOT, "example_workflows", "api", f)))
  .map((f) => f.slice(0, -5))
  .sort();

let objectInfo;
try {
  objectInfo = await (await fetch(`${COMFY_URL}/object_info`)).json();
} catch (err) {
  console.error(`cannot reach the editor at ${COMFY_URL} (${err.message}); start it first (docs/WEB.md)`);
  process.exit(2);
}
const missing = [...new Set(names.flatMap((name) => Object.values(
  JSON.parse(fs.readFileSync(path.join(ROOT, "example_workflows", "api", `${name}.json`), "utf8"))).map((n) => n.class_type)))]
  .filter((c) => !objectInfo[c]);
if (missing.length) console.error(`the editor does not know ${missing.join(", ")} (is the pack installed?)`);

const { chromium } = await playwright();
const executablePath = process.env.CHROMIUM ?? (fs.existsSync("/usr/bin/chromium") ? "/usr/bin/chromium" : undefined);
const browser = await chromium.launch({ executablePath,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"] });
let failed = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 800 } });
  await page.goto(COMFY_URL, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph, null, { timeout: 90000 });
  await page.waitForTimeout(3000);
  for (const name of names) {
    const wf = JSON.parse(fs.readFileSync(path.join(ROOT, "example_workflows", `${name}.json`), "utf8"));
    const api = JSON.parse(fs.readFileSync(path.join(ROOT, "example_workflows", "api", `${name}.json`), "utf8"));
    const got = await page.evaluate(async (wf) => {
      const { app } = window.comfyAPI.app;
      await app.loadGraphData(wf, true, true, "check");
      return (await app.graphToPrompt()).output;
    }, wf);
    const diffs = diffPrompt(api, got, objectInfo);
    failed += diffs.length > 0;
    console.log(name, diffs.length ? `DIFF ${diffs.join("; ")}` : "same API prompt as the file");
  }
} finally {
  await browser.close();
}
process.exit(failed || missing.length ? 1 : 0);
