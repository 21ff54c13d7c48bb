/**
 * GPU node user data and its model tool: static checks (shellcheck, MIME, quoting, order) and the
 * tool run for real with the AWS CLI against s3rver, because what matters on a node is behaviour:
 * complete files only, idempotence, rejected paths, clear failures.
 */
import { strict as assert } from "node:assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import {
  MODEL_FOLDERS,
  NODE_MODELS_DIR,
  NODE_MODELS_ENV_FILE,
  NODE_MODELS_STAGING_DIR,
  NODE_MODELS_STATE_DIR,
  NODE_MODELS_TOOL,
} from "../../karpenter/nodeContract";
import { NODE_BOOT_STREAM_PREFIX, metricsLogGroupName, nodeBootEmf, nodeBootEmfJq } from "../../observability/metrics";
import { parseEmfLine } from "../observability/emfParse";
import {
  BOOT_AT_LABEL,
  FILL_REST_UNIT,
  GpuUserDataArgs,
  MODELS_MISSING_LABEL,
  MODELS_TOOL_EXIT,
  NODE_DISK_MOUNT,
  USER_DATA_BOUNDARY,
  TOOL_FETCH_ATTEMPTS,
  USER_DATA_MAX_BYTES,
  modelsToolObject,
  renderGpuUserData,
  renderGpuUserDataScript,
} from "../../karpenter/userdata/gpuUserData";
import {
  RunResult,
  S3,
  TOOL_PATH,
  aws,
  awsEnv,
  childPath,
  FakeLogs,
  listFiles,
  makeTempDir,
  removeDir,
  runBash,
  shellcheck,
  startFakeLogs,
  startS3,
  startThrottledProxy,
  watchForPartialFiles,
} from "./userdataHelpers";

const ARGS: GpuUserDataArgs = {
  modelsBucket: "comfyui-models-123456789012",
  toolsBucket: "comfyui-nodetools-123456789012",
  region: "us-east-1",
  hotSet: ["diffusion_models/z_image_turbo_bf16.safetensors", "text_encoders/", "vae", "loras/it's $HOME `x` é.safetensors"],
  parallel: 8,
  bootFillSeconds: 600,
  reserveGb: 20,
};

/** The boot summary's stable fields (comfyui-models.sh header). */
interface BootSummary {
  schema: number;
  instance_type: string;
  gpus: number;
  t_boot: number;
  t_userdata: number;
  t_raid: number;
  t_filled: number | null;
  t_image: number | null;
  fill: { result: string; files: number; bytes: number; seconds: number; mb_per_s: number | null; missing_files: number; missing_bytes: number; missing: string[] };
  image: { ref: string; result: string; seconds: number; snapshotter: string };
}

interface MimePart {
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Parses the way Go's net/mail + mime/multipart (Karpenter's reader) do, strictly enough for LF text. */
function parseMime(text: string): { headers: Record<string, string>; boundary: string; parts: MimePart[] } {
  const parseHeaders = (block: string): Record<string, string> =>
    Object.fromEntries(
      block.split("\n").map((line) => {
        const i = line.indexOf(":");
        assert.ok(i > 0, `header line without a colon: ${JSON.stringify(line)}`);
        return [line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()];
      }),
    );
  const split = text.indexOf("\n\n");
  assert.ok(split > 0, "no blank line after the top-level headers");
  const headers = parseHeaders(text.slice(0, split));
  const boundary = /^multipart\/mixed;\s*boundary="([^"]+)"$/.exec(headers["content-type"] ?? "")?.[1];
  assert.ok(boundary, `top-level Content-Type is not multipart/mixed with a boundary: ${headers["content-type"]}`);
  const body = text.slice(split + 2);
  const closing = `\n--${boundary}--\n`;
  assert.ok(body.startsWith(`--${boundary}\n`), "body does not start with the boundary");
  assert.ok(body.endsWith(closing), "body does not end with the closing delimiter");
  const inner = body.slice(`--${boundary}\n`.length, body.length - closing.length);
  const parts = inner.split(`\n--${boundary}\n`).map((raw) => {
    const sep = raw.indexOf("\n\n");
    return { headers: parseHeaders(raw.slice(0, sep)), body: raw.slice(sep + 2) };
  });
  return { headers, boundary, parts };
}

function heredoc(script: string, delimiter: string): string {
  const start = script.indexOf(`<<'${delimiter}'\n`);
  assert.ok(start >= 0, `no quoted heredoc ${delimiter}`);
  const from = script.indexOf("\n", start) + 1;
  const end = script.indexOf(`\n${delimiter}\n`, from);
  assert.ok(end > from, `heredoc ${delimiter} not terminated`);
  return script.slice(from, end);
}

describe("GPU node user data and the comfyui-models tool", function () {
  this.timeout(60_000);
  let scratch: string;

  before(() => {
    scratch = makeTempDir("userdata-test-");
  });
  after(() => removeDir(scratch));

  describe("static checks", () => {
    it("comfyui-models.sh is shellcheck-clean", async () => {
      assert.equal(await shellcheck(TOOL_PATH, ["-x"]), "");
    });

    it("the tool's defaults are the node contract (directories and model folders)", () => {
      const source = readFileSync(TOOL_PATH, "utf8");
      const value = (name: string): string | undefined => new RegExp(`^readonly ${name}="?([^"\\n]*)"?$`, "m").exec(source)?.[1];
      assert.equal(value("DEFAULT_MODELS_DIR"), NODE_MODELS_DIR);
      assert.equal(value("DEFAULT_STAGING_DIR"), NODE_MODELS_STAGING_DIR);
      assert.equal(value("DEFAULT_STATE_DIR"), NODE_MODELS_STATE_DIR);
      assert.deepEqual(value("DEFAULT_MODEL_FOLDERS")?.split(" "), [...MODEL_FOLDERS]);
      assert.match(source, /^set -euo pipefail$/m);
      const { failed, usage, bucketUnreachable, noSpace, budgetReached } = MODELS_TOOL_EXIT;
      assert.ok(
        source.includes(`readonly EX_FAILED=${failed} EX_USAGE=${usage} EX_BUCKET=${bucketUnreachable} EX_NOSPACE=${noSpace} EX_BUDGET=${budgetReached}\n`),
        "exit codes in comfyui-models.sh and MODELS_TOOL_EXIT agree",
      );
    });

    it("renders MIME multi-part user data: the FastImagePull NodeConfig and one pure-ASCII shell part", () => {
      const userData = renderGpuUserData(ARGS);
      const mime = parseMime(userData);
      assert.equal(mime.headers["mime-version"], "1.0");
      assert.equal(mime.boundary, USER_DATA_BOUNDARY);
      assert.equal(mime.parts.length, 2);
      assert.equal(mime.parts[0].headers["content-type"], "application/node.eks.aws");
      assert.equal(mime.parts[0].body, "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  featureGates:\n    FastImagePull: true\n");
      assert.equal(mime.parts[1].headers["content-type"], 'text/x-shellscript; charset="us-ascii"');
      assert.equal(mime.parts[1].body, renderGpuUserDataScript(ARGS));
      assert.ok(mime.parts[1].body.startsWith("#!/bin/bash\n"));
      assert.match(userData, /^[\x00-\x7f]*$/, "non-ASCII hot set keys travel encoded");
      assert.equal(parseMime(renderGpuUserData({ ...ARGS, fastImagePull: false })).parts.length, 1);
      // Karpenter re-serialises all parts under boundary "//": no line of ours may look like it.
      assert.ok(!/^--\/\//m.test(userData));
      assert.ok(Buffer.byteLength(userData) <= USER_DATA_MAX_BYTES);
      assert.equal(renderGpuUserData(ARGS), userData, "rendering is deterministic (no node drift)");
    });

    it("with boot metrics, the settings carry the log group, the cluster and the jq program, and the largest pool still fits the budget", async () => {
      const bootMetrics = { logGroupName: metricsLogGroupName("comfyui-dev"), clusterName: "comfyui-dev" };
      // Every G6/G6e/P5 size the pool could list, with long bucket names and a long hot set.
      const types = ["g6", "g6e", "gr6"].flatMap((f) => ["xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge"].map((s) => `${f}.${s}`));
      const big: GpuUserDataArgs = {
        ...ARGS,
        modelsBucket: `comfyui-models-${"x".repeat(40)}`,
        toolsBucket: `comfyui-nodetools-${"x".repeat(40)}`,
        hotSet: Array.from({ length: 20 }, (_, i) => `diffusion_models/model_number_${i}_bf16.safetensors`),
        instanceFacts: Object.fromEntries(types.map((t) => [t, { gpus: 8, mbps: 3_200_000 }])),
        imageParameter: "/comfyui-dev-with-a-long-stack-name/comfyui/image",
        bootMetrics,
      };
      const userData = renderGpuUserData(big);
      assert.ok(Buffer.byteLength(userData) <= USER_DATA_MAX_BYTES, `${Buffer.byteLength(userData)} bytes`);
      assert.match(userData, /^[\x00-\x7f]*$/);
      const env = heredoc(renderGpuUserDataScript(big), "COMFYUI_MODELS_ENV");
      const file = join(scratch, "metrics.env");
      writeFileSync(file, env);
      const probe = join(scratch, "metrics-probe.sh");
      writeFileSync(probe, `set -eu\n. "$1"\nprintf '%s\\n' "$METRICS_LOG_GROUP" "$CLUSTER_NAME" "$BOOT_EMF_JQ"\n`);
      const out = await runBash(probe, [file], { PATH: process.env.PATH, HOME: "/nonexistent" });
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(out.stdout.split("\n").slice(0, 3), [bootMetrics.logGroupName, bootMetrics.clusterName, nodeBootEmfJq()]);
      // Without boot metrics nothing of it is rendered (existing stacks' nodes do not drift).
      const plain = heredoc(renderGpuUserDataScript(ARGS), "COMFYUI_MODELS_ENV");
      assert.ok(!/^(METRICS_LOG_GROUP|CLUSTER_NAME|BOOT_EMF_JQ)=/m.test(plain), plain);
    });

    it("the tool's settings list names every setting the user data writes", () => {
      const source = readFileSync(TOOL_PATH, "utf8");
      const list = /^readonly SETTINGS=\(([^)]*)\)$/m.exec(source)?.[1].split(/\s+/).filter(Boolean) ?? [];
      const env = heredoc(renderGpuUserDataScript({ ...ARGS, bootMetrics: { logGroupName: "/comfyui/c/metrics", clusterName: "c" } }), "COMFYUI_MODELS_ENV");
      const written = [...env.matchAll(/^([A-Z_0-9]+)=/gm)].map((m) => m[1]);
      assert.ok(written.includes("BOOT_EMF_JQ") && written.length > 5);
      assert.deepEqual(written.filter((n) => !list.includes(n)), [], "a setting the tool would not keep from the environment");
    });

    it("the rendered shell part is shellcheck-clean", async () => {
      const file = join(scratch, "user-data.sh");
      writeFileSync(file, renderGpuUserDataScript(ARGS));
      assert.equal(await shellcheck(file), "");
    });

    it("fetches the repository's tool from the tools bucket by content address and checks its sha256", () => {
      const script = renderGpuUserDataScript(ARGS);
      const tool = modelsToolObject();
      assert.equal(tool.content, readFileSync(TOOL_PATH, "utf8"), "the node runs the repository file as it is");
      assert.equal(tool.sha256, createHash("sha256").update(readFileSync(TOOL_PATH)).digest("hex"));
      assert.equal(tool.key, `node/comfyui-models-${tool.sha256}.sh`);
      assert.ok(script.includes(`s3 cp --only-show-errors s3://${ARGS.toolsBucket}/${tool.key} "$TOOL.new"`));
      assert.ok(script.includes(`echo "${tool.sha256}  $TOOL.new" | sha256sum -c --quiet -`));
      assert.ok(script.includes(`for attempt in $(seq ${TOOL_FETCH_ATTEMPTS}); do`));
      assert.ok(script.includes(`TOOL=${NODE_MODELS_TOOL}`));
      // A different tool is a different key and checksum, so a node never runs a tool its user data did not name.
      assert.notEqual(renderGpuUserDataScript({ ...ARGS, toolsBucket: "other-tools-bucket" }), script);
    });

    it("writes the settings shell-quoted, so sourcing them gives back the exact values", async () => {
      const script = renderGpuUserDataScript(ARGS);
      const env = heredoc(script, "COMFYUI_MODELS_ENV");
      assert.ok(script.includes(`cat >${NODE_MODELS_ENV_FILE} <<'COMFYUI_MODELS_ENV'`));
      assert.match(env, /^MODELS_BUCKET='comfyui-models-123456789012'$/m);
      assert.match(env, /^HOT_SET_B64='[A-Za-z0-9+/=]+'$/m);
      const file = join(scratch, "models.env");
      writeFileSync(file, env);
      const probe = join(scratch, "probe.sh");
      writeFileSync(probe, `set -eu\n. "$1"\nprintf '%s\\n' "$MODELS_BUCKET" "$AWS_REGION" "$(printf %s "$HOT_SET_B64" | base64 -d)" "$PARALLEL" "$MARGIN_GB" "$BOOT_FILL_SECONDS"\n`);
      const out = await runBash(probe, [file], { PATH: process.env.PATH, HOME: "/nonexistent" });
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(out.stdout.split("\n").slice(0, 6), [
        ARGS.modelsBucket,
        ARGS.region,
        ARGS.hotSet.join(","),
        "8",
        "20",
        "600",
      ]);
    });

    it("installs the tool, runs its boot, and keeps kubelet down if that fails; the tool sets up the disks before the fill", () => {
      const script = renderGpuUserDataScript(ARGS);
      assert.match(script, /^set -Eeuo pipefail$/m);
      assert.ok(script.includes(`TOOL=${NODE_MODELS_TOOL} `));
      assert.match(script, /^"\$TOOL" boot \|\| block_node /m);
      assert.match(script, /systemctl mask --now kubelet\.service/);
      assert.match(script, /ConditionPathExists=!%s/);
      assert.ok(!script.includes("curl") && !script.includes("wget"), "nothing fetched from the internet at boot");
      assert.match(heredoc(script, "COMFYUI_MODELS_ENV"), /^BOOT_FILL_SECONDS='600'$/m);
      const tool = readFileSync(TOOL_PATH, "utf8");
      const boot = tool.slice(tool.indexOf("cmd_boot() {"));
      const disks = boot.indexOf("setup-local-disks raid0 ||");
      const mountCheck = boot.indexOf(`mountpoint -q "$DISK"`);
      const fill = boot.indexOf(`bash "$SELF" fill-hot`);
      assert.ok(disks > 0 && mountCheck > disks && fill > mountCheck, "setup-local-disks, then the mount check, then fill-hot");
      assert.match(tool, /"\$\{DISK:=\/mnt\/k8s-disks\/0\}"/);
      assert.ok(NODE_MODELS_DIR.startsWith(`${NODE_DISK_MOUNT}/`) && NODE_MODELS_STAGING_DIR.startsWith(`${NODE_DISK_MOUNT}/`));
      assert.match(boot, /"\$EX_BUDGET"\) result=budget; .*; break ;;/, "exit 75 (budget) lets the node register");
      assert.match(tool, /^ExecStart=\$SELF fill-rest$/m);
      assert.match(tool, /^WantedBy=multi-user\.target$/m);
      assert.ok(boot.indexOf(`systemctl enable "$unit"`) > fill);
    });

    it("rejects arguments that would make a broken node", () => {
      const bad: [Partial<GpuUserDataArgs>, RegExp][] = [
        [{ modelsBucket: "Bad_Bucket" }, /modelsBucket/],
        [{ region: "us east 1" }, /region/],
        [{ hotSet: ["notafolder/x"] }, /not under a model folder/],
        [{ hotSet: ["checkpoints/../../etc"] }, /'\.\.' segment/],
        [{ hotSet: ["checkpoints/a,b"] }, /comma/],
        [{ hotSet: ["checkpoints/a\nb"] }, /control character/],
        [{ parallel: 0 }, /parallel/],
        [{ bootFillSeconds: 900 }, /bootFillSeconds/],
        [{ reserveGb: -1 }, /reserveGb/],
        [{ toolsBucket: "" }, /toolsBucket/],
        [{ imageParameter: "not a name" }, /imageParameter/],
        [{ instanceFacts: { "g6.xlarge": { gpus: 0, mbps: 1 } } }, /instanceFacts\["g6\.xlarge"\]\.gpus/],
        [{ instanceFacts: { "G6 xlarge": { gpus: 1, mbps: 1 } } }, /instanceFacts key/],
        [{ bootMetrics: { logGroupName: "metrics group", clusterName: "c" } }, /bootMetrics\.logGroupName/],
        [{ bootMetrics: { logGroupName: "", clusterName: "c" } }, /bootMetrics\.logGroupName/],
        [{ bootMetrics: { logGroupName: "/comfyui/c/metrics", clusterName: "-c" } }, /bootMetrics\.clusterName/],
        [{ bootMetrics: { logGroupName: "/comfyui/c/metrics", clusterName: "c'; rm -rf /" } }, /bootMetrics\.clusterName/],
      ];
      for (const [override, message] of bad) {
        assert.throws(() => renderGpuUserData({ ...ARGS, ...override }), message, JSON.stringify(override));
      }
    });
  });

  describe("running the tool against S3 (s3rver + AWS CLI)", () => {
    const BUCKET = "models";
    // Names from the fixture catalogue, plus the awkward ones real buckets have.
    const MODEL_FILES: Record<string, number> = {
      "diffusion_models/z_image_turbo_bf16.safetensors": 9 * 1024 * 1024 + 123, // above the CLI's 8 MiB multipart threshold
      "text_encoders/qwen_3_4b.safetensors": 300_000,
      "vae/ae.safetensors": 65_536,
      "upscale_models/RealESRGAN_x4plus.safetensors": 40_000,
      "loras/Qwen Image Lightning 8steps V1.0.safetensors": 20_000,
      "checkpoints/モデル_ünïcode.safetensors": 12_345,
    };
    const OUTSIDE = "notes/readme.txt";
    const sources = new Map<string, Buffer>();
    let s3: S3;
    let env: NodeJS.ProcessEnv;
    let run = 0;

    /** Fresh node folders per case, so cases do not depend on each other's leftovers. */
    function node(extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; dirs: { root: string; models: string; staging: string; state: string } } {
      const root = join(scratch, `node-${++run}`);
      const dirs = { root, models: join(root, "disk", "models"), staging: join(root, "disk", "staging"), state: join(root, "disk", "state") };
      return {
        dirs,
        env: {
          ...env,
          MODELS_BUCKET: BUCKET,
          MODELS_DIR: dirs.models,
          STAGING_DIR: dirs.staging,
          STATE_DIR: dirs.state,
          // Never pick up a real /etc/comfyui-models.env on the machine running the tests.
          COMFYUI_MODELS_ENV_FILE: join(root, "absent.env"),
          // The computed reserve (10% of this machine's disk + image + scratch) is for GPU nodes.
          RESERVE_GB: "0",
          // Debian's CLI 2.9 CRT client ignores the endpoint's port (connection refused on s3rver).
          TRANSFER_CLIENT: "classic",
          ...extra,
        },
      };
    }

    function assertFile(models: string, key: string, content: Buffer): void {
      assert.ok(readFileSync(join(models, key)).equals(content), `${key} differs from the expected content`);
    }

    function assertIdentical(models: string, keys: readonly string[]): void {
      assert.deepEqual(listFiles(models), [...keys].sort());
      for (const key of keys) {
        assert.ok(readFileSync(join(models, key)).equals(sources.get(key) as Buffer), `${key} differs from the source`);
      }
    }

    const tool = (args: string[], e: NodeJS.ProcessEnv, input = ""): Promise<RunResult> => runBash(TOOL_PATH, args, e, input);

    let uploads = 0;
    /** Uploads (or replaces) one object, as an operator's `aws s3 cp` would. */
    async function putObject(key: string, content: Buffer): Promise<void> {
      const local = join(scratch, `upload-${++uploads}.bin`);
      writeFileSync(local, content);
      await aws(env, ["s3", "cp", "--only-show-errors", local, `s3://${BUCKET}/${key}`]);
    }
    async function deleteObject(key: string): Promise<void> {
      await aws(env, ["s3api", "delete-object", "--bucket", BUCKET, "--key", key]);
    }
    const md5 = (content: Buffer): string => createHash("md5").update(content).digest("hex");
    // The tool's own bookkeeping (.locks/, .hot-missing) is not a state record.
    const stateFiles = (state: string): string[] => listFiles(state).filter((f) => !f.startsWith("."));

    before(async function () {
      this.timeout(60_000);
      s3 = await startS3(join(scratch, "s3rver"), BUCKET);
      env = awsEnv(s3, childPath(join(scratch, "bin")), join(scratch, "home"));
      const upload = join(scratch, "upload");
      for (const [key, size] of Object.entries(MODEL_FILES)) {
        sources.set(key, randomBytes(size));
      }
      for (const [key, content] of [...sources, [OUTSIDE, Buffer.from("not a model\n")] as const]) {
        mkdirSync(join(upload, key, ".."), { recursive: true });
        writeFileSync(join(upload, key), content);
      }
      await aws(env, ["s3", "cp", "--recursive", "--only-show-errors", upload, `s3://${BUCKET}/`]);
      // A console-made folder marker: a key, but not a file.
      await aws(env, ["s3api", "put-object", "--bucket", BUCKET, "--key", "loras/"]);
    });

    after(async () => {
      if (s3) await s3.close();
    });

    it("fill-hot copies every model byte-identical, never shows a partial file, ignores other keys", async () => {
      const n = node();
      const watcher = watchForPartialFiles(n.dirs.models, sources);
      const result = await tool(["fill-hot"], n.env);
      const seen = await watcher.stop();
      assert.equal(result.code, 0, result.stderr);
      assertIdentical(n.dirs.models, [...sources.keys()]);
      assert.deepEqual(seen.problems, []);
      assert.ok(seen.polls > 10, `the watcher polled during the fill (${seen.polls} polls)`);
      assert.ok(seen.observed >= 1);
      assert.deepEqual(listFiles(n.dirs.staging), [], "staging is empty afterwards");
      assert.match(result.stderr, /^comfyui-models: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ /m);
      assert.match(result.stderr, /ignoring 1 key\(s\) outside the model folders/);
      assert.match(result.stderr, new RegExp(`copied ${sources.size} file\\(s\\)`));
      const state = readFileSync(join(n.dirs.state, "vae/ae.safetensors"), "utf8");
      assert.equal(state, `${createHash("md5").update(sources.get("vae/ae.safetensors") as Buffer).digest("hex")} 65536\n`);

      // Idempotent: the second run lists, finds everything current, and copies nothing.
      const again = await tool(["fill-hot"], n.env);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, new RegExp(`nothing to copy \\(${sources.size} file\\(s\\) present and unchanged`));
      assert.doesNotMatch(again.stderr, /fetched/);

      const status = await tool(["status"], n.env);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(`^files=${sources.size}$`, "m"));
      const total = [...sources.values()].reduce((a, b) => a + b.length, 0);
      assert.match(status.stdout, new RegExp(`^bytes=${total}$`, "m"));
      assert.match(status.stdout, /^state_records=6$/m);
    });

    it("HOT_SET limits fill-hot; fill-rest then copies the rest and is idempotent", async () => {
      const hot = ["text_encoders/qwen_3_4b.safetensors", "vae/ae.safetensors"];
      const n = node({ HOT_SET: "text_encoders/qwen_3_4b.safetensors, vae/\ncheckpoints/typo.safetensors" });
      const first = await tool(["fill-hot"], n.env);
      assert.equal(first.code, 0, first.stderr);
      assertIdentical(n.dirs.models, hot);
      assert.match(first.stderr, /warning: HOT_SET entry 'checkpoints\/typo\.safetensors' matches no model in bucket models/);
      assert.doesNotMatch(first.stderr, /HOT_SET entry 'vae'/);

      const rest = await tool(["fill-rest"], n.env);
      assert.equal(rest.code, 0, rest.stderr);
      assertIdentical(n.dirs.models, [...sources.keys()]);
      assert.match(rest.stderr, /fill-rest: copied 4 file\(s\)/);
      for (const key of hot) assert.ok(!rest.stderr.includes(`fetched ${key}`), `fill-rest refetched ${key}`);

      const again = await tool(["fill-rest"], n.env);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /nothing to copy \(4 file\(s\) present and unchanged/);
    });

    it("apply puts a changed object and deletes a removed one", async () => {
      const n = node();
      const doomed = "loras/removed soon.safetensors";
      await putObject(doomed, randomBytes(1000));
      try {
        assert.equal((await tool(["fill-hot"], { ...n.env, HOT_SET: `vae,${doomed}` })).code, 0);
        assert.deepEqual(listFiles(n.dirs.models), [doomed, "vae/ae.safetensors"]);
        const changed = randomBytes(70_000);
        await putObject("vae/ae.safetensors", changed);
        await deleteObject(doomed);

        const result = await tool(["apply"], n.env, `put\tvae/ae.safetensors\ndelete\t${doomed}\ndelete\tvae/never-existed.safetensors\n`);
        assert.equal(result.code, 0, result.stderr);
        assert.ok(readFileSync(join(n.dirs.models, "vae/ae.safetensors")).equals(changed));
        assert.deepEqual(listFiles(n.dirs.models), ["vae/ae.safetensors"]);
        assert.deepEqual(stateFiles(n.dirs.state), ["vae/ae.safetensors"]);
        assert.match(result.stdout, /^put\tvae\/ae\.safetensors\tok \(70000 bytes\)$/m);
        assert.match(result.stdout, /^delete\tloras\/removed soon\.safetensors\tok$/m);
        assert.match(result.stdout, /^delete\tvae\/never-existed\.safetensors\tok$/m);

        // Same ETag again: nothing downloaded.
        const same = await tool(["apply"], n.env, "put\tvae/ae.safetensors\n");
        assert.equal(same.code, 0, same.stderr);
        assert.match(same.stdout, /^put\tvae\/ae\.safetensors\tunchanged$/m);
      } finally {
        // Restore the original for the other cases.
        await putObject("vae/ae.safetensors", sources.get("vae/ae.safetensors") as Buffer);
        await deleteObject(doomed);
      }
    });

    // SQS standard queues reorder and redeliver S3 events: apply follows the bucket, not the line.
    it("apply keeps a file that a stale delete names but the bucket has again (re-uploaded)", async () => {
      const key = "checkpoints/stale delete.safetensors";
      const n = node({ HOT_SET: key });
      await putObject(key, randomBytes(3000));
      try {
        assert.equal((await tool(["fill-hot"], n.env)).code, 0);
        const reuploaded = randomBytes(4000);
        await putObject(key, reuploaded);

        const result = await tool(["apply"], n.env, `delete\t${key}\n`);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(result.stdout, `delete\t${key}\tkept (re-uploaded; now ${md5(reuploaded)})\n`);
        assertFile(n.dirs.models, key, reuploaded);
        assert.equal(readFileSync(join(n.dirs.state, key), "utf8"), `${md5(reuploaded)} 4000\n`);

        // Already current: kept without a download; gone locally (an earlier delete won): fetched back.
        const again = await tool(["apply"], n.env, `delete\t${key}\n`);
        assert.equal(again.code, 0, again.stderr);
        assert.equal(again.stdout, `delete\t${key}\tkept (re-uploaded; now ${md5(reuploaded)})\n`);
        assert.doesNotMatch(again.stderr, /fetched/);
        rmSync(join(n.dirs.models, key));
        const restored = await tool(["apply"], n.env, `delete\t${key}\n`);
        assert.equal(restored.code, 0, restored.stderr);
        assert.match(restored.stdout, /\tkept \(re-uploaded; now [0-9a-f]{32}\)$/m);
        assertFile(n.dirs.models, key, reuploaded);
      } finally {
        await deleteObject(key);
      }
    });

    it("apply removes a file that a stale put names but the bucket no longer has, and succeeds", async () => {
      const key = "checkpoints/stale put.safetensors";
      const n = node({ HOT_SET: key });
      await putObject(key, randomBytes(3000));
      assert.equal((await tool(["fill-hot"], n.env)).code, 0);
      assert.deepEqual(listFiles(n.dirs.models), [key]);
      await deleteObject(key);

      const result = await tool(["apply"], n.env, `put\t${key}\nput\tcheckpoints/never-there.safetensors\n`);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(
        result.stdout,
        `put\t${key}\tgone (not in bucket; removed locally)\nput\tcheckpoints/never-there.safetensors\tgone (not in bucket; removed locally)\n`,
      );
      assert.deepEqual(listFiles(n.dirs.models), []);
      assert.deepEqual(stateFiles(n.dirs.state), []);
      assert.match(result.stderr, /removed checkpoints\/stale put\.safetensors: not in bucket models/);
    });

    it("apply rejects keys that would escape the model folders and writes nothing", async () => {
      const n = node();
      mkdirSync(n.dirs.models, { recursive: true });
      const lines = [
        "put\tcheckpoints/../../etc/passwd",
        "put\t/abs",
        "put\tnotafolder/x",
        "delete\tcheckpoints/../../../victim",
        "put\tcheckpoints/a\u0000b",
        "upload\tcheckpoints/x.safetensors",
        "no tab at all",
      ];
      const victim = join(n.dirs.root, "victim");
      writeFileSync(victim, "keep me");
      const result = await tool(["apply"], n.env, lines.join("\n") + "\n");
      assert.notEqual(result.code, 0);
      assert.match(result.stderr, /apply: 7 line\(s\) rejected or failed/);
      assert.match(result.stdout, /^rejected\tcheckpoints\/\.\.\/\.\.\/etc\/passwd\tkey has a '\.\.' path segment$/m);
      assert.match(result.stdout, /^rejected\t\/abs\tkey starts with '\/'$/m);
      assert.match(result.stdout, /^rejected\tnotafolder\/x\ttop-level folder 'notafolder' is not a model folder/m);
      assert.match(result.stdout, /control character/);
      assert.equal(readFileSync(victim, "utf8"), "keep me");
      // Nothing at all was written outside the tool's own folders, and nothing inside them either.
      assert.deepEqual(
        listFiles(n.dirs.root).filter((f) => !f.startsWith("disk/state/.locks/")),
        ["victim"],
      );
    });

    it("names the bucket when it is not reachable", async () => {
      const n = node({ MODELS_BUCKET: "no-such-bucket" });
      const result = await tool(["fill-hot"], n.env);
      assert.equal(result.code, 3);
      assert.match(result.stderr, /error: bucket no-such-bucket not reachable: .*NoSuchBucket/);
      assert.deepEqual(listFiles(n.dirs.models), []);
    });

    it("a hot set that does not fit registers with nothing copied and names every missing file; fill-rest skips too", async () => {
      const n = node({ RESERVE_GB: "1000000" });
      const hot = await tool(["fill-hot"], n.env);
      assert.equal(hot.code, 0, hot.stderr);
      assert.match(hot.stderr, /MISSING from the hot set: 6 file\(s\), 9\.\d\d MB \(the node registers without them\):/);
      assert.deepEqual(listFiles(n.dirs.models), []);
      assert.equal(readFileSync(join(n.dirs.state, ".hot-missing"), "utf8").trim().split("\n").length, 6);

      const rest = await tool(["fill-rest"], { ...n.env, HOT_SET: "vae" });
      assert.equal(rest.code, 0, rest.stderr);
      assert.match(rest.stderr, /skipping diffusion_models\/z_image_turbo_bf16\.safetensors \(9\.\d\d MB\): does not fit/);
      assert.deepEqual(listFiles(n.dirs.models), []);
    });

    it("the boot budget is a hard deadline: transfers in flight are stopped, nothing partial is visible, the rest resumes later (D8)", async () => {
      // 200 KB/s: the 9.4 MB model alone needs ~47 s, far beyond the 6 s budget.
      const slow = await startThrottledProxy(s3.endpoint, 200_000);
      try {
        const hot = ["vae/ae.safetensors", "diffusion_models/z_image_turbo_bf16.safetensors"];
        const n = node({ BOOT_FILL_SECONDS: "6", PARALLEL: "2", HOT_SET: hot.join(","), AWS_ENDPOINT_URL: slow.endpoint });
        const watcher = watchForPartialFiles(n.dirs.models, sources);
        const t0 = Date.now();
        const first = await tool(["fill-hot"], n.env);
        const took = (Date.now() - t0) / 1000;
        const seen = await watcher.stop();
        assert.equal(first.code, 75, first.stderr);
        // budget + `timeout -k 3` + bookkeeping; the old check-before-start budget took ~50 s here.
        assert.ok(took < 6 + 5, `fill-hot returned after ${took}s with a 6 s budget`);
        assert.match(first.stderr, /time budget reached: stopped the transfers in flight/);
        assert.match(first.stderr, /time budget of 6s reached; \d+ file\(s\) \([^)]*\) left to copy in the background/);
        assert.deepEqual(seen.problems, []);
        assert.ok(!listFiles(n.dirs.models).includes(hot[1]), "the slow model is not visible");
        for (const key of listFiles(n.dirs.models)) assertFile(n.dirs.models, key, sources.get(key) as Buffer);
        assert.deepEqual(listFiles(n.dirs.staging), [], "the partial download is gone");
        // No CLI of the cut run is left running (it would finish and write somewhere).
        const ps = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" });
        assert.ok(!ps.includes(n.dirs.staging), "no transfer of the cut run is still alive");

        // As comfyui-models-rest.service runs it: no budget, and S3 at full speed.
        const rest = await tool(["fill-hot"], { ...n.env, BOOT_FILL_SECONDS: "0", AWS_ENDPOINT_URL: s3.endpoint });
        assert.equal(rest.code, 0, rest.stderr);
        assertIdentical(n.dirs.models, hot);
      } finally {
        await slow.close();
      }
    });

    /** A PATH whose `df` reports an array of `size` bytes with `avail` free (and whose `imds` answers `type`). */
    function fakeNode(dir: string, size: number, avail: number, type?: string): string {
      mkdirSync(dir, { recursive: true });
      writeFileSync(
        join(dir, "df"),
        `#!/bin/bash\ncase " $* " in\n  *" --output=size "*) printf 'Size\\n%s\\n' ${size} ;;\n  *" --output=avail "*) printf 'Avail\\n%s\\n' ${avail} ;;\n  *) exit 1 ;;\nesac\n`,
        { mode: 0o755 },
      );
      if (type) {
        writeFileSync(join(dir, "imds"), `#!/bin/bash\necho "imds $*" >>${dir}/imds.log\n[[ $1 == /latest/meta-data/instance-type ]] && echo ${type}\n`, { mode: 0o755 });
      }
      return `${dir}:${env.PATH}`;
    }
    const GB = 1_000_000_000;

    it("derives the disk reserve from the real array: kubelet's 10% eviction line + margin + image + scratch x the node's GPUs (D7)", async () => {
      const facts = "g5.xlarge=gpus:1,mbps:10000 g5.12xlarge=gpus:4,mbps:40000";
      const reserve = (45 + 10 + 30 + 20 * 4) * GB;
      const n = node({ HOT_SET: "vae,text_encoders", INSTANCE_FACTS: facts, MARGIN_GB: "10", IMAGE_GB: "30", SCRATCH_GB_PER_GPU: "20" });
      delete n.env.RESERVE_GB;
      // 450 GB array with 100 kB above the reserve: the 64 KiB VAE fits, the 300 kB encoder does not.
      const path = fakeNode(join(n.dirs.root, "bin"), 450 * GB, reserve + 100_000, "g5.12xlarge");
      const result = await tool(["fill-hot"], { ...n.env, PATH: path });
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /reserve 165\.00 GB of 450\.00 GB: 10% eviction line \+ 10 GB margin \+ 30 GB image \+ 20 GB x 4 GPU\(s\) scratch/);
      assert.match(readFileSync(join(n.dirs.root, "bin/imds.log"), "utf8"), /^imds \/latest\/meta-data\/instance-type$/m, "the node's type from IMDSv2 (the AMI's imds helper)");
      assertIdentical(n.dirs.models, ["vae/ae.safetensors"]);
      assert.match(result.stderr, /missing: text_encoders\/qwen_3_4b\.safetensors \(300000 bytes\): does not fit/);
      // The old fixed reserve (40 GB) sat below the eviction line of this array (45 GB): never again.
      const floorOnly = await tool(["fill-hot"], { ...n.env, PATH: path, MARGIN_GB: "0", IMAGE_GB: "0", SCRATCH_GB_PER_GPU: "0" });
      assert.match(floorOnly.stderr, /reserve 45\.00 GB of 450\.00 GB/);
    });

    it("an instance type the facts do not list assumes the most GPUs listed, or 8 with no facts at all (D7)", async () => {
      const n = node({ HOT_SET: "vae", MARGIN_GB: "10", IMAGE_GB: "30", SCRATCH_GB_PER_GPU: "20" });
      delete n.env.RESERVE_GB;
      const path = fakeNode(join(n.dirs.root, "bin"), 450 * GB, 450 * GB, "p9.unknown");
      const listed = await tool(["fill-hot"], { ...n.env, PATH: path, INSTANCE_FACTS: "g5.xlarge=gpus:1,mbps:10000 g5.12xlarge=gpus:4,mbps:40000" });
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stderr, /instance type 'p9\.unknown' not in INSTANCE_FACTS: assuming 4 GPU\(s\)/);
      assert.match(listed.stderr, /reserve 165\.00 GB of 450\.00 GB/);
      const none = await tool(["fill-hot"], { ...n.env, PATH: path, INSTANCE_FACTS: "" });
      assert.match(none.stderr, /assuming 8 GPU\(s\)/);
      assert.match(none.stderr, /reserve 245\.00 GB of 450\.00 GB/);
    });

    it("retries a failing file, then exits non-zero naming it", async () => {
      const n = node({ HOT_SET: "vae,upscale_models", RETRIES: "1" });
      // A directory where the file must go: the final rename fails on every attempt.
      mkdirSync(join(n.dirs.models, "vae/ae.safetensors"), { recursive: true });
      const result = await tool(["fill-hot"], n.env);
      assert.equal(result.code, 1, result.stderr);
      assert.match(result.stderr, /retrying vae\/ae\.safetensors in 2s \(attempt 2 of 2\)/);
      assert.match(result.stderr, /FAILED vae\/ae\.safetensors after 2 attempt\(s\)/);
      assert.match(result.stderr, /error: fill-hot: 1 file\(s\) failed: vae\/ae\.safetensors$/m);
      // The other file is still there, complete; no temp file was left behind.
      assertIdentical(n.dirs.models, ["upscale_models/RealESRGAN_x4plus.safetensors"]);
      assert.deepEqual(listFiles(n.dirs.staging), []);
    });

    it("checks the bytes against the ETag: a wrong MD5 fails, a multipart ETag must not move", async () => {
      // s3rver keeps each object's ETag in a side file; rewriting it stands in for a corrupted
      // download (MD5 mismatch) and for an object uploaded in parts ("<hash>-<parts>").
      const corrupt = "clip_vision/corrupt.safetensors";
      const multipart = "controlnet/uploaded-in-parts.safetensors";
      const local = join(scratch, "etag.bin");
      writeFileSync(local, randomBytes(5000));
      const sideFile = (key: string): string => join(scratch, "s3rver", BUCKET, `${key}._S3rver_object.md5`);
      try {
        for (const key of [corrupt, multipart]) {
          await aws(env, ["s3", "cp", "--only-show-errors", local, `s3://${BUCKET}/${key}`]);
        }
        writeFileSync(sideFile(corrupt), "0123456789abcdef0123456789abcdef");
        writeFileSync(sideFile(multipart), "0123456789abcdef0123456789abcdef-2");
        const n = node({ HOT_SET: "clip_vision,controlnet", RETRIES: "0" });
        const result = await tool(["fill-hot"], n.env);
        assert.equal(result.code, 1, result.stderr);
        assert.match(result.stderr, /FAILED clip_vision\/corrupt\.safetensors after 1 attempt\(s\): md5 [0-9a-f]{32} != ETag 0123456789abcdef0123456789abcdef/);
        assert.deepEqual(listFiles(n.dirs.models), [multipart]);
        assert.equal(readFileSync(join(n.dirs.state, multipart), "utf8"), "0123456789abcdef0123456789abcdef-2 5000\n");
      } finally {
        await aws(env, ["s3api", "delete-objects", "--bucket", BUCKET, "--delete", JSON.stringify({ Objects: [{ Key: corrupt }, { Key: multipart }] })]);
      }
    });

    it("apply fails, and touches no file, when S3 does not answer for the bucket (wrong name, denied)", async () => {
      const kept = ["upscale_models/RealESRGAN_x4plus.safetensors", "vae/ae.safetensors"];
      const n = node({ HOT_SET: "vae,upscale_models", RETRIES: "0" });
      assert.equal((await tool(["fill-hot"], n.env)).code, 0);
      // A HEAD on a missing bucket is a 404 like a missing key: it must not read as "deleted".
      const wrong = await tool(["apply"], { ...n.env, MODELS_BUCKET: "no-such-bucket" }, "put\tvae/ae.safetensors\n");
      assert.equal(wrong.code, 1);
      assert.match(wrong.stdout, /^put\tvae\/ae\.safetensors\tFAILED: head-object failed: .*(404|Not Found).*; bucket no-such-bucket not reachable$/m);
      const denied = await tool(["apply"], { ...n.env, AWS_ACCESS_KEY_ID: "AKIANOTKNOWNTOS3RVER" }, `put\t${kept[1]}\ndelete\t${kept[0]}\n`);
      assert.equal(denied.code, 1);
      assert.match(denied.stdout, /^put\tvae\/ae\.safetensors\tFAILED: head-object failed: .*\(403\)/m);
      assert.match(denied.stdout, /^delete\tupscale_models\/RealESRGAN_x4plus\.safetensors\tFAILED: head-object failed: .*\(403\)/m);
      assert.match(denied.stderr, /apply: 2 line\(s\) rejected or failed/);
      assertIdentical(n.dirs.models, kept);
      assert.deepEqual(stateFiles(n.dirs.state), kept);
    });

    it("removes stale staging files from a crashed run before filling", async () => {
      const n = node({ HOT_SET: "vae" });
      mkdirSync(join(n.dirs.staging, "run.999999"), { recursive: true });
      writeFileSync(join(n.dirs.staging, "run.999999", "part.abc"), "half a model");
      writeFileSync(join(n.dirs.staging, "leftover.tmp"), "x");
      const result = await tool(["fill-hot"], n.env);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /removing stale staging entry run\.999999/);
      assert.deepEqual(listFiles(n.dirs.staging), []);
    });

    it("reads settings from the env file, with the environment taking precedence", async () => {
      const n = node();
      const envFile = join(n.dirs.root, "comfyui-models.env");
      mkdirSync(n.dirs.root, { recursive: true });
      writeFileSync(envFile, `MODELS_DIR='${n.dirs.root}/from file'\nPARALLEL='3'\n`);
      const base: NodeJS.ProcessEnv = { ...n.env, COMFYUI_MODELS_ENV_FILE: envFile };
      delete base.MODELS_DIR;
      const fromFile = await tool(["status"], base);
      assert.equal(fromFile.code, 0, fromFile.stderr);
      assert.match(fromFile.stdout, new RegExp(`^models_dir=${n.dirs.root}/from file$`, "m"));
      const fromEnv = await tool(["status"], { ...base, MODELS_DIR: n.dirs.models });
      assert.match(fromEnv.stdout, new RegExp(`^models_dir=${n.dirs.models}$`, "m"));
      const missing = await tool(["fill-hot"], { ...base, MODELS_BUCKET: "" });
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /MODELS_BUCKET is not set/);
      const unknown = await tool(["fill-everything"], base);
      assert.equal(unknown.code, 2);
    });

    describe("the rendered user data, run in a sandbox (system commands stubbed, paths moved)", () => {
      const TOOLS = "node-tools";
      const TAMPERED = "node-tools-tampered";
      const IMAGE = `123456789012.dkr.ecr.us-east-1.amazonaws.com/comfyui@sha256:${"ab".repeat(32)}`;
      let boxes = 0;

      before(async () => {
        const tool = modelsToolObject();
        const local = join(scratch, "tool-upload.sh");
        for (const [bucket, content] of [[TOOLS, tool.content], [TAMPERED, tool.content.replace("set -euo pipefail", "set -eu")]]) {
          await aws(env, ["s3api", "create-bucket", "--bucket", bucket]);
          writeFileSync(local, content);
          await aws(env, ["s3", "cp", "--only-show-errors", local, `s3://${bucket}/${tool.key}`]);
        }
      });

      interface BootOptions {
        readonly stubEnv?: NodeJS.ProcessEnv;
        /** containerd's config as nodeadm-config wrote it (amazon-eks-ami v20260724 config2.template.toml). */
        readonly snapshotter?: string;
        /** The NVMe array as `df` reports it (bytes); unset: this machine's real filesystem. */
        readonly disk?: { size: number; avail: number };
      }

      /** Runs the user data with the node's fixed paths moved under a temp dir and systemd, mdadm & co stubbed. */
      async function boot(args: Partial<GpuUserDataArgs>, opts: BootOptions = {}) {
        const box = join(scratch, `boot-${++boxes}`);
        const stubs = join(box, "stubs");
        const calls = join(box, "calls.log");
        const timing = join(box, "timing.log");
        for (const dir of [stubs, join(box, "etc/systemd/system"), join(box, "etc/containerd"), join(box, "usr/local/bin"), join(box, "dev")]) {
          mkdirSync(dir, { recursive: true });
        }
        const stub = (name: string, body: string): void =>
          writeFileSync(join(stubs, name), `#!/bin/bash\necho "${name} $*" >>${calls}\n${body}\n`, { mode: 0o755 });
        stub("setup-local-disks", `mkdir -p ${box}/disk`);
        stub("mountpoint", `exit "\${STUB_MOUNTPOINT_RC:-0}"`);
        // STUB_*_HANG: the step never ends on its own (exec, so a signal to the stub reaches the sleep).
        stub("systemctl", `[[ $* != "start containerd.service" ]] || { [[ -z \${STUB_CONTAINERD_HANG:-} ]] || exec /bin/sleep 300; exit "\${STUB_CONTAINERD_RC:-0}"; }`);
        stub("logger", "");
        stub("sleep", "");
        // The AWS CLI for real (S3 on s3rver), except SSM and ECR, which s3rver does not speak.
        // Every call's start and end go to timing.log with nanoseconds, to see what overlapped.
        const now = `$(date +%s.%N)`;
        writeFileSync(
          join(stubs, "aws"),
          [
            `#!/bin/bash`,
            `case " $* " in`,
            `  *" ssm get-parameter "*) echo "ssm ${now} $*" >>${timing}; [[ -z \${STUB_SSM_FAIL:-} ]] || { echo "An error occurred (ParameterNotFound) when calling the GetParameter operation" >&2; exit 254; }; echo "${IMAGE}"; exit 0 ;;`,
            `  *" ecr get-login-password "*) echo "ecr ${now} $*" >>${timing}; [[ -z \${STUB_ECR_HANG:-} ]] || exec /bin/sleep 300; echo stub-password; exit 0 ;;`,
            `esac`,
            `s=${now}`,
            // The first model download marks the fill as running (the nerdctl stub waits for it).
            `case " $* " in *" s3 cp "*/node/comfyui-models-*) ;; *" s3 cp "*) touch ${box}/fill-started ;; esac`,
            `rc=0`,
            `/usr/bin/aws "$@" || rc=$?`,
            `echo "aws $s ${now} $*" >>${timing}`,
            `exit $rc`,
          ].join("\n"),
          { mode: 0o755 },
        );
        writeFileSync(
          join(stubs, "nerdctl"),
          [
            `#!/bin/bash`,
            `case " $* " in`,
            `  *" login "*) [[ -z \${STUB_LOGIN_HANG:-} ]] || exec /bin/sleep 300; cat >/dev/null; echo "nerdctl-login ${now} $*" >>${timing}; exit 0 ;;`,
            `esac`,
            `s=${now}`,
            // A pull that waits for a model download to start can only finish if both run at once:
            // run one after the other, it would time out (pull first) or start after the fill (pull last).
            `for _ in $(seq 300); do [[ -z \${STUB_PULL_AWAIT_FILL:-} || -e ${box}/fill-started ]] && break; /bin/sleep 0.1; done`,
            `/bin/sleep "\${STUB_PULL_SECONDS:-2}"`,
            `echo "nerdctl $s ${now} $*" >>${timing}`,
            `[[ -z \${STUB_PULL_FAIL:-} ]] || { echo "failed to resolve reference: 403 Forbidden" >&2; exit 1; }`,
          ].join("\n"),
          { mode: 0o755 },
        );
        if (opts.disk) {
          const { size, avail } = opts.disk;
          writeFileSync(
            join(stubs, "df"),
            `#!/bin/bash\ncase " $* " in\n  *" --output=size "*) printf 'Size\\n%s\\n' ${size} ;;\n  *" --output=avail "*) printf 'Avail\\n%s\\n' ${avail} ;;\n  *) exit 1 ;;\nesac\n`,
            { mode: 0o755 },
          );
        }
        const snapshotter = opts.snapshotter === undefined ? "" : `snapshotter = "${opts.snapshotter}"\ndisable_snapshot_annotations = false\n`;
        writeFileSync(
          join(box, "etc/containerd/config.toml"),
          `version = 3\nroot = "/var/lib/containerd"\n\n[plugins.'io.containerd.cri.v1.images']\ndiscard_unpacked_layers = true\n${snapshotter}\n`,
        );
        const moves: [string, string][] = [
          [NODE_MODELS_ENV_FILE, join(box, "etc/comfyui-models.env")],
          ["/etc/comfyui-models.boot-fill-failed", join(box, "etc/comfyui-models.boot-fill-failed")],
          ["/etc/systemd/system", join(box, "etc/systemd/system")],
          [NODE_MODELS_TOOL, join(box, "usr/local/bin/comfyui-models")],
          ["/dev/console", join(box, "dev/console")],
        ];
        let script = renderGpuUserDataScript({ ...ARGS, modelsBucket: BUCKET, toolsBucket: TOOLS, hotSet: ["vae"], ...args });
        for (const [from, to] of moves) script = script.split(from).join(to);
        const file = join(box, "user-data.sh");
        writeFileSync(file, script);
        const disk = join(box, "disk");
        const result = await runBash(file, [], {
          ...env,
          PATH: `${stubs}:${env.PATH}`,
          // The installed tool's built-in default is the real /etc path.
          COMFYUI_MODELS_ENV_FILE: join(box, "etc/comfyui-models.env"),
          // The tool's own node paths, moved under the box.
          BOOT_ROOT: box,
          DISK: disk,
          MODELS_DIR: join(disk, "comfyui-models"),
          STAGING_DIR: join(disk, ".comfyui-models-staging"),
          STATE_DIR: join(disk, ".comfyui-models-state"),
          RESERVE_GB: "0",
          INSTANCE_TYPE: "g6.xlarge",
          TRANSFER_CLIENT: "classic",
          ...opts.stubEnv,
        });
        const read = (rel: string): string => {
          try {
            return readFileSync(join(box, rel), "utf8");
          } catch {
            return "";
          }
        };
        const summary = (): BootSummary => JSON.parse(read("var/log/comfyui-models/boot-summary.json")) as BootSummary;
        return { box, result, calls: read("calls.log").trim().split("\n"), timing: read("timing.log").trim().split("\n"), read, summary };
      }

      it("fetches the tool, sets up disks, fills the hot set, labels the node, writes the boot summary, starts the rest unit", async () => {
        const { box, result, calls, read, summary } = await boot({});
        assert.equal(result.code, 0, result.stderr);
        assert.deepEqual(
          calls.filter((c) => !/^logger -t comfyui-(models -- (boot:|reserve)|boot -- )/.test(c)),
          [
            `logger -t comfyui-models -- setting up the NVMe instance store as RAID0 at ${box}/disk`,
            "setup-local-disks raid0",
            `mountpoint -q ${box}/disk`,
            "logger -t comfyui-models -- hot models present",
            "systemctl daemon-reload",
            `systemctl enable ${FILL_REST_UNIT}`,
            `systemctl start --no-block ${FILL_REST_UNIT}`,
          ],
        );
        assert.equal(
          read("etc/eks/nodeadm.d/90-comfyui-models.yaml"),
          `apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    flags:\n      - --node-labels=${MODELS_MISSING_LABEL}=0,${BOOT_AT_LABEL}=${summary().t_boot}\n`,
        );
        assert.match(result.stderr, /boot metrics: METRICS_LOG_GROUP is not set; nothing sent/);
        assert.equal(read("usr/local/bin/comfyui-models"), readFileSync(TOOL_PATH, "utf8"), "the installed tool is the repository's");
        assert.match(read("etc/comfyui-models.env"), /^MODELS_BUCKET='models'$/m);
        assert.match(read(`etc/systemd/system/${FILL_REST_UNIT}`), /^ExecStart=.*comfyui-models fill-rest$/m);
        assert.match(read("dev/console"), /comfyui-models: hot models present/);
        assert.ok(readFileSync(join(box, "disk/comfyui-models/vae/ae.safetensors")).equals(sources.get("vae/ae.safetensors") as Buffer));
        assert.equal(read("etc/comfyui-models.boot-fill-failed"), "");
        const s = summary();
        assert.equal(s.fill.result, "complete");
        assert.equal(s.fill.files, 1);
        assert.equal(s.fill.bytes, 65_536);
        assert.equal(s.image.result, "skipped", "no imageParameter, no pre-pull");
        assert.ok(calls.some((c) => c.startsWith("logger -t comfyui-boot -- {")), "one JSON line to the journal");
      });

      it("retries a tool whose sha256 differs, then keeps kubelet down without running it", async () => {
        const { box, result, calls, read } = await boot({ toolsBucket: TAMPERED });
        assert.equal(result.code, 1);
        const console = read("dev/console");
        assert.equal(console.match(/failed or its sha256 differs \(attempt \d of 5\)/g)?.length, TOOL_FETCH_ATTEMPTS);
        assert.match(console, /FATAL: could not fetch s3:\/\/node-tools-tampered\/node\/comfyui-models-[0-9a-f]{64}\.sh/);
        assert.equal(calls.filter((c) => c.startsWith("sleep ")).length, TOOL_FETCH_ATTEMPTS - 1);
        assert.equal(read("usr/local/bin/comfyui-models"), "", "a tool that fails its checksum is never installed");
        assert.ok(!calls.includes("setup-local-disks raid0"), "nothing of the boot ran");
        assert.equal(read("etc/systemd/system/kubelet.service.d/99-comfyui-models-block.conf"), `[Unit]\nConditionPathExists=!${box}/etc/comfyui-models.boot-fill-failed\n`);
        assert.ok(calls.includes("systemctl mask --now kubelet.service"));
      });

      it("keeps kubelet from ever starting when the fill fails", async () => {
        // A short budget leaves no time for a second attempt, so the test needs no 10 s retry pause.
        const { box, result, calls, read } = await boot({ modelsBucket: "no-such-bucket", bootFillSeconds: 5 });
        assert.equal(result.code, 1);
        // Either the CLI's refusal or, when the machine is slow enough that the 5 s budget runs out before
        // the CLI answers, the budget: both are this fill failing, which is what keeps kubelet down.
        assert.match(result.stderr, /bucket no-such-bucket not reachable|listing bucket no-such-bucket did not finish within the time budget/);
        assert.match(read("dev/console"), /FATAL: fill-hot failed \(exit 3\) after 1 attempt\(s\)/);
        assert.match(read("etc/comfyui-models.boot-fill-failed"), /fill-hot failed \(exit 3\)/);
        assert.equal(
          read("etc/systemd/system/kubelet.service.d/99-comfyui-models-block.conf"),
          `[Unit]\nConditionPathExists=!${box}/etc/comfyui-models.boot-fill-failed\n`,
        );
        assert.ok(calls.includes("systemctl mask --now kubelet.service"));
        assert.ok(!calls.some((c) => c.startsWith("systemctl enable")), "the rest unit is not enabled");
      });

      it("refuses to go on when the instance store is not mounted", async () => {
        const { box, result, calls, read } = await boot({}, { stubEnv: { STUB_MOUNTPOINT_RC: "1" } });
        assert.equal(result.code, 1);
        assert.match(read("dev/console"), /FATAL: .* is not a mountpoint after setup-local-disks raid0/);
        assert.deepEqual(listFiles(join(box, "disk")), [], "nothing copied");
        assert.ok(calls.includes("systemctl mask --now kubelet.service"));
      });

      it("the default hot set [] (the whole 730 GB catalogue) on a 450 GB array registers with what fits and says what is missing (D9)", async function () {
        // 84 uploads and 84 CLI downloads on a shared 2-core machine.
        this.timeout(240_000);
        // ../shared/fixtures/model_catalog.json scaled 1 GB -> 10 kB, so the S3 server holds 7.3 MB.
        const catalog = JSON.parse(readFileSync(join(__dirname, "../../../shared/fixtures/model_catalog.json"), "utf8")) as Record<string, { size_gb: number }>;
        const scale = 10_000;
        const dir = join(scratch, "catalog-upload");
        for (const [key, m] of Object.entries(catalog)) {
          mkdirSync(join(dir, key, ".."), { recursive: true });
          writeFileSync(join(dir, key), randomBytes(Math.round(m.size_gb * scale)));
        }
        await aws(env, ["s3api", "create-bucket", "--bucket", "catalog"]);
        await aws(env, ["s3", "cp", "--recursive", "--only-show-errors", dir, "s3://catalog/"]);
        const total = Object.values(catalog).reduce((a, m) => a + Math.round(m.size_gb * scale), 0);
        assert.ok(Object.keys(catalog).length === 84 && total > 700 * scale, "the fixture is the 84-model, 730 GB catalogue");

        // Hot-set order; for [] that is the bucket's key order. Usable: the array minus the eviction line.
        const array = 450 * scale;
        const usable = array - array / 10;
        const keys = Object.keys(catalog).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        const taken: string[] = [];
        const missing: string[] = [];
        let used = 0;
        for (const key of keys) {
          const size = Math.round(catalog[key].size_gb * scale);
          if (used + size <= usable) {
            taken.push(key);
            used += size;
          } else missing.push(key);
        }
        assert.ok(missing.length > 0 && taken.length > 0);

        const { box, result, read, calls, summary } = await boot(
          { modelsBucket: "catalog", hotSet: [], reserveGb: 0, imageGb: 0, scratchGbPerGpu: 0, parallel: 16 },
          { disk: { size: array, avail: array }, stubEnv: { RESERVE_GB: "" } },
        );
        assert.equal(result.code, 0, result.stderr);
        assert.deepEqual(listFiles(join(box, "disk/comfyui-models")), [...taken].sort());
        assert.equal(
          read("etc/eks/nodeadm.d/90-comfyui-models.yaml"),
          `apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    flags:\n      - --node-labels=${MODELS_MISSING_LABEL}=${missing.length},${BOOT_AT_LABEL}=${summary().t_boot}\n`,
        );
        const s = summary();
        assert.equal(s.fill.result, "partial");
        assert.equal(s.fill.files, taken.length);
        assert.equal(s.fill.missing_files, missing.length);
        assert.deepEqual(s.fill.missing, missing);
        assert.match(read("dev/console"), new RegExp(`boot: fill partial, ${taken.length} file\\(s\\) .*; missing ${missing.length} file\\(s\\)`));
        assert.ok(calls.some((c) => c.startsWith(`logger -t comfyui-models -- boot: fill partial`)), "the journal says it too");
        assert.match(result.stderr, new RegExp(`MISSING from the hot set: ${missing.length} file\\(s\\)`));
        assert.equal(read("etc/comfyui-models.boot-fill-failed"), "", "not a failure: the node registers");
        assert.ok(calls.includes(`systemctl enable ${FILL_REST_UNIT}`));
      });

      /** [start, end] in epoch seconds of each timing.log line of `kind`. */
      const spans = (timing: string[], kind: string): { start: number; end: number; line: string }[] =>
        timing.filter((l) => l.startsWith(`${kind} `)).map((line) => {
          const [, start, end] = line.split(" ");
          return { start: Number(start), end: Number(end), line };
        });

      it("pulls the image by digest from the SSM parameter while the models copy, with the CRI's snapshotter (soci)", async () => {
        const { result, calls, timing, summary } = await boot(
          { hotSet: ["diffusion_models", "text_encoders", "vae"], imageParameter: "/comfyui/test/image" },
          { snapshotter: "soci", stubEnv: { STUB_PULL_SECONDS: "1", STUB_PULL_AWAIT_FILL: "1" } },
        );
        assert.equal(result.code, 0, result.stderr);
        assert.ok(timing.some((l) => /^ssm \S+ .*ssm get-parameter --name \/comfyui\/test\/image /.test(l)), timing.join("\n"));
        assert.ok(timing.some((l) => /^ecr \S+ .*ecr get-login-password --region us-east-1/.test(l)), "ECR login with the node role, in the registry's region");
        assert.ok(calls.includes("systemctl start containerd.service"), "containerd started for the pull");
        const [pull] = spans(timing, "nerdctl");
        assert.ok(pull, timing.join("\n"));
        assert.match(pull.line, new RegExp(` --namespace k8s\\.io --snapshotter soci pull --quiet ${IMAGE.replace(/\./g, "\\.")}$`));
        const copies = spans(timing, "aws").filter((c) => / s3 cp .*s3:\/\/models\//.test(c.line));
        assert.equal(copies.length, 3, timing.join("\n"));
        const fill = { start: Math.min(...copies.map((c) => c.start)), end: Math.max(...copies.map((c) => c.end)) };
        assert.ok(pull.start < fill.end && fill.start < pull.end, `the pull ${JSON.stringify(pull)} and the fill ${JSON.stringify(fill)} overlap`);
        const s = summary();
        assert.equal(s.image.result, "present");
        assert.equal(s.image.snapshotter, "soci");
        assert.equal(s.image.ref, IMAGE);
        assert.equal(s.fill.result, "complete");
        assert.equal(typeof s.t_image, "number");
        assert.ok((s.t_image as number) >= s.t_raid && s.t_raid >= s.t_userdata && s.t_userdata >= s.t_boot);
      });

      it("a failing pre-pull (or SSM read) never blocks the node; without FastImagePull the CRI's overlayfs is used", async () => {
        const failing = await boot({ imageParameter: "/comfyui/test/image" }, { snapshotter: "overlayfs", stubEnv: { STUB_PULL_FAIL: "1", STUB_PULL_SECONDS: "0" } });
        assert.equal(failing.result.code, 0, failing.result.stderr);
        assert.match(failing.read("dev/console"), /image pre-pull failed \(the node registers anyway; kubelet pulls it\): nerdctl pull .*\(overlayfs\): .*403 Forbidden/);
        assert.match(spans(failing.timing, "nerdctl")[0].line, / --snapshotter overlayfs pull /);
        assert.equal(failing.summary().image.result, "failed");
        assert.equal(failing.read("etc/comfyui-models.boot-fill-failed"), "");
        assert.ok(failing.calls.includes(`systemctl enable ${FILL_REST_UNIT}`));

        const noParam = await boot({ imageParameter: "/comfyui/test/image" }, { stubEnv: { STUB_SSM_FAIL: "1" } });
        assert.equal(noParam.result.code, 0, noParam.result.stderr);
        assert.match(noParam.read("dev/console"), /image pre-pull failed .*cannot read SSM parameter \/comfyui\/test\/image: .*ParameterNotFound/);
        assert.deepEqual(spans(noParam.timing, "nerdctl"), [], "nothing pulled without a digest");
        // No snapshotter line in containerd's config: containerd's default, overlayfs.
        assert.equal(noParam.summary().image.result, "failed");
      });

      it("a containerd start or ECR login that hangs is cut at its bound: the boot ends, the node registers, the pre-pull is reported failed", async function () {
        // On the code before the bound, each of these boots waits for the stub's 300 s sleep.
        this.timeout(150_000);
        const BOUND = 3;
        const cases: [string, RegExp][] = [
          ["STUB_CONTAINERD_HANG", new RegExp(`image pre-pull failed \\(the node registers anyway; kubelet pulls it\\): containerd did not start within ${BOUND}s`)],
          ["STUB_ECR_HANG", new RegExp(`image pre-pull failed .*: ECR login to 123456789012\\.dkr\\.ecr\\.us-east-1\\.amazonaws\\.com \\(bound ${BOUND}s\\)`)],
          ["STUB_LOGIN_HANG", new RegExp(`image pre-pull failed .*: ECR login to 123456789012\\.dkr\\.ecr\\.us-east-1\\.amazonaws\\.com \\(bound ${BOUND}s\\)`)],
        ];
        for (const [hang, line] of cases) {
          const started = Date.now();
          const { result, calls, timing, read, summary } = await boot({ imageParameter: "/comfyui/test/image" }, { stubEnv: { [hang]: "1", PREPULL_STEP_SECONDS: String(BOUND) } });
          const seconds = (Date.now() - started) / 1000;
          assert.equal(result.code, 0, `${hang}: ${result.stderr}`);
          assert.match(read("dev/console"), line, hang);
          const s = summary();
          assert.equal(s.image.result, "failed", hang);
          // The step's bound plus timeout's kill grace (-k 5) and a little scheduling slack.
          assert.ok(s.image.seconds <= BOUND + 5 + 2, `${hang}: the pre-pull took ${s.image.seconds}s`);
          assert.deepEqual(spans(timing, "nerdctl"), [], `${hang}: nothing pulled after a failed step`);
          assert.equal(read("etc/comfyui-models.boot-fill-failed"), "", `${hang}: kubelet is not held back`);
          assert.ok(calls.includes(`systemctl enable ${FILL_REST_UNIT}`), `${hang}: the boot reached its end`);
          assert.ok(seconds < 60, `${hang}: the whole boot took ${seconds}s`);
        }
      });

      describe("boot metrics to CloudWatch Logs (a fake Logs endpoint on loopback)", () => {
        const CLUSTER = "comfyui-test";
        const GROUP = metricsLogGroupName(CLUSTER);
        const INSTANCE = "i-0123456789abcdef0";
        const STREAM = `${NODE_BOOT_STREAM_PREFIX}${INSTANCE}`;
        const bootMetrics = { logGroupName: GROUP, clusterName: CLUSTER };
        let logs: FakeLogs | undefined;
        afterEach(async () => {
          await logs?.close();
          logs = undefined;
        });
        const metricsEnv = (endpoint: string): NodeJS.ProcessEnv => ({ INSTANCE_ID: INSTANCE, AWS_ENDPOINT_URL_CLOUDWATCH_LOGS: endpoint });

        /** What observability/metrics.ts's own emitter makes of a summary, as CloudWatch would extract it. */
        function expectedMetrics(s: BootSummary, ts: number) {
          const since = (t: number | null) => (t === null ? undefined : t - s.t_boot);
          const doc = nodeBootEmf(
            {
              clusterName: CLUSTER,
              seconds: s.fill.seconds,
              bytes: s.fill.bytes,
              hotSetFilesMissing: s.fill.missing_files,
              raidSeconds: since(s.t_raid),
              filledSeconds: since(s.t_filled),
              imageSeconds: since(s.t_image),
            },
            ts,
          );
          return parseEmfLine(JSON.stringify(doc));
        }
        const byName = <T extends { name: string }>(list: T[]): T[] => [...list].sort((a, b) => (a.name < b.name ? -1 : 1));

        it("sends the boot summary as one EMF event to node-boot/<instance id>: the metrics of nodeBootEmf, the summary on disk beside them", async () => {
          logs = await startFakeLogs();
          const before = Date.now();
          const { result, read, summary } = await boot({ bootMetrics, imageParameter: "/comfyui/test/image" }, { stubEnv: { ...metricsEnv(logs.endpoint), STUB_PULL_SECONDS: "0" } });
          const after = Date.now();
          assert.equal(result.code, 0, result.stderr);
          assert.deepEqual(logs.calls.map((c) => c.target), ["Logs_20140328.CreateLogStream", "Logs_20140328.PutLogEvents"], result.stderr);
          assert.deepEqual(logs.calls[0].body, { logGroupName: GROUP, logStreamName: STREAM });
          assert.deepEqual([...logs.events.keys()], [`${GROUP}|${STREAM}`]);
          const events = logs.events.get(`${GROUP}|${STREAM}`)!;
          assert.equal(events.length, 1);
          const [event] = events;
          assert.ok(event.timestamp >= before && event.timestamp <= after, `timestamp ${event.timestamp} is now in ms`);
          const s = summary();
          assert.equal(s.image.result, "present", "t_image set: every node-boot metric present");
          const got = parseEmfLine(event.message);
          const want = expectedMetrics(s, event.timestamp);
          assert.equal(got.length, 7);
          assert.deepEqual(byName(got), byName(want));
          const doc = JSON.parse(event.message) as { boot_summary: unknown };
          assert.deepEqual(doc.boot_summary, JSON.parse(read("var/log/comfyui-models/boot-summary.json")));
          assert.match(result.stderr, new RegExp(`boot metrics sent to log group ${GROUP}, stream ${STREAM}`));
          // The label the cluster side times from.
          assert.match(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), new RegExp(`--node-labels=${MODELS_MISSING_LABEL}=0,${BOOT_AT_LABEL}=${s.t_boot}\n$`));
        });

        it("a stream that already exists (the node rebooted) still gets the event", async () => {
          logs = await startFakeLogs({ existingStreams: [`${GROUP}|${STREAM}`] });
          const { result, read } = await boot({ bootMetrics }, { stubEnv: metricsEnv(logs.endpoint) });
          assert.equal(result.code, 0, result.stderr);
          assert.deepEqual(logs.calls.map((c) => c.target), ["Logs_20140328.CreateLogStream", "Logs_20140328.PutLogEvents"]);
          assert.equal(logs.events.get(`${GROUP}|${STREAM}`)?.length, 1);
          assert.doesNotMatch(read("dev/console"), /boot metrics not sent/);
          // Metrics without an image: the absent ones are left out, not sent as null.
          const names = parseEmfLine(logs.events.get(`${GROUP}|${STREAM}`)![0].message).map((m) => m.name);
          assert.ok(!names.includes("BootImageSeconds") && names.includes("BootRaidSeconds"), names.join());
        });

        it("CloudWatch Logs answering 500 never blocks the boot: the node registers, one line names the group and the error, 3 attempts", async () => {
          logs = await startFakeLogs({ fail500: true });
          const { result, read, calls, summary } = await boot({ bootMetrics }, { stubEnv: metricsEnv(logs.endpoint) });
          assert.equal(result.code, 0, result.stderr);
          const lines = read("dev/console").split("\n").filter((l) => /boot metrics not sent/.test(l));
          assert.equal(lines.length, 1, read("dev/console"));
          assert.match(lines[0], new RegExp(`boot metrics not sent to log group ${GROUP} \\(the node registers anyway\\): create-log-stream ${STREAM}: .*(500|ServiceUnavailable)`));
          assert.ok(calls.some((c) => c.startsWith(`logger -t comfyui-models -- boot metrics not sent to log group ${GROUP}`)), "the journal says it too");
          assert.deepEqual(logs.calls.map((c) => c.target), Array(3).fill("Logs_20140328.CreateLogStream"), "the CLI's standard retry mode, 3 attempts");
          // Registration is not held back: the label drop-in, the rest unit, no failure marker.
          assert.match(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), new RegExp(`${BOOT_AT_LABEL}=${summary().t_boot}`));
          assert.ok(calls.includes(`systemctl start --no-block ${FILL_REST_UNIT}`));
          assert.equal(read("etc/comfyui-models.boot-fill-failed"), "");
          assert.ok(!calls.includes("systemctl mask --now kubelet.service"));
        });

        it("an unreachable endpoint, or no instance id, is one line and a registered node too", async () => {
          const { result, read, calls } = await boot({ bootMetrics }, { stubEnv: metricsEnv("http://127.0.0.1:9") });
          assert.equal(result.code, 0, result.stderr);
          assert.match(read("dev/console"), new RegExp(`boot metrics not sent to log group ${GROUP} .*: create-log-stream ${STREAM}: .*Could not connect to the endpoint URL`));
          assert.ok(calls.includes(`systemctl enable ${FILL_REST_UNIT}`));
          assert.equal(read("etc/comfyui-models.boot-fill-failed"), "");

          logs = await startFakeLogs();
          const noId = await boot({ bootMetrics }, { stubEnv: { ...metricsEnv(logs.endpoint), INSTANCE_ID: "" } });
          assert.equal(noId.result.code, 0, noId.result.stderr);
          assert.match(noId.read("dev/console"), new RegExp(`boot metrics not sent to log group ${GROUP} .*: no EC2 instance id from IMDS`));
          assert.deepEqual(logs.calls, [], "nothing sent under a made-up stream");
        });
      });
    });
  });
});
