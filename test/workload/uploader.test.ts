// Runs the real uploader sidecar (python3, stdlib only) against temp folders. --dest stands in for
// the Mountpoint for S3 mount, so the tests check the Mountpoint rules from the outside: files
// at --dest are only ever created and written forward, never truncated, replaced or overwritten.
import { strict as assert } from "node:assert";
import { ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const SCRIPT = path.resolve(__dirname, "../../workload/uploader/uploader.py");
const STATE = ".uploader-state.json";
const GIB = 1024 ** 3;

interface Proc {
  child: ChildProcess;
  out: () => string;
  err: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const children: ChildProcess[] = [];
const tmpDirs: string[] = [];

function start(args: string[]): Proc {
  const child = spawn("python3", [SCRIPT, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1" },
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("close", (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => out, err: () => err, exited };
}

async function runOnce(src: string, dst: string, extra: string[] = []) {
  const p = start(["--source", src, "--dest", dst, "--once", ...extra]);
  const { code } = await p.exited;
  return { code, out: p.out(), err: p.err() };
}

/** A long-running loop; resolves once the signal handlers are installed (the "watching" line). */
async function startLoop(src: string, dst: string, extra: string[]): Promise<Proc> {
  const p = start(["--source", src, "--dest", dst, ...extra]);
  await waitFor(() => p.out().includes("watching"), 5000, "uploader start");
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

function folders(): { src: string; dst: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "uploader-test-"));
  tmpDirs.push(root);
  const src = path.join(root, "scratch");
  const dst = path.join(root, "outputs");
  fs.mkdirSync(src);
  fs.mkdirSync(dst);
  return { src, dst };
}

function write(file: string, data: Buffer | string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
}

function uploadedLines(out: string): string[] {
  return out.split("\n").filter((l) => l.startsWith("uploaded "));
}

type State = { files: Record<string, { uploaded_at: number; [k: string]: unknown }> };
const readState = (src: string): State => JSON.parse(fs.readFileSync(path.join(src, STATE), "utf8"));
const writeState = (src: string, s: State) => fs.writeFileSync(path.join(src, STATE), JSON.stringify(s));

/**
 * Watches --dest the way S3 behind Mountpoint would constrain it: every file, once seen, keeps its
 * inode (no rename-over), never shrinks (no truncate/overwrite), never disappears, and no temp names.
 */
function watchDest(dst: string) {
  const seen = new Map<string, { size: number; ino: number }>();
  const violations: string[] = [];
  const scan = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) {
        scan(full);
        continue;
      }
      const rel = path.relative(dst, full);
      if (/^\.|\.(tmp|part|partial)$/.test(e.name)) violations.push(`temp name at dest: ${rel}`);
      const st = fs.statSync(full, { throwIfNoEntry: false });
      if (!st) continue;
      const prev = seen.get(rel);
      if (prev && st.size < prev.size) violations.push(`${rel} shrank ${prev.size} -> ${st.size}`);
      if (prev && st.ino !== prev.ino) violations.push(`${rel} replaced (inode changed)`);
      seen.set(rel, { size: st.size, ino: st.ino });
    }
  };
  const tick = () => {
    scan(dst);
    for (const rel of seen.keys()) {
      if (!fs.existsSync(path.join(dst, rel))) violations.push(`${rel} disappeared`);
    }
  };
  const timer = setInterval(tick, 10);
  return {
    stop: () => {
      clearInterval(timer);
      tick();
      return { violations, seen };
    },
  };
}

describe("workload/uploader: scratch folder -> Mountpoint outputs sidecar", function () {
  this.timeout(20000);

  afterEach(() => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
    }
    for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it("copies a finished file byte-identically under the same relative path, subfolders included", async () => {
    const { src, dst } = folders();
    const img = randomBytes(300_000);
    const nested = randomBytes(4096);
    write(path.join(src, "ComfyUI_00001_.png"), img);
    write(path.join(src, "video/2024-06-01/clip_00001.mp4"), nested);
    write(path.join(src, ".hidden.png"), "x");
    write(path.join(src, "frame.png.tmp"), "x");
    write(path.join(src, "render.mp4.part"), "x");
    write(path.join(src, "dl.partial"), "x");

    const r = await runOnce(src, dst);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(fs.readFileSync(path.join(dst, "ComfyUI_00001_.png")), img);
    assert.deepEqual(fs.readFileSync(path.join(dst, "video/2024-06-01/clip_00001.mp4")), nested);
    assert.deepEqual(uploadedLines(r.out).sort(), [
      "uploaded ComfyUI_00001_.png 300000",
      "uploaded video/2024-06-01/clip_00001.mp4 4096",
    ]);
    for (const skipped of [".hidden.png", "frame.png.tmp", "render.mp4.part", "dl.partial", STATE]) {
      assert.ok(!fs.existsSync(path.join(dst, skipped)), `${skipped} must not be uploaded`);
    }
  });

  it("does not copy a file still being written until it has settled", async () => {
    const { src, dst } = folders();
    const p = await startLoop(src, dst, ["--settle-seconds", "1", "--interval-seconds", "0.2"]);
    const file = path.join(src, "growing.mp4");
    const target = path.join(dst, "growing.mp4");
    write(file, randomBytes(1000));
    for (let i = 0; i < 8; i++) {
      await sleep(200);
      fs.appendFileSync(file, randomBytes(1000));
      assert.ok(!fs.existsSync(target), `copied while still being written (after ${i + 1} appends)`);
    }
    await waitFor(() => uploadedLines(p.out()).length > 0, 4000, "upload after settling");
    assert.deepEqual(fs.readFileSync(target), fs.readFileSync(file));
    assert.deepEqual(uploadedLines(p.out()), ["uploaded growing.mp4 9000"]);
  });

  it("only ever writes --dest sequentially: an edited file becomes .v2/.v3, the original stays untouched", async () => {
    const { src, dst } = folders();
    const watcher = watchDest(dst);
    const p = await startLoop(src, dst, ["--settle-seconds", "0.3", "--interval-seconds", "0.1"]);
    const file = path.join(src, "out/ComfyUI_00007_.png");
    const first = randomBytes(12 * 1024 * 1024); // several copy chunks, so partial sizes are observable
    write(file, first);
    await waitFor(() => p.out().includes("uploaded out/ComfyUI_00007_.png"), 8000, "first upload");
    // Mountpoint without allow-overwrite: the uploaded object cannot be opened for writing again.
    const original = path.join(dst, "out/ComfyUI_00007_.png");
    fs.chmodSync(original, 0o444);

    const second = Buffer.from("edited in place, and shorter");
    fs.writeFileSync(file, second); // truncate + rewrite, as an in-place edit does
    await waitFor(() => p.out().includes("uploaded out/ComfyUI_00007_.v2.png"), 8000, ".v2 upload");
    const third = randomBytes(5000);
    fs.writeFileSync(file, third);
    await waitFor(() => p.out().includes("uploaded out/ComfyUI_00007_.v3.png"), 8000, ".v3 upload");
    const { violations, seen } = watcher.stop();

    assert.deepEqual(violations, []);
    assert.deepEqual(fs.readFileSync(original), first, "the first upload must never be overwritten");
    assert.equal(fs.statSync(original).mode & 0o777, 0o444);
    assert.deepEqual(fs.readFileSync(path.join(dst, "out/ComfyUI_00007_.v2.png")), second);
    assert.deepEqual(fs.readFileSync(path.join(dst, "out/ComfyUI_00007_.v3.png")), third);
    assert.deepEqual([...seen.keys()].sort(), [
      "out/ComfyUI_00007_.png",
      "out/ComfyUI_00007_.v2.png",
      "out/ComfyUI_00007_.v3.png",
    ]);
    assert.match(p.out(), /changed after upload; uploading as out\/ComfyUI_00007_\.v2\.png/);
  });

  it("an edited file is uploaded as .v2 by --once while the read-only original is left alone", async () => {
    const { src, dst } = folders();
    write(path.join(src, "a.png"), "original bytes");
    assert.equal((await runOnce(src, dst)).code, 0);
    const original = path.join(dst, "a.png");
    fs.chmodSync(original, 0o444);
    const before = fs.statSync(original);
    write(path.join(src, "a.png"), "new");

    const r = await runOnce(src, dst);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(uploadedLines(r.out), ["uploaded a.v2.png 3"]);
    assert.equal(fs.readFileSync(original, "utf8"), "original bytes");
    const after = fs.statSync(original);
    assert.equal(after.ino, before.ino);
    assert.equal(after.mtimeMs, before.mtimeMs);
    assert.equal(fs.readFileSync(path.join(dst, "a.v2.png"), "utf8"), "new");
  });

  it("is idempotent across restarts: a second run uploads nothing, even without its state file", async () => {
    const { src, dst } = folders();
    write(path.join(src, "a.png"), randomBytes(2000));
    write(path.join(src, "sub/b.png"), randomBytes(3000));
    const first = await runOnce(src, dst);
    assert.equal(uploadedLines(first.out).length, 2);
    assert.ok(fs.existsSync(path.join(src, STATE)), "state file kept under --source");

    const second = await runOnce(src, dst);
    assert.equal(second.code, 0, second.err);
    assert.deepEqual(uploadedLines(second.out), []);

    // State lost (e.g. scratch recreated): same-size files already at --dest count as uploaded.
    fs.rmSync(path.join(src, STATE));
    const third = await runOnce(src, dst);
    assert.equal(third.code, 0, third.err);
    assert.deepEqual(uploadedLines(third.out), []);
    assert.deepEqual(fs.readdirSync(dst).sort(), ["a.png", "sub"]);
    assert.deepEqual(fs.readdirSync(path.join(dst, "sub")), ["b.png"]);
  });

  it("on SIGTERM flushes unsettled files without waiting for --settle-seconds and exits 0", async () => {
    const { src, dst } = folders();
    const p = await startLoop(src, dst, ["--settle-seconds", "60", "--interval-seconds", "0.2"]);
    const data = randomBytes(50_000);
    const writtenAt = Date.now();
    write(path.join(src, "last/ComfyUI_00042_.png"), data);
    await sleep(300);
    assert.equal(uploadedLines(p.out()).length, 0, "not settled yet");

    p.child.kill("SIGTERM");
    const { code, signal } = await p.exited;
    assert.equal(signal, null);
    assert.equal(code, 0, p.err());
    // Uploaded and exited before the file could have settled (60 s): the flush did not wait for it.
    assert.ok(Date.now() - writtenAt < 60_000, `exited ${Date.now() - writtenAt} ms after the write`);
    assert.deepEqual(fs.readFileSync(path.join(dst, "last/ComfyUI_00042_.png")), data);
    assert.match(p.out(), /SIGTERM: flushed 1 file\(s\): last\/ComfyUI_00042_\.png/);
  });

  it("prunes by --keep-hours only local files that were uploaded (and not changed since)", async () => {
    const { src, dst } = folders();
    write(path.join(src, "old.png"), "old");
    write(path.join(src, "recent.png"), "recent");
    write(path.join(src, "edited.png"), "edited");
    assert.equal((await runOnce(src, dst)).code, 0);
    const s = readState(src);
    const twoHoursAgo = Date.now() / 1000 - 7200;
    s.files["old.png"].uploaded_at = twoHoursAgo;
    s.files["edited.png"].uploaded_at = twoHoursAgo;
    writeState(src, s);
    fs.appendFileSync(path.join(src, "edited.png"), " again"); // changed since upload: not in S3 yet
    write(path.join(src, "pending.png"), "never uploaded");
    write(path.join(src, "render.mp4.part"), "temp");
    const old = new Date(Date.now() - 3 * 3600 * 1000);
    fs.utimesSync(path.join(src, "render.mp4.part"), old, old);

    const p = await startLoop(src, dst, ["--settle-seconds", "60", "--interval-seconds", "0.1", "--keep-hours", "0.5"]);
    await waitFor(() => !fs.existsSync(path.join(src, "old.png")), 5000, "old.png pruned");
    await sleep(500);
    p.child.kill("SIGKILL"); // not SIGTERM: that would flush pending.png

    for (const kept of ["recent.png", "edited.png", "pending.png", "render.mp4.part"]) {
      assert.ok(fs.existsSync(path.join(src, kept)), `${kept} must not be pruned`);
    }
    assert.equal(fs.readFileSync(path.join(dst, "old.png"), "utf8"), "old", "--dest is never pruned");
    assert.ok(!fs.existsSync(path.join(dst, "pending.png")));
    assert.match(p.out(), /pruned old\.png/);
    assert.doesNotMatch(p.out(), /pruned (recent|edited|pending)/);
  });

  it("over --max-scratch-gb prunes the oldest uploaded files first, never one not uploaded", async () => {
    const { src, dst } = folders();
    for (const n of ["a", "b", "c"]) write(path.join(src, `${n}.png`), randomBytes(1000));
    assert.equal((await runOnce(src, dst)).code, 0);
    const s = readState(src);
    const now = Date.now() / 1000;
    s.files["a.png"].uploaded_at = now - 300;
    s.files["b.png"].uploaded_at = now - 200;
    s.files["c.png"].uploaded_at = now - 100;
    writeState(src, s);
    write(path.join(src, "d.png"), randomBytes(1000)); // not uploaded (settle 60 s)

    // 4000 bytes on scratch, limit 2500: a then b (oldest uploads) go, c and d stay.
    const limit = (2500 / GIB).toPrecision(12);
    const p = await startLoop(src, dst, ["--settle-seconds", "60", "--interval-seconds", "0.1", "--max-scratch-gb", limit]);
    await waitFor(() => !fs.existsSync(path.join(src, "b.png")), 5000, "b.png pruned");
    await sleep(400);
    p.child.kill("SIGKILL");

    assert.deepEqual(fs.readdirSync(src).filter((n) => !n.startsWith(".")).sort(), ["c.png", "d.png"]);
    assert.deepEqual(fs.readdirSync(dst).sort(), ["a.png", "b.png", "c.png"]);
    const pruned = p.out().split("\n").filter((l) => l.startsWith("pruned "));
    assert.deepEqual(pruned.map((l) => l.split(" ")[1]), ["a.png", "b.png"]);
  });

  it("logs a failing upload and retries it at the next poll without dying", async () => {
    const { src, dst } = folders();
    write(path.join(dst, "clash"), "a file where the uploader needs a folder");
    write(path.join(src, "clash/img.png"), "img");
    write(path.join(src, "ok.png"), "ok");
    const p = await startLoop(src, dst, ["--settle-seconds", "0.2", "--interval-seconds", "0.1"]);
    await waitFor(() => p.out().includes("uploaded ok.png"), 5000, "ok.png upload");
    await waitFor(() => (p.err().match(/upload of clash\/img\.png failed/g) ?? []).length >= 2, 5000, "retries");
    assert.equal(p.child.exitCode, null, "still running");

    fs.rmSync(path.join(dst, "clash")); // the mount recovers
    await waitFor(() => p.out().includes("uploaded clash/img.png 3"), 5000, "upload after recovery");
    assert.equal(fs.readFileSync(path.join(dst, "clash/img.png"), "utf8"), "img");
  });

  it("exits 2 naming the missing --dest (or --source)", async () => {
    const { src, dst } = folders();
    const missing = path.join(dst, "not-mounted");
    const r = await runOnce(src, missing);
    assert.equal(r.code, 2);
    assert.match(r.err, /--dest/);
    assert.ok(r.err.includes(missing), r.err);

    const r2 = await runOnce(path.join(src, "nope"), dst);
    assert.equal(r2.code, 2);
    assert.match(r2.err, /--source/);
  });
});
