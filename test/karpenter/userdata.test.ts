/**
 * GPU node user data and its node tool: static checks (shellcheck, MIME, quoting, order), the pinned
 * copy run for real with the AWS CLI against s3rver (complete files only, what fits, the deadline,
 * clear failures, the model agent taking over), and the whole boot in a sandbox with system
 * commands stubbed.
 */
import { strict as assert } from "node:assert";
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { MODEL_FOLDERS, NODE_MODELS_DIR, NODE_MODELS_ENV_FILE, NODE_MODELS_TOOL } from "../../karpenter/nodeContract";
import { checkKey } from "../../sync/keys";
import { AGENT_PRIVATE_DIR } from "../../workload/models/contract";
import { startAgent } from "../../workload/models/agent/main";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { NODE_BOOT_STREAM_PREFIX, metricsLogGroupName, nodeBootEmf, nodeBootEmfJq } from "../../observability/metrics";
import { parseEmfLine } from "../observability/emfParse";
import {
  BOOT_AT_LABEL,
  BOOT_FAILED_MARKER,
  GpuUserDataArgs,
  MODELS_MISSING_LABEL,
  MODELS_TOOL_EXIT,
  NODE_DISK_MOUNT,
  USER_DATA_BOUNDARY,
  TOOL_FETCH_ATTEMPTS,
  USER_DATA_MAX_BYTES,
  UserDataArgError,
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
  pins: ["diffusion_models/z_image_turbo_bf16.safetensors", "text_encoders/", "vae/", "loras/it's (v2) é.safetensors"],
  parallel: 8,
  bootFillSeconds: 600,
  reserveGb: 70,
};

/** The boot summary's stable fields (comfyui-models.sh header). */
interface BootSummary {
  schema: number;
  instance_type: string;
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

    it("the tool's defaults are the node and agent contracts, and it stays a few hundred lines", () => {
      const source = readFileSync(TOOL_PATH, "utf8");
      const value = (name: string): string | undefined => new RegExp(`^readonly ${name}="?([^"\\n]*)"?$`, "m").exec(source)?.[1];
      assert.equal(value("DEFAULT_MODELS_DIR"), NODE_MODELS_DIR);
      assert.equal(value("AGENT_PRIVATE_DIR"), AGENT_PRIVATE_DIR);
      assert.deepEqual(value("DEFAULT_MODEL_FOLDERS")?.split(" "), [...MODEL_FOLDERS]);
      assert.match(source, /^set -euo pipefail$/m);
      const { failed, usage, bucketUnreachable, budgetReached } = MODELS_TOOL_EXIT;
      assert.ok(
        source.includes(`readonly EX_FAILED=${failed} EX_USAGE=${usage} EX_BUCKET=${bucketUnreachable} EX_BUDGET=${budgetReached}\n`),
        "exit codes in comfyui-models.sh and MODELS_TOOL_EXIT agree",
      );
      // Issue 19: the user data keeps what must run before kubelet, "in a few hundred lines at most".
      const code = source.split("\n").filter((l) => l.trim() !== "" && !/^\s*#/.test(l));
      assert.ok(code.length <= 420, `${code.length} lines of code`);
      for (const gone of ["apply", "fill-rest", "status"]) {
        assert.ok(!new RegExp(`^\\s+${gone}\\)`, "m").test(source), `the agent does what '${gone}' did`);
      }
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
      assert.match(userData, /^[\x00-\x7f]*$/, "non-ASCII pins travel encoded");
      assert.equal(parseMime(renderGpuUserData({ ...ARGS, fastImagePull: false })).parts.length, 1);
      // Karpenter re-serialises all parts under boundary "//": no line of ours may look like it.
      assert.ok(!/^--\/\//m.test(userData));
      assert.ok(Buffer.byteLength(userData) <= USER_DATA_MAX_BYTES);
      assert.equal(renderGpuUserData(ARGS), userData, "rendering is deterministic (no node drift)");
    });

    it("with boot metrics, the settings carry the log group, the cluster and the jq program, and long pins still fit the budget", async () => {
      const bootMetrics = { logGroupName: metricsLogGroupName("comfyui-dev"), clusterName: "comfyui-dev" };
      const big: GpuUserDataArgs = {
        ...ARGS,
        modelsBucket: `comfyui-models-${"x".repeat(40)}`,
        toolsBucket: `comfyui-nodetools-${"x".repeat(40)}`,
        pins: Array.from({ length: 20 }, (_, i) => `diffusion_models/model_number_${i}_bf16.safetensors`),
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
      assert.ok(written.includes("BOOT_EMF_JQ") && written.includes("PINS_B64") && written.length > 5);
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
      assert.notEqual(renderGpuUserDataScript({ ...ARGS, toolsBucket: "other-tools-bucket" }), script);
    });

    it("writes the settings shell-quoted, so sourcing them gives back the exact values", async () => {
      const script = renderGpuUserDataScript(ARGS);
      const env = heredoc(script, "COMFYUI_MODELS_ENV");
      assert.ok(script.includes(`cat >${NODE_MODELS_ENV_FILE} <<'COMFYUI_MODELS_ENV'`));
      assert.match(env, /^MODELS_BUCKET='comfyui-models-123456789012'$/m);
      assert.match(env, /^PINS_B64='[A-Za-z0-9+/=]+'$/m);
      const file = join(scratch, "models.env");
      writeFileSync(file, env);
      const probe = join(scratch, "probe.sh");
      writeFileSync(
        probe,
        `set -eu\n. "$1"\nprintf '%s\\n' "$MODELS_BUCKET" "$AWS_REGION" "$(printf %s "$PINS_B64" | base64 -d)" "$PARALLEL" "$RESERVE_GB" "$EVICTION_PERCENT" "$BOOT_FILL_SECONDS"\n`,
      );
      const out = await runBash(probe, [file], { PATH: process.env.PATH, HOME: "/nonexistent", LANG: "C.UTF-8" });
      assert.equal(out.code, 0, out.stderr);
      assert.deepEqual(out.stdout.split("\n").slice(0, 7), [ARGS.modelsBucket, ARGS.region, ARGS.pins.join(","), "8", "70", "10", "600"]);
    });

    it("installs the tool and runs its boot, which sets up the disks before the pinned copy; kubelet is kept down only if the tool cannot run", () => {
      const script = renderGpuUserDataScript(ARGS);
      assert.match(script, /^set -Eeuo pipefail$/m);
      assert.match(script, /^"\$TOOL" boot \|\| block_node /m);
      assert.ok(script.includes(`FAILED_MARKER=${BOOT_FAILED_MARKER}`));
      assert.match(script, /systemctl mask --now kubelet\.service/);
      assert.ok(!script.includes("curl") && !script.includes("wget"), "nothing fetched from the internet at boot");
      const tool = readFileSync(TOOL_PATH, "utf8");
      const boot = tool.slice(tool.indexOf("cmd_boot() {"));
      const disks = boot.indexOf("setup-local-disks raid0 ||");
      const mountCheck = boot.indexOf(`mountpoint -q "$DISK"`);
      const fill = boot.indexOf(`bash "$SELF" fill-pins`);
      assert.ok(disks > 0 && mountCheck > disks && fill > mountCheck, "setup-local-disks, then the mount check, then fill-pins");
      assert.match(tool, /"\$\{DISK:=\/mnt\/k8s-disks\/0\}"/);
      assert.ok(NODE_MODELS_DIR.startsWith(`${NODE_DISK_MOUNT}/`));
      // A failed or cut copy is reported, never a reason to keep kubelet down (the agent fetches the rest).
      assert.equal((boot.match(/block_node "/g) ?? []).length, 3, "RAID failed, no mount, and the ERR trap");
    });

    it("rejects arguments that would make a broken node, naming the field", () => {
      const bad: [Partial<GpuUserDataArgs>, UserDataArgError["field"], RegExp][] = [
        [{ modelsBucket: "Bad_Bucket" }, "modelsBucket", /not an S3 bucket name/],
        [{ region: "us east 1" }, "region", /not an AWS region/],
        [{ pins: ["notafolder/x"] }, "pins", /not a ComfyUI model folder/],
        [{ pins: ["checkpoints/../../etc"] }, "pins", /'\.\.' segment/],
        [{ pins: ["checkpoints/a,b"] }, "pins", /comma/],
        [{ pins: ["checkpoints/a\nb"] }, "pins", /control character/],
        [{ pins: ["checkpoints/$HOME.safetensors"] }, "pins", /shell metacharacter/],
        [{ pins: ["clip"] }, "pins", /not a ComfyUI model folder/],
        [{ parallel: 0 }, "parallel", /integer in \[1, 64\]/],
        [{ bootFillSeconds: 900 }, "bootFillSeconds", /integer in \[1, 720\]/],
        [{ reserveGb: -1 }, "reserveGb", /integer/],
        [{ reservePercent: 100 }, "reservePercent", /integer in \[0, 99\]/],
        [{ toolsBucket: "" }, "toolsBucket", /not an S3 bucket name/],
        [{ imageParameter: "not a name" }, "imageParameter", /not an SSM parameter name/],
        [{ bootMetrics: { logGroupName: "metrics group", clusterName: "c" } }, "bootMetrics.logGroupName", /log group name/],
        [{ bootMetrics: { logGroupName: "", clusterName: "c" } }, "bootMetrics.logGroupName", /log group name/],
        [{ bootMetrics: { logGroupName: "/comfyui/c/metrics", clusterName: "-c" } }, "bootMetrics.clusterName", /EKS cluster name/],
        [{ bootMetrics: { logGroupName: "/comfyui/c/metrics", clusterName: "c'; rm -rf /" } }, "bootMetrics.clusterName", /EKS cluster name/],
      ];
      for (const [override, field, reason] of bad) {
        assert.throws(
          () => renderGpuUserData({ ...ARGS, ...override }),
          (err: unknown) => err instanceof UserDataArgError && err.field === field && reason.test(err.reason),
          JSON.stringify(override),
        );
      }
    });
  });

  describe("the pinned copy against S3 (s3rver + AWS CLI)", () => {
    const BUCKET = "models";
    // Names from the fixture catalogue, plus the awkward ones real buckets have.
    const MODEL_FILES: Record<string, number> = {
      "diffusion_models/z_image_turbo_bf16.safetensors": 9 * 1024 * 1024 + 123, // above the CLI's 8 MiB multipart threshold
      "text_encoders/qwen_3_4b.safetensors": 300_000,
      "vae/ae.safetensors": 65_536,
      "vae/ae.safetensors.bak": 1_000,
      "upscale_models/RealESRGAN_x4plus.safetensors": 40_000,
      "loras/Qwen Image Lightning 8steps V1.0.safetensors": 20_000,
      "loras/it's (v2) [final].safetensors": 10_000,
    };
    const ALL_FOLDERS = "diffusion_models/,text_encoders/,vae/,upscale_models/,loras/";
    const sources = new Map<string, Buffer>();
    let s3: S3;
    let env: NodeJS.ProcessEnv;
    let run = 0;

    /** Fresh node folders per case, so cases do not depend on each other's leftovers. */
    function node(extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; dirs: { root: string; models: string; staging: string } } {
      const root = join(scratch, `node-${++run}`);
      const models = join(root, "disk", "models");
      return {
        dirs: { root, models, staging: join(models, AGENT_PRIVATE_DIR, "staging") },
        env: {
          ...env,
          MODELS_BUCKET: BUCKET,
          MODELS_DIR: models,
          // Never pick up a real /etc/comfyui-models.env on the machine running the tests.
          COMFYUI_MODELS_ENV_FILE: join(root, "absent.env"),
          // The node's floor is for GPU nodes' arrays, not this machine's disk.
          RESERVE_GB: "0",
          EVICTION_PERCENT: "0",
          // Debian's CLI 2.9 CRT client ignores the endpoint's port (connection refused on s3rver).
          TRANSFER_CLIENT: "classic",
          ...extra,
        },
      };
    }

    /** The files in the model folders (not the agent's private folder). */
    const modelFiles = (models: string): string[] => listFiles(models).filter((f) => !f.startsWith(`${AGENT_PRIVATE_DIR}/`));

    function assertIdentical(models: string, keys: readonly string[]): void {
      assert.deepEqual(modelFiles(models), [...keys].sort());
      for (const key of keys) {
        assert.ok(readFileSync(join(models, key)).equals(sources.get(key) as Buffer), `${key} differs from the source`);
      }
    }

    const tool = (args: string[], e: NodeJS.ProcessEnv): Promise<RunResult> => runBash(TOOL_PATH, args, e);

    let uploads = 0;
    async function putObject(key: string, content: Buffer): Promise<void> {
      const local = join(scratch, `upload-${++uploads}.bin`);
      writeFileSync(local, content);
      await aws(env, ["s3", "cp", "--only-show-errors", local, `s3://${BUCKET}/${key}`]);
    }

    /** A PATH whose `df` reports an array of `size` bytes with `avail` free. */
    function fakeDisk(dir: string, size: number, avail: number): string {
      mkdirSync(dir, { recursive: true });
      writeFileSync(
        join(dir, "df"),
        `#!/bin/bash\ncase " $* " in\n  *" --output=size "*) printf 'Size\\n%s\\n' ${size} ;;\n  *" --output=avail "*) printf 'Avail\\n%s\\n' ${avail} ;;\n  *) exit 1 ;;\nesac\n`,
        { mode: 0o755 },
      );
      return `${dir}:${env.PATH}`;
    }

    before(async function () {
      this.timeout(60_000);
      s3 = await startS3(join(scratch, "s3rver"), BUCKET);
      env = awsEnv(s3, childPath(join(scratch, "bin")), join(scratch, "home"));
      const upload = join(scratch, "upload");
      for (const [key, size] of Object.entries(MODEL_FILES)) sources.set(key, randomBytes(size));
      for (const [key, content] of sources) {
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
      // 200 KB/s: the 9.4 MB model alone needs ~47 s, far beyond the 6 s budget.
      const slow = await startThrottledProxy(s3.endpoint, 200_000);
      try {
        const pins = ["vae/ae.safetensors", "diffusion_models/z_image_turbo_bf16.safetensors"];
        const n = node({ BOOT_FILL_SECONDS: "6", PARALLEL: "2", PINS: pins.join(","), AWS_ENDPOINT_URL: slow.endpoint });
        const watcher = watchForPartialFiles(n.dirs.models, sources, 3, (rel) => rel.startsWith(`${AGENT_PRIVATE_DIR}/`));
        const t0 = Date.now();
        const first = await tool(["fill-pins"], n.env);
        const took = (Date.now() - t0) / 1000;
        const seen = await watcher.stop();
        assert.equal(first.code, MODELS_TOOL_EXIT.budgetReached, first.stderr);
        // budget + `timeout -k 3` + bookkeeping.
        assert.ok(took < 6 + 5, `fill-pins returned after ${took}s with a 6 s budget`);
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
          [BOOT_FAILED_MARKER, join(box, "etc/comfyui-models.boot-failed")],
          ["/etc/systemd/system", join(box, "etc/systemd/system")],
          [NODE_MODELS_TOOL, join(box, "usr/local/bin/comfyui-models")],
          ["/dev/console", join(box, "dev/console")],
        ];
        let script = renderGpuUserDataScript({ ...ARGS, modelsBucket: BUCKET, toolsBucket: TOOLS, pins: ["vae/ae.safetensors"], ...args });
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
          RESERVE_GB: "0",
          EVICTION_PERCENT: "0",
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

      const labels = (missing: number, tBoot: number): string =>
        `apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    flags:\n      - --node-labels=${MODELS_MISSING_LABEL}=${missing},${BOOT_AT_LABEL}=${tBoot}\n`;

      it("fetches the tool, sets up disks, copies the pins, labels the node and writes the boot summary", async () => {
        const { box, result, calls, read, summary } = await boot({});
        assert.equal(result.code, 0, result.stderr);
        assert.deepEqual(
          calls.filter((c) => !/^logger -t comfyui-(models -- boot:|boot -- )/.test(c)),
          [`logger -t comfyui-models -- setting up the NVMe instance store as RAID0 at ${box}/disk`, "setup-local-disks raid0", `mountpoint -q ${box}/disk`],
        );
        assert.equal(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), labels(0, summary().t_boot));
        assert.match(result.stderr, /boot metrics: METRICS_LOG_GROUP is not set; nothing sent/);
        assert.equal(read("usr/local/bin/comfyui-models"), readFileSync(TOOL_PATH, "utf8"), "the installed tool is the repository's");
        assert.match(read("etc/comfyui-models.env"), /^MODELS_BUCKET='models'$/m);
        assert.match(read("dev/console"), /comfyui-models: boot: pins complete, 1 file\(s\)/);
        assert.ok(readFileSync(join(box, "disk/comfyui-models/vae/ae.safetensors")).equals(sources.get("vae/ae.safetensors") as Buffer));
        assert.deepEqual(modelFiles(join(box, "disk/comfyui-models")), ["vae/ae.safetensors"]);
        assert.equal(read("etc/comfyui-models.boot-failed"), "");
        const s = summary();
        assert.equal(s.fill.result, "complete");
        assert.equal(s.fill.files, 1);
        assert.equal(s.fill.bytes, 65_536);
        assert.equal(s.image.result, "skipped", "no imageParameter, no pre-pull");
        assert.ok(calls.some((c) => c.startsWith("logger -t comfyui-boot -- {")), "one JSON line to the journal");
      });

      it("with no pins (the default) lists nothing and registers at once", async () => {
        const { box, result, timing, read, summary } = await boot({ pins: [] });
        assert.equal(result.code, 0, result.stderr);
        assert.ok(!timing.some((l) => / s3api list-objects-v2 | s3 cp s3:\/\/models\//.test(l)), timing.join("\n"));
        assert.deepEqual(modelFiles(join(box, "disk/comfyui-models")), []);
        const s = summary();
        assert.equal(s.fill.result, "none");
        assert.equal(s.fill.files, 0);
        assert.equal(typeof s.t_filled, "number");
        assert.equal(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), labels(0, s.t_boot));
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
        assert.equal(read("etc/systemd/system/kubelet.service.d/99-comfyui-models-block.conf"), `[Unit]\nConditionPathExists=!${box}/etc/comfyui-models.boot-failed\n`);
        assert.ok(calls.includes("systemctl mask --now kubelet.service"));
      });

      it("a pinned copy that fails never keeps the node from registering: it says so, and the agent fetches the pins", async () => {
        const { result, calls, read, summary } = await boot({ modelsBucket: "no-such-bucket", bootFillSeconds: 30 });
        assert.equal(result.code, 0, result.stderr);
        assert.match(result.stderr, /bucket no-such-bucket not reachable/);
        assert.match(read("dev/console"), /pinned models: failed \(exit 3\); the node registers and the model agent fetches the rest/);
        assert.equal(summary().fill.result, "failed");
        assert.equal(read("etc/comfyui-models.boot-failed"), "");
        assert.ok(!calls.includes("systemctl mask --now kubelet.service"));
        assert.equal(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), labels(0, summary().t_boot));
      });

      it("refuses to go on when the instance store is not mounted", async () => {
        const { box, result, calls, read } = await boot({}, { stubEnv: { STUB_MOUNTPOINT_RC: "1" } });
        assert.equal(result.code, 1);
        assert.match(read("dev/console"), /FATAL: .* is not a mountpoint after setup-local-disks raid0/);
        assert.deepEqual(listFiles(join(box, "disk")), [], "nothing copied");
        assert.ok(calls.includes("systemctl mask --now kubelet.service"));
      });

      it("pins larger than the array (folders of the 730 GB catalogue on a small array) register with what fits and say what is missing (D9)", async function () {
        // Tens of uploads and CLI downloads on a shared 2-core machine.
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

        // Pinned folders in an operator's order; within a folder, the bucket's key order. A 150 GB
        // array less its 10% eviction line: each file that fits is taken, the others are missing.
        const folders = [...new Set(Object.keys(catalog).map((k) => k.split("/")[0]))].sort().reverse();
        const array = 150 * scale;
        const usable = array - array / 10;
        const taken: string[] = [];
        const missing: string[] = [];
        let used = 0;
        for (const folder of folders) {
          const keys = Object.keys(catalog).filter((k) => k.startsWith(`${folder}/`)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
          for (const key of keys) {
            const size = Math.round(catalog[key].size_gb * scale);
            if (used + size <= usable) {
              taken.push(key);
              used += size;
            } else missing.push(key);
          }
        }
        assert.ok(missing.length > 0 && taken.length > 0);

        const { box, result, read, calls, summary } = await boot(
          { modelsBucket: "catalog", pins: folders.map((f) => `${f}/`), parallel: 16 },
          { disk: { size: array, avail: array }, stubEnv: { EVICTION_PERCENT: "10" } },
        );
        assert.equal(result.code, 0, result.stderr);
        assert.deepEqual(modelFiles(join(box, "disk/comfyui-models")), [...taken].sort());
        assert.equal(read("etc/eks/nodeadm.d/90-comfyui-models.yaml"), labels(missing.length, summary().t_boot));
        const s = summary();
        assert.equal(s.fill.result, "partial");
        assert.equal(s.fill.files, taken.length);
        assert.equal(s.fill.missing_files, missing.length);
        assert.deepEqual(s.fill.missing, missing);
        assert.match(read("dev/console"), new RegExp(`boot: pins partial, ${taken.length} file\\(s\\) .*; missing ${missing.length} file\\(s\\)`));
        assert.ok(calls.some((c) => c.startsWith(`logger -t comfyui-models -- boot: pins partial`)), "the journal says it too");
        assert.equal(read("etc/comfyui-models.boot-failed"), "", "not a failure: the node registers");
      });

      /** [start, end] in epoch seconds of each timing.log line of `kind`. */
      const spans = (timing: string[], kind: string): { start: number; end: number; line: string }[] =>
        timing.filter((l) => l.startsWith(`${kind} `)).map((line) => {
          const [, start, end] = line.split(" ");
          return { start: Number(start), end: Number(end), line };
        });

      it("pulls the image by digest from the SSM parameter while the models copy, with the CRI's snapshotter (soci)", async () => {
        const { result, calls, timing, summary } = await boot(
          { pins: ["diffusion_models/", "text_encoders/", "vae/ae.safetensors"], imageParameter: "/comfyui/test/image" },
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
        assert.equal(failing.read("etc/comfyui-models.boot-failed"), "");

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
          const { result, timing, read, summary } = await boot({ imageParameter: "/comfyui/test/image" }, { stubEnv: { [hang]: "1", PREPULL_STEP_SECONDS: String(BOUND) } });
          const seconds = (Date.now() - started) / 1000;
          assert.equal(result.code, 0, `${hang}: ${result.stderr}`);
          assert.match(read("dev/console"), line, hang);
          const s = summary();
          assert.equal(s.image.result, "failed", hang);
          // The step's bound plus timeout's kill grace (-k 5) and a little scheduling slack.
          assert.ok(s.image.seconds <= BOUND + 5 + 2, `${hang}: the pre-pull took ${s.image.seconds}s`);
          assert.deepEqual(spans(timing, "nerdctl"), [], `${hang}: nothing pulled after a failed step`);
          assert.equal(read("etc/comfyui-models.boot-failed"), "", `${hang}: kubelet is not held back`);
          assert.match(read("dev/console"), /boot: pins complete/, `${hang}: the boot reached its end`);
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
          assert.equal(read("etc/comfyui-models.boot-failed"), "");
          assert.ok(!calls.includes("systemctl mask --now kubelet.service"));
        });

        it("an unreachable endpoint, or no instance id, is one line and a registered node too", async () => {
          const { result, read } = await boot({ bootMetrics }, { stubEnv: metricsEnv("http://127.0.0.1:9") });
          assert.equal(result.code, 0, result.stderr);
          assert.match(read("dev/console"), new RegExp(`boot metrics not sent to log group ${GROUP} .*: create-log-stream ${STREAM}: .*Could not connect to the endpoint URL`));
          assert.match(read("dev/console"), /boot: pins complete/);
          assert.equal(read("etc/comfyui-models.boot-failed"), "");

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
