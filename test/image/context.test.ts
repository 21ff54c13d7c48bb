/**
 * The build context archive: deterministic bytes and a content hash that decides whether a build
 * is needed (same files -> same hash, one byte -> different, mtime only -> same).
 */
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { unzipSync } from "fflate";
import { collectContext, contextArchive, contextHash } from "../../image/context";
import { prepareContext } from "../../image/builder";

describe("image build context", () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), "ctx-test-"));
    fs.mkdirSync(path.join(root, "app", "lib"), { recursive: true });
    fs.writeFileSync(path.join(root, "app", "Dockerfile"), "FROM scratch\nCOPY lib /lib\n");
    fs.writeFileSync(path.join(root, "app", "lib", "b.txt"), "bee\n");
    fs.writeFileSync(path.join(root, "app", "lib", "a.sh"), "#!/bin/sh\necho a\n", { mode: 0o755 });
    fs.writeFileSync(path.join(root, "outside.txt"), "not in the context\n");
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  const snapshot = () => {
    const files = collectContext(root, ["app"]);
    return { files, hash: contextHash(files), zip: contextArchive(files) };
  };

  it("walks folders into a sorted file list with the executable bit", () => {
    const { files } = snapshot();
    assert.deepEqual(files.map((f) => f.path), ["app/Dockerfile", "app/lib/a.sh", "app/lib/b.txt"]);
    assert.deepEqual(files.map((f) => f.executable), [false, true, false]);
  });

  it("same files give the same hash and byte-identical archives, whatever the order asked in", () => {
    const a = snapshot();
    const b = collectContext(root, ["app/lib/b.txt", "app/Dockerfile", "app/lib/a.sh"]);
    assert.equal(contextHash(b), a.hash);
    assert.ok(contextArchive(b).equals(a.zip));
  });

  it("an mtime-only change keeps hash and archive bytes", () => {
    const a = snapshot();
    const t = new Date(Date.now() - 86_400_000 * 400);
    for (const f of ["app/Dockerfile", "app/lib/a.sh", "app/lib/b.txt"]) fs.utimesSync(path.join(root, f), t, t);
    const b = snapshot();
    assert.equal(b.hash, a.hash);
    assert.ok(b.zip.equals(a.zip));
  });

  it("one byte changed, a file added or the executable bit flipped changes the hash", () => {
    const a = snapshot();
    fs.writeFileSync(path.join(root, "app", "lib", "b.txt"), "bef\n");
    const b = snapshot();
    assert.notEqual(b.hash, a.hash);
    assert.ok(!b.zip.equals(a.zip));
    fs.writeFileSync(path.join(root, "app", "lib", "b.txt"), "bee\n");
    assert.equal(snapshot().hash, a.hash);
    fs.chmodSync(path.join(root, "app", "lib", "a.sh"), 0o644);
    assert.notEqual(snapshot().hash, a.hash);
    fs.chmodSync(path.join(root, "app", "lib", "a.sh"), 0o755);
    fs.writeFileSync(path.join(root, "app", "lib", "c.txt"), "");
    assert.notEqual(snapshot().hash, a.hash);
  });

  it("the archive unpacks to exactly the files, with Unix modes CodeBuild's unzip keeps", () => {
    const { zip, files } = snapshot();
    const out = unzipSync(new Uint8Array(zip));
    assert.deepEqual(Object.keys(out).sort(), files.map((f) => f.path));
    assert.equal(Buffer.from(out["app/lib/b.txt"]).toString(), "bee\n");
    const unpacked = fs.mkdtempSync(path.join(os.tmpdir(), "ctx-unzip-"));
    try {
      fs.writeFileSync(path.join(unpacked, "c.zip"), zip);
      // The same unzip CodeBuild's images use (Info-ZIP) restores the executable bit.
      execFileSync("unzip", ["-q", "c.zip"], { cwd: unpacked });
      assert.ok((fs.statSync(path.join(unpacked, "app/lib/a.sh")).mode & 0o100) !== 0);
      assert.equal(fs.statSync(path.join(unpacked, "app/lib/b.txt")).mode & 0o111, 0);
    } finally {
      fs.rmSync(unpacked, { recursive: true, force: true });
    }
  });

  it("refuses paths outside the root, missing paths and symbolic links, naming them", () => {
    assert.throws(() => collectContext(root, ["../etc"]), /'\.\.\/etc' is not inside the repository root/);
    assert.throws(() => collectContext(root, ["app/nope"]), /'app\/nope' does not exist/);
    assert.throws(() => collectContext(root, []), /no files or folders/);
    fs.symlinkSync(path.join(root, "outside.txt"), path.join(root, "app", "lib", "link"));
    assert.throws(() => collectContext(root, ["app"]), /app\/lib\/link is a symbolic link/);
  });

  it("prepareContext keys the object by content hash and refuses a Dockerfile outside the context", () => {
    const p = prepareContext({ name: "demo", context: ["app"], dockerfile: "app/Dockerfile" }, root);
    assert.equal(p.key, `contexts/demo/${snapshot().hash}.zip`);
    assert.ok(fs.readFileSync(p.file).equals(snapshot().zip));
    assert.throws(() => prepareContext({ name: "demo", context: ["app/lib"], dockerfile: "app/Dockerfile" }, root), /dockerfile app\/Dockerfile is not in its context/);
    assert.throws(() => prepareContext({ name: "Bad_Name", context: ["app"], dockerfile: "app/Dockerfile" }, root), /must be \[a-z0-9-\]/);
  });
});
