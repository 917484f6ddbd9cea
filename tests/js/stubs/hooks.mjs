// Module-resolution hook for the tests: the editor's "../../scripts/app.js" and "../../scripts/api.js"
// resolve to small stubs that hand out whatever the test put on globalThis.
const STUBS = {
  "scripts/app.js": new URL("./app.mjs", import.meta.url).href,
  "scripts/api.js": new URL("./api.mjs", import.meta.url).href,
};

export async function resolve(specifier, context, next) {
  for (const [tail, url] of Object.entries(STUBS)) {
    if (specifier.endsWith(tail)) return { url, shortCircuit: true };
  }
  return next(specifier, context);
}
