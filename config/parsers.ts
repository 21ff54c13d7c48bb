/**
 * The value types a stack config key can have, each a parser from Pulumi's raw string (lists and
 * objects arrive as JSON) to a typed value. A parser reports what is wrong through `bad`, which names
 * the key (or `key.field` for an object's field), and returns a usable value anyway so that every
 * problem of one `pulumi up` is reported together.
 */

/** Reports one problem; `field` names a part of an object value (`workingHours.timezone`). */
export type Bad = (message: string, field?: string) => void;

/** What a parser may need besides the raw value. */
export interface ParseContext {
  /** The day the configuration is judged on (support end dates). */
  today: Date;
  /** Receives warnings (e.g. extended-support billing). */
  warn: (message: string) => void;
}

export type Parser<T> = (raw: string, bad: Bad, ctx: ParseContext) => T;

/** Is `raw` absent? Pulumi hands an unset key as undefined; an empty string is unset too. */
export const unset = (raw: string | undefined): raw is undefined => raw === undefined || raw === "";

export const text =
  (check?: (v: string) => string | undefined): Parser<string> =>
  (raw, bad) => {
    const problem = check?.(raw);
    if (problem) bad(problem);
    return raw;
  };

export const integer =
  (min: number, max: number): Parser<number> =>
  (raw, bad) => {
    if (!/^-?\d+$/.test(raw.trim())) {
      bad(`must be a whole number between ${min} and ${max}, got "${raw}"`);
      return min;
    }
    const n = Number(raw);
    if (n < min || n > max) bad(`must be between ${min} and ${max}, got ${n}`);
    return n;
  };

export const boolean = (): Parser<boolean> => (raw, bad) => {
  if (raw === "true" || raw === "false") return raw === "true";
  bad(`must be true or false, got "${raw}"`);
  return false;
};

export const oneOf =
  <T extends string>(allowed: readonly T[]): Parser<T> =>
  (raw, bad) => {
    if (!(allowed as readonly string[]).includes(raw)) bad(`must be one of ${allowed.join(", ")}, got "${raw}"`);
    return raw as T;
  };

/**
 * A list of strings (Pulumi stores a list set with --path as JSON). `item` judges each entry and
 * returns the problem or undefined; `map` normalises an entry first; `nonEmpty` and `unique` are
 * the problems reported for an empty list and for a repeated entry.
 */
export const list =
  (key: string, opts: { item?: (v: string) => string | undefined; map?: (v: string) => string; nonEmpty?: string; unique?: string } = {}): Parser<string[]> =>
  (raw, bad) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      /* reported below */
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === "string")) {
      bad(`must be a list of strings, e.g. pulumi config set --path '${key}[0]' value; got ${raw}`);
      return [];
    }
    const values = opts.map ? parsed.map(opts.map) : (parsed as string[]);
    if (opts.nonEmpty && values.length === 0) bad(opts.nonEmpty);
    for (const v of values) {
      const problem = opts.item?.(v);
      if (problem) bad(problem);
    }
    if (opts.unique && new Set(values).size !== values.length) bad(opts.unique);
    return values;
  };

/** A JSON object; `fields` checks and builds the typed value (undefined when it is not usable). */
export const object =
  <T>(example: string, fields: (o: Record<string, unknown>, bad: Bad) => T | undefined): Parser<T | undefined> =>
  (raw, bad) => {
    let o: unknown;
    try {
      o = JSON.parse(raw);
    } catch {
      /* reported below */
    }
    if (!o || typeof o !== "object" || Array.isArray(o)) {
      bad(`must be an object: ${example}`);
      return undefined;
    }
    return fields(o as Record<string, unknown>, bad);
  };

export const CIDR = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(\d|[12]\d|3[0-2])$/;
export const cidrProblem = (c: string) => (CIDR.test(c) ? undefined : `"${c}" is not an IPv4 CIDR`);
