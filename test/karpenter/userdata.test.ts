/**
 * GPU node user data and its node tool: static checks (shellcheck, MIME, quoting, order). The pinned
 * copy against s3rver is in userdata.copy.test.ts, the whole boot in a sandbox in userdata.boot.test.ts
 * (separate files, so mocha's parallel workers can run them side by side).
 */
import { strict as assert } from "node:assert";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { MODEL_FOLDERS, NODE_MODELS_DIR, NODE_MODELS_ENV_FILE, NODE_MODELS_TOOL } from "../../contracts/node";
import { AGENT_PRIVATE_DIR } from "../../contracts/modelsAgent";
import { metricsLogGroupName, nodeBootEmfJq } from "../../contracts/metrics";
import {
  BOOT_FAILED_MARKER,
  MODELS_TOOL_EXIT,
  NODE_DISK_MOUNT,
  USER_DATA_BOUNDARY,
  TOOL_FETCH_ATTEMPTS,
  USER_DATA_MAX_BYTES,
  UserDataArgError,
  modelsToolObject,
  renderGpuUserData,
  renderGpuUserDataScript,
  GpuUserDataArgs,
} from "../../karpenter/userdata/gpuUserData";
import {
  TOOL_PATH,
  makeTempDir,
  removeDir,
  runBash,
  shellcheck,
  RENDER_ARGS as ARGS,
} from "./userdataHelpers";

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

});
