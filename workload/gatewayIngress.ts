/**
 * How the site reaches the gateway: an internal ALB made by the AWS Load Balancer Controller from one
 * Ingress, with its own security group that admits only CloudFront's VPC origins (when the edge is on),
 * and the NetworkPolicy that lets exactly the ALB, KEDA and the gateway's own replicas reach its pods
 * (the namespace denies all ingress by default, workload/networkPolicies.ts).
 *
 * These three were ComfyWorkload's children until the gateway became the stack's own component (issue
 * 20): they keep their names and name their old parent in `aliases`, so a deployed stack keeps its ALB.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { GATEWAY_ADMIN_PORT, GATEWAY_LABELS, GATEWAY_NAME, GATEWAY_PORT, GATEWAY_PUBLIC_HEALTH_PATH, type GatewayArgs } from "./gatewayNames";

/** The URN of the ComfyWorkload named `stackName`: where the gateway and these objects were before issue 20. */
export function formerGatewayParent(stackName: string): pulumi.Output<string> {
  return pulumi.createUrn(stackName, "comfyui:workload:ComfyWorkload");
}

export function createGatewayIngress(
  parent: pulumi.Resource,
  args: GatewayArgs,
  /** The gateway's Deployment and Service: the Ingress's backend. */
  backend: pulumi.Resource[],
): { albSg: aws.ec2.SecurityGroup; ingress: k8s.networking.v1.Ingress } {
  const name = args.stackName;
  const moved = { parent, aliases: [{ parent: formerGatewayParent(args.stackName) }] };
  const k = { ...moved, provider: args.provider };

  // The ALB's own security group: HTTP only from CloudFront's VPC-origin prefix list (when the edge is on).
  const albSg = new aws.ec2.SecurityGroup(
    `${name}-alb-sg`,
    {
      vpcId: args.vpcId,
      description: "ComfyUI internal ALB: reachable only from CloudFront VPC origins",
      ingress: args.albAllowedPrefixListId
        ? [{ protocol: "tcp", fromPort: 80, toPort: 80, prefixListIds: [args.albAllowedPrefixListId], description: "CloudFront origin-facing" }]
        : [],
      egress: [{ protocol: "tcp", fromPort: GATEWAY_PORT, toPort: GATEWAY_PORT, cidrBlocks: [args.vpcCidr], description: "to the gateway pods" }],
      tags: args.tags,
    },
    moved,
  );

  const ingress = new k8s.networking.v1.Ingress(
    `${name}-ingress`,
    {
      metadata: {
        name: "comfyui",
        namespace: args.namespace,
        annotations: {
          "alb.ingress.kubernetes.io/scheme": "internal",
          "alb.ingress.kubernetes.io/target-type": "ip",
          "alb.ingress.kubernetes.io/load-balancer-name": args.albName,
          "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}]',
          "alb.ingress.kubernetes.io/security-groups": albSg.id,
          "alb.ingress.kubernetes.io/manage-backend-security-group-rules": "true",
          // Only the Lease holder answers 200: the ALB sends every client to the leader.
          "alb.ingress.kubernetes.io/healthcheck-path": GATEWAY_PUBLIC_HEALTH_PATH,
          "alb.ingress.kubernetes.io/success-codes": "200",
          "alb.ingress.kubernetes.io/healthcheck-interval-seconds": "5",
          "alb.ingress.kubernetes.io/healthcheck-timeout-seconds": "3",
          "alb.ingress.kubernetes.io/healthy-threshold-count": "2",
          "alb.ingress.kubernetes.io/unhealthy-threshold-count": "2",
          // WebSockets of an artist's open tab stay up for an hour of silence (the ALB maximum is 4000 s).
          "alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=3600,routing.http.drop_invalid_header_fields.enabled=true",
          // No stickiness: the gateway holds the studio-wide queue, history and events, whoever asks.
          "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=30",
        },
      },
      spec: { ingressClassName: "alb", defaultBackend: { service: { name: GATEWAY_NAME, port: { number: GATEWAY_PORT } } } },
    },
    // The namespace (args.dependsOn) waits for the cluster, the Load Balancer Controller among it.
    { ...k, dependsOn: [...backend, albSg, ...args.dependsOn] },
  );

  new k8s.networking.v1.NetworkPolicy(
    `${name}-netpol-gateway`,
    {
      metadata: { name: "allow-alb-and-keda-to-gateway", namespace: args.namespace },
      spec: {
        podSelector: { matchLabels: GATEWAY_LABELS },
        policyTypes: ["Ingress"],
        ingress: [
          // The ALB lives in the VPC's subnets (its own security group admits only CloudFront).
          { from: [{ ipBlock: { cidr: args.vpcCidr } }], ports: [{ protocol: "TCP", port: GATEWAY_PORT }] },
          // The internal port: KEDA's figure, and the replica link between the gateway's own pods.
          { from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "keda" } } }], ports: [{ protocol: "TCP", port: GATEWAY_ADMIN_PORT }] },
          { from: [{ podSelector: { matchLabels: GATEWAY_LABELS } }], ports: [{ protocol: "TCP", port: GATEWAY_ADMIN_PORT }] },
        ],
      },
    },
    { ...k, dependsOn: args.dependsOn },
  );
  return { albSg, ingress };
}
