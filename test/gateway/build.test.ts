import { strict as assert } from "node:assert";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import { GATEWAY_IMAGE } from "../../workload/gatewayDeployment";

const ROOT = path.join(__dirname, "..", "..");
const GATEWAY = path.join(ROOT, "workload", "gateway");

/** Relative imports of a TypeScript file, resolved to files. */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, "utf8");
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from|import\(|require\()\s*"(\.{1,2}\/[^"]+)"/g)) {
    const base = path.resolve(path.dirname(file), m[1]);
    const hit = [`${base}.ts`, path.join(base, "index.ts")].find((f) => fs.existsSync(f));
    if (!hit) throw new Error(`${path.relative(ROOT, file)}: import ${m[1]} does not resolve`);
    out.push(hit);
  }
  return out;
}

function closure(entry: string[]): Set<string> {
  const seen = new Set<string>();
  const todo = [...entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    todo.push(...relativeImports(f));
  }
  return seen;
}

type Instr = ReturnType<ReturnType<typeof DockerfileParser.parse>["getInstructions"]>[number];
const fromStage = (i: Instr) => ((i as unknown as { getFlags?: () => { getName(): string }[] }).getFlags?.() ?? []).some((f) => f.getName() === "from");

const inContext = (file: string) => GATEWAY_IMAGE.context.some((c) => { const rel = path.relative(ROOT, file); return rel === c || rel.startsWith(`${c}/`); });

describe("gateway image build", function () {
  this.timeout(120000);

  it("every file the gateway imports is in its build context and copied by its Dockerfile", () => {
    const sources = fs.readdirSync(GATEWAY, { recursive: true }).map(String).filter((f) => f.endsWith(".ts") && !f.startsWith("dist")).map((f) => path.join(GATEWAY, f));
    const files = closure(sources);
    const outside = [...files].filter((f) => !inContext(f)).map((f) => path.relative(ROOT, f));
    assert.deepEqual(outside, [], "imported but not in GATEWAY_IMAGE.context");
    assert.ok([...files].some((f) => f.endsWith(path.join("contracts", "metrics.ts"))), "the shared metric names are imported");
    const docker = DockerfileParser.parse(fs.readFileSync(path.join(ROOT, GATEWAY_IMAGE.dockerfile), "utf8"));
    const copied = docker.getInstructions().filter((i) => i.getKeyword() === "COPY" && !fromStage(i)).flatMap((i) => i.getArguments().slice(0, -1).map((a) => a.getValue()));
    for (const c of GATEWAY_IMAGE.context) assert.ok(copied.includes(c), `Dockerfile copies ${c} (copies: ${copied.join(", ")})`);
    // The negative case: a file outside the context is caught.
    assert.equal(inContext(path.join(ROOT, "observability", "dashboard.ts")), false);
  });

  it("compiles with its own tsconfig, and the Dockerfile's CMD starts it (a bad flag exits 2 naming it)", () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), "gw-build-"));
    try {
      execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", path.join(GATEWAY, "tsconfig.build.json"), "--outDir", out], { cwd: ROOT, stdio: "pipe" });
      const docker = DockerfileParser.parse(fs.readFileSync(path.join(ROOT, GATEWAY_IMAGE.dockerfile), "utf8"));
      const cmd = JSON.parse(docker.getInstructions().filter((i) => i.getKeyword() === "CMD").at(-1)!.getArgumentsContent()!) as string[];
      const copyDist = docker.getInstructions().find((i) => i.getKeyword() === "COPY" && fromStage(i))!.getArguments().map((a) => a.getValue());
      assert.equal(copyDist.at(-1), "./dist", "the build's dist lands in /app/dist");
      assert.equal(cmd[0], "node");
      const entry = path.join(out, path.relative("dist", cmd[1]));
      assert.ok(fs.existsSync(entry), `CMD's ${cmd[1]} exists in the build output`);
      const r = spawnSync(process.execPath, [entry, "--no-such-flag"], { env: { ...process.env, NODE_PATH: path.join(ROOT, "node_modules"), KUBERNETES_SERVICE_HOST: "" }, encoding: "utf8" });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /unknown argument --no-such-flag/);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
