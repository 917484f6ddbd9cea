// Manual browser check of the web extension in a real ComfyUI page (not part of `node --test`; needs a running
// editor with this pack in custom_nodes/, a tiny checkpoint in models/Janus-Pro/tiny-janus, Debian's chromium and
// playwright-core installed outside the repo). See docs/WEB.md "Trying it in a real editor".
//   PW_DIR=/work/pw COMFY_URL=http://127.0.0.1:8188 SCREENS=/work/screens node tests/js/browser/check_editor.mjs
// REAL_RUN=0 skips the two real prompts (then only synthetic events are shown).
import { createRequire } from "node:module";
import fs from "node:fs";

const { chromium } = createRequire(`${process.env.PW_DIR ?? "/work/pw"}/`)("playwright-core");

const URL = process.env.COMFY_URL ?? "http://127.0.0.1:8188";
const OUT = process.env.SCREENS ?? "/work/screens";
const REAL_RUN = process.env.REAL_RUN !== "0";
fs.mkdirSync(OUT, { recursive: true });
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
const logs = [];
page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}\n${e.stack}`));
page.on("response", (r) => { if (r.status() >= 400) logs.push(`[http ${r.status()}] ${r.url()}`); });

await page.goto(URL, { waitUntil: "domcontentloaded" });
await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph, null, { timeout: 60000 });
await page.waitForTimeout(3000);
for (let i = 0; i < 3; i++) { await page.keyboard.press("Escape"); await page.waitForTimeout(300); }

// Build the graph: loader -> prompt -> sampler -> token map / tokens info / decode -> preview
const info = await page.evaluate(async () => {
  const { app } = window.comfyAPI.app;
  const LG = window.LiteGraph;
  const g = app.graph;
  g.clear();
  const add = (type, pos, size) => {
    const n = LG.createNode(type);
    n.pos = pos;
    g.add(n);
    if (size) n.setSize(size);
    return n;
  };
  const w = (n, name, v) => { const x = n.widgets.find((w) => w.name === name); x.value = v; };
  const loader = add("JanusARLoader", [40, 60]);
  const prompt = add("JanusARPrompt", [40, 300], [330, 220]);
  const sampler = add("JanusARSampler", [420, 60], [330, 300]);
  const map = add("JanusARTokenMap", [800, 40], [330, 400]);
  const infoN = add("JanusARTokensInfo", [800, 490], [330, 400]);
  const decode = add("JanusARDecode", [1180, 40]);
  const preview = add("PreviewImage", [1180, 160], [300, 320]);
  w(loader, "model", "tiny-janus");
  w(prompt, "prompt", "a red fox in the snow");
  w(sampler, "batch_size", 2);
  w(sampler, "seed", Date.now() % 1000000);
  loader.connect(0, prompt, "lm");
  loader.connect(0, sampler, "lm");
  loader.connect(1, decode, "vq");
  prompt.connect(0, sampler, "cond");
  sampler.connect(0, map, "tokens");
  sampler.connect(0, infoN, "tokens");
  sampler.connect(0, decode, "tokens");
  decode.connect(0, preview, "images");
  app.canvas.ds.scale = 1;
  app.canvas.ds.offset = [20, 40];
  app.canvas.setDirty(true, true);
  const LGC = window.LGraphCanvas;
  return {
    ids: { loader: loader.id, prompt: prompt.id, sampler: sampler.id, map: map.id, info: infoN.id },
    linkColours: Object.fromEntries(["JANUS_LM", "JANUS_VQ", "JANUS_COND", "JANUS_TOKENS"].map(
      (t) => [t, [LGC?.link_type_colors?.[t], app.canvas.default_connection_color_byType?.[t]]])),
    inspectorWidgets: [map, infoN].map((n) => n.widgets?.map((w) => `${w.name}:${w.type}`)),
    mapWidgetsValues: map.serialize().widgets_values ?? null,
    samplerWidgetsValues: sampler.serialize().widgets_values,
    extensions: app.extensions.map((e) => e.name).filter((n) => n.includes("janus")),
  };
});
console.log("graph", JSON.stringify(info, null, 1));
await page.waitForTimeout(500);
await page.screenshot({ path: `${OUT}/01-graph-before-run.png` });
const colours = await page.evaluate(() => {
  const { app } = window.comfyAPI.app;
  return Object.fromEntries(["JANUS_LM", "JANUS_VQ", "JANUS_COND", "JANUS_TOKENS", "IMAGE"].map(
    (t) => [t, [window.LGraphCanvas.link_type_colors[t], app.canvas.default_connection_color_byType[t]]]));
});
console.log("colours after first draw", JSON.stringify(colours));
check(["JANUS_LM", "JANUS_VQ", "JANUS_COND", "JANUS_TOKENS"].every((t) => colours[t][0] && colours[t][1]),
  "socket colours set for the four Janus types");
check(info.extensions.length === 1, "extension registered");
check(JSON.stringify(info.mapWidgetsValues ?? []) === "[]", "inspector widget not serialized into widgets_values");

// A real run on the tiny checkpoint: record the custom messages the server sends.
if (REAL_RUN) {
  await page.evaluate(() => {
    const { api } = window.comfyAPI.api;
    window.__janusSeen = [];
    for (const t of ["janus.sampler.status", "janus.download.progress", "executed", "execution_success",
      "execution_error"]) {
      api.addEventListener(t, (e) => window.__janusSeen.push({ t, d: t === "executed"
        ? { node: e.detail.node, keys: Object.keys(e.detail.output ?? {}) } : e.detail }));
    }
  });
  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
  try {
    await page.waitForFunction(() => window.__janusSeen.some((x) => x.t === "janus.sampler.status" && x.d.step >= 150),
      null, { timeout: 120000, polling: 50 });
    await page.screenshot({ path: `${OUT}/02a-real-run-status.png`, clip: { x: 380, y: 60, width: 520, height: 640 } });
    console.log("mid-run status:", JSON.stringify(await page.evaluate(() =>
      window.__janusSeen.filter((x) => x.t === "janus.sampler.status").at(-1))));
  } catch (e) {
    console.log("no mid-run screenshot:", e.message);
  }
  await page.waitForFunction(() => window.__janusSeen.some((x) => x.t === "execution_success" || x.t === "execution_error"),
    null, { timeout: 240000 });
  await page.waitForTimeout(1000);
  const seen = await page.evaluate(() => window.__janusSeen);
  const status = seen.filter((x) => x.t === "janus.sampler.status");
  console.log("real run: events", seen.length, "sampler status messages", status.length);
  console.log(" first", JSON.stringify(status[0]), "\n last", JSON.stringify(status.at(-1)));
  console.log(" others", JSON.stringify(seen.filter((x) => x.t !== "janus.sampler.status")));
  check(status.length > 2 && status.length < 400, "real run: rate-limited sampler status messages arrived");
  check(status.at(-1)?.d.state === "success", "real run: final state success");
  check(seen.some((x) => x.t === "executed" && x.d.keys.includes("janus_grid")), "real run: janus_grid ui output");
  await page.screenshot({ path: `${OUT}/02-after-real-run.png` });
}

// Cancel from the editor mid-run: the sampler must send "cancelled" and the line must go.
if (REAL_RUN) {
  await page.evaluate(() => {
    const { app } = window.comfyAPI.app;
    const s = app.graph.findNodesByType("JanusARSampler")[0];
    s.widgets.find((w) => w.name === "seed").value = (Date.now() + 1) % 1000000;
    window.__janusSeen.length = 0;
  });
  await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
  await page.waitForFunction(() => window.__janusSeen.some((x) => x.t === "janus.sampler.status" && x.d.step >= 60),
    null, { timeout: 120000, polling: 50 });
  await page.evaluate(() => window.comfyAPI.api.api.interrupt());
  await page.waitForFunction(() => window.__janusSeen.some((x) => x.t === "janus.sampler.status" && x.d.state !== "running"),
    null, { timeout: 60000, polling: 50 });
  await page.waitForTimeout(800);
  const st = await page.evaluate(() => window.__janusSeen.filter((x) => x.t === "janus.sampler.status").slice(-2));
  console.log("after interrupt:", JSON.stringify(st));
  check(st.at(-1)?.d.state === "cancelled", "interrupt: sampler sent state cancelled");
  await page.screenshot({ path: `${OUT}/02b-after-cancel.png`, clip: { x: 380, y: 60, width: 520, height: 640 } });
}

// Synthetic sampler status (stable screenshot of the status line)
const ids = info.ids;
await page.evaluate((ids) => {
  const { api } = window.comfyAPI.api;
  const send = (type, detail) => (typeof api.dispatchCustomEvent === "function"
    ? api.dispatchCustomEvent(type, detail) : api.dispatchEvent(new CustomEvent(type, { detail })));
  send("janus.sampler.status", { node: String(ids.sampler), step: 312, total: 576, batch: 4, tokens_per_s: 41.2,
    eta_s: 6.4, state: "running" });
  send("janus.download.progress", { node: String(ids.loader), file: "deepseek-ai/Janus-Pro-1B/pytorch_model.bin",
    done: 1_530_000_000, total: 4_180_000_000 });
}, ids);
await page.waitForTimeout(500);
await page.screenshot({ path: `${OUT}/03-status-and-download.png` });
await page.screenshot({ path: `${OUT}/03b-status-closeup.png`, clip: { x: 0, y: 40, width: 800, height: 420 } });

// cleared by an interrupt
await page.evaluate(() => {
  const { api } = window.comfyAPI.api;
  api.dispatchCustomEvent?.("execution_interrupted", { prompt_id: "x", node_id: "1", node_type: "x", executed: [] });
});
await page.waitForTimeout(300);
await page.screenshot({ path: `${OUT}/04-cleared-after-interrupt.png`, clip: { x: 0, y: 40, width: 800, height: 420 } });

// Inspector: hover, toggle, batch selector
const cv = page.locator(".janus-inspector canvas").first();
const box = await cv.boundingBox();
const rootBox = await page.locator(".janus-inspector").first().boundingBox();
const clip = rootBox ? { x: rootBox.x - 30, y: Math.max(0, rootBox.y - 90), width: rootBox.width + 60,
  height: rootBox.height + 110 } : undefined;
console.log("inspector canvas box", JSON.stringify(box));
if (box) {
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.3);
  await page.waitForTimeout(300);
  const hoverText = await page.locator(".janus-inspector").first().locator("div").last().textContent();
  console.log("hover text:", hoverText);
  check(/^row \d+, col \d+ \u00b7 token \d+$/.test(hoverText ?? ""), "inspector hover shows (row, col, token id)");
  await page.screenshot({ path: `${OUT}/05-inspector-hover.png`, clip });
  await page.locator(".janus-inspector").first().getByRole("button", { name: /^by / }).click();
  await page.waitForTimeout(300);
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.6);
  await page.waitForTimeout(300);
  await page.screenshot({ path: `${OUT}/06-inspector-by-token-id.png`, clip });
  await page.locator(".janus-inspector").first().getByRole("button", { name: "\u25b6" }).click();
  await page.waitForTimeout(300);
  const label = await page.locator(".janus-inspector").first().locator("span").first().textContent();
  console.log("after next:", label);
  check(/^image 2 \/ 2/.test(label ?? ""), "batch selector moves to image 2");
  await page.screenshot({ path: `${OUT}/07-inspector-image-2.png`, clip });
}
await page.screenshot({ path: `${OUT}/08-full.png` });

const state = await page.evaluate((ids) => {
  const { app } = window.comfyAPI.app;
  const map = app.graph.getNodeById(ids.map);
  return { mapSerialized: map.serialize().widgets_values ?? null, props: map.properties };
}, ids);
console.log("after: ", JSON.stringify(state));
fs.writeFileSync(`${OUT}/console.log`, logs.join("\n")); console.log("console:\n" + logs.filter((l) => /error|warn|janus|http/i.test(l)).join("\n"));
check(!logs.some((l) => l.includes("janus") && /error/i.test(l)), "no console errors from the Janus extension");
await browser.close();
if (failures.length) {
  console.log(`${failures.length} check(s) failed`);
  process.exitCode = 1;
}
