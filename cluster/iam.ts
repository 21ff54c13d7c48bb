/**
 * IAM building blocks shared by every component: policy documents are plain data (testable as
 * JSON), roles are assumed through EKS Pod Identity or by EC2, never by long-lived keys.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";

export interface Statement {
  Sid?: string;
  Effect: "Allow" | "Deny";
  Action: string | string[];
  Resource: pulumi.Input<string> | pulumi.Input<string>[];
  Condition?: Record<string, Record<string, pulumi.Input<string> | pulumi.Input<string>[]>>;
  Principal?: unknown;
}

/** Serialises statements, resolving any Output inside them. */
export function policyJson(statements: Statement[]): pulumi.Output<string> {
  return pulumi.output({ Version: "2012-10-17", Statement: statements }).apply((doc) => JSON.stringify(doc));
}

/** Trust policy for EKS Pod Identity (the agent calls AssumeRole + TagSession). */
export const POD_IDENTITY_TRUST = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Effect: "Allow", Principal: { Service: "pods.eks.amazonaws.com" }, Action: ["sts:AssumeRole", "sts:TagSession"] },
  ],
});

export interface PodIdentityRoleArgs {
  clusterName: pulumi.Input<string>;
  namespace: string;
  serviceAccount: string;
  /** Inline least-privilege statements. */
  statements: Statement[];
  /**
   * Create the standalone Pod Identity association. EKS allows one association per cluster +
   * namespace + service account (a second one is a 409 ResourceInUseException), so set this to
   * false when an EKS add-on creates it through its `podIdentityAssociations`.
   * @defaultValue true
   */
  associate?: boolean;
  tags?: Record<string, string>;
}

/** A role for one Kubernetes service account, its inline policy and the Pod Identity association. */
export class PodIdentityRole extends pulumi.ComponentResource {
  readonly role: aws.iam.Role;
  readonly roleArn: pulumi.Output<string>;
  /** Undefined when `associate` is false (an add-on owns the association). */
  readonly association?: aws.eks.PodIdentityAssociation;

  constructor(name: string, args: PodIdentityRoleArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:cluster:PodIdentityRole", name, {}, opts);
    this.role = new aws.iam.Role(`${name}-role`, { assumeRolePolicy: POD_IDENTITY_TRUST, tags: args.tags }, { parent: this });
    new aws.iam.RolePolicy(`${name}-policy`, { role: this.role.name, policy: policyJson(args.statements) }, { parent: this });
    if (args.associate ?? true) {
      this.association = new aws.eks.PodIdentityAssociation(
        `${name}-assoc`,
        { clusterName: args.clusterName, namespace: args.namespace, serviceAccount: args.serviceAccount, roleArn: this.role.arn, tags: args.tags },
        { parent: this },
      );
    }
    this.roleArn = this.role.arn;
    this.registerOutputs({ roleArn: this.roleArn });
  }
}

/** ARN prefix helpers so statements name this account and region, not `*`. */
export function arnPrefix(service: string, region: pulumi.Input<string>, account: pulumi.Input<string>): pulumi.Output<string> {
  return pulumi.interpolate`arn:aws:${service}:${region}:${account}`;
}
