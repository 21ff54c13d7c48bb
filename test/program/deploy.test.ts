/**
 * Defects that would fail or cost money on a real `pulumi up` / `pulumi destroy` (issue "Deploys for
 * real"), checked on the whole program's graph and on components built on their own.
 */
import { strict as assert } from "node:assert";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { GPU_VCPU_QUOTAS, GpuCapacity, nvidiaAmiParameter, quotaWarning } from "../../karpenter";
import { Storage } from "../../storage";
import { ADDONS } from "../../versions";
import { RecordedResource, Recorder, installMocks, mockAccount, quiesce, unwrap } from "../support/mocks";
import { ProgramRun, runProgram } from "../support/program";

/** The namespace each EKS add-on that creates Pod Identity associations runs its service accounts in. */
const ADDON_NAMESPACE: Record<string, string> = { "aws-mountpoint-s3-csi-driver": "kube-system", "amazon-cloudwatch-observability": "amazon-cloudwatch" };

/**
 * Every Pod Identity association the graph asks EKS for: standalone ones and those inside an
 * add-on's podIdentityAssociations. EKS accepts one per cluster + namespace + service account.
 */
function podIdentityAssociations(resources: RecordedResource[]): { key: string; from: string }[] {
  const found: { key: string; from: string }[] = [];
  for (const r of resources) {
    if (r.type === "aws:eks/podIdentityAssociation:PodIdentityAssociation") {
      found.push({ key: `${r.inputs.clusterName}/${r.inputs.namespace}/${r.inputs.serviceAccount}`, from: r.name });
    }
    if (r.type === "aws:eks/addon:Addon") {
      for (const a of r.inputs.podIdentityAssociations ?? []) {
        const ns = ADDON_NAMESPACE[r.inputs.addonName];
        assert.ok(ns, `add-on ${r.inputs.addonName} creates associations: name its namespace in ADDON_NAMESPACE`);
        found.push({ key: `${r.inputs.clusterName}/${ns}/${a.serviceAccount}`, from: `${r.name} (add-on)` });
      }
    }
  }
  return found;
}

function duplicates(found: { key: string; from: string }[]): string[] {
  const by = new Map<string, string[]>();
  for (const f of found) by.set(f.key, [...(by.get(f.key) ?? []), f.from]);
  return [...by].filter(([, from]) => from.length > 1).map(([key, from]) => `${key}: ${from.join(", ")}`);
}

const S3_GUARDS = [
  "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
  "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
  "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
  "aws:s3/bucketPolicy:BucketPolicy",
  "aws:s3/bucketVersioning:BucketVersioning",
  "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
];

describe("deploys for real: the whole program", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("asks EKS for at most one Pod Identity association per namespace and service account", () => {
    const found = podIdentityAssociations(p.rec.resources);
    assert.ok(found.some((f) => f.key.endsWith("/kube-system/s3-csi-driver-sa")), "the Mountpoint driver still gets its identity");
    assert.deepEqual(duplicates(found), []);
  });

  it("the association rule catches a second association for the same service account", () => {
    const fake = (type: string, name: string, inputs: Record<string, any>) => ({ type, name, inputs }) as RecordedResource;
    const found = podIdentityAssociations([
      fake("aws:eks/podIdentityAssociation:PodIdentityAssociation", "assoc", { clusterName: "c", namespace: "kube-system", serviceAccount: "s3-csi-driver-sa" }),
      fake("aws:eks/addon:Addon", "addon", { clusterName: "c", addonName: "aws-mountpoint-s3-csi-driver", podIdentityAssociations: [{ serviceAccount: "s3-csi-driver-sa" }] }),
    ]);
    assert.deepEqual(duplicates(found), ["c/kube-system/s3-csi-driver-sa: assoc, addon (add-on)"]);
  });

  it("pins the Mountpoint CSI add-on and makes its node driver tolerate every taint", () => {
    const addon = p.rec.ofType("aws:eks/addon:Addon").find((a) => a.inputs.addonName === "aws-mountpoint-s3-csi-driver")!;
    assert.equal(addon.inputs.addonVersion, ADDONS.mountpoint);
    assert.match(addon.inputs.addonVersion, /^v2\.\d+\.\d+-eksbuild\.\d+$/);
    assert.deepEqual(JSON.parse(addon.inputs.configurationValues), { node: { tolerateAllTaints: true } });
  });

  it("keeps retained buckets' guards on destroy (public-access block, TLS-only policy, encryption, lifecycle)", () => {
    const buckets = p.rec.ofType("aws:s3/bucket:Bucket").filter((b) => /-(models|outputs|inputs)$/.test(b.name));
    assert.equal(buckets.length, 3);
    for (const b of buckets) assert.equal(b.options.retainOnDelete, true, `${b.name} retained`);
    const guards = p.rec.resources.filter((r) => S3_GUARDS.includes(r.type) && /-(models|outputs|inputs)-/.test(r.name));
    assert.ok(guards.length >= 3 * 5, `found ${guards.length} guards`);
    for (const g of guards) assert.equal(g.options.retainOnDelete, true, `${g.type} ${g.name} must stay with its retained bucket`);
  });

  it("creates the ComfyUI Deployment with no GPU pod, leaves the count to KEDA and does not wait on GPU capacity", () => {
    const d = p.rec.ofType("kubernetes:apps/v1:Deployment").find((r) => r.inputs.metadata.name === "comfyui")!;
    assert.equal(d.inputs.spec.replicas, 0);
    assert.deepEqual(d.options.ignoreChanges, ["spec.replicas"]);
    assert.equal(d.inputs.metadata.annotations["pulumi.com/skipAwait"], "true");
  });

  it("finishes a rollout at the GPU cap: replicas plus surge never exceed gpuLimit", () => {
    const d = p.rec.ofType("kubernetes:apps/v1:Deployment").find((r) => r.inputs.metadata.name === "comfyui")!;
    const so = p.rec.kubernetesObjects().find((r) => r.inputs.kind === "ScaledObject")!;
    const pool = p.rec.kubernetesObjects().find((r) => r.inputs.kind === "NodePool")!;
    const gpuLimit = Number(pool.inputs.spec.limits["nvidia.com/gpu"]);
    const { maxSurge, maxUnavailable } = d.inputs.spec.strategy.rollingUpdate;
    const gpusPerPod = Number(d.inputs.spec.template.spec.containers[0].resources.requests["nvidia.com/gpu"]);
    assert.ok((so.inputs.spec.maxReplicaCount + Number(maxSurge)) * gpusPerPod <= gpuLimit, "the rollout's extra pod needs a GPU the cap refuses");
    assert.ok(Number(maxUnavailable) >= 1, "with no surge, a rollout must be allowed to replace one pod at a time");
  });

  it("gives Pulumi as long to delete a draining pod (and its namespace) as the pod may drain", () => {
    const drain = 900;
    for (const r of [
      p.rec.ofType("kubernetes:apps/v1:Deployment").find((x) => x.inputs.metadata.name === "comfyui")!,
      p.rec.one("kubernetes:core/v1:Namespace"),
    ]) {
      const seconds = Number(/^(\d+)s$/.exec(r.options.customTimeouts.delete)?.[1]);
      assert.ok(seconds > drain, `${r.type} delete timeout ${r.options.customTimeouts.delete} must exceed the ${drain}s drain`);
    }
  });

  it("resolves the pinned AMI release for the cluster's Kubernetes version at preview", () => {
    const names = p.rec.invokes.filter((i) => i.token === "aws:ssm/getParameter:getParameter").map((i) => i.args.name);
    assert.deepEqual(names, [nvidiaAmiParameter("1.35", "al2023@v20260724")]);
    assert.equal(
      names[0],
      "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/nvidia/amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260724/image_id",
    );
    const nc = p.rec.kubernetesObjects().find((r) => r.inputs.kind === "EC2NodeClass")!;
    assert.match(nc.inputs.metadata.annotations["comfyui.studio/nvidia-ami-id"], /^ami-/);
  });

  it("reads the G and VT vCPU quotas for both capacity types and finds them sufficient", () => {
    const codes = p.rec.invokes.filter((i) => i.token === "aws:servicequotas/getServiceQuota:getServiceQuota").map((i) => i.args.quotaCode).sort();
    assert.deepEqual(codes, ["L-3819A6DF", "L-DB2E81BA"]);
    assert.deepEqual(p.outputs.gpuQuotaWarnings, []);
  });
});

describe("deploys for real: preflight checks on their own", () => {
  const args = (provider: k8s.Provider) => ({
    clusterName: pulumi.output("comfyui-pre"),
    region: "us-west-2",
    kubernetesVersion: "1.35",
    vcpusPerGpu: 8,
    accountId: "123456789012",
    clusterSecurityGroupId: "sg-1",
    modelsBucket: pulumi.output("models-bucket"),
    modelsBucketArn: "arn:aws:s3:::models-bucket",
    nodeToolsBucket: pulumi.output("tools-bucket"),
    nodeToolsBucketArn: "arn:aws:s3:::tools-bucket",
    instanceTypes: ["g5.2xlarge"],
    capacityTypes: ["spot", "on-demand"] as ("spot" | "on-demand")[],
    gpuLimit: 4,
    amiAlias: "al2023@v20260724",
    consolidateAfter: "5m",
    expireAfter: "168h",
    rootVolumeGiB: 100,
    pins: [],
    bootFillSeconds: 600,
    parallelTransfers: 8,
    provider,
    dependsOn: [],
  });
  afterEach(() => {
    mockAccount.quotas.clear();
  });

  it("fails the preview naming the SSM parameter when the release has no image for that Kubernetes version", async () => {
    const rec = new Recorder();
    installMocks(rec);
    const gpu = new GpuCapacity("pre", { ...args(new k8s.Provider("pre", { kubeconfig: "{}" })), amiAlias: "al2023@v20250101" });
    const failure = new Promise<unknown>((resolve) => {
      process.once("unhandledRejection", resolve);
      void unwrap(gpu.nodeClassName);
    });
    const err = (await Promise.race([failure, quiesce(rec).then(() => new Error("no failure"))])) as Error;
    assert.match(String(err.message), /gpuAmiAlias al2023@v20250101 has no NVIDIA AL2023 image for Kubernetes 1\.35/);
    assert.match(String(err.message), /amazon-eks-node-al2023-x86_64-nvidia-1\.35-v20250101\/image_id/);
  });

  it("warns with the quota code and the console link when the account's G/VT quota cannot hold gpuLimit", async () => {
    mockAccount.quotas.set("L-3819A6DF", 0);
    mockAccount.quotas.set("L-DB2E81BA", 16);
    const rec = new Recorder();
    installMocks(rec);
    const gpu = new GpuCapacity("quota", args(new k8s.Provider("quota", { kubeconfig: "{}" })));
    const warnings = await unwrap(gpu.quotaWarnings);
    assert.equal(warnings.length, 2);
    assert.match(warnings[0], /"All G and VT Spot Instance Requests" \(L-3819A6DF\) in us-west-2 is 0 vCPUs, but gpuLimit needs 32: spot GPU nodes cannot launch at all/);
    assert.match(warnings[0], /https:\/\/us-west-2\.console\.aws\.amazon\.com\/servicequotas\/home\/services\/ec2\/quotas\/L-3819A6DF/);
    assert.match(warnings[1], /L-DB2E81BA.*is 16 vCPUs, but gpuLimit needs 32: on-demand GPU nodes will stop launching early/);
  });

  it("says nothing when a quota covers the cap exactly", () => {
    assert.equal(quotaWarning(GPU_VCPU_QUOTAS.g.spot, "spot", 32, 32, "us-west-2"), undefined);
  });

  it("deletes retained buckets' guards only when the buckets go too (retainBucketsOnDestroy false)", async () => {
    const rec = new Recorder();
    installMocks(rec);
    const s = new Storage("gone", {
      clusterName: "c", region: "us-west-2", namespace: "comfyui", retainOnDestroy: false, outputsExpireDays: 0, modelsNoncurrentDays: 30,
      dependsOn: [], provider: new k8s.Provider("gone", { kubeconfig: "{}" }), tags: {},
    });
    await unwrap(s.outputsVolumeName);
    await quiesce(rec);
    const guards = rec.resources.filter((r) => S3_GUARDS.includes(r.type));
    assert.ok(guards.length >= 15);
    for (const g of [...guards, ...rec.ofType("aws:s3/bucket:Bucket")]) assert.equal(g.options.retainOnDelete, false, g.name);
    for (const b of rec.ofType("aws:s3/bucket:Bucket")) assert.equal(b.inputs.forceDestroy, true);
  });
});
