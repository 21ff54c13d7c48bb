/**
 * Where models and images live: three private, encrypted, TLS-only S3 buckets (models, versioned;
 * outputs; inputs), the Mountpoint for S3 CSI driver as an EKS add-on whose Pod Identity role can
 * touch only the outputs and inputs buckets, and the static PersistentVolumes that mount them.
 */
import * as aws from "@pulumi/aws";
import * as k8s from "@pulumi/kubernetes";
import * as pulumi from "@pulumi/pulumi";
import { PodIdentityRole, policyJson, Statement } from "../cluster/iam";

/** The container user ComfyUI runs as (image/Dockerfile); Mountpoint presents files as theirs. */
export const COMFYUI_UID = 1000;
export const COMFYUI_GID = 1000;

/**
 * The Mountpoint for S3 CSI driver add-on, pinned: an unpinned add-on takes whatever EKS calls the
 * default for the cluster version, so the driver could change under the outputs volume on any
 * cluster update. v2.7.0 is the driver release this program was written against
 * (awslabs/mountpoint-s3-csi-driver v2.7.0); the -eksbuild suffix is EKS's packaging number, which
 * cannot be resolved offline: `aws eks describe-addon-versions --addon-name aws-mountpoint-s3-csi-driver
 * --kubernetes-version <v>` lists the real ones, and config `mountpointAddonVersion` overrides this.
 */
export const MOUNTPOINT_ADDON_VERSION = "v2.7.0-eksbuild.1";

/**
 * The add-on's configuration values. `node.tolerateAllTaints` keeps the node DaemonSet on the GPU
 * nodes (tainted nvidia.com/gpu:NoSchedule): without the driver there, ComfyUI's outputs and inputs
 * volumes never mount. The chart's own default is already true (charts/aws-mountpoint-s3-csi-driver/
 * values.yaml at v2.7.0), but the add-on's defaults are EKS's to change; stating it makes it ours.
 */
export const MOUNTPOINT_ADDON_CONFIGURATION = { node: { tolerateAllTaints: true } } as const;

/** The driver's own service account in kube-system (the add-on's Pod Identity association names it). */
export const MOUNTPOINT_SERVICE_ACCOUNT = "s3-csi-driver-sa";

export interface StorageArgs {
  clusterName: pulumi.Input<string>;
  region: string;
  /** Namespace whose claims bind the volumes (the workload creates the claims). */
  namespace: string;
  /** Keep buckets and their data on `pulumi destroy` (default true). False empties and deletes them. */
  retainOnDestroy: boolean;
  /** Expire outputs after N days; 0 keeps them (default 0). */
  outputsExpireDays: number;
  /** Days a replaced/deleted model version is kept (default 30). */
  modelsNoncurrentDays: number;
  /** Mountpoint CSI add-on version. @defaultValue MOUNTPOINT_ADDON_VERSION */
  mountpointAddonVersion?: string;
  /** Resources the CSI add-on must wait for (system nodes, Pod Identity agent). */
  dependsOn: pulumi.Resource[];
  provider: k8s.Provider;
  tags: Record<string, string>;
}

interface SecureBucket {
  bucket: aws.s3.Bucket;
  name: pulumi.Output<string>;
  arn: pulumi.Output<string>;
}

export class Storage extends pulumi.ComponentResource {
  readonly modelsBucket: pulumi.Output<string>;
  readonly modelsBucketArn: pulumi.Output<string>;
  readonly modelsBucketResource: aws.s3.Bucket;
  readonly outputsBucket: pulumi.Output<string>;
  readonly outputsBucketArn: pulumi.Output<string>;
  readonly inputsBucket: pulumi.Output<string>;
  readonly inputsBucketArn: pulumi.Output<string>;
  /** Versioned bucket of the artists' saved state (workflows, settings), written by the gateway only. */
  readonly userdataBucket: pulumi.Output<string>;
  readonly userdataBucketArn: pulumi.Output<string>;
  /** PersistentVolume names the workload's claims bind to. */
  readonly outputsVolumeName: pulumi.Output<string>;
  readonly inputsVolumeName: pulumi.Output<string>;
  readonly csiAddon: aws.eks.Addon;

  constructor(name: string, args: StorageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:storage:Storage", name, {}, opts);

    const models = this.secureBucket(`${name}-models`, args, true);
    const outputs = this.secureBucket(`${name}-outputs`, args, false);
    const inputs = this.secureBucket(`${name}-inputs`, args, false);
    // Versioned: an overwritten or deleted workflow can be brought back for modelsNoncurrentDays.
    const userdata = this.secureBucket(`${name}-userdata`, args, true);

    new aws.s3.BucketLifecycleConfiguration(
      `${name}-models-lifecycle`,
      {
        bucket: models.bucket.id,
        rules: [
          { id: "expire-old-model-versions", status: "Enabled", filter: {}, noncurrentVersionExpiration: { noncurrentDays: args.modelsNoncurrentDays } },
          { id: "abort-incomplete-uploads", status: "Enabled", filter: {}, abortIncompleteMultipartUpload: { daysAfterInitiation: 7 } },
        ],
      },
      this.guardOptions(args),
    );
    for (const [key, b] of [["outputs", outputs], ["inputs", inputs], ["userdata", userdata]] as const) {
      const rules: aws.types.input.s3.BucketLifecycleConfigurationRule[] = [
        { id: "abort-incomplete-uploads", status: "Enabled", filter: {}, abortIncompleteMultipartUpload: { daysAfterInitiation: 7 } },
      ];
      if (key === "outputs" && args.outputsExpireDays > 0) {
        rules.push({ id: "expire-outputs", status: "Enabled", filter: {}, expiration: { days: args.outputsExpireDays } });
      }
      if (key === "outputs") {
        // The gateway's copies of temp previews (PreviewImage) are throwaway, like ComfyUI's temp folder.
        rules.push({ id: "expire-gateway-temp", status: "Enabled", filter: { prefix: "gateway/temp/" }, expiration: { days: 1 } });
      }
      if (key === "userdata") {
        rules.push({ id: "expire-old-userdata-versions", status: "Enabled", filter: {}, noncurrentVersionExpiration: { noncurrentDays: args.modelsNoncurrentDays } });
      }
      new aws.s3.BucketLifecycleConfiguration(`${name}-${key}-lifecycle`, { bucket: b.bucket.id, rules }, this.guardOptions(args));
    }

    // Mountpoint's driver-level identity: it reads and writes the outputs and inputs buckets, nothing else.
    const csiStatements: Statement[] = [
      { Sid: "ListMountedBuckets", Effect: "Allow", Action: "s3:ListBucket", Resource: [outputs.arn, inputs.arn] },
      {
        Sid: "ReadWriteMountedObjects",
        Effect: "Allow",
        Action: ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
        Resource: [pulumi.interpolate`${outputs.arn}/*`, pulumi.interpolate`${inputs.arn}/*`],
      },
    ];
    // The add-on creates the Pod Identity association itself (podIdentityAssociations below), so the
    // role comes without one: EKS refuses a second association for the same service account (409).
    const csiRole = new PodIdentityRole(
      `${name}-mountpoint`,
      {
        clusterName: args.clusterName,
        namespace: "kube-system",
        serviceAccount: MOUNTPOINT_SERVICE_ACCOUNT,
        statements: csiStatements,
        associate: false,
        tags: args.tags,
      },
      { parent: this },
    );
    this.csiAddon = new aws.eks.Addon(
      `${name}-mountpoint-csi`,
      {
        clusterName: args.clusterName,
        addonName: "aws-mountpoint-s3-csi-driver",
        addonVersion: args.mountpointAddonVersion ?? MOUNTPOINT_ADDON_VERSION,
        configurationValues: JSON.stringify(MOUNTPOINT_ADDON_CONFIGURATION),
        podIdentityAssociations: [{ roleArn: csiRole.roleArn, serviceAccount: MOUNTPOINT_SERVICE_ACCOUNT }],
        resolveConflictsOnCreate: "OVERWRITE",
        resolveConflictsOnUpdate: "OVERWRITE",
        tags: args.tags,
      },
      { parent: this, dependsOn: args.dependsOn },
    );

    const volume = (key: "outputs" | "inputs", bucket: SecureBucket, extraOptions: string[]) =>
      new k8s.core.v1.PersistentVolume(
        `${name}-${key}-pv`,
        {
          metadata: { name: `comfyui-${key}`, labels: { "app.kubernetes.io/part-of": "comfyui" } },
          spec: {
            capacity: { storage: "1Ti" }, // ignored by Mountpoint; required by the API
            accessModes: ["ReadWriteMany"],
            persistentVolumeReclaimPolicy: "Retain",
            storageClassName: "",
            claimRef: { namespace: args.namespace, name: `comfyui-${key}` },
            mountOptions: [
              `uid=${COMFYUI_UID}`,
              `gid=${COMFYUI_GID}`,
              "allow-other",
              // Auto-detecting the region needs IMDS hop limit 2; Karpenter nodes have 1.
              `region ${args.region}`,
              ...extraOptions,
            ],
            csi: {
              driver: "s3.csi.aws.com",
              volumeHandle: pulumi.interpolate`s3-${bucket.name}`,
              volumeAttributes: { bucketName: bucket.name },
            },
          },
        },
        { parent: this, provider: args.provider, dependsOn: [this.csiAddon] },
      );
    // Outputs: the uploader writes each file once; deleting from the UI is allowed.
    const outputsPv = volume("outputs", outputs, ["allow-delete"]);
    // Inputs: ComfyUI's upload endpoint may overwrite an image of the same name.
    const inputsPv = volume("inputs", inputs, ["allow-delete", "allow-overwrite"]);

    this.modelsBucket = models.name;
    this.modelsBucketArn = models.arn;
    this.modelsBucketResource = models.bucket;
    this.outputsBucket = outputs.name;
    this.outputsBucketArn = outputs.arn;
    this.inputsBucket = inputs.name;
    this.inputsBucketArn = inputs.arn;
    this.userdataBucket = userdata.name;
    this.userdataBucketArn = userdata.arn;
    this.outputsVolumeName = outputsPv.metadata.name;
    this.inputsVolumeName = inputsPv.metadata.name;
    this.registerOutputs({
      modelsBucket: this.modelsBucket,
      outputsBucket: this.outputsBucket,
      inputsBucket: this.inputsBucket,
      userdataBucket: this.userdataBucket,
      outputsVolumeName: this.outputsVolumeName,
      inputsVolumeName: this.inputsVolumeName,
    });
  }

  /**
   * Private, encrypted, owner-enforced, TLS-only; versioned when asked. A retained bucket keeps its
   * guards too: deleting the public-access block, TLS-only policy or encryption settings on
   * `pulumi destroy` would leave the data in the account without them.
   */
  private secureBucket(name: string, args: StorageArgs, versioned: boolean): SecureBucket {
    const parent = this.guardOptions(args);
    const bucket = new aws.s3.Bucket(
      name,
      { forceDestroy: !args.retainOnDestroy, tags: args.tags },
      { parent: this, retainOnDelete: args.retainOnDestroy },
    );
    new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-sse`,
      { bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" }, bucketKeyEnabled: true }] },
      parent,
    );
    const pab = new aws.s3.BucketPublicAccessBlock(
      `${name}-pab`,
      { bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      parent,
    );
    new aws.s3.BucketOwnershipControls(`${name}-ownership`, { bucket: bucket.id, rule: { objectOwnership: "BucketOwnerEnforced" } }, parent);
    new aws.s3.BucketPolicy(
      `${name}-tls-only`,
      {
        bucket: bucket.id,
        policy: policyJson([
          {
            Sid: "DenyInsecureTransport",
            Effect: "Deny",
            Principal: "*",
            Action: "s3:*",
            Resource: [bucket.arn, pulumi.interpolate`${bucket.arn}/*`],
            Condition: { Bool: { "aws:SecureTransport": "false" } },
          },
        ]),
      },
      { ...parent, dependsOn: [pab] },
    );
    if (versioned) {
      new aws.s3.BucketVersioning(`${name}-versioning`, { bucket: bucket.id, versioningConfiguration: { status: "Enabled" } }, parent);
    }
    return { bucket, name: bucket.bucket, arn: bucket.arn };
  }

  /** Options for a bucket's settings resources: retained exactly when the bucket is. */
  private guardOptions(args: StorageArgs): pulumi.CustomResourceOptions {
    return { parent: this, retainOnDelete: args.retainOnDestroy };
  }
}
