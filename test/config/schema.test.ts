/**
 * config/schema.ts is the one declaration of every key: the README's table is written from it, and
 * Pulumi.dev.yaml sets exactly the keys it says a stack file sets, to their defaults.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { CONFIG_KEYS, ConfigError, REMOVED_KEYS, SCHEMA, configTableMarkdown, parseConfig } from "../../config";
import { readmeConfigTable } from "../../config/docs";
import type { KeySpec } from "../../config/schema";
import { ROOT } from "../support/program";

const ctx = { project: "comfyui-eks", stack: "dev", today: new Date("2026-12-01T12:00:00Z") };
const specs = Object.values(SCHEMA) as KeySpec<unknown>[];

describe("config schema", () => {
  it("the README's configuration table is the one written from the schema (npm run docs:config)", () => {
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");
    const { start, end } = readmeConfigTable(readme);
    assert.equal(readme.slice(start, end).trimEnd(), configTableMarkdown());
    // One row per key, refused keys nowhere.
    for (const s of specs) assert.ok(configTableMarkdown().includes(`| \`${s.key}\``), s.key);
    for (const k of Object.keys(REMOVED_KEYS)) assert.ok(!readme.slice(start, end).includes(`\`${k}\``), `${k} is refused, yet documented`);
  });

  it("Pulumi.dev.yaml sets every key a stack file sets, to its default, and nothing else", () => {
    const doc = yaml.load(fs.readFileSync(path.join(ROOT, "Pulumi.dev.yaml"), "utf8")) as { config: Record<string, unknown> };
    const inFile = new Map(Object.entries(doc.config).map(([k, v]) => [k.replace(/^comfyui-eks:/, ""), typeof v === "string" ? v : JSON.stringify(v)]));
    for (const s of specs) {
      const expected = s.inStackFile ?? s.default !== undefined;
      assert.equal(inFile.has(s.key), expected, `${s.key}: ${expected ? "missing from" : "should not be in"} Pulumi.dev.yaml`);
      if (expected && s.default !== undefined) assert.deepEqual(JSON.parse(JSON.stringify(yaml.load(inFile.get(s.key)!))), yaml.load(s.default), `${s.key} differs from its default`);
    }
    for (const k of inFile.keys()) assert.ok(CONFIG_KEYS.includes(k) && !(k in REMOVED_KEYS), `Pulumi.dev.yaml sets ${k}, which the program does not read`);
  });

  it("a key without a default (and not required) is undefined when unset; every other has a value", () => {
    const defaults = parseConfig({ "aws:region": "us-west-2" }, ctx);
    for (const [field, s] of Object.entries(SCHEMA) as [keyof typeof SCHEMA, KeySpec<unknown>][]) {
      if (s.default === undefined && !s.required) assert.equal(defaults[field], undefined, `${s.key} has no default, so it is undefined`);
      else assert.notEqual(defaults[field], undefined, s.key);
    }
  });

  it("keys are unique, each documented, and CONFIG_KEYS is the schema's plus the refused ones", () => {
    const keys = specs.map((s) => s.key);
    assert.equal(new Set(keys).size, keys.length);
    for (const s of specs) assert.ok(s.doc.length > 3, `${s.key} has no doc line`);
    assert.deepEqual([...CONFIG_KEYS].sort(), [...keys, ...Object.keys(REMOVED_KEYS)].sort());
  });

  it("a required key without a value is a problem naming it; a secret is never parsed from plain text", () => {
    assert.throws(() => parseConfig({}, ctx), (e: unknown) => e instanceof ConfigError && e.problems.includes("aws:region: is required: pulumi config set aws:region us-west-2"));
    const cfg = parseConfig({ "aws:region": "us-west-2", oidcClientSecret: "plain" }, ctx);
    assert.equal(cfg.oidcClientSecret, undefined);
  });
});
