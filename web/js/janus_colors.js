// Socket / link colours of the Janus types, so the four stages read at a glance. Pure: the extension
// passes in whichever colour tables the editor it runs in has (none of them is assumed to exist).

export const SOCKET_COLORS = Object.freeze({
  JANUS_LM: "#8C6FE0", // violet: the language model
  JANUS_VQ: "#26A69A", // teal: the VQ image tokenizer
  JANUS_COND: "#C0CA33", // lime: prompt ids (cond + uncond)
  JANUS_TOKENS: "#EC407A", // pink: sampled image tokens
});

/**
 * Fill in the colours of the Janus types in every table given that is a plain object (others are skipped).
 * Only entries that are missing or empty are written: the editor's palette loader resets every known type to ""
 * (then this fills them in again), while a colour a user's custom palette sets for a Janus type is kept.
 * Returns how many entries were written.
 */
export function applySocketColors(tables, colors = SOCKET_COLORS) {
  let n = 0;
  for (const t of tables) {
    if (!t || typeof t !== "object" || Array.isArray(t)) continue;
    for (const [type, colour] of Object.entries(colors)) {
      if (t[type]) continue;
      try {
        t[type] = colour;
        n += 1;
      } catch {
        // frozen / proxied table of an unknown editor version: leave it
      }
    }
  }
  return n;
}

/** true when every Janus type has some colour in the table. */
export function hasSocketColors(table, colors = SOCKET_COLORS) {
  if (!table || typeof table !== "object") return false;
  return Object.keys(colors).every((k) => Boolean(table[k]));
}
