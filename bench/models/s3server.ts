/**
 * s3rver as a process of its own for the benchmarks, so that the S3 server, the agent and the CLI
 * never share an event loop: `node -r ts-node/register/transpile-only bench/models/s3server.ts DIR BUCKET`
 * prints {"endpoint": "..."} on its first stdout line and serves until SIGTERM.
 */
import { startS3 } from "../../test/karpenter/userdataHelpers";

async function main(): Promise<void> {
  const [dir, bucket] = process.argv.slice(2);
  if (!dir || !bucket) throw new Error("usage: s3server.ts DIR BUCKET");
  const s3 = await startS3(dir, bucket);
  process.stdout.write(JSON.stringify({ endpoint: s3.endpoint }) + "\n");
  process.once("SIGTERM", () => void s3.close().then(() => process.exit(0)));
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
