/**
 * Model agent fetch benchmark (on demand, not part of `npm test`): the agent's fetch of one large
 * object (ranged GETs in parallel, MD5-verified, flushed, renamed) against `aws s3 cp` of the same
 * object, on loopback, every party a process of its own: the S3 server (s3rver, bench/models/s3server.ts),
 * the agent (`npm run models-agent`'s entry point) and Debian's AWS CLI v2 (/usr/bin/aws). Rounds
 * alternate the two, each into a fresh folder; docs/benchmarks.md "## Model agent" records results.
 *
 *   npx ts-node --transpile-only bench/models/agent.ts [--mb 2000 --rounds 3 --connections 8 --range-mb 64 --verify md5|size --profile DIR]
 *
 * The agent runs as the image runs it: compiled with workload/models/tsconfig.build.json, `node main.js`.
 *
 * ratio = aws s3 cp seconds / agent seconds (summed over rounds): ≥ 1 means the agent is at least as fast.
 * Loopback numbers compare the two clients on one machine; they are not EC2 throughput.
 */
import { execFile, spawn, ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { makeTempDir } from "../../test/karpenter/userdataHelpers";

const execFileAsync = promisify(execFile);
const ROOT = join(__dirname, "..", "..");
const TOKEN = "bench-token-0123456789abcdef";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

/** Starts a TypeScript (ts-node) or JavaScript entry point as a process; resolves with the first stdout line matching `re`. */
function startChild(args: string[], env: NodeJS.ProcessEnv, re: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray; stdout: () => string }> {
  return new Promise((resolve, reject) => {
    // --profile DIR: a V8 CPU profile of each agent process (node --cpu-prof), to see where its time goes.
    const pre = args[0].endsWith(".ts") ? ["-r", "ts-node/register/transpile-only"] : flag("profile", "") ? ["--cpu-prof", `--cpu-prof-dir=${flag("profile", "")}`] : [];
    const child = spawn(process.execPath, [...pre, ...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = re.exec(out);
      if (m) resolve({ child, match: m, stdout: () => out });
    });
    child.on("exit", (code) => reject(new Error(`${args[0]} exited ${code}: ${err}`)));
  });
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((r) => {
    if (child.exitCode !== null) return r();
    child.once("exit", () => r());
    child.kill("SIGTERM");
  });
}

/** Resident memory of a process, MiB: now (VmRSS) or its peak (VmHWM). */
function rssMiB(pid: number, which: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`${which}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/** CPU seconds a process has used (utime + stime of /proc/PID/stat, at 100 ticks a second). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** CPU seconds of this process's waited-for children so far (from /proc/self/stat cutime + cstime). */
function childCpuSeconds(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1].split(" ");
  return (Number(fields[13]) + Number(fields[14])) / 100;
}

async function main(): Promise<void> {
  const mb = Number(flag("mb", "2000"));
  const rounds = Number(flag("rounds", "3"));
  const connections = flag("connections", "8");
  const rangeMb = flag("range-mb", "64");
  const verify = flag("verify", "md5");
  const scratch = makeTempDir("bench-agent-");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
    AWS_CONFIG_FILE: "/dev/null",
    AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
    AWS_PAGER: "",
    UV_THREADPOOL_SIZE: "16",
  };
  const s3 = await startChild(["bench/models/s3server.ts", join(scratch, "s3rver"), "models"], env, /"endpoint":"([^"]+)"/);
  const endpoint = s3.match[1];
  const aws = (args: string[]) => execFileAsync("/usr/bin/aws", ["--endpoint-url", endpoint, ...args], { env, maxBuffer: 1 << 20 });
  try {
    // The object: random bytes (nothing compresses or dedupes), uploaded once with the CLI.
    const src = join(scratch, "big.safetensors");
    await new Promise<void>((resolve, reject) => {
      const w = createWriteStream(src);
      let left = mb;
      const more = () => {
        while (left > 0) {
          left--;
          if (!w.write(randomBytes(1_000_000))) return void w.once("drain", more);
        }
        w.end();
      };
      w.on("finish", resolve).on("error", reject);
      more();
    });
    const bytes = statSync(src).size;
    await aws(["s3", "cp", "--only-show-errors", src, "s3://models/checkpoints/big.safetensors"]);
    rmSync(src);

    // The agent as its image runs it: compiled JavaScript (no TypeScript in memory).
    const dist = join(scratch, "dist");
    await execFileAsync(process.execPath, [require.resolve("typescript/bin/tsc"), "-p", join(ROOT, "workload/models/tsconfig.build.json"), "--outDir", dist], { cwd: ROOT });
    const agentMain = join(dist, "workload/models/agent/main.js");
    const agentEnv = { ...env, NODE_PATH: join(ROOT, "node_modules") };
    const results: { what: string; seconds: number; syncSeconds: number; clientCpuSeconds: number; s3rverCpuShare: number; idleRssMiB?: number; peakRssMiB?: number }[] = [];
    const s3pid = s3.child.pid!;
    for (let r = 0; r < rounds; r++) {
      const dir = join(scratch, `agent-${r}`);
      const agent = await startChild(
        [
          agentMain,
          ...["--models-dir", dir, "--bucket", "models", "--endpoint", endpoint, "--cache-gb", String((2 * mb) / 1000), "--port", "0"],
          ...["--token", TOKEN, "--connections", connections, "--range-mb", rangeMb, "--verify", verify],
        ],
        agentEnv,
        /"msg":"listening","url":"([^"]+)"/,
      );
      try {
        const idle = rssMiB(agent.child.pid!, "VmRSS");
        const c0 = cpuSeconds(s3pid);
        const a0 = cpuSeconds(agent.child.pid!);
        const t0 = process.hrtime.bigint();
        const res = await fetch(`${agent.match[1]}/v1/ensure`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-models-agent-token": TOKEN },
          body: JSON.stringify({ files: ["checkpoints/big.safetensors"] }),
        });
        const body = await res.text();
        const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
        if (res.status !== 200) throw new Error(`agent ensure: ${res.status} ${body}`);
        if (statSync(join(dir, "checkpoints", "big.safetensors")).size !== bytes) throw new Error("agent: wrong size");
        const agentCpu = cpuSeconds(agent.child.pid!) - a0;
        const sync = /"msg":"fetched".*"syncSeconds":([0-9.e-]+)/.exec(agent.stdout());
        results.push({
          what: `agent (${connections} connections, ${rangeMb} MiB ranges, verify ${verify}, datasync)`,
          seconds,
          syncSeconds: sync ? Number(sync[1]) : NaN,
          clientCpuSeconds: agentCpu,
          s3rverCpuShare: (cpuSeconds(s3pid) - c0) / seconds,
          idleRssMiB: idle,
          peakRssMiB: rssMiB(agent.child.pid!, "VmHWM"),
        });
      } finally {
        await stop(agent.child);
        rmSync(dir, { recursive: true, force: true });
      }

      const dest = join(scratch, `cli-${r}`);
      mkdirSync(dest);
      const c1 = cpuSeconds(s3pid);
      const t1 = process.hrtime.bigint();
      const cc0 = childCpuSeconds();
      await aws(["s3", "cp", "--only-show-errors", "s3://models/checkpoints/big.safetensors", join(dest, "big.safetensors")]);
      const cliSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
      // The CLI is a child of this process: its CPU shows in this process's children's usage (getrusage RUSAGE_CHILDREN).
      const cliCpu = childCpuSeconds() - cc0;
      if (statSync(join(dest, "big.safetensors")).size !== bytes) throw new Error("aws s3 cp: wrong size");
      // The CLI leaves its file in the page cache; the agent flushes before the rename. The same flush
      // after the CLI (coreutils sync --data FILE: fdatasync) makes the second, like-for-like figure.
      const t2 = process.hrtime.bigint();
      await execFileAsync("sync", ["--data", join(dest, "big.safetensors")]);
      const syncSeconds = Number(process.hrtime.bigint() - t2) / 1e9;
      results.push({ what: "aws s3 cp", seconds: cliSeconds, syncSeconds, clientCpuSeconds: cliCpu, s3rverCpuShare: (cpuSeconds(s3pid) - c1) / cliSeconds });
      rmSync(dest, { recursive: true, force: true });
    }
    const sum = (w: string) => results.filter((x) => x.what.startsWith(w)).reduce((a, x) => a + x.seconds, 0);
    const sumSync = (w: string) => results.filter((x) => x.what.startsWith(w)).reduce((a, x) => a + x.syncSeconds, 0);
    const median = (w: string) => {
      const v = results.filter((x) => x.what.startsWith(w)).map((x) => x.seconds).sort((a, b) => a - b);
      return v[Math.floor(v.length / 2)];
    };
    const version = (await execFileAsync("/usr/bin/aws", ["--version"], { env })).stdout.trim();
    console.log(
      JSON.stringify(
        {
          cli: version,
          node: process.version,
          object: { bytes },
          runs: results.map((x) => ({ ...x, clientCpuSeconds: Math.round(x.clientCpuSeconds * 10) / 10, seconds: Math.round(x.seconds * 100) / 100, syncSeconds: Math.round(x.syncSeconds * 100) / 100, s3rverCpuShare: Math.round(x.s3rverCpuShare * 100) / 100, mb_per_s: Math.round(bytes / x.seconds / 1e5) / 10 })),
          ratio_cli_over_agent: Math.round((sum("aws s3 cp") / sum("agent")) * 100) / 100,
          // Like for like: both files on disk at the end (the CLI's time plus its flush).
          ratio_cli_with_flush_over_agent: Math.round(((sum("aws s3 cp") + sumSync("aws s3 cp")) / sum("agent")) * 100) / 100,
          // The transfer alone: the agent's time without its flush, against the CLI's without one.
          ratio_cli_over_agent_without_flush: Math.round((sum("aws s3 cp") / (sum("agent") - sumSync("agent"))) * 100) / 100,
          median_seconds: { agent: Math.round(median("agent") * 100) / 100, cli: Math.round(median("aws s3 cp") * 100) / 100 },
        },
        null,
        2,
      ),
    );
  } finally {
    await stop(s3.child);
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
