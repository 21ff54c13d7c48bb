/**
 * The program's shape (issue 20): index.ts only wires components together, and component files stay
 * small enough to read, or say at their top why they are not.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROOT } from "../support/program";
import { sourceFiles } from "../support/sources";

/** The infrastructure folders; workload/gateway and workload/models are the images' programs. */
const COMPONENT_DIRS = ["cluster", "config", "edge", "image", "karpenter", "observability", "storage", "sync", "workload"];
const PROGRAMS = ["workload/gateway", "workload/models"];
const MAX_LINES = 300;

/** A `new X.Y(` or `new Y(` whose constructor comes from a provider package (a resource, not a component of ours). */
export function resourceConstructions(source: string): string[] {
  const packages = [...source.matchAll(/import \* as (\w+) from "@pulumi\/(?!pulumi")[^"]+"/g)].map((m) => m[1]);
  return packages.flatMap((p) => [...source.matchAll(new RegExp(`new ${p}\\.[\\w.]+\\(`, "g"))].map((m) => m[0]));
}

describe("the program's shape", () => {
  it("index.ts defines no resource of its own: it only creates components and passes outputs", () => {
    const index = fs.readFileSync(path.join(ROOT, "index.ts"), "utf8");
    assert.deepEqual(resourceConstructions(index), []);
    assert.doesNotMatch(index, /import \* as (aws|k8s|awsx|eks|random) from/, "index.ts needs no provider package");
  });

  it("the check sees a resource defined in a file (it is not a no-op)", () => {
    assert.deepEqual(resourceConstructions('import * as aws from "@pulumi/aws";\nconst g = new aws.cloudwatch.LogGroup("x", {});'), ["new aws.cloudwatch.LogGroup("]);
  });

  it(`no component file is over ${MAX_LINES} lines without a reason at its top`, () => {
    const long = COMPONENT_DIRS.flatMap((dir) => sourceFiles(/\.ts$/, dir, PROGRAMS))
      .map((f) => ({ f, text: fs.readFileSync(path.join(ROOT, f), "utf8") }))
      .filter(({ text }) => text.split("\n").length > MAX_LINES + 10)
      .filter(({ text }) => !/Longer than the ~300 lines/.test(text.slice(0, 2000)))
      .map(({ f, text }) => `${f}: ${text.split("\n").length} lines`);
    assert.deepEqual(long, []);
  });

  it("contracts/ (code the stack and the images share) imports only Node's standard library and itself", () => {
    const dir = path.join(ROOT, "contracts");
    const foreign = fs
      .readdirSync(dir)
      .filter((f) => f.endsWith(".ts"))
      .flatMap((f) => [...fs.readFileSync(path.join(dir, f), "utf8").matchAll(/from "([^"]+)"|require\("([^"]+)"\)/g)].map((m) => `${f}: ${m[1] ?? m[2]}`))
      .filter((i) => !/: (node:|\.\/)/.test(i));
    assert.deepEqual(foreign, []);
  });
});
