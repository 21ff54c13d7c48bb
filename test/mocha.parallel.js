// npm test's mocha settings: every test file but the browser's in its own turn on a pool of worker
// processes, the slowest files first so that the run is not left waiting on one of them at the end.
// Files that share nothing run side by side: every server a test starts listens on port 0 and every
// folder it writes is its own mkdtemp. The browser tests (test/browser/) run after this, one file at a
// time (npm test's second mocha): beside other files on a busy machine the sign-in test's image twice
// did not show within 30 s, which it never did run alone, even with four busy loops on the two cores.
// A single file is still run with `npx mocha <file>` (.mocharc.json).
/* eslint-disable @typescript-eslint/no-require-imports -- mocha loads its config with require(): CommonJS */
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

/** The longest files, measured (npm test, 2 cores): each alone takes 20 s to 2 min. */
const SLOW_FIRST = [
  "test/karpenter/userdata.boot.test.ts",
  "test/karpenter/userdata.copy.test.ts",
  "test/gateway/chaos.test.ts",
  "test/gateway/replicas.test.ts",
  "test/gateway/limits.test.ts",
  "test/workload/uploader.test.ts",
  "test/gateway/modelCache.test.ts",
  "test/gateway/faults.test.ts",
];

const root = path.join(__dirname, "..");
const all = fs
  .readdirSync(path.join(root, "test"), { recursive: true })
  .map((f) => path.posix.join("test", String(f).split(path.sep).join("/")))
  .filter((f) => f.endsWith(".test.ts") && !f.startsWith("test/browser/"))
  .sort();
for (const f of SLOW_FIRST) if (!all.includes(f)) throw new Error(`test/mocha.parallel.js: ${f} does not exist`);

module.exports = {
  require: ["ts-node/register/transpile-only"],
  timeout: 60000,
  exit: false,
  parallel: true,
  // One worker per core: with one more, a busy machine starved the CPU-heavy files (the node tool's
  // tests start the AWS CLI for every copy) past their own time limits.
  jobs: Math.max(2, os.availableParallelism()),
  spec: [...SLOW_FIRST, ...all.filter((f) => !SLOW_FIRST.includes(f))],
};
