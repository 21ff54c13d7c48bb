import { strict as assert } from "node:assert";
import { DescribeInstancesCommand, EC2Client } from "@aws-sdk/client-ec2";
import { mockClient } from "aws-sdk-client-mock";
import { findNodeInstanceIds, nodeFilters } from "../../sync/nodes";
import { instanceIds, page } from "./helpers";

describe("sync/nodes", () => {
  const ec2Mock = mockClient(EC2Client);
  const ec2 = new EC2Client({ region: "us-east-1" });
  beforeEach(() => ec2Mock.reset());
  after(() => ec2Mock.restore());

  it("filters on running state, cluster tag and every NodePool", () => {
    assert.deepEqual(nodeFilters("comfyui-dev", ["gpu", "gpu-large"]), [
      { Name: "instance-state-name", Values: ["running"] },
      { Name: "tag:eks:eks-cluster-name", Values: ["comfyui-dev"] },
      { Name: "tag:karpenter.sh/nodepool", Values: ["gpu", "gpu-large"] },
    ]);
  });

  it("follows NextToken across pages and returns sorted, de-duplicated ids", async () => {
    const [a, b, c] = instanceIds(3);
    const pages = [page([c, a], "token-2"), page([b, a])];
    // The paginator reuses one input object, so record a copy of each request as it is made.
    const seen: { NextToken?: string; MaxResults?: number; Filters?: unknown }[] = [];
    ec2Mock.on(DescribeInstancesCommand).callsFake((input) => {
      seen.push({ ...input });
      return pages.shift();
    });
    assert.deepEqual(await findNodeInstanceIds(ec2, "comfyui-dev", ["gpu"]), [a, b, c]);
    assert.equal(ec2Mock.commandCalls(DescribeInstancesCommand).length, 2);
    assert.deepEqual(seen.map((s) => s.NextToken), [undefined, "token-2"]);
    for (const input of seen) {
      assert.deepEqual(input.Filters, nodeFilters("comfyui-dev", ["gpu"]));
      assert.equal(input.MaxResults, 1000);
    }
  });

  it("returns an empty list when nothing runs", async () => {
    ec2Mock.on(DescribeInstancesCommand).resolves({ Reservations: [] });
    assert.deepEqual(await findNodeInstanceIds(ec2, "comfyui-dev", ["gpu"]), []);
  });
});
