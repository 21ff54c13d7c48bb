/**
 * ModelSync under mocks: the bucket → queue → Lambda wiring, the least-privilege role (inline only,
 * SendCommand limited to this cluster's instances) and the serialized Lambda module itself, loaded
 * and invoked the way the nodejs22.x runtime would.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { ModelSync, ModelSyncArgs } from "../../sync";
import type { SQSBatchResponse, SQSEvent } from "../../sync/handler";
import { MOCK_ACCOUNT, RecordedResource, Recorder, installMocks, quiesce, unwrap } from "../support/mocks";


const rec = new Recorder();
installMocks(rec);

const NAME = "modelsync";
const CLUSTER = "comfyui-dev";
const BUCKET = "comfyui-models-123456789012";
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
const FUNCTION_NAME = `${CLUSTER}-model-sync`;
const QUEUE_ARN = `arn:aws:sqs:us-west-2:${MOCK_ACCOUNT}:${NAME}-sync`;
const DLQ_ARN = `arn:aws:sqs:us-west-2:${MOCK_ACCOUNT}:${NAME}-sync-dlq`;

function baseArgs(): ModelSyncArgs {
  return {
    clusterName: pulumi.output(CLUSTER),
    region: "us-west-2",
    accountId: pulumi.output(MOCK_ACCOUNT),
    modelsBucket: pulumi.output(BUCKET),
    modelsBucketArn: pulumi.output(BUCKET_ARN),
    nodePoolNames: ["comfyui-gpu", "comfyui-gpu-large"],
    tags: { "app.kubernetes.io/part-of": "comfyui" },
  };
}

interface PolicyDoc {
  Statement: { Sid?: string; Effect: string; Action: string | string[]; Resource: string | string[]; Condition?: Record<string, Record<string, unknown>>; Principal?: unknown }[];
}
const asList = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);

describe("sync ModelSync component", function () {
  this.timeout(60_000);
  let mine: RecordedResource[];
  let outputs: { queueUrl: string; dlqUrl: string; functionName: string };

  const ofType = (type: string) => mine.filter((r) => r.type === type);
  const one = (type: string, suffix: string) => {
    const found = ofType(type).filter((r) => r.name === `${NAME}-${suffix}`);
    assert.equal(found.length, 1, `expected one ${type} named ${NAME}-${suffix}, found ${found.map((r) => r.name).join(", ")}`);
    return found[0];
  };

  before(async () => {
    installMocks(rec);
    rec.reset();
    const sync = new ModelSync(NAME, baseArgs());
    outputs = {
      queueUrl: await unwrap(sync.queueUrl),
      dlqUrl: await unwrap(sync.dlqUrl),
      functionName: await unwrap(sync.functionName),
    };
    await quiesce(rec);
    mine = rec.resources.filter((r) => r.name.startsWith(`${NAME}-`));
  });

  it("exports the queue URLs and the function name", () => {
    assert.equal(outputs.queueUrl, `https://sqs.us-west-2.amazonaws.com/${MOCK_ACCOUNT}/${NAME}-sync`);
    assert.equal(outputs.dlqUrl, `https://sqs.us-west-2.amazonaws.com/${MOCK_ACCOUNT}/${NAME}-sync-dlq`);
    assert.equal(outputs.functionName, FUNCTION_NAME);
  });

  describe("queues", () => {
    it("keeps failed messages 14 days in an encrypted dead-letter queue", () => {
      const dlq = one("aws:sqs/queue:Queue", "sync-dlq");
      assert.equal(dlq.inputs.messageRetentionSeconds, 14 * 24 * 3600);
      assert.equal(dlq.inputs.sqsManagedSseEnabled, true);
    });

    it("redrives to the DLQ after 5 receives, with SSE and a visibility timeout 6× the function timeout", () => {
      const q = one("aws:sqs/queue:Queue", "sync");
      const fn = one("aws:lambda/function:Function", "sync");
      assert.equal(q.inputs.sqsManagedSseEnabled, true);
      assert.deepEqual(JSON.parse(q.inputs.redrivePolicy), { deadLetterTargetArn: DLQ_ARN, maxReceiveCount: 5 });
      assert.ok(q.inputs.visibilityTimeoutSeconds >= fn.inputs.timeout, "visibility must cover the function timeout");
      assert.equal(q.inputs.visibilityTimeoutSeconds, 6 * fn.inputs.timeout);
    });

    it("accepts messages only from S3 for the models bucket of this account, over TLS", () => {
      const doc = JSON.parse(one("aws:sqs/queuePolicy:QueuePolicy", "sync").inputs.policy) as PolicyDoc;
      const allow = doc.Statement.filter((s) => s.Effect === "Allow");
      assert.equal(allow.length, 1);
      assert.deepEqual(allow[0].Principal, { Service: "s3.amazonaws.com" });
      assert.equal(allow[0].Action, "sqs:SendMessage");
      assert.equal(allow[0].Resource, QUEUE_ARN);
      assert.deepEqual(allow[0].Condition, { ArnEquals: { "aws:SourceArn": BUCKET_ARN }, StringEquals: { "aws:SourceAccount": MOCK_ACCOUNT } });
      const deny = doc.Statement.find((s) => s.Effect === "Deny");
      assert.deepEqual(deny?.Condition, { Bool: { "aws:SecureTransport": "false" } });
      assert.equal(deny?.Resource, QUEUE_ARN);
    });

    it("keeps the dead-letter queue TLS-only too", () => {
      const doc = JSON.parse(one("aws:sqs/queuePolicy:QueuePolicy", "sync-dlq").inputs.policy) as PolicyDoc;
      assert.deepEqual(doc.Statement, [
        { Sid: "DenyHTTP", Effect: "Deny", Principal: "*", Action: "sqs:*", Resource: DLQ_ARN, Condition: { Bool: { "aws:SecureTransport": "false" } } },
      ]);
    });

    it("notifies the queue of every created and removed model object", () => {
      const n = one("aws:s3/bucketNotification:BucketNotification", "models");
      assert.equal(n.inputs.bucket, BUCKET);
      assert.deepEqual(n.inputs.queues, [{ queueArn: QUEUE_ARN, events: ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"] }]);
    });
  });

  describe("Lambda role", () => {
    let doc: PolicyDoc;
    before(() => {
      const inline = ofType("aws:iam/rolePolicy:RolePolicy").filter((p) => p.inputs.role === `${NAME}-sync-fn`);
      assert.equal(inline.length, 1);
      doc = JSON.parse(inline[0].inputs.policy) as PolicyDoc;
    });
    const withAction = (action: string) => doc.Statement.filter((s) => asList(s.Action).includes(action));

    it("is assumed by Lambda and has no managed policy at all", () => {
      const role = one("aws:iam/role:Role", "sync-fn");
      assert.deepEqual(JSON.parse(role.inputs.assumeRolePolicy).Statement[0].Principal, { Service: "lambda.amazonaws.com" });
      assert.equal(role.inputs.managedPolicyArns, undefined);
      assert.deepEqual(ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment"), []);
      assert.equal(one("aws:lambda/function:Function", "sync").inputs.role, `arn:aws:iam::${MOCK_ACCOUNT}:role/${NAME}-sync-fn`);
    });

    it("sends commands only with AWS-RunShellScript, only to instances tagged with this cluster", () => {
      const send = withAction("ssm:SendCommand");
      assert.equal(send.length, 2);
      const document = send.find((s) => String(s.Resource).includes(":document/"));
      const instances = send.find((s) => String(s.Resource).includes(":instance/"));
      assert.equal(document?.Resource, "arn:aws:ssm:us-west-2::document/AWS-RunShellScript");
      assert.equal(document?.Condition, undefined);
      assert.equal(instances?.Resource, `arn:aws:ec2:us-west-2:${MOCK_ACCOUNT}:instance/*`);
      assert.deepEqual(instances?.Condition, { StringEquals: { "ssm:resourceTag/eks:eks-cluster-name": CLUSTER } });
    });

    it("grants '*' only to GetCommandInvocation and DescribeInstances, which have no resource-level permissions", () => {
      const unscoped = doc.Statement.filter((s) => asList(s.Resource).includes("*"));
      assert.deepEqual(unscoped.flatMap((s) => asList(s.Action)).sort(), ["ec2:DescribeInstances", "ssm:GetCommandInvocation"]);
    });

    it("consumes only its own queue and writes only its own log group", () => {
      const sqs = doc.Statement.filter((s) => asList(s.Action).some((a) => a.startsWith("sqs:")));
      assert.equal(sqs.length, 1);
      assert.deepEqual(asList(sqs[0].Action).sort(), ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]);
      assert.equal(sqs[0].Resource, QUEUE_ARN);
      const logs = doc.Statement.filter((s) => asList(s.Action).some((a) => a.startsWith("logs:")));
      assert.equal(logs.length, 1);
      assert.deepEqual(asList(logs[0].Action).sort(), ["logs:CreateLogStream", "logs:PutLogEvents"]);
      assert.equal(logs[0].Resource, `arn:aws:logs:us-west-2:${MOCK_ACCOUNT}:log-group:/aws/lambda/${FUNCTION_NAME}:*`);
    });

    it("has no other action, no wildcard action and no S3 access", () => {
      const actions = doc.Statement.flatMap((s) => asList(s.Action));
      assert.deepEqual(
        [...new Set(actions)].sort(),
        [
          "ec2:DescribeInstances",
          "logs:CreateLogStream",
          "logs:PutLogEvents",
          "sqs:ChangeMessageVisibility",
          "sqs:DeleteMessage",
          "sqs:GetQueueAttributes",
          "sqs:ReceiveMessage",
          "ssm:GetCommandInvocation",
          "ssm:SendCommand",
        ],
      );
      for (const s of doc.Statement) assert.equal(s.Effect, "Allow");
    });
  });

  describe("function", () => {
    let fn: RecordedResource;
    before(() => {
      fn = one("aws:lambda/function:Function", "sync");
    });

    it("runs on nodejs22.x with 256 MB and a timeout the queue covers", () => {
      assert.equal(fn.inputs.runtime, "nodejs22.x");
      assert.equal(fn.inputs.runtime, aws.lambda.Runtime.NodeJS22dX);
      assert.equal(fn.inputs.memorySize, 256);
      assert.ok(fn.inputs.timeout > 0 && fn.inputs.timeout <= 900);
      assert.equal(fn.inputs.name, FUNCTION_NAME);
    });

    it("gets its configuration from the environment: cluster, NodePools, bucket", () => {
      assert.deepEqual(fn.inputs.environment.variables, {
        CLUSTER_NAME: CLUSTER,
        NODE_POOLS: "comfyui-gpu,comfyui-gpu-large",
        MODELS_BUCKET: BUCKET,
      });
    });

    it("logs to /aws/lambda/<function name>, kept 30 days", () => {
      const group = one("aws:cloudwatch/logGroup:LogGroup", "sync");
      assert.equal(group.inputs.name, `/aws/lambda/${FUNCTION_NAME}`);
      assert.equal(group.inputs.retentionInDays, 30);
      assert.equal(fn.inputs.loggingConfig.logGroup, `/aws/lambda/${FUNCTION_NAME}`);
    });

    it("is fed by the queue in batches of 100, reporting per-message failures, two at a time at most", () => {
      const esm = one("aws:lambda/eventSourceMapping:EventSourceMapping", "sync");
      assert.equal(esm.inputs.eventSourceArn, QUEUE_ARN);
      assert.equal(esm.inputs.functionName, `arn:aws:lambda:us-west-2:${MOCK_ACCOUNT}:function:${NAME}-sync`);
      assert.equal(esm.inputs.batchSize, 100);
      assert.equal(esm.inputs.maximumBatchingWindowInSeconds, 10);
      assert.deepEqual(esm.inputs.functionResponseTypes, ["ReportBatchItemFailures"]);
      assert.deepEqual(esm.inputs.scalingConfig, { maximumConcurrency: 2 });
    });

    describe("serialized code", () => {
      let text: string;
      let handler: (event: SQSEvent, context: unknown) => Promise<SQSBatchResponse>;
      before(async () => {
        const archive = fn.inputs.code as pulumi.asset.AssetArchive;
        assert.ok(archive instanceof pulumi.asset.AssetArchive, "code must be an asset archive");
        const assets = await archive.assets;
        const index = assets["__index.js"] as pulumi.asset.StringAsset;
        assert.ok(index, "the archive holds the serialized module");
        text = await index.text;
        assert.equal(fn.inputs.handler, "__index.handler");
        const mod: { exports: { handler?: typeof handler } } = { exports: {} };
        new Function("exports", "require", "module", text)(mod.exports, require, mod);
        assert.ok(mod.exports.handler);
        handler = mod.exports.handler;
      });

      it("captures no configuration value: bucket, cluster and NodePools come from the environment", () => {
        assert.ok(!text.includes(BUCKET));
        assert.ok(!text.includes("comfyui-gpu-large"));
      });

      it("requires only the AWS SDK clients, which the archive carries", async () => {
        for (const r of new Set(text.match(/require\("[^"]+"\)/g))) assert.match(r, /^require\("@aws-sdk\/client-(ssm|ec2)\//);
        const assets = await (fn.inputs.code as pulumi.asset.AssetArchive).assets;
        assert.ok(assets["node_modules/@aws-sdk/client-ssm"]);
        assert.ok(assets["node_modules/@aws-sdk/client-ec2"]);
      });

      it("reads the environment on first invocation and answers an empty batch without AWS calls", async () => {
        const keys = ["CLUSTER_NAME", "NODE_POOLS", "MODELS_BUCKET", "AWS_REGION"] as const;
        const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]));
        try {
          for (const k of keys) delete process.env[k];
          await assert.rejects(handler({ Records: [] }, undefined), /missing environment variable\(s\): CLUSTER_NAME, NODE_POOLS, MODELS_BUCKET, AWS_REGION/);
          Object.assign(process.env, { ...fn.inputs.environment.variables, AWS_REGION: "us-west-2" });
          const logged: string[] = [];
          const log = console.log;
          console.log = (line: string) => logged.push(line);
          try {
            assert.deepEqual(await handler({ Records: [] }, undefined), { batchItemFailures: [] });
          } finally {
            console.log = log;
          }
          assert.equal(JSON.parse(logged[0]).msg, "model sync summary");
        } finally {
          for (const k of keys) {
            if (saved[k] === undefined) delete process.env[k];
            else process.env[k] = saved[k];
          }
        }
      });
    });
  });

  describe("argument validation", () => {
    it("rejects an empty NodePool list", () => {
      assert.throws(
        () => new ModelSync("bad-pools", { ...baseArgs(), nodePoolNames: [] }),
        (err: unknown) => pulumi.InputPropertyError.isInstance(err) && err.propertyPath === "nodePoolNames",
      );
    });

    it("rejects a timeout Lambda does not allow", () => {
      assert.throws(() => new ModelSync("bad-timeout", { ...baseArgs(), timeoutSeconds: 1200 }), /timeoutSeconds|\[60, 900\]/);
    });
  });
});
