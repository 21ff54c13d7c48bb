/**
 * The whole GPU node boot (the rendered user data) in a sandbox with system commands stubbed and paths
 * moved: the tool fetched and checked, disks, pins, pre-pull, labels, boot summary and its metrics.
 */
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { NODE_MODELS_ENV_FILE, NODE_MODELS_TOOL } from "../../contracts/node";
import { NODE_BOOT_STREAM_PREFIX, metricsLogGroupName, nodeBootEmf } from "../../contracts/metrics";
import { parseEmfLine } from "../observability/emfParse";
import {
  BOOT_AT_LABEL,
  BOOT_FAILED_MARKER,
  MODELS_MISSING_LABEL,
  TOOL_FETCH_ATTEMPTS,
  modelsToolObject,
  renderGpuUserDataScript,
  GpuUserDataArgs,
} from "../../karpenter/userdata/gpuUserData";
import { TOOL_PATH, aws, FakeLogs, listFiles, runBash, startFakeLogs, RENDER_ARGS as ARGS } from "./userdataHelpers";
import { usePinnedBucket } from "./pinnedBucket";

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

describe("GPU node user data: the rendered user data, run in a sandbox (system commands stubbed, paths moved)", function () {
  this.timeout(60_000);
  const fx = usePinnedBucket();
  const { BUCKET, sources, modelFiles } = fx;
  let env: NodeJS.ProcessEnv;
  let scratch: string;
  before(() => {
    ({ env, scratch } = fx);
  });

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

    // Pinned folders in an operator's order; within a folder, the bucket's key order. A 40 GB array
    // less its 10% eviction line: each file that fits is taken (19 files from four folders, a later
    // smaller one after a larger one was skipped), the other 65 are missing. Each copy is one CLI
    // start, so a larger array only repeats the same case at a second of CPU per file.
    const folders = [...new Set(Object.keys(catalog).map((k) => k.split("/")[0]))].sort().reverse();
    const array = 40 * scale;
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

    /** What contracts/metrics.ts's own emitter makes of a summary, as CloudWatch would extract it. */
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
