/**
 * Each value rule exists once (issue 20): the AMI alias, the duration, the instance-type form and the
 * model key. Every user imports the one module that holds it, and no other source file spells the
 * rule's own pattern (which is how copies that disagree came about).
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT } from "../support/program";
import { sourceFiles } from "../support/sources";

interface Rule {
  name: string;
  /** The module that holds it (relative to the repository root, without .ts). */
  module: string;
  /** The functions that carry it. */
  exports: string[];
  /** Where it is used: each must import one of `exports` from `module`. */
  users: string[];
  /** What the rule's own pattern looks like in source: found only in `module`. */
  fingerprint: RegExp;
}

const RULES: Rule[] = [
  {
    name: "AMI alias",
    module: "karpenter/rules",
    exports: ["amiAliasProblem"],
    users: ["config/schema.ts", "karpenter/validate.ts"],
    fingerprint: /al2023@v\\d\{8\}/,
  },
  {
    name: "duration",
    module: "karpenter/rules",
    exports: ["durationProblem"],
    users: ["config/schema.ts", "karpenter/validate.ts"],
    fingerprint: /\(s\|m\|h\)\)\+\$/,
  },
  {
    name: "instance type",
    module: "karpenter/rules",
    exports: ["gpuInstanceTypeProblem", "systemInstanceTypeProblem"],
    users: ["config/schema.ts", "karpenter/validate.ts"],
    // An anchored "family.size" pattern, as this rule and the copy it replaced spelled it.
    fingerprint: /\^\[a-z\](\[a-z0-9-\]\*)?\\\.|\^\[a-z0-9-\]\+\\\./,
  },
  {
    name: "model key",
    module: "contracts/modelKeys",
    exports: ["checkKey", "checkEventKey"],
    // The Lambda (events), the agent's and the gateway's path rule (contract), through which the
    // stack's config, the user-data renderer and the agent's options check pins.
    users: ["sync/events.ts", "contracts/modelsAgent.ts"],
    fingerprint: /\\p\{L\}\\p\{N\}\\p\{M\}/,
  },
  {
    name: "pin entry (a model key or folder)",
    module: "contracts/modelsAgent",
    exports: ["checkPinEntry"],
    users: ["config/schema.ts", "karpenter/userdata/gpuUserData.ts", "workload/models/agent/options.ts", "workload/modelsAgent.ts"],
    fingerprint: /MODEL_FOLDERS\.includes\(inner\)/,
  },
];

/** The modules a file imports, as repository paths without extension, with the names it imports. */
function importsOf(file: string): { module: string; names: string[] }[] {
  const text = fs.readFileSync(path.join(ROOT, file), "utf8");
  return [...text.matchAll(/import\s+(?:type\s+)?\{([^}]*)\}\s+from\s+"(\.[^"]+)"/g)].map((m) => ({
    module: path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), m[2])).split(path.sep).join("/"),
    names: m[1].split(",").map((n) => n.trim().split(/\s+as\s+/)[0]).filter(Boolean),
  }));
}

describe("each value rule exists once", () => {
  const all = sourceFiles(/\.(ts|js|sh)$/);

  for (const rule of RULES) {
    it(`${rule.name}: every user imports it from ${rule.module}.ts, and no other file spells its pattern`, () => {
      for (const user of rule.users) {
        assert.ok(all.includes(user), `${user} does not exist`);
        const from = importsOf(user).filter((i) => i.module === rule.module);
        assert.ok(from.some((i) => i.names.some((n) => rule.exports.includes(n))), `${user} does not import ${rule.exports.join(" or ")} from ${rule.module}`);
      }
      const spelled = all.filter((f) => rule.fingerprint.test(fs.readFileSync(path.join(ROOT, f), "utf8")));
      assert.deepEqual(spelled, [`${rule.module}.ts`], `the ${rule.name} rule is spelled outside ${rule.module}.ts`);
    });
  }

  it("the import reader and the fingerprints see what they look for (the checks are not no-ops)", () => {
    assert.ok(RULES.every((r) => r.fingerprint.test(fs.readFileSync(path.join(ROOT, `${r.module}.ts`), "utf8"))), "each fingerprint matches its own module");
    assert.ok(importsOf("config/schema.ts").some((i) => i.module === "karpenter/rules" && i.names.includes("amiAliasProblem")));
    const instanceType = RULES.find((r) => r.name === "instance type")!.fingerprint;
    assert.ok(instanceType.test(String.raw`/^[a-z0-9-]+\.[a-z0-9-]+$/`), "the copy karpenter/index.ts had would be seen");
    assert.ok(!instanceType.test(String.raw`/^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/`), "an ECR URL pattern is not an instance type");
  });
});
