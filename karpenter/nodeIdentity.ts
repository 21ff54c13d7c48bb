/**
 * Who the GPU nodes are: their IAM role (upstream's managed policies and nothing broader, plus inline
 * grants for the models bucket, the image parameter, their boot metrics and the node tool), the node
 * tool object they fetch at boot, and the EKS access entry that lets them join the cluster.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { policyJson } from "../cluster/iam";
import { EC2_TRUST, NODE_MANAGED_POLICY_ARNS, nodeBootMetricsStatements, nodeImageParameterStatements, nodeModelsReadStatements, nodeToolReadStatements } from "./iam";
import { modelsToolObject } from "./userdata/gpuUserData";
import type { GpuCapacityArgs } from "./validate";

export interface NodeIdentity {
  role: aws.iam.Role;
  /** Everything a node needs before it can boot usefully: the EC2NodeClass waits for these. */
  ready: pulumi.Resource[];
}

export function createNodeIdentity(name: string, parent: pulumi.Resource, args: GpuCapacityArgs, tags: Record<string, string>): NodeIdentity {
  const opts = { parent };
  const role = new aws.iam.Role(`${name}-node`, { assumeRolePolicy: EC2_TRUST, tags }, opts);
  const policies = Object.entries(NODE_MANAGED_POLICY_ARNS).map(
    ([key, policyArn]) => new aws.iam.RolePolicyAttachment(`${name}-node-${key}`, { role: role.name, policyArn }, opts),
  );
  const modelsRead = new aws.iam.RolePolicy(`${name}-node-models-read`, { role: role.name, policy: policyJson(nodeModelsReadStatements(args.modelsBucketArn)) }, opts);
  if (args.imageParameter !== undefined) {
    new aws.iam.RolePolicy(
      `${name}-node-image-parameter`,
      { role: role.name, policy: policyJson(nodeImageParameterStatements({ region: args.region, accountId: args.accountId, parameterName: args.imageParameter })) },
      opts,
    );
  }
  const bootMetrics =
    args.metricsLogGroupArn !== undefined
      ? new aws.iam.RolePolicy(`${name}-node-boot-metrics`, { role: role.name, policy: policyJson(nodeBootMetricsStatements(args.metricsLogGroupArn)) }, opts)
      : undefined;
  // The node tool is too large for the 16 KiB of user data: the node fetches it from the private
  // node-tools bucket, at a key that changes with its content, and checks its sha256.
  const tool = modelsToolObject();
  const toolObject = new aws.s3.BucketObject(
    `${name}-node-tool`,
    { bucket: args.nodeToolsBucket, key: tool.key, content: tool.content, contentType: "text/x-shellscript", tags },
    opts,
  );
  const toolRead = new aws.iam.RolePolicy(`${name}-node-tool-read`, { role: role.name, policy: policyJson(nodeToolReadStatements(args.nodeToolsBucketArn, tool.key)) }, opts);
  // Nodes Karpenter launches are not a managed node group, so nothing else grants them cluster access.
  const accessEntry = new aws.eks.AccessEntry(`${name}-node`, { clusterName: args.clusterName, principalArn: role.arn, type: "EC2_LINUX", tags }, opts);
  return { role, ready: [accessEntry, modelsRead, toolObject, toolRead, ...policies, ...(bootMetrics ? [bootMetrics] : [])] };
}
