/**
 * Control: the same Karpenter and LB-controller requests, simulated against the upstream policies
 * (test/upstream/iam/, the template's parameters substituted with this stack's values). Where ours
 * denies what upstream allows, the difference must be intended and written in the table below
 * with its reason; an undocumented difference fails, and so does a stale row. Ours granting what
 * upstream does not would be broader than upstream, and fails too.
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import * as yaml from "js-yaml";
import { MOCK_ACCOUNT } from "../support/mocks";
import { karpenterTable, lbcTable, programFacts, Facts } from "./principals";
import { PolicyDocument, programPolicies, ProgramPolicies, PrincipalTable, REGION, resourceTags, roleArn, simulate, simulateAsRole, SimRequest, title } from "./simulate";

const UPSTREAM = path.join(__dirname, "..", "upstream", "iam");

interface Difference extends SimRequest {
  reason: string;
}

/** CloudFormation's short-form intrinsics, kept as plain values so the template parses. */
const CFN_SCHEMA = yaml.DEFAULT_SCHEMA.extend(
  ["!Sub", "!Ref", "!GetAtt"].map((tag) => new yaml.Type(tag, { kind: "scalar", construct: (data: string) => ({ [tag]: data }) })),
);

/** The Karpenter controller's managed policies of the template, with its parameters substituted. */
export function karpenterUpstreamPolicies(f: Facts): Map<string, PolicyDocument> {
  const template = yaml.load(fs.readFileSync(path.join(UPSTREAM, "karpenter-cloudformation.yaml"), "utf8"), { schema: CFN_SCHEMA }) as {
    Resources: Record<string, { Type: string; Properties: { PolicyDocument?: { "!Sub"?: string } } }>;
  };
  const values: Record<string, string> = {
    ClusterName: f.cluster,
    "AWS::Partition": "aws",
    "AWS::Region": REGION,
    "AWS::AccountId": MOCK_ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "KarpenterNodeRole.Arn": roleArn(f.roles.node),
    "KarpenterInterruptionQueue.Arn": f.interruptionQueueArn,
  };
  const out = new Map<string, PolicyDocument>();
  for (const [name, res] of Object.entries(template.Resources)) {
    if (res.Type !== "AWS::IAM::ManagedPolicy") continue;
    const sub = res.Properties.PolicyDocument?.["!Sub"];
    if (typeof sub !== "string") throw new Error(`${name}: expected a !Sub policy document`);
    const text = sub.replace(/\$\{([^}]+)\}/g, (_, key: string) => {
      if (!(key in values)) throw new Error(`${name}: no value for template parameter \${${key}}`);
      return values[key];
    });
    out.set(name, JSON.parse(text) as PolicyDocument);
  }
  return out;
}

function lbcUpstreamPolicy(): PolicyDocument {
  return JSON.parse(fs.readFileSync(path.join(UPSTREAM, "lbc-iam_policy.json"), "utf8")) as PolicyDocument;
}

/** Karpenter: what upstream grants and ours intentionally does not. */
function karpenterDifferences(f: Facts): Difference[] {
  const ec2 = `arn:aws:ec2:${REGION}:${MOCK_ACCOUNT}`;
  const noReserved = "no NodePool allows capacity type reserved and the EC2NodeClass has no capacityReservationSelectorTerms (karpenter/index.ts)";
  const noPlacement = "the EC2NodeClass sets no placementGroupSelector; Karpenter calls nothing placement-group related without one (pkg/providers/placementgroup/provider.go Get, v1.14.1)";
  return [
    ...["ec2:RunInstances", "ec2:CreateFleet"].flatMap((action): Difference[] => [
      { action, resource: `${ec2}:capacity-reservation/cr-0123456789abcdef0`, reason: noReserved },
      { action, resource: `${ec2}:placement-group/pg-0123456789abcdef0`, reason: noPlacement },
    ]),
    {
      action: "ec2:DescribeCapacityReservations",
      resource: "*",
      context: { "aws:RequestedRegion": REGION },
      reason: `${noReserved}; with no selector terms there is no query (pkg/providers/capacityreservation/types.go QueriesFromSelectorTerms, v1.14.1)`,
    },
    { action: "ec2:DescribePlacementGroups", resource: "*", context: { "aws:RequestedRegion": REGION }, reason: noPlacement },
    {
      action: "arc-zonal-shift:GetManagedResource",
      resource: "*",
      context: { "arc-zonal-shift:ResourceIdentifier": `arn:aws:eks:${REGION}:${MOCK_ACCOUNT}:cluster/${f.cluster}` },
      reason: "zonal-shift awareness is opt-in (v1.12 upgrade notes) and this program does not turn it on",
    },
    {
      action: "iam:PassRole",
      resource: roleArn(f.roles.node),
      context: { "iam:PassedToService": "ec2.amazonaws.com.cn" },
      reason: "the program builds aws-partition ARNs only; the China partition's EC2 principal never applies",
    },
  ];
}

/** LB controller: what upstream grants and ours intentionally does not. */
function lbcDifferences(f: Facts): Difference[] {
  const elb = `arn:aws:elasticloadbalancing:${REGION}:${MOCK_ACCOUNT}`;
  const lb = `${elb}:loadbalancer/app/${f.albName}/50dc6c495c0c9188`;
  const listener = `${elb}:listener/app/${f.albName}/50dc6c495c0c9188/f2f7dc8efc522ab2`;
  const owned = resourceTags({ "elbv2.k8s.aws/cluster": f.cluster });
  const off = "the chart values turn the WAF/WAFv2/Shield integrations off (cluster/index.ts enableWaf, enableWafv2, enableShield)";
  const httpOnly = "the Ingress listens on HTTP 80 only (CloudFront terminates TLS): no certificates to discover or attach";
  return [
    ...["wafv2:GetWebACL", "wafv2:AssociateWebACL"].map((action) => ({
      action,
      resource: `arn:aws:wafv2:${REGION}:${MOCK_ACCOUNT}:regional/webacl/comfyui/0123abcd-0123-0123-0123-0123456789ab`,
      reason: off,
    })),
    ...["wafv2:GetWebACLForResource", "wafv2:DisassociateWebACL"].map((action) => ({ action, resource: lb, reason: off })),
    ...["waf-regional:GetWebACLForResource", "waf-regional:AssociateWebACL", "waf-regional:DisassociateWebACL"].map((action) => ({ action, resource: lb, reason: off })),
    { action: "waf-regional:GetWebACL", resource: `arn:aws:waf-regional:${REGION}:${MOCK_ACCOUNT}:webacl/0123abcd-0123-0123-0123-0123456789ab`, reason: off },
    // SetWebAcl and CreateProtection have no resource-level permissions: the request names "*".
    { action: "elasticloadbalancing:SetWebAcl", resource: "*", reason: off },
    { action: "shield:GetSubscriptionState", resource: "*", reason: off },
    ...["shield:DescribeProtection", "shield:DeleteProtection"].map((action) => ({ action, resource: `arn:aws:shield::${MOCK_ACCOUNT}:protection/0123abcd`, reason: off })),
    { action: "shield:CreateProtection", resource: "*", reason: off },
    { action: "acm:ListCertificates", resource: "*", reason: httpOnly },
    { action: "acm:DescribeCertificate", resource: `arn:aws:acm:${REGION}:${MOCK_ACCOUNT}:certificate/0123abcd-0123-0123-0123-0123456789ab`, reason: httpOnly },
    { action: "iam:ListServerCertificates", resource: "*", reason: httpOnly },
    { action: "iam:GetServerCertificate", resource: `arn:aws:iam::${MOCK_ACCOUNT}:server-certificate/comfyui`, reason: httpOnly },
    { action: "elasticloadbalancing:AddListenerCertificates", resource: listener, context: owned, reason: httpOnly },
    { action: "elasticloadbalancing:RemoveListenerCertificates", resource: listener, context: owned, reason: httpOnly },
    {
      action: "cognito-idp:DescribeUserPoolClient",
      resource: `arn:aws:cognito-idp:${REGION}:${MOCK_ACCOUNT}:userpool/${REGION}_0123abcd`,
      reason: "no Ingress uses alb.ingress.kubernetes.io/auth-type cognito: access control is at the edge (edge/)",
    },
    {
      action: "elasticloadbalancing:ModifyIpPools",
      resource: lb,
      context: owned,
      reason: "no IPAM pool is set on the load balancer; the controller calls ModifyIpPools only to add or remove one (pkg/deploy/elbv2/load_balancer_manager.go, v3.5.0)",
    },
  ];
}

interface Control {
  table: PrincipalTable;
  upstream: PolicyDocument[];
  differences: Difference[];
}

/** Action, resource and context: the same call with another context is another request. */
const key = (r: SimRequest) => `${r.action} ${r.resource} ${JSON.stringify(r.context ?? {})}`;

async function compare(policies: ProgramPolicies, c: Control): Promise<string[]> {
  const problems: string[] = [];
  const intended = new Map(c.differences.map((d) => [key(d), d]));
  const principalArn = roleArn(c.table.role);
  for (const req of [...c.table.allowed, ...c.differences]) {
    const ours = await simulateAsRole(policies, c.table.role, req);
    const up = await simulate(c.upstream, req, { principalArn });
    if (ours.decision === "Error" || up.decision === "Error") {
      problems.push(`${title(c.table.principal, req)}: simulator error (ours ${ours.errors ?? "ok"}, upstream ${up.errors ?? "ok"})`);
      continue;
    }
    const documented = intended.has(key(req));
    if (up.decision === "Allowed" && ours.decision !== "Allowed" && !documented) {
      problems.push(`${title(c.table.principal, req)}: upstream allows, ours denies, and the difference is not in the table`);
    }
    if (documented && !(up.decision === "Allowed" && ours.decision !== "Allowed")) {
      problems.push(`${title(c.table.principal, req)}: listed as an intended difference, but upstream ${up.decision} and ours ${ours.decision}`);
    }
    if (ours.decision === "Allowed" && up.decision !== "Allowed") {
      problems.push(`${title(c.table.principal, req)}: ours allows what upstream does not (${up.decision})`);
    }
  }
  return problems;
}

describe("IAM control: the same requests against the upstream policies", function () {
  let policies: ProgramPolicies;
  let f: Facts;
  before(async () => {
    policies = await programPolicies();
    f = programFacts(policies.run);
  });

  it("reads the Karpenter controller's policies from the template, all parameters substituted", function () {
    const names = [...karpenterUpstreamPolicies(f).keys()].sort();
    assert.deepEqual(names, [
      "EKSIntegrationPolicy",
      "IAMIntegrationPolicy",
      "InterruptionPolicy",
      "NodeLifecyclePolicy",
      "ResourceDiscoveryPolicy",
      "ZonalShiftPolicy",
    ]);
  });

  it("Karpenter: ours denies upstream's grants only where the table says why", async function () {
    const problems = await compare(policies, { table: karpenterTable(f), upstream: [...karpenterUpstreamPolicies(f).values()], differences: karpenterDifferences(f) });
    assert.deepEqual(problems, []);
  });

  it("LB controller: ours denies upstream's grants only where the table says why", async function () {
    const problems = await compare(policies, { table: lbcTable(f), upstream: [lbcUpstreamPolicy()], differences: lbcDifferences(f) });
    assert.deepEqual(problems, []);
  });

  it("catches an undocumented difference and a stale row", async function () {
    const table = karpenterTable(f);
    const differences = karpenterDifferences(f);
    // Without its row, ZonalShift becomes an undocumented difference.
    const withoutRow = differences.filter((d) => d.action !== "arc-zonal-shift:GetManagedResource");
    const zonal = differences.find((d) => d.action === "arc-zonal-shift:GetManagedResource")!;
    const undocumented = await compare(policies, { table: { ...table, allowed: [...table.allowed, zonal] }, upstream: [...karpenterUpstreamPolicies(f).values()], differences: withoutRow });
    assert.equal(undocumented.length, 1, undocumented.join("\n"));
    assert.match(undocumented[0], /arc-zonal-shift:GetManagedResource .*not in the table/);
    // A row for something ours allows is stale.
    const stale = await compare(policies, {
      table: { ...table, allowed: [] },
      upstream: [...karpenterUpstreamPolicies(f).values()],
      differences: [{ action: "eks:DescribeCluster", resource: `arn:aws:eks:${REGION}:${MOCK_ACCOUNT}:cluster/${f.cluster}`, reason: "stale" }],
    });
    assert.equal(stale.length, 1);
    assert.match(stale[0], /listed as an intended difference/);
  });
});
