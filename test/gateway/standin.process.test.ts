// The stand-in as its own process: the CLI's contract (one LISTENING line, SIGTERM → exit 0, bad flags
// named) and the process helper (SIGKILL, restart on the same port and data dir, crash fault = SIGKILL).
import * as assert from "assert";
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as readline from "readline";
import { spawnStandIn } from "./standin/process";
import { getJson, post, t2i, until } from "./standin/testkit";

const MAIN = path.join(__dirname, "standin", "main.ts");

describe("ComfyUI stand-in CLI and process helper", function () {
  this.timeout(90000);

  it("prints exactly one LISTENING line, serves, and exits 0 on SIGTERM", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "standin-cli-"));
    const models = path.join(dir, "models.json");
    fs.writeFileSync(models, JSON.stringify({ checkpoints: ["only.safetensors"] }));
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, "--port", "0", "--step-ms", "1", "--data-dir", dir, "--models-json", models], { stdio: ["ignore", "pipe", "pipe"] });
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    try {
      const lines: string[] = [];
      readline.createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
      await until(() => lines.length > 0, 60000, 20);
      const m = /^STANDIN LISTENING (http:\/\/127\.0\.0\.1:(\d+))$/.exec(lines[0]);
      assert.ok(m, lines[0]);
      assert.deepStrictEqual(await getJson(m[1] + "/models/checkpoints"), ["only.safetensors"]);
      const r = await post(m[1] + "/prompt", { prompt: t2i(1) });
      assert.strictEqual(r.status, 400, "the default checkpoint is not in this model set");
      child.kill("SIGTERM");
      assert.strictEqual(await exited, 0);
      assert.deepStrictEqual(lines, [lines[0]], "nothing else on stdout");
      assert.ok(fs.existsSync(path.join(dir, "output")), "a given data dir is kept");
    } finally {
      child.kill("SIGKILL");
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("rejects a bad flag with exit 2 and names it", async () => {
    const child = spawn(process.execPath, ["-r", "ts-node/register/transpile-only", MAIN, "--fault", "explode"], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    const code = await new Promise<number | null>((r) => child.once("exit", (c) => r(c)));
    assert.strictEqual(code, 2);
    assert.match(err, /--fault explode: expected crash\[:N\], hang\[:N\] or execution_error/);
  });

  it("kill (SIGKILL) and restart: same port and data dir, fresh memory; a crash fault SIGKILLs the process", async () => {
    const p = await spawnStandIn({ stepMs: 5, fault: "crash:2" });
    try {
      const port = p.port;
      const pid = p.pid;
      const r = (await post(p.url + "/prompt", { prompt: t2i(5) })).json;
      assert.ok(r.prompt_id);
      assert.strictEqual(await p.exited, null, "killed by a signal, not exited");
      await assert.rejects(fetch(p.url + "/prompt"));
      await p.restart();
      assert.strictEqual(p.port, port);
      assert.notStrictEqual(p.pid, pid);
      assert.strictEqual(new URL(p.url).port, String(port));
      assert.deepStrictEqual(await getJson(`${p.url}/history/${r.prompt_id}`), {}, "history does not survive");
      const r2 = (await post(p.url + "/prompt", { prompt: t2i(2) })).json;
      await until(async () => Object.keys(await getJson(`${p.url}/history/${r2.prompt_id}`)).length === 1, 20000);
      const h = (await getJson(`${p.url}/history/${r2.prompt_id}`))[r2.prompt_id];
      assert.strictEqual(h.status.status_str, "success", "restarted without the fault");
      await p.kill();
      assert.strictEqual(await p.exited, null);
      await assert.rejects(fetch(p.url + "/prompt"));
    } finally {
      await p.stop();
      await p.stop();
    }
  });
});
