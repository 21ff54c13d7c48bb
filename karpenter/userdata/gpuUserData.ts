/**
 * User data for GPU nodes (AL2023, nodeadm): put the hot models on the NVMe array before the node
 * registers, so a ComfyUI pod scheduled there never waits on S3 for its first model.
 *
 * Why the copy lives in user data: cloud-final runs it before nodeadm-run starts kubelet
 * (docs eks-notes §1), so "Ready" already implies "hot models present" and no startup taint or
 * taint-removing DaemonSet is needed. The price is the 15 min NodeClaim registration timeout, which
 * bounds the boot fill; anything beyond the hot set is copied by a systemd unit after the node joins.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import {
  MODEL_FOLDERS,
  NODE_MODELS_DIR,
  NODE_MODELS_ENV_FILE,
  NODE_MODELS_STAGING_DIR,
  NODE_MODELS_STATE_DIR,
  NODE_MODELS_TOOL,
} from "../nodeContract";

/** What the boot fill needs to know; the Pulumi component resolves Outputs before calling. */
export interface GpuUserDataArgs {
  /** Bucket holding the models, keys laid out as ComfyUI model folders (`checkpoints/x.safetensors`). */
  readonly modelsBucket: string;
  /** Region of the bucket (the node's region: the S3 gateway endpoint is regional). */
  readonly region: string;
  /**
   * Keys copied before the node registers. Each entry is an exact key or a model folder
   * (`"checkpoints"` or `"checkpoints/"`); an empty list means the whole bucket.
   */
  readonly hotSet: readonly string[];
  /** Files copied at once; each `aws s3 cp` adds its own ranged GETs on top. */
  readonly parallel: number;
  /** Seconds the boot fill may take before the node registers anyway and the rest continues. */
  readonly bootFillSeconds: number;
  /** GB of the NVMe array kept free for images, pod logs and emptyDirs. */
  readonly reserveGb: number;
}

/** Where the node script lives in this repository; read at render time, never at import. */
export const MODELS_TOOL_SOURCE = join(__dirname, "comfyui-models.sh");

/** Mount point of the RAID0 array that `setup-local-disks raid0` builds (NODE_MODELS_DIR is on it). */
export const NODE_DISK_MOUNT = "/mnt/k8s-disks/0";

/** The unit that finishes the hot set (if the budget ran out) and copies the rest, on every boot. */
export const FILL_REST_UNIT = "comfyui-models-rest.service";

/**
 * Exit codes of `comfyui-models` (the header of comfyui-models.sh says the same; a test pins both).
 * The boot fill retries only the transient ones; an SSM `apply` fails on anything but `ok`.
 */
export const MODELS_TOOL_EXIT = {
  ok: 0,
  /** One or more files failed after their retries, or an `apply` line was rejected. */
  failed: 1,
  /** Usage or configuration error (missing MODELS_BUCKET, bad number, staging on another filesystem). */
  usage: 2,
  /** Listing the bucket failed: wrong name, no permission, no route to S3. */
  bucketUnreachable: 3,
  /** The hot set does not fit the array minus RESERVE_GB. */
  noSpace: 4,
  /** BOOT_FILL_SECONDS ran out before every hot file was copied: register, continue in the background. */
  budgetReached: 75,
} as const;

/** Exit code of `comfyui-models fill-hot` when the time budget ended before all files were copied. */
export const FILL_BUDGET_EXIT_CODE = MODELS_TOOL_EXIT.budgetReached;

/** Whole `fill-hot` runs the user data tries; each run already retries every file. */
export const BOOT_FILL_ATTEMPTS = 3;

/**
 * Marker whose presence keeps kubelet from starting: written when the boot fill fails, with the
 * reason inside, so an operator on the console sees why the node never joined.
 */
export const BOOT_FILL_FAILED_MARKER = "/etc/comfyui-models.boot-fill-failed";

/** MIME boundary; must not occur in any part (checked at render). */
export const USER_DATA_BOUNDARY = "==COMFYUI-MODELS-BOUNDARY==";

/**
 * EC2 caps user data at 16 KiB before base64, and Karpenter adds its NodeConfig part (cluster CA,
 * endpoint, kubelet settings and labels: 2-3 KiB) to what we render. 12 KiB leaves that room.
 */
export const USER_DATA_MAX_BYTES = 12 * 1024;

/**
 * Longest boot fill accepted: the NodeClaim is deleted if the node has not registered 15 min after
 * launch, and EC2 boot plus nodeadm and kubelet start take a few minutes of that.
 */
export const MAX_BOOT_FILL_SECONDS = 720;

/** POSIX single quoting: the only character that needs care inside '...' is ' itself. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * The tool as installed on the node: full-line comments dropped (the shebang and shellcheck
 * directives stay) because the user data budget is tight; the commented source is in this repo.
 */
export function embeddedModelsTool(): string {
  const source = readFileSync(MODELS_TOOL_SOURCE, "utf8");
  const kept = source
    .split("\n")
    .filter((line, i) => i === 0 || !/^\s*#/.test(line) || /^\s*# shellcheck /.test(line));
  kept.splice(1, 0, "# comfyui-models (karpenter/userdata/comfyui-models.sh in the repo, comments stripped for user data size)");
  return kept.join("\n");
}

const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION = /^[a-z]{2}(-[a-z]+)+-\d+$/;

function assertInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new Error(`renderGpuUserData: ${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

/** Hot set entries become env-file values split on commas and newlines, and paths on the node. */
function assertHotSetEntry(entry: string): void {
  const problem =
    entry.trim() === "" ? "is empty"
    : /[\u0000-\u001f\u007f,]/.test(entry) ? "contains a comma or control character"
    : entry.startsWith("/") ? "starts with '/'"
    : entry.split("/").some((s) => s === "." || s === "..") ? "has a '.' or '..' segment"
    : !MODEL_FOLDERS.includes(entry.split("/")[0]) ? `is not under a model folder (${MODEL_FOLDERS.join(", ")})`
    : undefined;
  if (problem) throw new Error(`renderGpuUserData: hot set entry ${JSON.stringify(entry)} ${problem}`);
}

function validate(args: GpuUserDataArgs): void {
  if (!BUCKET_NAME.test(args.modelsBucket)) {
    throw new Error(`renderGpuUserData: modelsBucket ${JSON.stringify(args.modelsBucket)} is not an S3 bucket name`);
  }
  if (!REGION.test(args.region)) {
    throw new Error(`renderGpuUserData: region ${JSON.stringify(args.region)} is not an AWS region`);
  }
  args.hotSet.forEach(assertHotSetEntry);
  assertInteger("parallel", args.parallel, 1, 64);
  assertInteger("bootFillSeconds", args.bootFillSeconds, 1, MAX_BOOT_FILL_SECONDS);
  assertInteger("reserveGb", args.reserveGb, 0, 100_000);
}

/** Base64 lines the width `base64` itself writes, so the heredoc stays readable in the console. */
function base64Lines(data: Buffer): string {
  return (data.toString("base64").match(/.{1,76}/g) ?? []).join("\n");
}

// MODEL_FOLDERS is left to the tool's default (the test pins it to nodeContract.ts): 240 bytes saved.
function envFile(args: GpuUserDataArgs): string {
  const values: [string, string][] = [
    ["MODELS_BUCKET", args.modelsBucket],
    ["AWS_REGION", args.region],
    ["MODELS_DIR", NODE_MODELS_DIR],
    ["STAGING_DIR", NODE_MODELS_STAGING_DIR],
    ["STATE_DIR", NODE_MODELS_STATE_DIR],
    ["HOT_SET", args.hotSet.join(",")],
    ["PARALLEL", String(args.parallel)],
    ["RESERVE_GB", String(args.reserveGb)],
  ];
  return values.map(([k, v]) => `${k}=${shellQuote(v)}`).join("\n");
}

function restUnit(): string {
  return `[Unit]
Description=Copy the rest of the ComfyUI models to local NVMe (comfyui-models)
Wants=network-online.target
After=network-online.target nodeadm-run.service
RequiresMountsFor=${NODE_DISK_MOUNT}

[Service]
Type=oneshot
TimeoutStartSec=infinity
Nice=10
Environment=BOOT_FILL_SECONDS=0
ExecStart=-${NODE_MODELS_TOOL} fill-hot
ExecStart=${NODE_MODELS_TOOL} fill-rest

[Install]
WantedBy=multi-user.target`;
}

/** The text/x-shellscript part on its own (what shellcheck sees in the tests). */
export function renderGpuUserDataScript(args: GpuUserDataArgs): string {
  validate(args);
  const tool = Buffer.from(embeddedModelsTool(), "utf8");
  const toolSha256 = createHash("sha256").update(tool).digest("hex");
  // gzip without a timestamp is deterministic: the same tool renders the same user data, so a
  // preview only shows a launch template change (and node drift) when the tool really changed.
  const toolGz = base64Lines(gzipSync(tool, { level: 9 }));
  // Comments live here rather than in the rendered script: every byte counts against the budget.
  const lines = [
    `#!/bin/bash`,
    `# comfyui-models boot fill, rendered by karpenter/userdata/gpuUserData.ts`,
    `set -Eeuo pipefail`,
    `readonly DISK=${NODE_DISK_MOUNT} TOOL=${NODE_MODELS_TOOL} REST_UNIT=${FILL_REST_UNIT}`,
    `readonly FAILED_MARKER=${BOOT_FILL_FAILED_MARKER} FILL_BUDGET=${args.bootFillSeconds} ATTEMPTS=${BOOT_FILL_ATTEMPTS}`,
    `say() {`,
    `  printf 'comfyui-models: %s\\n' "$*" >&2`,
    `  printf 'comfyui-models: %s\\n' "$*" >>/dev/console 2>/dev/null || true`,
    `  logger -t comfyui-models -- "$*" 2>/dev/null || true`,
    `}`,
    // A node without its models must never take ComfyUI pods; Karpenter deletes a node that has not
    // registered within 15 min, so keeping kubelet down bounds the cost of a broken boot.
    // kubelet.service lives in /etc/systemd/system on AL2023, where `systemctl mask` cannot replace
    // it, so a drop-in condition does the blocking and mask is only the fallback for other AMIs.
    `block_node() {`,
    `  trap - ERR`,
    `  say "FATAL: $*"`,
    `  say "keeping kubelet from starting: this node will not register and Karpenter removes it"`,
    `  printf '%s\\n' "$*" >"$FAILED_MARKER" || true`,
    `  mkdir -p /etc/systemd/system/kubelet.service.d || true`,
    `  printf '[Unit]\\nConditionPathExists=!%s\\n' "$FAILED_MARKER" >/etc/systemd/system/kubelet.service.d/99-comfyui-models-block.conf || true`,
    `  systemctl daemon-reload || true`,
    `  systemctl mask --now kubelet.service >/dev/null 2>&1 || systemctl stop kubelet.service >/dev/null 2>&1 || true`,
    `  exit 1`,
    `}`,
    `trap 'block_node "user data failed at line $LINENO"' ERR`,
    // nodeadm sets up the disks only after user data (eks-notes §1); doing it first makes nodeadm's
    // later call a no-op, since setup-local-disks skips an existing array, filesystem and mounts.
    `say "setting up the NVMe instance store as RAID0 at $DISK"`,
    `/usr/bin/setup-local-disks raid0 || block_node "setup-local-disks raid0 failed"`,
    `mountpoint -q "$DISK" || block_node "$DISK is not a mountpoint after setup-local-disks raid0 (no NVMe instance store on this instance type?)"`,
    // Quoted heredocs: nothing in the values or the tool is expanded by this shell.
    `cat >${NODE_MODELS_ENV_FILE} <<'COMFYUI_MODELS_ENV'`,
    envFile(args),
    `COMFYUI_MODELS_ENV`,
    `chmod 0644 ${NODE_MODELS_ENV_FILE}`,
    `mkdir -p "\${TOOL%/*}"`,
    `base64 -d >"$TOOL.gz" <<'COMFYUI_MODELS_TOOL'`,
    toolGz,
    `COMFYUI_MODELS_TOOL`,
    `gzip -dc "$TOOL.gz" >"$TOOL.new"`,
    `rm -f "$TOOL.gz"`,
    `echo "${toolSha256}  $TOOL.new" | sha256sum -c --quiet - || block_node "installed $TOOL does not match the rendered tool"`,
    `chmod 0755 "$TOOL.new"`,
    `mv -f "$TOOL.new" "$TOOL"`,
    `cat >"/etc/systemd/system/$REST_UNIT" <<'COMFYUI_MODELS_UNIT'`,
    restUnit(),
    `COMFYUI_MODELS_UNIT`,
    // One budget across attempts, so retries cannot push registration past Karpenter's timeout.
    // Exit 1 (files failed) and 3 (bucket unreachable) can be transient; 2 and 4 are configuration.
    `deadline=$(($(date +%s) + FILL_BUDGET))`,
    `attempt=0`,
    `while :; do`,
    `  attempt=$((attempt + 1))`,
    `  left=$((deadline - $(date +%s)))`,
    `  if ((left < 1)); then left=1; fi`,
    `  rc=0`,
    `  BOOT_FILL_SECONDS=$left "$TOOL" fill-hot || rc=$?`,
    `  case $rc in`,
    `    0) say "hot models present"; break ;;`,
    `    ${FILL_BUDGET_EXIT_CODE}) say "boot fill budget of \${FILL_BUDGET}s reached; $REST_UNIT finishes the copy"; break ;;`,
    `    ${MODELS_TOOL_EXIT.failed} | ${MODELS_TOOL_EXIT.bucketUnreachable})`,
    `      if ((attempt < ATTEMPTS && $(date +%s) + 10 < deadline)); then`,
    `        say "fill-hot failed (exit $rc), attempt $attempt of $ATTEMPTS; retrying in 10s"`,
    `        sleep 10`,
    `        continue`,
    `      fi`,
    `      block_node "fill-hot failed (exit $rc) after $attempt attempt(s); see the comfyui-models lines above"`,
    `      ;;`,
    `    *) block_node "fill-hot failed (exit $rc), not retried: fix the configuration" ;;`,
    `  esac`,
    `done`,
    // Enabled, so every reboot resumes or re-checks the copy (the tool is idempotent); --no-block,
    // because the unit is ordered after nodeadm-run, which itself waits for this script to end.
    `systemctl daemon-reload`,
    `systemctl enable "$REST_UNIT"`,
    `systemctl start --no-block "$REST_UNIT"`,
    `exit 0`,
  ];
  return lines.join("\n") + "\n";
}

/**
 * MIME multi-part user data with one shell part. Explicit MIME because Karpenter keeps the parts of
 * an archive as they are and only adds its own NodeConfig part (eks-notes §1 says after ours; the
 * karpenter-provider-aws source read for this puts it first: harmless either way, since nodeadm
 * merges NodeConfig parts and cloud-init runs shell parts on its own schedule).
 */
export function renderGpuUserData(args: GpuUserDataArgs): string {
  const script = renderGpuUserDataScript(args);
  if (script.includes(USER_DATA_BOUNDARY)) {
    throw new Error("renderGpuUserData: the MIME boundary occurs in the script");
  }
  const userData = [
    `MIME-Version: 1.0`,
    `Content-Type: multipart/mixed; boundary="${USER_DATA_BOUNDARY}"`,
    ``,
    `--${USER_DATA_BOUNDARY}`,
    // Hot set keys may be non-ASCII (S3 keys are UTF-8).
    `Content-Type: text/x-shellscript; charset="${/^[\x00-\x7f]*$/.test(script) ? "us-ascii" : "utf-8"}"`,
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
