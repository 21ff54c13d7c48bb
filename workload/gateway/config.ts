/**
 * The gateway's configuration, parsed once at the process edge from flags and env (flags win), with every
 * error reported together. See README.md for the table this implements.
 */
import { COLD_START_BUDGET_SECONDS } from "../../observability/metrics";

export interface GatewayConfig {
  readonly mode: "local" | "kubernetes";
  readonly port: number;
  /** The internal port: probes, KEDA's figure, the drain hook, the replica link (never routed by the Ingress). */
  readonly adminPort: number;
  readonly host: string;
  /** This replica's address as other replicas reach it (the pod IP); the Lease carries it for followers. */
  readonly podIp?: string;
  readonly comfyuiUrls: readonly string[];
  readonly dataDir: string;
  readonly table: string;
  readonly region?: string;
  readonly outputsBucket?: string;
  readonly outputsPrefix: string;
  readonly inputsBucket?: string;
  readonly inputsPrefix: string;
  readonly userdataBucket?: string;
  readonly namespace?: string;
  readonly podName: string;
  readonly comfyuiService: string;
  readonly comfyuiPortName: string;
  readonly leaseName: string;
  /** Leader election (client-go's defaults): the Lease's validity, the leader's renew deadline, the retry period. */
  readonly leaseSeconds: number;
  readonly leaseRenewDeadlineSeconds: number;
  readonly leaseRetrySeconds: number;
  readonly maxAttempts: number;
  readonly startupDeadlineSeconds: number;
  readonly stallSeconds: number;
  readonly orphanSeconds: number;
  readonly maxUploadMb: number;
  /** Memory budget of open prompts' bodies on the leader (the rest stay in the store). */
  readonly promptCacheMb: number;
  readonly historyTtlDays: number;
  readonly wsPingSeconds: number;
  readonly wsKeepaliveSeconds: number;
  readonly logLevel: string;
  /** The ClusterName dimension of the gateway's metrics. */
  readonly clusterName: string;
  /** CloudWatch Logs group for the EMF lines; none: no metrics. */
  readonly metricsLogGroup?: string;
  readonly metricsIntervalSeconds: number;
  /** What the UI promises for a GPU start until the gateway has measured a few. */
  readonly coldStartBudgetSeconds: number;
}

export class ConfigError extends Error {
  readonly code = "GW_ERR_CONFIG";
  constructor(readonly problems: string[]) {
    super(`invalid gateway configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

const FLAGS: Record<string, string> = {
  "--port": "GATEWAY_PORT", "--admin-port": "GATEWAY_ADMIN_PORT", "--host": "GATEWAY_HOST", "--data-dir": "GATEWAY_DATA_DIR", "--max-attempts": "GATEWAY_MAX_ATTEMPTS",
  "--startup-deadline": "GATEWAY_STARTUP_DEADLINE_SECONDS", "--max-upload-mb": "GATEWAY_MAX_UPLOAD_MB", "--stall-seconds": "GATEWAY_STALL_SECONDS", "--orphan-seconds": "GATEWAY_ORPHAN_SECONDS",
  "--ws-keepalive": "GATEWAY_WS_KEEPALIVE_SECONDS", "--ws-ping": "GATEWAY_WS_PING_SECONDS", "--log-level": "GATEWAY_LOG_LEVEL",
  "--cluster-name": "GATEWAY_CLUSTER_NAME", "--metrics-log-group": "GATEWAY_METRICS_LOG_GROUP", "--cold-start-budget": "GATEWAY_COLD_START_BUDGET_SECONDS",
};

export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): GatewayConfig {
  const problems: string[] = [];
  const v: Record<string, string | undefined> = { ...env };
  const urls: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const value = inline ?? argv[i + 1];
    if (flag === "--comfyui" || FLAGS[flag]) {
      if (value === undefined || (inline === undefined && value.startsWith("--"))) {
        problems.push(`${flag} needs a value`);
        continue;
      }
      if (inline === undefined) i++;
      if (flag === "--comfyui") urls.push(value);
      else v[FLAGS[flag]] = value;
    } else problems.push(`unknown argument ${a}`);
  }
  if (urls.length === 0 && env.GATEWAY_COMFYUI_URLS) urls.push(...env.GATEWAY_COMFYUI_URLS.split(",").map((s) => s.trim()).filter(Boolean));
  for (const u of urls) {
    try {
      const p = new URL(u);
      if (p.protocol !== "http:" && p.protocol !== "https:") problems.push(`--comfyui ${u}: must be http(s)`);
    } catch {
      problems.push(`--comfyui ${u}: not a URL`);
    }
  }
  const mode = (v.GATEWAY_MODE ?? (env.KUBERNETES_SERVICE_HOST && urls.length === 0 ? "kubernetes" : "local")) as GatewayConfig["mode"];
  if (mode !== "local" && mode !== "kubernetes") problems.push(`GATEWAY_MODE must be local or kubernetes, not ${String(mode)}`);
  const int = (name: string, def: number, min: number, max: number) => {
    const raw = v[name];
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) {
      problems.push(`${name} must be a number in ${min}…${max}, got ${JSON.stringify(raw)}`);
      return def;
    }
    return n;
  };
  const required = (name: string) => {
    if (mode === "kubernetes" && !v[name]) problems.push(`${name} is required in kubernetes mode`);
    return v[name];
  };
  if (mode === "local" && urls.length === 0) problems.push("local mode needs at least one --comfyui URL (or GATEWAY_COMFYUI_URLS)");
  const cfg: GatewayConfig = {
    mode,
    port: int("GATEWAY_PORT", 8188, 0, 65535),
    adminPort: int("GATEWAY_ADMIN_PORT", mode === "kubernetes" ? 8189 : 0, 0, 65535),
    host: v.GATEWAY_HOST ?? (mode === "kubernetes" ? "0.0.0.0" : "127.0.0.1"),
    podIp: mode === "kubernetes" ? required("POD_IP") : v.POD_IP,
    comfyuiUrls: urls.map((u) => u.replace(/\/$/, "")),
    dataDir: v.GATEWAY_DATA_DIR ?? "./.gateway-data",
    table: (mode === "kubernetes" ? required("GATEWAY_TABLE") : v.GATEWAY_TABLE) ?? "comfyui-gateway",
    region: mode === "kubernetes" ? required("AWS_REGION") : v.AWS_REGION,
    outputsBucket: required("GATEWAY_OUTPUTS_BUCKET"),
    outputsPrefix: v.GATEWAY_OUTPUTS_PREFIX ?? "gateway/",
    inputsBucket: required("GATEWAY_INPUTS_BUCKET"),
    inputsPrefix: v.GATEWAY_INPUTS_PREFIX ?? "",
    userdataBucket: required("GATEWAY_USERDATA_BUCKET"),
    namespace: required("POD_NAMESPACE"),
    podName: v.POD_NAME ?? v.HOSTNAME ?? "gateway",
    comfyuiService: v.GATEWAY_COMFYUI_SERVICE ?? "comfyui-queue",
    comfyuiPortName: v.GATEWAY_COMFYUI_PORT_NAME ?? "http",
    leaseName: v.GATEWAY_LEASE_NAME ?? "comfyui-gateway",
    leaseSeconds: int("GATEWAY_LEASE_SECONDS", 15, 1, 300),
    leaseRenewDeadlineSeconds: int("GATEWAY_LEASE_RENEW_DEADLINE_SECONDS", 10, 0.5, 300),
    leaseRetrySeconds: int("GATEWAY_LEASE_RETRY_SECONDS", 2, 0.1, 60),
    maxAttempts: int("GATEWAY_MAX_ATTEMPTS", 3, 1, 100),
    startupDeadlineSeconds: int("GATEWAY_STARTUP_DEADLINE_SECONDS", 900, 0.1, 86400),
    stallSeconds: int("GATEWAY_STALL_SECONDS", 900, 0.1, 86400),
    orphanSeconds: int("GATEWAY_ORPHAN_SECONDS", 30, 0.1, 86400),
    maxUploadMb: int("GATEWAY_MAX_UPLOAD_MB", 100, 0.001, 10240),
    promptCacheMb: int("GATEWAY_PROMPT_CACHE_MB", 64, 1, 65536),
    historyTtlDays: int("GATEWAY_HISTORY_TTL_DAYS", 30, 1, 3650),
    wsPingSeconds: int("GATEWAY_WS_PING_SECONDS", 20, 0.05, 300),
    wsKeepaliveSeconds: int("GATEWAY_WS_KEEPALIVE_SECONDS", 5, 0.05, 300),
    logLevel: v.GATEWAY_LOG_LEVEL ?? "info",
    clusterName: (mode === "kubernetes" ? required("GATEWAY_CLUSTER_NAME") : v.GATEWAY_CLUSTER_NAME) ?? "local",
    metricsLogGroup: v.GATEWAY_METRICS_LOG_GROUP || undefined,
    metricsIntervalSeconds: int("GATEWAY_METRICS_SECONDS", 60, 1, 3600),
    coldStartBudgetSeconds: int("GATEWAY_COLD_START_BUDGET_SECONDS", COLD_START_BUDGET_SECONDS, 1, 86400),
  };
  if (cfg.metricsLogGroup !== undefined && !/^[.\-_/#A-Za-z0-9]{1,512}$/.test(cfg.metricsLogGroup)) {
    problems.push(`GATEWAY_METRICS_LOG_GROUP ${JSON.stringify(cfg.metricsLogGroup)} is not a CloudWatch Logs group name (1-512 of a-z A-Z 0-9 . - _ / #)`);
  }
  if (cfg.leaseRenewDeadlineSeconds >= cfg.leaseSeconds) problems.push(`GATEWAY_LEASE_RENEW_DEADLINE_SECONDS (${cfg.leaseRenewDeadlineSeconds}) must be shorter than GATEWAY_LEASE_SECONDS (${cfg.leaseSeconds}): a leader must stop before another may take over`);
  if (cfg.leaseRetrySeconds >= cfg.leaseRenewDeadlineSeconds) problems.push(`GATEWAY_LEASE_RETRY_SECONDS (${cfg.leaseRetrySeconds}) must be shorter than GATEWAY_LEASE_RENEW_DEADLINE_SECONDS (${cfg.leaseRenewDeadlineSeconds})`);
  if (cfg.port !== 0 && cfg.port === cfg.adminPort) problems.push(`GATEWAY_PORT and GATEWAY_ADMIN_PORT must differ (both ${cfg.port})`);
  if (problems.length) throw new ConfigError(problems);
  return Object.freeze(cfg);
}
