/**
 * Per-component properties from the whole program's graph (cluster, storage, image, workload's
 * autoscaling, edge), plus the variants that config switches (NAT per AZ, working-hours floor,
 * edge off) built on their own.
 */
import { strict as assert } from "node:assert";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { Cluster } from "../../cluster";
import { scaledObjectSpec } from "../../workload/autoscaling";
import { DAEMONSET_BUDGET, factsOf, podResourcesPerGpu } from "../../karpenter/gpuTypes";
import { instanceTypeInfo, karpenterAllocatable } from "../support/ec2Data";
import { validateK8s } from "../support/k8sSchemas";
import { Recorder, installMocks, quiesce, unwrap } from "../support/mocks";
import { ProgramRun, runProgram } from "../support/program";

describe("components in the whole program", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("cluster: VPC with private nodes, one shared NAT, S3 gateway endpoint on every route table", () => {
    const vpc = p.rec.one("awsx:ec2:Vpc").inputs;
    assert.equal(vpc.numberOfAvailabilityZones, 2);
    assert.equal(vpc.natGateways.strategy, "Single");
    const private_ = vpc.subnetSpecs.find((s: { type: string }) => s.type === "Private");
    assert.equal(private_.tags["kubernetes.io/role/internal-elb"], "1");
    assert.equal(private_.tags["karpenter.sh/discovery"], "comfyui-dev");
    const ep = p.rec.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs;
    assert.equal(ep.serviceName, "com.amazonaws.us-west-2.s3");
    assert.equal(ep.vpcEndpointType, "Gateway");
    assert.deepEqual(ep.routeTableIds, ["rtb-priv-a", "rtb-priv-b", "rtb-pub"]);
  });

  it("cluster: EKS with API authentication, no default node group, control-plane logs, pinned version", () => {
    const eks = p.rec.one("eks:index:Cluster").inputs;
    assert.equal(eks.authenticationMode, "API");
    assert.equal(eks.skipDefaultNodeGroup, true);
    assert.equal(eks.version, "1.35");
    assert.deepEqual(eks.enabledClusterLogTypes, ["api", "audit", "authenticator", "controllerManager", "scheduler"]);
    assert.equal(eks.nodeAssociatePublicIpAddress, false);
    const ng = p.rec.one("aws:eks/nodeGroup:NodeGroup").inputs;
    assert.deepEqual(ng.instanceTypes, ["t3a.large"]);
    assert.equal(ng.scalingConfig.desiredSize, 2);
    assert.deepEqual(ng.subnetIds, ["subnet-priv-a", "subnet-priv-b"]);
    const addons = p.rec.ofType("aws:eks/addon:Addon").map((a) => a.inputs.addonName).sort();
    assert.deepEqual(addons, ["amazon-cloudwatch-observability", "aws-mountpoint-s3-csi-driver", "coredns", "eks-pod-identity-agent", "kube-proxy", "vpc-cni"]);
    const cni = p.rec.ofType("aws:eks/addon:Addon").find((a) => a.inputs.addonName === "vpc-cni")!;
    assert.equal(JSON.parse(cni.inputs.configurationValues).enableNetworkPolicy, "true");
  });

  it("cluster: LB controller and NVIDIA device plugin as pinned Helm releases, the controller through Pod Identity", () => {
    const releases = Object.fromEntries(p.rec.ofType("kubernetes:helm.sh/v3:Release").map((r) => [r.inputs.chart, r.inputs]));
    const lbc = releases["aws-load-balancer-controller"];
    assert.equal(lbc.version, "3.5.0");
    assert.equal(lbc.values.clusterName, "comfyui-dev");
    assert.equal(lbc.values.vpcId, "vpc-0mock");
    assert.equal(lbc.values.serviceAccount.name, "aws-load-balancer-controller");
    const assoc = p.rec.ofType("aws:eks/podIdentityAssociation:PodIdentityAssociation").find((a) => a.inputs.serviceAccount === "aws-load-balancer-controller")!;
    assert.equal(assoc.inputs.namespace, "kube-system");
    const dp = releases["nvidia-device-plugin"];
    assert.equal(dp.version, "0.20.0");
    assert.deepEqual(dp.values.nodeSelector, { "nvidia.com/gpu.present": "true" });
    assert.ok(dp.values.tolerations.some((t: { key: string }) => t.key === "nvidia.com/gpu"));
  });

  it("storage: models versioned with old versions expiring, outputs kept by default, buckets retained on destroy", () => {
    const lifecycles = p.rec.ofType("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration");
    const models = lifecycles.find((l) => l.name.includes("models"))!.inputs.rules;
    assert.equal(models.find((r: { id: string }) => r.id === "expire-old-model-versions").noncurrentVersionExpiration.noncurrentDays, 30);
    const outputs = lifecycles.find((l) => l.name.includes("outputs"))!.inputs.rules;
    const expiresAll = (r: { expiration?: unknown; filter?: { prefix?: string } }) => r.expiration && !r.filter?.prefix;
    assert.ok(!outputs.some(expiresAll), "outputsExpireDays 0 keeps outputs");
    const temp = outputs.find((r: { id: string }) => r.id === "expire-gateway-temp");
    assert.deepEqual([temp.filter.prefix, temp.expiration.days], ["gateway/temp/", 1], "only the gateway's temp previews expire");
    const data = p.rec.ofType("aws:s3/bucket:Bucket").filter((b) => /-(models|outputs|inputs|userdata)$/.test(b.name));
    assert.equal(data.length, 4);
    for (const b of data) assert.equal(b.inputs.forceDestroy, false, `${b.name} keeps its data on destroy`);
    const pv = p.rec.ofType("kubernetes:core/v1:PersistentVolume").find((v) => v.inputs.metadata.name === "comfyui-outputs")!.inputs;
    assert.ok(pv.spec.mountOptions.includes("allow-delete"));
    assert.ok(pv.spec.mountOptions.includes("region us-west-2"));
    assert.ok(pv.spec.mountOptions.includes("uid=1000"));
    assert.equal(pv.spec.csi.driver, "s3.csi.aws.com");
    assert.deepEqual(pv.spec.claimRef, { namespace: "comfyui", name: "comfyui-outputs" });
  });

  it("image: private ECR repositories (ComfyUI, gateway, model agent) scanning on push, encrypted, with lifecycle rules", () => {
    const repos = p.rec.ofType("aws:ecr/repository:Repository");
    assert.deepEqual(repos.map((r) => r.name).sort(), ["comfyui-dev-gateway-repo", "comfyui-dev-models-agent-repo", "comfyui-dev-repo"]);
    for (const r of repos) {
      assert.equal(r.inputs.imageScanningConfiguration.scanOnPush, true);
      assert.equal(r.inputs.encryptionConfigurations[0].encryptionType, "AES256");
    }
    assert.equal(p.rec.ofType("aws:ecr/lifecyclePolicy:LifecyclePolicy").length, 3);
    assert.equal(p.rec.ofType("awsx:ecr:Image").length, 0, "imageBuild aws (default): nothing builds on the deployer's machine");
  });

  it("edge: WebSockets and every viewer header through, dynamic routes uncached, no password anywhere", () => {
    const d = p.rec.one("aws:cloudfront/distribution:Distribution").inputs;
    assert.equal(d.defaultCacheBehavior.cachePolicyId, "4135ea2d-6df8-44a3-9df3-4b5a84be39ad", "CachingDisabled");
    assert.equal(d.defaultCacheBehavior.originRequestPolicyId, "216adef6-5c7f-47e4-b989-5492eafa07d3", "AllViewer: cookies, Origin, Host reach the gateway");
    assert.ok(d.defaultCacheBehavior.allowedMethods.includes("POST"));
    // The gateway checks every request; the edge holds no password, hash or signing key at all.
    assert.deepEqual(d.defaultCacheBehavior.functionAssociations ?? [], []);
    assert.equal(p.rec.ofType("aws:cloudfront/function:Function").length, 0);
    assert.equal(p.rec.ofType("aws:cloudfront/keyValueStore:KeyValueStore").length, 0);
    assert.equal(p.rec.ofType("aws:cloudfront/keyvaluestoreKey:KeyvaluestoreKey").length, 0);
    const vo = p.rec.one("aws:cloudfront/vpcOrigin:VpcOrigin").inputs.vpcOriginEndpointConfig;
    assert.equal(vo.originProtocolPolicy, "http-only");
  });
});

describe("config variants built on their own", () => {
  it("one NAT gateway per AZ when natGateways is onePerAz", async () => {
    const rec = new Recorder();
    installMocks(rec);
    const c = new Cluster("ha", {
      clusterName: "comfyui-ha", region: "eu-west-1", kubernetesVersion: "1.34", availabilityZones: 3, vpcCidr: "10.1.0.0/16",
      natGateways: "onePerAz", apiAllowedCidrs: ["203.0.113.0/24"], systemNodeInstanceType: "t3a.large", systemNodeCount: 3, tags: {},
    });
    await unwrap(c.clusterName);
    const vpc = rec.one("awsx:ec2:Vpc").inputs;
    assert.equal(vpc.natGateways.strategy, "OnePerAz");
    assert.equal(vpc.numberOfAvailabilityZones, 3);
    assert.deepEqual(rec.one("eks:index:Cluster").inputs.publicAccessCidrs, ["203.0.113.0/24"]);
  });

  it("a working-hours cron floor in the studio's time zone, valid against the KEDA schema", async () => {
    const spec = scaledObjectSpec({
      namespace: "comfyui", deployment: "comfyui", minReplicas: 0, maxReplicas: 3, queuePerPod: 1, idleMinutes: 10,
      workingHours: { start: "0 9 * * 1-5", end: "0 19 * * 1-5", timezone: "Europe/Berlin", replicas: 1 },
    });
    const cron = (spec.triggers as { type: string; metadata: Record<string, string> }[]).find((t) => t.type === "cron")!;
    assert.deepEqual(cron.metadata, { timezone: "Europe/Berlin", start: "0 9 * * 1-5", end: "0 19 * * 1-5", desiredReplicas: "1" });
    assert.equal(spec.minReplicaCount, 0, "outside working hours it still goes to zero");
    assert.equal(spec.cooldownPeriod, 600);
    await validateK8s({ apiVersion: "keda.sh/v1alpha1", kind: "ScaledObject", metadata: { name: "comfyui", namespace: "comfyui" }, spec });
    const none = scaledObjectSpec({ namespace: "comfyui", deployment: "comfyui", minReplicas: 0, maxReplicas: 3, queuePerPod: 1, idleMinutes: 10 });
    assert.ok(!(none.triggers as { type: string }[]).some((t) => t.type === "cron"));
  });

  it("no internet-facing rule on the ALB when the edge is off", async () => {
    const rec = new Recorder();
    installMocks(rec);
    const { ComfyGateway } = await import("../../workload");
    const w = new ComfyGateway("noedge", {
      namespace: "comfyui", imageUri: "gw@sha256:def", clusterName: "c", region: "us-west-2", outputsBucket: "o", outputsBucketArn: "arn:aws:s3:::o",
      inputsBucket: "i", inputsBucketArn: "arn:aws:s3:::i", userdataBucket: "u", userdataBucketArn: "arn:aws:s3:::u", comfyuiService: "comfyui-queue",
      stackName: "noedge", albName: "comfyui-noedge", vpcId: "vpc-1", vpcCidr: "10.0.0.0/16",
      provider: new k8s.Provider("noedge", { kubeconfig: "{}" }), dependsOn: [], tags: {},
    });
    await unwrap(w.albSecurityGroupId);
    assert.deepEqual(rec.one("aws:ec2/securityGroup:SecurityGroup").inputs.ingress ?? [], []);
  });

  for (const type of ["g6.12xlarge", "g6e.4xlarge"]) {
    it(`renders ComfyUI pods that fill a ${type} node: requests × GPUs + DaemonSets ≤ Karpenter's allocatable`, async () => {
      const rec = new Recorder();
      installMocks(rec);
      const { ComfyWorkload } = await import("../../workload");
      const facts = factsOf(instanceTypeInfo(type));
      new ComfyWorkload(`fit-${type.replace(".", "-")}`, {
        namespace: "comfyui", imageUri: "repo@sha256:abc", outputsVolumeName: "o", inputsVolumeName: "i",
        podResources: pulumi.output(podResourcesPerGpu([facts])),
        drainSeconds: 600,
        autoscaling: { minReplicas: 0, maxReplicas: facts.gpus, queuePerPod: 2, idleMinutes: 15 }, provider: new k8s.Provider(`fit-${type}`, { kubeconfig: "{}" }), dependsOn: [], tags: {},
      });
      await quiesce(rec);
      const pod = rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!.inputs.spec.template.spec;
      const containers = [...pod.containers, ...(pod.initContainers ?? [])];
      const cpu = containers.reduce((n: number, c: any) => n + (String(c.resources.requests.cpu).endsWith("m") ? Number(String(c.resources.requests.cpu).slice(0, -1)) : Number(c.resources.requests.cpu) * 1000), 0);
      const mem = containers.reduce((n: number, c: any) => n + Number(String(c.resources.requests.memory).replace(/Mi$/, "")), 0);
      const gpus = pod.containers.reduce((n: number, c: any) => n + Number(c.resources.requests["nvidia.com/gpu"] ?? 0), 0);
      const a = karpenterAllocatable(type);
      assert.equal(gpus, 1, "one GPU per pod");
      assert.ok(cpu * facts.gpus + DAEMONSET_BUDGET.cpuMilli <= a.cpuMilli, `${facts.gpus} × ${cpu}m CPU`);
      assert.ok(mem * facts.gpus + DAEMONSET_BUDGET.memoryMiB <= a.memoryMiB, `${facts.gpus} × ${mem}Mi`);
      // Sized to the node, not far below it: one more pod's worth would not fit.
      assert.ok(cpu * (facts.gpus + 1) + DAEMONSET_BUDGET.cpuMilli > a.cpuMilli || mem * (facts.gpus + 1) + DAEMONSET_BUDGET.memoryMiB > a.memoryMiB);
    });
  }
});
