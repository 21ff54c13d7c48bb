/**
 * The network and the Kubernetes cluster every other component runs on: VPC (private nodes, S3
 * gateway endpoint), EKS with API authentication and control-plane logs, a managed CPU system
 * node group, the core EKS add-ons, the Kubernetes provider, and the add-ons from Helm charts
 * (addons.ts): the AWS Load Balancer Controller, the NVIDIA device plugin and KEDA.
 */
import * as aws from "@pulumi/aws";
import * as awsx from "@pulumi/awsx";
import * as eks from "@pulumi/eks";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { RETENTION_DAYS } from "../observability";
import { createPlatformLogGroups } from "./logGroups";
import { createDevicePlugin, createKeda, createLoadBalancerController } from "./addons";

export { PodIdentityRole, policyJson, POD_IDENTITY_TRUST, Statement } from "./iam";

import { SYSTEM_NODE_LABEL } from "./nodeLabels";
export { SYSTEM_NODE_LABEL } from "./nodeLabels";
/** IMDS hops for the system nodes: 1 keeps instance credentials away from pods (see the launch template). */
export const SYSTEM_NODE_IMDS_HOP_LIMIT = 1;

export interface ClusterArgs {
  /** Physical EKS cluster name (stack-scoped, e.g. comfyui-dev). */
  clusterName: string;
  region: string;
  /** EKS Kubernetes version, e.g. "1.34". */
  kubernetesVersion: string;
  /** 2 or 3 availability zones. */
  availabilityZones: number;
  /** VPC CIDR, /16–/20. */
  vpcCidr: string;
  /** "single" NAT gateway (default, cheaper) or one per AZ. */
  natGateways: "single" | "onePerAz";
  /** CIDRs allowed to reach the public API endpoint. */
  apiAllowedCidrs: string[];
  /** Instance type of the system node group. */
  systemNodeInstanceType: string;
  /** Number of system nodes. */
  systemNodeCount: number;
  /** Tags for every AWS resource. */
  tags: Record<string, string>;
  /** Days to keep the control plane's logs (a CloudWatch Logs retention value). @defaultValue 30 */
  logRetentionDays?: number;
  /**
   * Also create the platform's own log groups with the same retention: the metrics group (EMF lines
   * from the gateway and every GPU node's boot, contracts/metrics.ts) and the audit trail (one JSON
   * line per state change: who, what, from where). Named `${stackName}-metrics` / `-audit`, the names
   * they had when index.ts made them. @defaultValue unset: neither
   */
  platformLogGroups?: { stackName: string };
}

/** The log group EKS writes control plane logs to ("Send control plane logs to CloudWatch Logs", EKS User Guide). */
export function controlPlaneLogGroupName(clusterName: string): string {
  return `/aws/eks/${clusterName}/cluster`;
}

export class Cluster extends pulumi.ComponentResource {
  readonly clusterName: pulumi.Output<string>;
  readonly vpcId: pulumi.Output<string>;
  readonly privateSubnetIds: pulumi.Output<string[]>;
  readonly vpcCidr: string;
  /** The availability zones the VPC's subnets are in: the region's first N available zones, as awsx picks them. */
  readonly availabilityZones: pulumi.Output<string[]>;
  /** The EKS-managed cluster security group: system and GPU nodes both use it. */
  readonly clusterSecurityGroupId: pulumi.Output<string>;
  /** Kubeconfig (secret: it names the cluster endpoint and CA). */
  readonly kubeconfig: pulumi.Output<string>;
  readonly provider: k8s.Provider;
  readonly accountId: pulumi.Output<string>;
  /** Resources a Kubernetes workload must wait for (nodes, CoreDNS, Pod Identity agent, LB controller). */
  readonly ready: pulumi.Resource[];
  /** KEDA (its operator and metrics server): the workload's ScaledObject waits for it. */
  readonly keda: k8s.helm.v3.Release;
  /** The metrics log group (platformLogGroups), where the gateway and GPU nodes write EMF. */
  readonly metricsLogGroup?: aws.cloudwatch.LogGroup;
  /** The audit trail's log group (platformLogGroups). */
  readonly auditLogGroup?: aws.cloudwatch.LogGroup;

  constructor(name: string, args: ClusterArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:cluster:Cluster", name, {}, opts);
    const parent = { parent: this };
    const prefix = Number(args.vpcCidr.split("/")[1]);

    const vpc = new awsx.ec2.Vpc(
      `${name}-vpc`,
      {
        cidrBlock: args.vpcCidr,
        numberOfAvailabilityZones: args.availabilityZones,
        enableDnsHostnames: true,
        natGateways: { strategy: args.natGateways === "single" ? awsx.ec2.NatGatewayStrategy.Single : awsx.ec2.NatGatewayStrategy.OnePerAz },
        subnetStrategy: awsx.ec2.SubnetAllocationStrategy.Auto,
        subnetSpecs: [
          {
            // Nodes and pods (VPC CNI gives every pod a VPC address, hence the large block).
            type: awsx.ec2.SubnetType.Private,
            cidrMask: prefix + 2,
            tags: { "kubernetes.io/role/internal-elb": "1", "karpenter.sh/discovery": args.clusterName },
          },
          // Public subnets hold only the NAT gateway(s); CloudFront's VPC origin also needs the internet gateway.
          { type: awsx.ec2.SubnetType.Public, cidrMask: prefix + 5, tags: { "kubernetes.io/role/elb": "1" } },
        ],
        tags: args.tags,
      },
      parent,
    );

    // Model, image-layer and output traffic to S3 skips the NAT gateway (and its per-GB charge).
    const routeTables = aws.ec2.getRouteTablesOutput({ vpcId: vpc.vpcId }, parent);
    new aws.ec2.VpcEndpoint(
      `${name}-s3`,
      { vpcId: vpc.vpcId, serviceName: `com.amazonaws.${args.region}.s3`, vpcEndpointType: "Gateway", routeTableIds: routeTables.ids, tags: args.tags },
      parent,
    );

    // Created before the cluster so EKS writes into a group with our retention; left to EKS, the
    // group it creates keeps every log forever.
    const retention = args.logRetentionDays ?? 30;
    if (!(RETENTION_DAYS as readonly number[]).includes(retention)) {
      throw new pulumi.InputPropertyError({ propertyPath: "logRetentionDays", reason: `must be one of ${RETENTION_DAYS.join(", ")}, got ${retention}` });
    }
    const controlPlaneLogs = new aws.cloudwatch.LogGroup(
      `${name}-eks-logs`,
      { name: controlPlaneLogGroupName(args.clusterName), retentionInDays: retention, tags: args.tags },
      parent,
    );

    if (args.platformLogGroups) {
      ({ metrics: this.metricsLogGroup, audit: this.auditLogGroup } = createPlatformLogGroups(args.platformLogGroups.stackName, this, args.clusterName, retention, args.tags));
    }

    const cluster = new eks.Cluster(
      `${name}-eks`,
      {
        name: args.clusterName,
        version: args.kubernetesVersion,
        vpcId: vpc.vpcId,
        privateSubnetIds: vpc.privateSubnetIds,
        publicSubnetIds: vpc.publicSubnetIds,
        authenticationMode: eks.AuthenticationMode.Api,
        skipDefaultNodeGroup: true,
        skipDefaultSecurityGroups: true,
        // Add-ons are managed explicitly below, so their versions and order are ours.
        bootstrapSelfManagedAddons: false,
        useDefaultVpcCni: true,
        corednsAddonOptions: { enabled: false },
        kubeProxyAddonOptions: { enabled: false },
        createOidcProvider: false,
        endpointPrivateAccess: true,
        endpointPublicAccess: true,
        publicAccessCidrs: args.apiAllowedCidrs,
        nodeAssociatePublicIpAddress: false,
        enabledClusterLogTypes: ["api", "audit", "authenticator", "controllerManager", "scheduler"],
        tags: args.tags,
      },
      { parent: this, dependsOn: [controlPlaneLogs] },
    );

    this.clusterName = cluster.eksCluster.apply((c) => c.name);
    this.vpcId = vpc.vpcId;
    this.privateSubnetIds = vpc.privateSubnetIds;
    this.vpcCidr = args.vpcCidr;
    this.availabilityZones = aws
      .getAvailabilityZonesOutput({ state: "available" }, parent)
      .names.apply((names) => names.slice(0, args.availabilityZones));
    this.clusterSecurityGroupId = cluster.clusterSecurityGroupId;
    this.kubeconfig = pulumi.secret(cluster.kubeconfigJson);
    this.accountId = aws.getCallerIdentityOutput({}, parent).accountId;

    this.provider = new k8s.Provider(`${name}-k8s`, { kubeconfig: cluster.kubeconfigJson, enableServerSideApply: true }, parent);

    const addon = (addonName: string, extra: Partial<aws.eks.AddonArgs>, dependsOn: pulumi.Resource[]) =>
      new aws.eks.Addon(
        `${name}-${addonName}`,
        { clusterName: this.clusterName, addonName, resolveConflictsOnCreate: "OVERWRITE", resolveConflictsOnUpdate: "OVERWRITE", tags: args.tags, ...extra },
        { parent: this, dependsOn },
      );
    // The CNI and kube-proxy must exist before nodes can become Ready.
    // The network policy agent enforces the workload's NetworkPolicies.
    const vpcCni = addon("vpc-cni", { configurationValues: JSON.stringify({ enableNetworkPolicy: "true" }) }, [cluster]);
    const kubeProxy = addon("kube-proxy", {}, [cluster]);
    const podIdentityAgent = addon("eks-pod-identity-agent", {}, [cluster]);

    const nodeRole = new aws.iam.Role(
      `${name}-system-node-role`,
      { assumeRolePolicy: JSON.stringify({ Version: "2012-10-17", Statement: [{ Effect: "Allow", Principal: { Service: "ec2.amazonaws.com" }, Action: "sts:AssumeRole" }] }), tags: args.tags },
      parent,
    );
    const nodePolicies = [
      "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
      "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
      "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
    ].map((policyArn, i) => new aws.iam.RolePolicyAttachment(`${name}-system-node-policy-${["worker", "cni", "ecr"][i]}`, { role: nodeRole.name, policyArn }, parent));

    // Pods on the system nodes must not borrow the node role: IMDSv2 only, with a hop limit of 1 so a
    // response never reaches a pod's network namespace (EKS Best Practices, Security, "Restrict access to
    // the instance profile assigned to the worker node"). Everything there that calls AWS uses Pod
    // Identity (the LB controller, Karpenter, the gateway, the add-ons); host-network pods (the CNI, the
    // Pod Identity agent, fluent-bit) are one hop away and keep working. The template sets nothing else, so
    // EKS still picks the AMI and writes the bootstrap (EKS User Guide, "Customize managed nodes with
    // launch templates": an AMI-less template gets EKS's own user data merged in).
    const systemTemplate = new aws.ec2.LaunchTemplate(
      `${name}-system`,
      {
        metadataOptions: { httpEndpoint: "enabled", httpTokens: "required", httpPutResponseHopLimit: SYSTEM_NODE_IMDS_HOP_LIMIT },
        tagSpecifications: [{ resourceType: "instance", tags: args.tags }],
        tags: args.tags,
      },
      parent,
    );
    // A managed node group gets its EKS access entry from EKS itself.
    const systemNodes = new aws.eks.NodeGroup(
      `${name}-system`,
      {
        clusterName: this.clusterName,
        nodeRoleArn: nodeRole.arn,
        subnetIds: vpc.privateSubnetIds,
        instanceTypes: [args.systemNodeInstanceType],
        amiType: "AL2023_x86_64_STANDARD",
        capacityType: "ON_DEMAND",
        scalingConfig: { desiredSize: args.systemNodeCount, minSize: args.systemNodeCount, maxSize: args.systemNodeCount + 1 },
        updateConfig: { maxUnavailable: 1 },
        labels: { ...SYSTEM_NODE_LABEL },
        launchTemplate: { id: systemTemplate.id, version: systemTemplate.latestVersion.apply(String) },
        tags: args.tags,
      },
      { parent: this, dependsOn: [vpcCni, kubeProxy, ...nodePolicies] },
    );
    const coredns = addon("coredns", {}, [systemNodes]);

    const lbController = createLoadBalancerController(
      name,
      this,
      this.provider,
      { clusterName: this.clusterName, region: args.region, vpcId: vpc.vpcId, accountId: this.accountId, tags: args.tags },
      [coredns, podIdentityAgent, systemNodes],
    );

    const devicePlugin = createDevicePlugin(name, this, this.provider, [systemNodes, coredns]);
    this.keda = createKeda(name, this, this.provider, [systemNodes, coredns, podIdentityAgent, lbController, devicePlugin]);

    this.ready = [systemNodes, coredns, podIdentityAgent, lbController, devicePlugin];
    this.registerOutputs({
      clusterName: this.clusterName,
      vpcId: this.vpcId,
      privateSubnetIds: this.privateSubnetIds,
      clusterSecurityGroupId: this.clusterSecurityGroupId,
      kubeconfig: this.kubeconfig,
    });
  }
}
