/**
 * The stack's configuration: read once, validated once, passed into every component.
 * Every problem is reported together, each naming its key, so one `pulumi up` shows them all.
 * Defaults are documented here, in Pulumi.dev.yaml and in the README's config reference.
 */
import * as pulumi from "@pulumi/pulumi";
import { ADDONS, COMFYUI, DEFAULT_KUBERNETES_VERSION, GPU_AMI_ALIAS, judgeKubernetesVersion } from "./versions";
import { amiAliasProblem, durationProblem } from "./karpenter/rules";
import { RETENTION_DAYS } from "./observability";
import { checkPinEntry, normalizePinEntry } from "./workload/models/contract";

export type NatStrategy = "single" | "onePerAz";
export type CapacityType = "spot" | "on-demand";

export interface WorkingHours {
  /** Cron expression (5 fields) when the floor starts, in `timezone`. */
  start: string;
  /** Cron expression when the floor ends. */
  end: string;
  /** IANA time zone of the studio, e.g. Europe/Berlin. */
  timezone: string;
  /** ComfyUI pods kept warm during working hours. */
  replicas: number;
}

export interface StackConfig {
  /** Pulumi project and stack names, used to make physical names unique per stack. */
  project: string;
  stack: string;
  /** AWS region (aws:region). */
  region: string;
  /** EKS Kubernetes version. Default: the newest every pinned component supports (versions.ts). */
  kubernetesVersion: string;
  /** Availability zones used by the VPC (2 or 3). Default 2. */
  availabilityZones: number;
  /** VPC CIDR. Default 10.0.0.0/16. */
  vpcCidr: string;
  /** "single" NAT gateway shared by all AZs (cheaper, default) or "onePerAz" (no cross-AZ dependency). */
  natGateways: NatStrategy;
  /** CIDRs allowed to reach the public Kubernetes API endpoint (IAM authentication still applies). Default ["0.0.0.0/0"]. */
  apiAllowedCidrs: string[];
  /** Instance type of the managed CPU system node group. Default t3a.large. */
  systemNodeInstanceType: string;
  /** Number of system nodes (1–10). Default 2, so controllers survive one node. */
  systemNodeCount: number;
  /**
   * GPU instance types Karpenter may launch: any EC2 type with NVIDIA GPUs and NVMe instance store,
   * checked against EC2's own data at preview (karpenter/gpuTypes.ts).
   */
  gpuInstanceTypes: string[];
  /** Capacity types, preferred spot first. Default ["spot", "on-demand"]. */
  gpuCapacityTypes: CapacityType[];
  /** Maximum GPUs across all GPU nodes: the cost cap. Default 4. */
  gpuLimit: number;
  /** Pinned AL2023 AMI alias for GPU nodes (never @latest). Default al2023@v20260724. */
  gpuAmiAlias: string;
  /** How long an empty GPU node stays before Karpenter removes it. Default "5m". */
  gpuConsolidateAfter: string;
  /** Maximum lifetime of a GPU node (picks up new AMIs). Default "168h". */
  gpuExpireAfter: string;
  /** Root EBS volume of GPU nodes in GiB (OS; images and models live on NVMe). Default 100. */
  gpuRootVolumeGiB: number;
  /**
   * The pinned models, as pin entries (files, folders ending in `/`; a bare folder `loras` is read as
   * `loras/`): copied before a GPU node registers and never evicted from its cache. Default [] (none:
   * every model is fetched when a prompt needs it).
   */
  modelsHotSet: string[];
  /** Time budget of the pinned copy at boot in seconds (60–720; Karpenter gives 15 min to register). Default 600. */
  modelsBootFillSeconds: number;
  /** Parallel file copies of the pinned set at boot. Default 8. */
  modelsParallelTransfers: number;
  /** ComfyUI release tag built into the image. Default v0.3.64. */
  comfyuiVersion: string;
  /** The commit that tag must resolve to (checked during the image build). */
  comfyuiCommit: string;
  /** Keep the buckets (and their data) on `pulumi destroy`. Default true. */
  retainBucketsOnDestroy: boolean;
  /** Days after which generated outputs expire; 0 keeps them forever. Default 0. */
  outputsExpireDays: number;
  /** Days a replaced or deleted model version is kept (models bucket is versioned). Default 30. */
  modelsNoncurrentDays: number;
  /** CloudFront in front of the internal ALB. Default true. When false, reach ComfyUI with kubectl port-forward. */
  edgeEnabled: boolean;
  /**
   * Who signs artists in: "cognito" (default: a user pool of the stack, with its managed login, optionally
   * federated to the studio's IdP) or "oidc" (any OpenID Connect issuer instead).
   */
  signIn: "cognito" | "oidc";
  /** With signIn=oidc: the issuer URL, the client id registered there, and its secret (a Pulumi secret). */
  oidcIssuer: string | undefined;
  oidcClientId: string | undefined;
  oidcClientSecret: pulumi.Output<string> | undefined;
  /** With signIn=cognito: the studio's IdP behind Cognito's login (OIDC or SAML); undefined: Cognito's own users only. */
  cognitoFederation: CognitoFederation | undefined;
  /** Its OIDC client secret (a Pulumi secret). */
  cognitoFederationClientSecret: pulumi.Output<string> | undefined;
  /** Where ComfyUI pods may open connections besides cluster DNS (custom nodes that call APIs). Default [] (none). */
  comfyuiEgressCidrs: string[];
  /** CloudFront price class. Default PriceClass_100. */
  edgePriceClass: "PriceClass_100" | "PriceClass_200" | "PriceClass_All";
  /** Minimum ComfyUI pods outside working hours (0 = scale to zero). Default 0. */
  minReplicas: number;
  /** Maximum ComfyUI pods. Default 4. */
  maxReplicas: number;
  /** Queued + running prompts per pod before scaling out. Default 2. */
  queuePerPod: number;
  /** Idle minutes before scaling to zero. Default 15. */
  idleMinutes: number;
  /** Optional working-hours floor. Default none. */
  workingHours: WorkingHours | undefined;
  /** Seconds a stopping ComfyUI pod may spend finishing its queue. Default 900. */
  drainSeconds: number;
  /** Version of the Mountpoint for S3 CSI EKS add-on. Default: ADDONS.mountpoint in versions.ts. */
  mountpointAddonVersion: string | undefined;
  /** Where the images are built: "aws" (CodeBuild in the stack's region, default) or "local" (Docker here). */
  imageBuild: "aws" | "local";
  /** Addresses the alarm topic mails (each confirms its subscription once). Default []. */
  alertEmails: string[];
  /** Alarm when a day's GPU spend at on-demand prices exceeds this (USD); undefined: no spend alarm. */
  gpuDailyBudgetUsd: number | undefined;
  /** Days CloudWatch Logs keeps the platform's logs. Default 30. */
  logRetentionDays: number;
  /** GPU metrics (NVIDIA DCGM through the CloudWatch agent). Default true. */
  gpuMetrics: boolean;
}

/** The studio's IdP behind Cognito's managed login. */
export type CognitoFederation =
  | { type: "OIDC"; name: string; issuer: string; clientId: string; scopes: string }
  | { type: "SAML"; name: string; metadataUrl: string };

/** Thrown with every problem found, one line each, naming the key. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid stack configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

/** Raw values as Pulumi config holds them (strings; lists and objects as JSON). */
export type RawConfig = Record<string, string | undefined>;

const INSTANCE_TYPE = /^[a-z][a-z0-9-]*\.[a-z0-9]+$/;
/** Accelerated-computing families (G, VT, P) are for GPU work, never for the system nodes. */
const GPU_FAMILY = /^(g\d|gr\d|p\d|vt\d)/;
const CIDR = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}\/(\d|[12]\d|3[0-2])$/;
const CRON = /^(\S+\s+){4}\S+$/;

/**
 * Pure validation of raw config values (keys without the project prefix). `pulumi.Config` only
 * feeds it, so every rule is testable without a Pulumi engine.
 */
export interface ConfigContext {
  project: string;
  stack: string;
  /** Secrets, read only as secret Outputs. */
  oidcClientSecret?: pulumi.Output<string>;
  cognitoFederationClientSecret?: pulumi.Output<string>;
  /** The day the configuration is judged on (support end dates). @defaultValue now */
  today?: Date;
  /** Receives warnings (e.g. extended-support billing); loadConfig passes pulumi.log.warn. @defaultValue ignore */
  warn?: (message: string) => void;
}

export function parseConfig(raw: RawConfig, ctx: ConfigContext): StackConfig {
  const problems: string[] = [];
  const bad = (key: string, msg: string) => problems.push(`${key}: ${msg}`);

  const str = (key: string, def: string): string => {
    const v = raw[key];
    return v === undefined || v === "" ? def : v;
  };
  const int = (key: string, def: number, min: number, max: number): number => {
    const v = raw[key];
    if (v === undefined || v === "") return def;
    if (!/^-?\d+$/.test(v.trim())) {
      bad(key, `must be a whole number between ${min} and ${max}, got "${v}"`);
      return def;
    }
    const n = Number(v);
    if (n < min || n > max) bad(key, `must be between ${min} and ${max}, got ${n}`);
    return n;
  };
  const bool = (key: string, def: boolean): boolean => {
    const v = raw[key];
    if (v === undefined || v === "") return def;
    if (v === "true" || v === "false") return v === "true";
    bad(key, `must be true or false, got "${v}"`);
    return def;
  };
  const list = (key: string, def: string[]): string[] => {
    const v = raw[key];
    if (v === undefined || v === "") return def;
    try {
      const parsed: unknown = JSON.parse(v);
      if (Array.isArray(parsed) && parsed.every((x) => typeof x === "string")) return parsed as string[];
    } catch {
      /* reported below */
    }
    bad(key, `must be a list of strings, e.g. pulumi config set --path '${key}[0]' value; got ${v}`);
    return def;
  };
  const oneOf = <T extends string>(key: string, def: T, allowed: readonly T[]): T => {
    const v = str(key, def);
    if (!(allowed as readonly string[]).includes(v)) bad(key, `must be one of ${allowed.join(", ")}, got "${v}"`);
    return v as T;
  };

  const region = str("aws:region", "");
  if (!/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(region)) {
    bad("aws:region", region ? `"${region}" is not an AWS region name` : "is required: pulumi config set aws:region us-west-2");
  }

  const kubernetesVersion = str("kubernetesVersion", DEFAULT_KUBERNETES_VERSION);
  if (!/^1\.\d{2}$/.test(kubernetesVersion)) {
    bad("kubernetesVersion", `must look like ${DEFAULT_KUBERNETES_VERSION}, got "${kubernetesVersion}"`);
  } else {
    const verdict = judgeKubernetesVersion(kubernetesVersion, ctx.today ?? new Date());
    if (verdict.error) bad("kubernetesVersion", verdict.error);
    if (verdict.warning) ctx.warn?.(`kubernetesVersion: ${verdict.warning}`);
  }

  const vpcCidr = str("vpcCidr", "10.0.0.0/16");
  if (!CIDR.test(vpcCidr) || Number(vpcCidr.split("/")[1]) > 20 || Number(vpcCidr.split("/")[1]) < 16) {
    bad("vpcCidr", `must be an IPv4 CIDR from /16 to /20, got "${vpcCidr}"`);
  }
  const apiAllowedCidrs = list("apiAllowedCidrs", ["0.0.0.0/0"]);
  for (const c of apiAllowedCidrs) if (!CIDR.test(c)) bad("apiAllowedCidrs", `"${c}" is not an IPv4 CIDR`);
  if (apiAllowedCidrs.length === 0) bad("apiAllowedCidrs", "must list at least one CIDR");

  const systemNodeInstanceType = str("systemNodeInstanceType", "t3a.large");
  if (!INSTANCE_TYPE.test(systemNodeInstanceType)) {
    bad("systemNodeInstanceType", `"${systemNodeInstanceType}" is not an EC2 instance type`);
  } else if (GPU_FAMILY.test(systemNodeInstanceType)) {
    bad("systemNodeInstanceType", `"${systemNodeInstanceType}" is a GPU type; system nodes run controllers only`);
  }

  const gpuInstanceTypes = list("gpuInstanceTypes", ["g6.xlarge", "g6.2xlarge", "g5.xlarge", "g5.2xlarge"]);
  if (gpuInstanceTypes.length === 0) bad("gpuInstanceTypes", "must list at least one GPU instance type");
  for (const t of gpuInstanceTypes) {
    // The full check (NVIDIA GPUs, NVMe, offered here) needs EC2's data and runs at preview.
    if (!INSTANCE_TYPE.test(t)) bad("gpuInstanceTypes", `"${t}" is not an EC2 instance type name like g6e.4xlarge`);
  }
  if (new Set(gpuInstanceTypes).size !== gpuInstanceTypes.length) bad("gpuInstanceTypes", "lists a type twice");
  const gpuCapacityTypes = list("gpuCapacityTypes", ["spot", "on-demand"]) as CapacityType[];
  if (gpuCapacityTypes.length === 0) bad("gpuCapacityTypes", "must list spot and/or on-demand");
  for (const c of gpuCapacityTypes) if (c !== "spot" && c !== "on-demand") bad("gpuCapacityTypes", `"${c}" must be spot or on-demand`);

  const gpuAmiAlias = str("gpuAmiAlias", GPU_AMI_ALIAS);
  const aliasProblem = amiAliasProblem(gpuAmiAlias);
  if (aliasProblem) bad("gpuAmiAlias", aliasProblem);
  const gpuConsolidateAfter = str("gpuConsolidateAfter", "5m");
  const consolidateProblem = durationProblem(gpuConsolidateAfter, { never: false, example: "5m or 30s" });
  if (consolidateProblem) bad("gpuConsolidateAfter", consolidateProblem);
  const gpuExpireAfter = str("gpuExpireAfter", "168h");
  const expireProblem = durationProblem(gpuExpireAfter, { never: true, example: "168h" });
  if (expireProblem) bad("gpuExpireAfter", expireProblem);

  // The agent's own rule (workload/models/contract.ts, itself sync/keys.ts checkKey), so a pin the
  // stack accepts is one the node and the agent keep.
  const modelsHotSet = list("modelsHotSet", []).map(normalizePinEntry);
  for (const k of modelsHotSet) {
    const c = checkPinEntry(k);
    if (!c.ok) bad("modelsHotSet", `"${k}" is not a model file or folder (e.g. checkpoints/ or loras/detail.safetensors): ${c.reason}`);
  }

  const edgePriceClass = oneOf("edgePriceClass", "PriceClass_100", ["PriceClass_100", "PriceClass_200", "PriceClass_All"] as const);
  for (const gone of ["edgeUsername", "edgePassword"]) {
    if (raw[gone] !== undefined) bad(gone, "is no longer used: artists sign in with OpenID Connect (a Cognito user pool by default); remove it with pulumi config rm " + gone + " and see docs/security.md");
  }
  if (apiAllowedCidrs.includes("0.0.0.0/0")) {
    ctx.warn?.("apiAllowedCidrs: the Kubernetes API endpoint is open to the whole internet (0.0.0.0/0); narrow it to your offices and CI: pulumi config set --path 'apiAllowedCidrs[0]' 203.0.113.0/24");
  }
  const signIn = oneOf("signIn", "cognito", ["cognito", "oidc"] as const);
  const oidcIssuer = raw["oidcIssuer"] || undefined;
  const oidcClientId = raw["oidcClientId"] || undefined;
  if (signIn === "oidc") {
    if (!oidcIssuer) bad("oidcIssuer", "is required with signIn=oidc (the issuer URL, e.g. https://login.microsoftonline.com/<tenant>/v2.0)");
    else if (!/^https:\/\/[^\s]+$/.test(oidcIssuer)) bad("oidcIssuer", `must be an https URL, got "${oidcIssuer}"`);
    if (!oidcClientId) bad("oidcClientId", "is required with signIn=oidc (the client id registered at the issuer)");
  } else {
    for (const k of ["oidcIssuer", "oidcClientId"]) if (raw[k]) bad(k, "is only read with signIn=oidc");
  }
  let cognitoFederation: CognitoFederation | undefined;
  const fed = raw["cognitoFederation"];
  if (fed !== undefined && fed !== "") {
    try {
      const o = JSON.parse(fed) as Record<string, unknown>;
      const name = typeof o.name === "string" && /^[\w.-]{1,32}$/.test(o.name) ? o.name : undefined;
      if (!name) bad("cognitoFederation.name", "must be 1-32 letters, digits, '.', '_' or '-' (shown on the login page)");
      if (o.type === "OIDC") {
        if (typeof o.issuer !== "string" || !/^https:\/\//.test(o.issuer)) bad("cognitoFederation.issuer", "must be the IdP's https issuer URL");
        if (typeof o.clientId !== "string" || !o.clientId) bad("cognitoFederation.clientId", "is required");
        if (name && typeof o.issuer === "string" && typeof o.clientId === "string") cognitoFederation = { type: "OIDC", name, issuer: o.issuer, clientId: o.clientId, scopes: typeof o.scopes === "string" ? o.scopes : "openid email profile" };
      } else if (o.type === "SAML") {
        if (typeof o.metadataUrl !== "string" || !/^https:\/\//.test(o.metadataUrl)) bad("cognitoFederation.metadataUrl", "must be the IdP's https SAML metadata URL");
        else if (name) cognitoFederation = { type: "SAML", name, metadataUrl: o.metadataUrl };
      } else bad("cognitoFederation.type", `must be OIDC or SAML, got ${JSON.stringify(o.type)}`);
    } catch {
      bad("cognitoFederation", "must be an object: pulumi config set cognitoFederation '{\"type\":\"OIDC\",\"name\":\"Google\",\"issuer\":\"https://accounts.google.com\",\"clientId\":\"…\"}'");
    }
    if (signIn !== "cognito") bad("cognitoFederation", "is only read with signIn=cognito");
  }
  if (cognitoFederation?.type === "OIDC" && !ctx.cognitoFederationClientSecret) bad("cognitoFederationClientSecret", "is required with an OIDC federation: pulumi config set --secret cognitoFederationClientSecret …");
  if (signIn === "oidc" && !ctx.oidcClientSecret) bad("oidcClientSecret", "is required with signIn=oidc: pulumi config set --secret oidcClientSecret …");
  const comfyuiEgressCidrs = list("comfyuiEgressCidrs", []);
  for (const c of comfyuiEgressCidrs) if (!CIDR.test(c)) bad("comfyuiEgressCidrs", `"${c}" is not an IPv4 CIDR`);

  let workingHours: WorkingHours | undefined;
  const wh = raw["workingHours"];
  if (wh !== undefined && wh !== "") {
    try {
      const o = JSON.parse(wh) as Partial<WorkingHours>;
      const whProblems: string[] = [];
      if (typeof o.start !== "string" || !CRON.test(o.start.trim())) whProblems.push("start must be a 5-field cron expression, e.g. \"0 9 * * 1-5\"");
      if (typeof o.end !== "string" || !CRON.test(o.end.trim())) whProblems.push("end must be a 5-field cron expression, e.g. \"0 19 * * 1-5\"");
      if (o.start !== undefined && o.start === o.end) whProblems.push("end must differ from start");
      if (typeof o.timezone !== "string" || !isTimeZone(o.timezone)) whProblems.push(`timezone must be an IANA time zone such as Europe/Berlin, got ${JSON.stringify(o.timezone)}`);
      const replicas = o.replicas ?? 1;
      if (!Number.isInteger(replicas) || replicas < 1) whProblems.push("replicas must be a whole number ≥ 1");
      whProblems.forEach((p) => bad(`workingHours.${p.split(" ")[0]}`, p.substring(p.indexOf(" ") + 1)));
      if (whProblems.length === 0) workingHours = { start: o.start!.trim(), end: o.end!.trim(), timezone: o.timezone!, replicas };
    } catch {
      bad("workingHours", "must be an object: pulumi config set --path workingHours.start '0 9 * * 1-5' (and end, timezone, replicas)");
    }
  }

  const cfg: StackConfig = {
    project: ctx.project,
    stack: ctx.stack,
    region,
    kubernetesVersion,
    availabilityZones: int("availabilityZones", 2, 2, 3),
    vpcCidr,
    natGateways: oneOf("natGateways", "single", ["single", "onePerAz"] as const),
    apiAllowedCidrs,
    systemNodeInstanceType,
    systemNodeCount: int("systemNodeCount", 2, 1, 10),
    gpuInstanceTypes,
    gpuCapacityTypes,
    gpuLimit: int("gpuLimit", 4, 1, 256),
    gpuAmiAlias,
    gpuConsolidateAfter,
    gpuExpireAfter,
    gpuRootVolumeGiB: int("gpuRootVolumeGiB", 100, 40, 2000),
    modelsHotSet,
    modelsBootFillSeconds: int("modelsBootFillSeconds", 600, 60, 720),
    modelsParallelTransfers: int("modelsParallelTransfers", 8, 1, 64),
    comfyuiVersion: str("comfyuiVersion", COMFYUI.version),
    comfyuiCommit: str("comfyuiCommit", COMFYUI.commit),
    retainBucketsOnDestroy: bool("retainBucketsOnDestroy", true),
    outputsExpireDays: int("outputsExpireDays", 0, 0, 36500),
    modelsNoncurrentDays: int("modelsNoncurrentDays", 30, 1, 3650),
    edgeEnabled: bool("edgeEnabled", true),
    signIn,
    oidcIssuer,
    oidcClientId,
    oidcClientSecret: ctx.oidcClientSecret,
    cognitoFederation,
    cognitoFederationClientSecret: ctx.cognitoFederationClientSecret,
    comfyuiEgressCidrs,
    edgePriceClass,
    minReplicas: int("minReplicas", 0, 0, 100),
    maxReplicas: int("maxReplicas", 4, 1, 100),
    queuePerPod: int("queuePerPod", 2, 1, 100),
    idleMinutes: int("idleMinutes", 15, 1, 1440),
    workingHours,
    drainSeconds: int("drainSeconds", 900, 30, 3600),
    mountpointAddonVersion: raw["mountpointAddonVersion"] || undefined,
    imageBuild: oneOf("imageBuild", "aws", ["aws", "local"] as const),
    alertEmails: list("alertEmails", []),
    gpuDailyBudgetUsd: undefined,
    logRetentionDays: int("logRetentionDays", 30, 1, 3653),
    gpuMetrics: bool("gpuMetrics", true),
  };
  for (const e of cfg.alertEmails) if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(e)) bad("alertEmails", `"${e}" is not an email address`);
  if (!(RETENTION_DAYS as readonly number[]).includes(cfg.logRetentionDays)) {
    bad("logRetentionDays", `must be one of CloudWatch Logs' retention periods (${RETENTION_DAYS.join(", ")}), got ${cfg.logRetentionDays}`);
  }
  const budget = raw["gpuDailyBudgetUsd"];
  if (budget !== undefined && budget !== "") {
    const n = Number(budget);
    if (!Number.isFinite(n) || n <= 0) bad("gpuDailyBudgetUsd", `must be a positive number of USD, got "${budget}"`);
    else cfg.gpuDailyBudgetUsd = n;
  }
  if (cfg.mountpointAddonVersion !== undefined && !/^v\d+\.\d+\.\d+-eksbuild\.\d+$/.test(cfg.mountpointAddonVersion)) {
    bad("mountpointAddonVersion", `must be an EKS add-on version like ${ADDONS.mountpoint}, got "${cfg.mountpointAddonVersion}"`);
  }

  if (!/^v\d+\.\d+\.\d+$/.test(cfg.comfyuiVersion)) bad("comfyuiVersion", `must be a release tag like v0.3.64, got "${cfg.comfyuiVersion}"`);
  if (!/^[0-9a-f]{40}$/.test(cfg.comfyuiCommit)) bad("comfyuiCommit", `must be a full 40-hex commit id, got "${cfg.comfyuiCommit}"`);
  if (cfg.minReplicas > cfg.maxReplicas) bad("minReplicas", `(${cfg.minReplicas}) must not exceed maxReplicas (${cfg.maxReplicas})`);
  if (cfg.workingHours && cfg.workingHours.replicas > cfg.maxReplicas) {
    bad("workingHours.replicas", `(${cfg.workingHours.replicas}) must not exceed maxReplicas (${cfg.maxReplicas})`);
  }
  if (cfg.maxReplicas > cfg.gpuLimit) {
    bad("maxReplicas", `(${cfg.maxReplicas}) needs one GPU per pod but gpuLimit is ${cfg.gpuLimit}; raise gpuLimit or lower maxReplicas`);
  }
  if (`comfyui-${ctx.stack}`.length > 24) bad("(stack name)", `"${ctx.stack}" is too long: physical names such as the ALB's are limited to 32 characters; use at most 16`);

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(cfg);
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return tz.includes("/") || tz === "UTC";
  } catch {
    return false;
  }
}

/** Every key this program reads, so that unknown keys (typos) can be reported. */
export const CONFIG_KEYS = [
  "kubernetesVersion", "availabilityZones", "vpcCidr", "natGateways", "apiAllowedCidrs", "systemNodeInstanceType",
  "systemNodeCount", "gpuInstanceTypes", "gpuCapacityTypes", "gpuLimit", "gpuAmiAlias", "gpuConsolidateAfter",
  "gpuExpireAfter", "gpuRootVolumeGiB", "modelsHotSet", "modelsBootFillSeconds", "modelsParallelTransfers",
  "comfyuiVersion", "comfyuiCommit", "retainBucketsOnDestroy", "outputsExpireDays", "modelsNoncurrentDays",
  "edgeEnabled", "edgeUsername", "edgePassword", "signIn", "oidcIssuer", "oidcClientId", "oidcClientSecret", "cognitoFederation",
  "cognitoFederationClientSecret", "comfyuiEgressCidrs", "edgePriceClass", "minReplicas", "maxReplicas", "queuePerPod",
  "idleMinutes", "workingHours", "drainSeconds", "mountpointAddonVersion", "imageBuild",
  "alertEmails", "gpuDailyBudgetUsd", "logRetentionDays", "gpuMetrics",
] as const;

/** Reads this stack's config through Pulumi and validates it. */
export function loadConfig(): StackConfig {
  const cfg = new pulumi.Config();
  const raw: RawConfig = { "aws:region": new pulumi.Config("aws").get("region") };
  // Secrets are read only as secret Outputs, so they never pass through plain config values.
  const SECRETS = ["oidcClientSecret", "cognitoFederationClientSecret", "edgePassword"];
  for (const key of CONFIG_KEYS) if (!SECRETS.includes(key)) raw[key] = cfg.get(key);
  // Only whether it is still set (it is refused with how to remove it), never its value.
  if (cfg.getSecret("edgePassword") !== undefined) raw["edgePassword"] = "(set)";
  return parseConfig(raw, {
    project: pulumi.getProject(),
    stack: pulumi.getStack(),
    oidcClientSecret: cfg.getSecret("oidcClientSecret"),
    cognitoFederationClientSecret: cfg.getSecret("cognitoFederationClientSecret"),
    warn: (message) => void pulumi.log.warn(message),
  });
}
