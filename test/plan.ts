/**
 * `npm run plan`: the offline plan. Evaluates the program (index.ts) with Pulumi.dev.yaml's config
 * against mocked providers — no AWS credentials, no Pulumi CLI — and prints what `pulumi up` would
 * create, with the properties that matter. It is a reading aid, not a preview: values AWS assigns
 * (ids, ARNs, bucket names, the image digest, the CloudFront domain) are placeholders here, and
 * `pulumi preview` remains the real thing.
 */
import { RecordedResource } from "./support/mocks";
import { runProgram } from "./support/program";

const pick = (o: Record<string, any>, keys: string[]) =>
  keys
    .filter((k) => o[k] !== undefined && o[k] !== null && !(Array.isArray(o[k]) && o[k].length === 0))
    .map((k) => `${k}=${short(o[k])}`)
    .join(" ");

function short(v: unknown): string {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > 90 ? `${s.slice(0, 87)}…` : s;
}

function summary(r: RecordedResource): string {
  const i = r.inputs;
  switch (r.type) {
    case "awsx:ec2:Vpc":
      return pick(i, ["cidrBlock", "numberOfAvailabilityZones", "natGateways"]);
    case "eks:index:Cluster":
      return pick(i, ["name", "version", "authenticationMode", "endpointPublicAccess", "enabledClusterLogTypes"]);
    case "aws:eks/nodeGroup:NodeGroup":
      return pick(i, ["instanceTypes", "amiType", "scalingConfig"]);
    case "aws:eks/addon:Addon":
      return pick(i, ["addonName"]);
    case "kubernetes:helm.sh/v3:Release":
      return pick(i, ["chart", "version", "namespace"]);
    case "aws:iam/rolePolicyAttachment:RolePolicyAttachment":
      return pick(i, ["policyArn"]);
    case "aws:iam/rolePolicy:RolePolicy": {
      const doc = JSON.parse(i.policy);
      const actions = doc.Statement.flatMap((s: { Action: string | string[] }) => [s.Action].flat());
      return `${actions.length} actions: ${short(actions.join(","))}`;
    }
    case "aws:s3/bucket:Bucket":
      return pick(i, ["forceDestroy"]);
    case "aws:sqs/queue:Queue":
      return pick(i, ["messageRetentionSeconds", "visibilityTimeoutSeconds", "sqsManagedSseEnabled"]);
    case "aws:lambda/function:Function":
      return pick(i, ["runtime", "timeout", "memorySize"]);
    case "aws:cloudfront/distribution:Distribution":
      return `origin=${i.origins?.[0]?.domainName} viewer=${i.defaultCacheBehavior?.viewerProtocolPolicy} priceClass=${i.priceClass}`;
    case "awsx:ecr:Image":
      return pick(i, ["platform", "args"]);
    case "kubernetes:apps/v1:Deployment": {
      const c = i.spec.template.spec.containers[0];
      return `${i.metadata.namespace}/${i.metadata.name} image=${short(c.image)} replicas=${i.spec.replicas ?? "KEDA"}`;
    }
    case "kubernetes:karpenter.sh/v1:NodePool":
      return `limits=${short(i.spec.limits)} disruption=${short(i.spec.disruption)}`;
    case "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
      return `ami=${short(i.spec.amiSelectorTerms)} instanceStorePolicy=${i.spec.instanceStorePolicy}`;
    case "kubernetes:keda.sh/v1alpha1:ScaledObject":
      return `min=${i.spec.minReplicaCount} max=${i.spec.maxReplicaCount} triggers=${i.spec.triggers.map((t: { name: string }) => t.name).join(",")}`;
    default:
      return i.metadata?.name ? `${i.metadata.namespace ? `${i.metadata.namespace}/` : ""}${i.metadata.name}` : "";
  }
}

async function main(): Promise<void> {
  const { rec, outputs } = await runProgram();
  const rows = [...rec.resources].sort((a, b) => a.type.localeCompare(b.type) || a.name.localeCompare(b.name));
  console.log("OFFLINE PLAN — mocked providers, no AWS calls. `pulumi preview` is the real thing.\n");
  console.log(`stack dev, ${rows.length} resources:\n`);
  const width = Math.min(56, Math.max(...rows.map((r) => r.type.length)));
  for (const r of rows) console.log(`  + ${r.type.padEnd(width)}  ${r.name}  ${summary(r)}`);
  const counts = new Map<string, number>();
  for (const r of rows) counts.set(r.type.split(":")[0], (counts.get(r.type.split(":")[0]) ?? 0) + 1);
  console.log(`\nby provider: ${[...counts].map(([k, v]) => `${k} ${v}`).join(", ")}`);
  console.log("\nstack outputs (placeholders where AWS would assign the value):");
  for (const [k, v] of Object.entries(outputs)) {
    const secret = k === "kubeconfig";
    console.log(`  ${k}: ${secret ? "[secret]" : short(v)}`);
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
