/**
 * Offline harness: Pulumi runtime mocks that record every resource and answer every invoke this
 * program makes. Remote components (eks:index:Cluster, awsx:ec2:Vpc, awsx:ecr:Image) are opaque
 * under mocks, so they get canned outputs here; anything not answered throws, so a new invoke
 * cannot silently return undefined.
 */
import * as pulumi from "@pulumi/pulumi";
import { EC2_DATA, instanceTypeInfo } from "./ec2Data";
import { PRICE_SNAPSHOT } from "../../karpenter/gpuTypes";

/** Resource options as the engine receives them (the mocks' own callback does not see these). */
export interface RecordedOptions {
  retainOnDelete: boolean;
  protect: boolean;
  deleteBeforeReplace: boolean;
  ignoreChanges: string[];
  customTimeouts: { create: string; update: string; delete: string };
  /** The parent's URN ("" for the stack itself). */
  parent: string;
  /** The URNs this resource was known by before (its `aliases`, resolved the way the engine does). */
  aliases: string[];
}

export interface RecordedResource {
  type: string;
  name: string;
  inputs: Record<string, any>;
  custom: boolean;
  provider?: string;
  id: string;
  urn: string;
  options: RecordedOptions;
}

export const MOCK_ACCOUNT = "123456789012";
export const MOCK_IMAGE_DIGEST = "sha256:0f3c1d2e4b5a69788796a5b4c3d2e1f00f3c1d2e4b5a69788796a5b4c3d2e1f0";
export const MOCK_ALB_DNS = "internal-comfyui-dev-1234567890.us-west-2.elb.amazonaws.com";

export class Recorder {
  readonly resources: RecordedResource[] = [];
  readonly invokes: { token: string; args: Record<string, any> }[] = [];

  ofType(type: string): RecordedResource[] {
    return this.resources.filter((r) => r.type === type);
  }

  one(type: string, nameIncludes?: string): RecordedResource {
    const found = this.ofType(type).filter((r) => nameIncludes === undefined || r.name.includes(nameIncludes));
    if (found.length !== 1) {
      throw new Error(
        `expected exactly one ${type}${nameIncludes ? ` named like '${nameIncludes}'` : ""}, found ${found.length}: ` +
          found.map((r) => r.name).join(", "),
      );
    }
    return found[0];
  }

  /** Kubernetes objects (custom resources of any kubernetes:* type except Helm releases and providers). */
  kubernetesObjects(): RecordedResource[] {
    return this.resources.filter(
      (r) => r.type.startsWith("kubernetes:") && !r.type.startsWith("kubernetes:helm.sh") && r.type !== "pulumi:providers:kubernetes",
    );
  }

  reset(): void {
    this.resources.length = 0;
    this.invokes.length = 0;
  }
}

function outputsFor(type: string, name: string, inputs: Record<string, any>): Record<string, any> {
  const arn = (service: string, resource: string) => `arn:aws:${service}:us-west-2:${MOCK_ACCOUNT}:${resource}`;
  switch (type) {
    case "awsx:ec2:Vpc":
      return {
        vpcId: "vpc-0mock",
        privateSubnetIds: ["subnet-priv-a", "subnet-priv-b"],
        publicSubnetIds: ["subnet-pub-a", "subnet-pub-b"],
        isolatedSubnetIds: [],
      };
    case "eks:index:Cluster":
      return {
        kubeconfigJson: JSON.stringify({ apiVersion: "v1", kind: "Config", clusters: [{ name: inputs.name }] }),
        eksCluster: {
          name: inputs.name,
          arn: arn("eks", `cluster/${inputs.name}`),
          endpoint: "https://MOCK.gr7.us-west-2.eks.amazonaws.com",
          certificateAuthority: { data: "bW9jaw==" },
          vpcConfig: { clusterSecurityGroupId: "sg-cluster" },
        },
        clusterSecurityGroupId: "sg-cluster",
        nodeSecurityGroupId: "sg-node",
      };
    case "awsx:ecr:Image":
      return { imageUri: `${MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/comfyui@${MOCK_IMAGE_DIGEST}` };
    case "awsx:ecr:Repository":
      return { url: `${MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/comfyui` };
    case "aws:ecr/repository:Repository":
      return {
        ...inputs,
        arn: arn("ecr", `repository/${name}`),
        repositoryUrl: `${MOCK_ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/${name}`,
        name,
      };
    case "aws:iam/role:Role":
      return { ...inputs, arn: `arn:aws:iam::${MOCK_ACCOUNT}:role/${name}`, name: inputs.name ?? name };
    case "aws:iam/policy:Policy":
      return { ...inputs, arn: `arn:aws:iam::${MOCK_ACCOUNT}:policy/${name}` };
    case "aws:s3/bucket:Bucket": {
      const bucket = inputs.bucket ?? `${name}-mock`;
      return { ...inputs, bucket, arn: `arn:aws:s3:::${bucket}`, bucketRegionalDomainName: `${bucket}.s3.us-west-2.amazonaws.com` };
    }
    case "aws:dynamodb/table:Table":
      return { ...inputs, name: inputs.name ?? `${name}-mock`, arn: arn("dynamodb", `table/${inputs.name ?? `${name}-mock`}`) };
    case "aws:sqs/queue:Queue":
      return { ...inputs, arn: arn("sqs", name), url: `https://sqs.us-west-2.amazonaws.com/${MOCK_ACCOUNT}/${name}`, name: inputs.name ?? name };
    case "aws:lambda/function:Function":
      return { ...inputs, arn: arn("lambda", `function:${name}`), name: inputs.name ?? name };
    case "aws:cloudfront/distribution:Distribution":
      return { ...inputs, domainName: "d111111abcdef8.cloudfront.net", arn: `arn:aws:cloudfront::${MOCK_ACCOUNT}:distribution/EMOCK` };
    case "aws:cloudfront/vpcOrigin:VpcOrigin":
    case "aws:cloudfront/function:Function":
    case "aws:cloudfront/keyValueStore:KeyValueStore":
      return { ...inputs, arn: `arn:aws:cloudfront::${MOCK_ACCOUNT}:${type.split(":").pop()}/${name}` };
    case "aws:cloudwatch/eventRule:EventRule":
      return { ...inputs, name: inputs.name ?? name, arn: arn("events", `rule/${inputs.name ?? name}`) };
    case "aws:cloudwatch/logGroup:LogGroup":
      // The provider derives the ARN from the log group's name, which is what log policies must name.
      return { ...inputs, arn: arn("logs", `log-group:${inputs.name ?? name}`) };
    case "aws:ec2/securityGroup:SecurityGroup":
      return { ...inputs, arn: arn("ec2", `security-group/${name}`) };
    case "kubernetes:networking.k8s.io/v1:Ingress":
      return { ...inputs, status: { loadBalancer: { ingress: [{ hostname: MOCK_ALB_DNS }] } } };
    case "pulumi-nodejs:dynamic/comfyui-image:ImageBuild":
      // image/provider.ts ImageBuild: the build's recorded outputs, as a successful build leaves them.
      return { ...inputs, digest: MOCK_IMAGE_DIGEST, imageUri: `${inputs.repositoryUrl}@${MOCK_IMAGE_DIGEST}`, buildId: `${inputs.projectName}:mock-build` };
    case "aws:cognito/userPool:UserPool":
      return { ...inputs, arn: arn("cognito-idp", `userpool/us-west-2_${name.replace(/[^A-Za-z0-9]/g, "")}`) };
    case "aws:cognito/userPoolClient:UserPoolClient":
      // Cognito generates the secret (generateSecret: true); the provider marks it secret.
      return { ...inputs, clientSecret: inputs.generateSecret ? "mock-cognito-client-secret-0123456789abcdef" : undefined };
    case "random:index/randomPassword:RandomPassword":
      return { ...inputs, result: "mock-generated-password-0123456789" };
    default:
      return { ...inputs, arn: inputs.arn ?? arn(type.split(":")[1]?.split("/")[0] ?? "x", name) };
  }
}

/**
 * What the mocked AWS account answers for lookups a test may want to vary: EC2 vCPU quotas by quota
 * code (a generous default), and the AMI releases whose NVIDIA AL2023 parameters exist.
 */
export const mockAccount = {
  quotas: new Map<string, number>(),
  defaultQuotaVcpus: 256,
  amiReleases: new Set(["v20260724"]),
  amiKubernetesVersions: new Set(["1.30", "1.31", "1.32", "1.33", "1.34", "1.35", "1.36"]),
  /** The region's zones, in the order EC2 lists them. */
  availabilityZones: ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"],
  /** Types EC2 offers in no zone of this account (every vendored type is offered everywhere otherwise). */
  notOffered: new Set<string>(),
  /** Region the Price List is asked about; the vendored snapshot has us-east-1 only, elsewhere it answers nothing. */
};

const NVIDIA_AMI_PARAMETER = /^\/aws\/service\/eks\/optimized-ami\/(1\.\d+)\/amazon-linux-2023\/x86_64\/nvidia\/amazon-eks-node-al2023-x86_64-nvidia-(1\.\d+)-(v\d{8})\/image_id$/;

function invoke(token: string, args: Record<string, any>): Record<string, any> {
  switch (token) {
    case "aws:ssm/getParameter:getParameter": {
      const m = NVIDIA_AMI_PARAMETER.exec(args.name);
      if (!m || m[1] !== m[2] || !mockAccount.amiKubernetesVersions.has(m[1]) || !mockAccount.amiReleases.has(m[3])) {
        // The provider's wording for a missing parameter.
        throw new Error(`reading SSM Parameter (${args.name}): ParameterNotFound`);
      }
      return { name: args.name, type: "String", value: `ami-0mock${m[1].replace(".", "")}${m[3].slice(1)}`, version: 1, arn: `arn:aws:ssm:us-west-2::parameter${args.name}` };
    }
    case "aws:index/getAvailabilityZones:getAvailabilityZones":
      return { names: [...mockAccount.availabilityZones], zoneIds: mockAccount.availabilityZones.map((_, i) => `usw2-az${i + 1}`), id: "us-west-2" };
    case "aws:ec2/getInstanceType:getInstanceType":
      return { ...instanceTypeInfo(args.instanceType), id: args.instanceType };
    case "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": {
      const filter = (name: string) => (args.filters ?? []).find((f: { name: string }) => f.name === name)?.values ?? [];
      const types = filter("instance-type").filter((t: string) => EC2_DATA.types[t] && !mockAccount.notOffered.has(t));
      const zones = filter("location").filter((z: string) => mockAccount.availabilityZones.includes(z));
      const pairs = types.flatMap((t: string) => zones.map((z: string) => [t, z]));
      return { id: "offerings", instanceTypes: pairs.map((p: string[]) => p[0]), locations: pairs.map((p: string[]) => p[1]), locationTypes: pairs.map(() => "availability-zone") };
    }
    case "aws:pricing/getProduct:getProduct": {
      const f = Object.fromEntries((args.filters ?? []).map((x: { field: string; value: string }) => [x.field, x.value]));
      const usd = PRICE_SNAPSHOT.onDemandUsdPerHour[f.regionCode]?.[f.instanceType];
      if (usd === undefined) throw new Error(`Pricing product query not precise enough. Returned 0 elements`);
      // The Price List's product document, reduced to the terms the program reads.
      const result = JSON.stringify({ product: { attributes: { instanceType: f.instanceType, regionCode: f.regionCode } }, terms: { OnDemand: { "X.JRTCKXETXF": { priceDimensions: { "X.JRTCKXETXF.6YS6EN2CT7": { unit: "Hrs", pricePerUnit: { USD: usd.toFixed(10) } } } } } } });
      return { id: "product", result };
    }
    case "aws:servicequotas/getServiceQuota:getServiceQuota":
      return { ...args, value: mockAccount.quotas.get(args.quotaCode) ?? mockAccount.defaultQuotaVcpus, adjustable: true };
    case "aws:index/getCallerIdentity:getCallerIdentity":
      return { accountId: MOCK_ACCOUNT, arn: `arn:aws:iam::${MOCK_ACCOUNT}:user/mock`, userId: "MOCK" };
    case "aws:index/getPartition:getPartition":
      return { partition: "aws", dnsSuffix: "amazonaws.com" };
    case "aws:index/getRegion:getRegion":
      return { name: "us-west-2", region: "us-west-2" };
    case "aws:ec2/getRouteTables:getRouteTables":
      return { ids: ["rtb-priv-a", "rtb-priv-b", "rtb-pub"] };
    case "aws:ec2/getManagedPrefixList:getManagedPrefixList":
      return { id: "pl-cloudfront-mock", name: args.name };
    case "aws:lb/getLoadBalancer:getLoadBalancer":
      return {
        arn: `arn:aws:elasticloadbalancing:us-west-2:${MOCK_ACCOUNT}:loadbalancer/app/${args.name}/50dc6c495c0c9188`,
        dnsName: MOCK_ALB_DNS,
        name: args.name,
        securityGroups: ["sg-alb"],
      };
    case "aws:iam/getPolicyDocument:getPolicyDocument":
      return { json: JSON.stringify({ Version: "2012-10-17", Statement: args.statements ?? [] }) };
    default:
      throw new Error(`Mock not implemented for invoke ${token} (args ${JSON.stringify(args)})`);
  }
}

const NO_OPTIONS: RecordedOptions = {
  retainOnDelete: false,
  protect: false,
  deleteBeforeReplace: false,
  ignoreChanges: [],
  customTimeouts: { create: "", update: "", delete: "" },
  parent: "",
  aliases: [],
};

/** A URN the way the engine (and the mock monitor) forms it: the parent's type chain, then type and name. */
export function urnOf(parent: string, type: string, name: string): string {
  const qualified = parent ? `${parent.split("::")[2]}$${type}` : type;
  return `urn:pulumi:${pulumi.getStack()}::${pulumi.getProject()}::${qualified}::${name}`;
}

/** Alias specs (structured, as this SDK sends them) or plain URNs, as URNs. */
function aliasUrns(req: any): string[] {
  const out: string[] = [];
  for (const a of req.getAliasesList?.() ?? []) {
    if (typeof a === "string") {
      out.push(a);
      continue;
    }
    if (a.getUrn?.()) {
      out.push(a.getUrn());
      continue;
    }
    const spec = a.getSpec?.();
    if (!spec) continue;
    const parent = spec.getNoparent?.() ? "" : spec.getParenturn?.() || req.getParent();
    out.push(urnOf(parent, spec.getType?.() || req.getType(), spec.getName?.() || req.getName()));
  }
  return out;
}

/**
 * The mock monitor hands `newResource` only type, name and inputs; options such as retainOnDelete,
 * ignoreChanges and customTimeouts travel in the same RegisterResourceRequest. This reads them from
 * the request before the mock's callback runs, so tests can assert on them too.
 */
function recordOptions(pending: Map<string, RecordedOptions>): void {
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: any, cb: unknown): unknown };
  const original = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req: any, cb: unknown) => {
    const timeouts = req.getCustomtimeouts?.();
    pending.set(`${req.getType()}::${req.getName()}`, {
      retainOnDelete: Boolean(req.getRetainondelete?.()),
      protect: Boolean(req.getProtect?.()),
      deleteBeforeReplace: Boolean(req.getDeletebeforereplace?.()),
      ignoreChanges: req.getIgnorechangesList?.() ?? [],
      customTimeouts: { create: timeouts?.getCreate() ?? "", update: timeouts?.getUpdate() ?? "", delete: timeouts?.getDelete() ?? "" },
      parent: req.getParent?.() ?? "",
      aliases: aliasUrns(req),
    });
    return original(req, cb);
  };
}

/** Installs the mocks. Call before importing any module that creates resources. */
export function installMocks(recorder: Recorder, stack = "dev", project = "comfyui-eks"): void {
  const pending = new Map<string, RecordedOptions>();
  pulumi.runtime.setMocks(
    {
      newResource(args: pulumi.runtime.MockResourceArgs) {
        const state = outputsFor(args.type, args.name, args.inputs);
        const id = `${args.name}-id`;
        const options = pending.get(`${args.type}::${args.name}`) ?? NO_OPTIONS;
        recorder.resources.push({
          type: args.type,
          name: args.name,
          inputs: args.inputs,
          custom: args.custom ?? false,
          provider: args.provider,
          id,
          urn: urnOf(options.parent, args.type, args.name),
          options,
        });
        return { id, state };
      },
      call(args: pulumi.runtime.MockCallArgs) {
        recorder.invokes.push({ token: args.token, args: args.inputs });
        return invoke(args.token, args.inputs);
      },
    },
    project,
    stack,
    false,
  );
  recordOptions(pending);
}

/** Resolves any Output (or plain value) to its value, the way a test wants to assert on it. */
export function unwrap<T>(value: pulumi.Input<T> | undefined): Promise<T> {
  return new Promise((resolve) => pulumi.output(value as pulumi.Input<T>).apply((v) => resolve(v as T)));
}

/** Lets every pending registration reach the mock before the test inspects the recorder. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}

/**
 * Waits until no new resource has registered for a short while: registrations that hang off
 * Outputs (custom resources waiting on releases, user data applies) land after the outputs resolve.
 */
export async function quiesce(recorder: Recorder, quietMs = 20): Promise<void> {
  let last = -1;
  while (last !== recorder.resources.length) {
    last = recorder.resources.length;
    await settle();
    await new Promise((r) => setTimeout(r, quietMs));
  }
}
