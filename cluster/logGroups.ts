/**
 * The platform's own log groups, kept as long as the cluster's other logs: the metrics group (EMF
 * lines from the gateway, streams gateway/<pod>, and from every GPU node's boot, node-boot/<instance
 * id>; contracts/metrics.ts) and the audit trail (one JSON line per state change: who, what, from
 * where). Created before their writers so they carry the retention; each writer's role names only its
 * own streams.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { metricsLogGroupName } from "../contracts/metrics";

export function createPlatformLogGroups(
  stackName: string,
  parent: pulumi.Resource,
  clusterName: string,
  retentionInDays: number,
  tags: Record<string, string>,
): { metrics: aws.cloudwatch.LogGroup; audit: aws.cloudwatch.LogGroup } {
  // These were made in index.ts, at the top of the stack, under these names: the alias keeps each one
  // (and its logs) where it is instead of replacing it (Pulumi: aliases: [{ parent: pulumi.rootStackResource }]).
  const moved = { parent, aliases: [{ parent: pulumi.rootStackResource }] };
  return {
    metrics: new aws.cloudwatch.LogGroup(`${stackName}-metrics`, { name: metricsLogGroupName(clusterName), retentionInDays, tags }, moved),
    audit: new aws.cloudwatch.LogGroup(`${stackName}-audit`, { name: `/comfyui/${clusterName}/audit`, retentionInDays, tags }, moved),
  };
}
