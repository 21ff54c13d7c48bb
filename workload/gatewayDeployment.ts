/**
 * The gateway as deployed: its DynamoDB table, its Pod Identity role, RBAC, the Deployment of two
 * replicas on the system nodes (both serve; one leads through a Lease and dispatches), its Services and PDB.
 * Everything here follows the contract in workload/gateway/README.md, which the gateway's code keeps.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { SYSTEM_NODE_LABEL } from "../cluster";
import { PodIdentityRole, Statement } from "../cluster/iam";
import { GATEWAY_STREAM_PREFIX } from "../observability/metrics";
import { NAMES, PATHS, PORTS, PREFIXES, SCALING_FIELD, SETTINGS, settingsEnv } from "./gateway/contract";
import { AGENT_NAMES } from "./models/contract";

// Ports, paths, prefixes and names come from the gateway's own contract (workload/gateway/contract.ts),
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
  // The model agent's API (workload/models/contract.ts) and the key rules it shares with the sync Lambda.
  context: ["package.json", "package-lock.json", "tsconfig.json", "workload/gateway", "observability/metrics.ts", "workload/models/contract.ts", "sync/keys.ts", "karpenter/nodeContract.ts"],
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
   * The platform's metrics log group (observability/metrics.ts metricsLogGroupName); the gateway
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
  /** Service whose EndpointSlices list the ComfyUI pods. */
  comfyuiService: string;
  /** Body limit of every request in MB (ComfyUI's --max-upload-size). */
  maxUploadMb: number;
  /** A prompt waiting this long while no pod became Ready fails with a clear error. */
  startupDeadlineSeconds: number;
  /** Days finished prompts (history) are kept. */
  historyDays: number;
  /** @defaultValue 2 (leader + hot standby) */
  replicas?: number;
  provider: k8s.Provider;
  dependsOn: pulumi.Input<pulumi.Resource>[];
  tags: Record<string, string>;
}

/** What the workload passes through to the gateway: its image, identity scope and buckets, optional timings. */
export type GatewayInputs = Pick<
  GatewayArgs,
  "imageUri" | "clusterName" | "region" | "outputsBucket" | "outputsBucketArn" | "inputsBucket" | "inputsBucketArn" | "userdataBucket" | "userdataBucketArn"
> &
  Partial<Pick<GatewayArgs, "metricsLogGroupName" | "metricsLogGroupArn" | "auditLogGroupName" | "auditLogGroupArn" | "auth">> &
  Partial<Pick<GatewayArgs, "startupDeadlineSeconds" | "historyDays" | "modelsBucket" | "modelsBucketArn">>;

/** DynamoDB actions of the contract, on the table and its indexes only. */
export const GATEWAY_TABLE_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:Query",
  // The bodies of several waiting prompts in one call (the queue view; store/dynamo.ts getBodies).
  "dynamodb:BatchGetItem",
] as const;

/** Everything the gateway's role may do: its table, its prefixes of three buckets, its metrics streams. Nothing else. */
export function gatewayStatements(p: {
  tableArn: pulumi.Input<string>;
  outputsBucketArn: pulumi.Input<string>;
  inputsBucketArn: pulumi.Input<string>;
  userdataBucketArn: pulumi.Input<string>;
  metricsLogGroupArn?: pulumi.Input<string>;
  auditLogGroupArn?: pulumi.Input<string>;
  /** The models bucket, listed (never read) for the model library. */
  modelsBucketArn?: pulumi.Input<string>;
}): Statement[] {
  // Streams gateway/<pod> of the metrics group (never another writer's, e.g. node-boot/*) and of the audit group.
  const streams = (sid: string, arn: pulumi.Input<string> | undefined): Statement[] =>
    arn
      ? [{ Sid: sid, Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: pulumi.interpolate`${arn}:log-stream:${GATEWAY_STREAM_PREFIX}*` }]
      : [];
  return [
    ...streams("MetricsStreams", p.metricsLogGroupArn),
    ...streams("AuditStreams", p.auditLogGroupArn),
    {
      Sid: "OwnTable",
      Effect: "Allow",
      Action: [...GATEWAY_TABLE_ACTIONS],
      Resource: [p.tableArn, pulumi.interpolate`${p.tableArn}/index/*`],
    },
    {
      Sid: "GatewayOutputs",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      Resource: pulumi.interpolate`${p.outputsBucketArn}/${GATEWAY_OUTPUTS_PREFIX}*`,
    },
    {
      // Unconditioned on purpose: S3 answers a GetObject of a missing key with 404 only when the
      // caller may s3:ListBucket the bucket, else 403 (S3 API reference, GetObject "Permissions"), and
      // a prefix condition has no s3:prefix to match there. /view and the settings read need the 404.
      Sid: "ListGatewayOutputs",
      Effect: "Allow",
      Action: "s3:ListBucket",
      Resource: p.outputsBucketArn,
    },
    {
      // Uploads land where every ComfyUI pod's input mount reads them; the gateway never deletes inputs.
      Sid: "Inputs",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject"],
      Resource: pulumi.interpolate`${p.inputsBucketArn}/*`,
    },
    { Sid: "ListInputs", Effect: "Allow", Action: "s3:ListBucket", Resource: p.inputsBucketArn },
    {
      Sid: "UserState",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      Resource: pulumi.interpolate`${p.userdataBucketArn}/${GATEWAY_USERDATA_PREFIX}*`,
    },
    // The user-state bucket holds nothing but the gateway's user/ tree; listing it is unconditioned for the same 404.
    { Sid: "ListUserState", Effect: "Allow", Action: "s3:ListBucket", Resource: p.userdataBucketArn },
    // The model library is the models bucket's listing; the nodes' agents read the objects, the gateway never does.
    ...(p.modelsBucketArn ? [{ Sid: "ListModels", Effect: "Allow" as const, Action: "s3:ListBucket", Resource: p.modelsBucketArn }] : []),
  ];
}

/** What the gateway reads and patches through the Kubernetes API, in its namespace only (README "Kubernetes"). */
export const GATEWAY_RBAC_RULES = [
  { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["get", "patch"] },
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
];

/**
 * Cluster-wide and read-only: the Node of a ComfyUI pod that just turned Ready (creation time =
 * kubelet registered; the boot-at label = kernel start), for the cold-start figures. Nodes are
 * cluster-scoped, so a namespaced Role cannot grant this; `get` only, no list or watch.
 */
export const GATEWAY_CLUSTER_RBAC_RULES = [{ apiGroups: [""], resources: ["nodes"], verbs: ["get"] }];

export class ComfyGateway extends pulumi.ComponentResource {
  readonly tableName: pulumi.Output<string>;
  readonly tableArn: pulumi.Output<string>;
  readonly serviceName: pulumi.Output<string>;
  readonly deployment: k8s.apps.v1.Deployment;
  /** Everything the gateway's Services select on, for NetworkPolicies. */
  readonly labels = GATEWAY_LABELS;

  constructor(name: string, args: GatewayArgs, opts?: pulumi.ComponentResourceOptions) {
    if (args.metricsLogGroupName && !args.metricsLogGroupArn) {
      throw new pulumi.InputPropertyError({ propertyPath: "gateway.metricsLogGroupArn", reason: "required with metricsLogGroupName (the role is scoped to that group)" });
    }
    if (args.auditLogGroupName && !args.auditLogGroupArn) {
      throw new pulumi.InputPropertyError({ propertyPath: "gateway.auditLogGroupArn", reason: "required with auditLogGroupName (the role is scoped to that group)" });
    }
    super("comfyui:workload:Gateway", name, {}, opts);
    const parent = { parent: this };
    const k = { parent: this, provider: args.provider };

    // Prompts, queue and history: on demand (an idle studio costs nothing), point-in-time recovery on.
    // DynamoDB encrypts every table at rest and that cannot be turned off (DynamoDB DG "encryption at
    // rest usage notes"); the AWS-owned key needs no KMS permissions on the gateway's role.
    const table = new aws.dynamodb.Table(
      `${name}-table`,
      {
        billingMode: "PAY_PER_REQUEST",
        hashKey: "pk",
        rangeKey: "sk",
        attributes: [
          { name: "pk", type: "S" },
          { name: "sk", type: "S" },
          { name: "open", type: "S" },
          { name: "openKey", type: "S" },
          { name: "hist", type: "S" },
          { name: "histKey", type: "S" },
          { name: "uhist", type: "S" },
        ],
        globalSecondaryIndexes: [
          { name: "open", hashKey: "open", rangeKey: "openKey", projectionType: "ALL" },
          { name: "history", hashKey: "hist", rangeKey: "histKey", projectionType: "ALL" },
          // Each user's own history, a page at a time (store/dynamo.ts listHistory with an owner).
          { name: "userHistory", hashKey: "uhist", rangeKey: "histKey", projectionType: "ALL" },
        ],
        ttl: { attributeName: "expiresAt", enabled: true },
        pointInTimeRecovery: { enabled: true },
        deletionProtectionEnabled: false,
        tags: args.tags,
      },
      parent,
    );

    const role = new PodIdentityRole(
      `${name}-role`,
      {
        clusterName: args.clusterName,
        namespace: args.namespace,
        serviceAccount: GATEWAY_NAME,
        statements: gatewayStatements({
          tableArn: table.arn,
          outputsBucketArn: args.outputsBucketArn,
          inputsBucketArn: args.inputsBucketArn,
          userdataBucketArn: args.userdataBucketArn,
          metricsLogGroupArn: args.metricsLogGroupName ? args.metricsLogGroupArn : undefined,
          auditLogGroupArn: args.auditLogGroupName ? args.auditLogGroupArn : undefined,
          modelsBucketArn: args.modelsBucket ? args.modelsBucketArn : undefined,
        }),
        tags: args.tags,
      },
      parent,
    );

    const sa = new k8s.core.v1.ServiceAccount(`${name}-sa`, { metadata: { name: GATEWAY_NAME, namespace: args.namespace } }, { ...k, dependsOn: args.dependsOn });
    const rbacRole = new k8s.rbac.v1.Role(`${name}-rbac`, { metadata: { name: GATEWAY_NAME, namespace: args.namespace }, rules: GATEWAY_RBAC_RULES }, { ...k, dependsOn: args.dependsOn });
    const binding = new k8s.rbac.v1.RoleBinding(
      `${name}-rbac`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: GATEWAY_NAME },
        subjects: [{ kind: "ServiceAccount", name: GATEWAY_NAME, namespace: args.namespace }],
      },
      { ...k, dependsOn: [rbacRole, sa] },
    );
    // Cluster-scoped names carry the namespace, so two stacks on one cluster do not collide.
    const clusterRbacName = `${GATEWAY_NAME}-${args.namespace}-nodes`;
    const clusterRole = new k8s.rbac.v1.ClusterRole(`${name}-nodes`, { metadata: { name: clusterRbacName }, rules: GATEWAY_CLUSTER_RBAC_RULES }, { ...k, dependsOn: args.dependsOn });
    const clusterBinding = new k8s.rbac.v1.ClusterRoleBinding(
      `${name}-nodes`,
      {
        metadata: { name: clusterRbacName },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: clusterRbacName },
        subjects: [{ kind: "ServiceAccount", name: GATEWAY_NAME, namespace: args.namespace }],
      },
      { ...k, dependsOn: [clusterRole, sa] },
    );

    // The replicas' shared token (the replica link and the leader's internal routes): random, only ever
    // in a Secret and the state's secrets, never a plain env value.
    const token = new random.RandomPassword(`${name}-internal-token`, { length: 48, special: false }, parent);
    const tokenSecret = new k8s.core.v1.Secret(
      `${name}-internal-token`,
      { metadata: { name: GATEWAY_INTERNAL_SECRET, namespace: args.namespace, labels: GATEWAY_LABELS }, type: "Opaque", stringData: { [GATEWAY_INTERNAL_SECRET_KEY]: token.result } },
      { ...k, dependsOn: args.dependsOn },
    );

    const auth = args.auth ?? "oidc";
    const env = gatewayEnv(args, table.name);
    this.deployment = new k8s.apps.v1.Deployment(
      `${name}-deploy`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: {
          replicas: args.replicas ?? 2,
          selector: { matchLabels: GATEWAY_LABELS },
          // Surge first: every replica serves (a new one follows the leader and is Ready), so the old one
          // goes once the new one is Ready; a leader that leaves hands the Lease over at once.
          strategy: { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
          template: {
            metadata: { labels: { ...GATEWAY_LABELS } },
            spec: {
              serviceAccountName: GATEWAY_NAME,
              nodeSelector: { ...SYSTEM_NODE_LABEL },
              // Leader and standby on different nodes, so one node's loss keeps a gateway.
              affinity: {
                podAntiAffinity: {
                  preferredDuringSchedulingIgnoredDuringExecution: [
                    { weight: 100, podAffinityTerm: { topologyKey: "kubernetes.io/hostname", labelSelector: { matchLabels: GATEWAY_LABELS } } },
                  ],
                },
              },
              terminationGracePeriodSeconds: 30,
              securityContext: { runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001, seccompProfile: { type: "RuntimeDefault" } },
              containers: [
                {
                  name: "gateway",
                  image: args.imageUri,
                  ports: [
                    { name: "http", containerPort: GATEWAY_PORT },
                    { name: "internal", containerPort: GATEWAY_ADMIN_PORT },
                  ],
                  env: [
                    ...Object.entries(env).map(([n, value]) => ({ name: n, value })),
                    { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                    // Written on the Lease while this replica leads: where the others follow it.
                    { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                    { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                    { name: SETTINGS.internalToken.env, valueFrom: { secretKeyRef: { name: GATEWAY_INTERNAL_SECRET, key: GATEWAY_INTERNAL_SECRET_KEY } } },
                    // The model agents' token (workload/modelsAgent.ts writes the Secret); optional: no agents, no token.
                    ...(args.modelsBucket ? [{ name: SETTINGS.modelsAgentToken.env, valueFrom: { secretKeyRef: { name: AGENT_NAMES.tokenSecret, key: AGENT_NAMES.tokenSecretKey, optional: true } } }] : []),
                  ],
                  resources: { requests: { cpu: "250m", memory: "256Mi" }, limits: { memory: "1Gi" } },
                  securityContext: RESTRICTED_CONTAINER,
                  // Ready = serving, on every replica (leader or follower): `pulumi up`'s wait and a rollout
                  // finish (Kubernetes completes a Deployment when every replica is available).
                  readinessProbe: { httpGet: { path: GATEWAY_READY_PATH, port: "internal" }, periodSeconds: 2, failureThreshold: 2 },
                  livenessProbe: { httpGet: { path: GATEWAY_HEALTH_PATH, port: "internal" }, periodSeconds: 10, failureThreshold: 3 },
                  volumeMounts: [
                    { name: "tmp", mountPath: "/tmp" },
                    ...(auth === "oidc" ? [{ name: "oidc", mountPath: GATEWAY_OIDC_DIR, readOnly: true }] : []),
                  ],
                },
              ],
              volumes: [
                { name: "tmp", emptyDir: { sizeLimit: "1Gi" } },
                // The sign-in settings exist only once the issuer's client does, and that needs the site's
                // address, which needs this Deployment's ALB: so the Secret is optional here, written later in
                // the same `pulumi up` (gatewayOidcSecret), and the gateway re-reads the file every 15 s.
                // Until then sign-in answers 503 and API keys work. The kubelet refreshes a Secret volume on its
                // sync period, so the file appears without a restart (Kubernetes docs, "Mounted Secrets are
                // updated automatically"; not with subPath, which is why the whole folder is mounted).
                ...(auth === "oidc" ? [{ name: "oidc", secret: { secretName: GATEWAY_OIDC_SECRET, optional: true, defaultMode: 0o440 } }] : []),
              ],
            },
          },
        },
      },
      { ...k, dependsOn: [binding, clusterBinding, role, tokenSecret, ...args.dependsOn] },
    );

    const service = new k8s.core.v1.Service(
      `${name}-svc`,
      {
        metadata: { name: GATEWAY_NAME, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: { type: "ClusterIP", selector: GATEWAY_LABELS, ports: [{ name: "http", port: GATEWAY_PORT, targetPort: "http" }] },
      },
      { ...k, dependsOn: args.dependsOn },
    );
    new k8s.core.v1.Service(
      `${name}-metrics-svc`,
      {
        metadata: { name: GATEWAY_METRICS_SERVICE, namespace: args.namespace, labels: GATEWAY_LABELS },
        spec: {
          type: "ClusterIP",
          selector: GATEWAY_LABELS,
          // Every replica answers the scaling figure from the store: during a hand-over the trigger
          // must not see zero endpoints (an erroring trigger blocks KEDA's scale to zero).
          publishNotReadyAddresses: true,
          ports: [{ name: "internal", port: GATEWAY_ADMIN_PORT, targetPort: "internal" }],
        },
      },
      { ...k, dependsOn: args.dependsOn },
    );
    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      // One replica may go at a time (a drain, a node group upgrade); the other serves meanwhile.
      { metadata: { name: GATEWAY_NAME, namespace: args.namespace }, spec: { maxUnavailable: 1, selector: { matchLabels: GATEWAY_LABELS } } },
      { ...k, dependsOn: args.dependsOn },
    );

    this.tableName = table.name;
    this.tableArn = table.arn;
    this.serviceName = service.metadata.name;
    this.registerOutputs({ tableName: this.tableName, serviceName: this.serviceName });
  }
}

/**
 * The gateway container's env, named by the gateway's settings table (contract.ts); POD_NAME, POD_NAMESPACE
 * and POD_IP come from the downward API. test/program renders it and loads it with the gateway's loader.
 */
export function gatewayEnv(args: GatewayArgs, tableName: pulumi.Input<string>): Record<string, pulumi.Input<string>> {
  const auth = args.auth ?? "oidc";
  return {
    GATEWAY_MODE: "kubernetes",
    ...settingsEnv<pulumi.Input<string>>({
      auth,
      oidcFile: auth === "oidc" ? `${GATEWAY_OIDC_DIR}/${GATEWAY_OIDC_FILE}` : undefined,
      auditLogGroup: args.auditLogGroupName,
      port: String(GATEWAY_PORT),
      adminPort: String(GATEWAY_ADMIN_PORT),
      table: tableName,
      region: args.region,
      outputsBucket: args.outputsBucket,
      outputsPrefix: GATEWAY_OUTPUTS_PREFIX,
      inputsBucket: args.inputsBucket,
      userdataBucket: args.userdataBucket,
      comfyuiService: args.comfyuiService,
      leaseName: GATEWAY_NAME,
      maxUploadMb: String(args.maxUploadMb),
      startupDeadlineSeconds: String(args.startupDeadlineSeconds),
      historyTtlDays: String(args.historyDays),
      clusterName: args.clusterName,
      metricsLogGroup: args.metricsLogGroupName,
      modelsBucket: args.modelsBucket,
    }),
  };
}

/**
 * The sign-in settings Secret the gateway's Deployment mounts (optional there): written once the issuer's
 * client exists, after the site's address is known. The whole file is one secret value.
 */
export function gatewayOidcSecret(
  name: string,
  args: {
    namespace: string;
    oidc: { issuer: pulumi.Input<string>; clientId: pulumi.Input<string>; clientSecret: pulumi.Input<string>; publicUrl: pulumi.Input<string>; logoutUrl?: pulumi.Input<string> };
    provider: k8s.Provider;
    dependsOn?: pulumi.Input<pulumi.Resource>[];
  },
  opts?: pulumi.CustomResourceOptions,
): k8s.core.v1.Secret {
  const file = pulumi.secret(
    pulumi.all([args.oidc.issuer, args.oidc.clientId, args.oidc.clientSecret, args.oidc.publicUrl, args.oidc.logoutUrl]).apply(([issuer, clientId, clientSecret, publicUrl, logoutUrl]) =>
      JSON.stringify({ issuer, clientId, clientSecret, publicUrl, ...(logoutUrl ? { logoutUrl } : {}) }),
    ),
  );
  return new k8s.core.v1.Secret(
    name,
    { metadata: { name: GATEWAY_OIDC_SECRET, namespace: args.namespace, labels: GATEWAY_LABELS }, type: "Opaque", stringData: { [GATEWAY_OIDC_FILE]: file } },
    { ...opts, provider: args.provider, dependsOn: args.dependsOn },
  );
}

/** The KEDA trigger on the gateway's figure: never an error, 0 when idle, able to wake from zero. */
export function gatewayScalingTrigger(namespace: string, promptsPerPod: number): Record<string, unknown> {
  return {
    type: "metrics-api",
    name: "gateway-prompts",
    metadata: {
      url: `http://${GATEWAY_METRICS_SERVICE}.${namespace}.svc.cluster.local:${GATEWAY_ADMIN_PORT}${GATEWAY_SCALING_PATH}`,
      format: "json",
      valueLocation: GATEWAY_SCALING_FIELD,
      targetValue: String(promptsPerPod),
      activationTargetValue: "0",
    },
  };
}
