/**
 * The front door: CloudFront (HTTPS for viewers, WebSockets through, no caching of ComfyUI's
 * dynamic routes) whose only origin is the Ingress's internal ALB, reached through a CloudFront
 * VPC origin — the ALB has no public address at all. The edge knows no password: every request is
 * checked by the gateway (OpenID Connect sessions and API keys, workload/gateway/auth), which sees the
 * viewer's cookies, Authorization header, Origin and Host (the all-viewer origin request policy).
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

/** AWS-managed CloudFront policies (ids are global constants documented by CloudFront). */
export const MANAGED_POLICIES = {
  cachingDisabled: "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
  allViewer: "216adef6-5c7f-47e4-b989-5492eafa07d3",
} as const;

/**
 * Every 4xx/5xx code CloudFront caches (DG "HTTP 4xx and 5xx status codes that CloudFront caches";
 * 416 is accepted but never cached, per DG custom-error-pages-expiration). Without an entry each is
 * cached for 10 s, so a "not ready yet" 502/503/504 from the ALB outlives the condition.
 */
export const ERROR_CACHING_CODES = [400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504] as const;

/** customErrorResponses that only turn error caching off (no page substitution, origin's code kept). */
export function noErrorCaching(): { errorCode: number; errorCachingMinTtl: number }[] {
  return ERROR_CACHING_CODES.map((errorCode) => ({ errorCode, errorCachingMinTtl: 0 }));
}

/**
 * How long `pulumi up`/`destroy` waits on the slow CloudFront resources.
 * - VPC origin: AWS documents no duration (CreateVpcOrigin/DeleteVpcOrigin are asynchronous,
 *   Deploying -> Deployed); the upstream provider's default is 15 min
 *   (terraform-provider-aws internal/service/cloudfront/vpc_origin.go, SetDefault*Timeout(15m)) and
 *   creates have been seen to exceed it (terraform-aws-modules/terraform-aws-cloudfront#163). The
 *   distribution's own ceiling (below) is used for it too.
 * - Distribution: the provider waits for Deployed for a fixed 90 min
 *   (terraform-provider-aws internal/service/cloudfront/distribution.go, waitDistributionDeployed),
 *   the figure AWS gave for a full propagation (cited by terraform-provider-aws#9642).
 */
export const EDGE_TIMEOUTS = {
  vpcOrigin: { create: "90m", update: "90m", delete: "90m" },
  distribution: { create: "90m", update: "90m", delete: "90m" },
} as const;

/** CloudFront's origin-facing prefix list: the only source the ALB's security group admits. */
export function cloudFrontOriginPrefixListId(opts?: pulumi.InvokeOptions): pulumi.Output<string> {
  return aws.ec2.getManagedPrefixListOutput({ name: "com.amazonaws.global.cloudfront.origin-facing" }, opts).id;
}

export interface EdgeArgs {
  /** Name of the ALB the Ingress produced (an Output that resolves once the ALB exists). */
  albName: pulumi.Input<string>;
  priceClass: string;
  tags: Record<string, string>;
}

export class Edge extends pulumi.ComponentResource {
  readonly url: pulumi.Output<string>;
  readonly domainName: pulumi.Output<string>;
  readonly distributionId: pulumi.Output<string>;
  /** The ALB's ARN, as the VPC origin uses it. */
  readonly albArn: pulumi.Output<string>;

  constructor(name: string, args: EdgeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:edge:Edge", name, {}, opts);
    const parent = { parent: this };

    const alb = aws.lb.getLoadBalancerOutput({ name: args.albName }, parent);
    this.albArn = alb.arn;

    const vpcOrigin = new aws.cloudfront.VpcOrigin(
      `${name}-vpc-origin`,
      {
        vpcOriginEndpointConfig: {
          name: pulumi.interpolate`${args.albName}`,
          arn: alb.arn,
          httpPort: 80,
          httpsPort: 443,
          // Private path inside AWS's network from CloudFront to the internal ALB; viewers get HTTPS.
          originProtocolPolicy: "http-only",
          originSslProtocols: { items: ["TLSv1.2"], quantity: 1 },
        },
        // The VPC origin is a plugin-framework resource: it reads its timeouts from this block
        // (customTimeouts are not passed to such resources yet, pulumi-terraform-bridge#827).
        timeouts: EDGE_TIMEOUTS.vpcOrigin,
        tags: args.tags,
      },
      { parent: this, customTimeouts: EDGE_TIMEOUTS.vpcOrigin },
    );

    const allMethods = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"];
    const distribution = new aws.cloudfront.Distribution(
      `${name}-cdn`,
      {
        enabled: true,
        comment: "ComfyUI",
        priceClass: args.priceClass,
        httpVersion: "http2and3",
        isIpv6Enabled: true,
        origins: [
          {
            originId: "comfyui-alb",
            domainName: alb.dnsName,
            // Generations can take minutes before ComfyUI answers a synchronous call; WebSockets are unaffected.
            vpcOriginConfig: { vpcOriginId: vpcOrigin.id, originReadTimeout: 60, originKeepaliveTimeout: 60 },
          },
        ],
        defaultCacheBehavior: {
          targetOriginId: "comfyui-alb",
          viewerProtocolPolicy: "redirect-to-https",
          allowedMethods: allMethods,
          cachedMethods: ["GET", "HEAD"],
          compress: true,
          // Queue, history, uploads, WebSockets: never cached; every viewer header (Sec-WebSocket-*, cookies) forwarded.
          cachePolicyId: MANAGED_POLICIES.cachingDisabled,
          originRequestPolicyId: MANAGED_POLICIES.allViewer,
        },
        // No cached path (an earlier /assets/* behaviour): ComfyUI sends its JS/CSS with
        // Cache-Control: no-cache (server.py cache_control middleware), so caching gained nothing and
        // could serve two frontend versions side by side during a rollout.
        customErrorResponses: noErrorCaching(),
        restrictions: { geoRestriction: { restrictionType: "none" } },
        viewerCertificate: { cloudfrontDefaultCertificate: true },
        tags: args.tags,
      },
      { parent: this, customTimeouts: EDGE_TIMEOUTS.distribution },
    );

    // Additional metrics (OriginLatency, CacheHitRate, error rates per status): the dashboard's
    // origin-latency graph needs them, and CloudFront bills them per metric (docs/costs.md).
    new aws.cloudfront.MonitoringSubscription(
      `${name}-metrics`,
      { distributionId: distribution.id, monitoringSubscription: { realtimeMetricsSubscriptionConfig: { realtimeMetricsSubscriptionStatus: "Enabled" } } },
      { parent: this },
    );

    this.domainName = distribution.domainName;
    this.distributionId = distribution.id;
    this.url = pulumi.interpolate`https://${distribution.domainName}`;
    this.registerOutputs({ url: this.url, distributionId: this.distributionId, albArn: this.albArn });
  }
}
