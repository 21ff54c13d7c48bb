/**
 * The model agent's component (workload/modelsAgent.ts) built under mocks: who may reach the agent
 * (NetworkPolicy), what its role may do (simulated with the IAM simulator over the role's own
 * documents), that every object validates against the Kubernetes schemas, that the DaemonSet lands on
 * exactly the GPU NodePool's nodes with the folder ComfyUI reads, and that its flags are ones the agent
 * itself accepts.
 */
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { DockerfileParser } from "dockerfile-ast";
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { isDeepStrictEqual } from "node:util";
import { GPU_POOL_LABEL, GPU_TAINT, NODE_MODELS_DIR } from "../../contracts/node";
import { GATEWAY_LABELS } from "../../workload/gatewayDeployment";
import { MODELS_AGENT_IMAGE, ModelsAgent, modelsAgentGpuDaemonSet } from "../../workload/modelsAgent";
import { modelsReserveGb } from "../../contracts/node";
import { normalizePinEntry } from "../../contracts/modelsAgent";
import { AGENT_HEALTH_PORT, AGENT_LABELS, AGENT_NAMES, AGENT_PORT } from "../../contracts/modelsAgent";
import { parseAgentArgs } from "../../workload/models/agent/options";
import { PolicyDocument, roleArn, simulate, SimRequest } from "../iam/simulate";
import { daemonSetsOf, landsOn, podRequests } from "../support/gpuNodeDaemonSets";
import { objectOf, validateK8s } from "../support/k8sSchemas";
import { MOCK_ACCOUNT, Recorder, installMocks, quiesce } from "../support/mocks";

const MODELS = "comfyui-dev-models";

/** Pulumi's secret marker as the mock monitor records a secret input (the SDK marks a Secret's stringData secret). */
const SECRET_SIG = "4dabf18193072939515e22adb298388d";
function unsecret(v: any): any {
  if (Array.isArray(v)) return v.map(unsecret);
  if (v && typeof v === "object") {
    if (v[SECRET_SIG] === "1b47061264138c4ac30d75fd1eb44270") return unsecret(v.value);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unsecret(x)]));
  }
  return v;
}
const MODELS_ARN = `arn:aws:s3:::${MODELS}`;

describe("model agent component (workload/modelsAgent.ts)", function () {
  this.timeout(60_000);
  const rec = new Recorder();
  let ds: Record<string, any>;

  before(async () => {
    installMocks(rec);
    const provider = new k8s.Provider("agenttest-k8s", { kubeconfig: "{}" });
    new ModelsAgent("agenttest", {
      namespace: "comfyui",
      imageUri: pulumi.output(`${MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/models-agent@sha256:${"a".repeat(64)}`),
      clusterName: pulumi.output("comfyui-dev"),
      region: "us-west-2",
      modelsBucket: pulumi.output(MODELS),
      modelsBucketArn: pulumi.output(MODELS_ARN),
      vpcCidr: "10.0.0.0/16",
      pinned: ["checkpoints/sd_xl_base_1.0.safetensors", "loras"].map(normalizePinEntry),
      reserveGb: pulumi.output(modelsReserveGb(4)),
      provider,
      tags: {},
    });
    await quiesce(rec);
    ds = rec.one("kubernetes:apps/v1:DaemonSet").inputs;
  });

  it("NetworkPolicy: the API port admits only the gateway's pods; the VPC reaches only the probes' port", () => {
    const policies = rec.ofType("kubernetes:networking.k8s.io/v1:NetworkPolicy").map((r) => r.inputs);
    const selecting = policies.filter((p) => isDeepStrictEqual(p.spec.podSelector.matchLabels, { ...AGENT_LABELS }));
    assert.equal(selecting.length, 1, "one policy selects the agent's pods");
    const spec = selecting[0].spec;
    assert.deepEqual(spec.policyTypes, ["Ingress"]);
    const toApi = spec.ingress.filter((r: any) => r.ports.some((p: any) => p.port === AGENT_PORT));
    assert.deepEqual(toApi, [{ from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: AGENT_PORT }] }]);
    // Nothing else reaches any port but the probes'; the probes' port serves only /healthz (cli/agent tests).
    for (const r of spec.ingress.filter((x: any) => x !== toApi[0])) {
      assert.deepEqual(r.ports, [{ protocol: "TCP", port: AGENT_HEALTH_PORT }]);
      assert.deepEqual(r.from, [{ ipBlock: { cidr: "10.0.0.0/16" } }]);
    }
    // Each rule names its ports: a rule without ports would admit its peers to every port.
    for (const r of spec.ingress) assert.ok(r.ports?.length > 0 && r.from?.length > 0);
    // The probes target the probes' port, which is why the node needs no access to the API port.
    const c = ds.spec.template.spec.containers[0];
    assert.equal(c.readinessProbe.httpGet.port, "health");
    assert.equal(c.ports.find((p: any) => p.name === "health").containerPort, AGENT_HEALTH_PORT);
  });

  it("its role can only read the models bucket (IAM simulation of the role's own policy)", async () => {
    const role = rec.one("aws:iam/role:Role", "agenttest-role");
    const trust = JSON.parse(role.inputs.assumeRolePolicy);
    assert.deepEqual(trust.Statement[0].Principal, { Service: "pods.eks.amazonaws.com" });
    const docs: PolicyDocument[] = rec.ofType("aws:iam/rolePolicy:RolePolicy").map((p) => JSON.parse(p.inputs.policy));
    assert.equal(docs.length, 1);
    assert.equal(rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").length, 0, "no managed policy");
    const assoc = rec.one("aws:eks/podIdentityAssociation:PodIdentityAssociation").inputs;
    assert.deepEqual([assoc.namespace, assoc.serviceAccount], ["comfyui", AGENT_NAMES.agent]);
    const principalArn = roleArn(role.name);
    const decide = async (req: SimRequest) => (await simulate(docs, req, { principalArn })).decision;
    const allowed: SimRequest[] = [
      { action: "s3:GetObject", resource: `${MODELS_ARN}/checkpoints/sd_xl_base_1.0.safetensors` },
      { action: "s3:GetObject", resource: `${MODELS_ARN}/loras/style/x.safetensors` },
      { action: "s3:ListBucket", resource: MODELS_ARN, context: { "s3:prefix": "loras/" } },
    ];
    const denied: SimRequest[] = [
      { action: "s3:PutObject", resource: `${MODELS_ARN}/checkpoints/x.safetensors` },
      { action: "s3:DeleteObject", resource: `${MODELS_ARN}/checkpoints/x.safetensors` },
      { action: "s3:GetObjectVersion", resource: `${MODELS_ARN}/checkpoints/x.safetensors` },
      { action: "s3:PutBucketPolicy", resource: MODELS_ARN },
      { action: "s3:GetObject", resource: "arn:aws:s3:::comfyui-dev-outputs/gateway/x.png" },
      { action: "s3:GetObject", resource: "arn:aws:s3:::comfyui-dev-userdata/user/x.json" },
      { action: "s3:ListBucket", resource: "arn:aws:s3:::comfyui-dev-outputs" },
      { action: "s3:ListAllMyBuckets", resource: "*" },
      { action: "kms:Decrypt", resource: `arn:aws:kms:us-west-2:${MOCK_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab` },
      { action: "ssm:SendCommand", resource: `arn:aws:ec2:us-west-2:${MOCK_ACCOUNT}:instance/i-0123456789abcdef0` },
      { action: "dynamodb:GetItem", resource: `arn:aws:dynamodb:us-west-2:${MOCK_ACCOUNT}:table/comfyui-gateway` },
    ];
    for (const r of allowed) assert.equal(await decide(r), "Allowed", `${r.action} ${r.resource}`);
    for (const r of denied) assert.equal(await decide(r), "ImplicitlyDenied", `${r.action} ${r.resource}`);
  });

  it("every object validates against the Kubernetes schemas", async () => {
    const objects = rec.kubernetesObjects();
    const kinds = objects.map((r) => `${objectOf(r.type, r.inputs).apiVersion} ${objectOf(r.type, r.inputs).kind}`).sort();
    assert.deepEqual(kinds, ["apps/v1 DaemonSet", "networking.k8s.io/v1 NetworkPolicy", "v1 Secret", "v1 Service", "v1 ServiceAccount"]);
    for (const r of objects) {
      const obj = objectOf(r.type, unsecret(r.inputs));
      await validateK8s(obj).catch((e: Error) => assert.fail(`${r.name} (${obj.apiVersion} ${obj.kind}): ${e.message}`));
    }
    // The validator is not a no-op for a DaemonSet.
    await assert.rejects(validateK8s({ ...objectOf("kubernetes:apps/v1:DaemonSet", ds), spec: { ...ds.spec, updateStrategy: { type: "Sometimes" } } }));
  });

  it("runs on every GPU node and nowhere else, with the models folder ComfyUI reads", () => {
    const [model] = daemonSetsOf(rec.one("kubernetes:apps/v1:DaemonSet"))!;
    const gpuNode = { labels: { ...GPU_POOL_LABEL, "nvidia.com/gpu.present": "true", "kubernetes.io/os": "linux" }, taints: [{ ...GPU_TAINT }] };
    assert.ok(landsOn(model, gpuNode), "lands on a GPU NodePool node");
    assert.ok(!landsOn(model, { labels: { "kubernetes.io/os": "linux" }, taints: [] }), "not on a system node");
    const spec = ds.spec.template.spec;
    assert.deepEqual(spec.volumes.find((v: any) => v.name === "models").hostPath, { path: NODE_MODELS_DIR, type: "Directory" });
    assert.equal(spec.automountServiceAccountToken, false);
    assert.equal(spec.serviceAccountName, AGENT_NAMES.agent);
    const c = spec.containers[0];
    assert.deepEqual(c.securityContext.capabilities, { drop: ["ALL"] });
    assert.equal(c.securityContext.allowPrivilegeEscalation, false);
    assert.equal(c.securityContext.readOnlyRootFilesystem, true);
    // Its requests are the entry the GPU pods are sized with (karpenter/nodeDaemonSets.ts).
    const entry = modelsAgentGpuDaemonSet("comfyui");
    assert.deepEqual(podRequests(model.containers, model.initContainers), { cpuMilli: entry.cpuMilli, memoryMiB: entry.memoryMiB });
    assert.equal(entry.name, model.name);
    assert.ok(c.resources.limits.memory && !c.resources.limits.cpu, "a memory limit, no CPU limit");
  });

  it("passes flags the agent accepts, the token from the shared Secret", () => {
    const c = ds.spec.template.spec.containers[0];
    const tokenEnv = c.env.find((e: any) => e.name === AGENT_NAMES.tokenEnv);
    assert.deepEqual(tokenEnv.valueFrom.secretKeyRef, { name: AGENT_NAMES.tokenSecret, key: AGENT_NAMES.tokenSecretKey });
    const secret = unsecret(rec.one("kubernetes:core/v1:Secret").inputs);
    assert.equal(secret.metadata.name, AGENT_NAMES.tokenSecret);
    assert.ok(secret.stringData[AGENT_NAMES.tokenSecretKey].length >= 16);
    const s = parseAgentArgs(c.args, { [AGENT_NAMES.tokenEnv]: secret.stringData[AGENT_NAMES.tokenSecretKey] });
    assert.equal(s.modelsDir, "/models");
    assert.equal(s.bucket, MODELS);
    assert.equal(s.port, AGENT_PORT);
    assert.equal(s.healthPort, AGENT_HEALTH_PORT);
    assert.equal(s.host, "0.0.0.0");
    assert.equal(s.quotaBytes, 0, "the whole array less the reserve");
    assert.equal(s.reservePercent, 10);
    assert.equal(s.reserveBytes, 120e9, "image 30 + scratch 20 × 4 GPUs + margin 10 GB");
    assert.deepEqual(s.pins, ["checkpoints/sd_xl_base_1.0.safetensors", "loras/"]);
    assert.equal(s.socket, "auto");
    const svc = rec.one("kubernetes:core/v1:Service").inputs;
    assert.equal(svc.spec.clusterIP, "None");
    assert.deepEqual(svc.spec.selector, AGENT_LABELS);
  });

  it("refuses a pinned entry outside the model folders before creating anything", () => {
    const provider = new k8s.Provider("agenttest-k8s-2", { kubeconfig: "{}" });
    assert.throws(
      () => new ModelsAgent("agenttest-bad", { namespace: "comfyui", imageUri: "x", clusterName: "c", region: "us-west-2", modelsBucket: "b", modelsBucketArn: "arn:aws:s3:::b", pinned: ["../etc"], provider, tags: {} }),
      (err: unknown) => pulumi.InputPropertyError.isInstance(err) && err.propertyPath === "modelsAgent.pinned" && /'\.\.\/etc': dot-segment/.test(err.message),
    );
  });

  it("the image's build context holds every file the agent imports", () => {
    // Relative imports of the agent's modules, followed transitively.
    const root = path.join(__dirname, "..", "..");
    const seen = new Set<string>();
    const todo = [path.join(root, "workload/models/agent/main.ts")];
    while (todo.length) {
      const f = todo.pop()!;
      if (seen.has(f)) continue;
      seen.add(f);
      for (const m of fs.readFileSync(f, "utf8").matchAll(/from\s+"(\.{1,2}\/[^"]+)"/g)) todo.push(path.resolve(path.dirname(f), `${m[1]}.ts`));
    }
    const outside = [...seen].map((f) => path.relative(root, f)).filter((rel) => !MODELS_AGENT_IMAGE.context.some((c) => rel === c || rel.startsWith(`${c}/`)));
    assert.deepEqual(outside, []);
    const docker = DockerfileParser.parse(fs.readFileSync(path.join(root, MODELS_AGENT_IMAGE.dockerfile), "utf8"));
    const copied = docker
      .getInstructions()
      .filter((i) => i.getKeyword() === "COPY" && !/--from=/.test(i.getArgumentsContent() ?? ""))
      .flatMap((i) => i.getArguments().slice(0, -1).map((a) => a.getValue()));
    for (const c of MODELS_AGENT_IMAGE.context) assert.ok(copied.includes(c), `Dockerfile copies ${c} (copies: ${copied.join(", ")})`);
    assert.ok(docker.getFROMs().every((f) => (f.getImage() ?? "").startsWith("public.ecr.aws/")), "base images from ECR Public only");
  });
});
