import { strict as assert } from "node:assert";
import { DescribeInstancesCommand, EC2Client } from "@aws-sdk/client-ec2";
import {
  GetCommandInvocationCommand,
  GetCommandInvocationCommandOutput,
  InvalidInstanceId,
  InvocationDoesNotExist,
  SendCommandCommand,
  SendCommandCommandInput,
  SSMClient,
} from "@aws-sdk/client-ssm";
import * as pulumi from "@pulumi/pulumi";
import { mockClient } from "aws-sdk-client-mock";
import type { SQSEvent } from "../../sync/events";
import { createEnvHandler, createHandler, SyncConfig, SyncHandler, SyncSummary } from "../../sync/handler";
import { emfLines, parseEmfLine } from "../observability/emfParse";
import { BUCKET, CLUSTER, decodeCommands, fakeTime, instanceIds, loadEvent, messageFromTemplate, NODE_POOLS, page } from "./helpers";

type Invocation = Partial<GetCommandInvocationCommandOutput>;
/** What GetCommandInvocation answers for the `poll`-th poll of the `send`-th command sent to `instanceId`. */
type Script = (instanceId: string, send: number, poll: number) => Invocation | Error;

const ssmMock = mockClient(SSMClient);
const ec2Mock = mockClient(EC2Client);
const ssm = new SSMClient({ region: "us-east-1" });
const ec2 = new EC2Client({ region: "us-east-1" });

const notYet = () => new InvocationDoesNotExist({ message: "Invocation does not exist", $metadata: {} });
const success: Invocation = { Status: "Success", StatusDetails: "Success", ResponseCode: 0, StandardErrorContent: "" };
const failedRun = (stderr: string): Invocation => ({ Status: "Failed", StatusDetails: "Failed", ResponseCode: 1, StandardErrorContent: stderr });

/** An SSM fake that numbers commands and answers polls from a script. */
function fleet(script: Script) {
  const sends: { input: SendCommandCommandInput; commandId: string }[] = [];
  const sendsTo = new Map<string, number>();
  const sendNo = new Map<string, number>();
  const polls = new Map<string, number>();
  ssmMock.on(SendCommandCommand).callsFake(async (input: SendCommandCommandInput) => {
    const commandId = `cmd-${sends.length + 1}`;
    sends.push({ input, commandId });
    for (const id of input.InstanceIds ?? []) {
      const n = (sendsTo.get(id) ?? 0) + 1;
      sendsTo.set(id, n);
      sendNo.set(`${commandId}/${id}`, n);
    }
    return { Command: { CommandId: commandId } };
  });
  ssmMock.on(GetCommandInvocationCommand).callsFake(async (input: { CommandId: string; InstanceId: string }) => {
    const k = `${input.CommandId}/${input.InstanceId}`;
    const n = (polls.get(k) ?? 0) + 1;
    polls.set(k, n);
    const answer = script(input.InstanceId, sendNo.get(k) ?? 0, n);
    if (answer instanceof Error) throw answer;
    return { CommandId: input.CommandId, InstanceId: input.InstanceId, ...answer };
  });
  return { sends, sendsTo };
}

function setup(overrides: Partial<SyncConfig> = {}) {
  const time = fakeTime();
  const logs: Record<string, unknown>[] = [];
  const handler = createHandler(
    { clusterName: CLUSTER, nodePools: NODE_POOLS, modelsBucket: BUCKET, region: "us-east-1", ...overrides },
    { ssm, ec2, log: (line) => logs.push(JSON.parse(JSON.stringify(line))), sleep: time.sleep, now: time.now },
  );
  const summary = () => {
    const lines = logs.filter((l) => l.msg === "model sync summary");
    assert.equal(lines.length, 1, "exactly one summary line");
    return lines[0] as unknown as SyncSummary;
  };
  return { handler, logs, time, summary };
}

function nodes(ids: string[]) {
  ec2Mock.on(DescribeInstancesCommand).resolves(page(ids));
}

const sendInputs = () => ssmMock.commandCalls(SendCommandCommand).map((c) => c.args[0].input);

/** The batch's metrics as CloudWatch would extract them from its one EMF line: name → value. */
function batchMetrics(logs: object[]): Record<string, number> {
  const lines = emfLines(logs);
  assert.equal(lines.length, 1, "exactly one EMF line per batch");
  const metrics = parseEmfLine(JSON.stringify(lines[0]));
  for (const m of metrics) {
    assert.equal(m.namespace, "ComfyUI/Platform");
    assert.deepEqual(m.dimensions, { ClusterName: CLUSTER });
    assert.equal(m.values.length, 1);
  }
  return Object.fromEntries(metrics.map((m) => [m.name, m.values[0]]));
}

describe("sync/handler", () => {
  beforeEach(() => {
    ssmMock.reset();
    ec2Mock.reset();
  });
  after(() => {
    ssmMock.restore();
    ec2Mock.restore();
  });

  it("sends one AWS-RunShellScript command to the running nodes and waits for Success", async () => {
    const ids = instanceIds(2);
    nodes(ids);
    ssmMock.on(SendCommandCommand).resolves({ Command: { CommandId: "cmd-1" } });
    ssmMock
      .on(GetCommandInvocationCommand)
      .rejectsOnce(notYet())
      .rejectsOnce(notYet())
      .resolvesOnce({ Status: "InProgress", StatusDetails: "InProgress" })
      .resolvesOnce({ Status: "InProgress", StatusDetails: "InProgress" })
      .resolves(success);
    const { handler, summary, time, logs } = setup();

    const event = loadEvent("sqs-object-created.json");
    assert.deepEqual(await handler(event), { batchItemFailures: [] });

    const sent = sendInputs();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].DocumentName, "AWS-RunShellScript");
    assert.deepEqual(sent[0].InstanceIds, ids);
    assert.equal(sent[0].TimeoutSeconds, 900);
    assert.deepEqual(sent[0].Parameters?.executionTimeout, ["900"]);
    assert.match(sent[0].Comment ?? "", /1 change/);
    assert.ok((sent[0].Comment ?? "").length <= 100);
    assert.equal(decodeCommands(sent[0].Parameters?.commands ?? []), "put\tcheckpoints/sd_xl_base_1.0.safetensors\n");

    // Three poll rounds for both instances: not visible yet, InProgress, Success.
    const polls = ssmMock.commandCalls(GetCommandInvocationCommand).map((c) => c.args[0].input);
    assert.equal(polls.length, 6);
    assert.deepEqual(new Set(polls.map((p) => `${p.CommandId}/${p.InstanceId}`)), new Set(ids.map((id) => `cmd-1/${id}`)));
    assert.deepEqual(time.sleeps, [3000, 3000, 3000]);

    const s = summary();
    assert.equal(s.level, "info");
    assert.deepEqual(s.changes, [{ action: "put", key: "checkpoints/sd_xl_base_1.0.safetensors" }]);
    assert.deepEqual(s.nodes, ids);
    assert.deepEqual(s.succeeded, ids);
    assert.deepEqual(s.failed, []);
    assert.deepEqual(s.rejected, []);
    assert.equal(s.attempts, 1);
    assert.deepEqual(batchMetrics(logs), { SyncBatches: 1, SyncChangesApplied: 1, SyncNodeFailures: 0, SyncFailedBatches: 0, SyncRejectedEvents: 0 });

    const filters = ec2Mock.commandCalls(DescribeInstancesCommand)[0].args[0].input.Filters;
    assert.deepEqual(filters, [
      { Name: "instance-state-name", Values: ["running"] },
      { Name: "tag:eks:eks-cluster-name", Values: [CLUSTER] },
      { Name: "tag:karpenter.sh/nodepool", Values: NODE_POOLS },
    ]);
  });

  it("sends a delete for ObjectRemoved", async () => {
    nodes(instanceIds(1));
    const f = fleet(() => success);
    const { handler } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-removed.json")), { batchItemFailures: [] });
    assert.equal(decodeCommands(f.sends[0].input.Parameters?.commands ?? []), "delete\tloras/old-style.safetensors\n");
  });

  it("ignores the s3:TestEvent without touching EC2 or SSM", async () => {
    const { handler, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-test-event.json")), { batchItemFailures: [] });
    assert.equal(ec2Mock.calls().length, 0);
    assert.equal(ssmMock.calls().length, 0);
    assert.equal(summary().ignored, 1);
  });

  it("succeeds without sending when no GPU node is running", async () => {
    nodes([]);
    const { handler, logs, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-created.json")), { batchItemFailures: [] });
    assert.equal(ssmMock.calls().length, 0);
    assert.ok(logs.some((l) => l.msg === "no running GPU nodes; new nodes read the bucket at boot"));
    assert.deepEqual(summary().nodes, []);
    // Nothing to update: the change counts as applied (new nodes read the bucket at boot).
    assert.equal(batchMetrics(logs).SyncChangesApplied, 1);
  });

  it("finds nodes across DescribeInstances pages and sends at most 50 instance ids per command", async () => {
    const ids = instanceIds(120);
    ec2Mock
      .on(DescribeInstancesCommand)
      .resolvesOnce(page(ids.slice(0, 70), "next"))
      .resolvesOnce(page(ids.slice(70)));
    const f = fleet(() => success);
    const { handler, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-created.json")), { batchItemFailures: [] });
    assert.equal(ec2Mock.commandCalls(DescribeInstancesCommand).length, 2);
    assert.deepEqual(f.sends.map((s) => s.input.InstanceIds?.length), [50, 50, 20]);
    assert.deepEqual(f.sends.flatMap((s) => s.input.InstanceIds), ids);
    const commands = f.sends.map((s) => JSON.stringify(s.input.Parameters?.commands));
    assert.equal(new Set(commands).size, 1, "every chunk gets the same command");
    assert.equal(summary().succeeded.length, 120);
  });

  it("decodes spaces and unicode and sends the exact keys, folder markers left out", async () => {
    nodes(instanceIds(1));
    const f = fleet(() => success);
    const { handler } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-special-keys.json")), { batchItemFailures: [] });
    assert.equal(
      decodeCommands(f.sends[0].input.Parameters?.commands ?? []),
      "put\tcheckpoints/My Model v2 (fp16).safetensors\nput\tembeddings/a+b[neg],@v=1'.pt\nput\tloras/日本語 été.safetensors\n",
    );
  });

  it("rejects malicious keys and foreign buckets: logged as errors, never sent, never retried", async () => {
    nodes(instanceIds(1));
    const f = fleet(() => failedRun("copy failed"));
    const { handler, logs, summary } = setup();
    const event = loadEvent("sqs-malicious-keys.json");
    const result = await handler(event);

    for (const s of f.sends) {
      assert.equal(decodeCommands(s.input.Parameters?.commands ?? []), "put\tvae/sdxl_vae.safetensors\n");
    }
    // The node failed, so only the message with the valid change goes back to the queue.
    assert.deepEqual(result, { batchItemFailures: [{ itemIdentifier: event.Records[7].messageId }] });

    const errorLine = logs.find((l) => l.level === "error" && String(l.msg).startsWith("rejected S3 events"));
    assert.ok(errorLine, "rejections are logged at error level");
    const rejected = summary().rejected as { reason: string; key?: string }[];
    assert.deepEqual(rejected.map((r) => r.reason), [
      "dot-segment",
      "shell-metacharacter",
      "shell-metacharacter",
      "control-character",
      "absolute-path",
      "outside-model-folders",
      "wrong-bucket",
    ]);
    assert.equal(rejected[0].key, "checkpoints/../../etc/passwd");
    assert.equal(rejected[1].key, "loras/$(reboot).safetensors");
  });

  it("returns no failures when every key of the batch is rejected", async () => {
    const event = loadEvent("sqs-malicious-keys.json");
    const { handler } = setup();
    assert.deepEqual(await handler({ Records: event.Records.slice(0, 7) }), { batchItemFailures: [] });
    assert.equal(ssmMock.calls().length, 0);
    assert.equal(ec2Mock.calls().length, 0);
  });

  it("applies only the latest event per key (by sequencer)", async () => {
    nodes(instanceIds(1));
    const f = fleet(() => success);
    const { handler, summary } = setup();
    await handler(loadEvent("sqs-latest-wins.json"));
    assert.equal(
      decodeCommands(f.sends[0].input.Parameters?.commands ?? []),
      "delete\tcheckpoints/flux1-dev.safetensors\nput\tloras/detail.safetensors\nput\tvae/old.safetensors\n",
    );
    assert.equal(summary().superseded, 3);
  });

  it("handles a batch of hundreds of records built from the template", async () => {
    const records = [];
    const expected: string[] = [];
    for (let i = 0; i < 300; i++) {
      const key = `loras/batch/model ${String(i).padStart(3, "0")}.safetensors`;
      records.push(messageFromTemplate(`put-${i}`, [{ eventName: "ObjectCreated:Put", key: key.replace(/ /g, "+"), sequencer: `0065F2A1B3C4D5${(0x1000 + i).toString(16).toUpperCase()}` }]));
      if (i % 10 === 0) {
        records.push(messageFromTemplate(`del-${i}`, [{ eventName: "ObjectRemoved:Delete", key: key.replace(/ /g, "+"), sequencer: `0065F2A1B3C4D5${(0x2000 + i).toString(16).toUpperCase()}` }]));
      }
    }
    for (let i = 0; i < 300; i += 10) expected.push(`delete\tloras/batch/model ${String(i).padStart(3, "0")}.safetensors\n`);
    for (let i = 0; i < 300; i++) if (i % 10 !== 0) expected.push(`put\tloras/batch/model ${String(i).padStart(3, "0")}.safetensors\n`);
    records.reverse(); // order inside the batch must not matter

    nodes(instanceIds(3));
    const f = fleet((id, send) => (id === instanceIds(3)[2] && send === 1 ? failedRun("x") : success));
    const { handler, summary } = setup({ maxAttempts: 1 });
    const result = await handler({ Records: records });

    assert.equal(decodeCommands(f.sends[0].input.Parameters?.commands ?? []), expected.join(""));
    const s = summary();
    assert.equal(s.messages, 330);
    assert.equal(s.changeCount, 300);
    assert.equal(s.changes.length, 200, "the logged list is capped");
    assert.equal(s.superseded, 30);
    // One node failed: every message that carried a change is handed back.
    assert.equal(result.batchItemFailures.length, 330);
  });

  it("splits a very large change list into parts, each sent to every node", async () => {
    const records = Array.from({ length: 100 }, (_, i) =>
      messageFromTemplate(`m${i}`, [{ eventName: "ObjectCreated:Put", key: `checkpoints/${"long-folder/".repeat(30)}${i}.safetensors`, sequencer: "01" }]),
    );
    const ids = instanceIds(60);
    nodes(ids);
    const f = fleet(() => success);
    const { handler, summary } = setup();
    assert.deepEqual(await handler({ Records: records }), { batchItemFailures: [] });
    const s = summary();
    assert.equal(s.parts, 2);
    assert.deepEqual(f.sends.map((x) => x.input.InstanceIds?.length), [50, 10, 50, 10]);
    assert.match(f.sends[0].input.Comment ?? "", /100 change\(s\) part 1\/2, attempt 1\/3/);
    const lines = [f.sends[0], f.sends[2]].map((x) => decodeCommands(x.input.Parameters?.commands ?? [])).join("");
    assert.equal(lines.split("\n").filter(Boolean).length, 100);
    assert.deepEqual(s.succeeded, ids);
  });

  it("re-sends to a node that failed once, and only to it", async () => {
    const [a, b] = instanceIds(2);
    nodes([a, b]);
    const f = fleet((id, send, poll) => {
      if (poll === 1) return notYet();
      return id === b && send === 1 ? failedRun("download failed: checkpoints/x.safetensors") : success;
    });
    const { handler, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-created.json")), { batchItemFailures: [] });
    assert.deepEqual(f.sends.map((s) => s.input.InstanceIds), [[a, b], [b]]);
    assert.equal(f.sendsTo.get(b), 2);
    assert.equal(f.sendsTo.get(a), 1);
    assert.match(f.sends[1].input.Comment ?? "", /attempt 2\/3/);
    assert.deepEqual(f.sends[1].input.Parameters, f.sends[0].input.Parameters);
    const s = summary();
    assert.deepEqual(s.succeeded, [a, b]);
    assert.equal(s.attempts, 2);
  });

  it("gives up after maxAttempts and hands the messages back to SQS", async () => {
    const [a, b] = instanceIds(2);
    nodes([a, b]);
    const stderr = `apply: 1 of 1 failed\n${"noise ".repeat(200)}\nfatal: s3 GetObject AccessDenied for checkpoints/sd_xl_base_1.0.safetensors`;
    const f = fleet((id) => (id === b ? failedRun(stderr) : success));
    const { handler, summary, logs } = setup({ maxAttempts: 3 });
    const event = loadEvent("sqs-object-created.json");
    const testEvent = loadEvent("sqs-test-event.json");
    const result = await handler({ Records: [...event.Records, ...testEvent.Records] });

    assert.deepEqual(result, { batchItemFailures: [{ itemIdentifier: event.Records[0].messageId }] });
    assert.equal(f.sendsTo.get(b), 3);
    assert.equal(f.sendsTo.get(a), 1);
    const s = summary();
    assert.equal(s.level, "error");
    assert.deepEqual(s.succeeded, [a]);
    assert.equal(s.failed.length, 1);
    assert.equal(s.failed[0].instanceId, b);
    assert.equal(s.failed[0].status, "Failed");
    assert.ok((s.failed[0].stderr ?? "").length <= 501);
    assert.match(s.failed[0].stderr ?? "", /AccessDenied for checkpoints\/sd_xl_base_1\.0\.safetensors$/);
    assert.equal(s.retriedMessages, 1);
    // Handed back to SQS: nothing counts as applied, the failed node and the batch are counted.
    assert.deepEqual(batchMetrics(logs), { SyncBatches: 1, SyncChangesApplied: 0, SyncNodeFailures: 1, SyncFailedBatches: 1, SyncRejectedEvents: 0 });
  });

  it("notes a node that went away instead of retrying it", async () => {
    const [a, b] = instanceIds(2);
    ec2Mock.on(DescribeInstancesCommand).resolvesOnce(page([a, b])).resolves(page([a]));
    const f = fleet((id) => (id === b ? { Status: "Failed", StatusDetails: "Terminated" } : success));
    const { handler, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-created.json")), { batchItemFailures: [] });
    assert.equal(f.sends.length, 1);
    const s = summary();
    assert.deepEqual(s.gone, [{ instanceId: b, status: "Terminated" }]);
    assert.deepEqual(s.failed, []);
  });

  it("retries an Undeliverable node that is still running, up to maxAttempts", async () => {
    const [a] = instanceIds(1);
    nodes([a]);
    const f = fleet(() => ({ Status: "Failed", StatusDetails: "Undeliverable" }));
    const { handler, summary } = setup({ maxAttempts: 2 });
    const result = await handler(loadEvent("sqs-object-created.json"));
    assert.equal(result.batchItemFailures.length, 1);
    assert.equal(f.sendsTo.get(a), 2);
    assert.deepEqual(summary().failed, [{ instanceId: a, status: "Undeliverable" }]);
  });

  it("isolates an instance SSM does not manage, then drops it once it has stopped running", async () => {
    const [a, b, c] = instanceIds(3);
    ec2Mock.on(DescribeInstancesCommand).resolvesOnce(page([a, b, c])).resolves(page([a, c]));
    const sent: string[][] = [];
    ssmMock.on(SendCommandCommand).callsFake(async (input: SendCommandCommandInput) => {
      sent.push(input.InstanceIds ?? []);
      if (input.InstanceIds?.includes(b)) throw new InvalidInstanceId({ message: "Instances [[i-...]] not in a valid state", $metadata: {} });
      return { Command: { CommandId: `cmd-${sent.length}` } };
    });
    ssmMock.on(GetCommandInvocationCommand).resolves(success);
    const { handler, summary } = setup();
    assert.deepEqual(await handler(loadEvent("sqs-object-created.json")), { batchItemFailures: [] });
    assert.deepEqual(sent, [[a, b, c], [a], [b], [c]]);
    const s = summary();
    assert.deepEqual(s.succeeded, [a, c]);
    assert.deepEqual(s.gone, [{ instanceId: b, status: "NotManaged" }]);
  });

  it("stops polling before the Lambda times out and hands the messages back", async () => {
    nodes(instanceIds(1));
    fleet(() => ({ Status: "InProgress", StatusDetails: "InProgress" }));
    const { handler, summary, time } = setup();
    const start = time.now();
    const context = { getRemainingTimeInMillis: () => 60_000 - (time.now() - start) };
    const event = loadEvent("sqs-object-created.json");
    const result = await handler(event, context);
    assert.deepEqual(result, { batchItemFailures: [{ itemIdentifier: event.Records[0].messageId }] });
    assert.ok(time.now() - start <= 60_000 - 15_000, "leaves the safety margin");
    const s = summary();
    assert.equal(s.failed[0].status, "PollTimeout");
    assert.equal(s.attempts, 1);
    assert.equal(ssmMock.commandCalls(SendCommandCommand).length, 1);
  });

  it("keeps polling through transient errors but gives up on persistent ones", async () => {
    const [a, b] = instanceIds(2);
    nodes([a, b]);
    const throttled = () => Object.assign(new Error("Rate exceeded"), { name: "ThrottlingException" });
    fleet((id, _send, poll) => (id === a ? (poll < 3 ? throttled() : success) : throttled()));
    const { handler, summary } = setup({ maxAttempts: 1 });
    const result = await handler(loadEvent("sqs-object-created.json"));
    assert.equal(result.batchItemFailures.length, 1);
    const s = summary();
    assert.deepEqual(s.succeeded, [a]);
    assert.equal(s.failed[0].status, "PollError");
    assert.match(s.failed[0].stderr ?? "", /ThrottlingException/);
  });

  it("hands the messages back when DescribeInstances fails", async () => {
    ec2Mock.on(DescribeInstancesCommand).rejects(Object.assign(new Error("denied"), { name: "UnauthorizedOperation" }));
    const { handler, summary } = setup();
    const event = loadEvent("sqs-object-created.json");
    assert.deepEqual(await handler(event), { batchItemFailures: [{ itemIdentifier: event.Records[0].messageId }] });
    assert.match(summary().error ?? "", /UnauthorizedOperation/);
    assert.equal(ssmMock.calls().length, 0);
  });

  it("logs no receipt handles or message bodies", async () => {
    nodes(instanceIds(1));
    fleet(() => success);
    const { handler, logs } = setup();
    const event: SQSEvent = { Records: [...loadEvent("sqs-malicious-keys.json").Records, ...loadEvent("sqs-object-created.json").Records] };
    await handler(event);
    const text = JSON.stringify(logs);
    for (const r of event.Records) assert.ok(!text.includes(r.receiptHandle));
    assert.ok(!text.includes("sourceIPAddress"));
    assert.ok(!text.includes("principalId"));
  });

  it("validates its configuration up front", () => {
    assert.throws(() => createHandler({ clusterName: "", nodePools: [], modelsBucket: "b", region: "r" }), /clusterName is empty; nodePools/);
  });

  it("createEnvHandler reads the environment on first use", async () => {
    const saved = { ...process.env };
    try {
      delete process.env.CLUSTER_NAME;
      delete process.env.NODE_POOLS;
      delete process.env.MODELS_BUCKET;
      process.env.AWS_REGION = "us-east-1";
      const handler = createEnvHandler({ ssm, ec2, log: () => undefined });
      await assert.rejects(handler(loadEvent("sqs-test-event.json")), /CLUSTER_NAME, NODE_POOLS, MODELS_BUCKET/);
      Object.assign(process.env, { CLUSTER_NAME: CLUSTER, NODE_POOLS: "gpu", MODELS_BUCKET: BUCKET });
      assert.deepEqual(await createEnvHandler({ ssm, ec2, log: () => undefined })(loadEvent("sqs-test-event.json")), { batchItemFailures: [] });
    } finally {
      process.env = saved;
    }
  });

  describe("under Pulumi's closure serialization", () => {
    it("serializes createEnvHandler() into a Lambda module that keeps every constant", async () => {
      const { text } = await pulumi.runtime.serializeFunction(createEnvHandler());
      // In the Lambda, `exports` is the generated module's: any other `exports.X` would read undefined.
      assert.deepEqual([...new Set(text.match(/\bexports\.[A-Za-z_$][\w$]*/g))], ["exports.handler"]);
      for (const r of new Set(text.match(/require\("[^"]+"\)/g))) assert.match(r, /^require\("@aws-sdk\/client-(ssm|ec2)\//);

      const mod: { exports: { handler?: SyncHandler } } = { exports: {} };
      new Function("exports", "require", "module", text)(mod.exports, require, mod);
      const handler = mod.exports.handler;
      assert.ok(handler);

      const ids = instanceIds(120);
      nodes(ids);
      const f = fleet(() => success);
      const saved = { ...process.env };
      const printed: string[] = [];
      const realLog = console.log;
      try {
        Object.assign(process.env, { CLUSTER_NAME: CLUSTER, NODE_POOLS: "gpu", MODELS_BUCKET: BUCKET, AWS_REGION: "us-east-1", POLL_INTERVAL_MS: "0" });
        console.log = (line: string) => printed.push(line);
        const tooLong = messageFromTemplate("too-long", [{ eventName: "ObjectCreated:Put", key: `loras/${"a/".repeat(600)}b`, sequencer: "01" }]);
        const event = loadEvent("sqs-malicious-keys.json");
        const result = await handler({ Records: [...event.Records, tooLong] }, { getRemainingTimeInMillis: () => 300_000 });
        assert.deepEqual(result, { batchItemFailures: [] });
      } finally {
        console.log = realLog;
        process.env = saved;
      }
      assert.deepEqual(ec2Mock.commandCalls(DescribeInstancesCommand)[0].args[0].input.Filters, [
        { Name: "instance-state-name", Values: ["running"] },
        { Name: "tag:eks:eks-cluster-name", Values: [CLUSTER] },
        { Name: "tag:karpenter.sh/nodepool", Values: ["gpu"] },
      ]);
      assert.deepEqual(f.sends.map((x) => x.input.InstanceIds?.length), [50, 50, 20]);
      assert.equal(decodeCommands(f.sends[0].input.Parameters?.commands ?? []), "put\tvae/sdxl_vae.safetensors\n");
      const summary = printed.map((l) => JSON.parse(l)).find((l) => l.msg === "model sync summary");
      assert.deepEqual(
        summary.rejected.map((r: { reason: string }) => r.reason),
        ["dot-segment", "shell-metacharacter", "shell-metacharacter", "control-character", "absolute-path", "outside-model-folders", "wrong-bucket", "too-long"],
      );
      // The serialized module prints the batch's EMF line too, valid and with the same figures.
      const emfPrinted = printed.filter((l) => l.includes('"_aws"'));
      assert.equal(emfPrinted.length, 1);
      const metrics = Object.fromEntries(parseEmfLine(emfPrinted[0]).map((m) => [m.name, m.values[0]]));
      assert.deepEqual(metrics, { SyncBatches: 1, SyncChangesApplied: 1, SyncNodeFailures: 0, SyncFailedBatches: 0, SyncRejectedEvents: 8 });
    });
  });
});
