/**
 * The gateway's contract with whoever runs it: ports, paths, key prefixes, names, and every setting (env
 * var, flag, default, parser, doc line) in one table. Dependency-free: the gateway's loader (config.ts)
 * parses it, the stack's Deployment (workload/gatewayDeployment.ts) writes its env from it, and a test
 * renders the Deployment and loads the result with the gateway's own loader.
 */

export const PORTS = {
  /** ComfyUI's protocol: what the ALB reaches. */
  public: 8188,
  /** Probes, KEDA's figure, the pod view, the drain hook, the replica link; the Ingress never routes it. */
  internal: 8189,
} as const;

export const PATHS = {
  health: "/gateway/health",
  ready: "/gateway/ready",
  scaling: "/gateway/scaling",
  pods: "/gateway/pods",
  drain: "/gateway/drain",
  link: "/gateway/link",
  /** The ALB's health check, on the public port. */
  publicHealth: "/healthz",
} as const;

/** The JSON field of /gateway/scaling that KEDA's metrics-api scaler reads. */
export const SCALING_FIELD = "prompts";

/** Key prefixes the gateway writes: in the outputs bucket, and in the user-state bucket. */
export const PREFIXES = { outputs: "gateway/", userdata: "user/" } as const;

/** Names the stack and the gateway agree on. */
export const NAMES = {
  /** The gateway's Deployment, ServiceAccount, Role, Service and Lease. */
  gateway: "comfyui-gateway",
  /** The Service over the gateway pods' internal port for KEDA (publishes not-ready addresses). */
  metricsService: "comfyui-gateway-metrics",
  /** The Service whose EndpointSlices list the ComfyUI pods. */
  comfyuiService: "comfyui-queue",
} as const;

/**
 * The documented wake budget: waiting prompt → first image on a fresh GPU node, the upper end of the
 * "now" total in docs/scaling.md's phase budget (≈ 3.7 min, derived there; a test reads the table). The
 * gateway promises it until it has measured cold starts of its own, and the "GPU pods pending" alarm
 * (observability/alarms.ts) waits this long before paging.
 */
export const COLD_START_BUDGET_SECONDS = 222;

export type Mode = "local" | "kubernetes";

type Kind =
  | { type: "number"; min: number; max: number }
  | { type: "text"; pattern?: RegExp; patternDoc?: string }
  | { type: "choice"; of: readonly string[] };

interface Setting {
  readonly env: string;
  readonly flag?: string;
  readonly kind: Kind;
  /** Default per mode; undefined = none. */
  readonly default?: number | string | { readonly local?: number | string; readonly kubernetes?: number | string };
  /** Must be given in this mode. */
  readonly requiredIn?: Mode;
  readonly doc: string;
}

const num = (min: number, max: number) => ({ type: "number" as const, min, max });
const text = { type: "text" as const };

/** Every setting, once. Flags win over env; all problems are reported together. */
export const SETTINGS = {
  port: { env: "GATEWAY_PORT", flag: "--port", kind: num(0, 65535), default: PORTS.public, doc: "listen port (ComfyUI's protocol)" },
  adminPort: { env: "GATEWAY_ADMIN_PORT", flag: "--admin-port", kind: num(0, 65535), default: { local: 0, kubernetes: PORTS.internal }, doc: "the internal port (`0` = any free port)" },
  host: { env: "GATEWAY_HOST", flag: "--host", kind: text, default: { local: "127.0.0.1", kubernetes: "0.0.0.0" }, doc: "listen address" },
  podIp: { env: "POD_IP", kind: text, requiredIn: "kubernetes", doc: "this replica's address for the other replicas (written on the Lease while it leads)" },
  dataDir: { env: "GATEWAY_DATA_DIR", flag: "--data-dir", kind: text, default: "./.gateway-data", doc: "local mode: embedded DynamoDB-compatible store under `DIR/db`, objects under `DIR/objects/…`" },
  table: { env: "GATEWAY_TABLE", kind: text, default: { local: "comfyui-gateway" }, requiredIn: "kubernetes", doc: "DynamoDB table name" },
  region: { env: "AWS_REGION", kind: text, requiredIn: "kubernetes", doc: "region of table and buckets (credentials: the default chain, i.e. EKS Pod Identity)" },
  outputsBucket: { env: "GATEWAY_OUTPUTS_BUCKET", kind: text, requiredIn: "kubernetes", doc: "bucket for copied outputs, temp previews, caches and metrics history" },
  outputsPrefix: { env: "GATEWAY_OUTPUTS_PREFIX", kind: text, default: PREFIXES.outputs, doc: "key prefix in it" },
  inputsBucket: { env: "GATEWAY_INPUTS_BUCKET", kind: text, requiredIn: "kubernetes", doc: "the bucket ComfyUI pods mount as their input folder" },
  inputsPrefix: { env: "GATEWAY_INPUTS_PREFIX", kind: text, default: "", doc: "the prefix that the pods' input mount shows as `/app/ComfyUI/input`" },
  userdataBucket: { env: "GATEWAY_USERDATA_BUCKET", kind: text, requiredIn: "kubernetes", doc: "**versioned** bucket for user state (saved workflows, settings)" },
  namespace: { env: "POD_NAMESPACE", kind: text, requiredIn: "kubernetes", doc: "namespace of the Lease, the ComfyUI Service and pods" },
  comfyuiService: { env: "GATEWAY_COMFYUI_SERVICE", kind: text, default: NAMES.comfyuiService, doc: "Service whose EndpointSlices list the ComfyUI pods" },
  comfyuiPortName: { env: "GATEWAY_COMFYUI_PORT_NAME", kind: text, default: "http", doc: "EndpointSlice port name to use" },
  leaseName: { env: "GATEWAY_LEASE_NAME", kind: text, default: NAMES.gateway, doc: "Lease name" },
  leaseSeconds: { env: "GATEWAY_LEASE_SECONDS", kind: num(1, 300), default: 15, doc: "how long a leader's record is valid for the others without a renewal" },
  leaseRenewDeadlineSeconds: { env: "GATEWAY_LEASE_RENEW_DEADLINE_SECONDS", kind: num(0.5, 300), default: 10, doc: "a leader that has not renewed for this long stops leading (shorter than the lease)" },
  leaseRetrySeconds: { env: "GATEWAY_LEASE_RETRY_SECONDS", kind: num(0.1, 60), default: 2, doc: "time between renewals / acquisition attempts (shorter than the deadline)" },
  maxAttempts: { env: "GATEWAY_MAX_ATTEMPTS", flag: "--max-attempts", kind: num(1, 100), default: 3, doc: "runs of one prompt (pod died, spot, scale-in, stall) before it fails with the reason in history" },
  startupDeadlineSeconds: { env: "GATEWAY_STARTUP_DEADLINE_SECONDS", flag: "--startup-deadline", kind: num(0.1, 86400), default: 900, doc: "a prompt waiting this long while **no** pod became Ready since it was queued fails" },
  stallSeconds: { env: "GATEWAY_STALL_SECONDS", flag: "--stall-seconds", kind: num(0.1, 86400), default: 900, doc: "a pod holding prompts with no sign of progress for this long is hung: its prompts run elsewhere, it gets no work until its queue is idle" },
  orphanSeconds: { env: "GATEWAY_ORPHAN_SECONDS", flag: "--orphan-seconds", kind: num(0.1, 86400), default: 30, doc: "a prompt the store says runs on a pod that is not among the pods runs again elsewhere after this long" },
  maxUploadMb: { env: "GATEWAY_MAX_UPLOAD_MB", flag: "--max-upload-mb", kind: num(0.001, 10240), default: 100, doc: "body limit of every request (413 above), as ComfyUI's `--max-upload-size`" },
  promptCacheMb: { env: "GATEWAY_PROMPT_CACHE_MB", kind: num(1, 65536), default: 64, doc: "memory for open prompts' bodies on the leader (the rest stay in the store)" },
  historyTtlDays: { env: "GATEWAY_HISTORY_TTL_DAYS", kind: num(1, 3650), default: 30, doc: "DynamoDB TTL of finished prompts (history entries, idempotency records)" },
  wsPingSeconds: { env: "GATEWAY_WS_PING_SECONDS", flag: "--ws-ping", kind: num(0.05, 300), default: 20, doc: "WebSocket ping frames to every client (CloudFront drops sockets idle for 10 min)" },
  wsKeepaliveSeconds: { env: "GATEWAY_WS_KEEPALIVE_SECONDS", flag: "--ws-keepalive", kind: num(0.05, 300), default: 5, doc: "a `status` message to a client socket that got nothing else for this long" },
  logLevel: { env: "GATEWAY_LOG_LEVEL", flag: "--log-level", kind: { type: "choice" as const, of: ["fatal", "error", "warn", "info", "debug", "trace", "silent"] }, default: "info", doc: "pino level; logs are JSON on stdout, never contain prompt bodies or credentials" },
  clusterName: { env: "GATEWAY_CLUSTER_NAME", flag: "--cluster-name", kind: text, default: { local: "local" }, requiredIn: "kubernetes", doc: "the `ClusterName` dimension of every metric" },
  metricsLogGroup: {
    env: "GATEWAY_METRICS_LOG_GROUP", flag: "--metrics-log-group", kind: { type: "text" as const, pattern: /^[.\-_/#A-Za-z0-9]{1,512}$/, patternDoc: "a CloudWatch Logs group name (1-512 of a-z A-Z 0-9 . - _ / #)" },
    doc: "CloudWatch Logs group for the EMF lines, stream `gateway/<POD_NAME>`; none: no metrics",
  },
  metricsIntervalSeconds: { env: "GATEWAY_METRICS_SECONDS", kind: num(1, 3600), default: 60, doc: "how often the leader writes its snapshot" },
  auth: {
    env: "GATEWAY_AUTH", flag: "--auth", kind: { type: "choice" as const, of: ["none", "keys", "oidc"] }, default: { local: "none", kubernetes: "keys" },
    doc: "who may call: `none` (local mode on loopback only), `keys` (API keys), `oidc` (sign-in with OpenID Connect, and API keys)",
  },
  oidcIssuer: { env: "GATEWAY_OIDC_ISSUER", flag: "--oidc-issuer", kind: text, doc: "the OpenID Connect issuer URL (with `auth=oidc`)" },
  oidcClientId: { env: "GATEWAY_OIDC_CLIENT_ID", flag: "--oidc-client-id", kind: text, doc: "the client id registered at the issuer" },
  oidcClientSecret: { env: "GATEWAY_OIDC_CLIENT_SECRET", kind: text, doc: "its secret, if it has one (from a Kubernetes Secret, never a plain value)" },
  publicUrl: { env: "GATEWAY_PUBLIC_URL", flag: "--public-url", kind: text, doc: "the site's origin as browsers see it (the callback is `<it>/auth/callback`)" },
  oidcFile: { env: "GATEWAY_OIDC_FILE", kind: text, doc: "a JSON file `{issuer, clientId, clientSecret, publicUrl}` read now and every 15 s (a Secret mounted once the stack has made the client)" },
  oidcScopes: { env: "GATEWAY_OIDC_SCOPES", kind: text, default: "openid email profile", doc: "scopes asked for" },
  oidcGroupsClaim: { env: "GATEWAY_OIDC_GROUPS_CLAIM", kind: text, default: "cognito:groups", doc: "the ID token claim listing the user's groups" },
  oidcAdminGroup: { env: "GATEWAY_OIDC_ADMIN_GROUP", kind: text, default: "admin", doc: "members of this group see and act on everyone's work" },
  sessionIdleMinutes: { env: "GATEWAY_SESSION_IDLE_MINUTES", kind: num(5, 43200), default: 480, doc: "a session ends after this long without a request" },
  sessionMaxHours: { env: "GATEWAY_SESSION_MAX_HOURS", kind: num(1, 8760), default: 168, doc: "a session ends this long after sign-in, whatever the activity" },
  sessionRefreshMinutes: { env: "GATEWAY_SESSION_REFRESH_MINUTES", kind: num(0.01, 1440), default: 5, doc: "how often a session asks the IdP again (a user disabled there loses access then)" },
  internalToken: { env: "GATEWAY_INTERNAL_TOKEN", kind: text, requiredIn: "kubernetes", doc: "shared by the replicas (a Kubernetes Secret): the replica link and the leader's internal routes refuse any caller without it" },
  auditLogGroup: {
    env: "GATEWAY_AUDIT_LOG_GROUP", kind: { type: "text" as const, pattern: /^[.\-_/#A-Za-z0-9]{1,512}$/, patternDoc: "a CloudWatch Logs group name" },
    doc: "CloudWatch Logs group of the audit trail (one JSON line per state change), stream `gateway/<POD_NAME>`",
  },
  auditFile: { env: "GATEWAY_AUDIT_FILE", flag: "--audit-file", kind: text, doc: "local mode: the audit trail's file (default `<data dir>/audit.log`)" },
  modelsBucket: { env: "GATEWAY_MODELS_BUCKET", flag: "--models-bucket", kind: text, doc: "the models bucket, the studio's whole model library: every loader lists it, prompts are routed and their files fetched by the nodes' model agents; none: the pods' own model lists" },
  modelsEndpoint: { env: "GATEWAY_MODELS_ENDPOINT", flag: "--models-endpoint", kind: text, doc: "an S3 API other than AWS's for the models bucket (s3rver, MinIO), path-style" },
  modelsListSeconds: { env: "GATEWAY_MODELS_LIST_SECONDS", flag: "--models-list-seconds", kind: num(1, 3600), default: 15, doc: "how often the models bucket is listed (the library index every replica serves and validates against)" },
  modelsAgentService: { env: "GATEWAY_MODELS_AGENT_SERVICE", kind: text, default: { kubernetes: "comfyui-models-agent" }, doc: "kubernetes: the headless Service whose EndpointSlices give each GPU node's model agent (by node name)" },
  modelsAgentToken: { env: "MODELS_AGENT_TOKEN", kind: text, doc: "the model agents' shared token (the Secret the agents read); local mode: the token `--models-agent` agents were started with, if any" },
  modelRouting: { env: "GATEWAY_MODEL_ROUTING", flag: "--model-routing", kind: { type: "choice" as const, of: ["on", "off"] }, default: "on", doc: "`on`: prompts go to the pod that has their model loaded or cached (with a models bucket); `off`: the emptiest pod (model-blind, for comparison)" },
  modelAffinitySeconds: { env: "GATEWAY_MODEL_AFFINITY_SECONDS", flag: "--model-affinity", kind: num(0, 600), default: 5, doc: "longest a prompt waits for the pod that has its model loaded while another pod could take it" },
  coldStartBudgetSeconds: { env: "GATEWAY_COLD_START_BUDGET_SECONDS", flag: "--cold-start-budget", kind: num(1, 86400), default: COLD_START_BUDGET_SECONDS, doc: "what the UI promises for a GPU start until 3 cold starts are measured (then the median of the last 20)" },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;
type ValueOf<K extends SettingKey> = (typeof SETTINGS)[K]["kind"]["type"] extends "number" ? number : string;
/** Undefined is possible unless the setting has a default in both modes. */
type Absent<S> = S extends { default: number | string }
  ? never
  : S extends { default: { local: unknown; kubernetes: unknown } }
    ? never
    : S extends { default: { local: unknown }; requiredIn: "kubernetes" }
      ? never
      : undefined;

/** The parsed configuration: a value per setting (undefined only where a mode has no default for it). */
export type GatewayConfig = { readonly [K in SettingKey]: ValueOf<K> | Absent<(typeof SETTINGS)[K]> } & {
  readonly mode: Mode;
  /** local mode: the ComfyUI servers (`--comfyui URL`, repeatable; `GATEWAY_COMFYUI_URLS` comma-separated). */
  readonly comfyuiUrls: readonly string[];
  /** local mode: the model agent of each `--comfyui` server's machine (`--models-agent URL` right after it), by index. */
  readonly modelsAgentUrls: readonly (string | undefined)[];
  /** This replica's Lease holder identity (`POD_NAME`, else `HOSTNAME`). */
  readonly podName: string;
};

export class ConfigError extends Error {
  readonly code = "GW_ERR_CONFIG";
  constructor(readonly problems: string[]) {
    super(`invalid gateway configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

function defaultFor(s: Setting, mode: Mode): number | string | undefined {
  const d = s.default;
  if (d === undefined || typeof d !== "object") return d;
  return d[mode];
}

/** Flags and env → configuration (flags win); every problem reported at once. */
export function parseSettings(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): GatewayConfig {
  const problems: string[] = [];
  const table = SETTINGS as Record<string, Setting>;
  const byFlag = new Map(Object.values(table).filter((s) => s.flag).map((s) => [s.flag!, s.env]));
  const v: Record<string, string | undefined> = { ...env };
  const urls: string[] = [];
  const agents: (string | undefined)[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = inline ?? argv[i + 1];
    if (flag === "--comfyui" || flag === "--models-agent" || byFlag.has(flag)) {
      if (value === undefined || (inline === undefined && value.startsWith("--"))) {
        problems.push(`${flag} needs a value`);
        continue;
      }
      if (inline === undefined) i++;
      if (flag === "--comfyui") {
        urls.push(value);
        agents.push(undefined);
      } else if (flag === "--models-agent") {
        // The agent of the machine of the --comfyui just before it (one each).
        if (urls.length === 0 || agents[urls.length - 1] !== undefined) problems.push(`--models-agent ${value}: must follow a --comfyui URL (one agent per ComfyUI)`);
        else agents[urls.length - 1] = value;
      } else v[byFlag.get(flag)!] = value;
    } else problems.push(`unknown argument ${a}`);
  }
  if (urls.length === 0 && env.GATEWAY_COMFYUI_URLS) urls.push(...env.GATEWAY_COMFYUI_URLS.split(",").map((s) => s.trim()).filter(Boolean));
  while (agents.length < urls.length) agents.push(undefined);
  for (const [flag, list] of [["--comfyui", urls], ["--models-agent", agents]] as const) {
    for (const u of list) {
      if (u === undefined) continue;
      try {
        const p = new URL(u);
        if (p.protocol !== "http:" && p.protocol !== "https:") problems.push(`${flag} ${u}: must be http(s)`);
      } catch {
        problems.push(`${flag} ${u}: not a URL`);
      }
    }
  }
  if (agents.some((a) => a !== undefined) && !(v.GATEWAY_MODELS_BUCKET ?? "")) problems.push("--models-agent needs --models-bucket (GATEWAY_MODELS_BUCKET): the agents fetch from it");
  const mode = (v.GATEWAY_MODE ?? (env.KUBERNETES_SERVICE_HOST && urls.length === 0 ? "kubernetes" : "local")) as Mode;
  if (mode !== "local" && mode !== "kubernetes") problems.push(`GATEWAY_MODE must be local or kubernetes, not ${String(mode)}`);
  if (mode === "local" && urls.length === 0) problems.push("local mode needs at least one --comfyui URL (or GATEWAY_COMFYUI_URLS)");

  const out: Record<string, unknown> = { mode, comfyuiUrls: urls.map((u) => u.replace(/\/$/, "")), modelsAgentUrls: agents.map((u) => u?.replace(/\/$/, "")), podName: v.POD_NAME ?? v.HOSTNAME ?? "gateway" };
  for (const [key, s] of Object.entries(table)) {
    const raw = v[s.env];
    const given = raw !== undefined && raw !== "";
    if (!given) {
      if (s.requiredIn === mode) problems.push(`${s.env} is required in ${mode} mode`);
      out[key] = defaultFor(s, mode);
      continue;
    }
    const k = s.kind;
    if (k.type === "number") {
      const n = Number(raw);
      if (!Number.isFinite(n) || n < k.min || n > k.max) problems.push(`${s.env} must be a number in ${k.min}…${k.max}, got ${JSON.stringify(raw)}`);
      out[key] = Number.isFinite(n) ? n : defaultFor(s, mode);
    } else if (k.type === "choice") {
      if (!k.of.includes(raw)) problems.push(`${s.env} must be one of ${k.of.join(", ")}, got ${JSON.stringify(raw)}`);
      out[key] = raw;
    } else {
      if (k.pattern && !k.pattern.test(raw)) problems.push(`${s.env} ${JSON.stringify(raw)} is not ${k.patternDoc}`);
      out[key] = raw;
    }
  }
  const cfg = out as GatewayConfig;
  if (cfg.leaseRenewDeadlineSeconds >= cfg.leaseSeconds) problems.push(`GATEWAY_LEASE_RENEW_DEADLINE_SECONDS (${cfg.leaseRenewDeadlineSeconds}) must be shorter than GATEWAY_LEASE_SECONDS (${cfg.leaseSeconds}): a leader must stop before another may take over`);
  if (cfg.leaseRetrySeconds >= cfg.leaseRenewDeadlineSeconds) problems.push(`GATEWAY_LEASE_RETRY_SECONDS (${cfg.leaseRetrySeconds}) must be shorter than GATEWAY_LEASE_RENEW_DEADLINE_SECONDS (${cfg.leaseRenewDeadlineSeconds})`);
  if (cfg.auth === "none" && !["127.0.0.1", "::1", "localhost"].includes(cfg.host)) problems.push(`GATEWAY_AUTH=none serves without sign-in: only on loopback (GATEWAY_HOST is ${cfg.host}); use keys or oidc`);
  if (cfg.auth === "oidc" && !cfg.oidcFile && !(cfg.oidcIssuer && cfg.oidcClientId && cfg.publicUrl)) problems.push("GATEWAY_AUTH=oidc needs GATEWAY_OIDC_ISSUER, GATEWAY_OIDC_CLIENT_ID and GATEWAY_PUBLIC_URL, or GATEWAY_OIDC_FILE");
  for (const [name, v] of [["GATEWAY_OIDC_ISSUER", cfg.oidcIssuer], ["GATEWAY_PUBLIC_URL", cfg.publicUrl]] as const) {
    if (v === undefined) continue;
    try {
      const u = new URL(v);
      if (u.protocol !== "https:" && !(u.protocol === "http:" && /^(127\.0\.0\.1|localhost|\[::1\]|.*\.localhost)$/.test(u.hostname))) problems.push(`${name} ${v} must be https (http only on loopback)`);
    } catch {
      problems.push(`${name} ${JSON.stringify(v)} is not a URL`);
    }
  }
  if (cfg.port !== 0 && cfg.port === cfg.adminPort) problems.push(`GATEWAY_PORT and GATEWAY_ADMIN_PORT must differ (both ${cfg.port})`);
  if (problems.length) throw new ConfigError(problems);
  return Object.freeze(cfg);
}

/**
 * The env entries of a Deployment from setting values, named by the table (a key that is not a setting
 * does not compile). Values are left as given (they may be Pulumi outputs); the gateway's loader checks them.
 */
export function settingsEnv<V>(values: Partial<Record<SettingKey, V>>): Record<string, V> {
  const out: Record<string, V> = {};
  for (const [k, val] of Object.entries(values) as [SettingKey, V | undefined][]) if (val !== undefined) out[SETTINGS[k].env] = val;
  return out;
}

/** The README's configuration table rows, from the table (a test checks the README holds them). */
export function settingsTableRows(): string[] {
  const fmt = (d: unknown) => (d === undefined ? "—" : d === "" ? "`` (empty)" : `\`${String(d)}\``);
  return Object.values(SETTINGS as Record<string, Setting>).map((s) => {
    const d = s.default;
    const def =
      d !== undefined && typeof d === "object"
        ? (["kubernetes", "local"] as const).map((m) => `${fmt(d[m])} (${m})`).join(", ")
        : fmt(d);
    const req = s.requiredIn ? `; required in ${s.requiredIn}` : "";
    return `| \`${s.env}\` | ${s.flag ? `\`${s.flag}\`` : "—"} | ${def}${req} | ${s.doc} |`;
  });
}
