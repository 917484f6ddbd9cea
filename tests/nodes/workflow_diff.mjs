// Pure logic of check_workflows_in_editor.mjs: compare the API prompt a real editor makes from an example UI
// workflow (app.graphToPrompt().output) with the saved API copy in example_workflows/api/. No editor or browser
// imports here, so `node --test tests/js/` and pytest (tests/nodes/test_workflows.py) can run it.
//
// An editor sends every widget of a node, optional ones included, with its value; the saved copies hold only what
// the UI workflow stores (a workflow saved before an optional widget existed lacks it, and so does its API copy).
// So an optional input whose value equals its declared default counts the same as an absent one, both ways.

/** The declared default of an /object_info input spec, or undefined: `default` in the options, else a combo's first
 * choice (old `[[choices], opts]` and new `["COMBO", {options}]` forms), as the editor fills a missing widget. */
export function declaredDefault(spec) {
  if (!Array.isArray(spec) || spec.length === 0) return undefined;
  const opts = spec.length > 1 && spec[1] && typeof spec[1] === "object" ? spec[1] : {};
  if (opts.default !== undefined) return opts.default;
  if (Array.isArray(spec[0])) return spec[0][0];
  if (spec[0] === "COMBO" && Array.isArray(opts.options)) return opts.options[0];
  return undefined;
}

/** name -> declared default of the optional inputs of `classType` that have one. */
export function optionalDefaults(objectInfo, classType) {
  const optional = objectInfo?.[classType]?.input?.optional ?? {};
  const out = new Map();
  for (const [name, spec] of Object.entries(optional)) {
    const d = declaredDefault(spec);
    if (d !== undefined) out.set(name, d);
  }
  return out;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/** The differences between the saved API prompt `expected` and the editor's `got`, as short strings ("3.seed: 7",
 * "1.quantize extra", "4 missing"); [] when they mean the same prompt. */
export function diffPrompt(expected, got, objectInfo = {}) {
  const diffs = [];
  for (const [id, node] of Object.entries(expected)) {
    const mine = got[id];
    if (!mine) {
      diffs.push(`${id} missing`);
      continue;
    }
    if (mine.class_type !== node.class_type) diffs.push(`${id} class ${mine.class_type}`);
    const defaults = optionalDefaults(objectInfo, node.class_type);
    const isDefault = (k, v) => defaults.has(k) && same(defaults.get(k), v);
    for (const [k, v] of Object.entries(node.inputs ?? {})) {
      if (!(k in (mine.inputs ?? {}))) {
        if (!isDefault(k, v)) diffs.push(`${id}.${k} missing`);
      } else if (!same(mine.inputs[k], v)) {
        diffs.push(`${id}.${k}: ${JSON.stringify(mine.inputs[k])}`);
      }
    }
    for (const [k, v] of Object.entries(mine.inputs ?? {})) {
      if (!(k in (node.inputs ?? {})) && !isDefault(k, v)) diffs.push(`${id}.${k} extra`);
    }
  }
  for (const id of Object.keys(got)) if (!expected[id]) diffs.push(`${id} extra node`);
  return diffs;
}
