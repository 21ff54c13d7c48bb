/**
 * The ComfyUI container image: a private ECR repository (scan on push, encrypted, lifecycle) and
 * the build + push of image/Dockerfile. `imageUri` is `repo@sha256:…`, so the Deployment changes
 * exactly when the image does.
 *
 * build "aws" (default): the stack's own CodeBuild project builds every image in the stack's
 * region (image/builder.ts), so the deployer needs no Docker. build "local": awsx.ecr.Image with the
 * deployer's Docker, as before.
 */
import * as aws from "@pulumi/aws";
import * as awsx from "@pulumi/awsx";
import * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";
import { ImageBuilder, ImageSpec, REPO_ROOT } from "./builder";

export { ImageBuilder, ImageSpec, codeBuildPolicyStatements, CODEBUILD_ENVIRONMENT } from "./builder";

/** An image built beside ComfyUI's; ComfyImage creates its repository. */
export type AdditionalImage = Omit<ImageSpec, "repositoryUrl" | "repositoryArn">;

export interface ImageArgs {
  /** ComfyUI release tag, e.g. v0.3.64. */
  comfyuiVersion: string;
  /** The 40-hex commit that tag must resolve to. */
  comfyuiCommit: string;
  /** Delete the repository and its images on destroy (images can be rebuilt). Default true. */
  forceDelete?: boolean;
  /** Where images are built: "aws" (CodeBuild in the stack's region, default) or "local" (Docker here). */
  build?: "aws" | "local";
  /**
   * Further images the stack deploys (e.g. the gateway's), by name: each gets its own repository
   * (`<name>-<image>-repo`) and is built the same way as ComfyUI's ("aws" or "local").
   */
  additionalImages?: AdditionalImage[];
  /**
   * Publish ComfyUI's image (`repo@sha256:…`) as this SSM parameter, where GPU nodes read it at boot
   * to pull it beside the model fill: a new image changes the parameter, not every node's user data.
   * The resource is named `<name>-comfyui-image`. @defaultValue unset: not published
   */
  imageParameterName?: string;
  tags: Record<string, string>;
}

/** The files of ComfyUI's build context, relative to the repository root. */
export const COMFYUI_CONTEXT_FILES = ["image/Dockerfile", "image/constraints.txt", "image/custom-nodes.txt", "image/torch-pins.sh"];

/** A private, scanned, encrypted ECR repository with the project's lifecycle rules. */
export function privateRepository(name: string, tags: Record<string, string>, forceDelete: boolean, opts: pulumi.CustomResourceOptions): aws.ecr.Repository {
  const repo = new aws.ecr.Repository(
    `${name}-repo`,
    {
      imageScanningConfiguration: { scanOnPush: true },
      // Mutable: the cache tag (the last build, image/buildspec.ts) is rewritten by every build; Deployments pin digests anyway.
      imageTagMutability: "MUTABLE",
      encryptionConfigurations: [{ encryptionType: "AES256" }],
      forceDelete,
      tags,
    },
    opts,
  );
  new aws.ecr.LifecyclePolicy(`${name}-lifecycle`, { repository: repo.name, policy: ECR_LIFECYCLE_POLICY }, opts);
  return repo;
}

/** Build context: this folder (Dockerfile, constraints.txt, custom-nodes.txt). */
export const IMAGE_CONTEXT = path.join(__dirname);

/** Expire untagged images after a week, keep the 10 newest tagged ones. */
export const ECR_LIFECYCLE_POLICY = JSON.stringify({
  rules: [
    { rulePriority: 1, description: "untagged after 7 days", selection: { tagStatus: "untagged", countType: "sinceImagePushed", countUnit: "days", countNumber: 7 }, action: { type: "expire" } },
    { rulePriority: 2, description: "keep 10 images", selection: { tagStatus: "any", countType: "imageCountMoreThan", countNumber: 10 }, action: { type: "expire" } },
  ],
});

export class ComfyImage extends pulumi.ComponentResource {
  readonly repositoryUrl: pulumi.Output<string>;
  readonly repositoryArn: pulumi.Output<string>;
  /** `…dkr.ecr…/repo@sha256:<digest>` of the pushed image. */
  readonly imageUri: pulumi.Output<string>;
  /** Every built image by name ("comfyui" and each additional image): `repo@sha256:…`. */
  readonly images: Record<string, pulumi.Output<string>>;
  /** The SSM parameter holding imageUri (imageParameterName), once published. */
  readonly imageParameterName?: pulumi.Output<string>;

  constructor(name: string, args: ImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:image:ComfyImage", name, {}, opts);
    const mode = args.build ?? "aws";
    if (mode !== "aws" && mode !== "local") {
      throw new pulumi.InputPropertyError({ propertyPath: "build", reason: `build must be "aws" or "local", not '${String(mode)}'` });
    }
    const buildArgs = { COMFYUI_VERSION: args.comfyuiVersion, COMFYUI_COMMIT: args.comfyuiCommit };
    // Same name as before the build option existed, so a "local" stack keeps its repository.
    const repo = privateRepository(name, args.tags, args.forceDelete ?? true, { parent: this });

    const extra = (args.additionalImages ?? []).map((spec) => ({
      ...spec,
      repo: privateRepository(`${name}-${spec.name}`, args.tags, args.forceDelete ?? true, { parent: this }),
    }));

    let imageUri: pulumi.Output<string>;
    this.images = {};
    if (mode === "local") {
      const image = new awsx.ecr.Image(
        `${name}-comfyui`,
        {
          repositoryUrl: repo.repositoryUrl,
          context: IMAGE_CONTEXT,
          dockerfile: path.join(IMAGE_CONTEXT, "Dockerfile"),
          platform: "linux/amd64",
          args: buildArgs,
          imageTag: args.comfyuiVersion,
        },
        { parent: this },
      );
      imageUri = image.imageUri;
      this.images["comfyui"] = imageUri;
      for (const spec of extra) {
        this.images[spec.name] = new awsx.ecr.Image(
          `${name}-${spec.name}`,
          {
            repositoryUrl: spec.repo.repositoryUrl,
            context: path.join(REPO_ROOT, spec.contextDir ?? "."),
            dockerfile: path.join(REPO_ROOT, spec.dockerfile),
            platform: "linux/amd64",
            args: spec.buildArgs,
            imageTag: spec.imageTag,
          },
          { parent: this },
        ).imageUri;
      }
    } else {
      const comfy: ImageSpec = {
        name: "comfyui",
        context: COMFYUI_CONTEXT_FILES,
        contextDir: "image",
        dockerfile: "image/Dockerfile",
        buildArgs,
        imageTag: args.comfyuiVersion,
        repositoryUrl: repo.repositoryUrl,
        repositoryArn: repo.arn,
      };
      const others: ImageSpec[] = extra.map(({ repo, ...spec }) => ({ ...spec, repositoryUrl: repo.repositoryUrl, repositoryArn: repo.arn }));
      const builder = new ImageBuilder(`${name}-build`, { images: [comfy, ...others], tags: args.tags }, { parent: this });
      this.images = builder.imageUris;
      imageUri = builder.imageUris["comfyui"];
    }

    this.repositoryUrl = repo.repositoryUrl;
    this.repositoryArn = repo.arn;
    this.imageUri = imageUri;
    if (args.imageParameterName !== undefined) {
      // Made in index.ts before, at the top of the stack: the alias keeps the parameter in place.
      const parameter = new aws.ssm.Parameter(
        `${name}-comfyui-image`,
        { name: args.imageParameterName, type: "String", value: imageUri, description: "ComfyUI image (repo@sha256:...) that GPU nodes pre-pull at boot", tags: args.tags },
        { parent: this, aliases: [{ parent: pulumi.rootStackResource }] },
      );
      this.imageParameterName = parameter.name;
    }
    this.registerOutputs({ repositoryUrl: this.repositoryUrl, imageUri: this.imageUri });
  }
}
