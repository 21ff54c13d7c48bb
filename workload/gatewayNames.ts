/**
 * The gateway's names, ports, paths and arguments as the stack uses them: from its own contract
 * (contracts/gateway.ts) where the gateway reads the same, plus the stack's side (image
 * context, Secrets, labels, the component's arguments).
 */
import type * as k8s from "@pulumi/kubernetes";
import type * as pulumi from "@pulumi/pulumi";
import { NAMES, PATHS, PORTS, PREFIXES, SCALING_FIELD } from "../contracts/gateway";


// Ports, paths, prefixes and names come from the gateway's own contract (contracts/gateway.ts),
// which its loader parses; the env below is written from the same settings table.
export const GATEWAY_PORT = PORTS.public;
/** The internal port: probes, KEDA's figure, the drain hook and the replica link; the Ingress never routes it. */
export const GATEWAY_ADMIN_PORT = PORTS.internal;

/**
 * The gateway image's build context, relative to the repository root (workload/gateway/Dockerfile's
 * header lists the same files; the image builder hashes exactly these, so a change anywhere else
 * does not rebuild the gateway).
 */
export const GATEWAY_IMAGE = {
  // contracts/: what the gateway shares with the stack (its settings, metric names, the agent's API, key rules).
  context: ["package.json", "package-lock.json", "tsconfig.json", "workload/gateway", "contracts"],
  dockerfile: "workload/gateway/Dockerfile",
} as const;
export const GATEWAY_NAME = NAMES.gateway;
/** Service over the gateway pods' internal port for KEDA: publishes not-ready addresses, so every replica answers. */
export const GATEWAY_METRICS_SERVICE = NAMES.metricsService;
/** The path and JSON field KEDA's metrics-api scaler reads (README "Process, ports, probes"). */
export const GATEWAY_SCALING_PATH = PATHS.scaling;
export const GATEWAY_SCALING_FIELD = SCALING_FIELD;
export const GATEWAY_READY_PATH = PATHS.ready;
/** The ALB's health check on the public port. */
export const GATEWAY_PUBLIC_HEALTH_PATH = PATHS.publicHealth;
export const GATEWAY_HEALTH_PATH = PATHS.health;
/** Key prefixes the gateway writes in the outputs and user buckets (README "Configuration"). */
export const GATEWAY_OUTPUTS_PREFIX = PREFIXES.outputs;
export const GATEWAY_USERDATA_PREFIX = PREFIXES.userdata;

/** Pod Security "restricted" for a container: no escalation, read-only root, non-root, no capabilities. */
export const RESTRICTED_CONTAINER = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

/** The Secret holding the replicas' shared token, and its key. */
export const GATEWAY_INTERNAL_SECRET = `${NAMES.gateway}-internal`;
export const GATEWAY_INTERNAL_SECRET_KEY = "token";
/** The Secret holding the sign-in settings ({issuer, clientId, clientSecret, publicUrl}), mounted read-only. */
export const GATEWAY_OIDC_SECRET = `${NAMES.gateway}-oidc`;
export const GATEWAY_OIDC_DIR = "/etc/comfyui-gateway/oidc";
export const GATEWAY_OIDC_FILE = "oidc.json";

export const GATEWAY_LABELS = { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "gateway" } as const;

export interface GatewayArgs {
  namespace: string;
  /** `repo@sha256:…` of the gateway image. */
  imageUri: pulumi.Input<string>;
  clusterName: pulumi.Input<string>;
  region: string;
  outputsBucket: pulumi.Input<string>;
  outputsBucketArn: pulumi.Input<string>;
  inputsBucket: pulumi.Input<string>;
  inputsBucketArn: pulumi.Input<string>;
  userdataBucket: pulumi.Input<string>;
  userdataBucketArn: pulumi.Input<string>;
  /**
   * The models bucket: the gateway lists it (the model library every loader shows, issue 19) and routes
   * prompts by model, with the nodes' model agents (their token from the agents' Secret, optional so a stack
   * without agents still starts). @defaultValue none: the pods' own model lists, model-blind dispatch
   */
  modelsBucket?: pulumi.Input<string>;
  /** Its ARN, for the role's s3:ListBucket (list only: the gateway never reads a model). Required with modelsBucket. */
  modelsBucketArn?: pulumi.Input<string>;
  /**
   * The platform's metrics log group (contracts/metrics.ts metricsLogGroupName); the gateway
   * writes its EMF lines to its own stream `gateway/<pod>` there. @defaultValue none (no metrics)
   */
  metricsLogGroupName?: pulumi.Input<string>;
  /** Its ARN (without ":*"), for the role. Required with metricsLogGroupName. */
  metricsLogGroupArn?: pulumi.Input<string>;
  /**
   * The audit trail's log group (one JSON line per state change, stream `gateway/<pod>`); the role may
   * write only those streams. @defaultValue none (audit lines are not kept)
   */
  auditLogGroupName?: pulumi.Input<string>;
  /** Its ARN (without ":*"). Required with auditLogGroupName. */
  auditLogGroupArn?: pulumi.Input<string>;
  /**
   * Who may call: "oidc" (artists sign in; the settings come from the Secret GATEWAY_OIDC_SECRET, which
   * gatewayOidcSecret writes once the issuer's client exists, plus API keys) or "keys" (API keys only).
   * @defaultValue "oidc"
   */
  auth?: "oidc" | "keys";
  /** Service whose EndpointSlices list the ComfyUI pods (ComfyWorkload.podsServiceName). */
  comfyuiService: string;
  /** Body limit of every request in MB. @defaultValue GATEWAY_DEFAULTS.maxUploadMb (ComfyUI's own) */
  maxUploadMb?: number;
  /** A prompt waiting this long while no pod became Ready fails with a clear error. @defaultValue 900 */
  startupDeadlineSeconds?: number;
  /** Days finished prompts (history) are kept. @defaultValue 30 */
  historyDays?: number;
  /** @defaultValue 2 (leader + hot standby) */
  replicas?: number;
  /**
   * The stack's base name (comfyui-<stack>), which ComfyWorkload is named after. Until issue 20 the
   * gateway was a child of that ComfyWorkload, and so were the ALB's security group, the Ingress and the
   * gateway's NetworkPolicy: those three keep the names they had there (`${stackName}-alb-sg` …), and
   * the gateway's aliases name its old place, so a deployed stack keeps its table, ALB and pods.
   */
  stackName: string;
  /** ALB name (≤ 32 characters), fixed so edge/ can find this exact ALB. */
  albName: string;
  vpcId: pulumi.Input<string>;
  /** The VPC's range: where the ALB reaches the gateway pods from. */
  vpcCidr: string;
  /** Managed prefix list allowed into the ALB (CloudFront's origin-facing list); undefined: nothing from outside the VPC. */
  albAllowedPrefixListId?: pulumi.Input<string>;
  provider: k8s.Provider;
  /** The namespace (ComfyWorkload's): every gateway object waits for it, and through it for the cluster. */
  dependsOn: pulumi.Input<pulumi.Resource>[];
  tags: Record<string, string>;
}

/** What the gateway is given when GatewayArgs leaves it out. */
export const GATEWAY_DEFAULTS = {
  // ComfyUI's own default (--max-upload-size 100): the gateway refuses what a pod would refuse.
  maxUploadMb: 100,
  startupDeadlineSeconds: 900,
  historyDays: 30,
} as const;
