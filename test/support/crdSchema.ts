/**
 * Validates a custom resource the way the Kubernetes API server would on create, against the real
 * CustomResourceDefinitions vendored under test/upstream/crds/ (see its README for where each came from):
 *
 * - the version's openAPIV3Schema, structurally (ajv), with the Kubernetes extensions
 *   (x-kubernetes-int-or-string, -preserve-unknown-fields, -list-type set/map, nullable) — defaults are
 *   not applied, and a field the structural schema does not know is a violation, because the API server
 *   would prune it silently and the setting would be lost without a word;
 * - every x-kubernetes-validations CEL rule at every node where it is declared, with `self` bound to the
 *   value there (typed as the API server types it: integer → int, number → double), reporting
 *   messageExpression/message. Rules that use `oldSelf` are transition rules and cannot fail on create:
 *   they are returned as skipped, never silently passed.
 * - root metadata against ObjectMeta (the API server ignores a CRD's own schema for it).
 *
 * Every violation carries its field path (`spec.template.spec.requirements[0].key`).
 */
import Ajv, { ErrorObject, ValidateFunction } from "ajv";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";

export const CRD_DIR = path.join(__dirname, "..", "upstream", "crds");

type Schema = Record<string, any>;

interface Rule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: string;
  optionalOldSelf?: boolean;
}

export interface Violation {
  path: string;
  message: string;
}

export interface ValidationResult {
  /** Transition rules (they reference oldSelf) that an API server does not run on create. */
  skippedTransitionRules: { path: string; rule: string }[];
  /** Number of CEL rules evaluated, so a caller can see that rules ran at all. */
  rulesEvaluated: number;
}

export class CustomResourceInvalid extends Error {
  constructor(
    readonly ref: string,
    readonly violations: Violation[],
  ) {
    super(`${ref} is invalid:\n${violations.map((v) => `  ${v.path}: ${v.message}`).join("\n")}`);
  }
}

interface CrdVersion {
  file: string;
  group: string;
  version: string;
  kind: string;
  scope: "Cluster" | "Namespaced";
  schema: Schema;
  validate: ValidateFunction;
}

// --- CEL -------------------------------------------------------------------------------------------

type CelEnv = {
  check(expr: string): { valid: boolean; error?: Error };
  parse(expr: string): (ctx: Record<string, unknown>) => unknown;
};

// cel-js is ESM-only; ts-node compiles `import()` to require(), so keep a real dynamic import.
const esmImport = new Function("specifier", "return import(specifier)") as (s: string) => Promise<any>;

interface Cel {
  /** self only: the environment rules run in on create. */
  create: CelEnv;
  /** self and oldSelf: used to recognise transition rules by compiling them, not by grepping text. */
  update: CelEnv;
}

let celPromise: Promise<Cel> | undefined;

function regex(pattern: string): RegExp {
  // Kubernetes compiles these with Go's RE2; JS (with the u flag) agrees on the syntax the CRDs use
  // and throws on RE2-only syntax such as (?i), so a disagreement fails loudly rather than matching wrongly.
  try {
    return new RegExp(pattern, "u");
  } catch (e) {
    throw new Error(`CEL regex ${JSON.stringify(pattern)} is not supported here: ${(e as Error).message}`);
  }
}

/**
 * The Kubernetes CEL libraries beyond what cel-js ships (cel-js has the standard library and the
 * strings extension: split, lowerAscii, matches …). Only what the vendored CRDs use is implemented; any
 * other function makes the rule fail to compile at CRD load time, loudly.
 * find/findAll: k8s.io/apiserver/pkg/cel/library/regex.go — first match or "", all matches (limit < 0: all).
 */
function kubernetesLibrary(env: any): any {
  return env
    .registerFunction("string.find(string): string", (s: string, re: string) => regex(re).exec(s)?.[0] ?? "")
    .registerFunction("string.findAll(string): list<string>", (s: string, re: string) => [...s.matchAll(new RegExp(regex(re).source, "gu"))].map((m) => m[0]))
    .registerFunction("string.findAll(string, int): list<string>", (s: string, re: string, limit: bigint) => {
      const all = [...s.matchAll(new RegExp(regex(re).source, "gu"))].map((m) => m[0]);
      return limit < 0n ? all : all.slice(0, Number(limit));
    });
}

function loadCel(): Promise<Cel> {
  celPromise ??= (async () => {
    const { Environment } = await esmImport("@marcbachmann/cel-js");
    const base = () => kubernetesLibrary(new Environment({ homogeneousAggregateLiterals: false }).registerVariable("self", "dyn"));
    return { create: base(), update: base().registerVariable("oldSelf", "dyn") };
  })();
  return celPromise;
}

interface CompiledRule extends Rule {
  transition: boolean;
  run?: (ctx: Record<string, unknown>) => unknown;
  runMessage?: (ctx: Record<string, unknown>) => unknown;
}

const compiledRules = new WeakMap<Rule, CompiledRule>();

function compileRule(cel: Cel, r: Rule, where: string): CompiledRule {
  const cached = compiledRules.get(r);
  if (cached) return cached;
  let out: CompiledRule;
  const onCreate = cel.create.check(r.rule);
  if (onCreate.valid) {
    out = { ...r, transition: false, run: cel.create.parse(r.rule) };
  } else if (cel.update.check(r.rule).valid) {
    out = { ...r, transition: true };
  } else {
    throw new Error(`CEL rule at ${where} does not compile (unknown function or syntax): ${r.rule}\n${onCreate.error?.message}`);
  }
  if (r.messageExpression !== undefined) {
    const m = cel.create.check(r.messageExpression);
    if (!m.valid) throw new Error(`CEL messageExpression at ${where} does not compile: ${r.messageExpression}\n${m.error?.message}`);
    out.runMessage = cel.create.parse(r.messageExpression);
  }
  compiledRules.set(r, out);
  return out;
}

// --- Structural schema → JSON Schema for ajv ---------------------------------------------------------

const PASSTHROUGH = new Set([
  "type", "enum", "pattern", "minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum",
  "multipleOf", "minProperties", "maxProperties", "uniqueItems", "required", "format",
]);
// Annotations: no effect on validation. `default` in particular is NOT applied (we check what we send).
const IGNORED = new Set(["description", "title", "example", "externalDocs", "default", "x-kubernetes-map-type"]);
// Handled by the CEL/list walker below, not by ajv.
const WALKER = new Set(["x-kubernetes-validations", "x-kubernetes-list-map-keys"]);

/**
 * OpenAPI v3.0 as Kubernetes reads it, rewritten to the JSON Schema draft ajv speaks. A keyword we do
 * not know is an error: a CRD upgrade that brings one must be looked at, not passed.
 */
function toJsonSchema(s: Schema, where: string, root = false): Schema {
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) {
    if (PASSTHROUGH.has(k)) out[k] = v;
    else if (IGNORED.has(k) || WALKER.has(k)) continue;
    else if (k === "properties") out.properties = Object.fromEntries(Object.entries(v as Schema).map(([p, ps]) => [p, toJsonSchema(ps as Schema, `${where}.${p}`)]));
    else if (k === "items") out.items = toJsonSchema(v as Schema, `${where}[]`);
    else if (k === "additionalProperties") out.additionalProperties = typeof v === "boolean" ? v : toJsonSchema(v as Schema, `${where}[*]`);
    else if (k === "anyOf" || k === "allOf" || k === "oneOf") out[k] = (v as Schema[]).map((x, i) => toJsonSchema(x, `${where}(${k}${i})`));
    else if (k === "not") out.not = toJsonSchema(v as Schema, `${where}(not)`);
    // OpenAPI v3.0's boolean exclusiveMinimum/Maximum qualify minimum/maximum.
    else if (k === "exclusiveMinimum" || k === "exclusiveMaximum") {
      if (v === true) {
        const bound = k === "exclusiveMinimum" ? "minimum" : "maximum";
        out[k] = s[bound];
      }
    } else if (k === "nullable" || k === "x-kubernetes-int-or-string" || k === "x-kubernetes-preserve-unknown-fields" || k === "x-kubernetes-list-type") continue;
    else throw new Error(`CRD schema at ${where} uses ${k}, which this validator does not implement`);
  }
  if (out.exclusiveMinimum !== undefined) delete out.minimum;
  if (out.exclusiveMaximum !== undefined) delete out.maximum;
  if (s["x-kubernetes-embedded-resource"]) throw new Error(`CRD schema at ${where}: x-kubernetes-embedded-resource is not implemented`);
  // int-or-string: the generated CRDs spell out the anyOf; add it where one does not.
  if (s["x-kubernetes-int-or-string"] && !s.anyOf) out.anyOf = [{ type: "integer" }, { type: "string" }];
  if (s["x-kubernetes-list-type"] === "set") out.uniqueItems = true;
  const preserve = s["x-kubernetes-preserve-unknown-fields"] === true;
  if (root && out.properties?.metadata) {
    // The API server validates metadata as ObjectMeta (done separately), whatever the CRD says of it.
    out.properties.metadata = { type: "object" };
  }
  if (s.type === "object" && !preserve && s.additionalProperties === undefined) {
    // Structural pruning: what properties do not name is dropped by the API server. For us a defect.
    out.additionalProperties = false;
  }
  if (s.nullable === true) {
    if (typeof out.type === "string") out.type = [out.type, "null"];
    if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
    if (out.anyOf) out.anyOf = [...out.anyOf, { type: "null" }];
  }
  return out;
}

// RFC 3339 as Kubernetes' date-time format accepts it (k8s.io/kube-openapi/pkg/validation/strfmt).
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function newAjv(): Ajv {
  return new Ajv({
    allErrors: true,
    strict: true,
    strictTypes: false,
    strictRequired: false,
    formats: {
      // kube-openapi validates formats on strings only; integer/number formats are descriptive.
      int32: true,
      int64: true,
      float: true,
      double: true,
      "date-time": (v: string) => DATE_TIME.test(v) && !Number.isNaN(Date.parse(v)),
      byte: /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/,
    },
  });
}

// --- The registry of vendored CRDs -------------------------------------------------------------------

let registry: Map<string, CrdVersion> | undefined;

function key(apiVersion: string, kind: string): string {
  return `${apiVersion} ${kind}`;
}

/** Every served version of one CRD document, compiled. */
function compileCrd(crd: Schema, file: string, ajv: Ajv): CrdVersion[] {
  if (crd?.kind !== "CustomResourceDefinition") throw new Error(`${file} is not a CustomResourceDefinition`);
  const { group, names, scope } = crd.spec;
  if (scope !== "Cluster" && scope !== "Namespaced") throw new Error(`${file}: spec.scope must be Cluster or Namespaced, got ${scope}`);
  return (crd.spec.versions as Schema[])
    .filter((v) => v.served)
    .map((v) => {
      const schema = v.schema?.openAPIV3Schema;
      if (!schema) throw new Error(`${file} ${v.name} has no openAPIV3Schema`);
      return { file, group, version: v.name, kind: names.kind, scope, schema, validate: ajv.compile(toJsonSchema(schema, names.kind, true)) };
    });
}

function loadRegistry(): Map<string, CrdVersion> {
  if (registry) return registry;
  const ajv = newAjv();
  const out = new Map<string, CrdVersion>();
  for (const file of fs.readdirSync(CRD_DIR).filter((f) => f.endsWith(".yaml")).sort()) {
    for (const v of compileCrd(yaml.load(fs.readFileSync(path.join(CRD_DIR, file), "utf8")) as Schema, file, ajv)) {
      const ref = key(`${v.group}/${v.version}`, v.kind);
      if (out.has(ref)) throw new Error(`${ref} is defined twice (${out.get(ref)!.file}, ${file})`);
      out.set(ref, v);
    }
  }
  registry = out;
  return out;
}

/** Whether a vendored CRD defines apiVersion/kind (a served version). */
export function hasCustomResourceDefinition(apiVersion: string, kind: string): boolean {
  return loadRegistry().has(key(apiVersion, kind));
}

/** The vendored CRD's schema for apiVersion/kind (for tests that need to look inside it). */
export function crdSchemaOf(apiVersion: string, kind: string): Schema {
  const v = loadRegistry().get(key(apiVersion, kind));
  if (!v) throw new Error(`no vendored CRD for ${apiVersion} ${kind} in ${CRD_DIR}`);
  return v.schema;
}

// --- Paths ---------------------------------------------------------------------------------------

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function child(p: string, k: string | number): string {
  if (typeof k === "number") return `${p}[${k}]`;
  if (IDENT.test(k)) return p ? `${p}.${k}` : k;
  return `${p}[${JSON.stringify(k)}]`;
}

function fromPointer(pointer: string): string {
  if (!pointer) return "<root>";
  let p = "";
  for (const raw of pointer.split("/").slice(1)) {
    const seg = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    p = /^\d+$/.test(seg) ? `${p}[${seg}]` : child(p, seg);
  }
  return p;
}

function valueAt(obj: unknown, pointer: string): unknown {
  let cur: any = obj;
  for (const raw of pointer.split("/").slice(1)) cur = cur?.[raw.replace(/~1/g, "/").replace(/~0/g, "~")];
  return cur;
}

function ajvViolations(obj: unknown, errors: ErrorObject[]): Violation[] {
  const out: Violation[] = [];
  for (const e of errors) {
    const p = fromPointer(e.instancePath);
    if (e.keyword === "additionalProperties") {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      out.push({ path: child(p === "<root>" ? "" : p, extra), message: "unknown field: not in the CRD's structural schema (the API server would prune it silently)" });
    } else if (e.keyword === "type" && valueAt(obj, e.instancePath) === null) {
      out.push({ path: p, message: "null where the schema is not nullable (the API server would prune it)" });
    } else {
      const detail = e.keyword === "enum" ? ` ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}` : "";
      out.push({ path: p, message: `${e.message ?? e.keyword}${detail} (got ${JSON.stringify(valueAt(obj, e.instancePath))})` });
    }
  }
  return out;
}

// --- CEL values and the walker ---------------------------------------------------------------------

/** The value as the API server hands it to CEL, typed by the schema (integers are CEL ints). */
function toCel(s: Schema | undefined, v: unknown): unknown {
  if (v === null || v === undefined) return v;
  if (Array.isArray(v)) return v.map((x) => toCel(s?.items, x));
  if (typeof v === "object") {
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      const ps = s?.properties?.[k] ?? (typeof s?.additionalProperties === "object" ? s.additionalProperties : undefined);
      o[k] = toCel(ps, x);
    }
    return o;
  }
  if (typeof v === "number") {
    if (s?.type === "number") return v;
    return Number.isInteger(v) ? BigInt(v) : v;
  }
  if (typeof v === "string" && s?.type === "string" && s.format === "date-time" && DATE_TIME.test(v)) return new Date(v);
  return v;
}

function celMessage(r: CompiledRule, ctx: Record<string, unknown>): string {
  if (r.runMessage) {
    try {
      const m = r.runMessage(ctx);
      if (typeof m === "string" && m.trim() !== "") return m;
    } catch {
      // Kubernetes falls back to message (or the rule) when messageExpression fails.
    }
  }
  return r.message ?? `failed rule: ${r.rule}`;
}

interface WalkState {
  cel: Cel;
  violations: Violation[];
  result: ValidationResult;
}

function walk(st: WalkState, s: Schema | undefined, v: unknown, p: string, root = false): void {
  if (!s || v === undefined) return;
  const rules = (s["x-kubernetes-validations"] ?? []) as Rule[];
  if (rules.length > 0 && v !== null) {
    const self = toCel(s, v);
    for (const r of rules) {
      const c = compileRule(st.cel, r, p || "<root>");
      if (c.transition) {
        st.result.skippedTransitionRules.push({ path: p || "<root>", rule: r.rule });
        continue;
      }
      st.result.rulesEvaluated++;
      // fieldPath is relative to the node and starts with "." or "[" (apiextensions v1 ValidationRule).
      const at = r.fieldPath ? `${p}${r.fieldPath}` : p || "<root>";
      try {
        const ok = c.run!({ self });
        if (ok !== true) st.violations.push({ path: at, message: `${celMessage(c, { self })} (rule: ${r.rule})` });
      } catch (e) {
        st.violations.push({ path: at, message: `rule evaluation error: ${(e as Error).message.split("\n")[0]} (rule: ${r.rule})` });
      }
    }
  }
  if (Array.isArray(v)) {
    if (s["x-kubernetes-list-type"] === "map") {
      const keys = (s["x-kubernetes-list-map-keys"] ?? []) as string[];
      const seen = new Map<string, number>();
      v.forEach((item, i) => {
        const id = JSON.stringify(keys.map((k) => (item as Record<string, unknown>)?.[k] ?? null));
        if (seen.has(id)) st.violations.push({ path: child(p, i), message: `duplicate entry for list-map keys ${keys.join(",")}=${id} (also at [${seen.get(id)}])` });
        else seen.set(id, i);
      });
    }
    v.forEach((item, i) => walk(st, s.items, item, child(p, i)));
  } else if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (root && k === "metadata") continue;
      const ps = s.properties?.[k] ?? (typeof s.additionalProperties === "object" ? s.additionalProperties : undefined);
      walk(st, ps, x, child(p, k));
    }
  }
}

async function metadataViolations(meta: unknown): Promise<Violation[]> {
  if (meta === undefined) return [];
  const { ObjectMeta } = await esmImport("@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta");
  try {
    new ObjectMeta(meta).validate();
    return [];
  } catch (e) {
    return [{ path: "metadata", message: (e as Error).message }];
  }
}

/**
 * Validates obj as the API server would on create. Throws CustomResourceInvalid listing every
 * violation with its path; throws plainly when no vendored CRD serves obj's apiVersion/kind.
 */
export async function validateCustomResource(obj: Record<string, any>): Promise<ValidationResult> {
  const { apiVersion, kind } = obj ?? {};
  if (typeof apiVersion !== "string" || typeof kind !== "string") throw new Error(`object without apiVersion/kind: ${JSON.stringify(obj).slice(0, 200)}`);
  const crd = loadRegistry().get(key(apiVersion, kind));
  if (!crd) throw new Error(`no vendored CRD serves ${apiVersion} ${kind} (looked in ${CRD_DIR})`);
  return validateAgainst(crd, obj);
}

/**
 * Validates obj against a CRD document given here rather than a vendored one: for tests of this
 * validator's handling of schema extensions the vendored CRDs happen not to use.
 */
export async function validateWithCrd(crdDocument: Schema, obj: Record<string, any>): Promise<ValidationResult> {
  const crd = compileCrd(crdDocument, "<given CRD>", newAjv()).find((v) => `${v.group}/${v.version}` === obj.apiVersion && v.kind === obj.kind);
  if (!crd) throw new Error(`the given CRD does not serve ${obj.apiVersion} ${obj.kind}`);
  return validateAgainst(crd, obj);
}

async function validateAgainst(crd: CrdVersion, obj: Record<string, any>): Promise<ValidationResult> {
  const cel = await loadCel();
  const violations: Violation[] = [];
  if (!crd.validate(obj)) violations.push(...ajvViolations(obj, crd.validate.errors ?? []));
  violations.push(...(await metadataViolations(obj.metadata)));
  if (crd.scope === "Cluster" && obj.metadata?.namespace !== undefined) {
    violations.push({ path: "metadata.namespace", message: `${crd.kind} is cluster-scoped (the CRD's spec.scope): a namespace cannot apply to it` });
  }
  const result: ValidationResult = { skippedTransitionRules: [], rulesEvaluated: 0 };
  walk({ cel, violations, result }, crd.schema, obj, "", true);
  if (violations.length > 0) throw new CustomResourceInvalid(`${obj.apiVersion} ${obj.kind} ${obj.metadata?.name ?? "<unnamed>"} (${crd.file})`, violations);
  return result;
}

/**
 * Runs one CEL rule with `self` bound to value (typed by schema when given), in the same environment
 * the CRD rules run in. For tests of the CEL library itself; a rule that does not compile rejects.
 */
export async function evaluateCelRule(rule: string, value: unknown, schema?: Schema): Promise<unknown> {
  const cel = await loadCel();
  const c = compileRule(cel, { rule }, "<evaluateCelRule>");
  if (c.transition) throw new Error(`${rule} is a transition rule (uses oldSelf)`);
  return c.run!({ self: toCel(schema, value) });
}
