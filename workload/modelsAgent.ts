/**
 * The model agent as deployed: a DaemonSet on every GPU node that keeps the node's models folder
 * (NVMe) as a cache of the models bucket, with its own ServiceAccount and a Pod Identity role that
 * can only read that bucket, a token shared with the gateway, a headless Service (its EndpointSlices
 * tell the gateway each agent's address and node), and a NetworkPolicy that admits only gateway pods
 * to the API. The agent's code and API: workload/models/ (contract.ts is the API).
 *
 * ComfyUI pods still get no AWS credentials: only this DaemonSet's ServiceAccount is associated.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { PodIdentityRole, Statement } from "../cluster/iam";
import { GPU_POOL_LABEL, GPU_TAINT, NODE_MODELS_DIR, modelsReserveGb } from "../contracts/node";
import type { GpuNodeDaemonSet } from "../karpenter/nodeDaemonSets";
import { GATEWAY_LABELS } from "./gatewayDeployment";
import { AGENT_HEALTH_PORT, AGENT_LABELS, AGENT_NAMES, AGENT_PATHS, AGENT_PORT, checkPinEntry } from "../contracts/modelsAgent";

/**
 * The agent image's build context, relative to the repository root (workload/models/Dockerfile's header
 * lists the same files; the image builder hashes exactly these). For index.ts's `additionalImages`.
 */
export const MODELS_AGENT_IMAGE = {
  context: ["package.json", "package-lock.json", "tsconfig.json", "workload/models", "contracts"],
  dockerfile: "workload/models/Dockerfile",
} as const;

/** Where the DaemonSet mounts the node's models folder. */
export const AGENT_MODELS_MOUNT = "/models";

/**
 * The agent pod's requests, counted on every GPU node (karpenter/nodeDaemonSets.ts): CPU is shared, not
 * reserved for the agent's bursts (a download uses a core for TLS and MD5 while ComfyUI waits for that
 * very model), so the request is small and there is no CPU limit. Memory: Node's baseline plus the
 * ranges in flight (1 MiB write batches per connection); the limit leaves room for a burst of
 * connections (docs/benchmarks.md "Model agent" has the measured RSS).
 */
export const MODELS_AGENT_RESOURCES = { requests: { cpu: "50m", memory: "128Mi" }, limits: { memory: "512Mi" } } as const;

/** This DaemonSet's entry for karpenter/nodeDaemonSets.ts GPU_NODE_DAEMONSETS (the stack adds it when it wires the agent). */
export function modelsAgentGpuDaemonSet(namespace: string): GpuNodeDaemonSet {
  return {
    name: `${namespace}/${AGENT_NAMES.agent}`,
    installedBy: "workload/modelsAgent.ts: the model agent's DaemonSet (nodeSelector comfyui.studio/pool=gpu, tolerates nvidia.com/gpu)",
    source: "workload/modelsAgent.ts MODELS_AGENT_RESOURCES: one container, 50m/128Mi",
    cpuMilli: 50,
    memoryMiB: 128,
  };
}

/**
 * The role's whole policy: read the models bucket (GetObject also authorizes HeadObject; ListBucket
 * authorizes ListObjectsV2 and HeadBucket, and makes S3 answer 404 rather than 403 for a missing key,
 * S3 API reference GetObject "Permissions"), and decrypt with the bucket's KMS key when it has one.
 * The models bucket is SSE-S3 (storage/index.ts secureBucketSettings: AES256), which needs no KMS
 * permission; a customer managed key would (S3 UG "Using server-side encryption with AWS KMS keys":
 * GetObject of an SSE-KMS object needs kms:Decrypt), scoped to S3 in this region by kms:ViaService.
 */
export function modelsAgentStatements(p: { modelsBucketArn: pulumi.Input<string>; region: string; kmsKeyArn?: pulumi.Input<string> }): Statement[] {
  const statements: Statement[] = [
    { Sid: "ReadModels", Effect: "Allow", Action: "s3:GetObject", Resource: pulumi.interpolate`${p.modelsBucketArn}/*` },
    { Sid: "ListModels", Effect: "Allow", Action: "s3:ListBucket", Resource: p.modelsBucketArn },
  ];
  if (p.kmsKeyArn) {
    statements.push({ Sid: "DecryptModels", Effect: "Allow", Action: "kms:Decrypt", Resource: p.kmsKeyArn, Condition: { StringEquals: { "kms:ViaService": `s3.${p.region}.amazonaws.com` } } });
  }
  return statements;
}

export interface ModelsAgentArgs {
  namespace: string;
  /** `repo@sha256:…` of the agent image (MODELS_AGENT_IMAGE). */
  imageUri: pulumi.Input<string>;
  clusterName: pulumi.Input<string>;
  region: string;
  modelsBucket: pulumi.Input<string>;
  modelsBucketArn: pulumi.Input<string>;
  /** The bucket's customer managed KMS key, if it has one. @defaultValue none (the models bucket is SSE-S3) */
  modelsKmsKeyArn?: pulumi.Input<string>;
  /**
   * The VPC's CIDR: admitted to the probes' port only (the kubelet probes from the node's address). The
   * VPC CNI's policy agent also admits the node's own address by itself (aws/aws-network-policy-agent#56,
   * maintainer's answer); this rule keeps the probes working if it did not. @defaultValue none
   */
  vpcCidr?: pulumi.Input<string>;
  /** Most GB the cache may hold on a node; 0 = the array less the reserve. @defaultValue 0 */
  cacheGb?: number;
  /**
   * GB of the array the cache never uses: modelsReserveGb(the most GPUs of a configured type), the same
   * reserve the boot's pinned copy keeps (docs/models.md). @defaultValue modelsReserveGb(1) = 60
   */
  reserveGb?: pulumi.Input<number>;
  /** And this share of the array: kubelet's evictionHard nodefs.available (10%, nodeadm's default). @defaultValue 10 */
  reservePercent?: number;
  /** The hot set: files and folders (`loras/`) every node keeps and fetches at once. @defaultValue [] */
  pinned?: string[];
  /** Open GETs per node. @defaultValue 32 */
  connections?: number;
  provider: k8s.Provider;
  dependsOn?: pulumi.Input<pulumi.Resource>[];
  tags: Record<string, string>;
}

export class ModelsAgent extends pulumi.ComponentResource {
  readonly daemonSet: k8s.apps.v1.DaemonSet;
  readonly roleArn: pulumi.Output<string>;
  /** The Secret (and key) holding the token; the gateway's Deployment reads the same one. */
  readonly tokenSecretName = AGENT_NAMES.tokenSecret;
  readonly tokenSecretKey = AGENT_NAMES.tokenSecretKey;
  /** The headless Service whose EndpointSlices list the agents (with each one's nodeName). */
  readonly serviceName = AGENT_NAMES.agent;

  constructor(name: string, args: ModelsAgentArgs, opts?: pulumi.ComponentResourceOptions) {
    const pinned = args.pinned ?? [];
    for (const p of pinned) {
      const c = checkPinEntry(p);
      if (!c.ok) throw new pulumi.InputPropertyError({ propertyPath: "modelsAgent.pinned", reason: `'${p}': ${c.reason}` });
    }
    super("comfyui:workload:ModelsAgent", name, {}, opts);
    const parent = { parent: this };
    const k = { parent: this, provider: args.provider, dependsOn: args.dependsOn };
    const ns = args.namespace;

    const role = new PodIdentityRole(
      `${name}-role`,
      {
        clusterName: args.clusterName,
        namespace: ns,
        serviceAccount: AGENT_NAMES.agent,
        statements: modelsAgentStatements({ modelsBucketArn: args.modelsBucketArn, region: args.region, kmsKeyArn: args.modelsKmsKeyArn }),
        tags: args.tags,
      },
      parent,
    );
    this.roleArn = role.roleArn;
    // No Kubernetes API access: Pod Identity's credentials come through the volume the EKS webhook
    // projects, not the ServiceAccount token.
    const sa = new k8s.core.v1.ServiceAccount(`${name}-sa`, { metadata: { name: AGENT_NAMES.agent, namespace: ns, labels: AGENT_LABELS }, automountServiceAccountToken: false }, k);

    const token = new random.RandomPassword(`${name}-token`, { length: 48, special: false }, parent);
    const secret = new k8s.core.v1.Secret(
      `${name}-token`,
      { metadata: { name: AGENT_NAMES.tokenSecret, namespace: ns, labels: AGENT_LABELS }, type: "Opaque", stringData: { [AGENT_NAMES.tokenSecretKey]: token.result } },
      k,
    );

    const flags = [
      ["--models-dir", AGENT_MODELS_MOUNT],
      ["--bucket", args.modelsBucket],
      ["--region", args.region],
      ["--cache-gb", String(args.cacheGb ?? 0)],
      ["--reserve-gb", pulumi.output(args.reserveGb ?? modelsReserveGb(1)).apply(String)],
      ["--reserve-percent", String(args.reservePercent ?? 10)],
      ["--connections", String(args.connections ?? 32)],
      ["--port", String(AGENT_PORT)],
      ["--health-port", String(AGENT_HEALTH_PORT)],
      ["--host", "0.0.0.0"],
      // The node's SSM command (the sync Lambda's bucket changes) reaches the agent here, as root.
      ["--socket", "auto"],
      ...pinned.map((p) => ["--pin", p]),
    ].flat() as pulumi.Input<string>[];

    const probe = (path: string) => ({ httpGet: { path, port: "health" } });
    this.daemonSet = new k8s.apps.v1.DaemonSet(
      `${name}-ds`,
      {
        metadata: { name: AGENT_NAMES.agent, namespace: ns, labels: AGENT_LABELS },
        spec: {
          selector: { matchLabels: AGENT_LABELS },
          updateStrategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1 } },
          template: {
            metadata: { labels: { ...AGENT_LABELS } },
            spec: {
              serviceAccountName: AGENT_NAMES.agent,
              automountServiceAccountToken: false,
              // Exactly the GPU NodePool's nodes (karpenter/index.ts puts this label and taint on them).
              nodeSelector: { ...GPU_POOL_LABEL },
              tolerations: [{ key: GPU_TAINT.key, operator: "Exists", effect: GPU_TAINT.effect }],
              // A stop cancels downloads (their staging files go) and writes the index: seconds.
              terminationGracePeriodSeconds: 30,
              containers: [
                {
                  name: "agent",
                  image: args.imageUri,
                  args: flags,
                  env: [
                    { name: AGENT_NAMES.tokenEnv, valueFrom: { secretKeyRef: { name: AGENT_NAMES.tokenSecret, key: AGENT_NAMES.tokenSecretKey } } },
                    { name: "AWS_REGION", value: args.region },
                    // libuv's pool does the file writes and reads of every range: more than its default 4.
                    { name: "UV_THREADPOOL_SIZE", value: "16" },
                  ],
                  ports: [
                    { name: "api", containerPort: AGENT_PORT, protocol: "TCP" },
                    { name: "health", containerPort: AGENT_HEALTH_PORT, protocol: "TCP" },
                  ],
                  resources: MODELS_AGENT_RESOURCES,
                  // Root, because the models folder the user data creates on the array is root's (mode
                  // 0755) and files there are root's; without capabilities (no DAC override, no chown),
                  // so root here can write only what root owns: that folder, not the rest of the node.
                  securityContext: {
                    runAsUser: 0,
                    runAsGroup: 0,
                    runAsNonRoot: false,
                    allowPrivilegeEscalation: false,
                    readOnlyRootFilesystem: true,
                    capabilities: { drop: ["ALL"] },
                    seccompProfile: { type: "RuntimeDefault" },
                  },
                  readinessProbe: { ...probe(AGENT_PATHS.health), periodSeconds: 5, failureThreshold: 2 },
                  livenessProbe: { ...probe(AGENT_PATHS.health), periodSeconds: 20, failureThreshold: 3, timeoutSeconds: 5 },
                  volumeMounts: [
                    { name: "models", mountPath: AGENT_MODELS_MOUNT },
                    { name: "tmp", mountPath: "/tmp" },
                  ],
                },
              ],
              volumes: [
                // The same folder ComfyUI mounts read-only (workload/index.ts). One mount for the model
                // folders and the agent's staging folder inside it, so the final rename stays on one
                // mount (contract.ts AGENT_PRIVATE_DIR). Directory: it exists once the user data set up
                // the array; the pod waits rather than filling the root volume.
                { name: "models", hostPath: { path: NODE_MODELS_DIR, type: "Directory" } },
                { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
              ],
            },
          },
        },
      },
      { ...k, dependsOn: [sa, secret, role, ...((args.dependsOn as pulumi.Resource[] | undefined) ?? [])] },
    );

    // Headless: the gateway reads its EndpointSlices (address and nodeName of each ready agent) and
    // calls the agent on the node of the ComfyUI pod it dispatches to.
    new k8s.core.v1.Service(
      `${name}-svc`,
      {
        metadata: { name: AGENT_NAMES.agent, namespace: ns, labels: AGENT_LABELS },
        spec: { clusterIP: "None", selector: AGENT_LABELS, ports: [{ name: "api", port: AGENT_PORT, targetPort: "api", protocol: "TCP" }] },
      },
      k,
    );

    // The namespace denies all ingress by default (workload/index.ts); this admits the gateway's pods to
    // the API port and, when given, the VPC (the node's kubelet) to the probes' port only. The VPC CNI
    // enforces policies on pods with an owner (EKS UG cni-network-policy "Considerations": not on
    // standalone pods without metadata.ownerReferences); a DaemonSet's pods have one.
    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol`,
      {
        metadata: { name: "allow-gateway-to-models-agent", namespace: ns },
        spec: {
          podSelector: { matchLabels: AGENT_LABELS },
          policyTypes: ["Ingress"],
          ingress: [
            { from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: AGENT_PORT }] },
            ...(args.vpcCidr ? [{ from: [{ ipBlock: { cidr: args.vpcCidr } }], ports: [{ protocol: "TCP", port: AGENT_HEALTH_PORT }] }] : []),
          ],
        },
      },
      k,
    );

    this.registerOutputs({ roleArn: this.roleArn });
  }
}
