/**
 * The node tool's pinned copy run for real with the AWS CLI against s3rver: complete files only, what
 * fits above the floor, the deadline, clear failures, and the model agent taking over.
 */
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { MODEL_FOLDERS } from "../../contracts/node";
import { checkKey } from "../../contracts/modelKeys";
import { AGENT_PRIVATE_DIR } from "../../contracts/modelsAgent";
import { startAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { MODELS_TOOL_EXIT } from "../../karpenter/userdata/gpuUserData";
import { RunResult, S3, aws, listFiles, startThrottledProxy, watchForPartialFiles } from "./userdataHelpers";
import { usePinnedBucket } from "./pinnedBucket";

describe("GPU node user data: the pinned copy against S3 (s3rver + AWS CLI)", function () {
  this.timeout(60_000);
  const fx = usePinnedBucket();
  const { BUCKET, ALL_FOLDERS, sources, node, modelFiles, assertIdentical, tool, putObject, fakeDisk } = fx;
  let env: NodeJS.ProcessEnv;
  let s3: S3;
  before(() => {
    ({ env, s3 } = fx);
  });

  it("copies every pinned file byte-identical, never shows a partial file, leaves staging empty; a second run copies nothing", async () => {
    const n = node({ PINS: ALL_FOLDERS });
    const watcher = watchForPartialFiles(n.dirs.models, sources, 3, (rel) => rel.startsWith(`${AGENT_PRIVATE_DIR}/`));
    const result = await tool(["fill-pins"], n.env);
    const seen = await watcher.stop();
    assert.equal(result.code, 0, result.stderr);
    assertIdentical(n.dirs.models, [...sources.keys()]);
    assert.deepEqual(seen.problems, []);
    assert.ok(seen.polls > 10 && seen.observed >= 1, `the watcher polled during the copy (${seen.polls} polls)`);
    assert.deepEqual(listFiles(n.dirs.staging), [], "staging is empty afterwards");
    // The agent's private folder: root only (ComfyUI runs as uid 1000 and must not even list it).
    assert.equal(statSync(join(n.dirs.models, AGENT_PRIVATE_DIR)).mode & 0o777, 0o700);
    for (const folder of MODEL_FOLDERS) assert.ok(statSync(join(n.dirs.models, folder)).isDirectory(), `${folder}/ exists for ComfyUI`);
    assert.match(result.stderr, new RegExp(`pins: copied ${sources.size} file\\(s\\)`));

    const again = await tool(["fill-pins"], n.env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, new RegExp(`pins: copied 0 file\\(s\\) \\(0 bytes\\) in \\d+s; ${sources.size} present`));
    assert.doesNotMatch(again.stderr, /fetched/);
  });

  it("takes pins as files and folders: a file entry is one key, not a prefix; an entry with no match is a warning", async () => {
    const n = node({ PINS: "vae/ae.safetensors, text_encoders/\ncheckpoints/typo.safetensors" });
    const result = await tool(["fill-pins"], n.env);
    assert.equal(result.code, 0, result.stderr);
    assertIdentical(n.dirs.models, ["text_encoders/qwen_3_4b.safetensors", "vae/ae.safetensors"]);
    assert.match(result.stderr, /warning: pinned entry 'checkpoints\/typo\.safetensors' matches no model in bucket models/);
  });

  it("keeps the floor (reserve + eviction line): pins that do not fit are skipped in order and named, a later smaller one still fits", async () => {
    const GB = 1_000_000_000;
    // A 2 GB array, 1 GB reserve, 10% eviction line: 400 kB usable. The 9.4 MB model does not fit;
    // the 300 kB encoder and the 64 KiB VAE after it do.
    const n = node({ PINS: "diffusion_models/,text_encoders/,vae/ae.safetensors", RESERVE_GB: "1", EVICTION_PERCENT: "10" });
    const path = fakeDisk(join(n.dirs.root, "bin"), 2 * GB, GB + 0.2 * GB + 400_000);
    const result = await tool(["fill-pins"], { ...n.env, PATH: path, FILL_MISSING: join(n.dirs.root, "missing") });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stderr, /pins: 400000 bytes usable of 2\.00 GB \(floor: 1 GB reserve \+ 10% eviction line\)/);
    assertIdentical(n.dirs.models, ["text_encoders/qwen_3_4b.safetensors", "vae/ae.safetensors"]);
    assert.match(result.stderr, /missing: diffusion_models\/z_image_turbo_bf16\.safetensors \(9\.\d\d MB\): does not fit/);
    assert.equal(readFileSync(join(n.dirs.root, "missing"), "utf8").split("\n").filter(Boolean).length, 1);
  });

  it("copies only keys that the Lambda's and the agent's key rule accepts; any other is left to the agent", async () => {
    const odd = ["loras/$(touch pwned).safetensors", "loras/back`tick`.safetensors", "loras/ünïcode.safetensors", "loras/semi;colon.safetensors"];
    for (const key of odd) await putObject(key, randomBytes(500));
    try {
      const n = node({ PINS: "loras/" });
      const result = await tool(["fill-pins"], n.env);
      assert.equal(result.code, 0, result.stderr);
      const copied = modelFiles(n.dirs.models);
      assert.deepEqual(copied, ["loras/Qwen Image Lightning 8steps V1.0.safetensors", "loras/it's (v2) [final].safetensors"]);
      for (const key of copied) assert.equal(checkKey(key).kind, "valid", key);
      for (const key of odd) assert.ok(result.stderr.includes(`missing: ${key} (500 bytes): left to the model agent`), key);
      assert.ok(!listFiles(n.dirs.root).some((f) => f.includes("pwned")), "no key is ever run as a command");
    } finally {
      await aws(env, ["s3api", "delete-objects", "--bucket", BUCKET, "--delete", JSON.stringify({ Objects: odd.map((Key) => ({ Key })) })]);
    }
  });

  it("the budget is a hard deadline: copies in flight are stopped, nothing partial is visible, exit 75 (the agent fetches the rest)", async () => {
    // 200 KB/s: the 9.4 MB model alone needs ~47 s, far beyond any budget below.
    const slow = await startThrottledProxy(s3.endpoint, 200_000);
    try {
      const pins = ["vae/ae.safetensors", "diffusion_models/z_image_turbo_bf16.safetensors"];
      // The budget also covers the listing (one CLI start per pin, about 1 s each here when idle). On a
      // busy machine the listing alone can outlast 6 s, and the tool then rightly says so (exit 3); the
      // case is about copies in flight, so it runs again with twice the budget until the listing fits.
      let budget = 6;
      let first: RunResult;
      let took: number;
      let n: ReturnType<typeof node>;
      let seen: Awaited<ReturnType<ReturnType<typeof watchForPartialFiles>["stop"]>>;
      for (;;) {
        n = node({ BOOT_FILL_SECONDS: String(budget), PARALLEL: "2", PINS: pins.join(","), AWS_ENDPOINT_URL: slow.endpoint });
        const watcher = watchForPartialFiles(n.dirs.models, sources, 3, (rel) => rel.startsWith(`${AGENT_PRIVATE_DIR}/`));
        const t0 = Date.now();
        first = await tool(["fill-pins"], n.env);
        took = (Date.now() - t0) / 1000;
        seen = await watcher.stop();
        const listingCut = first.code === MODELS_TOOL_EXIT.bucketUnreachable && /listing bucket models did not finish within the time budget/.test(first.stderr);
        if (!listingCut || budget >= 24) break;
        budget *= 2;
      }
      assert.equal(first.code, MODELS_TOOL_EXIT.budgetReached, first.stderr);
      // budget + `timeout -k 3` + bookkeeping.
      assert.ok(took < budget + 5, `fill-pins returned after ${took}s with a ${budget} s budget`);
      assert.match(first.stderr, /time budget reached: stopped the copies in flight/);
      assert.match(first.stderr, /missing: diffusion_models\/z_image_turbo_bf16\.safetensors \(9\.\d\d MB\): time budget reached/);
      assert.deepEqual(seen.problems, []);
      assert.ok(!modelFiles(n.dirs.models).includes(pins[1]), "the slow model is not visible");
      assert.deepEqual(listFiles(n.dirs.staging), [], "the partial download is gone");
      // No CLI of the cut run is left running (it would finish and write somewhere).
      const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
      assert.ok(!ps.includes(n.dirs.staging), "no copy of the cut run is still alive");
    } finally {
      await slow.close();
    }
  });

  it("retries a failing file once, then exits 1 naming it; the others are present and nothing is left in staging", async () => {
    const n = node({ PINS: "vae/ae.safetensors,upscale_models/" });
    // A directory where the file must go: the final rename fails on every attempt.
    mkdirSync(join(n.dirs.models, "vae/ae.safetensors"), { recursive: true });
    const result = await tool(["fill-pins"], n.env);
    assert.equal(result.code, MODELS_TOOL_EXIT.failed, result.stderr);
    assert.match(result.stderr, /copy of vae\/ae\.safetensors failed \(attempt 2 of 2\): could not move into/);
    assert.match(result.stderr, /missing: vae\/ae\.safetensors \(65\.53 KB|missing: vae\/ae\.safetensors \(65536 bytes\): could not move into/);
    assert.deepEqual(modelFiles(n.dirs.models), ["upscale_models/RealESRGAN_x4plus.safetensors"]);
    assert.deepEqual(listFiles(n.dirs.staging), []);
  });

  it("names the bucket when it is not reachable, and reads settings from the env file with the environment winning", async () => {
    const unreachable = await tool(["fill-pins"], node({ MODELS_BUCKET: "no-such-bucket", PINS: "vae/" }).env);
    assert.equal(unreachable.code, MODELS_TOOL_EXIT.bucketUnreachable);
    assert.match(unreachable.stderr, /error: bucket no-such-bucket not reachable: .*NoSuchBucket/);

    const n = node();
    const envFile = join(n.dirs.root, "comfyui-models.env");
    mkdirSync(n.dirs.root, { recursive: true });
    writeFileSync(envFile, `PINS='vae/ae.safetensors'\nMODELS_BUCKET='no-such-bucket'\n`);
    const base: NodeJS.ProcessEnv = { ...n.env, COMFYUI_MODELS_ENV_FILE: envFile };
    delete base.MODELS_BUCKET;
    assert.equal((await tool(["fill-pins"], base)).code, MODELS_TOOL_EXIT.bucketUnreachable, "the file's bucket");
    const fromEnv = await tool(["fill-pins"], { ...base, MODELS_BUCKET: BUCKET });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assertIdentical(n.dirs.models, ["vae/ae.safetensors"]);
    const missing = await tool(["fill-pins"], { ...n.env, MODELS_BUCKET: "" });
    assert.equal(missing.code, MODELS_TOOL_EXIT.usage);
    assert.match(missing.stderr, /MODELS_BUCKET is not set/);
    assert.equal((await tool(["apply"], n.env)).code, MODELS_TOOL_EXIT.usage, "bucket changes are the agent's now");
  });

  it("the model agent takes over what the boot copied: it adopts the pinned files without fetching them again", async () => {
    const pins = ["vae/", "text_encoders/qwen_3_4b.safetensors"];
    const n = node({ PINS: pins.join(",") });
    const filled = await tool(["fill-pins"], n.env);
    assert.equal(filled.code, 0, filled.stderr);
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = "S3RVER";
    process.env.AWS_SECRET_ACCESS_KEY = "S3RVER";
    const args = ["--models-dir", n.dirs.models, "--bucket", BUCKET, "--endpoint", s3.endpoint, "--cache-gb", "1", "--port", "0", "--token", "t".repeat(32)];
    for (const p of pins) args.push("--pin", p);
    const agent = await startAgent(parseAgentArgs(args, {}), () => undefined);
    try {
      const inv = await agent.cache.inventory();
      assert.deepEqual(inv.files.map((f) => [f.path, f.pinned]).sort(), [
        ["text_encoders/qwen_3_4b.safetensors", true],
        ["vae/ae.safetensors", true],
        ["vae/ae.safetensors.bak", true],
      ]);
      assert.equal(inv.metrics.fetches, 0, "nothing fetched again");
      assert.deepEqual(inv.fetching, []);
    } finally {
      await agent.stop();
      for (const [name, value] of [["AWS_ACCESS_KEY_ID", saved.id], ["AWS_SECRET_ACCESS_KEY", saved.secret]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
