// Socket / link colours of the Janus types, so the four stages read at a glance. Pure: the extension
// passes in whichever colour tables the editor it runs in has (none of them is assumed to exist).

export const SOCKET_COLORS = Object.freeze({
  JANUS_LM: "#8C6FE0", // violet: the language model
  JANUS_VQ: "#26A69A", // teal: the VQ image tokenizer
  JANUS_COND: "#C0CA33", // lime: prompt ids (cond + uncond)
  JANUS_TOKENS: "#EC407A", // pink: sampled image tokens
});

/**
 * Write the colours into every table given that is a plain object (others are skipped).
 * Existing entries for these types are overwritten, others left alone. Returns how many tables were written.
 */
export function applySocketColors(tables, colors = SOCKET_COLORS) {
  let n = 0;
  for (const t of tables) {
    if (!t || typeof t !== "object" || Array.isArray(t)) continue;
    try {
      Object.assign(t, colors);
      n += 1;
    } catch {
      // frozen / proxied table of an unknown editor version: leave it
    }
  }
  return n;
}

/** true when every Janus type already has its colour in the table (used to re-apply after a palette change). */
export function hasSocketColors(table, colors = SOCKET_COLORS) {
  if (!table || typeof table !== "object") return false;
  return Object.entries(colors).every(([k, v]) => table[k] === v);
}
