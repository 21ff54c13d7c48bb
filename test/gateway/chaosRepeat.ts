// `npm run test:chaos -- [--repeat N] [--load]`: the chaos test N times in a row (fresh mocha process each
// time), optionally with one busy loop per core running beside it — how the suite must hold up on a busy
// machine. Prints each run's result line and the tally; exits non-zero unless every run passed.
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const args = process.argv.slice(2);
const repeat = Number(args[args.indexOf("--repeat") + 1] ?? 1) || 1;
const load = args.includes("--load");
const root = path.resolve(__dirname, "../..");

function busyLoops(): ChildProcess[] {
  return os.cpus().map(() => spawn(process.execPath, ["-e", "for (;;) {}"], { stdio: "ignore" }));
}

function runOnce(): Promise<{ ok: boolean; summary: string; seconds: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(root, "node_modules/mocha/bin/mocha.js"), "test/gateway/chaos.test.ts"], {
      cwd: root,
      env: { ...process.env, TS_NODE_TRANSPILE_ONLY: "true" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", (code) => {
      const summary = out.split("\n").filter((l) => /chaos: |passing|failing|AssertionError|still \d+ prompts/.test(l)).map((l) => l.trim()).join(" | ");
      resolve({ ok: code === 0, summary, seconds: (Date.now() - t0) / 1000 });
      if (code !== 0) {
        const file = path.join(os.tmpdir(), `chaos-failure-${Date.now()}.log`);
        fs.writeFileSync(file, out);
        console.log(`full output of the failed run: ${file}`);
      }
    });
  });
}

async function main(): Promise<void> {
  const loops = load ? busyLoops() : [];
  let passed = 0;
  try {
    for (let i = 1; i <= repeat; i++) {
      const r = await runOnce();
      if (r.ok) passed++;
      console.log(`run ${i}/${repeat}: ${r.ok ? "passed" : "FAILED"} in ${r.seconds.toFixed(0)} s — ${r.summary}`);
    }
  } finally {
    for (const l of loops) l.kill("SIGKILL");
  }
  console.log(`chaos: ${passed} of ${repeat} runs passed${load ? ` with ${loops.length} busy loops beside them` : ""}`);
  process.exit(passed === repeat ? 0 : 1);
}

void main();
