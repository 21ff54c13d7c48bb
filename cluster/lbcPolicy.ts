/**
 * The AWS Load Balancer Controller's permissions: the actions of its published IAM policy
 * (docs/install/iam_policy.json of the release we install), re-expressed with tighter scope —
 * ARNs of this account and region, and every mutating action conditioned on the tag the controller
 * puts on what it creates (elbv2.k8s.aws/cluster = this cluster). WAF, Shield, ACM and Cognito
 * actions are left out because this program turns those integrations off in the chart values.
 * Checked statement by statement against docs/install/iam_policy.json at
 * kubernetes-sigs/aws-load-balancer-controller v3.5.0 (the appVersion of chart 3.5.0); what ours
 * leaves out and why is the table in test/iam/upstream.test.ts.
 */
import * as pulumi from "@pulumi/pulumi";
import { Statement } from "./iam";

export function lbcStatements(clusterName: pulumi.Input<string>, region: pulumi.Input<string>, account: pulumi.Input<string>): Statement[] {
  const owned = { StringEquals: { "aws:ResourceTag/elbv2.k8s.aws/cluster": clusterName } };
  const elb = pulumi.interpolate`arn:aws:elasticloadbalancing:${region}:${account}`;
  const ec2 = pulumi.interpolate`arn:aws:ec2:${region}:${account}`;
  return [
    {
      Sid: "ServiceLinkedRoleForElb",
      Effect: "Allow",
      Action: "iam:CreateServiceLinkedRole",
      Resource: pulumi.interpolate`arn:aws:iam::${account}:role/aws-service-role/elasticloadbalancing.amazonaws.com/*`,
      Condition: { StringEquals: { "iam:AWSServiceName": "elasticloadbalancing.amazonaws.com" } },
    },
    {
      // Describe*/Get* calls of EC2 and ELBv2 do not support resource-level permissions: "*" is required.
      Sid: "ReadOnlyDiscovery",
      Effect: "Allow",
      Action: [
        "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones", "ec2:DescribeInternetGateways",
        "ec2:DescribeVpcs", "ec2:DescribeVpcPeeringConnections", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
        "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces", "ec2:DescribeTags", "ec2:DescribeRouteTables",
        "ec2:DescribeIpamPools", "ec2:GetCoipPoolUsage", "ec2:DescribeCoipPools", "ec2:GetSecurityGroupsForVpc",
        "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeListenerCertificates",
        "elasticloadbalancing:DescribeListenerAttributes", "elasticloadbalancing:DescribeSSLPolicies",
        "elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes", "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTrustStores",
        "elasticloadbalancing:DescribeCapacityReservation",
      ],
      Resource: "*",
    },
    {
      Sid: "CreateSecurityGroupsInVpc",
      Effect: "Allow",
      Action: "ec2:CreateSecurityGroup",
      Resource: [pulumi.interpolate`${ec2}:security-group/*`, pulumi.interpolate`${ec2}:vpc/*`],
    },
    {
      Sid: "TagSecurityGroupsOnCreate",
      Effect: "Allow",
      Action: "ec2:CreateTags",
      Resource: pulumi.interpolate`${ec2}:security-group/*`,
      Condition: { StringEquals: { "ec2:CreateAction": "CreateSecurityGroup", "aws:RequestTag/elbv2.k8s.aws/cluster": clusterName } },
    },
    {
      // Retagging its own groups, but never moving one to another cluster: like upstream, a request
      // may not carry the cluster tag itself (it is only set when the group is created).
      Sid: "RetagOwnSecurityGroups",
      Effect: "Allow",
      Action: ["ec2:CreateTags", "ec2:DeleteTags"],
      Resource: pulumi.interpolate`${ec2}:security-group/*`,
      Condition: { ...owned, Null: { "aws:RequestTag/elbv2.k8s.aws/cluster": "true" } },
    },
    {
      Sid: "ManageOwnSecurityGroups",
      Effect: "Allow",
      Action: ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress", "ec2:DeleteSecurityGroup"],
      Resource: pulumi.interpolate`${ec2}:security-group/*`,
      Condition: owned,
    },
    {
      // Rules on the node/cluster security groups let the ALB reach pod IPs; those groups are not
      // tagged by the controller, so this is limited to security groups of this VPC's account/region.
      Sid: "OpenBackendPorts",
      Effect: "Allow",
      Action: ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
      Resource: pulumi.interpolate`${ec2}:security-group/*`,
    },
    {
      Sid: "CreateTaggedLoadBalancersAndTargetGroups",
      Effect: "Allow",
      Action: ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
      Resource: [pulumi.interpolate`${elb}:loadbalancer/*`, pulumi.interpolate`${elb}:targetgroup/*`],
      Condition: { StringEquals: { "aws:RequestTag/elbv2.k8s.aws/cluster": clusterName } },
    },
    {
      Sid: "TagOnCreate",
      Effect: "Allow",
      Action: "elasticloadbalancing:AddTags",
      Resource: [pulumi.interpolate`${elb}:loadbalancer/*`, pulumi.interpolate`${elb}:targetgroup/*`, pulumi.interpolate`${elb}:listener/*`, pulumi.interpolate`${elb}:listener-rule/*`],
      Condition: { StringEquals: { "elasticloadbalancing:CreateAction": ["CreateLoadBalancer", "CreateTargetGroup", "CreateListener", "CreateRule"] } },
    },
    {
      // As upstream: tags of its own load balancers and target groups change, the cluster tag never.
      Sid: "RetagOwnLoadBalancers",
      Effect: "Allow",
      Action: ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
      Resource: [pulumi.interpolate`${elb}:loadbalancer/*`, pulumi.interpolate`${elb}:targetgroup/*`],
      Condition: { ...owned, Null: { "aws:RequestTag/elbv2.k8s.aws/cluster": "true" } },
    },
    {
      Sid: "ManageOwnLoadBalancers",
      Effect: "Allow",
      Action: [
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "elasticloadbalancing:SetIpAddressType", "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
        "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
        "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:ModifyCapacityReservation",
      ],
      Resource: [pulumi.interpolate`${elb}:loadbalancer/*`, pulumi.interpolate`${elb}:targetgroup/*`],
      Condition: owned,
    },
    {
      // ModifyListenerAttributes names a listener ARN (not its load balancer). The controller tags
      // its listeners with the cluster tag on CreateListener (pkg/deploy/elbv2/listener_manager.go,
      // feature gate ListenerRulesTagging, on by default in pkg/config/feature_gates.go, v3.5.0).
      Sid: "ModifyOwnListenerAttributes",
      Effect: "Allow",
      Action: "elasticloadbalancing:ModifyListenerAttributes",
      Resource: pulumi.interpolate`${elb}:listener/app/*`,
      Condition: owned,
    },
    {
      // SetRulePriorities takes listener-rule ARNs: the rule synthesizer reorders rules with it
      // (pkg/deploy/elbv2/listener_rule_manager.go, v3.5.0).
      Sid: "ManageListenersAndRulesOfOwnLoadBalancers",
      Effect: "Allow",
      Action: [
        "elasticloadbalancing:DeleteListener", "elasticloadbalancing:ModifyListener", "elasticloadbalancing:CreateRule", "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:ModifyRule", "elasticloadbalancing:SetRulePriorities", "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
      ],
      Resource: [pulumi.interpolate`${elb}:listener/app/*`, pulumi.interpolate`${elb}:listener-rule/app/*`],
    },
    {
      Sid: "RegisterPodTargets",
      Effect: "Allow",
      Action: ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"],
      Resource: pulumi.interpolate`${elb}:targetgroup/*`,
      Condition: owned,
    },
  ];
}
