/**
 * ComfyUI on Amazon EKS — the whole platform as one stack. This file only wires components
 * together (outputs in, outputs out); each folder holds one component, config/ the settings.
 */
import * as pulumi from "@pulumi/pulumi";
import { Cluster } from "./cluster";
import { loadConfig } from "./config";
import { Edge, cloudFrontOriginPrefixListId } from "./edge";
import { GROUPS, Identity } from "./edge/identity";
import { ComfyImage } from "./image";
import { GpuCapacity, KARPENTER_NAMESPACE, onDemandPrices, podResourcesPerGpu, pricingProvider, resolveGpuTypes, vcpusPerGpu } from "./karpenter";
import { Observability } from "./observability";
import { Storage } from "./storage";
import { ModelSync } from "./sync";
import { ComfyGateway, ComfyWorkload } from "./workload";
import { GATEWAY_IMAGE } from "./workload/gatewayDeployment";
import { MODELS_AGENT_IMAGE, ModelsAgent } from "./workload/modelsAgent";
import { modelsReserveGb } from "./contracts/node";

const cfg = loadConfig();
const base = `comfyui-${cfg.stack}`;
const tags = { "app.kubernetes.io/part-of": "comfyui", "pulumi:project": cfg.project, "pulumi:stack": cfg.stack };
const namespace = "comfyui";

const cluster = new Cluster(base, {
  clusterName: base,
  region: cfg.region,
  kubernetesVersion: cfg.kubernetesVersion,
  availabilityZones: cfg.availabilityZones,
  vpcCidr: cfg.vpcCidr,
  natGateways: cfg.natGateways,
  apiAllowedCidrs: cfg.apiAllowedCidrs,
  systemNodeInstanceType: cfg.systemNodeInstanceType,
  systemNodeCount: cfg.systemNodeCount,
  logRetentionDays: cfg.logRetentionDays,
  // The metrics log group and the audit trail, with the same retention (cluster/logGroups.ts).
  platformLogGroups: { stackName: base },
  tags,
});
const metricsLogs = cluster.metricsLogGroup!;
const auditLogs = cluster.auditLogGroup!;

// Every GPU type's facts from EC2, checked at preview: NVIDIA GPUs, NVMe, offered in the VPC's zones.
const gpuTypes = resolveGpuTypes(cfg.gpuInstanceTypes, cluster.availabilityZones, {});
const gpuPrices = onDemandPrices(cfg.gpuInstanceTypes, cfg.region, pricingProvider(`${base}-pricing`), {});

const storage = new Storage(base, {
  clusterName: cluster.clusterName,
  region: cfg.region,
  mountpointAddonVersion: cfg.mountpointAddonVersion,
  namespace,
  retainOnDestroy: cfg.retainBucketsOnDestroy,
  outputsExpireDays: cfg.outputsExpireDays,
  modelsNoncurrentDays: cfg.modelsNoncurrentDays,
  dependsOn: cluster.ready,
  provider: cluster.provider,
  tags,
});

// The part of each GPU node's NVMe array that models never use, sized for the largest type the pool
// may launch: the boot's pinned copy and the model agent keep the same floor.
const modelsReserveGbOut = gpuTypes.apply((types) => modelsReserveGb(Math.max(...types.map((t) => t.gpus))));

const gpu = new GpuCapacity(base, {
  clusterName: cluster.clusterName,
  region: cfg.region,
  kubernetesVersion: cfg.kubernetesVersion,
  vcpusPerGpu: gpuTypes.apply(vcpusPerGpu),
  accountId: cluster.accountId,
  clusterSecurityGroupId: cluster.clusterSecurityGroupId,
  modelsBucket: storage.modelsBucket,
  modelsBucketArn: storage.modelsBucketArn,
  nodeToolsBucket: storage.nodeToolsBucket,
  nodeToolsBucketArn: storage.nodeToolsBucketArn,
  imageParameter: `/${base}/comfyui/image`,
  instanceTypes: cfg.gpuInstanceTypes,
  capacityTypes: cfg.gpuCapacityTypes,
  gpuLimit: cfg.gpuLimit,
  amiAlias: cfg.gpuAmiAlias,
  consolidateAfter: cfg.gpuConsolidateAfter,
  expireAfter: cfg.gpuExpireAfter,
  rootVolumeGiB: cfg.gpuRootVolumeGiB,
  pins: cfg.modelsHotSet,
  reserveGb: modelsReserveGbOut,
  bootFillSeconds: cfg.modelsBootFillSeconds,
  parallelTransfers: cfg.modelsParallelTransfers,
  metricsLogGroupName: metricsLogs.name,
  metricsLogGroupArn: metricsLogs.arn,
  provider: cluster.provider,
  dependsOn: cluster.ready,
  tags,
});

const sync = new ModelSync(base, {
  clusterName: cluster.clusterName,
  region: cfg.region,
  accountId: cluster.accountId,
  modelsBucket: storage.modelsBucket,
  modelsBucketArn: storage.modelsBucketArn,
  modelsBucketResource: storage.modelsBucketResource,
  nodePoolNames: gpu.nodePoolNames,
  logRetentionDays: cfg.logRetentionDays,
  tags,
});

// The gateway's image is built the same way as ComfyUI's (CodeBuild in the region by default).
const image = new ComfyImage(base, {
  comfyuiVersion: cfg.comfyuiVersion,
  comfyuiCommit: cfg.comfyuiCommit,
  build: cfg.imageBuild,
  additionalImages: [
    { name: "gateway", context: [...GATEWAY_IMAGE.context], dockerfile: GATEWAY_IMAGE.dockerfile, imageTag: "latest" },
    { name: "models-agent", context: [...MODELS_AGENT_IMAGE.context], dockerfile: MODELS_AGENT_IMAGE.dockerfile, imageTag: "latest" },
  ],
  // The ComfyUI image by digest, where GPU nodes read it at boot to pull it beside the model fill.
  imageParameterName: `/${base}/comfyui/image`,
  tags,
});
const gatewayImageUri = image.images["gateway"];


// ComfyUI: its namespace, GPU pods and their Service (workload/index.ts).
const workload = new ComfyWorkload(base, {
  namespace,
  imageUri: image.imageUri,
  comfyuiEgressCidrs: cfg.comfyuiEgressCidrs,
  outputsVolumeName: storage.outputsVolumeName,
  inputsVolumeName: storage.inputsVolumeName,
  podResources: gpuTypes.apply(podResourcesPerGpu),
  drainSeconds: cfg.drainSeconds,
  autoscaling: {
    minReplicas: cfg.minReplicas,
    maxReplicas: cfg.maxReplicas,
    queuePerPod: cfg.queuePerPod,
    idleMinutes: cfg.idleMinutes,
    workingHours: cfg.workingHours,
  },
  provider: cluster.provider,
  dependsOn: [...cluster.ready, cluster.keda, storage.csiAddon, gpu],
  tags,
});

// The gateway beside it, in its namespace (workload/gatewayDeployment.ts): one ComfyUI over every pod,
// the ALB's only target.
const gateway = new ComfyGateway(`${base}-gateway`, {
  namespace,
  imageUri: gatewayImageUri,
  clusterName: cluster.clusterName,
  region: cfg.region,
  outputsBucket: storage.outputsBucket,
  outputsBucketArn: storage.outputsBucketArn,
  inputsBucket: storage.inputsBucket,
  inputsBucketArn: storage.inputsBucketArn,
  userdataBucket: storage.userdataBucket,
  userdataBucketArn: storage.userdataBucketArn,
  metricsLogGroupName: metricsLogs.name,
  metricsLogGroupArn: metricsLogs.arn,
  auditLogGroupName: auditLogs.name,
  auditLogGroupArn: auditLogs.arn,
  auth: "oidc",
  // The library the gateway lists every loader from and routes by (issue 19): read-only listing.
  modelsBucket: storage.modelsBucket,
  modelsBucketArn: storage.modelsBucketArn,
  comfyuiService: workload.podsServiceName,
  stackName: base,
  albName: base,
  vpcId: cluster.vpcId,
  vpcCidr: cluster.vpcCidr,
  albAllowedPrefixListId: cfg.edgeEnabled ? cloudFrontOriginPrefixListId() : undefined,
  provider: cluster.provider,
  dependsOn: [workload.namespaceResource],
  tags,
});
// ComfyUI's pods scale on the gateway's queue figure (KEDA, a cluster add-on).
workload.scaleOn(gateway.ready);

// The model agent on every GPU node (workload/modelsAgent.ts): the node's NVMe as a cache of the models
// bucket, read-only on that bucket through Pod Identity, reachable by the gateway only.
new ModelsAgent(`${base}-models-agent`, {
  namespace,
  imageUri: image.images["models-agent"],
  clusterName: cluster.clusterName,
  region: cfg.region,
  modelsBucket: storage.modelsBucket,
  modelsBucketArn: storage.modelsBucketArn,
  vpcCidr: cluster.vpcCidr,
  reserveGb: modelsReserveGbOut,
  pinned: cfg.modelsHotSet,
  provider: cluster.provider,
  dependsOn: [workload],
  tags,
});

const edge = cfg.edgeEnabled ? new Edge(base, { albName: gateway.albName, priceClass: cfg.edgePriceClass, tags }) : undefined;

// Who the artists are: a Cognito user pool of the stack (optionally federated to the studio's IdP) or the
// configured issuer. Its client's callback is the site's own, so it is made once the site's address is
// known and handed to the gateway as a Secret it re-reads (ComfyGateway.signInWith). Without the
// edge the site is the port-forward on this machine (loopback may be http).
const localUrl = "http://localhost:8848";
const identity = new Identity(base, {
  publicUrl: edge ? edge.url : localUrl,
  oidc: cfg.signIn === "oidc" ? { issuer: cfg.oidcIssuer!, clientId: cfg.oidcClientId!, clientSecret: cfg.oidcClientSecret! } : undefined,
  federation: cfg.cognitoFederation,
  federationClientSecret: cfg.cognitoFederationClientSecret,
  retainOnDestroy: cfg.retainBucketsOnDestroy,
  tags,
});
gateway.signInWith(identity.oidc);

// Dashboard, alarms to one SNS topic, Container Insights with GPU metrics, log retention.
const observability = new Observability(base, {
  clusterName: cluster.clusterName,
  region: cfg.region,
  accountId: cluster.accountId,
  workloadNamespace: namespace,
  karpenterNamespace: KARPENTER_NAMESPACE,
  syncQueueName: sync.queueName,
  syncDeadLetterQueueName: sync.dlqName,
  syncFunctionName: sync.functionName,
  spotInterruptionRuleName: gpu.interruptionRuleNames["spot-interruption"],
  rebalanceRuleName: gpu.interruptionRuleNames["rebalance"],
  cloudFrontDistributionId: edge?.distributionId,
  // The dearest GPU-hour among the configured types: the spend line errs high, never low.
  gpuUsdPerGpuHour: pulumi.all([gpuPrices, gpuTypes]).apply(([prices, types]) => {
    const unpriced = types.filter((t) => (prices[t.instanceType]?.usdPerHour ?? null) === null).map((t) => t.instanceType);
    if (unpriced.length > 0 && cfg.gpuDailyBudgetUsd !== undefined) {
      throw new Error(`gpuDailyBudgetUsd: no on-demand price for ${unpriced.join(", ")} in ${cfg.region} (${prices[unpriced[0]]?.source}); the spend alarm needs one`);
    }
    return Math.max(0, ...types.map((t) => (prices[t.instanceType]?.usdPerHour ?? 0) / t.gpus));
  }),
  gpuDailyBudgetUsd: cfg.gpuDailyBudgetUsd,
  alertEmails: cfg.alertEmails,
  logRetentionDays: cfg.logRetentionDays,
  gpuMetrics: cfg.gpuMetrics,
  dependsOn: cluster.ready,
  tags,
});

const kubeconfigCommand = pulumi.interpolate`aws eks update-kubeconfig --region ${cfg.region} --name ${cluster.clusterName}`;

export const url = edge ? edge.url : pulumi.output(`(edge disabled) kubectl -n ${namespace} port-forward svc/comfyui-gateway 8848:8188, then ${localUrl}`);
/** The Cognito user pool (signIn=cognito): where artists are added (commands.addArtist). */
export const userPoolId = identity.userPoolId;
/** Cognito's managed login page, where artists sign in (the site sends them there). */
export const loginDomain = identity.loginDomain;
/** Where the audit trail goes (one JSON line per state change). */
export const auditLogGroup = auditLogs.name;
export const clusterName = cluster.clusterName;
export const dashboardUrl = observability.dashboardUrl;
export const alarmTopicArn = observability.alarmTopicArn;
export const kubeconfig = cluster.kubeconfig;
export const modelsBucket = storage.modelsBucket;
export const outputsBucket = storage.outputsBucket;
export const inputsBucket = storage.inputsBucket;
export const userdataBucket = storage.userdataBucket;
export const gatewayTable = gateway.tableName;
export { gatewayImageUri };
export const ecrRepository = image.repositoryUrl;
export const imageUri = image.imageUri;
export const albHostname = gateway.albHostname;
export const gpuNodePools = gpu.nodePoolNames;
export const gpuQuotaWarnings = gpu.quotaWarnings;
export const comfyuiImageParameter = image.imageParameterName!;
/** On-demand USD per GPU node-hour of each configured type in this region, with where the figure came from. */
export const gpuHourlyUsd = gpuPrices;
/** What EC2 says about each configured GPU type (GPUs, memory, NVMe, network). */
export const gpuInstanceFacts = gpuTypes;
export const modelSyncQueue = sync.queueUrl;
export const modelSyncDeadLetterQueue = sync.dlqUrl;
export const commands = {
  updateKubeconfig: kubeconfigCommand,
  uploadModel: pulumi.interpolate`aws s3 cp ./sd_xl_base_1.0.safetensors s3://${storage.modelsBucket}/checkpoints/sd_xl_base_1.0.safetensors`,
  listOutputs: pulumi.interpolate`aws s3 ls --recursive s3://${storage.outputsBucket}/`,
  watchPods: pulumi.interpolate`kubectl -n ${namespace} get pods,scaledobject -w`,
  ...(identity.userPoolId
    ? {
        // One command per artist: Cognito mails a temporary password; the first sign-in sets their own.
        addArtist: pulumi.interpolate`aws cognito-idp admin-create-user --region ${cfg.region} --user-pool-id ${identity.userPoolId} --username artist@example.com --user-attributes Name=email,Value=artist@example.com Name=email_verified,Value=true && aws cognito-idp admin-add-user-to-group --region ${cfg.region} --user-pool-id ${identity.userPoolId} --username artist@example.com --group-name ${GROUPS.artist}`,
        makeAdmin: pulumi.interpolate`aws cognito-idp admin-add-user-to-group --region ${cfg.region} --user-pool-id ${identity.userPoolId} --username artist@example.com --group-name ${GROUPS.admin}`,
        disableUser: pulumi.interpolate`aws cognito-idp admin-disable-user --region ${cfg.region} --user-pool-id ${identity.userPoolId} --username artist@example.com`,
      }
    : {}),
  createApiKey: pulumi.interpolate`npm run keys -- create --table ${gateway.tableName} --region ${cfg.region} --owner pipeline@example.com --scope read,submit`,
  tailAudit: pulumi.interpolate`aws logs tail --region ${cfg.region} --follow ${auditLogs.name}`,
};
