/**
 * Graph-wide: every action in every policy document of the program (inline role policies, queue
 * and bucket policies) exists in the IAM service reference, and every condition key applies to
 * its action for the resource types the statement names, or is a global key. A typo'd action or a
 * key the service never evaluates would otherwise fail only in a real account, silently.
 */
import { strict as assert } from "node:assert";
import { checkDocument } from "./catalog";
import { programPolicies, ProgramPolicies } from "./simulate";

describe("IAM documents against the service reference (iam-data)", function () {
  let policies: ProgramPolicies;
  before(async () => {
    policies = await programPolicies();
  });

  it("finds role, queue and bucket policies in the graph", function () {
    const kinds = new Set(policies.all.map((d) => d.kind));
    assert.deepEqual([...kinds].sort(), ["bucket", "queue", "role"]);
  });

  it("every action exists and every condition key applies (or is global)", async function () {
    const findings = (await Promise.all(policies.all.map((d) => checkDocument(d.source, d.doc)))).flat();
    assert.deepEqual(findings, []);
  });

  it("catches a made-up action", async function () {
    const findings = await checkDocument("test", { Statement: [{ Effect: "Allow", Action: ["ec2:DescribeInstances", "ec2:LaunchRocket"], Resource: "*" }] });
    assert.deepEqual(findings.map((f) => f.problem), ['action "ec2:LaunchRocket" does not exist']);
    const wild = await checkDocument("test", { Statement: [{ Effect: "Allow", Action: "sqs:Frobnicate*", Resource: "*" }] });
    assert.match(wild[0]?.problem ?? "", /matches no action/);
    const service = await checkDocument("test", { Statement: [{ Effect: "Allow", Action: "ec3:DescribeInstances", Resource: "*" }] });
    assert.match(service[0]?.problem ?? "", /service "ec3"/);
  });

  it("catches a condition key that does not apply to the action", async function () {
    const foreign = await checkDocument("test", {
      Statement: [{ Effect: "Allow", Action: "s3:GetObject", Resource: "arn:aws:s3:::b/*", Condition: { StringEquals: { "ec2:CreateAction": "RunInstances" } } }],
    });
    assert.equal(foreign.length, 1);
    assert.match(foreign[0].problem, /"ec2:CreateAction" does not apply to s3:GetObject/);
    // A tag key where the service has no tag-based authorization for the action.
    const tag = await checkDocument("test", {
      Statement: [{ Effect: "Allow", Action: "ssm:GetCommandInvocation", Resource: "*", Condition: { StringEquals: { "aws:RequestTag/team": "x" } } }],
    });
    assert.equal(tag.length, 1);
    // A key of the right action but of a resource type the statement does not name: ec2:InstanceType
    // belongs to instances, not to the subnets this statement is about.
    const resourceType = await checkDocument("test", {
      Statement: [{ Effect: "Allow", Action: "ec2:RunInstances", Resource: "arn:aws:ec2:us-west-2:*:subnet/*", Condition: { StringEquals: { "ec2:InstanceType": "g6.xlarge" } } }],
    });
    assert.equal(resourceType.length, 1, JSON.stringify(resourceType));
  });

  it("accepts global keys and the keys the reference lists", async function () {
    const ok = await checkDocument("test", {
      Statement: [
        { Effect: "Deny", Principal: "*", Action: "sqs:*", Resource: "arn:aws:sqs:us-west-2:123456789012:q", Condition: { Bool: { "aws:SecureTransport": "false" } } },
        { Effect: "Allow", Action: "ssm:SendCommand", Resource: "arn:aws:ec2:us-west-2:123456789012:instance/*", Condition: { StringEquals: { "ssm:resourceTag/team": "x" } } },
        { Effect: "Allow", Action: "ec2:RunInstances", Resource: "arn:aws:ec2:us-west-2:*:instance/*", Condition: { StringEquals: { "ec2:InstanceType": "g6.xlarge" } } },
      ],
    });
    assert.deepEqual(ok, []);
  });
});
