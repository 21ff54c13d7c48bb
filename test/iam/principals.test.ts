/**
 * Every principal's real requests, simulated against the policies exactly as the program renders
 * them (test/iam/principals.ts is the table; test/iam/simulate.ts says how to add a principal).
 * One test per request, named "<principal> <action> <resource>".
 */
import { strict as assert } from "node:assert";
import { Test } from "mocha";
import { NODE_MANAGED_POLICY_ARNS } from "../../karpenter/iam";
import { NODE_BOOT_STREAM_PREFIX } from "../../contracts/metrics";
import { principalTables } from "./principals";
import { PrincipalTable, programPolicies, ProgramPolicies, simulateAsRole, title } from "./simulate";

describe("IAM simulation: what each principal really asks for", function () {
  let policies: ProgramPolicies;
  let tables: PrincipalTable[];

  before(async function () {
    policies = await programPolicies();
    tables = principalTables(policies.run, policies.attachedByRole);
    // The rows are known only once the program has run: one test each, added to this suite.
    const suite = this.test!.parent!;
    for (const t of tables) {
      for (const req of t.allowed) {
        suite.addTest(
          new Test(`allows ${title(t.principal, req)}`, async () => {
            const out = await simulateAsRole(policies, t.role, req);
            assert.equal(out.decision, "Allowed", `${title(t.principal, req)} with ${JSON.stringify(req.context ?? {})}: ${out.decision} ${out.errors ?? ""}`);
          }),
        );
      }
      for (const req of t.denied) {
        suite.addTest(
          new Test(`denies ${title(t.principal, req)}`, async () => {
            const out = await simulateAsRole(policies, t.role, req);
            // A validation error is no denial: the request would have been malformed, not refused.
            assert.match(out.decision, req.explicit ? /^ExplicitlyDenied$/ : /^(Implicitly|Explicitly)Denied$/, `${title(t.principal, req)}: ${out.decision} ${out.errors ?? ""}`);
          }),
        );
      }
    }
  });

  it("finds each principal's role with inline policies in the graph, and only principals it knows", function () {
    for (const t of tables) {
      assert.ok(policies.byRole.get(t.role)?.length, `${t.principal}: role ${t.role} has no inline policy in the graph`);
      assert.ok(t.allowed.length > 0 && t.denied.length > 0, `${t.principal}: needs allowed and denied requests`);
    }
    const covered = new Set(tables.map((t) => t.role));
    const uncovered = [...policies.byRole.keys()].filter((r) => !covered.has(r));
    assert.deepEqual(uncovered, [], `roles with inline policies but no simulation table (add one in test/iam/principals.ts): ${uncovered.join(", ")}`);
  });

  it("simulates the GPU node role with its AWS-managed policies' vendored default versions", function () {
    const node = tables.find((t) => t.principal === "gpu-node")!;
    assert.deepEqual([...(node.managedPolicies ?? [])].sort(), Object.values(NODE_MANAGED_POLICY_ARNS).sort());
    assert.equal(policies.managedByRole.get(node.role)?.length, Object.keys(NODE_MANAGED_POLICY_ARNS).length);
  });

  it("simulates the GPU node's boot-metrics grant wherever the graph has one (its log group found by metricsLogGroupName)", function () {
    const node = tables.find((t) => t.principal === "gpu-node")!;
    const granted = (policies.byRole.get(node.role) ?? []).some((d) => JSON.stringify(d).includes(`:log-stream:${NODE_BOOT_STREAM_PREFIX}`));
    const rows = node.allowed.filter((r) => r.action.startsWith("logs:") && r.resource.includes(`:log-stream:${NODE_BOOT_STREAM_PREFIX}`));
    // A grant on a group the table cannot name would go unsimulated: the log group must be in the graph under its documented name.
    assert.equal(rows.length, granted ? 2 : 0, granted ? "the node role writes node-boot/ streams but no LogGroup in the graph is named metricsLogGroupName(cluster)" : "the metrics log group is in the graph but the node role has no node-boot/ grant (index.ts: pass metricsLogGroupName and metricsLogGroupArn to GpuCapacity)");
  });

  it("has a vendored document for every AWS-managed policy attached to a simulated role", function () {
    const unread = tables.flatMap((t) => (policies.unreadByRole.get(t.role) ?? []).map((arn) => `${t.role}: ${arn}`));
    assert.deepEqual(unread, [], "vendor it under test/upstream/iam/aws-managed/ (see the README there)");
  });

  it("catches a request the policies do not grant (the harness can fail)", async function () {
    const karpenter = tables.find((t) => t.principal === "karpenter")!;
    const out = await simulateAsRole(policies, karpenter.role, { action: "ec2:DeleteVpc", resource: "arn:aws:ec2:us-west-2:123456789012:vpc/vpc-0mock" });
    assert.equal(out.decision, "ImplicitlyDenied");
    await assert.rejects(simulateAsRole(policies, "no-such-role", { action: "s3:GetObject", resource: "arn:aws:s3:::x/y" }), /no inline policy attached to role 'no-such-role'/);
  });
});
