/**
 * Which S3 keys may reach a GPU node. A key becomes a file path under NODE_MODELS_DIR and a line on
 * the node tool's stdin, so anything that could escape the folder, split a line or mean something
 * to a shell is refused here, before any node sees it.
 */
import { MODEL_FOLDERS } from "./node";

/** S3's own limit on a key, in UTF-8 bytes; a longer "key" can only come from a forged event. */
const MAX_KEY_BYTES = 1024;

/** NAME_MAX of the node's filesystem: a longer segment could never be written, so it would fail forever. */
const MAX_SEGMENT_BYTES = 255;

export type KeyRejectReason =
  | "malformed-encoding"
  | "empty"
  | "too-long"
  | "control-character"
  | "backslash"
  | "shell-metacharacter"
  | "disallowed-character"
  | "absolute-path"
  | "empty-segment"
  | "dot-segment"
  | "segment-too-long"
  | "outside-model-folders";

export type KeyCheck =
  | { readonly kind: "valid"; readonly key: string }
  /** Not an error: folder markers ("loras/") created by consoles and tools carry no file. */
  | { readonly kind: "ignored"; readonly key: string; readonly reason: "folder-marker" }
  | {
      readonly kind: "rejected";
      /** The decoded key when decoding worked, otherwise the raw event key. */
      readonly key: string;
      readonly reason: KeyRejectReason;
      readonly detail: string;
    };

/**
 * S3 event keys are form-encoded (`+` is a space, UTF-8 percent-escapes); a literal `+` arrives as
 * `%2B`. Returns undefined for invalid escapes or invalid UTF-8.
 */
export function decodeEventKey(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw.replace(/\+/g, "%20"));
  } catch {
    return undefined;
  }
}

/** Decode an event key, then check it. */
export function checkEventKey(raw: string): KeyCheck {
  const key = decodeEventKey(raw);
  if (key === undefined) {
    return { kind: "rejected", key: raw, reason: "malformed-encoding", detail: "invalid percent-encoding or UTF-8" };
  }
  return checkKey(key);
}

function codePoint(ch: string): string {
  return "U+" + (ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, "0");
}

function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

/**
 * Check a decoded key. An allow-list rather than a deny-list: Unicode letters, digits and marks
 * (model names are often non-Latin) plus punctuation seen in real model file names. Everything else,
 * including look-alike spaces and bidi controls, is refused.
 */
export function checkKey(key: string): KeyCheck {
  const reject = (reason: KeyRejectReason, detail: string): KeyCheck => ({ kind: "rejected", key, reason, detail });

  if (key.length === 0) return reject("empty", "empty key");
  if (key.endsWith("/")) return { kind: "ignored", key, reason: "folder-marker" };
  const bytes = utf8Length(key);
  if (bytes > MAX_KEY_BYTES) return reject("too-long", `${bytes} bytes > ${MAX_KEY_BYTES}`);

  // Regexes live inside the function so that Pulumi's closure serialization has nothing to capture.
  const control = /\p{Cc}/u;
  const shell = /[$`;|&<>"*?!#~^{}]/u;
  const allowed = /[\p{L}\p{N}\p{M} ._\-+()[\],@='/]/u;
  for (const ch of key) {
    if (control.test(ch)) return reject("control-character", `${codePoint(ch)} is a control character`);
    if (ch === "\\") return reject("backslash", "backslash is not a path separator on the node");
    if (shell.test(ch)) return reject("shell-metacharacter", `${JSON.stringify(ch)} is a shell metacharacter`);
    if (!allowed.test(ch)) return reject("disallowed-character", `${codePoint(ch)} is not allowed`);
  }

  if (key.startsWith("/")) return reject("absolute-path", "leading '/'");
  const segments = key.split("/");
  for (const segment of segments) {
    if (segment.length === 0) return reject("empty-segment", "'//' in key");
    if (segment === "." || segment === "..") return reject("dot-segment", `'${segment}' segment`);
    if (utf8Length(segment) > MAX_SEGMENT_BYTES) {
      return reject("segment-too-long", `a segment is longer than ${MAX_SEGMENT_BYTES} bytes`);
    }
  }
  if (segments.length < 2 || !MODEL_FOLDERS.includes(segments[0])) {
    return reject("outside-model-folders", `first segment ${JSON.stringify(segments[0])} is not a ComfyUI model folder`);
  }
  return { kind: "valid", key };
}

/** Keys go into log lines; a forged 1 KiB key should not flood them. */
export function keyForLog(key: string, max = 200): string {
  return key.length <= max ? key : `${key.slice(0, max)}…(${key.length} chars)`;
}

// Exported as a list, not `export const`: TypeScript would compile in-module uses to `exports.X`,
// which Pulumi's closure serialization turns into the Lambda module's (empty) exports.
export { MAX_KEY_BYTES, MAX_SEGMENT_BYTES };
