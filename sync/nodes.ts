/**
 * Which instances must apply a change: this cluster's running Karpenter GPU nodes. Found through EC2
 * tags rather than the Kubernetes API so the Lambda needs no cluster access at all.
 */
import { EC2Client, Filter, paginateDescribeInstances } from "@aws-sdk/client-ec2";

/** Tag Karpenter v1 puts on every instance it launches, naming the NodePool. */
const NODEPOOL_TAG = "karpenter.sh/nodepool";
/** Tag EKS-aware launchers (Karpenter v1 included) put on cluster instances. */
const CLUSTER_TAG = "eks:eks-cluster-name";

export function nodeFilters(clusterName: string, nodePools: readonly string[]): Filter[] {
  return [
    { Name: "instance-state-name", Values: ["running"] },
    { Name: `tag:${CLUSTER_TAG}`, Values: [clusterName] },
    { Name: `tag:${NODEPOOL_TAG}`, Values: [...nodePools] },
  ];
}

/** Running instance ids of the given NodePools, de-duplicated and sorted. */
export async function findNodeInstanceIds(
  ec2: EC2Client,
  clusterName: string,
  nodePools: readonly string[],
): Promise<string[]> {
  const ids = new Set<string>();
  const pages = paginateDescribeInstances({ client: ec2, pageSize: 1000 }, { Filters: nodeFilters(clusterName, nodePools) });
  for await (const page of pages) {
    for (const reservation of page.Reservations ?? []) {
      for (const instance of reservation.Instances ?? []) {
        if (instance.InstanceId) ids.add(instance.InstanceId);
      }
    }
  }
  return [...ids].sort();
}

// Exported as a list, not `export const`: TypeScript would compile in-module uses to `exports.X`,
// which Pulumi's closure serialization turns into the Lambda module's (empty) exports.
export { NODEPOOL_TAG, CLUSTER_TAG };
