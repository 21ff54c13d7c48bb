/**
 * Every stack config key, declared once: its Pulumi key, type (its parser), default and the line the
 * README's configuration table shows. `StackConfig`, the list of keys the program reads, the
 * validation and the README table all derive from this (config/index.ts); tests check the README and
 * Pulumi.dev.yaml against it (test/config/schema.test.ts). Rules that involve more than one key are in
 * CROSS_RULES below. The value rules shared with the components live in their own modules and are
 * imported here, never copied: the AMI alias and durations (karpenter/rules.ts), instance types
 * (karpenter/rules.ts), model keys (contracts/modelsAgent.ts, itself contracts/modelKeys.ts checkKey).
 *
 * Longer than the ~300 lines a file is kept to: it is the one table of every key, which is the point.
 */
import type * as pulumi from "@pulumi/pulumi";
import { ADDONS, COMFYUI, DEFAULT_KUBERNETES_VERSION, GPU_AMI_ALIAS, judgeKubernetesVersion } from "../versions";
import { amiAliasProblem, durationProblem, gpuInstanceTypeProblem, systemInstanceTypeProblem } from "../karpenter/rules";
import { RETENTION_DAYS } from "../observability";
import { checkPinEntry, normalizePinEntry } from "../contracts/modelsAgent";
import { Bad, CIDR, Parser, boolean, cidrProblem, integer, list, object, oneOf, text } from "./parsers";

/** One key of the stack's configuration. */
export interface KeySpec<T> {
  /** The Pulumi config key (without the project prefix). */
  key: string;
  /** The README table's meaning column (Markdown). */
  doc: string;
  /** The default as Pulumi config holds it (lists as JSON); undefined: none, the value is undefined. */
  default?: string;
  /** How the README shows the default, where the raw default is not what a reader wants to see. */
  shown?: string;
  /** Whether Pulumi.dev.yaml sets it (to its default). @defaultValue true when there is a default */
  inStackFile?: boolean;
  /** A secret: read only as a secret Output (`pulumi config set --secret`), never as plain text. */
  secret?: true;
  /** Without a default: the problem reported when it is not set (undefined: it may stay unset). */
  required?: string;
  parse: Parser<T>;
}

function key<T>(spec: KeySpec<T> & ({ default: string } | { required: string })): KeySpec<T>;
function key<T>(spec: KeySpec<T> & { default?: undefined; required?: undefined }): KeySpec<T | undefined>;
function key<T>(spec: KeySpec<T>): KeySpec<T> {
  return spec;
}

/** A secret key: its value never passes through the schema's parsers, only whether it is set. */
const secret = (k: string, doc: string): KeySpec<pulumi.Output<string> | undefined> => ({ key: k, doc, secret: true, parse: () => undefined });

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

/** The studio's IdP behind Cognito's managed login. */
export type CognitoFederation =
  | { type: "OIDC"; name: string; issuer: string; clientId: string; scopes: string }
  | { type: "SAML"; name: string; metadataUrl: string };

const CRON = /^(\S+\s+){4}\S+$/;
const httpsUrl = (v: unknown): v is string => typeof v === "string" && /^https:\/\/[^\s]+$/.test(v);

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return tz.includes("/") || tz === "UTC";
  } catch {
    return false;
  }
}

function workingHours(o: Record<string, unknown>, bad: Bad): WorkingHours | undefined {
  let failed = false;
  const fail: Bad = (m, f) => {
    failed = true;
    bad(m, f);
  };
  if (typeof o.start !== "string" || !CRON.test(o.start.trim())) fail('must be a 5-field cron expression, e.g. "0 9 * * 1-5"', "start");
  if (typeof o.end !== "string" || !CRON.test(o.end.trim())) fail('must be a 5-field cron expression, e.g. "0 19 * * 1-5"', "end");
  if (o.start !== undefined && o.start === o.end) fail("must differ from start", "end");
  if (typeof o.timezone !== "string" || !isTimeZone(o.timezone)) fail(`must be an IANA time zone such as Europe/Berlin, got ${JSON.stringify(o.timezone)}`, "timezone");
  const replicas = o.replicas ?? 1;
  if (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 1) fail("must be a whole number ≥ 1", "replicas");
  if (failed) return undefined;
  return { start: (o.start as string).trim(), end: (o.end as string).trim(), timezone: o.timezone as string, replicas: replicas as number };
}

function federation(o: Record<string, unknown>, bad: Bad): CognitoFederation | undefined {
  const name = typeof o.name === "string" && /^[\w.-]{1,32}$/.test(o.name) ? o.name : undefined;
  if (!name) bad("must be 1-32 letters, digits, '.', '_' or '-' (shown on the login page)", "name");
  if (o.type === "OIDC") {
    if (!httpsUrl(o.issuer)) bad("must be the IdP's https issuer URL", "issuer");
    if (typeof o.clientId !== "string" || !o.clientId) bad("is required", "clientId");
    if (name && httpsUrl(o.issuer) && typeof o.clientId === "string" && o.clientId) {
      return { type: "OIDC", name, issuer: o.issuer, clientId: o.clientId, scopes: typeof o.scopes === "string" ? o.scopes : "openid email profile" };
    }
    return undefined;
  }
  if (o.type === "SAML") {
    if (!httpsUrl(o.metadataUrl)) bad("must be the IdP's https SAML metadata URL", "metadataUrl");
    else if (name) return { type: "SAML", name, metadataUrl: o.metadataUrl };
    return undefined;
  }
  bad(`must be OIDC or SAML, got ${JSON.stringify(o.type)}`, "type");
  return undefined;
}

const kubernetesVersion: Parser<string> = (v, bad, ctx) => {
  if (!/^1\.\d{2}$/.test(v)) {
    bad(`must look like ${DEFAULT_KUBERNETES_VERSION}, got "${v}"`);
    return v;
  }
  const verdict = judgeKubernetesVersion(v, ctx.today);
  if (verdict.error) bad(verdict.error);
  if (verdict.warning) ctx.warn(`kubernetesVersion: ${verdict.warning}`);
  return v;
};

/**
 * The keys, in the README table's order. The field name is what components read (`cfg.region`); the
 * `key` is what `pulumi config set` takes.
 */
export const SCHEMA = {
  region: key({
    key: "aws:region",
    doc: "AWS region (Pulumi.dev.yaml sets `us-west-2`)",
    required: "is required: pulumi config set aws:region us-west-2",
    inStackFile: true,
    parse: text((v) => (/^[a-z]{2}(-gov)?-[a-z]+-\d$/.test(v) ? undefined : `"${v}" is not an AWS region name`)),
  }),
  kubernetesVersion: key({
    key: "kubernetesVersion",
    doc: "EKS version: the newest Karpenter 1.14, KEDA 2.20 and the pinned AMI all support; a version past standard support is warned about (extended support bills $0.60/h), one past extended support refused (dated table in `versions.ts`)",
    default: DEFAULT_KUBERNETES_VERSION,
    parse: kubernetesVersion,
  }),
  availabilityZones: key({ key: "availabilityZones", doc: "2 or 3", default: "2", parse: integer(2, 3) }),
  vpcCidr: key({
    key: "vpcCidr",
    doc: "/16–/20",
    default: "10.0.0.0/16",
    parse: text((v) => (CIDR.test(v) && Number(v.split("/")[1]) >= 16 && Number(v.split("/")[1]) <= 20 ? undefined : `must be an IPv4 CIDR from /16 to /20, got "${v}"`)),
  }),
  natGateways: key({ key: "natGateways", doc: "`single` (one shared NAT, cheaper) or `onePerAz` (HA)", default: "single", parse: oneOf<NatStrategy>(["single", "onePerAz"]) }),
  apiAllowedCidrs: key({
    key: "apiAllowedCidrs",
    doc: "who may reach the Kubernetes API endpoint (IAM auth still applies); preview warns while it is `0.0.0.0/0` — narrow it to your offices and CI",
    default: '["0.0.0.0/0"]',
    parse: list("apiAllowedCidrs", { item: cidrProblem, nonEmpty: "must list at least one CIDR" }),
  }),
  systemNodeInstanceType: key({ key: "systemNodeInstanceType", doc: "CPU system nodes (controllers, waker)", default: "t3a.large", parse: text(systemInstanceTypeProblem) }),
  systemNodeCount: key({ key: "systemNodeCount", doc: "1–10", default: "2", parse: integer(1, 10) }),
  gpuInstanceTypes: key({
    key: "gpuInstanceTypes",
    doc: "any EC2 type with NVIDIA GPUs and NVMe instance store, e.g. `g6e.4xlarge` or the 4-GPU `g6.12xlarge`: EC2's own data is read at preview, and a type without an NVIDIA GPU or NVMe, or not offered in the stack's zones, is refused naming the reason; each pod asks for one GPU and that GPU's share of CPU and memory after the DaemonSets every GPU node runs (780m/529Mi, docs/scaling.md), so a k-GPU node runs k pods (an xlarge: 3 vCPU, 12 GiB for ComfyUI)",
    default: '["g6.xlarge","g6.2xlarge","g5.xlarge","g5.2xlarge"]',
    // The full check (NVIDIA GPUs, NVMe, offered here) needs EC2's data and runs at preview.
    parse: list("gpuInstanceTypes", { item: gpuInstanceTypeProblem, nonEmpty: "must list at least one GPU instance type", unique: "lists a type twice" }),
  }),
  gpuCapacityTypes: key({
    key: "gpuCapacityTypes",
    doc: "spot preferred, on-demand as fallback",
    default: '["spot","on-demand"]',
    parse: list("gpuCapacityTypes", { item: (c) => (c === "spot" || c === "on-demand" ? undefined : `"${c}" must be spot or on-demand`), nonEmpty: "must list spot and/or on-demand" }) as Parser<CapacityType[]>,
  }),
  gpuLimit: key({
    key: "gpuLimit",
    doc: "most GPUs at once across GPU nodes — the cost cap; preview warns (quota code and console link) when the account's G/VT or P vCPU quota cannot hold it",
    default: "4",
    parse: integer(1, 256),
  }),
  gpuAmiAlias: key({ key: "gpuAmiAlias", doc: "pinned AL2023 release (never `@latest`, which drifts every node)", default: GPU_AMI_ALIAS, parse: text(amiAliasProblem) }),
  gpuConsolidateAfter: key({ key: "gpuConsolidateAfter", doc: "how long an empty GPU node stays", default: "5m", parse: text((v) => durationProblem(v, { never: false, example: "5m or 30s" })) }),
  gpuExpireAfter: key({ key: "gpuExpireAfter", doc: "node lifetime (picks up new AMIs)", default: "168h", parse: text((v) => durationProblem(v, { never: true, example: "168h" })) }),
  gpuRootVolumeGiB: key({ key: "gpuRootVolumeGiB", doc: "root EBS volume", default: "100", parse: integer(40, 2000) }),
  modelsHotSet: key({
    key: "modelsHotSet",
    doc: "pinned models (files, folders ending in `/`): copied before a GPU node registers and never evicted from its cache; `[]` = none, every model is fetched when a prompt needs it ([docs/models.md](docs/models.md))",
    default: "[]",
    // The agent's own rule, so a pin the stack accepts is one the node and the agent keep.
    parse: list("modelsHotSet", {
      map: normalizePinEntry,
      item: (k) => {
        const c = checkPinEntry(k);
        return c.ok ? undefined : `"${k}" is not a model file or folder (e.g. checkpoints/ or loras/detail.safetensors): ${c.reason}`;
      },
    }),
  }),
  modelsBootFillSeconds: key({
    key: "modelsBootFillSeconds",
    doc: "time budget for the pinned copy at boot (60–720; Karpenter allows 15 min to register; the agent fetches what is left)",
    default: "600",
    parse: integer(60, 720),
  }),
  modelsParallelTransfers: key({ key: "modelsParallelTransfers", doc: "parallel file copies of the pinned models at boot", default: "8", parse: integer(1, 64) }),
  comfyuiVersion: key({
    key: "comfyuiVersion",
    doc: "ComfyUI release tag built into the image",
    default: COMFYUI.version,
    parse: text((v) => (/^v\d+\.\d+\.\d+$/.test(v) ? undefined : `must be a release tag like ${COMFYUI.version}, got "${v}"`)),
  }),
  comfyuiCommit: key({
    key: "comfyuiCommit",
    doc: "the commit `comfyuiVersion` must resolve to (the build fails otherwise)",
    default: COMFYUI.commit,
    shown: `${COMFYUI.commit.slice(0, 8)}…`,
    parse: text((v) => (/^[0-9a-f]{40}$/.test(v) ? undefined : `must be a full 40-hex commit id, got "${v}"`)),
  }),
  retainBucketsOnDestroy: key({ key: "retainBucketsOnDestroy", doc: "keep buckets and data on `pulumi destroy`; `false` empties and deletes them", default: "true", parse: boolean() }),
  outputsExpireDays: key({ key: "outputsExpireDays", doc: "expire generated images after N days; 0 = keep", default: "0", parse: integer(0, 36500) }),
  modelsNoncurrentDays: key({ key: "modelsNoncurrentDays", doc: "how long replaced/deleted model versions are kept", default: "30", parse: integer(1, 3650) }),
  edgeEnabled: key({
    key: "edgeEnabled",
    doc: "CloudFront in front; `false` leaves only the internal ALB (use `kubectl port-forward`; sign-in then calls back to `http://localhost:8848`)",
    default: "true",
    parse: boolean(),
  }),
  signIn: key({
    key: "signIn",
    doc: "`cognito`: a user pool of the stack with its managed login (users added by an admin, groups `artist` and `admin`); `oidc`: any OpenID Connect issuer instead ([docs/security.md](docs/security.md))",
    default: "cognito",
    parse: oneOf(["cognito", "oidc"] as const),
  }),
  oidcIssuer: key({
    key: "oidcIssuer",
    doc: "with `signIn: oidc`: the issuer's https URL (e.g. `https://login.microsoftonline.com/<tenant>/v2.0`)",
    parse: text((v) => (httpsUrl(v) ? undefined : `must be an https URL, got "${v}"`)),
  }),
  oidcClientId: key({ key: "oidcClientId", doc: "with `signIn: oidc`: the confidential client registered at the issuer (redirect URI `<url>/auth/callback`)", parse: text() }),
  oidcClientSecret: secret("oidcClientSecret", "with `signIn: oidc`: the client's secret (`pulumi config set --secret`)"),
  cognitoFederation: key({
    key: "cognitoFederation",
    doc: 'with `signIn: cognito`: the studio\'s IdP behind Cognito\'s login, `{"type":"OIDC","name":"Google","issuer":"https://accounts.google.com","clientId":"…"}` or `{"type":"SAML","name":"Entra","metadataUrl":"https://…"}`',
    parse: object(`pulumi config set cognitoFederation '{"type":"OIDC","name":"Google","issuer":"https://accounts.google.com","clientId":"…"}'`, federation),
  }),
  cognitoFederationClientSecret: secret("cognitoFederationClientSecret", "with an OIDC `cognitoFederation`: its client secret (`pulumi config set --secret`)"),
  comfyuiEgressCidrs: key({
    key: "comfyuiEgressCidrs",
    doc: "where ComfyUI pods may connect besides cluster DNS (custom nodes that call APIs); by default nowhere",
    default: "[]",
    parse: list("comfyuiEgressCidrs", { item: cidrProblem }),
  }),
  edgePriceClass: key({ key: "edgePriceClass", doc: "CloudFront price class", default: "PriceClass_100", parse: oneOf(["PriceClass_100", "PriceClass_200", "PriceClass_All"] as const) }),
  minReplicas: key({ key: "minReplicas", doc: "ComfyUI pods outside working hours (0 = scale to zero)", default: "0", parse: integer(0, 100) }),
  maxReplicas: key({ key: "maxReplicas", doc: "ComfyUI pods at most (≤ `gpuLimit`)", default: "4", parse: integer(1, 100) }),
  queuePerPod: key({ key: "queuePerPod", doc: "queued + running prompts per pod before another pod starts", default: "2", parse: integer(1, 100) }),
  idleMinutes: key({ key: "idleMinutes", doc: "idle time before scaling to zero", default: "15", parse: integer(1, 1440) }),
  workingHours: key({
    key: "workingHours",
    doc: "optional floor: `--path workingHours.start '0 9 * * 1-5'`, `.end '0 19 * * 1-5'`, `.timezone Europe/Berlin`, `.replicas 1`",
    parse: object("pulumi config set --path workingHours.start '0 9 * * 1-5' (and end, timezone, replicas)", workingHours),
  }),
  drainSeconds: key({ key: "drainSeconds", doc: "how long a stopping pod may finish its running prompt", default: "900", parse: integer(30, 3600) }),
  imageBuild: key({
    key: "imageBuild",
    doc: "`aws`: CodeBuild in the stack's region builds and pushes the images; `local`: the local Docker does",
    default: "aws",
    parse: oneOf(["aws", "local"] as const),
  }),
  alertEmails: key({
    key: "alertEmails",
    doc: "addresses the alarm topic mails (each confirms once); alarms and what to do: [docs/operations.md](docs/operations.md)",
    default: "[]",
    parse: list("alertEmails", { item: (e) => (/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(e) ? undefined : `"${e}" is not an email address`) }),
  }),
  gpuDailyBudgetUsd: key({
    key: "gpuDailyBudgetUsd",
    doc: "alarm when a day's GPU spend at on-demand prices exceeds it",
    parse: (v, bad): number | undefined => {
      const n = Number(v);
      if (Number.isFinite(n) && n > 0) return n;
      bad(`must be a positive number of USD, got "${v}"`);
      return undefined;
    },
  }),
  logRetentionDays: key({
    key: "logRetentionDays",
    doc: "CloudWatch Logs retention of the platform's logs (Container Insights, EKS control plane)",
    default: "30",
    parse: (v, bad, ctx) => {
      const n = integer(1, 3653)(v, bad, ctx);
      if (!(RETENTION_DAYS as readonly number[]).includes(n)) bad(`must be one of CloudWatch Logs' retention periods (${RETENTION_DAYS.join(", ")}), got ${n}`);
      return n;
    },
  }),
  gpuMetrics: key({ key: "gpuMetrics", doc: "NVIDIA GPU metrics through the CloudWatch agent (Container Insights); `false` to save their cost", default: "true", parse: boolean() }),
  mountpointAddonVersion: key({
    key: "mountpointAddonVersion",
    doc: "pinned Mountpoint CSI add-on; `aws eks describe-addon-versions --addon-name aws-mountpoint-s3-csi-driver` lists others",
    // Not written into stack files: a stack follows versions.ts unless it sets its own.
    default: ADDONS.mountpoint,
    inStackFile: false,
    parse: text((v) => (/^v\d+\.\d+\.\d+-eksbuild\.\d+$/.test(v) ? undefined : `must be an EKS add-on version like ${ADDONS.mountpoint}, got "${v}"`)),
  }),
} as const;

/** Keys once read and now refused, with what to do instead. */
export const REMOVED_KEYS: Readonly<Record<string, string>> = {
  edgeUsername: "is no longer used: artists sign in with OpenID Connect (a Cognito user pool by default); remove it with pulumi config rm edgeUsername and see docs/security.md",
  edgePassword: "is no longer used: artists sign in with OpenID Connect (a Cognito user pool by default); remove it with pulumi config rm edgePassword and see docs/security.md",
};

type ValueOf<S> = S extends KeySpec<infer T> ? T : never;

/** The stack's configuration as components read it: one field per SCHEMA entry, plus the names. */
export type StackConfig = {
  /** Pulumi project and stack names, used to make physical names unique per stack. */
  readonly project: string;
  readonly stack: string;
} & { readonly [F in keyof typeof SCHEMA]: ValueOf<(typeof SCHEMA)[F]> };

/** What a cross-key rule sees: the parsed values, and which keys were set at all. */
export interface RuleInput {
  cfg: StackConfig;
  isSet: (key: string) => boolean;
  /** Reports a problem naming `key` (a Pulumi key or `key.field`). */
  bad: (key: string, message: string) => void;
  warn: (message: string) => void;
}

/** Rules that involve more than one key, or a key and the stack itself. */
export const CROSS_RULES: readonly ((r: RuleInput) => void)[] = [
  ({ cfg, warn }) => {
    if (cfg.apiAllowedCidrs.includes("0.0.0.0/0")) {
      warn("apiAllowedCidrs: the Kubernetes API endpoint is open to the whole internet (0.0.0.0/0); narrow it to your offices and CI: pulumi config set --path 'apiAllowedCidrs[0]' 203.0.113.0/24");
    }
  },
  ({ cfg, isSet, bad }) => {
    if (cfg.signIn === "oidc") {
      if (!isSet("oidcIssuer")) bad("oidcIssuer", "is required with signIn=oidc (the issuer URL, e.g. https://login.microsoftonline.com/<tenant>/v2.0)");
      if (!isSet("oidcClientId")) bad("oidcClientId", "is required with signIn=oidc (the client id registered at the issuer)");
      if (!cfg.oidcClientSecret) bad("oidcClientSecret", "is required with signIn=oidc: pulumi config set --secret oidcClientSecret …");
    } else {
      for (const k of ["oidcIssuer", "oidcClientId"]) if (isSet(k)) bad(k, "is only read with signIn=oidc");
    }
  },
  ({ cfg, isSet, bad }) => {
    if (isSet("cognitoFederation") && cfg.signIn !== "cognito") bad("cognitoFederation", "is only read with signIn=cognito");
    if (cfg.cognitoFederation?.type === "OIDC" && !cfg.cognitoFederationClientSecret) {
      bad("cognitoFederationClientSecret", "is required with an OIDC federation: pulumi config set --secret cognitoFederationClientSecret …");
    }
  },
  ({ cfg, bad }) => {
    if (cfg.minReplicas > cfg.maxReplicas) bad("minReplicas", `(${cfg.minReplicas}) must not exceed maxReplicas (${cfg.maxReplicas})`);
    if (cfg.workingHours && cfg.workingHours.replicas > cfg.maxReplicas) {
      bad("workingHours.replicas", `(${cfg.workingHours.replicas}) must not exceed maxReplicas (${cfg.maxReplicas})`);
    }
    if (cfg.maxReplicas > cfg.gpuLimit) bad("maxReplicas", `(${cfg.maxReplicas}) needs one GPU per pod but gpuLimit is ${cfg.gpuLimit}; raise gpuLimit or lower maxReplicas`);
  },
  ({ cfg, bad }) => {
    if (`comfyui-${cfg.stack}`.length > 24) bad("(stack name)", `"${cfg.stack}" is too long: physical names such as the ALB's are limited to 32 characters; use at most 16`);
  },
];
