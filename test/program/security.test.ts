/**
 * Security rules over the whole resource graph of the program, as `pulumi up` would create it.
 * They hold for every component, including ones added later: a new bucket, role or security group
 * that breaks a rule fails here.
 */
import { strict as assert } from "node:assert";
import { ProgramRun, runProgram } from "../support/program";

const FORBIDDEN_MANAGED = /(FullAccess|PowerUser|AdministratorAccess|IAMFullAccess)/;

/**
 * Actions allowed on Resource "*": each one's API has no resource-level permissions (IAM's
 * Service Authorization Reference), so naming a resource is impossible.
 */
const STAR_ALLOWED = [
  /^ec2:(Describe|Get)[A-Za-z]+$/,
  /^elasticloadbalancing:Describe[A-Za-z]+$/,
  /^ssm:GetCommandInvocation$/,
  /^pricing:GetProducts$/,
  /^iam:(GetInstanceProfile|ListInstanceProfiles)$/,
  /^ecr:GetAuthorizationToken$/,
  /^ecr-public:GetAuthorizationToken$/,
];

interface Stmt {
  Effect: string;
  Principal?: { Service?: string | string[] } | string;
  Action: string | string[];
  Resource?: string | string[];
  Condition?: unknown;
  Sid?: string;
}

function statementsOf(policy: unknown): Stmt[] {
  const doc = typeof policy === "string" ? JSON.parse(policy) : policy;
  return [doc.Statement].flat();
}

describe("security rules over the whole graph", function () {
  let p: ProgramRun;
  before(async () => {
    p = await runProgram();
  });

  it("attaches no AWS-managed *FullAccess, PowerUser or admin policy anywhere", () => {
    const arns = [
      ...p.rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").map((a) => a.inputs.policyArn),
      ...p.rec.ofType("aws:iam/role:Role").flatMap((r) => r.inputs.managedPolicyArns ?? []),
    ];
    assert.ok(arns.length > 0, "expected some managed policies (EKS worker, ECR pull …)");
    for (const arn of arns) assert.doesNotMatch(String(arn), FORBIDDEN_MANAGED);
  });

  it("gives the sync Lambda's role no managed policy at all", () => {
    const fn = p.rec.one("aws:lambda/function:Function");
    const roleName = p.rec.ofType("aws:iam/role:Role").find((r) => fn.inputs.role.includes(`role/${r.name}`))!.name;
    const attached = p.rec.ofType("aws:iam/rolePolicyAttachment:RolePolicyAttachment").filter((a) => String(a.inputs.role).includes(roleName));
    assert.deepEqual(attached, []);
  });

  it("scopes every IAM statement to named resources, '*' only for APIs without resource-level permissions", () => {
    const policies = [...p.rec.ofType("aws:iam/rolePolicy:RolePolicy"), ...p.rec.ofType("aws:iam/policy:Policy")];
    assert.ok(policies.length >= 5);
    for (const pol of policies) {
      for (const s of statementsOf(pol.inputs.policy)) {
        if (s.Effect !== "Allow") continue;
        const actions = [s.Action].flat();
        for (const a of actions) assert.ok(!a.endsWith(":*") && a !== "*", `${pol.name}: wildcard action ${a}`);
        const resources = [s.Resource ?? []].flat();
        if (resources.includes("*")) {
          for (const a of actions) {
            assert.ok(STAR_ALLOWED.some((re) => re.test(a)) || s.Condition !== undefined, `${pol.name} ${s.Sid ?? ""}: ${a} on "*" without a condition`);
          }
        }
      }
    }
  });

  it("encrypts every bucket, blocks public access, enforces TLS and bucket-owner ownership", () => {
    const buckets = p.rec.ofType("aws:s3/bucket:Bucket");
    assert.ok(buckets.length >= 4, "models, outputs, inputs, userdata (and the image build's context bucket)");
    for (const b of buckets) {
      const ref = (r: { inputs: Record<string, any> }) => r.inputs.bucket === b.id;
      const sse = p.rec.ofType("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration").filter(ref);
      assert.equal(sse.length, 1, `${b.name} encryption`);
      assert.ok(["AES256", "aws:kms"].includes(sse[0].inputs.rules[0].applyServerSideEncryptionByDefault.sseAlgorithm));
      const pab = p.rec.ofType("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").filter(ref);
      assert.equal(pab.length, 1, `${b.name} public access block`);
      for (const k of ["blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"]) assert.equal(pab[0].inputs[k], true, `${b.name} ${k}`);
      const own = p.rec.ofType("aws:s3/bucketOwnershipControls:BucketOwnershipControls").filter(ref);
      assert.equal(own[0]?.inputs.rule.objectOwnership, "BucketOwnerEnforced");
      const pol = p.rec.ofType("aws:s3/bucketPolicy:BucketPolicy").filter(ref);
      assert.equal(pol.length, 1, `${b.name} policy`);
      const deny = statementsOf(pol[0].inputs.policy).find((s) => s.Effect === "Deny" && JSON.stringify(s.Condition).includes('"aws:SecureTransport":"false"'));
      assert.ok(deny, `${b.name} TLS-only`);
    }
    const versioned = p.rec.ofType("aws:s3/bucketVersioning:BucketVersioning").filter((v) => v.inputs.versioningConfiguration.status === "Enabled").map((v) => v.inputs.bucket);
    for (const key of ["-models", "-userdata"]) {
      assert.ok(versioned.includes(p.rec.ofType("aws:s3/bucket:Bucket").find((b) => b.name.endsWith(key))!.id), `${key} versioned`);
    }
  });

  it("opens no security group to the internet", () => {
    const open = (cidrs: unknown) => [cidrs ?? []].flat().some((c) => c === "0.0.0.0/0" || c === "::/0");
    for (const sg of p.rec.ofType("aws:ec2/securityGroup:SecurityGroup")) {
      for (const r of sg.inputs.ingress ?? []) {
        assert.ok(!open(r.cidrBlocks) && !open(r.ipv6CidrBlocks), `${sg.name} ingress open to the internet`);
      }
    }
    for (const r of [...p.rec.ofType("aws:ec2/securityGroupRule:SecurityGroupRule"), ...p.rec.ofType("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")]) {
      if (r.inputs.type === "egress") continue;
      assert.ok(!open(r.inputs.cidrBlocks) && !open(r.inputs.cidrIpv4) && !open(r.inputs.cidrIpv6), `${r.name} open to the internet`);
    }
  });

  it("encrypts queues and keeps every SQS queue policy TLS-only", () => {
    const queues = p.rec.ofType("aws:sqs/queue:Queue");
    assert.ok(queues.length >= 3);
    for (const q of queues) assert.ok(q.inputs.sqsManagedSseEnabled === true || q.inputs.kmsMasterKeyId, `${q.name} unencrypted`);
  });

  it("grants sns:Publish on each SNS topic, and use of its KMS key, only to services that publish to it in this graph", () => {
    // A service principal is a publisher when something in the graph sends it to the topic:
    // CloudWatch through an alarm's actions, EventBridge through a rule target on the topic.
    const publishers = (topicArn: string): Set<string> => {
      const found = new Set<string>();
      const actions = (a: Record<string, any>) => [a.alarmActions, a.okActions, a.insufficientDataActions].flat().filter(Boolean);
      if (p.rec.ofType("aws:cloudwatch/metricAlarm:MetricAlarm").some((a) => actions(a.inputs).includes(topicArn))) found.add("cloudwatch.amazonaws.com");
      if (p.rec.ofType("aws:cloudwatch/eventTarget:EventTarget").some((t) => t.inputs.arn === topicArn)) found.add("events.amazonaws.com");
      return found;
    };
    const services = (s: Stmt) => (typeof s.Principal === "object" ? [s.Principal.Service ?? []].flat() : []);
    const topics = p.rec.ofType("aws:sns/topic:Topic");
    assert.ok(topics.length >= 1, "the alarm topic");
    for (const topic of topics) {
      const arn = `arn:aws:sns:us-west-2:123456789012:${topic.name}`;
      const used = publishers(arn);
      assert.ok(used.has("cloudwatch.amazonaws.com"), `${topic.name}: the alarms publish to it`);
      const policy = p.rec.ofType("aws:sns/topicPolicy:TopicPolicy").find((t) => t.inputs.arn === arn)!;
      const granted = statementsOf(policy.inputs.policy).filter((s) => s.Effect === "Allow").flatMap(services);
      assert.deepEqual(granted.filter((g) => !used.has(g)), [], `${topic.name}: sns:Publish granted to services that never publish to it`);
      const key = p.rec.ofType("aws:kms/key:Key").find((k) => `arn:aws:kms:us-west-2:123456789012:${k.name}` === topic.inputs.kmsMasterKeyId)!;
      assert.ok(key, `${topic.name}: its KMS key is in the graph`);
      const keyGrants = statementsOf(key.inputs.policy).filter((s) => s.Effect === "Allow").flatMap(services);
      assert.deepEqual(keyGrants.filter((g) => !used.has(g)), [], `${topic.name}: its key lets services use it that never publish to the topic`);
    }
  });

  it("serves viewers over HTTPS only, and every cache behavior hands the gateway what it checks (cookies, Authorization, Origin, Host)", () => {
    // Access control is the gateway's (workload/gateway/auth): the edge must neither cache per-user
    // answers nor strip what the gateway decides on. AllViewer forwards every viewer header and cookie.
    const dist = p.rec.one("aws:cloudfront/distribution:Distribution");
    const behaviors = [dist.inputs.defaultCacheBehavior, ...(dist.inputs.orderedCacheBehaviors ?? [])];
    for (const b of behaviors) {
      assert.ok(["redirect-to-https", "https-only"].includes(b.viewerProtocolPolicy));
      assert.equal(b.originRequestPolicyId, "216adef6-5c7f-47e4-b989-5492eafa07d3", `${b.pathPattern ?? "default"}: AllViewer`);
      assert.equal(b.cachePolicyId, "4135ea2d-6df8-44a3-9df3-4b5a84be39ad", `${b.pathPattern ?? "default"}: CachingDisabled (answers are per user)`);
    }
  });
});
