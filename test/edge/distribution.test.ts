/**
 * The Edge component under mocks: what CloudFront is told about caching errors and paths, and how
 * long Pulumi waits on the distribution and its VPC origin.
 */
import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { EDGE_TIMEOUTS, ERROR_CACHING_CODES, Edge, MANAGED_POLICIES } from "../../edge";
import { Recorder, installMocks, quiesce } from "../support/mocks";

const rec = new Recorder();

/** Go duration strings as the provider parses them ("90m", "1h30m") to minutes. */
function minutes(d: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m)?$/.exec(d);
  assert.ok(m && (m[1] || m[2]), `not a duration: ${d}`);
  return Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0);
}

describe("edge: CloudFront distribution", () => {
  before(async () => {
    installMocks(rec);
    new Edge("edgetest", { albName: pulumi.output("comfyui-edgetest"), priceClass: "PriceClass_100", tags: {} });
    await quiesce(rec);
  });

  it("turns error caching off for every status code CloudFront caches", () => {
    const d = rec.one("aws:cloudfront/distribution:Distribution").inputs;
    const byCode = new Map<number, any>((d.customErrorResponses ?? []).map((r: any) => [r.errorCode, r]));
    for (const code of [400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504]) {
      const r = byCode.get(code);
      assert.ok(r, `no customErrorResponse for ${code}: CloudFront would cache it for 10 s`);
      assert.equal(r.errorCachingMinTtl, 0, String(code));
      // Only the caching changes: no substituted page or status code.
      assert.equal(r.responseCode, undefined);
      assert.equal(r.responsePagePath, undefined);
    }
    assert.equal(byCode.size, ERROR_CACHING_CODES.length);
  });

  it("caches no path: every behaviour uses CachingDisabled", () => {
    const d = rec.one("aws:cloudfront/distribution:Distribution").inputs;
    const behaviors = [d.defaultCacheBehavior, ...(d.orderedCacheBehaviors ?? [])];
    for (const b of behaviors) assert.equal(b.cachePolicyId, MANAGED_POLICIES.cachingDisabled, b.pathPattern ?? "default");
    assert.ok(!(d.orderedCacheBehaviors ?? []).some((b: any) => String(b.pathPattern).startsWith("/assets")));
  });

  it("gives the VPC origin its timeouts in the block the provider reads, beyond the 15-minute default", () => {
    const vo = rec.one("aws:cloudfront/vpcOrigin:VpcOrigin").inputs;
    assert.deepEqual(vo.timeouts, EDGE_TIMEOUTS.vpcOrigin);
    for (const op of ["create", "update", "delete"] as const) {
      assert.ok(minutes(EDGE_TIMEOUTS.vpcOrigin[op]) > 15, `vpcOrigin ${op}`);
      // The provider's own waiter for a distribution is 90 minutes; Pulumi must not cut it short.
      assert.ok(minutes(EDGE_TIMEOUTS.distribution[op]) >= 90, `distribution ${op}`);
    }
  });

  it("the duration parser used above refuses what the provider would refuse", () => {
    assert.throws(() => minutes("90"), /not a duration/);
    assert.equal(minutes("1h30m"), 90);
  });
});
