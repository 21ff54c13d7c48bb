/**
 * Model fill benchmark (on demand, not part of `npm test`): how long the node tool takes to fill a
 * sample library from S3, against `aws s3 sync` of the same bucket, on the loopback S3 server
 * (s3rver) with the system's AWS CLI v2 (/usr/bin/aws). One run measures both, alternating, and
 * prints the ratio; docs/benchmarks.md "## Model fill" records results with the command.
 *
 *   npx ts-node bench/models/run.ts [--files 6 --mb 40 --small 24 --rounds 2 --parallel 8 --client classic|crt]
 *
 * Loopback numbers compare the two fill strategies on one machine; they are not EC2 throughput.
 */
import { randomBytes } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { TOOL_PATH, aws, awsEnv, childPath, listFiles, makeTempDir, removeDir, runBash, startS3 } from "../../test/karpenter/userdataHelpers";

const execFileAsync = promisify(execFile);

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function main(): Promise<void> {
  const files = Number(flag("files", "6"));
  const mb = Number(flag("mb", "40"));
  const small = Number(flag("small", "24"));
  const rounds = Number(flag("rounds", "2"));
  const parallel = flag("parallel", "8");
  const client = flag("client", "classic");
  const scratch = makeTempDir("bench-models-");
  const s3 = await startS3(join(scratch, "s3rver"), "models");
  try {
    const env = awsEnv(s3, childPath(join(scratch, "bin")), join(scratch, "home"));
    const upload = join(scratch, "upload");
    let bytes = 0;
    const put = (key: string, size: number): void => {
      mkdirSync(join(upload, key, ".."), { recursive: true });
      writeFileSync(join(upload, key), randomBytes(size));
      bytes += size;
    };
    for (let i = 0; i < files; i++) put(`checkpoints/model-${i}.safetensors`, mb * 1_000_000);
    for (let i = 0; i < small; i++) put(`loras/lora-${i}.safetensors`, 1_000_000);
    await aws(env, ["s3", "cp", "--recursive", "--only-show-errors", upload, "s3://models/"]);

    const results: { what: string; seconds: number }[] = [];
    for (let r = 0; r < rounds; r++) {
      const node = join(scratch, `node-${r}`);
      const t0 = process.hrtime.bigint();
      const tool = await runBash(TOOL_PATH, ["fill-hot"], {
        ...env,
        MODELS_BUCKET: "models",
        MODELS_DIR: join(node, "models"),
        STAGING_DIR: join(node, "staging"),
        STATE_DIR: join(node, "state"),
        COMFYUI_MODELS_ENV_FILE: "",
        RESERVE_GB: "0",
        BOOT_FILL_SECONDS: "0",
        PARALLEL: parallel,
        TRANSFER_CLIENT: client,
      });
      const toolSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (tool.code !== 0) throw new Error(`comfyui-models fill-hot failed (${tool.code}): ${tool.stderr}`);
      if (listFiles(join(node, "models")).length !== files + small) throw new Error("the tool did not copy every file");
      results.push({ what: `comfyui-models fill-hot (PARALLEL=${parallel}, ${client})`, seconds: toolSeconds });

      const dest = join(scratch, `sync-${r}`);
      const t1 = process.hrtime.bigint();
      // Asynchronous: s3rver answers from this process's event loop.
      await execFileAsync("aws", ["--endpoint-url", s3.endpoint, "s3", "sync", "--only-show-errors", "s3://models/", dest], { env });
      results.push({ what: "aws s3 sync", seconds: Number(process.hrtime.bigint() - t1) / 1e9 });
    }
    const sum = (w: string): number => results.filter((x) => x.what.startsWith(w)).reduce((a, x) => a + x.seconds, 0);
    const version = (await execFileAsync("aws", ["--version"], { env })).stdout.trim();
    const report = {
      cli: version,
      library: { files: files + small, bytes },
      runs: results.map((x) => ({ ...x, mb_per_s: Math.round(bytes / x.seconds / 1e5) / 10 })),
      ratio_tool_over_sync: Math.round((sum("comfyui-models") / sum("aws s3 sync")) * 100) / 100,
    };
    console.log(JSON.stringify(report, null, 2));
  } finally {
    await s3.close();
    removeDir(scratch);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
