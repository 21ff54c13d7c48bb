/**
 * ComfyUI itself: namespace, the GPU Deployment (models from the node's NVMe, outputs through the
 * uploader sidecar to S3, inputs on Mountpoint), the Service over its pods, disruption and network
 * policies, and KEDA autoscaling of the ComfyUI pods on the gateway's queue figure (to zero when
 * idle, with an optional working-hours floor; scaleOn). The gateway that makes every pod one ComfyUI
 * and is the ALB's only target is a component of its own beside this one (gatewayDeployment.ts).
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { GPU_POOL_LABEL, GPU_TAINT, NODE_MODELS_DIR } from "../contracts/node";
import { COMFYUI_GID, COMFYUI_UID } from "../storage";
import { scaledObjectSpec } from "./autoscaling";
import { createNetworkPolicies } from "./networkPolicies";
import { RESTRICTED_CONTAINER } from "./gatewayNames";
import { COMFYUI_PODS_SERVICE, COMFYUI_PORT } from "./comfyuiNames";

export { comfyuiNetworkPolicySpec } from "./networkPolicies";
export { COMFYUI_PODS_SERVICE, COMFYUI_PORT } from "./comfyuiNames";
export { ComfyGateway } from "./gatewayDeployment";

const TOOLS_DIR = "/opt/comfyui-tools";
const read = (rel: string) => fs.readFileSync(path.join(__dirname, rel), "utf8");

export interface WorkloadArgs {
  namespace: string;
  /** `repo@sha256:…` of the pushed ComfyUI image. */
  imageUri: pulumi.Input<string>;
  /** PersistentVolume names from storage/. */
  outputsVolumeName: pulumi.Input<string>;
  inputsVolumeName: pulumi.Input<string>;
  /** CPU and memory requested by each ComfyUI container: one GPU's share on the tightest type (karpenter/gpuTypes.ts). */
  podResources: pulumi.Input<{ cpu: string; memory: string }>;
  /** Seconds a stopping pod may spend finishing its queue (terminationGracePeriodSeconds). */
  drainSeconds: number;
  /**
   * Where ComfyUI pods may open connections besides cluster DNS (custom nodes that call APIs).
   * @defaultValue [] (none: a custom node cannot send data anywhere)
   */
  comfyuiEgressCidrs?: string[];
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
  /** The Namespace object: what the gateway's objects in it wait for. */
  readonly namespaceResource: k8s.core.v1.Namespace;
  /** The Service whose EndpointSlices list the ComfyUI pods (for the gateway). */
  readonly podsServiceName = COMFYUI_PODS_SERVICE;
  private readonly scaling: { name: string; k: pulumi.CustomResourceOptions; args: WorkloadArgs; after: pulumi.Resource[] };

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

    new k8s.policy.v1.PodDisruptionBudget(
      `${name}-pdb`,
      { metadata: { name: "comfyui", namespace: ns }, spec: { maxUnavailable: 1, selector: { matchLabels: labels.comfyui } } },
      nsDeps,
    );
    createNetworkPolicies(name, nsDeps, { namespace: ns, comfyuiLabels: labels.comfyui, comfyuiEgressCidrs: args.comfyuiEgressCidrs ?? [] });

    this.namespace = namespace.metadata.name;
    this.namespaceResource = namespace;
    this.deploymentName = deployment.metadata.name;
    this.scaling = { name, k, args, after: [deployment, queueService] };
    this.registerOutputs({ namespace: this.namespace, deploymentName: this.deploymentName });
  }

  /**
   * KEDA's ScaledObject for the ComfyUI pods, on the gateway's queue figure. The gateway lives in this
   * component's namespace, so it is made after this component; index.ts then hands its `ready` here, and
   * the ScaledObject waits for what its trigger calls. KEDA itself is a cluster add-on (cluster/addons.ts),
   * among args.dependsOn.
   */
  scaleOn(gatewayReady: pulumi.Resource[]): k8s.apiextensions.CustomResource {
    const { name, k, args, after } = this.scaling;
    const ns = args.namespace;
    return new k8s.apiextensions.CustomResource(
      `${name}-scaledobject`,
      {
        apiVersion: "keda.sh/v1alpha1",
        kind: "ScaledObject",
        metadata: { name: "comfyui", namespace: ns },
        spec: scaledObjectSpec({ namespace: ns, deployment: "comfyui", ...args.autoscaling }),
      },
      { ...k, dependsOn: [...args.dependsOn, ...after, ...gatewayReady] },
    );
  }
}

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
