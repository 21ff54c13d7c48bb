/**
 * The whole program, evaluated from index.ts with Pulumi.dev.yaml's config: outputs present and
 * the wiring between components is the wiring we claim (outputs, never lookups by tag or sed).
 */
import { strict as assert } from "node:assert";
import { MOCK_ALB_DNS, MOCK_IMAGE_DIGEST } from "../support/mocks";
import { ProgramRun, runProgram } from "../support/program";

describe("whole program (index.ts + Pulumi.dev.yaml)", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("exports every documented output", () => {
    const o = p.outputs;
    assert.match(String(o.url), /^https:\/\/[a-z0-9]+\.cloudfront\.net$/);
    assert.equal(o.clusterName, "comfyui-dev");
    assert.ok(String(o.kubeconfig).includes("comfyui-dev"));
    for (const k of ["modelsBucket", "outputsBucket", "inputsBucket"]) assert.ok(typeof o[k] === "string" && (o[k] as string).length > 0, k);
    assert.match(String(o.ecrRepository), /\.dkr\.ecr\..*\/.+/);
    assert.ok(String(o.imageUri).endsWith(`@${MOCK_IMAGE_DIGEST}`));
    assert.equal(o.edgeUsername, undefined, "no password login any more");
    assert.match(String(o.userPoolId), /.+/);
    assert.match(String(o.loginDomain), /^https:\/\/comfyui-[a-z0-9-]+\.auth\.us-west-2\.amazoncognito\.com$/);
    const c = o.commands as Record<string, string>;
    assert.equal(c.updateKubeconfig, "aws eks update-kubeconfig --region us-west-2 --name comfyui-dev");
    assert.ok(c.uploadModel.includes(`s3://${o.modelsBucket}/checkpoints/`));
    assert.deepEqual(o.gpuNodePools, ["comfyui-gpu"]);
    assert.ok(String(o.modelSyncQueue).startsWith("https://sqs."));
  });

  it("keeps the kubeconfig secret", async () => {
    const mod = await import("../../index");
    const pulumi = await import("@pulumi/pulumi");
    assert.equal(await (pulumi.output(mod.kubeconfig) as any).isSecret, true);
  });

  it("points CloudFront's VPC origin at exactly the ALB the Ingress produced", () => {
    const ingress = p.rec.one("kubernetes:networking.k8s.io/v1:Ingress");
    const albName = ingress.inputs.metadata.annotations["alb.ingress.kubernetes.io/load-balancer-name"];
    assert.equal(albName, "comfyui-dev");
    const lookups = p.rec.invokes.filter((i) => i.token === "aws:lb/getLoadBalancer:getLoadBalancer");
    assert.equal(lookups.length, 1);
    assert.deepEqual(lookups[0].args, { name: albName });
    const vpcOrigin = p.rec.one("aws:cloudfront/vpcOrigin:VpcOrigin");
    assert.ok(vpcOrigin.inputs.vpcOriginEndpointConfig.arn.includes(`loadbalancer/app/${albName}/`));
    const dist = p.rec.one("aws:cloudfront/distribution:Distribution");
    assert.equal(dist.inputs.origins.length, 1);
    assert.equal(dist.inputs.origins[0].domainName, MOCK_ALB_DNS);
    assert.equal(dist.inputs.origins[0].vpcOriginConfig.vpcOriginId, vpcOrigin.id);
    assert.equal(ingress.inputs.metadata.annotations["alb.ingress.kubernetes.io/scheme"], "internal");
  });

  it("runs the Deployments on the pushed image digests, ComfyUI (main container and uploader) and the gateway", () => {
    assert.match(String(p.outputs.imageUri), /@sha256:[0-9a-f]{64}$/);
    assert.match(String(p.outputs.gatewayImageUri), /@sha256:[0-9a-f]{64}$/);
    const gw = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui-gateway")!;
    assert.equal(gw.inputs.spec.template.spec.containers[0].image, p.outputs.gatewayImageUri);
    const dep = p.rec.ofType("kubernetes:apps/v1:Deployment").find((d) => d.inputs.metadata.name === "comfyui")!;
    const spec = dep.inputs.spec.template.spec;
    assert.equal(spec.containers[0].image, p.outputs.imageUri);
    assert.equal(spec.initContainers[0].image, p.outputs.imageUri);
  });

  it("mounts the outputs and inputs buckets through the PVs, and the CSI role names only those buckets", () => {
    const pvs = p.rec.ofType("kubernetes:core/v1:PersistentVolume");
    const byName = Object.fromEntries(pvs.map((pv) => [pv.inputs.metadata.name, pv.inputs]));
    assert.equal(byName["comfyui-outputs"].spec.csi.volumeAttributes.bucketName, p.outputs.outputsBucket);
    assert.equal(byName["comfyui-inputs"].spec.csi.volumeAttributes.bucketName, p.outputs.inputsBucket);
    const pvcs = p.rec.ofType("kubernetes:core/v1:PersistentVolumeClaim").map((c) => c.inputs.spec.volumeName).sort();
    assert.deepEqual(pvcs, ["comfyui-inputs", "comfyui-outputs"]);
    const csiPolicy = p.rec.ofType("aws:iam/rolePolicy:RolePolicy").find((r) => r.name.includes("mountpoint"))!;
    const resources = JSON.parse(csiPolicy.inputs.policy).Statement.flatMap((s: { Resource: string | string[] }) => [s.Resource].flat());
    const allowed = [p.outputs.outputsBucket, p.outputs.inputsBucket].flatMap((b) => [`arn:aws:s3:::${b}`, `arn:aws:s3:::${b}/*`]);
    for (const r of resources) assert.ok(allowed.includes(r), `CSI role names ${r}`);
    assert.ok(!resources.some((r: string) => r.includes(String(p.outputs.modelsBucket))), "CSI role must not reach the models bucket");
    const assoc = p.rec.one("aws:eks/addon:Addon", "mountpoint-csi");
    assert.equal(assoc.inputs.podIdentityAssociations[0].serviceAccount, "s3-csi-driver-sa");
  });

  it("gives the GPU user-data and the sync Lambda the models bucket", () => {
    const nodeClass = p.rec.one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass");
    assert.ok(String(nodeClass.inputs.spec.userData).includes(String(p.outputs.modelsBucket)));
    const fn = p.rec.one("aws:lambda/function:Function");
    assert.equal(fn.inputs.environment.variables.MODELS_BUCKET, p.outputs.modelsBucket);
    assert.equal(fn.inputs.environment.variables.CLUSTER_NAME, "comfyui-dev");
  });

  it("admits only CloudFront's origin-facing prefix list into the ALB", () => {
    const sg = p.rec.one("aws:ec2/securityGroup:SecurityGroup", "alb-sg");
    assert.deepEqual(sg.inputs.ingress.map((r: any) => r.prefixListIds), [["pl-cloudfront-mock"]]);
    assert.ok(p.rec.invokes.some((i) => i.token === "aws:ec2/getManagedPrefixList:getManagedPrefixList" && i.args.name === "com.amazonaws.global.cloudfront.origin-facing"));
    const ingress = p.rec.one("kubernetes:networking.k8s.io/v1:Ingress");
    assert.equal(ingress.inputs.metadata.annotations["alb.ingress.kubernetes.io/security-groups"], sg.id);
  });
});
