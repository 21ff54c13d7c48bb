/**
 * The ComfyUI container image: a private ECR repository (scan on push, encrypted, lifecycle) and
 * the build + push of image/Dockerfile. `imageUri` is `repo@sha256:…`, so the Deployment changes
 * exactly when the image does.
 */
import * as aws from "@pulumi/aws";
import * as awsx from "@pulumi/awsx";
import * as pulumi from "@pulumi/pulumi";
import * as path from "node:path";

export interface ImageArgs {
  /** ComfyUI release tag, e.g. v0.3.64. */
  comfyuiVersion: string;
  /** The 40-hex commit that tag must resolve to. */
  comfyuiCommit: string;
  /** Delete the repository and its images on destroy (images can be rebuilt). Default true. */
  forceDelete?: boolean;
  tags: Record<string, string>;
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

  constructor(name: string, args: ImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("comfyui:image:ComfyImage", name, {}, opts);
    const repo = new aws.ecr.Repository(
      `${name}-repo`,
      {
        imageScanningConfiguration: { scanOnPush: true },
        imageTagMutability: "MUTABLE",
        encryptionConfigurations: [{ encryptionType: "AES256" }],
        forceDelete: args.forceDelete ?? true,
        tags: args.tags,
      },
      { parent: this },
    );
    new aws.ecr.LifecyclePolicy(`${name}-lifecycle`, { repository: repo.name, policy: ECR_LIFECYCLE_POLICY }, { parent: this });

    const image = new awsx.ecr.Image(
      `${name}-comfyui`,
      {
        repositoryUrl: repo.repositoryUrl,
        context: IMAGE_CONTEXT,
        dockerfile: path.join(IMAGE_CONTEXT, "Dockerfile"),
        platform: "linux/amd64",
        args: { COMFYUI_VERSION: args.comfyuiVersion, COMFYUI_COMMIT: args.comfyuiCommit },
        imageTag: args.comfyuiVersion,
      },
      { parent: this },
    );

    this.repositoryUrl = repo.repositoryUrl;
    this.repositoryArn = repo.arn;
    this.imageUri = image.imageUri;
    this.registerOutputs({ repositoryUrl: this.repositoryUrl, imageUri: this.imageUri });
  }
}
