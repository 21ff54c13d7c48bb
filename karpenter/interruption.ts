/**
 * Interruption handling: EC2 and AWS Health tell Karpenter about spot reclaims, rebalances and
 * scheduled maintenance through one SQS queue, so it drains a node before the instance goes away.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { policyJson } from "../cluster/iam";
import { interruptionQueueStatements } from "./iam";

/** The EventBridge rules feeding the queue, by the name that ends each rule's resource name. */
export const INTERRUPTION_RULES: Record<string, object> = {
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

export interface Interruption {
  queue: aws.sqs.Queue;
  /** The queue's policy: the controller starts once EventBridge may deliver. */
  queuePolicy: aws.sqs.QueuePolicy;
  ruleNames: Record<string, pulumi.Output<string>>;
}

export function createInterruption(name: string, parent: pulumi.Resource, tags: Record<string, string>): Interruption {
  const queue = new aws.sqs.Queue(`${name}-interruption`, { messageRetentionSeconds: 300, sqsManagedSseEnabled: true, tags }, { parent });
  const queuePolicy = new aws.sqs.QueuePolicy(`${name}-interruption`, { queueUrl: queue.url, policy: policyJson(interruptionQueueStatements(queue.arn)) }, { parent });
  const ruleNames: Record<string, pulumi.Output<string>> = {};
  for (const [ruleName, pattern] of Object.entries(INTERRUPTION_RULES)) {
    const rule = new aws.cloudwatch.EventRule(`${name}-${ruleName}`, { eventPattern: JSON.stringify(pattern), tags }, { parent });
    ruleNames[ruleName] = rule.name;
    new aws.cloudwatch.EventTarget(`${name}-${ruleName}`, { rule: rule.name, arn: queue.arn }, { parent, dependsOn: [queuePolicy] });
  }
  return { queue, queuePolicy, ruleNames };
}
