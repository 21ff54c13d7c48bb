/**
 * The table: each principal of the program and the requests it really makes (allowed) or must
 * never be able to make (denied). Names, ARNs and tags come from the program graph, so the table
 * follows the program; what a request carries comes from the caller's source at the versions we
 * pin (cited per principal).
 */
import { GATEWAY_NAME, GATEWAY_USERDATA_PREFIX } from "../../workload/gatewayDeployment";
import { GATEWAY_STREAM_PREFIX, metricsLogGroupName, NODE_BOOT_STREAM_PREFIX } from "../../contracts/metrics";
import { MOCK_ACCOUNT } from "../support/mocks";
import { ProgramRun } from "../support/program";
import { AWS_OWNED_ARN, ELB_V1_ADDTAGS, PrincipalTable, REGION, requestTags, resourceTags, SimRequest } from "./simulate";

const OTHER_ACCOUNT = "999999999999";
const OTHER_CLUSTER = "someone-elses-cluster";

/** The one resource of a type whose name ends with `suffix` (fails loudly if the graph changed). */
function one(run: ProgramRun, type: string, suffix: string): { name: string; inputs: Record<string, any> } {
  const found = run.rec.ofType(type).filter((r) => r.name.endsWith(suffix));
  if (found.length !== 1) throw new Error(`expected one ${type} named *${suffix}, found ${found.map((r) => r.name).join(", ") || "none"}`);
  return found[0];
}

/** What the table needs to know about the rendered program. */
export interface Facts {
  cluster: string;
  k8sVersion: string;
  roles: { karpenter: string; node: string; lbc: string; sync: string; mountpoint: string; modelsAgent: string };
  nodeClass: { name: string; tags: Record<string, string>; amiVersion: string };
  nodePool: string;
  interruptionQueueArn: string;
  syncQueueArn: string;
  syncLogGroup: string;
  buckets: { models: string; outputs: string; inputs: string };
  /** The node tool object GPU nodes fetch at boot, and the SSM parameter naming the ComfyUI image. */
  nodeTool: { bucket: string; key: string };
  imageParameter: string;
  /** The cluster's metrics log group (metricsLogGroupName), where GPU nodes send their boot line; undefined while the graph has none. */
  metricsLogGroup?: string;
  albName: string;
  vpcId: string;
  nodeSecurityGroup: string;
  gateway: GatewayFacts;
  build: BuildFacts;
}

/** The gateway as its Deployment configures it (env the gateway's code reads) and its Pod Identity role. */
export interface GatewayFacts {
  role: string;
  table: string;
  indexes: string[];
  outputsBucket: string;
  outputsPrefix: string;
  inputsBucket: string;
  userdataBucket: string;
  userdataPrefix: string;
  /** GATEWAY_METRICS_LOG_GROUP: where the gateway sends its EMF lines (stream gateway/<pod>). */
  metricsLogGroup: string;
  /** GATEWAY_AUDIT_LOG_GROUP: the audit trail (stream gateway/<pod>). */
  auditLogGroup: string;
  /** GATEWAY_MODELS_BUCKET: the model library it lists. */
  modelsBucket: string;
}

/** The image builder's CodeBuild project: its service role, log group and each build it runs. */
export interface BuildFacts {
  role: string;
  project: string;
  logGroup: string;
  /** One per ImageBuild of the project: the repository it pushes to, the context object it reads. */
  images: { repository: string; contextBucket: string; contextKey: string }[];
}

function gatewayFacts(run: ProgramRun): GatewayFacts {
  const deployments = run.rec.ofType("kubernetes:apps/v1:Deployment").filter((r) => r.inputs.metadata?.name === GATEWAY_NAME);
  if (deployments.length !== 1) throw new Error(`expected one Deployment ${GATEWAY_NAME}, found ${deployments.length}`);
  const pod = deployments[0].inputs.spec.template.spec;
  const env = new Map<string, string>((pod.containers[0].env as { name: string; value?: string }[]).filter((e) => e.value !== undefined).map((e) => [e.name, String(e.value)]));
  const envOf = (name: string) => {
    const v = env.get(name);
    if (v === undefined) throw new Error(`gateway Deployment sets no ${name}`);
    return v;
  };
  // The role is the one EKS hands the gateway's service account (Pod Identity), not a name guessed here.
  const assoc = run.rec
    .ofType("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    .filter((r) => r.inputs.serviceAccount === pod.serviceAccountName && r.inputs.namespace === deployments[0].inputs.metadata.namespace);
  if (assoc.length !== 1) throw new Error(`expected one Pod Identity association for service account ${pod.serviceAccountName}, found ${assoc.length}`);
  const table = one(run, "aws:dynamodb/table:Table", "-gateway-table").inputs;
  return {
    role: String(assoc[0].inputs.roleArn).split("/").pop()!,
    table: envOf("GATEWAY_TABLE"),
    indexes: (table.globalSecondaryIndexes as { name: string }[]).map((i) => i.name),
    outputsBucket: envOf("GATEWAY_OUTPUTS_BUCKET"),
    outputsPrefix: envOf("GATEWAY_OUTPUTS_PREFIX"),
    inputsBucket: envOf("GATEWAY_INPUTS_BUCKET"),
    userdataBucket: envOf("GATEWAY_USERDATA_BUCKET"),
    // Fixed in the gateway's code (workload/gateway/app.ts: PrefixedStore(deps.users, "user/")), not configured.
    userdataPrefix: GATEWAY_USERDATA_PREFIX,
    metricsLogGroup: envOf("GATEWAY_METRICS_LOG_GROUP"),
    auditLogGroup: envOf("GATEWAY_AUDIT_LOG_GROUP"),
    modelsBucket: envOf("GATEWAY_MODELS_BUCKET"),
  };
}

function buildFacts(run: ProgramRun): BuildFacts {
  const project = one(run, "aws:codebuild/project:Project", "-build-project").inputs;
  const name = String(project.name);
  const builds = run.rec.ofType("pulumi-nodejs:dynamic/comfyui-image:ImageBuild").filter((r) => r.inputs.projectName === name);
  if (builds.length === 0) throw new Error(`no ImageBuild runs project ${name}`);
  const repositories = new Set(run.rec.ofType("aws:ecr/repository:Repository").map((r) => r.name));
  const images = builds.map((b) => {
    const repository = String(b.inputs.repositoryUrl).split("/").slice(1).join("/");
    if (!repositories.has(repository)) throw new Error(`${b.name} pushes to ${repository}, which is no repository of the graph`);
    const [contextBucket, ...key] = String(b.inputs.sourceLocation).split("/");
    return { repository, contextBucket, contextKey: key.join("/") };
  });
  return {
    role: String(project.serviceRole).split("/").pop()!,
    project: name,
    logGroup: String(project.logsConfig.cloudwatchLogs.groupName),
    images,
  };
}

export function programFacts(run: ProgramRun): Facts {
  const cluster = one(run, "eks:index:Cluster", "-eks").inputs;
  const nodeClass = one(run, "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "-nodeclass").inputs;
  const nodePool = one(run, "kubernetes:karpenter.sh/v1:NodePool", "-nodepool").inputs;
  const ingress = one(run, "kubernetes:networking.k8s.io/v1:Ingress", "-ingress").inputs;
  const alias = String(nodeClass.spec.amiSelectorTerms[0].alias);
  const queueArn = (name: string) => `arn:aws:sqs:${REGION}:${MOCK_ACCOUNT}:${one(run, "aws:sqs/queue:Queue", name).name}`;
  const out = run.outputs as Record<string, string>;
  return {
    cluster: String(cluster.name),
    k8sVersion: String(cluster.version),
    roles: {
      karpenter: one(run, "aws:iam/role:Role", "-controller-role").name,
      node: String(nodeClass.spec.role),
      lbc: one(run, "aws:iam/role:Role", "-lbc-role").name,
      sync: one(run, "aws:iam/role:Role", "-sync-fn").name,
      mountpoint: one(run, "aws:iam/role:Role", "-mountpoint-role").name,
      modelsAgent: one(run, "aws:iam/role:Role", "-models-agent-role-role").name,
    },
    nodeClass: { name: String(nodeClass.metadata.name), tags: nodeClass.spec.tags ?? {}, amiVersion: alias.split("@")[1] },
    nodePool: String(nodePool.metadata.name),
    interruptionQueueArn: queueArn("-interruption"),
    syncQueueArn: queueArn("-sync"),
    syncLogGroup: String(one(run, "aws:cloudwatch/logGroup:LogGroup", "-sync").inputs.name),
    buckets: { models: out.modelsBucket, outputs: out.outputsBucket, inputs: out.inputsBucket },
    nodeTool: (() => {
      const o = one(run, "aws:s3/bucketObject:BucketObject", "-node-tool").inputs;
      return { bucket: String(o.bucket), key: String(o.key) };
    })(),
    imageParameter: out.comfyuiImageParameter,
    metricsLogGroup: run.rec.ofType("aws:cloudwatch/logGroup:LogGroup").find((r) => r.inputs.name === metricsLogGroupName(String(cluster.name)))?.inputs.name as string | undefined,
    albName: String(ingress.metadata.annotations["alb.ingress.kubernetes.io/load-balancer-name"]),
    vpcId: String(cluster.vpcId),
    nodeSecurityGroup: "sg-node",
    gateway: gatewayFacts(run),
    build: buildFacts(run),
  };
}

/**
 * Karpenter v1.14.1. Tags: pkg/utils/utils.go GetTags (cluster ownership, NodePool, eks cluster
 * name, EC2NodeClass, plus the EC2NodeClass's spec.tags) on CreateFleet's instance, volume and fleet
 * (pkg/providers/instance/types.go NewCreateFleetInputBuilder) and on the launch template, its
 * network interfaces and spot requests (pkg/providers/launchtemplate/types.go); the tagging
 * controller adds Name and karpenter.sh/nodeclaim (pkg/controllers/nodeclaim/tagging/controller.go);
 * instance profiles get EC2NodeClass.InstanceProfileTags (pkg/apis/v1/ec2nodeclass.go) under the
 * path /karpenter/<region>/<cluster>/<uid>/ (pkg/controllers/nodeclass/instanceprofile.go).
 */
export function karpenterTable(f: Facts): PrincipalTable {
  const ec2 = `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}`;
  const launchTags = {
    ...f.nodeClass.tags,
    [`kubernetes.io/cluster/${f.cluster}`]: "owned",
    "karpenter.sh/nodepool": f.nodePool,
    "eks:eks-cluster-name": f.cluster,
    "karpenter.k8s.aws/ec2nodeclass": f.nodeClass.name,
  };
  const profileTags = {
    ...f.nodeClass.tags,
    [`kubernetes.io/cluster/${f.cluster}`]: "owned",
    "eks:eks-cluster-name": f.cluster,
    "karpenter.k8s.aws/ec2nodeclass": f.nodeClass.name,
    "topology.kubernetes.io/region": REGION,
  };
  const profile = `arn:aws:iam::${MOCK_ACCOUNT}:instance-profile/karpenter/${REGION}/${f.cluster}/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/${f.cluster}_1234567890123456789`;
  const lt = `${ec2}:launch-template/lt-0123456789abcdef0`;
  const instance = `${ec2}:instance/i-0123456789abcdef0`;
  const owned = resourceTags(launchTags);
  const onCreate = (action: string, resource: string): SimRequest => ({ action, resource, context: { ...requestTags(launchTags) } });
  const tagOnCreate = (createAction: string, resource: string): SimRequest => ({
    action: "ec2:CreateTags",
    resource,
    context: { ...requestTags(launchTags), "ec2:CreateAction": createAction },
  });
  // CreateFleet authorizes the fleet, image, subnet, launch template, instance and volume; the
  // instances it launches are authorized as RunInstances on everything they use (the service
  // reference's resource types for each action).
  const launch: SimRequest[] = [
    ...["ec2:CreateFleet", "ec2:RunInstances"].flatMap((action): SimRequest[] => [
      { action, resource: `arn:aws:ec2:${REGION}::image/ami-0123456789abcdef0` },
      { action, resource: `${ec2}:subnet/subnet-priv-a` },
      { action, resource: lt, context: owned },
      onCreate(action, `${ec2}:instance/*`),
      onCreate(action, `${ec2}:volume/*`),
    ]),
    { action: "ec2:RunInstances", resource: `arn:aws:ec2:${REGION}::snapshot/snap-0123456789abcdef0` },
    { action: "ec2:RunInstances", resource: `${ec2}:security-group/sg-cluster` },
    onCreate("ec2:RunInstances", `${ec2}:network-interface/*`),
    onCreate("ec2:RunInstances", `${ec2}:spot-instances-request/*`),
  ];
  const ssmParameter = `arn:aws:ssm:${REGION}::parameter/aws/service/eks/optimized-ami/${f.k8sVersion}/amazon-linux-2023/x86_64/nvidia/amazon-eks-node-al2023-x86_64-nvidia-${f.k8sVersion}-${f.nodeClass.amiVersion}/image_id`;
  const regional = { "aws:RequestedRegion": REGION };
  const otherTags = { [`kubernetes.io/cluster/${OTHER_CLUSTER}`]: "owned", "karpenter.sh/nodepool": "default", "eks:eks-cluster-name": OTHER_CLUSTER };
  const nodeRole = `arn:aws:iam::${MOCK_ACCOUNT}:role/${f.roles.node}`;
  return {
    principal: "karpenter",
    role: f.roles.karpenter,
    allowed: [
      ...launch,
      onCreate("ec2:CreateFleet", `${ec2}:fleet/*`),
      onCreate("ec2:CreateLaunchTemplate", `${ec2}:launch-template/*`),
      tagOnCreate("CreateFleet", `${ec2}:instance/*`),
      tagOnCreate("CreateFleet", `${ec2}:volume/*`),
      tagOnCreate("CreateFleet", `${ec2}:fleet/*`),
      tagOnCreate("CreateLaunchTemplate", `${ec2}:launch-template/*`),
      // The tagging controller: eks:eks-cluster-name is already there from launch, so it is dropped.
      { action: "ec2:CreateTags", resource: instance, context: { ...owned, ...requestTags({ Name: "ip-10-0-1-23.us-west-2.compute.internal", "karpenter.sh/nodeclaim": `${f.nodePool}-abcde` }) } },
      {
        action: "ec2:CreateTags",
        resource: instance,
        context: { ...owned, ...requestTags({ Name: "ip-10-0-1-23.us-west-2.compute.internal", "karpenter.sh/nodeclaim": `${f.nodePool}-abcde`, "eks:eks-cluster-name": f.cluster }) },
      },
      { action: "ec2:TerminateInstances", resource: instance, context: owned },
      { action: "ec2:DeleteLaunchTemplate", resource: lt, context: owned },
      { action: "iam:CreateInstanceProfile", resource: profile, context: requestTags(profileTags) },
      { action: "iam:TagInstanceProfile", resource: profile, context: { ...resourceTags(profileTags), ...requestTags(profileTags) } },
      { action: "iam:AddRoleToInstanceProfile", resource: profile, context: resourceTags(profileTags) },
      { action: "iam:RemoveRoleFromInstanceProfile", resource: profile, context: resourceTags(profileTags) },
      { action: "iam:DeleteInstanceProfile", resource: profile, context: resourceTags(profileTags) },
      { action: "iam:GetInstanceProfile", resource: profile },
      { action: "iam:ListInstanceProfiles", resource: "*" },
      { action: "iam:PassRole", resource: nodeRole, context: { "iam:PassedToService": "ec2.amazonaws.com" } },
      ...[
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
      ].map((action) => ({ action, resource: "*", context: regional })),
      { action: "ssm:GetParameter", resource: ssmParameter, unvalidated: AWS_OWNED_ARN },
      { action: "pricing:GetProducts", resource: "*", context: { "aws:RequestedRegion": "us-east-1" } },
      ...["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"].map((action) => ({ action, resource: f.interruptionQueueArn })),
      { action: "eks:DescribeCluster", resource: `arn:aws:eks:${REGION}:${MOCK_ACCOUNT}:cluster/${f.cluster}` },
    ],
    denied: [
      { action: "ec2:TerminateInstances", resource: `${ec2}:instance/i-0fedcba9876543210`, context: resourceTags(otherTags) },
      { action: "ec2:CreateTags", resource: `${ec2}:instance/i-0fedcba9876543210`, context: { ...resourceTags(otherTags), ...requestTags({ Name: "x" }) } },
      // Launch without the cluster's ownership tag.
      { action: "ec2:RunInstances", resource: `${ec2}:instance/*`, context: requestTags({ "karpenter.sh/nodepool": f.nodePool, "eks:eks-cluster-name": f.cluster }) },
      { action: "ec2:CreateFleet", resource: `${ec2}:instance/*`, context: requestTags({ "karpenter.sh/nodepool": f.nodePool }) },
      // The tagging controller may not rewrite ownership.
      { action: "ec2:CreateTags", resource: instance, context: { ...owned, ...requestTags({ [`kubernetes.io/cluster/${f.cluster}`]: "shared" }) } },
      { action: "iam:PassRole", resource: `arn:aws:iam::${MOCK_ACCOUNT}:role/some-admin-role`, context: { "iam:PassedToService": "ec2.amazonaws.com" } },
      { action: "iam:PassRole", resource: nodeRole, context: { "iam:PassedToService": "lambda.amazonaws.com" } },
      { action: "sqs:ReceiveMessage", resource: `arn:aws:sqs:${REGION}:${OTHER_ACCOUNT}:${f.cluster}-interruption` },
      // The queue policy refuses plain HTTP, whatever the role may do.
      { action: "sqs:ReceiveMessage", resource: f.interruptionQueueArn, context: { "aws:SecureTransport": "false" }, explicit: true },
      { action: "ec2:DescribeInstances", resource: "*", context: { "aws:RequestedRegion": "eu-west-1" } },
      { action: "iam:DeleteInstanceProfile", resource: profile, context: resourceTags({ ...profileTags, [`kubernetes.io/cluster/${f.cluster}`]: "", [`kubernetes.io/cluster/${OTHER_CLUSTER}`]: "owned" }) },
      { action: "eks:DescribeCluster", resource: `arn:aws:eks:${REGION}:${MOCK_ACCOUNT}:cluster/${OTHER_CLUSTER}` },
    ],
  };
}

/**
 * AWS Load Balancer Controller v3.5.0: every resource it creates carries elbv2.k8s.aws/cluster and
 * the ingress.k8s.aws/stack + resource tags (pkg/deploy/tracking/provider.go); listeners and rules
 * are tagged on create too (ListenerRulesTagging, on by default in pkg/config/feature_gates.go).
 */
export function lbcTable(f: Facts): PrincipalTable {
  const elb = `arn:aws:elasticloadbalancing:${REGION}:${MOCK_ACCOUNT}`;
  const ec2 = `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}`;
  const stackTags = (resource: string) => ({ "elbv2.k8s.aws/cluster": f.cluster, "ingress.k8s.aws/stack": "comfyui/comfyui", "ingress.k8s.aws/resource": resource });
  const lbTags = stackTags("LoadBalancer");
  const tgTags = stackTags("comfyui/comfyui-gateway:80");
  const lb = `${elb}:loadbalancer/app/${f.albName}/50dc6c495c0c9188`;
  const tg = `${elb}:targetgroup/k8s-comfyui-gateway-0123456789/73e2d6bc24d8a067`;
  const listener = `${elb}:listener/app/${f.albName}/50dc6c495c0c9188/f2f7dc8efc522ab2`;
  const rule = `${elb}:listener-rule/app/${f.albName}/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee`;
  const sg = `${ec2}:security-group/sg-0backend0123456789`;
  const sgTags = { "elbv2.k8s.aws/cluster": f.cluster, "elbv2.k8s.aws/resource": "backend-sg" };
  const ownedBy = (tags: Record<string, string>) => resourceTags(tags);
  const created = (action: string, resource: string, tags: Record<string, string>): SimRequest => ({ action, resource, context: requestTags(tags) });
  const addTagsOnCreate = (createAction: string, resource: string, tags: Record<string, string>): SimRequest => ({
    action: "elasticloadbalancing:AddTags",
    resource,
    context: { ...requestTags(tags), "elasticloadbalancing:CreateAction": createAction },
    ...(resource.includes(":loadbalancer/") ? {} : { unvalidated: ELB_V1_ADDTAGS }),
  });
  const other = { "elbv2.k8s.aws/cluster": OTHER_CLUSTER };
  return {
    principal: "lb-controller",
    role: f.roles.lbc,
    allowed: [
      created("elasticloadbalancing:CreateLoadBalancer", `${elb}:loadbalancer/app/${f.albName}/*`, lbTags),
      addTagsOnCreate("CreateLoadBalancer", lb, lbTags),
      created("elasticloadbalancing:CreateTargetGroup", `${elb}:targetgroup/k8s-comfyui-gateway-0123456789/*`, tgTags),
      addTagsOnCreate("CreateTargetGroup", tg, tgTags),
      { action: "elasticloadbalancing:CreateListener", resource: lb, context: { ...ownedBy(lbTags), ...requestTags(lbTags) } },
      addTagsOnCreate("CreateListener", listener, lbTags),
      { action: "elasticloadbalancing:CreateRule", resource: listener, context: { ...ownedBy(lbTags), ...requestTags(lbTags) } },
      addTagsOnCreate("CreateRule", rule, lbTags),
      { action: "elasticloadbalancing:ModifyRule", resource: rule, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:ModifyListener", resource: listener, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:ModifyListenerAttributes", resource: listener, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:SetRulePriorities", resource: rule, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:DeleteRule", resource: rule, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:ModifyLoadBalancerAttributes", resource: lb, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:SetSecurityGroups", resource: lb, context: ownedBy(lbTags) },
      { action: "elasticloadbalancing:ModifyTargetGroupAttributes", resource: tg, context: ownedBy(tgTags) },
      { action: "elasticloadbalancing:RegisterTargets", resource: tg, context: ownedBy(tgTags) },
      { action: "elasticloadbalancing:DeregisterTargets", resource: tg, context: ownedBy(tgTags) },
      { action: "elasticloadbalancing:AddTags", resource: lb, context: { ...ownedBy(lbTags), ...requestTags({ "app.kubernetes.io/part-of": "comfyui" }) } },
      { action: "elasticloadbalancing:DeleteTargetGroup", resource: tg, context: ownedBy(tgTags) },
      { action: "elasticloadbalancing:DeleteLoadBalancer", resource: lb, context: ownedBy(lbTags) },
      created("ec2:CreateSecurityGroup", `${ec2}:security-group/*`, sgTags),
      { action: "ec2:CreateSecurityGroup", resource: `${ec2}:vpc/${f.vpcId}` },
      { action: "ec2:CreateTags", resource: `${ec2}:security-group/*`, context: { ...requestTags(sgTags), "ec2:CreateAction": "CreateSecurityGroup" } },
      { action: "ec2:AuthorizeSecurityGroupIngress", resource: sg, context: ownedBy(sgTags) },
      { action: "ec2:RevokeSecurityGroupIngress", resource: sg, context: ownedBy(sgTags) },
      // Backend rules on the cluster's node group, which the controller does not own.
      { action: "ec2:AuthorizeSecurityGroupIngress", resource: `${ec2}:security-group/${f.nodeSecurityGroup}` },
      { action: "ec2:RevokeSecurityGroupIngress", resource: `${ec2}:security-group/${f.nodeSecurityGroup}` },
      { action: "ec2:DeleteSecurityGroup", resource: sg, context: ownedBy(sgTags) },
      ...[
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeAvailabilityZones",
        "ec2:GetSecurityGroupsForVpc",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeListenerAttributes",
        "elasticloadbalancing:DescribeRules",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeTags",
      ].map((action) => ({ action, resource: "*" })),
    ],
    denied: [
      { action: "elasticloadbalancing:DeleteLoadBalancer", resource: `${elb}:loadbalancer/app/theirs/0123456789abcdef`, context: ownedBy(other) },
      { action: "elasticloadbalancing:RegisterTargets", resource: `${elb}:targetgroup/theirs/0123456789abcdef`, context: ownedBy(other) },
      { action: "elasticloadbalancing:ModifyListenerAttributes", resource: `${elb}:listener/app/theirs/0123456789abcdef/0123456789abcdef`, context: ownedBy(other) },
      created("elasticloadbalancing:CreateLoadBalancer", `${elb}:loadbalancer/app/untracked/*`, { "ingress.k8s.aws/stack": "x" }),
      // Moving its own load balancer to another cluster.
      { action: "elasticloadbalancing:AddTags", resource: lb, context: { ...ownedBy(lbTags), ...requestTags(other) } },
      { action: "ec2:DeleteSecurityGroup", resource: `${ec2}:security-group/${f.nodeSecurityGroup}` },
      { action: "ec2:CreateTags", resource: sg, context: { ...ownedBy(sgTags), ...requestTags(other) } },
      { action: "wafv2:AssociateWebACL", resource: `arn:aws:wafv2:${REGION}:${MOCK_ACCOUNT}:regional/webacl/x/0123` },
    ],
  };
}

/**
 * The model-sync Lambda (sync/handler.ts): finds the cluster's nodes, runs AWS-RunShellScript on
 * them and reads the results. Run Command evaluates a node's tags under ssm:resourceTag/<key>
 * ("Restricting Run Command access based on tags", SSM User Guide), so that is the context given.
 */
export function syncTable(f: Facts): PrincipalTable {
  const instance = (id: string) => `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}:instance/${id}`;
  const logGroup = `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${f.syncLogGroup}`;
  return {
    principal: "model-sync",
    role: f.roles.sync,
    allowed: [
      { action: "ssm:SendCommand", resource: `arn:aws:ssm:${REGION}::document/AWS-RunShellScript`, unvalidated: AWS_OWNED_ARN },
      { action: "ssm:SendCommand", resource: instance("i-0123456789abcdef0"), context: resourceTags({ "eks:eks-cluster-name": f.cluster }, "ssm:resourceTag") },
      { action: "ssm:GetCommandInvocation", resource: "*" },
      { action: "ec2:DescribeInstances", resource: "*" },
      ...["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"].map((action) => ({ action, resource: f.syncQueueArn })),
      { action: "logs:CreateLogStream", resource: `${logGroup}:log-stream:2026/12/01/[$LATEST]0123456789abcdef` },
      { action: "logs:PutLogEvents", resource: `${logGroup}:log-stream:2026/12/01/[$LATEST]0123456789abcdef` },
    ],
    denied: [
      { action: "ssm:SendCommand", resource: instance("i-0fedcba9876543210"), context: resourceTags({ "eks:eks-cluster-name": OTHER_CLUSTER }, "ssm:resourceTag") },
      { action: "ssm:SendCommand", resource: instance("i-0fedcba9876543210") },
      { action: "ssm:SendCommand", resource: `arn:aws:ssm:${REGION}::document/AWS-RunPowerShellScript`, unvalidated: AWS_OWNED_ARN },
      { action: "sqs:ReceiveMessage", resource: `arn:aws:sqs:${REGION}:${OTHER_ACCOUNT}:${f.cluster}-sync` },
      { action: "sqs:DeleteMessage", resource: f.syncQueueArn, context: { "aws:SecureTransport": "false" }, explicit: true },
      { action: "logs:PutLogEvents", resource: `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:/aws/lambda/other:log-stream:x` },
    ],
  };
}

/** A GPU node (the user data's boot fill and every SSM sync copy read the models bucket). */
export function gpuNodeTable(f: Facts, attached: string[]): PrincipalTable {
  const models = `arn:aws:s3:::${f.buckets.models}`;
  // The boot line (karpenter/userdata/comfyui-models.sh send_boot_metrics): the node's own stream only.
  const metrics = f.metricsLogGroup === undefined ? undefined : `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${f.metricsLogGroup}`;
  const bootStream = `${NODE_BOOT_STREAM_PREFIX}i-0123456789abcdef0`;
  const metricsAllowed: SimRequest[] = metrics
    ? [
        { action: "logs:CreateLogStream", resource: `${metrics}:log-stream:${bootStream}` },
        { action: "logs:PutLogEvents", resource: `${metrics}:log-stream:${bootStream}` },
      ]
    : [];
  const metricsDenied: SimRequest[] = metrics
    ? [
        { action: "logs:PutLogEvents", resource: `${metrics}:log-stream:gateway/x` },
        { action: "logs:CreateLogStream", resource: `${metrics}:log-stream:gateway/x` },
        { action: "logs:PutLogEvents", resource: `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${metricsLogGroupName(OTHER_CLUSTER)}:log-stream:${bootStream}` },
        { action: "logs:DeleteLogStream", resource: `${metrics}:log-stream:${bootStream}` },
      ]
    : [];
  return {
    principal: "gpu-node",
    role: f.roles.node,
    allowed: [
      { action: "s3:ListBucket", resource: models, context: { "s3:prefix": "checkpoints/" } },
      { action: "s3:GetObject", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "s3:GetObjectVersion", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors` },
      // From the AWS-managed policies (vendored default versions): kubelet, VPC CNI, image pulls,
      // the SSM agent that runs the sync Lambda's commands.
      { action: "eks:DescribeCluster", resource: `arn:aws:eks:${REGION}:${MOCK_ACCOUNT}:cluster/${f.cluster}` },
      { action: "ec2:DescribeInstances", resource: "*" },
      { action: "ec2:AssignPrivateIpAddresses", resource: `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}:network-interface/eni-0123456789abcdef0` },
      { action: "ecr:GetAuthorizationToken", resource: "*" },
      { action: "ecr:BatchGetImage", resource: `arn:aws:ecr:${REGION}:${MOCK_ACCOUNT}:repository/${f.cluster}-repo` },
      { action: "ecr:GetDownloadUrlForLayer", resource: `arn:aws:ecr:${REGION}:${MOCK_ACCOUNT}:repository/${f.cluster}-repo` },
      { action: "ssm:UpdateInstanceInformation", resource: `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}:instance/i-0123456789abcdef0` },
      { action: "ec2messages:GetMessages", resource: "*" },
      { action: "ssmmessages:CreateControlChannel", resource: "*" },
      // Boot: the node tool (content-addressed) and the parameter naming the image to pre-pull.
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.nodeTool.bucket}/${f.nodeTool.key}` },
      { action: "ssm:GetParameter", resource: `arn:aws:ssm:${REGION}:${MOCK_ACCOUNT}:parameter${f.imageParameter}` },
      ...metricsAllowed,
    ],
    denied: [
      ...metricsDenied,
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.nodeTool.bucket}/node/other-tool.sh` },
      { action: "s3:PutObject", resource: `arn:aws:s3:::${f.nodeTool.bucket}/${f.nodeTool.key}` },
      // No denial of other SSM parameters: AmazonSSMManagedInstanceCore (required by the SSM agent)
      // already allows ssm:GetParameter on "*"; the inline grant states what the boot needs.
      { action: "s3:PutObject", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:DeleteObject", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.buckets.outputs}/x.png` },
      { action: "s3:GetObject", resource: "arn:aws:s3:::another-bucket/checkpoints/x.safetensors" },
      // The bucket policy refuses plain HTTP.
      { action: "s3:GetObject", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors`, context: { "aws:SecureTransport": "false" }, explicit: true },
    ],
    managedPolicies: attached,
  };
}

/** Mountpoint for S3 CSI driver: ComfyUI's output and input folders are these buckets. */
export function mountpointTable(f: Facts): PrincipalTable {
  const buckets = [f.buckets.outputs, f.buckets.inputs];
  return {
    principal: "mountpoint-csi",
    role: f.roles.mountpoint,
    allowed: buckets.flatMap((b): SimRequest[] => [
      { action: "s3:ListBucket", resource: `arn:aws:s3:::${b}` },
      ...["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"].map((action) => ({ action, resource: `arn:aws:s3:::${b}/ComfyUI_00001_.png` })),
    ]),
    denied: [
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.buckets.models}/checkpoints/x.safetensors` },
      { action: "s3:PutObject", resource: "arn:aws:s3:::another-bucket/x.png" },
      { action: "s3:PutBucketPolicy", resource: `arn:aws:s3:::${f.buckets.outputs}` },
    ],
  };
}

/**
 * The model agent (workload/models/agent/fetcher.ts): HeadObject (s3:GetObject), ranged GetObject with
 * If-Match (s3:GetObject), ListObjectsV2 of a pinned folder and HeadBucket (s3:ListBucket), on the
 * models bucket only. Never a write, never an old version, never another bucket.
 */
export function modelsAgentTable(f: Facts): PrincipalTable {
  const models = `arn:aws:s3:::${f.buckets.models}`;
  return {
    principal: "models-agent",
    role: f.roles.modelsAgent,
    allowed: [
      { action: "s3:GetObject", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "s3:ListBucket", resource: models, context: { "s3:prefix": "loras/" } },
      { action: "s3:ListBucket", resource: models },
    ],
    denied: [
      { action: "s3:PutObject", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:DeleteObject", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:GetObjectVersion", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.buckets.outputs}/gateway/output/x.png` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.buckets.inputs}/x.png` },
      { action: "s3:PutBucketPolicy", resource: models },
    ],
  };
}

/**
 * The gateway (workload/gateway, contract in its README "DynamoDB"): store/dynamo.ts reads and
 * writes its table and queries its GSIs; store/objects.ts S3ObjectStore gets, puts, deletes and
 * lists (ListObjectsV2, authorized as s3:ListBucket with s3:prefix) under the prefixes app.ts
 * gives each store: <outputs prefix>output|temp|cache/ in the outputs bucket, the inputs bucket
 * as is (routes/files.ts uploads, dispatcher.ts reads; never a delete), user/ in the userdata bucket.
 */
export function gatewayTable(f: Facts): PrincipalTable {
  const g = f.gateway;
  const ddb = `arn:aws:dynamodb:${REGION}:${MOCK_ACCOUNT}`;
  const table = `${ddb}:table/${g.table}`;
  const otherTable = `${ddb}:table/${f.cluster}-someone-elses-table`;
  const outputs = `arn:aws:s3:::${g.outputsBucket}`;
  const inputs = `arn:aws:s3:::${g.inputsBucket}`;
  const userdata = `arn:aws:s3:::${g.userdataBucket}`;
  const models = `arn:aws:s3:::${f.buckets.models}`;
  const objectRw = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"];
  const settings = `${userdata}/${g.userdataPrefix}default/comfy.settings.json`;
  // telemetry/sink.ts: CreateLogStream then PutLogEvents on gateway/<POD_NAME>.
  const metrics = `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${g.metricsLogGroup}`;
  const ownStream = `${metrics}:log-stream:${GATEWAY_STREAM_PREFIX}comfyui-gateway-7d9f-abcde`;
  // audit.ts: the same sink, on the audit group's stream gateway/<POD_NAME>.
  const audit = `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${g.auditLogGroup}`;
  const auditStream = `${audit}:log-stream:${GATEWAY_STREAM_PREFIX}comfyui-gateway-7d9f-abcde`;
  return {
    principal: "gateway",
    role: g.role,
    allowed: [
      ...["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchGetItem"].map((action) => ({ action, resource: table })),
      // Of these actions only Query can address an index (Service Authorization Reference, DynamoDB:
      // GetItem/PutItem/UpdateItem/DeleteItem/BatchGetItem take the table alone), and it is what
      // store/dynamo.ts sends with IndexName.
      ...g.indexes.map((index) => ({ action: "dynamodb:Query", resource: `${table}/index/${index}` })),
      ...objectRw.map((action) => ({ action, resource: `${outputs}/${g.outputsPrefix}output/ComfyUI_00001_.png` })),
      ...objectRw.map((action) => ({ action, resource: `${outputs}/${g.outputsPrefix}temp/ComfyUI_temp_00001_.png` })),
      { action: "s3:GetObject", resource: `${outputs}/${g.outputsPrefix}cache/object_info.json` },
      { action: "s3:ListBucket", resource: outputs, context: { "s3:prefix": `${g.outputsPrefix}output/` } },
      { action: "s3:ListBucket", resource: outputs, context: { "s3:prefix": g.outputsPrefix } },
      // S3 answers a GetObject of a missing key with 404 only to a caller allowed s3:ListBucket on the
      // bucket (a prefix-conditioned grant does not count there); the gateway needs that 404.
      { action: "s3:ListBucket", resource: outputs },
      { action: "s3:ListBucket", resource: userdata },
      { action: "s3:GetObject", resource: `${inputs}/example.png` },
      { action: "s3:PutObject", resource: `${inputs}/pasted/image.png` },
      { action: "s3:ListBucket", resource: inputs, context: { "s3:prefix": "" } },
      ...objectRw.map((action) => ({ action, resource: settings })),
      { action: "s3:ListBucket", resource: userdata, context: { "s3:prefix": `${g.userdataPrefix}default/workflows/` } },
      { action: "logs:CreateLogStream", resource: ownStream },
      { action: "logs:PutLogEvents", resource: ownStream },
      // models/library.ts: ListObjectsV2 of the whole models bucket (GATEWAY_MODELS_BUCKET).
      { action: "s3:ListBucket", resource: `arn:aws:s3:::${g.modelsBucket}`, context: { "s3:prefix": "" } },
      { action: "s3:ListBucket", resource: `arn:aws:s3:::${g.modelsBucket}` },
      { action: "logs:CreateLogStream", resource: auditStream },
      { action: "logs:PutLogEvents", resource: auditStream },
    ],
    denied: [
      { action: "dynamodb:GetItem", resource: otherTable },
      { action: "dynamodb:PutItem", resource: otherTable },
      { action: "dynamodb:Query", resource: `${otherTable}/index/open` },
      { action: "dynamodb:DeleteTable", resource: table },
      { action: "dynamodb:Scan", resource: table },
      { action: "dynamodb:Scan", resource: `${table}/index/${g.indexes[0]}` },
      // Nothing batch-writes: deletes go one conditional write at a time (store/dynamo.ts).
      { action: "dynamodb:BatchWriteItem", resource: table },
      { action: "dynamodb:CreateTable", resource: otherTable },
      // ComfyUI's own outputs (the mountpoint's) are outside the gateway's prefix.
      { action: "s3:GetObject", resource: `${outputs}/ComfyUI_00001_.png` },
      { action: "s3:PutObject", resource: `${outputs}/ComfyUI_00001_.png` },
      { action: "s3:DeleteObject", resource: `${outputs}/ComfyUI_00001_.png` },
      // A prefix that only starts like the gateway's.
      { action: "s3:GetObject", resource: `${outputs}/${g.outputsPrefix.replace(/\/$/, "")}-other/x.png` },
      { action: "s3:DeleteObject", resource: `${inputs}/example.png` },
      // The models bucket is the library it lists, never reads or changes: the agents fetch the files.
      { action: "s3:GetObject", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "s3:PutObject", resource: `${models}/checkpoints/x.safetensors` },
      { action: "s3:DeleteObject", resource: `${models}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "s3:GetObject", resource: `${userdata}/other/secret.json` },
      { action: "s3:PutObject", resource: `${userdata}/comfy.settings.json` },
      { action: "s3:DeleteObject", resource: `${userdata}/other/secret.json` },
      { action: "s3:PutBucketPolicy", resource: outputs },
      // A GPU node's stream, another group, and anything beyond writing.
      { action: "logs:PutLogEvents", resource: `${metrics}:log-stream:${NODE_BOOT_STREAM_PREFIX}i-0123456789abcdef0` },
      { action: "logs:PutLogEvents", resource: `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group:${metricsLogGroupName(OTHER_CLUSTER)}:log-stream:${GATEWAY_STREAM_PREFIX}x` },
      { action: "logs:DeleteLogStream", resource: ownStream },
      { action: "logs:PutRetentionPolicy", resource: metrics },
      // The trail cannot be rewritten or cut short by the gateway it records.
      { action: "logs:DeleteLogStream", resource: auditStream },
      { action: "logs:DeleteLogGroup", resource: audit },
      { action: "logs:PutRetentionPolicy", resource: audit },
      { action: "logs:PutLogEvents", resource: `${audit}:log-stream:other` },
      // The bucket policies refuse plain HTTP, whatever the role may do.
      { action: "s3:GetObject", resource: settings, context: { "aws:SecureTransport": "false" }, explicit: true },
    ],
  };
}

/**
 * The image builder's CodeBuild project (image/builder.ts, buildspec from image/buildspec.ts): logs
 * in to ECR, pulls and pushes layers and the manifest in each image's repository, reads that
 * image's context archive (the build's S3 source) and writes the build's log streams.
 */
export function imageBuildTable(f: Facts): PrincipalTable {
  const b = f.build;
  const ecr = `arn:aws:ecr:${REGION}:${MOCK_ACCOUNT}:repository`;
  const logs = `arn:aws:logs:${REGION}:${MOCK_ACCOUNT}:log-group`;
  // One build's stream: log-group:<group>:log-stream:<stream> (LogsLocation.cloudWatchLogsArn, CodeBuild API Reference).
  const stream = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  const contextBucket = b.images[0].contextBucket;
  const pushPull = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
  ];
  return {
    principal: "image-build",
    role: b.role,
    allowed: [
      { action: "ecr:GetAuthorizationToken", resource: "*" },
      // The login to ECR Public, for the base images (image/buildspec.ts).
      { action: "ecr-public:GetAuthorizationToken", resource: "*" },
      { action: "sts:GetServiceBearerToken", resource: "*", context: { "sts:AWSServiceName": "ecr-public.amazonaws.com" } },
      ...b.images.flatMap((i) => pushPull.map((action) => ({ action, resource: `${ecr}/${i.repository}` }))),
      ...b.images.map((i) => ({ action: "s3:GetObject", resource: `arn:aws:s3:::${i.contextBucket}/${i.contextKey}` })),
      // The bucket-level reads CodeBuild's documented service-role policy grants for an S3 source.
      { action: "s3:GetBucketLocation", resource: `arn:aws:s3:::${contextBucket}` },
      { action: "s3:GetBucketAcl", resource: `arn:aws:s3:::${contextBucket}` },
      { action: "logs:CreateLogStream", resource: `${logs}:${b.logGroup}:log-stream:${stream}` },
      { action: "logs:PutLogEvents", resource: `${logs}:${b.logGroup}:log-stream:${stream}` },
    ],
    denied: [
      { action: "ecr:PutImage", resource: `${ecr}/${f.cluster}-someone-elses-repo` },
      // A bearer token for another service (CodeArtifact), or pushing to ECR Public, is not the login.
      { action: "sts:GetServiceBearerToken", resource: "*", context: { "sts:AWSServiceName": "codeartifact.amazonaws.com" } },
      { action: "ecr-public:PutImage", resource: `arn:aws:ecr-public::${MOCK_ACCOUNT}:repository/comfyui` },
      { action: "ecr:InitiateLayerUpload", resource: `${ecr}/${f.cluster}-someone-elses-repo` },
      { action: "ecr:BatchGetImage", resource: `${ecr}/${f.cluster}-someone-elses-repo` },
      { action: "ecr:PutImage", resource: `arn:aws:ecr:${REGION}:${OTHER_ACCOUNT}:repository/${b.images[0].repository}` },
      { action: "ecr:DeleteRepository", resource: `${ecr}/${b.images[0].repository}` },
      { action: "ecr:BatchDeleteImage", resource: `${ecr}/${b.images[0].repository}` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${contextBucket}/contexts/someone-else/0123.zip` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${contextBucket}/secret.txt` },
      { action: "s3:PutObject", resource: `arn:aws:s3:::${b.images[0].contextBucket}/${b.images[0].contextKey}` },
      { action: "s3:ListBucket", resource: `arn:aws:s3:::${contextBucket}` },
      { action: "s3:GetObject", resource: `arn:aws:s3:::${f.buckets.models}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "logs:PutLogEvents", resource: `${logs}:/aws/codebuild/someone-elses-project:log-stream:${stream}` },
      { action: "logs:CreateLogStream", resource: `${logs}:/aws/codebuild/someone-elses-project:log-stream:${stream}` },
      { action: "logs:PutLogEvents", resource: `${logs}:${f.syncLogGroup}:log-stream:${stream}` },
      // The context bucket's policy refuses plain HTTP.
      { action: "s3:GetObject", resource: `arn:aws:s3:::${b.images[0].contextBucket}/${b.images[0].contextKey}`, context: { "aws:SecureTransport": "false" }, explicit: true },
    ],
  };
}

export function principalTables(run: ProgramRun, attachedByRole: Map<string, string[]>): PrincipalTable[] {
  const f = programFacts(run);
  return [
    karpenterTable(f),
    lbcTable(f),
    syncTable(f),
    gpuNodeTable(f, attachedByRole.get(f.roles.node) ?? []),
    mountpointTable(f),
    gatewayTable(f),
    modelsAgentTable(f),
    imageBuildTable(f),
  ];
}
