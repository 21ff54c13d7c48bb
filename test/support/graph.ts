/**
 * The program's resource graph reduced to what `pulumi up` would act on: each resource's URN (its
 * identity: a changed URN is a delete and a create unless an alias names the old one), what it
 * asks the provider for (its inputs), its provider and its options. A refactor that moves code
 * around must leave this unchanged; `npm run graph:snapshot` records it (test/program/graph.snapshot.json).
 */
import { createHash } from "node:crypto";
import type { Recorder } from "./mocks";

export interface GraphEntry {
  type: string;
  /** sha256 of the inputs, keys sorted. */
  inputs: string;
  provider: string;
  /** sha256 of the options that change what the engine does (retain, protect, replace order, ignore, timeouts). */
  options: string;
  /** Earlier URNs this resource answers to (aliases). */
  aliases?: string[];
}

export type Graph = Record<string, GraphEntry>;

/** JSON with sorted keys, so equal values digest equally whatever order they were built in. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

const sha = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 16);

/** A provider reference is `<urn>::<id>`; the id is the mock's, so only the URN identifies it. */
const providerUrn = (ref: string | undefined) => (ref ?? "").split("::").slice(0, -1).join("::");

export function graphOf(rec: Recorder): Graph {
  const g: Graph = {};
  for (const r of rec.resources) {
    const { retainOnDelete, protect, deleteBeforeReplace, ignoreChanges, customTimeouts } = r.options;
    if (g[r.urn]) throw new Error(`two resources share the URN ${r.urn}`);
    g[r.urn] = {
      type: r.type,
      inputs: sha(canonical(r.inputs)),
      provider: providerUrn(r.provider),
      options: sha(canonical({ retainOnDelete, protect, deleteBeforeReplace, ignoreChanges: [...ignoreChanges].sort(), customTimeouts })),
      ...(r.options.aliases.length > 0 ? { aliases: r.options.aliases } : {}),
    };
  }
  return g;
}

export interface GraphChange {
  urn: string;
  what: string;
}

/**
 * What `pulumi up` of `after` would do to a stack deployed from `before`: resources created or
 * deleted (a URN not found, directly or through an alias — aliases of a parent carry to its
 * children, as the engine does) and resources whose inputs, provider or options differ.
 */
export function compareGraphs(before: Graph, after: Graph): GraphChange[] {
  const changes: GraphChange[] = [];
  const matched = new Set<string>();
  // The engine also tries a child's URN under each name its parent answers to, which includes the
  // names the parent inherits from its own parent's aliases: so this recurses up the chain.
  const memo = new Map<string, string[]>();
  const candidates = (urn: string): string[] => {
    const known = memo.get(urn);
    if (known) return known;
    const own = [urn, ...(after[urn]?.aliases ?? [])];
    memo.set(urn, own);
    const parts = urn.split("::");
    const [prefix, qualified, name] = [parts.slice(0, 2).join("::"), parts[2], parts.slice(3).join("::")];
    const chain = qualified.split("$");
    if (chain.length > 1) {
      // The parent's own URN is not in the child's; any resource of the parent's qualified type may be it.
      const parents = Object.keys(after).filter((u) => u.split("::")[2] === chain.slice(0, -1).join("$"));
      for (const p of parents) {
        for (const pc of candidates(p).slice(1)) own.push(`${prefix}::${pc.split("::")[2]}$${chain[chain.length - 1]}::${name}`);
      }
    }
    return own;
  };
  const translate = (ref: string) => (ref && !before[ref] ? (candidates(ref).find((c) => before[c]) ?? ref) : ref);
  for (const [urn, a] of Object.entries(after)) {
    const old = candidates(urn).find((c) => before[c] && !matched.has(c));
    if (!old) {
      changes.push({ urn, what: "created" });
      continue;
    }
    matched.add(old);
    const b = before[old];
    if (b.inputs !== a.inputs) changes.push({ urn, what: "inputs differ" });
    if (b.provider !== translate(a.provider)) changes.push({ urn, what: `provider ${b.provider} -> ${a.provider}` });
    if (b.options !== a.options) changes.push({ urn, what: "options differ" });
  }
  for (const urn of Object.keys(before)) if (!matched.has(urn)) changes.push({ urn, what: "deleted" });
  return changes;
}
