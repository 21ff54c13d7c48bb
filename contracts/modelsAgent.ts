/**
 * The model agent's HTTP API: one module that both sides import — the agent (workload/models/agent/)
 * serves exactly these paths and shapes, the gateway calls them, and the stack's DaemonSet
 * (workload/modelsAgent.ts) takes its port, header and names from here.
 *
 * Dependency-free apart from the key rules the sync Lambda already applies (contracts/modelKeys.ts, itself
 * importing only contracts/node.ts), so a model path the Lambda would refuse is refused here
 * for the same reason, and an image that builds this module needs those two files only.
 *
 * Model paths are bucket keys and paths under the models folder at once: `checkpoints/x.safetensors`,
 * `loras/style/y.safetensors`. Every request names files by such a path; anything else (`..`, a leading
 * `/`, a folder ComfyUI does not know, control or shell characters) is answered 400 `path_refused`
 * before the agent touches the disk or S3.
 */
import { checkKey } from "./modelKeys";
import { MODEL_FOLDERS } from "./node";

export { MODEL_FOLDERS };

/** The agent's one TCP port (API, /metrics, /healthz). The NetworkPolicy admits only gateway pods to it. */
export const AGENT_PORT = 8190;

/**
 * The probes' port: GET /healthz and nothing else, so the NetworkPolicy can admit the node (the
 * kubelet's probes come from the node's address) without admitting anything to the API port.
 */
export const AGENT_HEALTH_PORT = 8191;

/**
 * The shared token the gateway sends on every call except /healthz. Compared in constant time; a
 * missing or wrong token is 401 `unauthorized`. In Kubernetes it comes from the Secret AGENT_NAMES.tokenSecret.
 */
export const TOKEN_HEADER = "x-models-agent-token";

const AGENT_PATHS = {
  /** GET: liveness/readiness (no token; says nothing about the cache). */
  health: "/healthz",
  /** GET: InventoryResponse. */
  inventory: "/v1/inventory",
  /** POST EnsureRequest → EnsureResponse. */
  ensure: "/v1/ensure",
  /** PUT PinsRequest → PinsResponse (replaces the pinned set). */
  pins: "/v1/pins",
  /** PUT HoldRequest / DELETE: `/v1/holds/<id>`. */
  holds: "/v1/holds",
  /** POST ApplyRequest (JSON) or `put<TAB>key` / `delete<TAB>key` lines (text/plain) → ApplyResponse. */
  apply: "/v1/apply",
  /** GET: the counters and gauges in Prometheus text format (also under `metrics` in the inventory). */
  metrics: "/metrics",
} as const;

/** Names the stack, the agent and the gateway agree on. */
export const AGENT_NAMES = {
  /** DaemonSet, ServiceAccount and headless Service (its EndpointSlices give each agent's pod IP and nodeName). */
  agent: "comfyui-models-agent",
  /** Secret with the shared token; the gateway's Deployment reads the same Secret. */
  tokenSecret: "comfyui-models-agent-token",
  tokenSecretKey: "token",
  /** Env var the agent (and the gateway) read the token from. */
  tokenEnv: "MODELS_AGENT_TOKEN",
} as const;

/** Labels of the agent's pods (the NetworkPolicy and the headless Service select them). */
export const AGENT_LABELS = { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "models-agent" } as const;

/**
 * The agent's private folder inside the models folder: staging (partial downloads), its index and the
 * apply socket. Inside, not beside, the models folder so that the final rename stays on one mount
 * (rename(2) across two bind mounts fails with EXDEV even on one filesystem) while the agent's
 * hostPath is only the models folder, not the whole NVMe array. Created mode 0700 and owned by root, so
 * ComfyUI (uid 1000, models mounted read-only) cannot even list it; ComfyUI never looks at the models
 * root itself, only at its model folders (folder_paths.py).
 */
const AGENT_PRIVATE_DIR = ".comfyui-agent";
/** The Unix socket the node's SSM command reaches the agent on (apply, inventory; no token: root-only folder). */
const AGENT_SOCKET_NAME = "agent.sock";

// ---- model paths ---------------------------------------------------------------------------

export type PathCheck = { ok: true; path: string; folder: string } | { ok: false; path: string; reason: string };

/**
 * A model file path the agent may read, write or delete. The same rules as the sync Lambda's keys
 * (contracts/modelKeys.ts checkKey): relative, no `.`/`..`/empty segment, no control or shell characters, under
 * one of ComfyUI's model folders, ≤ 1024 bytes; a folder (`loras/`) is not a file.
 */
export function checkModelPath(path: unknown): PathCheck {
  if (typeof path !== "string") return { ok: false, path: String(path), reason: "a model path must be a string" };
  const c = checkKey(path);
  if (c.kind === "valid") return { ok: true, path, folder: path.split("/")[0] };
  if (c.kind === "ignored") return { ok: false, path, reason: "names a folder, not a file" };
  return { ok: false, path, reason: `${c.reason}: ${c.detail}` };
}

/**
 * A pin entry: a file path, or a whole model folder or subfolder written with a trailing `/`
 * (`loras/`, `loras/styles/`). A bare prefix (`clip`) is not accepted: it would also match `clip_vision/`.
 */
export function checkPinEntry(entry: unknown): PathCheck {
  if (typeof entry === "string" && entry.endsWith("/")) {
    const inner = entry.slice(0, -1);
    if (MODEL_FOLDERS.includes(inner)) return { ok: true, path: entry, folder: inner };
    const c = checkModelPath(inner);
    return c.ok ? { ok: true, path: entry, folder: c.folder } : { ok: false, path: entry, reason: c.reason };
  }
  return checkModelPath(entry);
}

/**
 * A pin entry as people write it in the stack's `modelsHotSet`: a bare model folder (`loras`) means
 * the folder (`loras/`); anything else is taken as written and then checked with checkPinEntry.
 */
export function normalizePinEntry(entry: string): string {
  return MODEL_FOLDERS.includes(entry) ? `${entry}/` : entry;
}

/** Whether a pin entry (file or folder ending in `/`) covers a model path. */
export function pinCovers(entry: string, path: string): boolean {
  return entry.endsWith("/") ? path.startsWith(entry) : path === entry;
}

// ---- errors ---------------------------------------------------------------------------------

/**
 * Every error the agent answers, with its HTTP status. A prompt that fails on one of these shows the
 * message in its history; `retryable` says whether the gateway may try again (elsewhere or later).
 */
export const AGENT_ERRORS = {
  bad_request: { status: 400, retryable: false, doc: "malformed body or parameters" },
  path_refused: { status: 400, retryable: false, doc: "a path outside the model folders (.., absolute, unknown folder, …)" },
  unauthorized: { status: 401, retryable: false, doc: "missing or wrong token" },
  object_denied: { status: 403, retryable: false, doc: "S3 refused to read the object (AccessDenied)" },
  object_missing: { status: 404, retryable: false, doc: "the object is not in the models bucket" },
  object_changed: { status: 409, retryable: true, doc: "the object was replaced during the download; fetch again" },
  too_large_for_cache: { status: 507, retryable: false, doc: "the file is larger than this node's whole model cache" },
  no_space: { status: 507, retryable: true, doc: "the cache is full of pinned files and files that running or buffered prompts hold" },
  fetch_failed: { status: 502, retryable: true, doc: "S3 did not deliver the object after retries (network, 5xx, bucket unreachable)" },
  verify_failed: { status: 502, retryable: true, doc: "the downloaded bytes do not match the object's size or checksum" },
  shutting_down: { status: 503, retryable: true, doc: "the agent is stopping" },
} as const;

export type AgentErrorCode = keyof typeof AGENT_ERRORS;

/** The body of every non-2xx answer (ensure and apply add their per-file results beside it). */
export interface AgentErrorBody {
  error: {
    code: AgentErrorCode;
    /** One line for a person, naming the file and the cause. */
    message: string;
    /** The model path concerned, when there is one. */
    path?: string;
    retryable: boolean;
  };
}

// ---- inventory ------------------------------------------------------------------------------

export interface InventoryFile {
  path: string;
  bytes: number;
  /** The S3 ETag the file was fetched at; absent for a file found on disk that the agent did not fetch. */
  etag?: string;
  /** How the bytes were checked: `md5` (single-part ETag), `multipart-md5` (per-part ETag), `size` (size and an unchanged ETag only), `none` (found on disk). */
  verified: "md5" | "multipart-md5" | "size" | "none";
  pinned: boolean;
  /** A live hold names it (a running or buffered prompt needs it). */
  held: boolean;
  /** Epoch ms of the last ensure that named it (LRU order). */
  lastUsed: number;
}

export interface InventoryFetch {
  path: string;
  bytes: number;
  received: number;
  startedAt: number;
  /**
   * `prompt`: an ensure asked for it (a prompt waits, or will: the gateway's prefetch); `background`: pins
   * and bucket changes. While a prompt's download runs, background ones open no new range and pinned files
   * not yet started wait (agent/fetcher.ts Semaphore).
   */
  priority: "prompt" | "background";
}

export interface InventoryHold {
  id: string;
  files: string[];
  expiresAt: number;
}

export interface AgentMetrics {
  /** Downloads started / completed / failed. */
  fetches: number;
  fetchesCompleted: number;
  fetchesFailed: number;
  /** Bytes written into model folders by completed downloads. */
  bytesFetched: number;
  /** Files an ensure found present / had to fetch. */
  hits: number;
  misses: number;
  /** Files removed to make room, and their bytes. */
  evictions: number;
  evictedBytes: number;
  /** Apply lines handled, and those that replaced or removed a local file. */
  applied: number;
  appliedChanges: number;
}

export interface InventoryResponse {
  /** Complete files in the model folders, by path. */
  files: InventoryFile[];
  /** Sum of `files[].bytes`. */
  usedBytes: number;
  /** The configured quota (--cache-gb), bytes. */
  quotaBytes: number;
  /** What the cache may hold now: the quota, or less when the filesystem's free space above its reserve is smaller. */
  capacityBytes: number;
  /** Free bytes of the filesystem (statfs). */
  freeBytes: number;
  fetching: InventoryFetch[];
  pins: string[];
  holds: InventoryHold[];
  metrics: AgentMetrics;
}

// ---- ensure ---------------------------------------------------------------------------------

export interface HoldSpec {
  /** The caller's id, e.g. the prompt id; a later PUT or ensure with the same id replaces it. */
  id: string;
  /** The hold expires after this many seconds unless renewed (a crashed gateway cannot pin the cache forever). */
  ttlSeconds: number;
}

export interface EnsureRequest {
  files: string[];
  /** Hold the files for a prompt: taken before any fetch, so they cannot evict one another. */
  hold?: HoldSpec;
  /** false: start the fetches and answer 202 at once (poll the inventory's `fetching`). @defaultValue true */
  wait?: boolean;
}

export type EnsureFileResult =
  | { path: string; status: "present"; bytes: number }
  | { path: string; status: "fetched"; bytes: number; seconds: number }
  | { path: string; status: "fetching" }
  | { path: string; status: "failed"; code: AgentErrorCode; message: string };

export interface EnsureResponse {
  files: EnsureFileResult[];
  /** Set when a file failed; the HTTP status is that error's. */
  error?: AgentErrorBody["error"];
}

// ---- pins, holds ----------------------------------------------------------------------------

export interface PinsRequest {
  /** The whole pinned set: file paths and folders ending in `/`. Missing pinned files are fetched at once. */
  entries: string[];
}

export interface PinsResponse {
  entries: string[];
  /** Pinned files being fetched because of this request. */
  fetching: string[];
}

export interface HoldRequest {
  files: string[];
  ttlSeconds: number;
}

/** Longest hold a caller may ask for (a buffered prompt waits minutes at most; renewals extend it). */
export const MAX_HOLD_SECONDS = 3600;

// ---- apply ----------------------------------------------------------------------------------

export interface ApplyChange {
  action: "put" | "delete";
  key: string;
}

export interface ApplyRequest {
  changes: ApplyChange[];
}

/**
 * What happened to one key. The agent converges each key to what the bucket holds now rather than
 * replaying the event (SQS standard queues reorder and redeliver): `replaced` (a held file had a new
 * ETag), `unchanged`, `fetched` (pinned and new), `not-cached` (a new object nobody pinned: fetched
 * when a prompt needs it), `removed` (gone from the bucket), `absent` (gone, and not here), `failed`.
 */
export interface ApplyResult {
  action: "put" | "delete";
  key: string;
  outcome: "replaced" | "unchanged" | "fetched" | "not-cached" | "removed" | "absent" | "failed";
  code?: AgentErrorCode;
  message?: string;
}

export interface ApplyResponse {
  results: ApplyResult[];
  failed: number;
  error?: AgentErrorBody["error"];
}

/**
 * Parses the change lines the sync Lambda sends (sync/command.ts changeLines: `put<TAB>key` or
 * `delete<TAB>key`, one per line). Throws with the line number on anything else.
 */
export function parseChangeLines(text: string): ApplyChange[] {
  const out: ApplyChange[] = [];
  text.split("\n").forEach((line, i) => {
    if (line === "") return;
    const tab = line.indexOf("\t");
    const action = tab < 0 ? "" : line.slice(0, tab);
    if (action !== "put" && action !== "delete") throw new Error(`line ${i + 1}: expected put<TAB>key or delete<TAB>key`);
    out.push({ action, key: line.slice(tab + 1) });
  });
  return out;
}

/**
 * The shell command the sync Lambda's SSM Run Command can send to a node for a batch of change lines
 * already base64-encoded (as sync/command.ts does today for the bash tool): root on the node reaches
 * the agent through its Unix socket in the models folder (curl ships in the AL2023 AMI as curl-minimal);
 * `--fail-with-body` makes a failed key a failed invocation, which the Lambda retries.
 */
export function nodeApplyCommand(modelsDir: string, payloadBase64: string): string {
  if (!/^[A-Za-z0-9+/=]*$/.test(payloadBase64)) throw new Error("payload is not base64");
  if (!/^\/[A-Za-z0-9._/-]+$/.test(modelsDir)) throw new Error("models dir must be an absolute plain path");
  const socket = `${modelsDir}/${AGENT_PRIVATE_DIR}/${AGENT_SOCKET_NAME}`;
  return `printf '%s' '${payloadBase64}' | base64 -d | curl -sS --fail-with-body --max-time 900 --unix-socket ${socket} -H 'content-type: text/plain' --data-binary @- http://agent${AGENT_PATHS.apply}`;
}

// Exported as a list, not `export const`: TypeScript compiles in-module uses of an `export const` to
// `exports.X`, which Pulumi's closure serialization of the sync Lambda (it captures nodeApplyCommand)
// would turn into the Lambda module's own, empty exports (test/sync/handler.test.ts checks it).
export { AGENT_PATHS, AGENT_PRIVATE_DIR, AGENT_SOCKET_NAME };
