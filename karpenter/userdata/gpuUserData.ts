/**
 * User data for GPU nodes (AL2023, nodeadm): what must happen before kubelet starts — the NVMe
 * RAID0 array, the pinned models (none by default), the ComfyUI image pre-pull and the node's
 * labels — and nothing else. Everything after registration (fetch on demand, LRU eviction, bucket
 * changes) is the model agent's (workload/models/agent), a DaemonSet on every GPU node.
 *
 * Why the pinned copy is here: cloud-final runs user data before nodeadm-run starts kubelet (docs
 * eks-notes §1), so a node registers with its pinned files present and no startup taint or
 * taint-removing DaemonSet is needed. The price is the 15 min NodeClaim registration timeout,
 * which bounds the copy; whatever it leaves, the agent fetches once it runs.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { nodeBootEmfJq } from "../../contracts/metrics";
import { checkPinEntry } from "../../contracts/modelsAgent";
import { NODE_MODELS_ENV_FILE, NODE_MODELS_TOOL } from "../../contracts/node";

/** What the boot needs to know; the Pulumi component resolves Outputs before calling. */
export interface GpuUserDataArgs {
  /** Bucket holding the models, keys laid out as ComfyUI model folders (`checkpoints/x.safetensors`). */
  readonly modelsBucket: string;
  /** Region of the buckets (the node's region: the S3 gateway endpoint is regional). */
  readonly region: string;
  /**
   * Private bucket the node tool is fetched from at boot (key and sha256 from modelsToolObject()),
   * with the node role: the tool is too large to travel inside the 16 KiB of user data.
   */
  readonly toolsBucket: string;
  /**
   * The pinned set, copied before the node registers, most important first: file keys and folders
   * ending in `/` (the agent's pin entries, contracts/modelsAgent.ts checkPinEntry). When they
   * do not all fit, the node takes them in this order and registers with what fits. [] = none.
   */
  readonly pins: readonly string[];
  /** Files copied at once; each `aws s3 cp` adds its own ranged GETs on top. */
  readonly parallel: number;
  /** Seconds the pinned copy (and the image pre-pull) may take before the node registers anyway. */
  readonly bootFillSeconds: number;
  /**
   * GB of the array the copy never uses, on top of `reservePercent`: the same reserve the model
   * agent keeps (contracts/node.ts modelsReserveGb: image, scratch per GPU, margin).
   */
  readonly reserveGb: number;
  /** And this share of the array: kubelet's evictionHard nodefs.available (nodeadm's 10%). @defaultValue 10 */
  readonly reservePercent?: number;
  /** nodeadm's FastImagePull feature gate (parallel pull and unpack, soci). @defaultValue true */
  readonly fastImagePull?: boolean;
  /**
   * Name of the SSM parameter holding the ComfyUI image by digest (`<registry>/<repo>@sha256:...`),
   * pulled during the copy. The name, not the digest, is in the user data, so a new image changes
   * no node's user data. @defaultValue unset: no pre-pull
   */
  readonly imageParameter?: string;
  /**
   * Where the node sends its boot summary as one CloudWatch EMF log event (stream
   * `node-boot/<instance id>`; the node role needs logs:CreateLogStream and logs:PutLogEvents
   * there). @defaultValue unset: no boot metrics
   */
  readonly bootMetrics?: BootMetricsTarget;
}

/** The metrics log group of the cluster (contracts/metrics.ts metricsLogGroupName) and the cluster, its dimension. */
export interface BootMetricsTarget {
  readonly logGroupName: string;
  readonly clusterName: string;
}

/** An argument the user data cannot be rendered with: which one, and why (the component maps `field` to its own argument). */
export class UserDataArgError extends Error {
  constructor(
    readonly field: keyof GpuUserDataArgs | "bootMetrics.logGroupName" | "bootMetrics.clusterName",
    readonly reason: string,
  ) {
    super(`renderGpuUserData: ${field} ${reason}`);
    this.name = "UserDataArgError";
  }
}

/** Label the node registers with: how many pinned files it registered without (0 = all present). */
export const MODELS_MISSING_LABEL = "comfyui.studio/models-missing";

/** Label the node registers with: its kernel start (the boot summary's t_boot), epoch seconds. */
export const BOOT_AT_LABEL = "comfyui.studio/boot-at";

/** Where each GPU node leaves its boot summary (JSON; also one journal line tagged comfyui-boot). */
export const BOOT_SUMMARY_FILE = "/var/log/comfyui-models/boot-summary.json";

/** Where the node script lives in this repository; read at render time, never at import. */
export const MODELS_TOOL_SOURCE = join(__dirname, "comfyui-models.sh");

/** Mount point of the RAID0 array that `setup-local-disks raid0` builds (NODE_MODELS_DIR is on it). */
export const NODE_DISK_MOUNT = "/mnt/k8s-disks/0";

/** Exit codes of `comfyui-models` (the header of comfyui-models.sh says the same; a test pins both). */
export const MODELS_TOOL_EXIT = {
  ok: 0,
  /** One or more pinned files failed after their retries. */
  failed: 1,
  /** Usage or configuration error (missing MODELS_BUCKET, bad number). */
  usage: 2,
  /** Listing the bucket failed: wrong name, no permission, no route to S3. */
  bucketUnreachable: 3,
  /** BOOT_FILL_SECONDS ran out before every pinned file was copied: register, the agent fetches the rest. */
  budgetReached: 75,
} as const;

/**
 * Marker whose presence keeps kubelet from starting: written when the node cannot serve at all (the
 * tool could not be fetched, no instance store), with the reason inside for the console.
 */
export const BOOT_FAILED_MARKER = "/etc/comfyui-models.boot-failed";

/** MIME boundary; must not occur in any part (checked at render). */
export const USER_DATA_BOUNDARY = "==COMFYUI-MODELS-BOUNDARY==";

/**
 * EC2 caps user data at 16 KiB before base64, and Karpenter adds its NodeConfig part (cluster CA,
 * endpoint, kubelet settings and labels: 2-3 KiB) to what we render. 12 KiB leaves that room.
 */
export const USER_DATA_MAX_BYTES = 12 * 1024;

/**
 * Longest boot copy accepted: the NodeClaim is deleted if the node has not registered 15 min after
 * launch, and EC2 boot plus nodeadm and kubelet start take a few minutes of that.
 */
export const MAX_BOOT_FILL_SECONDS = 720;

/** POSIX single quoting: the only character that needs care inside '...' is ' itself. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** The node tool as stored in the node-tools bucket: the repository file, content-addressed. */
export interface ModelsToolObject {
  /** Object key; changes with the content, so a node never runs a tool its user data did not name. */
  readonly key: string;
  readonly content: string;
  readonly sha256: string;
}

/** Read at render time, never at import. */
export function modelsToolObject(): ModelsToolObject {
  const content = readFileSync(MODELS_TOOL_SOURCE, "utf8");
  const sha256 = createHash("sha256").update(content, "utf8").digest("hex");
  return { key: `node/comfyui-models-${sha256}.sh`, content, sha256 };
}

/** Attempts at fetching the tool: a transient S3 or credential hiccup must not cost the node. */
export const TOOL_FETCH_ATTEMPTS = 5;

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;
// SSM parameter names (SSM PutParameter API): letters, digits, . - _ and / for the hierarchy.
const SSM_PARAMETER = /^\/?[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;
// CloudWatch Logs CreateLogGroup: 1-512 of [.-_/#A-Za-z0-9]; EKS CreateCluster: ^[0-9A-Za-z][A-Za-z0-9\-_]*$, 1-100.
const LOG_GROUP = /^[.\-_/#A-Za-z0-9]{1,512}$/;
const CLUSTER_NAME = /^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/;
const DEFAULT_RESERVE_PERCENT = 10;

function assertInteger(field: keyof GpuUserDataArgs, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new UserDataArgError(field, `must be an integer in [${min}, ${max}], got ${value}`);
}

function validate(args: GpuUserDataArgs): void {
  if (!BUCKET_NAME.test(args.modelsBucket)) throw new UserDataArgError("modelsBucket", `${JSON.stringify(args.modelsBucket)} is not an S3 bucket name`);
  if (!BUCKET_NAME.test(args.toolsBucket)) throw new UserDataArgError("toolsBucket", `${JSON.stringify(args.toolsBucket)} is not an S3 bucket name`);
  if (!REGION.test(args.region)) throw new UserDataArgError("region", `${JSON.stringify(args.region)} is not an AWS region`);
  // The agent's rule, so the node copies at boot exactly what the agent keeps pinned. The key rule
  // allows ',' (contracts/modelKeys.ts), which separates entries in the node's settings: refused here only.
  for (const entry of args.pins) {
    const c = checkPinEntry(entry);
    if (!c.ok) throw new UserDataArgError("pins", `entry ${JSON.stringify(entry)}: ${c.reason}`);
    if (entry.includes(",")) throw new UserDataArgError("pins", `entry ${JSON.stringify(entry)} contains a comma, which separates entries on the node`);
  }
  assertInteger("parallel", args.parallel, 1, 64);
  assertInteger("bootFillSeconds", args.bootFillSeconds, 1, MAX_BOOT_FILL_SECONDS);
  assertInteger("reserveGb", args.reserveGb, 0, 100_000);
  assertInteger("reservePercent", args.reservePercent ?? DEFAULT_RESERVE_PERCENT, 0, 99);
  if (args.imageParameter !== undefined && (!SSM_PARAMETER.test(args.imageParameter) || args.imageParameter.length > 2048)) {
    throw new UserDataArgError("imageParameter", `${JSON.stringify(args.imageParameter)} is not an SSM parameter name`);
  }
  if (args.bootMetrics !== undefined) {
    const { logGroupName, clusterName } = args.bootMetrics;
    if (!LOG_GROUP.test(logGroupName)) throw new UserDataArgError("bootMetrics.logGroupName", `${JSON.stringify(logGroupName)} is not a CloudWatch Logs log group name`);
    if (!CLUSTER_NAME.test(clusterName)) throw new UserDataArgError("bootMetrics.clusterName", `${JSON.stringify(clusterName)} is not an EKS cluster name`);
  }
}

// MODEL_FOLDERS and the models folder are left to the tool's defaults (a test pins them to contracts/node.ts).
// The pins travel base64-encoded: S3 keys are UTF-8, and cloud-init cannot write a shell part
// with non-ASCII bytes (docs eks-notes "Checked against upstream sources"), so the part stays ASCII.
function envFile(args: GpuUserDataArgs): string {
  const values: [string, string][] = [
    ["MODELS_BUCKET", args.modelsBucket],
    ["AWS_REGION", args.region],
    ["PINS_B64", Buffer.from(args.pins.join(","), "utf8").toString("base64")],
    ["PARALLEL", String(args.parallel)],
    ["BOOT_FILL_SECONDS", String(args.bootFillSeconds)],
    ["RESERVE_GB", String(args.reserveGb)],
    ["EVICTION_PERCENT", String(args.reservePercent ?? DEFAULT_RESERVE_PERCENT)],
    ["IMAGE_PARAM", args.imageParameter ?? ""],
    // The jq program (about 0.9 KB) travels here rather than next to the tool: the user data has
    // the room (USER_DATA_MAX_BYTES, checked at render), while a second tools-bucket object would
    // need its own grant, fetch and checksum at boot. Without bootMetrics the user data is unchanged.
    ...(args.bootMetrics
      ? ([
          ["METRICS_LOG_GROUP", args.bootMetrics.logGroupName],
          ["CLUSTER_NAME", args.bootMetrics.clusterName],
          ["BOOT_EMF_JQ", nodeBootEmfJq()],
        ] as [string, string][])
      : []),
  ];
  return values.map(([k, v]) => `${k}=${shellQuote(v)}`).join("\n");
}

/** The text/x-shellscript part on its own (what shellcheck sees in the tests). */
export function renderGpuUserDataScript(args: GpuUserDataArgs): string {
  validate(args);
  const tool = modelsToolObject();
  const source = `s3://${args.toolsBucket}/${tool.key}`;
  // All the boot logic is in the tool (`comfyui-models boot`); this part only fetches and installs
  // it, with the node role (the CLI takes the instance credentials from IMDSv2), and keeps kubelet
  // down itself if even that fails. A failed or corrupt download is retried: S3 or IMDS may hiccup.
  // AWS_ENDPOINT_URL is never set on a node; the tests point it at their S3 server.
  const lines = [
    `#!/bin/bash`,
    `set -Eeuo pipefail`,
    `USERDATA_START=$(date +%s)`,
    `export USERDATA_START`,
    `readonly TOOL=${NODE_MODELS_TOOL} FAILED_MARKER=${BOOT_FAILED_MARKER}`,
    `block_node() {`,
    `  trap - ERR`,
    `  set +e`,
    `  echo "comfyui-models: FATAL: $*" | tee -a /dev/console >&2`,
    `  printf '%s\\n' "$*" >>"$FAILED_MARKER"`,
    `  mkdir -p /etc/systemd/system/kubelet.service.d`,
    `  printf '[Unit]\\nConditionPathExists=!%s\\n' "$FAILED_MARKER" >/etc/systemd/system/kubelet.service.d/99-comfyui-models-block.conf`,
    `  systemctl daemon-reload`,
    `  systemctl mask --now kubelet.service`,
    `  exit 1`,
    `}`,
    `trap 'block_node "user data failed at line $LINENO"' ERR`,
    // Quoted heredoc: nothing in the values is expanded by this shell.
    `cat >${NODE_MODELS_ENV_FILE} <<'COMFYUI_MODELS_ENV'`,
    envFile(args),
    `COMFYUI_MODELS_ENV`,
    `chmod 0644 ${NODE_MODELS_ENV_FILE}`,
    `mkdir -p "\${TOOL%/*}"`,
    `fetched=`,
    `for attempt in $(seq ${TOOL_FETCH_ATTEMPTS}); do`,
    `  if aws --region ${args.region} \${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} s3 cp --only-show-errors ${source} "$TOOL.new" &&`,
    `    echo "${tool.sha256}  $TOOL.new" | sha256sum -c --quiet -; then`,
    `    fetched=1`,
    `    break`,
    `  fi`,
    `  echo "comfyui-models: fetching ${source} failed or its sha256 differs (attempt $attempt of ${TOOL_FETCH_ATTEMPTS})" | tee -a /dev/console >&2`,
    `  if ((attempt < ${TOOL_FETCH_ATTEMPTS})); then sleep $((attempt * 3)); fi`,
    `done`,
    `[[ -n $fetched ]] || block_node "could not fetch ${source} (sha256 ${tool.sha256})"`,
    `chmod 0755 "$TOOL.new"`,
    `mv -f "$TOOL.new" "$TOOL"`,
    `"$TOOL" boot || block_node "comfyui-models boot failed (exit $?), see the lines above"`,
  ];
  const script = lines.join("\n") + "\n";
  if (!/^[\x00-\x7f]*$/.test(script)) throw new Error("renderGpuUserData: the shell part is not pure ASCII");
  return script;
}

/** nodeadm's parallel image pull (amazon-eks-ami v20260724 nodeadm/api/v1alpha1/nodeconfig_types.go). */
function nodeConfigPart(): string {
  return [`apiVersion: node.eks.aws/v1alpha1`, `kind: NodeConfig`, `spec:`, `  featureGates:`, `    FastImagePull: true`].join("\n") + "\n";
}

/**
 * MIME multi-part user data: our NodeConfig part (FastImagePull) and one shell part. Explicit MIME
 * because Karpenter keeps the parts of an archive as they are and appends its own NodeConfig last
 * (aws/karpenter-provider-aws v1.14.1 pkg/providers/amifamily/bootstrap/nodeadm.go); nodeadm merges
 * the NodeConfig parts, and cloud-init runs the shell part.
 */
export function renderGpuUserData(args: GpuUserDataArgs): string {
  const script = renderGpuUserDataScript(args);
  if (script.includes(USER_DATA_BOUNDARY)) {
    throw new Error("renderGpuUserData: the MIME boundary occurs in the script");
  }
  // FastImagePull must be in the user data itself: nodeadm-config writes containerd's config from
  // it before cloud-init runs anything (nodeadm-config.service, Before=cloud-init.service).
  const nodeConfig = args.fastImagePull === false ? [] : [`--${USER_DATA_BOUNDARY}`, `Content-Type: application/node.eks.aws`, ``, nodeConfigPart()];
  const userData = [
    `MIME-Version: 1.0`,
    `Content-Type: multipart/mixed; boundary="${USER_DATA_BOUNDARY}"`,
    ``,
    ...nodeConfig,
    `--${USER_DATA_BOUNDARY}`,
    `Content-Type: text/x-shellscript; charset="us-ascii"`,
    ``,
    script,
    `--${USER_DATA_BOUNDARY}--`,
    ``,
  ].join("\n");
  const bytes = Buffer.byteLength(userData, "utf8");
  if (bytes > USER_DATA_MAX_BYTES) {
    throw new Error(
      `renderGpuUserData: ${bytes} bytes of user data exceed ${USER_DATA_MAX_BYTES} (EC2 allows 16 KiB including Karpenter's NodeConfig)`,
    );
  }
  return userData;
}
