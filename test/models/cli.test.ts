/**
 * Local mode: `npm run models-agent -- …` as a process of its own against s3rver, and the flags'
 * error messages, each naming its flag.
 */
import { strict as assert } from "node:assert";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { DockerfileParser } from "dockerfile-ast";
import { MODELS_AGENT_IMAGE } from "../../workload/modelsAgent";
import { AGENT_PATHS } from "../../contracts/modelsAgent";
import { parseAgentArgs, OptionsError } from "../../workload/models/agent/options";
import { TOKEN, call, ensure, makeTempDir, putObject, removeDir, s3Client, startS3 } from "./helpers";

const ROOT = join(__dirname, "..", "..");
const MAIN = join(ROOT, "workload", "models", "agent", "main.ts");

function problems(argv: string[], env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseAgentArgs(argv, env);
    return [];
  } catch (err) {
    assert.ok(err instanceof OptionsError);
    return err.problems;
  }
}

describe("model agent: local mode (npm run models-agent)", function () {
  it("names every bad flag", () => {
    assert.deepEqual(problems([]), [
      "--models-dir: required (the folder whose model folders (checkpoints/, loras/ …) the agent keeps)",
      "--bucket: required (the models bucket)",
      "--cache-gb: required",
    ]);
    assert.deepEqual(problems(["--models-dir", "/m", "--bucket", "Bad_Bucket", "--cache-gb", "lots", "--port", "99999", "--endpoint", "ftp://x", "--bogus", "1"]), [
      "--bogus: unknown flag",
      "--bucket: 'Bad_Bucket' is not an S3 bucket name",
      "--endpoint: must be an http(s) URL, got 'ftp://x'",
      "--cache-gb: must be a number from 0 to 1000000, got 'lots'",
      "--port: must be an integer from 0 to 65535, got '99999'",
    ]);
    assert.deepEqual(problems(["--models-dir", "/m", "--bucket", "models", "--cache-gb", "1", "--host", "0.0.0.0", "--pin", "../x", "--endpoint"]), [
      "--endpoint: needs a value",
      "--token: required when --host is not loopback (0.0.0.0); or set MODELS_AGENT_TOKEN",
      "--pin: '../x': dot-segment: '..' segment",
    ]);
    // The token may come from the environment, as the DaemonSet passes it.
    assert.deepEqual(problems(["--models-dir", "/m", "--bucket", "models", "--cache-gb", "1", "--host", "0.0.0.0"], { MODELS_AGENT_TOKEN: TOKEN }), []);
  });

  it("exits 2 with the problems and the usage on stderr", async () => {
    const r = await run(["--models-dir", "/tmp/x", "--cache-gb", "-1"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /models-agent: --bucket: required/);
    assert.match(r.stderr, /models-agent: --cache-gb: must be a number from 0 to 1000000, got '-1'/);
    assert.match(r.stderr, /usage: npm run models-agent -- --models-dir DIR --bucket NAME/);
  });

  it("runs against s3rver: serves the inventory, fetches on ensure, stops on SIGTERM", async () => {
    const scratch = makeTempDir("models-agent-cli-");
    const s3 = await startS3(join(scratch, "s3rver"), "models");
    const client = s3Client(s3.endpoint);
    try {
      await putObject(client, "models", "checkpoints/one.safetensors", Buffer.from("one model"));
      const dir = join(scratch, "models");
      const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, "--models-dir", dir, "--bucket", "models", "--endpoint", s3.endpoint, "--cache-gb", "1", "--port", "0", "--token", TOKEN], {
        cwd: ROOT,
        env: { ...process.env, AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      const url = await new Promise<string>((resolve, reject) => {
        child.stdout.setEncoding("utf8").on("data", (d: string) => {
          out += d;
          const m = /"msg":"listening","url":"([^"]+)"/.exec(out);
          if (m) resolve(m[1]);
        });
        void exited.then((code) => reject(new Error(`exited ${code}: ${err}`)));
      });
      const inv = await call(url, "GET", AGENT_PATHS.inventory);
      assert.equal(inv.status, 200);
      assert.equal(inv.body.quotaBytes, 1e9);
      const r = await ensure(url, ["checkpoints/one.safetensors"]);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(readFileSync(join(dir, "checkpoints", "one.safetensors"), "utf8"), "one model");
      child.kill("SIGTERM");
      assert.equal(await exited, 0, err);
      assert.match(out, /"msg":"stopping","signal":"SIGTERM"/);
    } finally {
      client.destroy();
      await s3.close();
      removeDir(scratch);
    }
  });
});

describe("model agent image build", function () {
  this.timeout(120_000);
  it("compiles with its own tsconfig, and the Dockerfile's ENTRYPOINT starts it (a bad flag exits 2 naming it)", () => {
    const out = mkdtempSync(join(tmpdir(), "agent-build-"));
    try {
      execFileSync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(ROOT, "workload/models/tsconfig.build.json"), "--outDir", out], { cwd: ROOT, stdio: "pipe" });
      const docker = DockerfileParser.parse(readFileSync(join(ROOT, MODELS_AGENT_IMAGE.dockerfile), "utf8"));
      const entry = JSON.parse(docker.getInstructions().filter((i) => i.getKeyword() === "ENTRYPOINT").at(-1)!.getArgumentsContent()!) as string[];
      assert.equal(entry[0], "node");
      const js = join(out, relative("dist", entry[1]));
      assert.ok(existsSync(js), `ENTRYPOINT's ${entry[1]} exists in the build output`);
      const r = spawnSync(process.execPath, [js, "--no-such-flag"], { env: { ...process.env, NODE_PATH: join(ROOT, "node_modules") }, encoding: "utf8" });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /models-agent: --no-such-flag: unknown flag/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, ...args], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("exit", (code) => resolve({ code, stderr }));
  });
}
