// Pure logic for the live messages of the Janus nodes: event payload -> text shown on the node.
// No editor imports here, so `node --test tests/js/` can load it. The payloads are the contract of
// nodes/events.py:
//   "janus.sampler.status"    {node, step, total, batch, tokens_per_s, eta_s, state, note?}
//                              state "running", then exactly one of "success" / "cancelled" / "error";
//                              sent by Janus Token Sampler and Janus Describe Image (note: e.g. a capped answer)
//   "janus.download.progress" {node, file, done, total}

export const SAMPLER_EVENT = "janus.sampler.status";
export const DOWNLOAD_EVENT = "janus.download.progress";
export const TERMINAL_STATES = Object.freeze(["success", "cancelled", "error"]);

const SEP = " \u00b7 "; // " · "

function isNum(x) {
  return typeof x === "number" && Number.isFinite(x);
}

/** true when the state ends a run (the status line is cleared). Unknown states are not terminal. */
export function isTerminalState(state) {
  return TERMINAL_STATES.includes(state);
}

/** The node key of a payload (the node's UNIQUE_ID as a string), or null when missing. */
export function nodeKey(payload) {
  if (!payload || typeof payload !== "object") return null;
  const n = payload.node;
  if (typeof n === "string" && n.length > 0) return n;
  if (isNum(n)) return String(n);
  return null;
}

/** Seconds -> "6 s", "1 min 05 s", "2 h 03 min". Negative / non-numbers -> null. */
export function formatDuration(seconds) {
  if (!isNum(seconds) || seconds < 0) return null;
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) {
    const m = Math.floor(s / 60);
    return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  }
  const h = Math.floor(s / 3600);
  return `${h} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** tokens per second -> "41" (>= 10), "7.5" (< 10), "0.25" (< 1). */
export function formatRate(rate) {
  if (!isNum(rate) || rate < 0) return null;
  if (rate >= 10) return String(Math.round(rate));
  if (rate >= 1) return rate.toFixed(1);
  return rate.toFixed(2);
}

/** Bytes -> "512 B", "1.5 KB", "3.42 GB" (decimal units, like the hub shows sizes). */
export function formatBytes(n) {
  if (!isNum(n) || n < 0) return null;
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u += 1;
  }
  if (u === 0) return `${Math.round(v)} B`;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[u]}`;
}

/**
 * A sampler status payload -> what the node shows, or null when nothing is to be shown
 * (terminal state, malformed payload).
 * Returns {text, fraction} where fraction is step / total in 0..1 or null when unknown.
 */
export function samplerStatus(payload) {
  if (!payload || typeof payload !== "object") return null;
  if (isTerminalState(payload.state)) return null;
  if (payload.state !== undefined && payload.state !== "running") return null;
  const { step, total, batch } = payload;
  const parts = [];
  let fraction = null;
  if (isNum(step) && isNum(total) && total > 0) {
    parts.push(`token ${Math.round(step)} / ${Math.round(total)}`);
    fraction = Math.min(1, Math.max(0, step / total));
  } else if (isNum(step)) {
    parts.push(`token ${Math.round(step)}`);
  } else {
    parts.push("starting\u2026");
  }
  const rate = formatRate(payload.tokens_per_s);
  if (rate !== null && isNum(step) && step > 0) parts.push(`${rate} tok/s`);
  const eta = formatDuration(payload.eta_s);
  if (eta !== null) parts.push(`ETA ${eta}`);
  if (isNum(batch) && batch >= 1) parts.push(`batch ${Math.round(batch)}`);
  if (typeof payload.note === "string" && payload.note.trim()) parts.push(payload.note.trim());
  return { text: parts.join(SEP), fraction };
}

/** Just the text of samplerStatus (or null). */
export function samplerStatusText(payload) {
  const s = samplerStatus(payload);
  return s === null ? null : s.text;
}

/** Last path segment of a file name from the server (display only; never parsed as HTML). */
export function baseName(file) {
  if (typeof file !== "string") return "";
  const parts = file.split(/[\\/]/);
  return parts[parts.length - 1] || file;
}

/**
 * A download payload -> {text, fraction, complete}, or null when malformed.
 * total may be null / 0 when the server does not know the size.
 */
export function downloadStatus(payload) {
  if (!payload || typeof payload !== "object") return null;
  const { done, total } = payload;
  if (!isNum(done) || done < 0) return null;
  const name = baseName(payload.file);
  const parts = [name ? `downloading ${name}` : "downloading"];
  let fraction = null;
  let complete = false;
  if (isNum(total) && total > 0) {
    fraction = Math.min(1, done / total);
    complete = done >= total;
    parts.push(`${formatBytes(done)} / ${formatBytes(total)}`);
    parts.push(`${Math.floor(fraction * 100)} %`);
  } else {
    parts.push(formatBytes(done));
  }
  return { text: parts.join(SEP), fraction, complete };
}

/**
 * Per-node live status, keyed by the node's id string. Pure bookkeeping; the extension draws it.
 *   board.applySampler(payload) -> key whose status changed (or null)
 *   board.applyDownload(payload) -> key (or null)
 *   board.clear(key) / board.clearAll() -> keys cleared
 */
export class StatusBoard {
  constructor() {
    this.sampler = new Map();
    this.download = new Map();
  }

  applySampler(payload) {
    const key = nodeKey(payload);
    if (key === null) return null;
    const s = samplerStatus(payload);
    if (s === null) this.sampler.delete(key);
    else this.sampler.set(key, s);
    return key;
  }

  applyDownload(payload) {
    const key = nodeKey(payload);
    if (key === null) return null;
    const d = downloadStatus(payload);
    if (d === null) this.download.delete(key);
    else this.download.set(key, d);
    return key;
  }

  get(key) {
    key = String(key);
    return { sampler: this.sampler.get(key) || null, download: this.download.get(key) || null };
  }

  clear(key) {
    key = String(key);
    const had = this.sampler.delete(key) | this.download.delete(key);
    return had ? [key] : [];
  }

  clearAll() {
    const keys = new Set([...this.sampler.keys(), ...this.download.keys()]);
    this.sampler.clear();
    this.download.clear();
    return [...keys];
  }
}
