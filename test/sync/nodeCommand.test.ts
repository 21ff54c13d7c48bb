/**
 * The command the sync Lambda sends through SSM, run for real: bash and curl against a running model
 * agent's Unix socket (over s3rver), as root on a GPU node runs it. What matters is the exit status
 * (SSM marks the invocation failed, and the Lambda retries the batch, only on a non-zero exit) and
 * that the agent converged each key it holds.
 */
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { NODE_MODELS_DIR } from "../../contracts/node";
import { buildCommands, changeLines } from "../../sync/command";
import type { Change } from "../../sync/changes";
import { RunningAgent, startAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { TOKEN, deleteObject, ensure, makeTempDir, putObject, removeDir, s3Client, startS3 } from "../models/helpers";
import { decodeCommands } from "./helpers";

const run = promisify(execFile);
const BUCKET = "models";

describe("the sync Lambda's node command, run against a model agent's socket", function () {
  this.timeout(60_000);
  let scratch: string;
  let s3: Awaited<ReturnType<typeof startS3>>;
  let client: ReturnType<typeof s3Client>;
  let agent: RunningAgent | undefined;
  let dir: string;

  const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  before(async () => {
    // The agent's S3 client takes the SDK's default credential chain (Pod Identity's, on a node).
    process.env.AWS_ACCESS_KEY_ID = "S3RVER";
    process.env.AWS_SECRET_ACCESS_KEY = "S3RVER";
    scratch = makeTempDir("node-command-");
    s3 = await startS3(join(scratch, "s3rver"), BUCKET);
    client = s3Client(s3.endpoint);
  });
  afterEach(async () => {
    await agent?.stop();
    agent = undefined;
  });
  after(async () => {
    for (const [name, value] of [["AWS_ACCESS_KEY_ID", savedEnv.id], ["AWS_SECRET_ACCESS_KEY", savedEnv.secret]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    client.destroy();
    await s3?.close();
    removeDir(scratch);
  });

  async function startNodeAgent(): Promise<RunningAgent> {
    dir = join(scratch, `node-${Date.now()}`);
    const args = ["--models-dir", dir, "--bucket", BUCKET, "--endpoint", s3.endpoint, "--cache-gb", "1", "--port", "0", "--token", TOKEN, "--socket", "auto"];
    agent = await startAgent(parseAgentArgs(args, { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" }), () => undefined);
    return agent;
  }

  /** The Lambda's command with the node's models folder moved to this test's folder, run by bash. */
  async function onNode(changes: Change[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const [command] = buildCommands(changes);
    assert.ok(command.includes(`${NODE_MODELS_DIR}/`), "the command addresses the agent under the node's models folder");
    try {
      const { stdout, stderr } = await run("bash", ["-c", command.split(NODE_MODELS_DIR).join(dir)]);
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  }

  it("carries the exact change lines, and applies them: a replaced file is fetched again, a deleted one removed", async () => {
    const a = await startNodeAgent();
    await putObject(client, BUCKET, "vae/v.safetensors", randomBytes(50_000));
    await putObject(client, BUCKET, "loras/gone.safetensors", randomBytes(20_000));
    const held = await ensure(a.url, ["vae/v.safetensors", "loras/gone.safetensors"]);
    assert.equal(held.status, 200, JSON.stringify(held.body));
    const replaced = randomBytes(60_000);
    await putObject(client, BUCKET, "vae/v.safetensors", replaced);
    await deleteObject(client, BUCKET, "loras/gone.safetensors");
    const changes: Change[] = [
      { action: "put", key: "vae/v.safetensors" },
      { action: "delete", key: "loras/gone.safetensors" },
    ];
    assert.equal(decodeCommands(buildCommands(changes)), changeLines(changes));

    const result = await onNode(changes);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    const body = JSON.parse(result.stdout) as { results: { key: string; outcome: string }[]; failed: number };
    assert.deepEqual(
      body.results.map((r) => [r.key, r.outcome]),
      [["vae/v.safetensors", "replaced"], ["loras/gone.safetensors", "removed"]],
    );
    assert.ok(readFileSync(join(dir, "vae/v.safetensors")).equals(replaced));
    assert.ok(!existsSync(join(dir, "loras/gone.safetensors")));
  });

  it("exits non-zero when a key fails, so SSM reports the invocation failed and the Lambda retries", async () => {
    await startNodeAgent();
    // The agent refuses a key outside the model folders (the Lambda never sends one; defence in depth).
    const result = await onNode([{ action: "put", key: "notafolder/x.safetensors" }]);
    assert.notEqual(result.code, 0, result.stdout);
    assert.match(result.stdout, /path_refused|outside|not a ComfyUI model folder/);
  });

  it("exits non-zero, naming the socket, when no agent runs on the node", async () => {
    dir = join(scratch, "no-agent");
    const result = await onNode([{ action: "put", key: "vae/v.safetensors" }]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /agent\.sock|Couldn't connect|Failed to connect/);
  });
});
