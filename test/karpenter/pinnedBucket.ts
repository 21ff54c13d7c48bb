/**
 * The models bucket the node tool's tests copy from: an s3rver with files named like the fixture
 * catalogue's (and the awkward names real buckets have), fresh node folders per case, and the AWS
 * CLI pointed at it. Shared by test/karpenter/userdata.copy.test.ts and userdata.boot.test.ts, each
 * of which starts its own server (mocha runs the files in parallel workers).
 */
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AGENT_PRIVATE_DIR } from "../../contracts/modelsAgent";
import { RunResult, S3, TOOL_PATH, aws, awsEnv, childPath, listFiles, makeTempDir, removeDir, runBash, startS3 } from "./userdataHelpers";

/** Registers the bucket's before/after hooks in the calling describe and hands back its helpers. */
export function usePinnedBucket() {
  let scratch = "";
  const BUCKET = "models";
  // Names from the fixture catalogue, plus the awkward ones real buckets have.
  const MODEL_FILES: Record<string, number> = {
    "diffusion_models/z_image_turbo_bf16.safetensors": 9 * 1024 * 1024 + 123, // above the CLI's 8 MiB multipart threshold
    "text_encoders/qwen_3_4b.safetensors": 300_000,
    "vae/ae.safetensors": 65_536,
    "vae/ae.safetensors.bak": 1_000,
    "upscale_models/RealESRGAN_x4plus.safetensors": 40_000,
    "loras/Qwen Image Lightning 8steps V1.0.safetensors": 20_000,
    "loras/it's (v2) [final].safetensors": 10_000,
  };
  const ALL_FOLDERS = "diffusion_models/,text_encoders/,vae/,upscale_models/,loras/";
  const sources = new Map<string, Buffer>();
  let s3: S3;
  let env: NodeJS.ProcessEnv;
  let run = 0;

  /** Fresh node folders per case, so cases do not depend on each other's leftovers. */
  function node(extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; dirs: { root: string; models: string; staging: string } } {
    const root = join(scratch, `node-${++run}`);
    const models = join(root, "disk", "models");
    return {
      dirs: { root, models, staging: join(models, AGENT_PRIVATE_DIR, "staging") },
      env: {
        ...env,
        MODELS_BUCKET: BUCKET,
        MODELS_DIR: models,
        // Never pick up a real /etc/comfyui-models.env on the machine running the tests.
        COMFYUI_MODELS_ENV_FILE: join(root, "absent.env"),
        // The node's floor is for GPU nodes' arrays, not this machine's disk.
        RESERVE_GB: "0",
        EVICTION_PERCENT: "0",
        // Debian's CLI 2.9 CRT client ignores the endpoint's port (connection refused on s3rver).
        TRANSFER_CLIENT: "classic",
        ...extra,
      },
    };
  }

  /** The files in the model folders (not the agent's private folder). */
  const modelFiles = (models: string): string[] => listFiles(models).filter((f) => !f.startsWith(`${AGENT_PRIVATE_DIR}/`));

  function assertIdentical(models: string, keys: readonly string[]): void {
    assert.deepEqual(modelFiles(models), [...keys].sort());
    for (const key of keys) {
      assert.ok(readFileSync(join(models, key)).equals(sources.get(key) as Buffer), `${key} differs from the source`);
    }
  }

  const tool = (args: string[], e: NodeJS.ProcessEnv): Promise<RunResult> => runBash(TOOL_PATH, args, e);

  let uploads = 0;
  async function putObject(key: string, content: Buffer): Promise<void> {
    const local = join(scratch, `upload-${++uploads}.bin`);
    writeFileSync(local, content);
    await aws(env, ["s3", "cp", "--only-show-errors", local, `s3://${BUCKET}/${key}`]);
  }

  /** A PATH whose `df` reports an array of `size` bytes with `avail` free. */
  function fakeDisk(dir: string, size: number, avail: number): string {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "df"),
      `#!/bin/bash\ncase " $* " in\n  *" --output=size "*) printf 'Size\\n%s\\n' ${size} ;;\n  *" --output=avail "*) printf 'Avail\\n%s\\n' ${avail} ;;\n  *) exit 1 ;;\nesac\n`,
      { mode: 0o755 },
    );
    return `${dir}:${env.PATH}`;
  }

  before(async function () {
    this.timeout(60_000);
    scratch = makeTempDir("userdata-test-");
    s3 = await startS3(join(scratch, "s3rver"), BUCKET);
    env = awsEnv(s3, childPath(join(scratch, "bin")), join(scratch, "home"));
    const upload = join(scratch, "upload");
    for (const [key, size] of Object.entries(MODEL_FILES)) sources.set(key, randomBytes(size));
    for (const [key, content] of sources) {
      mkdirSync(join(upload, key, ".."), { recursive: true });
      writeFileSync(join(upload, key), content);
    }
    await aws(env, ["s3", "cp", "--recursive", "--only-show-errors", upload, `s3://${BUCKET}/`]);
    // A console-made folder marker: a key, but not a file.
    await aws(env, ["s3api", "put-object", "--bucket", BUCKET, "--key", "loras/"]);
  });

  after(async () => {
    if (s3) await s3.close();
    removeDir(scratch);
  });

  return {
    BUCKET,
    MODEL_FILES,
    ALL_FOLDERS,
    sources,
    node,
    modelFiles,
    assertIdentical,
    tool,
    putObject,
    fakeDisk,
    /** Valid once the hooks ran (inside its, before and after hooks of the caller). */
    get env(): NodeJS.ProcessEnv {
      return env;
    },
    get s3(): S3 {
      return s3;
    },
    get scratch(): string {
      return scratch;
    },
  };
}
