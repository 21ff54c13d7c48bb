/**
 * What the gateway may do: its IAM statements (its table, its prefixes of three buckets, its log
 * streams) and its Kubernetes RBAC, as plain data the component and the IAM tests read.
 */
import * as pulumi from "@pulumi/pulumi";
import type { Statement } from "../cluster/iam";
import { GATEWAY_STREAM_PREFIX } from "../contracts/metrics";
import { GATEWAY_OUTPUTS_PREFIX, GATEWAY_USERDATA_PREFIX } from "./gatewayNames";

/** DynamoDB actions of the contract, on the table and its indexes only. */
export const GATEWAY_TABLE_ACTIONS = [
  "dynamodb:GetItem",
  "dynamodb:PutItem",
  "dynamodb:UpdateItem",
  "dynamodb:DeleteItem",
  "dynamodb:Query",
  // The bodies of several waiting prompts in one call (the queue view; store/dynamo.ts getBodies).
  "dynamodb:BatchGetItem",
] as const;

/** Everything the gateway's role may do: its table, its prefixes of three buckets, its metrics streams. Nothing else. */
export function gatewayStatements(p: {
  tableArn: pulumi.Input<string>;
  outputsBucketArn: pulumi.Input<string>;
  inputsBucketArn: pulumi.Input<string>;
  userdataBucketArn: pulumi.Input<string>;
  metricsLogGroupArn?: pulumi.Input<string>;
  auditLogGroupArn?: pulumi.Input<string>;
  /** The models bucket, listed (never read) for the model library. */
  modelsBucketArn?: pulumi.Input<string>;
}): Statement[] {
  // Streams gateway/<pod> of the metrics group (never another writer's, e.g. node-boot/*) and of the audit group.
  const streams = (sid: string, arn: pulumi.Input<string> | undefined): Statement[] =>
    arn
      ? [{ Sid: sid, Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: pulumi.interpolate`${arn}:log-stream:${GATEWAY_STREAM_PREFIX}*` }]
      : [];
  return [
    ...streams("MetricsStreams", p.metricsLogGroupArn),
    ...streams("AuditStreams", p.auditLogGroupArn),
    {
      Sid: "OwnTable",
      Effect: "Allow",
      Action: [...GATEWAY_TABLE_ACTIONS],
      Resource: [p.tableArn, pulumi.interpolate`${p.tableArn}/index/*`],
    },
    {
      Sid: "GatewayOutputs",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      Resource: pulumi.interpolate`${p.outputsBucketArn}/${GATEWAY_OUTPUTS_PREFIX}*`,
    },
    {
      // Unconditioned on purpose: S3 answers a GetObject of a missing key with 404 only when the
      // caller may s3:ListBucket the bucket, else 403 (S3 API reference, GetObject "Permissions"), and
      // a prefix condition has no s3:prefix to match there. /view and the settings read need the 404.
      Sid: "ListGatewayOutputs",
      Effect: "Allow",
      Action: "s3:ListBucket",
      Resource: p.outputsBucketArn,
    },
    {
      // Uploads land where every ComfyUI pod's input mount reads them; the gateway never deletes inputs.
      Sid: "Inputs",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject"],
      Resource: pulumi.interpolate`${p.inputsBucketArn}/*`,
    },
    { Sid: "ListInputs", Effect: "Allow", Action: "s3:ListBucket", Resource: p.inputsBucketArn },
    {
      Sid: "UserState",
      Effect: "Allow",
      Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
      Resource: pulumi.interpolate`${p.userdataBucketArn}/${GATEWAY_USERDATA_PREFIX}*`,
    },
    // The user-state bucket holds nothing but the gateway's user/ tree; listing it is unconditioned for the same 404.
    { Sid: "ListUserState", Effect: "Allow", Action: "s3:ListBucket", Resource: p.userdataBucketArn },
    // The model library is the models bucket's listing; the nodes' agents read the objects, the gateway never does.
    ...(p.modelsBucketArn ? [{ Sid: "ListModels", Effect: "Allow" as const, Action: "s3:ListBucket", Resource: p.modelsBucketArn }] : []),
  ];
}

/** What the gateway reads and patches through the Kubernetes API, in its namespace only (README "Kubernetes"). */
export const GATEWAY_RBAC_RULES = [
  { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["get", "patch"] },
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
];

/**
 * Cluster-wide and read-only: the Node of a ComfyUI pod that just turned Ready (creation time =
 * kubelet registered; the boot-at label = kernel start), for the cold-start figures. Nodes are
 * cluster-scoped, so a namespaced Role cannot grant this; `get` only, no list or watch.
 */
export const GATEWAY_CLUSTER_RBAC_RULES = [{ apiGroups: [""], resources: ["nodes"], verbs: ["get"] }];
