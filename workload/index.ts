/**
 * ComfyUI itself: namespace, the GPU Deployment (models from the node's NVMe, outputs through the
 * uploader sidecar to S3, inputs on Mountpoint), the gateway that makes every pod one ComfyUI and
 * is the ALB's only target (gatewayDeployment.ts), Services, the ALB Ingress, disruption and network
 * policies, and KEDA autoscaling of the ComfyUI pods on the gateway's queue figure (to zero when
 * idle, with an optional working-hours floor).
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { GPU_POOL_LABEL, GPU_TAINT, NODE_MODELS_DIR } from "../karpenter/nodeContract";
import { SYSTEM_NODE_LABEL } from "../cluster";
import { COMFYUI_GID, COMFYUI_UID } from "../storage";
import { scaledObjectSpec } from "./autoscaling";
import { CHARTS } from "../versions";
import { ComfyGateway, GatewayInputs, RESTRICTED_CONTAINER, GATEWAY_ADMIN_PORT, GATEWAY_LABELS, GATEWAY_NAME, GATEWAY_PORT, GATEWAY_PUBLIC_HEALTH_PATH } from "./gatewayDeployment";


export const COMFYUI_PORT = 8848;
/** The Service whose EndpointSlices tell the gateway which ComfyUI pods are ready. */
export const COMFYUI_PODS_SERVICE = "comfyui-queue";

const TOOLS_DIR = "/opt/comfyui-tools";
const read = (rel: string) => fs.readFileSync(path.join(__dirname, rel), "utf8");

export interface WorkloadArgs {
  namespace: string;
  /** `repo@sha256:…` of the pushed ComfyUI image. */
  imageUri: pulumi.Input<string>;
  /** The gateway: its image and what it stores where. */
  gateway: GatewayInputs;
  /** PersistentVolume names from storage/. */
  outputsVolumeName: pulumi.Input<string>;
  inputsVolumeName: pulumi.Input<string>;
  /** CPU and memory requested by each ComfyUI container: one GPU's share on the tightest type (karpenter/gpuTypes.ts). */
  podResources: pulumi.Input<{ cpu: string; memory: string }>;
  /** Seconds a stopping pod may spend finishing its queue (terminationGracePeriodSeconds). */
  drainSeconds: number;
  /** ALB name (≤ 32 characters), fixed so edge/ can find this exact ALB. */
  albName: string;
  vpcId: pulumi.Input<string>;
  vpcCidr: string;
  /**
   * Where ComfyUI pods may open connections besides cluster DNS (custom nodes that call APIs).
   * @defaultValue [] (none: a custom node cannot send data anywhere)
   */
  comfyuiEgressCidrs?: string[];
  /** Managed prefix list allowed into the ALB (CloudFront's origin-facing list); undefined: nothing from outside the VPC. */
  albAllowedPrefixListId?: pulumi.Input<string>;
  autoscaling: {
    minReplicas: number;
    maxReplicas: number;
    queuePerPod: number;
    idleMinutes: number;
    workingHours?: { start: string; end: string; timezone: string; replicas: number };
  };
  provider: k8s.Provider;
  /** Cluster readiness (LB controller, CoreDNS …) and the GPU NodePool. */
  dependsOn: pulumi.Resource[];
  tags: Record<string, string>;
}

export class ComfyWorkload extends pulumi.ComponentResource {
  readonly namespace: pulumi.Output<string>;
  readonly deploymentName: pulumi.Output<string>;
  readonly serviceName: pulumi.Output<string>;
  /** DNS name of the internal ALB the Ingress produced. */
  readonly albHostname: pulumi.Output<string>;
  /** The ALB's name, resolvable only after the Ingress has its load balancer. */
  readonly albName: pulumi.Output<string>;
  readonly albSecurityGroupId: pulumi.Output<string>;
  readonly gatewayTableName: pulumi.Output<string>;

  constructor(name: string, args: WorkloadArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:workload:ComfyWorkload", name, {}, opts);
    const k = { parent: this, provider: args.provider };
    const ns = args.namespace;
    const podResources = pulumi.output(args.podResources);
    const pod = { cpu: podResources.cpu, memory: podResources.memory };

    const namespace = new k8s.core.v1.Namespace(
      `${name}-ns`,
      { metadata: { name: ns, labels: {
            "app.kubernetes.io/part-of": "comfyui",
            // Not enforced: the model folder is a hostPath (node NVMe), which every enforced level forbids.
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
            // The LB controller injects ALB target-health readiness gates into pods that are targets
            // of its target groups: here only the gateway's (ComfyUI pods are no ALB target).
            "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled",
          },
        },
      },
      // Deleting the namespace waits for every pod in it, and a ComfyUI pod may drain for drainSeconds.
      { ...k, dependsOn: args.dependsOn, customTimeouts: { delete: deleteTimeout(args.drainSeconds) } },
    );
    const nsDeps = { ...k, dependsOn: [namespace] };

    const labels = { comfyui: { "app.kubernetes.io/name": "comfyui", "app.kubernetes.io/component": "comfyui" } };

    const tools = new k8s.core.v1.ConfigMap(
      `${name}-tools`,
      { metadata: { name: "comfyui-tools", namespace: ns }, data: { "drain.py": read("drain/drain.py"), "uploader.py": read("uploader/uploader.py") } },
      nsDeps,
    );
    const toolsHash = hash(read("drain/drain.py") + read("uploader/uploader.py"));

    const comfySa = new k8s.core.v1.ServiceAccount(`${name}-sa`, { metadata: { name: "comfyui", namespace: ns }, automountServiceAccountToken: false }, nsDeps);
    for (const key of ["outputs", "inputs"] as const) {
      new k8s.core.v1.PersistentVolumeClaim(
        `${name}-${key}-pvc`,
        {
          metadata: { name: `comfyui-${key}`, namespace: ns },
          spec: {
            accessModes: ["ReadWriteMany"],
            storageClassName: "",
            volumeName: key === "outputs" ? args.outputsVolumeName : args.inputsVolumeName,
            resources: { requests: { storage: "1Ti" } },
          },
        },
        nsDeps,
      );
    }

    const httpGet = (p: string) => ({ httpGet: { path: p, port: "http" } });
    // The drain must end before the kubelet's SIGKILL; keep a margin for the uploader's final flush.
    const drainDeadline = Math.max(10, args.drainSeconds - 30);

    const deployment = new k8s.apps.v1.Deployment(
      `${name}-comfyui`,
      {
        metadata: {
          name: "comfyui",
          namespace: ns,
          labels: labels.comfyui,
          // A rollout replaces GPU pods one by one, each draining for up to drainSeconds: `pulumi up`
          // must not wait for it (nor, on the first deploy, for a GPU node that a new account's
          // zero G-instance quota may never grant). `kubectl rollout status` follows it.
          annotations: { "pulumi.com/skipAwait": "true" },
        },
        spec: {
          // Created with no GPU pod; from then on KEDA's HPA owns the count (ignoreChanges below).
          replicas: 0,
          selector: { matchLabels: labels.comfyui },
          // No surge: at the cap (maxReplicas = gpuLimit) a surge pod could never get a GPU and the
          // rollout would stall. One pod is replaced at a time instead; its drain finishes its prompt.
          strategy: { type: "RollingUpdate", rollingUpdate: rolloutAtCap() },
          template: {
            metadata: {
              labels: { ...labels.comfyui },
              annotations: {
                // Consolidation and drift never evict a pod that may be generating.
                "karpenter.sh/do-not-disrupt": "true",
                "comfyui.studio/tools-hash": toolsHash,
              },
            },
            spec: {
              serviceAccountName: "comfyui",
              automountServiceAccountToken: false,
              terminationGracePeriodSeconds: args.drainSeconds,
              nodeSelector: { ...GPU_POOL_LABEL },
              tolerations: [{ key: GPU_TAINT.key, operator: "Exists", effect: GPU_TAINT.effect }],
              securityContext: { runAsUser: COMFYUI_UID, runAsGroup: COMFYUI_GID, fsGroup: COMFYUI_GID, runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } },
              initContainers: [
                {
                  // A native sidecar: it stops after ComfyUI, so its SIGTERM flush sees every last output.
                  name: "uploader",
                  image: args.imageUri,
                  restartPolicy: "Always",
                  command: ["/bin/sh", "-c"],
                  // One folder per pod: two pods' ComfyUI counters would otherwise pick the same names.
                  args: [`mkdir -p "/mnt/outputs/$POD_NAME" && exec python3 ${TOOLS_DIR}/uploader.py --source /app/ComfyUI/output --dest "/mnt/outputs/$POD_NAME"`],
                  env: [{ name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }],
                  resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "512Mi" } },
                  securityContext: RESTRICTED_CONTAINER,
                  volumeMounts: [
                    { name: "output-scratch", mountPath: "/app/ComfyUI/output" },
                    { name: "outputs", mountPath: "/mnt/outputs" },
                    { name: "tools", mountPath: TOOLS_DIR, readOnly: true },
                  ],
                },
              ],
              containers: [
                {
                  name: "comfyui",
                  image: args.imageUri,
                  ports: [{ name: "http", containerPort: COMFYUI_PORT }],
                  resources: {
                    requests: { cpu: pod.cpu, memory: pod.memory, "nvidia.com/gpu": "1" },
                    limits: { memory: pod.memory, "nvidia.com/gpu": "1" },
                  },
                  securityContext: RESTRICTED_CONTAINER,
                  env: [{ name: "HOME", value: "/tmp" }],
                  // Model loading can take minutes on a fresh node; 10 minutes before giving up.
                  startupProbe: { ...httpGet("/system_stats"), periodSeconds: 5, failureThreshold: 120, timeoutSeconds: 3 },
                  readinessProbe: { ...httpGet("/prompt"), periodSeconds: 5, failureThreshold: 2, timeoutSeconds: 3 },
                  livenessProbe: { ...httpGet("/system_stats"), periodSeconds: 20, failureThreshold: 6, timeoutSeconds: 5 },
                  lifecycle: {
                    preStop: { exec: { command: ["python3", `${TOOLS_DIR}/drain.py`, "--url", `http://127.0.0.1:${COMFYUI_PORT}`, "--deadline-seconds", String(drainDeadline), "--interval-seconds", "5"] } },
                  },
                  volumeMounts: [
                    { name: "models", mountPath: "/app/ComfyUI/models", readOnly: true },
                    { name: "output-scratch", mountPath: "/app/ComfyUI/output" },
                    { name: "inputs", mountPath: "/app/ComfyUI/input" },
                    { name: "temp", mountPath: "/app/ComfyUI/temp" },
                    { name: "user", mountPath: "/app/ComfyUI/user" },
                    { name: "tmp", mountPath: "/tmp" },
                    { name: "tools", mountPath: TOOLS_DIR, readOnly: true },
                  ],
                },
              ],
              volumes: [
                // Filled by the node's user-data and the sync Lambda; only complete files appear in it.
                { name: "models", hostPath: { path: NODE_MODELS_DIR, type: "Directory" } },
                { name: "output-scratch", emptyDir: { sizeLimit: "50Gi" } },
                { name: "outputs", persistentVolumeClaim: { claimName: "comfyui-outputs" } },
                { name: "inputs", persistentVolumeClaim: { claimName: "comfyui-inputs" } },
                { name: "temp", emptyDir: { sizeLimit: "20Gi" } },
                { name: "user", emptyDir: { sizeLimit: "1Gi" } },
                { name: "tmp", emptyDir: { sizeLimit: "5Gi" } },
                { name: "tools", configMap: { name: "comfyui-tools", defaultMode: 0o555 } },
              ],
            },
          },
        },
      },
      {
        ...k,
        dependsOn: [namespace, tools, comfySa],
        // With server-side apply, an ignored field that another manager (the HPA) now owns is left out
        // of Pulumi's patch, so `pulumi up` never resets the count KEDA set (pulumi-kubernetes
        // provider/pkg/await/await.go handleSSAIgnoreFields, v4.18–v4.32).
        ignoreChanges: ["spec.replicas"],
        // Foreground deletion waits for the pods, and each may drain for drainSeconds.
        customTimeouts: { delete: deleteTimeout(args.drainSeconds) },
      },
    );

    // Only ComfyUI pods: its EndpointSlices are how the gateway finds ready and terminating pods.
    const queueService = new k8s.core.v1.Service(
      `${name}-queue-svc`,
      { metadata: { name: COMFYUI_PODS_SERVICE, namespace: ns }, spec: { type: "ClusterIP", selector: labels.comfyui, ports: [{ name: "http", port: COMFYUI_PORT, targetPort: "http" }] } },
      nsDeps,
    );

    const gateway = new ComfyGateway(
      `${name}-gateway`,
      {
        namespace: ns,
        ...args.gateway,
        comfyuiService: COMFYUI_PODS_SERVICE,
        // ComfyUI's own default (--max-upload-size 100): the gateway refuses what a pod would refuse.
        maxUploadMb: 100,
        startupDeadlineSeconds: args.gateway.startupDeadlineSeconds ?? 900,
        historyDays: args.gateway.historyDays ?? 30,
        provider: args.provider,
        dependsOn: [namespace],
        tags: args.tags,
      },
      { parent: this },
    );
    // The ALB's own security group: HTTP only from CloudFront's VPC-origin prefix list (when the edge is on).
    const albSg = new aws.ec2.SecurityGroup(
      `${name}-alb-sg`,
      {
        vpcId: args.vpcId,
        description: "ComfyUI internal ALB: reachable only from CloudFront VPC origins",
        ingress: args.albAllowedPrefixListId
          ? [{ protocol: "tcp", fromPort: 80, toPort: 80, prefixListIds: [args.albAllowedPrefixListId], description: "CloudFront origin-facing" }]
          : [],
        egress: [{ protocol: "tcp", fromPort: GATEWAY_PORT, toPort: GATEWAY_PORT, cidrBlocks: [args.vpcCidr], description: "to the gateway pods" }],
        tags: args.tags,
      },
      { parent: this },
    );

    const ingress = new k8s.networking.v1.Ingress(
      `${name}-ingress`,
      {
        metadata: {
          name: "comfyui",
          namespace: ns,
          annotations: {
            "alb.ingress.kubernetes.io/scheme": "internal",
            "alb.ingress.kubernetes.io/target-type": "ip",
            "alb.ingress.kubernetes.io/load-balancer-name": args.albName,
            "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}]',
            "alb.ingress.kubernetes.io/security-groups": albSg.id,
            "alb.ingress.kubernetes.io/manage-backend-security-group-rules": "true",
            // Only the Lease holder answers 200: the ALB sends every client to the leader.
            "alb.ingress.kubernetes.io/healthcheck-path": GATEWAY_PUBLIC_HEALTH_PATH,
            "alb.ingress.kubernetes.io/success-codes": "200",
            "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "5",
            "alb.ingress.kubernetes.io/healthcheck-timeout-seconds": "3",
            "alb.ingress.kubernetes.io/healthy-threshold-count": "2",
            "alb.ingress.kubernetes.io/unhealthy-threshold-count": "2",
            // WebSockets of an artist's open tab stay up for an hour of silence (the ALB maximum is 4000 s).
            "alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=3600,routing.http.drop_invalid_header_fields.enabled=true",
            // No stickiness: the gateway holds the studio-wide queue, history and events, whoever asks.
            "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=30",
          },
        },
        spec: { ingressClassName: "alb", defaultBackend: { service: { name: GATEWAY_NAME, port: { number: GATEWAY_PORT } } } },
      },
      { ...k, dependsOn: [gateway, albSg, ...args.dependsOn] },
    );

    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      { metadata: { name: "comfyui", namespace: ns }, spec: { maxUnavailable: 1, selector: { matchLabels: labels.comfyui } } },
      nsDeps,
    );
    // Default deny, then exactly the paths the design needs (enforced by the VPC CNI's network policy agent).
    new k8s.networking.v1.NetworkPolicy(`${name}-netpol-default`, { metadata: { name: "default-deny-ingress", namespace: ns }, spec: { podSelector: {}, policyTypes: ["Ingress"] } }, nsDeps);
    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol-comfyui`,
      {
        metadata: { name: "allow-gateway-to-comfyui", namespace: ns },
        spec: comfyuiNetworkPolicySpec(labels.comfyui, args.comfyuiEgressCidrs ?? []),
      },
      nsDeps,
    );
    new k8s.networking.v1.NetworkPolicy(
      `${name}-netpol-gateway`,
      {
        metadata: { name: "allow-alb-and-keda-to-gateway", namespace: ns },
        spec: {
          podSelector: { matchLabels: GATEWAY_LABELS },
          policyTypes: ["Ingress"],
          ingress: [
            // The ALB lives in the VPC's subnets (its own security group admits only CloudFront).
            { from: [{ ipBlock: { cidr: args.vpcCidr } }], ports: [{ protocol: "TCP", port: GATEWAY_PORT }] },
            // The internal port: KEDA's figure, and the replica link between the gateway's own pods.
            { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "keda" } } }], ports: [{ protocol: "TCP", port: GATEWAY_ADMIN_PORT }] },
            { from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: GATEWAY_ADMIN_PORT }] },
          ],
        },
      },
      nsDeps,
    );

    const keda = new k8s.helm.v3.Release(
      `${name}-keda`,
      {
        name: "keda",
        chart: CHARTS.keda.chart,
        version: CHARTS.keda.version,
        repositoryOpts: { repo: CHARTS.keda.repo },
        namespace: "keda",
        createNamespace: true,
        atomic: true,
        values: { nodeSelector: { ...SYSTEM_NODE_LABEL }, operator: { replicaCount: 1 }, metricsServer: { replicaCount: 2 } },
      },
      { parent: this, provider: args.provider, dependsOn: args.dependsOn },
    );
    new k8s.apiextensions.CustomResource(
      `${name}-scaledobject`,
      {
        apiVersion: "keda.sh/v1alpha1",
        kind: "ScaledObject",
        metadata: { name: "comfyui", namespace: ns },
        spec: scaledObjectSpec({ namespace: ns, deployment: "comfyui", ...args.autoscaling }),
      },
      { ...k, dependsOn: [keda, deployment, queueService, gateway] },
    );

    this.namespace = namespace.metadata.name;
    this.deploymentName = deployment.metadata.name;
    this.serviceName = gateway.serviceName;
    this.gatewayTableName = gateway.tableName;
    this.albHostname = ingress.status.loadBalancer.ingress[0].hostname;
    // Tied to the Ingress status, so the edge reads the ALB only once the controller has made it.
    this.albName = this.albHostname.apply(() => args.albName);
    this.albSecurityGroupId = albSg.id;
    this.registerOutputs({ namespace: this.namespace, albHostname: this.albHostname, albName: this.albName });
  }
}

/**
 * ComfyUI pods run custom-node Python, so they are fenced both ways. In: only the gateway's pods, on
 * ComfyUI's port — no VPC range, since other pods' addresses are in it. The kubelet's probes still reach
 * them: the VPC CNI's network policy agent always admits the pod's own node IP (aws/aws-network-policy-agent
 * PR #65, "Ignore policy restrictions against Node IP", as NetworkPolicy v1 requires). Out: cluster DNS
 * only, plus the configured ranges for custom nodes that call APIs; the models are on the node, outputs go
 * through Mountpoint (outside the pod's network), and the pods hold no AWS credentials.
 */
export function comfyuiNetworkPolicySpec(podLabels: Record<string, string>, egressCidrs: string[]): k8s.types.input.networking.v1.NetworkPolicySpec {
  const dns = [
    { protocol: "UDP", port: 53 },
    { protocol: "TCP", port: 53 },
  ];
  return {
    podSelector: { matchLabels: podLabels },
    policyTypes: ["Ingress", "Egress"],
    ingress: [{ from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: COMFYUI_PORT }] }],
    egress: [
      // CoreDNS as EKS runs it (the add-on's pods carry k8s-app=kube-dns in kube-system).
      { to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } }, podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }], ports: dns },
      ...(egressCidrs.length > 0 ? [{ to: egressCidrs.map((cidr) => ({ ipBlock: { cidr } })) }] : []),
    ],
  };
}

/**
 * Rolling update that finishes at the GPU cap: maxSurge 0 never asks for a GPU beyond the pods that
 * exist, maxUnavailable 1 replaces one pod at a time.
 */
export function rolloutAtCap(): { maxSurge: number; maxUnavailable: number } {
  return { maxSurge: 0, maxUnavailable: 1 };
}

/** How long Pulumi waits for a delete that includes a draining ComfyUI pod (its 10-minute default is shorter). */
export function deleteTimeout(drainSeconds: number): string {
  return `${drainSeconds + 300}s`;
}

function hash(text: string): string {
  return crypto.createHash("sha256").update(text).digest("hex").slice(0, 16);
}
