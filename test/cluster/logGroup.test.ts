/**
 * The control plane's log group: created by us (so it has a retention), under the name EKS writes
 * to, before the cluster that starts writing into it.
 */
import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { Cluster, ClusterArgs, controlPlaneLogGroupName } from "../../cluster";
import { Recorder, installMocks, quiesce, unwrap } from "../support/mocks";

const ARGS: ClusterArgs = {
  clusterName: "comfyui-logs", region: "us-west-2", kubernetesVersion: "1.35", availabilityZones: 2, vpcCidr: "10.0.0.0/16",
  natGateways: "single", apiAllowedCidrs: ["203.0.113.0/24"], systemNodeInstanceType: "t3a.large", systemNodeCount: 2, tags: { app: "comfyui" },
};

/** Records the dependency URNs each registration carries (the mocks' callback does not see them). */
function recordDependencies(): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: any, cb: unknown): unknown };
  const original = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req: any, cb: unknown) => {
    deps.set(`${req.getType()}::${req.getName()}`, req.getDependenciesList?.() ?? []);
    return original(req, cb);
  };
  return deps;
}

describe("cluster: control plane log group", () => {
  const rec = new Recorder();

  const build = async (extra: Partial<ClusterArgs> = {}) => {
    rec.reset();
    installMocks(rec);
    const deps = recordDependencies();
    const c = new Cluster("cl", { ...ARGS, ...extra });
    await unwrap(c.clusterName);
    await quiesce(rec);
    return deps;
  };

  it("/aws/eks/<cluster>/cluster with the configured retention, and the cluster waits for it", async () => {
    const deps = await build({ logRetentionDays: 14 });
    const group = rec.one("aws:cloudwatch/logGroup:LogGroup", "eks-logs");
    assert.equal(group.inputs.name, "/aws/eks/comfyui-logs/cluster");
    assert.equal(group.inputs.name, controlPlaneLogGroupName(ARGS.clusterName));
    assert.equal(group.inputs.retentionInDays, 14);
    assert.deepEqual(group.inputs.tags, { app: "comfyui" });
    // Logging is on, so the group is used.
    assert.ok(rec.one("eks:index:Cluster").inputs.enabledClusterLogTypes.length > 0);
    const clusterDeps = deps.get("eks:index:Cluster::cl-eks") ?? [];
    assert.ok(clusterDeps.some((u) => u.endsWith("aws:cloudwatch/logGroup:LogGroup::cl-eks-logs")), `cluster depends on ${clusterDeps.join(", ") || "nothing"}`);
    // The check can fail: the VPC is created without waiting for the group.
    assert.ok(!(deps.get("awsx:ec2:Vpc::cl-vpc") ?? []).some((u) => u.endsWith("::cl-eks-logs")));
  });

  it("keeps 30 days unless told otherwise", async () => {
    await build();
    assert.equal(rec.one("aws:cloudwatch/logGroup:LogGroup", "eks-logs").inputs.retentionInDays, 30);
  });

  it("refuses a retention CloudWatch Logs does not accept, naming the key", () => {
    installMocks(rec);
    assert.throws(
      () => new Cluster("bad", { ...ARGS, logRetentionDays: 10 }),
      (e: pulumi.InputPropertyError) => e.propertyPath === "logRetentionDays" && /must be one of 1, 3.*got 10/.test(e.message),
    );
  });
});
