/**
 * The stack's configuration: read once, validated once, passed into every component. Every key is
 * declared in config/schema.ts; this module reads them through Pulumi, parses and checks them, and
 * reports every problem together, each naming its key, so one `pulumi up` shows them all.
 */
import * as pulumi from "@pulumi/pulumi";
import { Bad, ParseContext, unset } from "./parsers";
import { CROSS_RULES, KeySpec, REMOVED_KEYS, SCHEMA, StackConfig } from "./schema";

export type { CapacityType, CognitoFederation, NatStrategy, StackConfig, WorkingHours } from "./schema";
export { SCHEMA, REMOVED_KEYS } from "./schema";

/** Thrown with every problem found, one line each, naming the key. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid stack configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

/** Raw values as Pulumi config holds them (strings; lists and objects as JSON). */
export type RawConfig = Record<string, string | undefined>;

type Field = keyof typeof SCHEMA;
const FIELDS = Object.keys(SCHEMA) as Field[];
const spec = (f: Field) => SCHEMA[f] as KeySpec<unknown>;

/** Every key this program reads (the refused ones too, so that they are reported, not ignored). */
export const CONFIG_KEYS: readonly string[] = [...FIELDS.map((f) => spec(f).key), ...Object.keys(REMOVED_KEYS)];

/**
 * What the config is judged with besides the raw values. `pulumi.Config` only feeds parseConfig, so
 * every rule is testable without a Pulumi engine.
 */
export interface ConfigContext {
  project: string;
  stack: string;
  /** The secret keys' values (those SCHEMA marks `secret`), by key, read only as secret Outputs. */
  secrets?: Readonly<Record<string, pulumi.Output<string> | undefined>>;
  /** The day the configuration is judged on (support end dates). @defaultValue now */
  today?: Date;
  /** Receives warnings (e.g. extended-support billing); loadConfig passes pulumi.log.warn. @defaultValue ignore */
  warn?: (message: string) => void;
}

/** Parses and checks raw values (keys without the project prefix) against the schema. */
export function parseConfig(raw: RawConfig, ctx: ConfigContext): StackConfig {
  const problems: string[] = [];
  const pctx: ParseContext = { today: ctx.today ?? new Date(), warn: ctx.warn ?? (() => undefined) };
  const values: Record<string, unknown> = { project: ctx.project, stack: ctx.stack };
  for (const f of FIELDS) {
    const s = spec(f);
    const bad: Bad = (message, field) => problems.push(`${field ? `${s.key}.${field}` : s.key}: ${message}`);
    if (s.secret) {
      values[f] = ctx.secrets?.[s.key];
      continue;
    }
    const given = raw[s.key];
    if (unset(given)) {
      if (s.required) bad(s.required);
      values[f] = s.default === undefined ? undefined : s.parse(s.default, bad, pctx);
      continue;
    }
    values[f] = s.parse(given, bad, pctx);
  }
  for (const [k, why] of Object.entries(REMOVED_KEYS)) if (raw[k] !== undefined) problems.push(`${k}: ${why}`);
  const cfg = values as StackConfig;
  for (const rule of CROSS_RULES) {
    rule({ cfg, isSet: (k) => !unset(raw[k]), bad: (k, message) => problems.push(`${k}: ${message}`), warn: pctx.warn });
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(cfg);
}

/** Reads this stack's config through Pulumi and validates it. */
export function loadConfig(): StackConfig {
  const cfg = new pulumi.Config();
  const raw: RawConfig = {};
  const secrets: Record<string, pulumi.Output<string> | undefined> = {};
  for (const f of FIELDS) {
    const s = spec(f);
    // Secrets are read only as secret Outputs, so they never pass through plain config values.
    if (s.secret) {
      secrets[s.key] = cfg.getSecret(s.key);
      continue;
    }
    const [ns, name] = s.key.includes(":") ? s.key.split(":") : [undefined, s.key];
    raw[s.key] = ns ? new pulumi.Config(ns).get(name) : cfg.get(name);
  }
  // A refused key: only whether it is still set (it is refused with how to remove it), never its value.
  for (const k of Object.keys(REMOVED_KEYS)) if (cfg.getSecret(k) !== undefined) raw[k] = "(set)";
  return parseConfig(raw, {
    project: pulumi.getProject(),
    stack: pulumi.getStack(),
    secrets,
    warn: (message) => void pulumi.log.warn(message),
  });
}

/** How the README shows a default: lists as `[a, b]`; "required" or "none" when there is none. */
function shownDefault(s: KeySpec<unknown>): string {
  if (s.shown !== undefined) return `\`${s.shown}\``;
  if (s.default === undefined) return s.required ? "required" : "none";
  if (s.default.startsWith("[")) return `\`[${(JSON.parse(s.default) as string[]).join(", ")}]\``;
  return `\`${s.default}\``;
}

/** The README's configuration table, from the schema (`npm run docs:config` writes it). */
export function configTableMarkdown(): string {
  const rows = FIELDS.map((f) => spec(f)).map((s) => `| \`${s.key}\`${s.secret ? " (secret)" : ""} | ${shownDefault(s)} | ${s.doc} |`);
  return ["| key | default | meaning |", "|---|---|---|", ...rows].join("\n");
}
