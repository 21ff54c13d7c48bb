// Python-flavoured value handling: ComfyUI is Python, and several of its wire strings are built with
// str()/repr()/json.dumps() of Python values (validation details, PNG text chunks). Reproducing them
// keeps the stand-in's bytes close to the real server's.

/** An exception as Python would raise it: `type` is the full type name ComfyUI reports (full_type_name). */
export class PyError extends Error {
  constructor(readonly pyType: string, message: string) {
    super(message);
  }
}

/** Marks a JSON number that ComfyUI holds as a Python float, so that repr/json.dumps print "1.0". */
export class PyFloat {
  constructor(readonly value: number) {}
}

function floatRepr(x: number): string {
  if (Number.isNaN(x)) return "nan";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (Number.isInteger(x) && Math.abs(x) < 1e16) return x.toFixed(1);
  // Python switches to exponent notation below 1e-4 and from 1e16; JS from 1e21 / below 1e-6.
  const abs = Math.abs(x);
  if (abs >= 1e16 || abs < 1e-4) {
    const [m, e] = x.toExponential().split("e");
    const exp = Number(e);
    return `${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return String(x);
}

/** Python repr() of a str. */
export function reprStr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    if (ch === "\\") out += "\\\\";
    else if (ch === quote) out += "\\" + ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (c < 0x20 || c === 0x7f) out += "\\x" + c.toString(16).padStart(2, "0");
    else out += ch;
  }
  return quote + out + quote;
}

/** Python repr() of a JSON-like value (None/True/False, single-quoted strings, float repr). */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return "None";
  if (v instanceof PyFloat) return floatRepr(v.value);
  if (typeof v === "boolean") return v ? "True" : "False";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : floatRepr(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "string") return reprStr(v);
  if (Array.isArray(v)) return "[" + v.map(pyRepr).join(", ") + "]";
  if (typeof v === "object") {
    return "{" + Object.entries(v as Record<string, unknown>).map(([k, x]) => `${reprStr(k)}: ${pyRepr(x)}`).join(", ") + "}";
  }
  return String(v);
}

/** Python str() of a JSON-like value. */
export function pyStr(v: unknown): string {
  return typeof v === "string" ? v : pyRepr(v);
}

function jsonStr(s: string): string {
  // json.dumps with ensure_ascii=True: every non-ASCII character becomes \uXXXX (UTF-16 units).
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i];
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else if (c < 0x20 || c > 0x7e) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += ch;
  }
  return out + '"';
}

/** Python json.dumps(v) with its defaults (", " and ": " separators, ensure_ascii, NaN allowed). */
export function pyJsonDumps(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (v instanceof PyFloat) {
    const r = floatRepr(v.value);
    return r === "nan" ? "NaN" : r === "inf" ? "Infinity" : r === "-inf" ? "-Infinity" : r;
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : pyJsonDumps(new PyFloat(v));
  if (typeof v === "string") return jsonStr(v);
  if (Array.isArray(v)) return "[" + v.map(pyJsonDumps).join(", ") + "]";
  if (typeof v === "object") {
    return "{" + Object.entries(v as Record<string, unknown>).map(([k, x]) => `${jsonStr(k)}: ${pyJsonDumps(x)}`).join(", ") + "}";
  }
  return "null";
}

function pyTypeName(v: unknown): string {
  if (v === null || v === undefined) return "NoneType";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "number") return Number.isInteger(v) ? "int" : "float";
  if (typeof v === "string") return "str";
  if (Array.isArray(v)) return "list";
  return "dict";
}

/** Python int(v) for a JSON value; throws PyError(ValueError/TypeError) with CPython's messages. */
export function pyInt(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) {
      throw new PyError(Number.isNaN(v) ? "ValueError" : "OverflowError", Number.isNaN(v) ? "cannot convert float NaN to integer" : "cannot convert float infinity to integer");
    }
    return Math.trunc(v);
  }
  if (typeof v === "string") {
    const t = v.trim().replace(/_/g, "");
    if (/^[+-]?\d+$/.test(t) && !/^[+-]?0\d/.test(t)) return Number(t);
    throw new PyError("ValueError", `invalid literal for int() with base 10: ${reprStr(v)}`);
  }
  throw new PyError("TypeError", `int() argument must be a string, a bytes-like object or a real number, not '${pyTypeName(v)}'`);
}

/** Python float(v) for a JSON value. */
export function pyFloat(v: unknown): number {
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "number") return v;
  if (typeof v === "string") {
    const t = v.trim().toLowerCase();
    if (/^[+-]?(nan)$/.test(t)) return NaN;
    if (/^[+-]?(inf|infinity)$/.test(t)) return t.startsWith("-") ? -Infinity : Infinity;
    if (/^[+-]?((\d[\d_]*)?\.?\d[\d_]*|\d[\d_]*\.)(e[+-]?\d+)?$/.test(t)) return Number(t.replace(/_/g, ""));
    throw new PyError("ValueError", `could not convert string to float: ${reprStr(v)}`);
  }
  throw new PyError("TypeError", `float() argument must be a string or a real number, not '${pyTypeName(v)}'`);
}

/** Python bool(v): empty string, 0, empty containers and None are false; "false" is true. */
export function pyBool(v: unknown): boolean {
  if (v === null || v === undefined) return false;
  if (typeof v === "string") return v.length > 0;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "boolean") return v;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === "object") return Object.keys(v as object).length > 0;
  return true;
}

/** Python == between JSON scalars (1 == 1.0 == True). */
export function pyEq(a: unknown, b: unknown): boolean {
  const num = (x: unknown) => (typeof x === "boolean" ? (x ? 1 : 0) : x);
  const x = num(a);
  const y = num(b);
  if (typeof x === "number" && typeof y === "number") return x === y;
  return x === y;
}
