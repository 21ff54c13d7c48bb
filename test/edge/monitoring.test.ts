/**
 * The distribution's additional CloudWatch metrics (OriginLatency and the rest): one monitoring
 * subscription, Enabled, on this stack's distribution.
 */
import * as pulumi from "@pulumi/pulumi";
import { strict as assert } from "node:assert";
import { Edge } from "../../edge";
import { Recorder, installMocks, quiesce } from "../support/mocks";

describe("edge: CloudFront additional metrics", () => {
  const rec = new Recorder();
  before(async () => {
    installMocks(rec);
    new Edge("edgemon", { albName: pulumi.output("comfyui-edgemon"), priceClass: "PriceClass_100", tags: {} });
    await quiesce(rec);
  });

  it("one subscription, Enabled, targeting the distribution", () => {
    const sub = rec.one("aws:cloudfront/monitoringSubscription:MonitoringSubscription").inputs;
    const dist = rec.one("aws:cloudfront/distribution:Distribution");
    assert.equal(sub.distributionId, dist.id);
    assert.equal(sub.monitoringSubscription.realtimeMetricsSubscriptionConfig.realtimeMetricsSubscriptionStatus, "Enabled");
    // The check can fail: another resource's id or a disabled status are told apart.
    assert.notEqual(sub.distributionId, rec.one("aws:cloudfront/vpcOrigin:VpcOrigin").id);
    assert.notEqual("Disabled", sub.monitoringSubscription.realtimeMetricsSubscriptionConfig.realtimeMetricsSubscriptionStatus);
  });
});
