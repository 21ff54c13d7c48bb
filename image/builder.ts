/**
 * ImageBuilder: the stack's own CodeBuild project, which builds every image the stack deploys in
 * the stack's region and pushes it to ECR. Per image: its build context as a deterministic zip in a
 * private, encrypted bucket (key = content hash), and an ImageBuild (image/provider.ts) that runs
 * the build during `pulumi up` and yields repo@sha256:…. Unchanged files, build args and Dockerfile
 * mean the same key, no build, the same digest and so no rollout.
 */
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { secureBucketSettings } from "../storage";
import { IMAGES } from "../versions";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AwsSettings, ConfigReader, stackAwsSettings } from "./awsSettings";
import { buildspecYaml, encodeBuildArgs } from "./buildspec";
import { collectContext, contextArchive, contextHash } from "./context";
import { ImageBuild } from "./provider";

/** The stack's configuration by full key ("aws:profile"), as the provider's configure sees it. */
export function stackConfig(): ConfigReader {
  return {
    get: (key) => {
      const i = key.indexOf(":");
      return new pulumi.Config(key.slice(0, i)).get(key.slice(i + 1));
    },
  };
}

/** Repository root: where every ImageSpec path starts. */
export const REPO_ROOT = path.join(__dirname, "..");

export interface ImageSpec {
  /** Short name, unique per builder ([a-z0-9-]); keys the context object and the outputs. */
  name: string;
  /** Files and folders of the build context, relative to the repository root. */
  context: string[];
  /** Folder (relative to the repository root) that is the Docker build context. Default ".". */
  contextDir?: string;
  /** Dockerfile path relative to the repository root (must be part of `context`). */
  dockerfile: string;
  buildArgs?: Record<string, string>;
  /** Tag pushed next to the digest (for people; Deployments use the digest). */
  imageTag: string;
  repositoryUrl: pulumi.Input<string>;
  repositoryArn: pulumi.Input<string>;
}

export interface ImageBuilderArgs {
  images: ImageSpec[];
  /** The AWS settings the builds' provider uses. @defaultValue the stack's aws:profile and aws:assumeRoles (image/awsSettings.ts) */
  aws?: AwsSettings;
  /** CodeBuild's build timeout in minutes. Default 90 (a cold ComfyUI build downloads ~4 GB of wheels). */
  timeoutMinutes?: number;
  tags: Record<string, string>;
}

/**
 * The build environment. LARGE (8 vCPUs, 15 GB for LINUX_CONTAINER, per the CodeBuild API's
 * ProjectEnvironment.computeType) for pip's unpacking of the CUDA wheels; the Amazon Linux 2023
 * standard image brings Docker with buildx, the AWS CLI and jq.
 */
export const CODEBUILD_ENVIRONMENT = {
  computeType: "BUILD_GENERAL1_LARGE",
  image: IMAGES.codebuild,
  type: "LINUX_CONTAINER",
  // Privileged only because the build uses the image's Docker daemon (dockerd's own BuildKit);
  // CodeBuild requires it for any Docker build. Nothing else runs in this project.
  privilegedMode: true,
  imagePullCredentialsType: "CODEBUILD",
} as const;

export interface PolicyStatement {
  Sid: string;
  Effect: "Allow";
  Action: string[];
  Resource: string[];
  Condition?: Record<string, Record<string, string>>;
}

/**
 * The CodeBuild role's statements, as plain data (the IAM simulation suite checks them):
 * push/pull only to this stack's repositories, read only its own context objects, write logs only
 * to its own log group.
 */
export function codeBuildPolicyStatements(p: {
  repositoryArns: string[];
  contextBucketArn: string;
  imageNames: string[];
  logGroupArn: string;
}): PolicyStatement[] {
  if (p.repositoryArns.length === 0) throw new Error("codeBuildPolicyStatements: no repositories");
  return [
    // GetAuthorizationToken has no resource-level permissions (Service Authorization Reference, ECR): "*" is the only form.
    { Sid: "EcrLogin", Effect: "Allow", Action: ["ecr:GetAuthorizationToken"], Resource: ["*"] },
    // The login to ECR Public for the base images (image/buildspec.ts): both calls are required ("Amazon
    // ECR Public images", ECR Public User Guide) and neither has resource-level permissions; the bearer
    // token is only for ECR Public (sts:AWSServiceName, Service Authorization Reference for AWS STS).
    { Sid: "EcrPublicLogin", Effect: "Allow", Action: ["ecr-public:GetAuthorizationToken"], Resource: ["*"] },
    {
      Sid: "EcrPublicBearerToken",
      Effect: "Allow",
      Action: ["sts:GetServiceBearerToken"],
      Resource: ["*"],
      Condition: { StringEquals: { "sts:AWSServiceName": "ecr-public.amazonaws.com" } },
    },
    {
      Sid: "PushPullOwnRepositories",
      Effect: "Allow",
      Action: [
        "ecr:BatchCheckLayerAvailability",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
      ],
      Resource: [...p.repositoryArns],
    },
    { Sid: "ReadOwnContexts", Effect: "Allow", Action: ["s3:GetObject", "s3:GetObjectVersion"], Resource: p.imageNames.map((n) => `${p.contextBucketArn}/contexts/${n}/*`) },
    // Bucket-level reads CodeBuild's documented service-role policy grants for an S3 source; no object data.
    { Sid: "LocateContextBucket", Effect: "Allow", Action: ["s3:GetBucketAcl", "s3:GetBucketLocation"], Resource: [p.contextBucketArn] },
    { Sid: "OwnLogGroup", Effect: "Allow", Action: ["logs:CreateLogStream", "logs:PutLogEvents"], Resource: [p.logGroupArn, `${p.logGroupArn}:log-stream:*`] },
  ];
}

/** Reads, hashes and archives one image's context; the zip lands in the OS temp folder. */
export function prepareContext(spec: Pick<ImageSpec, "name" | "context" | "dockerfile">, root = REPO_ROOT): { hash: string; key: string; file: string } {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(spec.name)) throw new Error(`image name '${spec.name}' must be [a-z0-9-], at most 63 characters`);
  const files = collectContext(root, spec.context);
  if (!files.some((f) => f.path === spec.dockerfile)) {
    throw new Error(`image ${spec.name}: dockerfile ${spec.dockerfile} is not in its context (${spec.context.join(", ")})`);
  }
  const hash = contextHash(files);
  const dir = path.join(os.tmpdir(), "comfyui-image-contexts");
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${spec.name}-${hash}.zip`);
  if (!fs.existsSync(file)) {
    // Write then rename, so a concurrent run never uploads a half-written archive.
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, contextArchive(files));
    fs.renameSync(tmp, file);
  }
  return { hash, key: `contexts/${spec.name}/${hash}.zip`, file };
}

export class ImageBuilder extends pulumi.ComponentResource {
  /** repo@sha256:… per ImageSpec name. */
  readonly imageUris: Record<string, pulumi.Output<string>>;
  readonly projectName: string;
  readonly contextBucket: pulumi.Output<string>;

  constructor(name: string, args: ImageBuilderArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:image:ImageBuilder", name, {}, opts);
    if (args.images.length === 0) throw new pulumi.InputPropertyError({ propertyPath: "images", reason: "at least one image is required" });
    const names = args.images.map((i) => i.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new pulumi.InputPropertyError({ propertyPath: "images", reason: `image name '${dup}' appears twice` });
    const timeoutMinutes = args.timeoutMinutes ?? 90;
    const parent = { parent: this };
    const region = aws.getRegionOutput({}, parent).region;
    const account = aws.getCallerIdentityOutput({}, parent).accountId;

    // Contexts: private, encrypted, TLS only; old archives are rebuilt from git if ever needed.
    const bucket = new aws.s3.Bucket(`${name}-context`, { forceDestroy: true, tags: args.tags }, parent);
    const pab = secureBucketSettings(`${name}-context`, bucket, false, parent).publicAccessBlock;
    new aws.s3.BucketLifecycleConfiguration(
      `${name}-context-lifecycle`,
      { bucket: bucket.id, rules: [{ id: "abort-incomplete-uploads", status: "Enabled", filter: {}, abortIncompleteMultipartUpload: { daysAfterInitiation: 1 } }] },
      parent,
    );

    // Stack-scoped physical names: the provider's StartBuild and the role's trust need them up front.
    this.projectName = `${pulumi.getProject()}-${pulumi.getStack()}-${name}`.replace(/[^A-Za-z0-9_-]/g, "-").slice(0, 150);
    const logGroup = new aws.cloudwatch.LogGroup(`${name}-logs`, { name: `/aws/codebuild/${this.projectName}`, retentionInDays: 30, tags: args.tags }, parent);

    const role = new aws.iam.Role(
      `${name}-role`,
      {
        description: "CodeBuild: builds and pushes this stack's images",
        assumeRolePolicy: pulumi.jsonStringify({
          Version: "2012-10-17",
          Statement: [
            {
              Effect: "Allow",
              Principal: { Service: "codebuild.amazonaws.com" },
              Action: "sts:AssumeRole",
              // Only this project in this account may use the role (confused-deputy guard).
              Condition: {
                StringEquals: { "aws:SourceAccount": account },
                ArnLike: { "aws:SourceArn": pulumi.interpolate`arn:aws:codebuild:${region}:${account}:project/${this.projectName}` },
              },
            },
          ],
        }),
        tags: args.tags,
      },
      parent,
    );
    const policy = new aws.iam.RolePolicy(
      `${name}-policy`,
      {
        role: role.id,
        policy: pulumi
          .all([pulumi.all(args.images.map((i) => pulumi.output(i.repositoryArn))), bucket.arn, logGroup.arn])
          .apply(([repositoryArns, contextBucketArn, logGroupArn]) =>
            JSON.stringify({ Version: "2012-10-17", Statement: codeBuildPolicyStatements({ repositoryArns, contextBucketArn, imageNames: names, logGroupArn }) }),
          ),
      },
      parent,
    );

    const prepared = args.images.map((spec) => ({ spec, ctx: prepareContext(spec) }));
    const objects = prepared.map(
      ({ spec, ctx }) =>
        new aws.s3.BucketObjectv2(
          `${name}-${spec.name}-context`,
          { bucket: bucket.id, key: ctx.key, source: new pulumi.asset.FileAsset(ctx.file), contentType: "application/zip", tags: args.tags },
          { parent: this, dependsOn: [pab] },
        ),
    );

    const project = new aws.codebuild.Project(
      `${name}-project`,
      {
        name: this.projectName,
        description: "Builds this stack's container images (linux/amd64) and pushes them to its ECR repositories",
        serviceRole: role.arn,
        buildTimeout: timeoutMinutes,
        queuedTimeout: 60,
        environment: { ...CODEBUILD_ENVIRONMENT },
        // Each build overrides the location with its own image's archive; this one is the first's.
        source: { type: "S3", location: pulumi.interpolate`${bucket.bucket}/${prepared[0].ctx.key}`, buildspec: buildspecYaml() },
        artifacts: { type: "NO_ARTIFACTS" },
        logsConfig: {
          cloudwatchLogs: { status: "ENABLED", groupName: logGroup.name },
          s3Logs: { status: "DISABLED" },
        },
        tags: args.tags,
      },
      { parent: this, dependsOn: [policy] },
    );

    this.imageUris = {};
    prepared.forEach(({ spec, ctx }, i) => {
      const build = new ImageBuild(
        `${name}-${spec.name}`,
        {
          region,
          // The stack's profile and roles: the provider calls CodeBuild as @pulumi/aws does (no secret here).
          aws: args.aws ?? stackAwsSettings(stackConfig()),
          projectName: this.projectName,
          sourceLocation: pulumi.interpolate`${bucket.bucket}/${ctx.key}`,
          contextHash: ctx.hash,
          repositoryUrl: spec.repositoryUrl,
          imageTag: spec.imageTag,
          // buildx reads --file relative to the working directory (the unpacked archive root).
          dockerfile: spec.dockerfile,
          contextDir: spec.contextDir ?? ".",
          buildArgs: encodeBuildArgs(spec.buildArgs ?? {}),
          timeoutMinutes,
        },
        { parent: this, dependsOn: [objects[i], project, policy] },
      );
      this.imageUris[spec.name] = build.imageUri;
    });

    this.contextBucket = bucket.bucket;
    this.registerOutputs({ imageUris: this.imageUris, projectName: this.projectName, contextBucket: this.contextBucket });
  }
}
