/**
 * Model sync: every object created in or removed from the models bucket reaches the running GPU
 * nodes within seconds. S3 notifies an SQS queue; a Lambda (the plain handler module in this
 * folder) turns each batch into net changes and applies them on every node through SSM Run
 * Command. New nodes need nothing from here: they read the bucket at boot.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { policyJson, Statement } from "../cluster/iam";
import { configFromEnv, createHandler, SQSBatchResponse, SQSEvent, SyncHandler } from "./handler";

/** Instance tag Karpenter v1 puts on every node it launches; SendCommand is limited to it. */
const CLUSTER_TAG = "eks:eks-cluster-name";

/** SQS keeps a message 6× the function timeout invisible, so a slow batch is never delivered twice (Lambda DG). */
export const VISIBILITY_TIMEOUT_FACTOR = 6;

/** Receives before a message goes to the dead-letter queue. */
export const MAX_RECEIVE_COUNT = 5;

/** Seconds the dead-letter queue keeps a message (the SQS maximum, 14 days): time for a human to look. */
export const DLQ_RETENTION_SECONDS = 14 * 24 * 3600;

export interface ModelSyncArgs {
  /** EKS cluster name: the node filter (`eks:eks-cluster-name` tag) and the SendCommand tag condition. */
  clusterName: pulumi.Input<string>;
  /** AWS region of the cluster and the bucket. */
  region: string;
  /** AWS account id, for ARNs and the S3 source-account condition. */
  accountId: pulumi.Input<string>;
  /** Name of the models bucket whose events are synced. */
  modelsBucket: pulumi.Input<string>;
  /** ARN of the models bucket; only its events may enter the queue. */
  modelsBucketArn: pulumi.Input<string>;
  /**
   * The bucket resource, when it is created in this program: the notification waits for it.
   * @defaultValue none (the dependency then comes through `modelsBucket` alone)
   */
  modelsBucketResource?: pulumi.Resource;
  /** Karpenter NodePools whose nodes hold models (at least one). */
  nodePoolNames: string[];
  /**
   * Lambda timeout in seconds (60–900); the queue's visibility timeout is 6× this.
   * @defaultValue 900 (a new checkpoint on every node can take minutes)
   */
  timeoutSeconds?: number;
  /** Days the function's log group keeps its logs. @defaultValue 30 */
  logRetentionDays?: number;
  /** Tags for every AWS resource. @defaultValue {} */
  tags?: Record<string, string>;
}

/**
 * The Lambda entry point. The handler is built on the first invocation (configuration comes from
 * the function's environment) and reused while the instance stays warm.
 */
export function syncCallback(): (event: SQSEvent, context: aws.lambda.Context) => Promise<SQSBatchResponse> {
  // An object, not a `let`: the serialized closure keeps and mutates its own copy.
  const cache: { handler?: SyncHandler } = {};
  return async (event, context) => {
    cache.handler ??= createHandler(configFromEnv(process.env));
    return cache.handler(event, context);
  };
}

export interface SyncFunctionPolicyParams {
  readonly clusterName: pulumi.Input<string>;
  readonly region: string;
  readonly accountId: pulumi.Input<string>;
  readonly queueArn: pulumi.Input<string>;
  readonly logGroupArn: pulumi.Input<string>;
}

/** Everything the sync Lambda may do; no managed policy is attached next to it. */
export function syncFunctionStatements(p: SyncFunctionPolicyParams): Statement[] {
  return [
    {
      Sid: "RunShellScriptDocument",
      Effect: "Allow",
      Action: "ssm:SendCommand",
      // AWS-owned documents have no account in their ARN.
      Resource: `arn:aws:ssm:${p.region}::document/AWS-RunShellScript`,
    },
    {
      Sid: "SendCommandToClusterNodes",
      Effect: "Allow",
      Action: "ssm:SendCommand",
      Resource: pulumi.interpolate`arn:aws:ec2:${p.region}:${p.accountId}:instance/*`,
      // Run Command evaluates a node's tags as ssm:resourceTag/<key> ("Restricting Run Command
      // access based on tags", SSM User Guide); a global key on SendCommand would also need
      // aws:ViaAWSService ("Setting up Run Command"). The service reference lists
      // ssm:resourceTag/${TagKey} for SendCommand's instance resource.
      Condition: { StringEquals: { [`ssm:resourceTag/${CLUSTER_TAG}`]: p.clusterName } },
    },
    {
      // GetCommandInvocation has no resource-level permissions: the API requires "*".
      Sid: "ReadCommandResults",
      Effect: "Allow",
      Action: "ssm:GetCommandInvocation",
      Resource: "*",
    },
    {
      // DescribeInstances has no resource-level permissions: the API requires "*".
      Sid: "FindNodes",
      Effect: "Allow",
      Action: "ec2:DescribeInstances",
      Resource: "*",
    },
    {
      Sid: "ConsumeSyncQueue",
      Effect: "Allow",
      Action: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"],
      Resource: p.queueArn,
    },
    {
      Sid: "WriteOwnLogs",
      Effect: "Allow",
      Action: ["logs:CreateLogStream", "logs:PutLogEvents"],
      Resource: pulumi.interpolate`${p.logGroupArn}:*`,
    },
  ];
}

/** S3 may deliver events of the models bucket (in this account) and nothing else; TLS only. */
export function syncQueueStatements(queueArn: pulumi.Input<string>, bucketArn: pulumi.Input<string>, accountId: pulumi.Input<string>): Statement[] {
  return [
    {
      Sid: "AllowModelsBucketEvents",
      Effect: "Allow",
      Principal: { Service: "s3.amazonaws.com" },
      Action: "sqs:SendMessage",
      Resource: queueArn,
      Condition: { ArnEquals: { "aws:SourceArn": bucketArn }, StringEquals: { "aws:SourceAccount": accountId } },
    },
    denyInsecureTransport(queueArn),
  ];
}

function denyInsecureTransport(queueArn: pulumi.Input<string>): Statement {
  return {
    Sid: "DenyHTTP",
    Effect: "Deny",
    Principal: "*",
    Action: "sqs:*",
    Resource: queueArn,
    Condition: { Bool: { "aws:SecureTransport": "false" } },
  };
}

/** The Lambda's own runtime dependencies; everything else in package.json is left out of its zip. */
export const LAMBDA_PACKAGES = ["@aws-sdk/client-ssm", "@aws-sdk/client-ec2"] as const;

/** Production dependencies of this repository that the sync Lambda never loads. */
export function packagesNotInLambda(): string[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pkg = require("../package.json") as { dependencies: Record<string, string> };
  return Object.keys(pkg.dependencies).filter((d) => !(LAMBDA_PACKAGES as readonly string[]).includes(d) && !d.startsWith("@pulumi/"));
}

const LAMBDA_TRUST = JSON.stringify({
  Version: "2012-10-17",
  Statement: [{ Effect: "Allow", Principal: { Service: "lambda.amazonaws.com" }, Action: "sts:AssumeRole" }],
});

function validate(args: ModelSyncArgs, timeoutSeconds: number): void {
  if (args.nodePoolNames.length === 0 || args.nodePoolNames.some((p) => p.trim() === "" || p.includes(","))) {
    throw new pulumi.InputPropertyError({ propertyPath: "nodePoolNames", reason: "must list at least one NodePool name (no commas)" });
  }
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 60 || timeoutSeconds > 900) {
    throw new pulumi.InputPropertyError({ propertyPath: "timeoutSeconds", reason: `must be an integer in [60, 900], got ${timeoutSeconds}` });
  }
}

export class ModelSync extends pulumi.ComponentResource {
  readonly queueUrl: pulumi.Output<string>;
  readonly queueArn: pulumi.Output<string>;
  readonly queueName: pulumi.Output<string>;
  readonly dlqUrl: pulumi.Output<string>;
  readonly dlqName: pulumi.Output<string>;
  readonly functionName: pulumi.Output<string>;

  constructor(name: string, args: ModelSyncArgs, opts?: pulumi.ComponentResourceOptions) {
    const timeoutSeconds = args.timeoutSeconds ?? 900;
    validate(args, timeoutSeconds);
    super("comfyui:sync:ModelSync", name, {}, opts);
    const parent = { parent: this };
    const tags = args.tags ?? {};

    const dlq = new aws.sqs.Queue(
      `${name}-sync-dlq`,
      { messageRetentionSeconds: DLQ_RETENTION_SECONDS, sqsManagedSseEnabled: true, tags },
      parent,
    );
    new aws.sqs.QueuePolicy(`${name}-sync-dlq`, { queueUrl: dlq.url, policy: policyJson([denyInsecureTransport(dlq.arn)]) }, parent);
    const queue = new aws.sqs.Queue(
      `${name}-sync`,
      {
        // SSE-SQS (not KMS): S3 can deliver to it without a key policy.
        sqsManagedSseEnabled: true,
        visibilityTimeoutSeconds: VISIBILITY_TIMEOUT_FACTOR * timeoutSeconds,
        redrivePolicy: pulumi.jsonStringify({ deadLetterTargetArn: dlq.arn, maxReceiveCount: MAX_RECEIVE_COUNT }),
        tags,
      },
      parent,
    );
    const queuePolicy = new aws.sqs.QueuePolicy(
      `${name}-sync`,
      { queueUrl: queue.url, policy: policyJson(syncQueueStatements(queue.arn, args.modelsBucketArn, args.accountId)) },
      parent,
    );
    // S3 tests delivery when the notification is saved, so the queue policy must already allow it.
    // A bucket has one notification configuration: nothing else in this program may set one on it.
    new aws.s3.BucketNotification(
      `${name}-models`,
      { bucket: args.modelsBucket, queues: [{ queueArn: queue.arn, events: ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"] }] },
      { parent: this, dependsOn: [queuePolicy, ...(args.modelsBucketResource ? [args.modelsBucketResource] : [])] },
    );

    // A physical name, so the log group can be /aws/lambda/<name> and exist (with retention)
    // before the first invocation; the cluster name already makes it unique per stack.
    const functionName = pulumi.interpolate`${args.clusterName}-model-sync`;
    const logGroup = new aws.cloudwatch.LogGroup(
      `${name}-sync`,
      { name: pulumi.interpolate`/aws/lambda/${functionName}`, retentionInDays: args.logRetentionDays ?? 30, tags },
      parent,
    );
    const role = new aws.iam.Role(`${name}-sync-fn`, { assumeRolePolicy: LAMBDA_TRUST, tags }, parent);
    const rolePolicy = new aws.iam.RolePolicy(
      `${name}-sync-fn`,
      {
        role: role.name,
        policy: policyJson(
          syncFunctionStatements({
            clusterName: args.clusterName,
            region: args.region,
            accountId: args.accountId,
            queueArn: queue.arn,
            logGroupArn: logGroup.arn,
          }),
        ),
      },
      parent,
    );

    const fn = new aws.lambda.CallbackFunction<SQSEvent, SQSBatchResponse>(
      `${name}-sync`,
      {
        name: functionName,
        role,
        runtime: aws.lambda.Runtime.NodeJS22dX,
        timeout: timeoutSeconds,
        memorySize: 256,
        environment: {
          variables: {
            CLUSTER_NAME: args.clusterName,
            NODE_POOLS: args.nodePoolNames.join(","),
            MODELS_BUCKET: args.modelsBucket,
          },
        },
        loggingConfig: { logFormat: "Text", logGroup: logGroup.name },
        // The zip carries the pinned SSM and EC2 SDK clients rather than the runtime's bundled SDK:
        // the serialized code requires their exact file paths, and the version that runs is the
        // version the handler tests ran against. Pulumi packs every production dependency of
        // package.json by default; the gateway's and the image builder's stay out.
        callback: syncCallback(),
        codePathOptions: { extraExcludePackages: packagesNotInLambda() },
        tags,
      },
      // Replacing a named function must delete the old one first, or the name would collide.
      { parent: this, dependsOn: [rolePolicy, logGroup], deleteBeforeReplace: true },
    );

    new aws.lambda.EventSourceMapping(
      `${name}-sync`,
      {
        eventSourceArn: queue.arn,
        functionName: fn.arn,
        batchSize: 100,
        maximumBatchingWindowInSeconds: 10,
        functionResponseTypes: ["ReportBatchItemFailures"],
        // At most two batches at once keeps SSM SendCommand bursts (and node load) bounded.
        scalingConfig: { maximumConcurrency: 2 },
        tags,
      },
      { parent: this, dependsOn: [rolePolicy] },
    );

    this.queueUrl = queue.url;
    this.queueArn = queue.arn;
    this.dlqUrl = dlq.url;
    this.queueName = queue.name;
    this.dlqName = dlq.name;
    this.functionName = fn.name;
    this.registerOutputs({ queueUrl: this.queueUrl, queueArn: this.queueArn, dlqUrl: this.dlqUrl, functionName: this.functionName });
  }
}
